"""`make install` into a temporary DESTDIR: binary, man page, sample config, systemd unit
and logrotate file land where they belong, with the paths in the unit following PREFIX;
`make uninstall` removes them. This builds the release binary (build/sluice), not the
sanitizer one, and installs nothing outside the temporary directory."""

import os
import re
import stat
import subprocess

import pytest

import harness

REPO = harness.REPO


def make_env():
    env = dict(os.environ)
    # Run from `make test`, the outer make's flags and variables must not leak in.
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR", "PREFIX",
              "BINDIR", "MANDIR", "SYSCONFDIR", "UNITDIR", "LOGROTATEDIR"):
        env.pop(k, None)
    return env


def make(*args, timeout=600):
    p = subprocess.run(["make", "-s", "-C", REPO] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout, env=make_env())
    assert p.returncode == 0, "make %s failed (%d):\n%s\n%s" % (
        " ".join(args), p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p


def installed_files(root):
    out = set()
    for d, _, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def unit_settings(text):
    """[(key, value)] of the unit file, in order, comments skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.append((k, v))
    return out


def seconds(v):
    m = re.fullmatch(r"(\d+)(s|min)?", v)
    assert m, "cannot read %r as a duration" % v
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_make_install_and_uninstall(tmp_path):
    dest = str(tmp_path / "root")
    make("install", "DESTDIR=" + dest, "PREFIX=/usr/local")
    want = {
        "usr/local/bin/sluice": 0o755,
        "usr/local/share/man/man1/sluice.1": 0o644,
        "usr/local/etc/sluice/proxy.yaml.sample": 0o644,
        "usr/local/lib/systemd/system/sluice.service": 0o644,
        "usr/local/etc/logrotate.d/sluice": 0o644,
    }
    assert installed_files(dest) == set(want), sorted(installed_files(dest))
    for rel, m in want.items():
        assert mode(os.path.join(dest, rel)) == m, "%s mode %o" % (rel, mode(os.path.join(dest, rel)))

    binary = os.path.join(dest, "usr/local/bin/sluice")
    v = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and re.fullmatch(r"sluice \S+\n", v.stdout), v
    sample = os.path.join(dest, "usr/local/etc/sluice/proxy.yaml.sample")
    with open(sample) as f, open(os.path.join(REPO, "proxy.yaml.sample")) as g:
        assert f.read() == g.read()
    t = subprocess.run([binary, "-t", "-c", sample], capture_output=True, text=True, timeout=10)
    assert t.returncode == 0, t

    with open(os.path.join(dest, "usr/local/lib/systemd/system/sluice.service")) as f:
        unit = unit_settings(f.read())
    d = dict(unit)
    assert d["ExecStart"] == "/usr/local/bin/sluice -c /usr/local/etc/sluice/proxy.yaml"
    reloads = [v for k, v in unit if k == "ExecReload"]
    assert reloads[-1] == "/bin/kill -HUP $MAINPID", reloads
    assert d["KillSignal"] == "SIGTERM"
    assert d["Restart"] == "on-failure"
    assert seconds(d["TimeoutStopSec"]) > 30, "must exceed the default drain_timeout (30s)"
    assert d["Type"] in ("exec", "simple")
    assert d["NoNewPrivileges"] == "yes" and d["ProtectSystem"] == "strict"
    assert d["PrivateTmp"] == "yes" and d["LogsDirectory"] == "sluice"
    assert d.get("DynamicUser") == "yes" or "User" in d
    assert "AmbientCapabilities" not in d, "no capability unless a port < 1024 needs it"

    with open(os.path.join(dest, "usr/local/etc/logrotate.d/sluice")) as f:
        rot = f.read()
    assert "/var/log/sluice/" in rot
    post = rot[rot.index("postrotate"):rot.index("endscript")]
    assert "kill -USR1" in post

    make("uninstall", "DESTDIR=" + dest, "PREFIX=/usr/local")
    assert installed_files(dest) == set(), sorted(installed_files(dest))


def test_unit_paths_follow_prefix(tmp_path):
    dest = str(tmp_path / "root")
    make("install", "DESTDIR=" + dest, "PREFIX=/usr", "SYSCONFDIR=/etc")
    assert {"usr/bin/sluice", "usr/share/man/man1/sluice.1", "etc/sluice/proxy.yaml.sample",
            "usr/lib/systemd/system/sluice.service", "etc/logrotate.d/sluice"} \
        == installed_files(dest)
    with open(os.path.join(dest, "usr/lib/systemd/system/sluice.service")) as f:
        text = f.read()
    unit = unit_settings(text)
    assert not [kv for kv in unit if "/usr/local" in kv[1]], unit
    d = dict(unit)
    assert d["ExecStart"] == "/usr/bin/sluice -c /etc/sluice/proxy.yaml"


def test_unit_verifies(tmp_path):
    """systemd-analyze verify accepts the unit (paths pointed at the installed copy)."""
    dest = str(tmp_path / "root")
    make("install", "DESTDIR=" + dest, "PREFIX=/usr/local")
    with open(os.path.join(dest, "usr/local/lib/systemd/system/sluice.service")) as f:
        text = f.read().replace("/usr/local/", dest + "/usr/local/")
    unit = tmp_path / "sluice.service"
    unit.write_text(text)
    env = dict(os.environ, MANPATH=os.path.join(dest, "usr/local/share/man"))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60, env=env)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr


def test_man_page_renders_cleanly():
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", os.path.join(REPO, "docs/sluice.1")],
                       capture_output=True, timeout=30)
    assert p.returncode == 0 and not p.stderr, p.stderr.decode()
    text = re.sub(r".\x08", "", p.stdout.decode("utf-8"))
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "SIGNALS", "RESPONSES", "ADMIN ENDPOINTS",
                    "FILES", "EXIT STATUS"):
        assert re.search(r"^%s$" % section, text, re.M), "no %s section" % section
    for word in ("SIGHUP", "SIGTERM", "SIGINT", "SIGUSR1", "tls_verify_failed",
                 "tls_handshake_failed", "/healthz", "/status", "/metrics"):
        assert word in text, word
