"""
Fixtures for the sluice integration tests (helpers live in harness.py).

  upstream        a started harness.Upstream, stopped after the test
  make_upstream   factory for more upstreams
  sluice_factory  make(config, start=True) -> harness.Sluice; after the test every daemon
                  it made is stopped with SIGTERM and its stderr scanned: the test fails
                  (as a teardown error) on a sanitizer report, on a daemon that died during
                  the test, or on one that does not exit 0 after SIGTERM
  start_sluice    shortcut: start_sluice(upstream_url, **simple_config options)
"""

import os

import pytest

import harness


@pytest.fixture
def make_upstream():
    made = []

    def make():
        u = harness.Upstream().start()
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


@pytest.fixture
def upstream(make_upstream):
    return make_upstream()


@pytest.fixture
def sluice_factory(tmp_path):
    made = []

    def make(config, start=True, name=None):
        s = harness.Sluice(tmp_path, config, name=name or "sluice%d" % len(made))
        made.append(s)
        if start:
            s.start()
        return s

    yield make

    problems = []
    for s in made:
        if s.proc is None:
            continue
        stopped_by_test = s.returncode is not None or s.proc.returncode is not None
        if not stopped_by_test and s.proc.poll() is not None:
            problems.append("%s died during the test with exit code %s"
                            % (s.name, s.proc.returncode))
            s.returncode = s.proc.returncode
        else:
            try:
                rc = s.stop()
                if not stopped_by_test and rc != 0:
                    problems.append("%s exited %s after SIGTERM (expected 0)" % (s.name, rc))
            except AssertionError as e:
                problems.append(str(e))
        bad = harness.sanitizer_report(s.stderr())
        if bad:
            problems.append("sanitizer report in %s (%s):\n%s"
                            % (s.name, s.stderr_path, harness.sanitizer_excerpt(s.stderr())))
        elif problems:
            problems.append("%s stderr tail:\n%s" % (s.name, s.stderr()[-3000:]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def start_sluice(sluice_factory):
    def start(upstream_url, **kw):
        return sluice_factory(harness.simple_config(upstream_url, **kw))
    return start


def pytest_report_header(config):
    return "sluice binary: %s (%s)" % (
        harness.SLUICE_BIN, "present" if os.access(harness.SLUICE_BIN, os.X_OK) else "MISSING")
