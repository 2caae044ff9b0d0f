"""contrib/grafana/sluice.json, the Grafana dashboard over sluice's /metrics (issue 12).

Every PromQL query in it (panel targets and template variables) is read with a small
scanner: each metric name must be one that a live sluice exports, as its exposition
writes it (a histogram through _bucket/_sum/_count), and each label a query matches on
must be one that metric carries (or instance/job, which Prometheus adds). The daemon is
configured so that every family appears: a shared budget (a real redis-server, as in
test_shared), keyed routes with fair queuing, an aggregate route, and a little traffic.
Conversely every family sluice exports is shown by some panel, so a new metric is not
forgotten here.
"""

import json
import os
import re

import harness
import redisutil
from redisutil import redis_factory  # noqa: F401 (fixture)

DASHBOARD = os.path.join(harness.REPO, "contrib", "grafana", "sluice.json")
PROMETHEUS_LABELS = {"instance", "job"}

# PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<range>\[[^\]]*\])
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<var>\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?)
  | (?P<punct>[{}(),=!~<>+\-*/%^])
""", re.X)


def tokens(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        assert m, "cannot read PromQL at %r in %r" % (expr[pos:pos + 20], expr)
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def _matchers(toks, i):
    """Label names of the matchers from the '{' at toks[i]; returns (names, index after)."""
    assert toks[i] == ("punct", "{")
    names, i = [], i + 1
    while toks[i] != ("punct", "}"):
        kind, text = toks[i]
        assert kind == "ident", "bad matcher token %r" % (text,)
        names.append(text)
        i += 1
        while toks[i][0] == "punct" and toks[i][1] in "=!~":
            i += 1
        assert toks[i][0] == "string", "matcher value should be a string: %r" % (toks[i],)
        i += 1
        if toks[i] == ("punct", ","):
            i += 1
    return names, i + 1


def _args(toks, i):
    """The arguments of the call whose '(' is toks[i], as lists of tokens."""
    args, cur, depth = [], [], 0
    for tok in toks[i:]:
        if tok[0] == "punct" and tok[1] in "({":
            depth += 1
            if depth == 1:
                continue
        elif tok[0] == "punct" and tok[1] in ")}":
            depth -= 1
            if depth == 0:
                args.append(cur)
                return args
        elif tok == ("punct", ",") and depth == 1:
            args.append(cur)
            cur = []
            continue
        cur.append(tok)
    raise AssertionError("unbalanced parentheses")


def scan(expr):
    """(selectors, grouping labels, labels made by label_replace) of a PromQL expression;
    selectors = [(metric name, [label names matched])]."""
    toks = tokens(expr)
    selectors, grouping, made = [], set(), set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if kind == "ident" and text in GROUPING and nxt == ("punct", "("):
            i += 2
            while toks[i] != ("punct", ")"):
                if toks[i][0] == "ident":
                    grouping.add(toks[i][1])
                i += 1
            i += 1
            continue
        if kind == "ident" and (nxt == ("punct", "(") or (
                text in AGGREGATIONS and nxt[0] == "ident" and nxt[1] in ("by", "without"))):
            if text == "label_replace":  # label_replace(v, "dst", "repl", "src", "re")
                made.add(_args(toks, i + 1)[1][0][1][1:-1])
            i += 1  # a function or aggregation
            continue
        if kind == "ident" and text.lower() not in KEYWORDS:
            labels = []
            i += 1
            if i < len(toks) and toks[i] == ("punct", "{"):
                labels, i = _matchers(toks, i)
            selectors.append((text, labels))
            continue
        i += 1
    return selectors, grouping, made


def test_scanner():
    sel, grp, made = scan('sum by (class) (label_replace(rate(sluice_requests_total{a="1",'
                          'b!~"x|y"}[$__rate_interval]), "class", "${1}xx", "status", '
                          '"([0-9]).."))')
    assert sel == [("sluice_requests_total", ["a", "b"])] and grp == {"class"}
    assert made == {"class"}
    sel, grp, _ = scan('sum by (upstream, le) (rate(x_bucket[5m])) / on (upstream) '
                       'group_left max(y) > bool 0.5 or time() - z{q="1"}')
    assert sel == [("x_bucket", []), ("y", []), ("z", ["q"])]
    assert grp == {"upstream", "le"}


# --------------------------------------------------------------------------- the file

def panels(doc):
    """Every panel, the ones inside collapsed rows too."""
    for p in doc["panels"]:
        yield p
        for q in p.get("panels", []):
            yield q


def queries(doc):
    """[(where, expr)] of every panel target and query variable."""
    out = []
    for p in panels(doc):
        for t in p.get("targets", []):
            out.append(("panel %r target %s" % (p["title"], t["refId"]), t["expr"]))
    for v in doc["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", q)
        assert m, "variable %s: %r" % (v["name"], q)
        out.append(("variable %s" % v["name"], m.group(1)))
    return out


def test_dashboard_is_well_formed():
    """Valid JSON that Grafana imports as it is: a uid, unique panel ids, every panel
    placed on the 24-column grid without overlap, every query on the data source chosen
    by the dashboard's own variable, every panel described."""
    with open(DASHBOARD, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["uid"] == "sluice" and doc["title"] == "sluice"
    assert doc["schemaVersion"] >= 36
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names[0] == "datasource" and "upstream" in names and "instance" in names
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = set()
    for p in panels(doc):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] >= 1, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, "panel %r overlaps another" % p["title"]
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p.get("description"), "panel %r has no description" % p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()
    for where, expr in queries(doc):
        scan(expr)  # every query can be read


