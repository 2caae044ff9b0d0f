"""Command line: -v, -h, unknown options, and -t on good and broken configs.

Bad-config cases are a table: YAML text, the text whose position the error must name
(LINE:COL, 1-based, of that node), and a word the message must contain."""

import re

import pytest

import harness

GOOD = """\
listen:
  - address: 127.0.0.1:{port}
drain_timeout: 5s
upstreams:
  api:
    url: http://127.0.0.1:{uport}/base
    limits:
      - rate: 20/s
        burst: 1
    queue: {{ size: 10, max_wait: 2s }}
routes:
  - path_prefix: /api/
    strip_prefix: true
    upstream: api
"""


def fill(text):
    return text.format(port=harness.free_port(), uport=harness.free_port())


def position(text, needle):
    """1-based (line, col) of needle in text (it must occur once); a '|' in needle marks
    the exact point, else its start."""
    mark = needle.find("|")
    plain = needle.replace("|", "")
    assert text.count(plain) == 1, "needle %r not unique in:\n%s" % (plain, text)
    idx = text.index(plain) + max(mark, 0)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


# (id, yaml, needle ('|' marks the point), word the message must contain)
BAD = [
    ("bad_rate_unit", GOOD.replace("rate: 20/s", "rate: 20/x"), "rate: |20/x", "rate"),
    ("zero_rate", GOOD.replace("rate: 20/s", "rate: 0/s"), "rate: |0/s", "rate"),
    ("rate_not_a_number", GOOD.replace("rate: 20/s", "rate: fast"), "rate: |fast", "rate"),
    ("unknown_key_in_upstream",
     GOOD.replace("    queue:", "    bogus_key: 1\n    queue:"), "bogus_key", "bogus_key"),
    ("unknown_top_level_key", GOOD + "colour: blue\n", "colour", "colour"),
    ("dangling_upstream", GOOD.replace("upstream: api", "upstream: nope"), "upstream: |nope",
     "nope"),
    ("bare_number_duration", GOOD.replace("drain_timeout: 5s", "drain_timeout: 10"),
     "drain_timeout: |10", "drain_timeout"),
    ("bad_max_wait", GOOD.replace("max_wait: 2s", "max_wait: soon"), "max_wait: |soon",
     "max_wait"),
    ("duplicate_key", GOOD.replace("    limits:", "    url: http://127.0.0.1:1\n    limits:"),
     "    |url: http://127.0.0.1:1\n", "url"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_check_config_reports_file_line_col(tmp_path, case):
    _, text, needle, word = case
    text = fill(text)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line, col = position(text, needle)
    p = harness.run_cli(["-t", "-c", str(path)])
    out = p.stdout + p.stderr
    assert p.returncode == 1, "exit %d, output:\n%s" % (p.returncode, out)
    want = "%s:%d:%d:" % (path, line, col)
    assert want in out, "expected %r in output:\n%s" % (want, out)
    msg = out[out.index(want):].splitlines()[0]
    assert word in msg, "message should mention %r: %r" % (word, msg)


def test_check_config_yaml_syntax_error(tmp_path):
    text = fill(GOOD).replace("    limits:", "    limits: [ {\n")
    path = tmp_path / "syntax.yaml"
    path.write_text(text)
    p = harness.run_cli(["-t", "-c", str(path)])
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert re.search(re.escape(str(path)) + r":\d+:\d+: ", out), out


def test_check_good_config_exits_0(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(fill(GOOD))
    p = harness.run_cli(["-t", "-c", str(path)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "warning" not in p.stderr, p.stderr


def test_check_full_config_exits_0(tmp_path, upstream):
    """Every key of the documented config, as the test harness writes it."""
    cfg = harness.simple_config(upstream.url + "/base", route_host="optional.example",
                                limits=[{"rate": "20/s", "burst": 1},
                                        {"rate": "600/m", "burst": 5},
                                        {"rate": "0.5/s", "burst": 2},
                                        {"rate": "36000/h", "burst": 1}])
    path = tmp_path / "full.yaml"
    path.write_text(harness.to_yaml(cfg) + "\n")
    p = harness.run_cli(["-t", "-c", str(path)])
    assert p.returncode == 0, p.stdout + p.stderr


# GOOD with a second upstream: the queues hold 10 + 5 = 15 requests.
TWO_QUEUES = GOOD.replace("upstreams:\n", """upstreams:
  other:
    url: http://127.0.0.1:{uport}
    limits: [{{ rate: 1/s }}]
    queue: {{ size: 5 }}
""") + "client:\n  max_connections: {maxconn}\n"


@pytest.mark.parametrize("maxconn,warns", [(14, True), (15, False)])
def test_check_warns_when_queues_exceed_max_connections(tmp_path, maxconn, warns):
    """Valid either way (exit 0); one warning line on stderr when the queues can hold more
    requests than client.max_connections lets in at once."""
    path = tmp_path / "queues.yaml"
    path.write_text(TWO_QUEUES.format(port=harness.free_port(), uport=harness.free_port(),
                                      maxconn=maxconn))
    p = harness.run_cli(["-t", "-c", str(path)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "configuration ok" in p.stdout, p.stdout + p.stderr
    lines = [l for l in p.stderr.splitlines() if "warning" in l]
    if not warns:
        assert lines == [], p.stderr
        return
    assert lines == ["%s: warning: the queues hold up to 15 requests but client.max_connections"
                     " is 14: at most 14 can wait at once (raise client.max_connections or"
                     " lower queue sizes)" % path], p.stderr


def test_start_with_broken_config_exits_1(tmp_path):
    text = fill(GOOD.replace("rate: 20/s", "rate: 20/x"))
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line, col = position(text, "rate: |20/x")
    p = harness.run_cli(["-c", str(path)])
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "%s:%d:%d:" % (path, line, col) in out, out


def test_missing_config_file(tmp_path):
    path = tmp_path / "does-not-exist.yaml"
    p = harness.run_cli(["-t", "-c", str(path)])
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert str(path) in out, out


def test_version():
    p = harness.run_cli(["-v"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0.1.0" in p.stdout + p.stderr


def test_help():
    p = harness.run_cli(["-h"])
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "usage" in out.lower(), out
    assert "-c" in out and "-t" in out, out


@pytest.mark.parametrize("args", [["-Z"], ["--no-such-option"]])
def test_unknown_option_fails(args):
    p = harness.run_cli(args)
    assert p.returncode != 0, p.stdout + p.stderr
