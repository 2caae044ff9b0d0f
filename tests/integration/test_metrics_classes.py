"""Metrics per priority class: queue depth while requests wait, and the requests and
seconds queued per class once they are answered."""

import harness
import fairutil


def test_queue_metrics_by_priority_class(upstream, sluice_factory):
    admin_port = harness.free_port()
    cfg = fairutil.fair_config(upstream.url, rate="5/s", burst=1, max_wait="30s",
                               admin_port=admin_port,
                               route={"priority": 0, "priority_header": "X-Priority",
                                      "priority_allowed": [0, 2]})
    s = sluice_factory(cfg)
    # One request takes the only token; 3 of class 2 and 2 of class 0 then wait.
    first = fairutil.send_all(s.port, [("/api/m?i=0", [])])
    fairutil.wait_all_read(first)
    waiting = fairutil.send_all(s.port, [("/api/m?c=2&i=%d" % i, [("X-Priority", "2")])
                                         for i in range(3)] +
                                [("/api/m?c=0&i=%d" % i, [("X-Priority", "0")])
                                 for i in range(2)])
    fairutil.wait_all_read(waiting)
    m = fairutil.metric_samples(admin_port)
    depth = {c: fairutil.metric_sum(m, "sluice_queue_depth_by_class", upstream="api",
                                    **{"class": str(c)}) for c in range(4)}
    assert depth[2] + depth[0] == 5 - (upstream.count - 1), (depth, upstream.count)
    assert depth[2] >= 2 and depth[1] == 0 and depth[3] == 0, depth
    answers = fairutil.responses(first + waiting)
    assert [r.status for r in answers] == [200] * 6, answers
    m = fairutil.metric_samples(admin_port)
    n = {c: fairutil.metric_sum(m, "sluice_queued_by_class_total", upstream="api",
                                **{"class": str(c)}) for c in range(4)}
    assert n[0] == 3 and n[2] == 3 and n[1] == 0 and n[3] == 0, n
    secs = {c: fairutil.metric_sum(m, "sluice_queue_wait_by_class_seconds_total",
                                   upstream="api", **{"class": str(c)}) for c in range(4)}
    # Class 2 waited behind class 0: at 5/s its three waited at least 0.4+0.6+0.8 s in all.
    assert secs[2] >= 1.5 and secs[2] > secs[0], secs
    for c in range(4):
        assert fairutil.metric_sum(m, "sluice_queue_depth_by_class", upstream="api",
                                   **{"class": str(c)}) == 0