# --------------------------------------------------------------------------- against sluice

def exported(admin_port):
    """(families {name: type}, samples {sample name: set of label names}) of /metrics."""
    r = harness.http_request(admin_port, "GET", "/metrics")
    assert r.status == 200, r
    families, samples = {}, {}
    for line in r.body.decode("utf-8").splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            families[name] = typ
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$", line)
            assert m, line
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or ""))
            samples.setdefault(m.group(1), set()).update(labels)
    return families, samples


def full_config(upstream_url, redis_address, admin_port):
    """One upstream with a shared budget and a keyed route with fair queuing, a second
    one, and an aggregate route over both: every family sluice has appears."""
    cfg = redisutil.shared_config(upstream_url, redis_address, rate="50/s", burst=5,
                                  admin_port=admin_port)
    cfg["upstreams"]["api"]["fairness"] = {"key_queue_share": 100}
    cfg["routes"][0]["key"] = "header:X-Tenant"
    cfg["upstreams"]["other"] = {"url": upstream_url, "limits": [{"rate": "10/s", "burst": 2}]}
    cfg["routes"].append({"path_prefix": "/other/", "strip_prefix": True, "upstream": "other"})
    cfg["routes"].append({"path_prefix": "/combo", "aggregate": {
        "timeout": "2s", "parts": {"a": {"upstream": "api", "path": "/a"},
                                   "o": {"upstream": "other", "path": "/o"}}}})
    return cfg


def test_every_metric_queried_is_exported(upstream, sluice_factory, redis_factory):  # noqa: F811
    redis = redis_factory()
    ap = harness.free_port()
    s = sluice_factory(full_config(upstream.url, redis.address, ap))
    harness.wait_until(lambda: harness.port_accepts(ap), 5.0, what="admin listener")
    for path, headers in (("/api/x", [("X-Tenant", "t1")]), ("/other/y", []), ("/combo", []),
                          ("/nowhere", [])):
        r = harness.http_request(s.port, "GET", path, headers=headers)
        assert r.status in (200, 404), (path, r)
    families, samples = exported(ap)
    with open(DASHBOARD, encoding="utf-8") as f:
        doc = json.load(f)

    used, problems = set(), []
    for where, expr in queries(doc):
        selectors, grouping, made = scan(expr)
        assert selectors, "%s queries no metric: %s" % (where, expr)
        labels_here = set(PROMETHEUS_LABELS) | made | {"le"}
        for name, matched in selectors:
            if name not in samples:
                problems.append("%s: %s is not a metric sluice exports" % (where, name))
                continue
            used.add(name)
            labels_here |= samples[name]
            for lab in matched:
                if lab not in samples[name] and lab not in PROMETHEUS_LABELS:
                    problems.append("%s: %s has no label %s (it has %s)"
                                    % (where, name, lab, sorted(samples[name])))
        for lab in grouping - labels_here:
            problems.append("%s: groups by %s, which none of its metrics has" % (where, lab))
    assert problems == [], "\n".join(problems)

    # every family sluice exports is on some panel
    def family_of(sample):
        for suffix in ("_bucket", "_sum", "_count", ""):
            base = sample[:len(sample) - len(suffix)] if suffix else sample
            if sample.endswith(suffix) and base in families:
                return base
        return sample
    shown = {family_of(n) for n in used}
    missing = sorted(set(families) - shown)
    assert missing == [], "families no panel of %s shows: %s" % (DASHBOARD, missing)
    assert any(n.startswith("sluice_shared_") for n in families), \
        "the shared-budget families did not appear: %s" % sorted(families)
