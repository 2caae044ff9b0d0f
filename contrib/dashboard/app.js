/*
 * sluice dashboard: a view of GET /status?history=300, polled once a second.
 *
 * The admin listener serves this file with a strict Content-Security-Policy, and the
 * page shows names that come from clients (fair-queuing keys), so:
 *   - no inline script or style, no eval, no innerHTML/insertAdjacentHTML: every text
 *     from the daemon goes in with textContent, or as an attribute value through
 *     dataset / setAttribute on a fixed attribute name;
 *   - styles only through classes and element.style properties (bar widths).
 *
 * Each upstream is one card (<section data-upstream="NAME">), built once and updated in
 * place. Every number shown sits in an element with data-field="NAME" whose textContent
 * is the formatted value and whose data-value is the raw one (tests read those).
 * When /status fails the header says "disconnected" and the last numbers stay, greyed.
 * Keep this file ASCII (contrib/dashboard/embed.sh refuses anything else): write other
 * characters as \u escapes.
 */
(function () {
    'use strict';

    var POLL_MS = 1000;       // one /status a second
    var TIMEOUT_MS = 4000;    // a /status slower than this counts as a failure
    var HISTORY_S = 300;      // sparklines: the last 5 minutes
    var SPARK_MIN_S = 60;     // ... or at least a minute wide while there is less
    var TICK_MS = 100;        // pause countdowns
    var SVG_NS = 'http://www.w3.org/2000/svg';
    var DASH = '\u2013';
    var ANSWER_CLASSES = ['2xx', '3xx', '4xx', '5xx'];
    var REFUSAL_REASONS = ['queue_full', 'deadline', 'key_queue_full', 'shutdown'];
    var CLIENT_REASONS = ['connection_limit', 'header_timeout'];
    var SPARK_W = 300;
    var SPARK_H = 40;

    var cards = new Map();    // upstream name -> card (see makeCard)
    var lastOkAt = 0;         // performance.now() of the last good /status
    var everOk = false;

    // ------------------------------------------------------------ formatting

    function num(v) {
        return typeof v === 'number' && isFinite(v) ? v : null;
    }

    function fmtInt(v) {
        v = num(v);
        return v === null ? DASH : String(Math.round(v));
    }

    function fmtRate(v) {
        v = num(v);
        if (v === null)
            return DASH;
        if (v === 0)
            return '0';
        if (Math.abs(v) >= 100)
            return v.toFixed(0);
        if (Math.abs(v) >= 1)
            return v.toFixed(1);
        return v.toFixed(2);
    }

    function fmtMs(v) {
        v = num(v);
        if (v === null)
            return DASH;
        if (v < 1000)
            return Math.round(v) + ' ms';
        if (v < 60000)
            return (v / 1000).toFixed(v < 10000 ? 1 : 0) + ' s';
        return fmtDuration(v / 1000);
    }

    function fmtDuration(s) {
        s = num(s);
        if (s === null)
            return DASH;
        s = Math.floor(s);
        if (s < 60)
            return s + 's';
        if (s < 3600)
            return two(Math.floor(s / 60), 'm', s % 60, 's');
        if (s < 86400)
            return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'm');
        return two(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
    }

    /* "2m 5s", "2m" (a zero second unit left out) */
    function two(a, ua, b, ub) {
        return a + ua + (b ? ' ' + b + ub : '');
    }

    function fmtCountdown(ms) {
        if (ms <= 0)
            return '0.0 s';
        if (ms < 60000)
            return (ms / 1000).toFixed(1) + ' s';
        return fmtDuration(Math.ceil(ms / 1000));
    }

    function fmtRateLimit(l) {
        if (typeof l.label === 'string' && l.label !== '')
            return l.label;
        var r = num(l.rate_per_sec);
        if (r === null)
            return DASH;
        if (r >= 1)
            return fmtRate(r) + '/s';
        if (r * 60 >= 1)
            return fmtRate(r * 60) + '/m';
        return fmtRate(r * 3600) + '/h';
    }

    // ------------------------------------------------------------ DOM helpers

    function el(tag, cls, text) {
        var e = document.createElement(tag);
        if (cls)
            e.className = cls;
        if (text !== undefined && text !== null)
            e.textContent = String(text);
        return e;
    }

    function svg(tag) {
        return document.createElementNS(SVG_NS, tag);
    }

    /* An element carrying one number: data-field=name. */
    function fieldEl(tag, name, cls) {
        var e = el(tag, cls);
        e.dataset.field = name;
        e.textContent = DASH;
        return e;
    }

    /* Set a field: data-value gets the raw value ('' for null), the text the formatted. */
    function put(e, value, text) {
        if (!e)
            return;
        var raw = value === null || value === undefined ? '' : String(value);
        if (e.dataset.value !== raw)
            e.dataset.value = raw;
        var t = text === undefined ? (raw === '' ? DASH : raw) : text;
        if (e.textContent !== t)
            e.textContent = t;
    }

    function byId(id) {
        return document.getElementById(id);
    }

    // ------------------------------------------------------------ card skeleton

    function stat(c, parent, label, name, subName) {
        var box = el('div', 'stat');
        box.appendChild(el('span', 'label', label));
        c.f[name] = box.appendChild(fieldEl('span', name, 'value'));
        if (subName)
            c.f[subName] = box.appendChild(fieldEl('span', subName, 'sub'));
        parent.appendChild(box);
    }

    function meter(c, parent, label, nowName, maxName) {
        var box = el('div', 'meter');
        var head = box.appendChild(el('div', 'meter-head'));
        head.appendChild(el('span', 'label', label));
        var nums = head.appendChild(el('span', 'nums'));
        c.f[nowName] = nums.appendChild(fieldEl('span', nowName));
        nums.appendChild(document.createTextNode(' / '));
        c.f[maxName] = nums.appendChild(fieldEl('span', maxName));
        var bar = box.appendChild(el('div', 'bar'));
        c.fills[nowName] = bar.appendChild(el('div', 'fill'));
        parent.appendChild(box);
    }

    function setFill(fill, now, max) {
        now = num(now);
        max = num(max);
        var frac = now !== null && max ? Math.max(0, Math.min(1, now / max)) : 0;
        fill.style.width = (frac * 100).toFixed(1) + '%';
        fill.classList.toggle('warn', frac >= 0.8 && frac < 1);
        fill.classList.toggle('full', frac >= 1);
    }

    /* A table of rates by name: rows made on first sight, known names first. */
    function rateTable(caption, cols) {
        var t = el('table', 'rate-table');
        t.appendChild(el('caption', 'label', caption));
        var head = t.appendChild(el('thead')).appendChild(el('tr'));
        for (var i = 0; i < cols.length; i++)
            head.appendChild(el('th', null, cols[i]));
        t.body = t.appendChild(el('tbody'));
        t.rows_ = new Map();
        return t;
    }

    function rateRow(t, prefix, name, withTotal) {
        var row = t.rows_.get(name);
        if (row)
            return row;
        row = {tr: el('tr')};
        row.tr.dataset.row = name;
        row.tr.appendChild(el('th', null, name));
        row.rate = row.tr.appendChild(fieldEl('td', prefix + '_rate.' + name));
        if (withTotal)
            row.total = row.tr.appendChild(fieldEl('td', prefix + '.' + name, 'total'));
        t.rows_.set(name, row);
        t.body.appendChild(row.tr);
        return row;
    }

    function sparkline(c, parent, label, name, unit, bad) {
        var fig = el('figure', 'spark' + (bad ? ' bad' : ''));
        fig.dataset.field = 'spark.' + name;
        var cap = fig.appendChild(el('figcaption'));
        cap.appendChild(el('span', 'label', label));
        var now = cap.appendChild(el('span'));
        var cur = now.appendChild(fieldEl('span', 'spark.' + name + '.now', 'now'));
        now.appendChild(document.createTextNode(unit));
        var s = fig.appendChild(svg('svg'));
        s.setAttribute('viewBox', '0 0 ' + SPARK_W + ' ' + SPARK_H);
        s.setAttribute('preserveAspectRatio', 'none');
        s.setAttribute('role', 'img');
        var title = s.appendChild(svg('title'));
        title.textContent = label + ', last 5 minutes';
        var area = s.appendChild(svg('path'));
        var line = s.appendChild(svg('polyline'));
        line.setAttribute('vector-effect', 'non-scaling-stroke');
        var axis = fig.appendChild(el('div', 'axis'));
        var span = axis.appendChild(fieldEl('span', 'spark.' + name + '.span_s'));
        var peak = axis.appendChild(el('span'));
        peak.appendChild(document.createTextNode('peak '));
        var max = peak.appendChild(fieldEl('span', 'spark.' + name + '.max'));
        axis.appendChild(el('span', null, 'now'));
        c.sparks[name] = {fig: fig, svg: s, area: area, line: line, now: cur, max: max,
                          span: span};
        parent.appendChild(fig);
    }

    function fmtSpan(s) {
        return s % 60 === 0 ? s / 60 + ' min' : s + ' s';
    }

    function drawSpark(sp, values, scale, interval_s) {
        var n = values.length;
        var vs = [];
        var max = 0;
        for (var i = 0; i < n; i++) {
            var v = num(values[i]);
            v = v === null ? 0 : v * scale;
            vs.push(v);
            if (v > max)
                max = v;
        }
        // The newest sample at the right edge. The width is the last 5 minutes, or, while
        // the daemon has less history than that, what it has (at least a minute), so a
        // fresh daemon's line is not a sliver at the right.
        var span = Math.min(HISTORY_S, Math.max(n, SPARK_MIN_S));
        sp.fig.dataset.points = String(n);
        put(sp.max, max, fmtRate(max));
        put(sp.now, n ? vs[n - 1] : null, n ? fmtRate(vs[n - 1]) : DASH);
        put(sp.span, span * interval_s, '-' + fmtSpan(span * interval_s));
        if (n === 0) {
            sp.line.setAttribute('points', '');
            sp.area.setAttribute('d', '');
            return;
        }
        var step = SPARK_W / Math.max(span - 1, 1);
        var top = max > 0 ? max : 1;
        var pts = [];
        for (var j = 0; j < n; j++) {
            var x = SPARK_W - (n - 1 - j) * step;
            var y = SPARK_H - 1 - (vs[j] / top) * (SPARK_H - 3);
            pts.push(x.toFixed(1) + ',' + y.toFixed(1));
        }
        sp.line.setAttribute('points', pts.join(' '));
        var x0 = (SPARK_W - (n - 1) * step).toFixed(1);
        sp.area.setAttribute('d', 'M' + x0 + ',' + SPARK_H + ' L' + pts.join(' L') +
            ' L' + SPARK_W + ',' + SPARK_H + ' Z');
    }

    function makeCard(name) {
        var c = {name: name, f: {}, fills: {}, sparks: {}, pauseEnd: null, prevShared: {}};
        var root = el('section', 'card');
        root.dataset.upstream = name;
        c.root = root;

        var head = root.appendChild(el('header', 'card-head'));
        c.f.name = head.appendChild(fieldEl('h2', 'name'));
        put(c.f.name, name);
        c.f.url = head.appendChild(fieldEl('span', 'url', 'url'));
        c.f.tls = head.appendChild(fieldEl('span', 'tls', 'badge'));
        c.f.state = head.appendChild(fieldEl('span', 'upstream_state', 'badge'));

        c.limits = root.appendChild(el('ul', 'limits'));
        c.limits.dataset.field = 'limits';

        // the pause: cause, scope, key, and a countdown ticking between polls
        var pause = root.appendChild(el('div', 'pause'));
        pause.dataset.field = 'pause';
        pause.hidden = true;
        pause.appendChild(el('b', null, 'Paused by the upstream'));
        c.f.pause_cause = pause.appendChild(fieldEl('span', 'pause.cause'));
        c.f.pause_scope = pause.appendChild(fieldEl('span', 'pause.scope'));
        c.f.pause_key = pause.appendChild(fieldEl('span', 'pause.key'));
        var left = pause.appendChild(el('span'));
        left.appendChild(document.createTextNode('resumes in '));
        c.f.pause_left = left.appendChild(fieldEl('span', 'pause.left_ms', 'countdown'));
        c.pause = pause;

        var stats = root.appendChild(el('div', 'stats'));
        stat(c, stats, 'released /s', 'release_rate', 'release_limit');
        stat(c, stats, 'wait if sent now', 'predicted_wait_ms', 'next_release_in_ms');
        stat(c, stats, 'queue wait p50', 'queue_wait_ms.p50', 'queue_wait_ms.count');
        stat(c, stats, 'queue wait p99', 'queue_wait_ms.p99', 'max_wait_ms');

        var meters = root.appendChild(el('div', 'meters'));
        meter(c, meters, 'queued', 'queue_depth', 'queue_capacity');
        meter(c, meters, 'in flight', 'in_flight', 'max_in_flight');

        var rates = root.appendChild(el('div', 'rates'));
        c.answers = rates.appendChild(rateTable('answers /s', ['status', 'per s']));
        for (var i = 0; i < ANSWER_CLASSES.length; i++)
            rateRow(c.answers, 'answers', ANSWER_CLASSES[i], false);
        c.refusals = rates.appendChild(rateTable('refused', ['reason', 'per s', 'total']));
        for (var j = 0; j < REFUSAL_REASONS.length; j++)
            rateRow(c.refusals, 'refusals', REFUSAL_REASONS[j], true);

        var sparks = root.appendChild(el('div', 'sparks'));
        sparkline(c, sparks, 'queued', 'queue_depth', '', false);
        sparkline(c, sparks, 'released', 'released', '/s', false);
        sparkline(c, sparks, 'refused', 'refused', '/s', true);

        var foot = root.appendChild(el('div', 'foot'));
        function footItem(label, name) {
            var s = foot.appendChild(el('span'));
            s.appendChild(document.createTextNode(label + ' '));
            c.f[name] = s.appendChild(fieldEl('b', name));
        }
        footItem('pool: idle', 'pool.idle');
        footItem('lent', 'pool.lent');
        footItem('keep-alive', 'pool.keepalive');

        // fair queuing: the busiest keys
        var keys = root.appendChild(el('div', 'section keys'));
        keys.dataset.field = 'keys';
        keys.hidden = true;
        var kh = keys.appendChild(el('h3'));
        kh.appendChild(document.createTextNode('keys: '));
        c.f.keys_tracked = kh.appendChild(fieldEl('span', 'keys.tracked'));
        kh.appendChild(document.createTextNode(' tracked, '));
        c.f.keys_active = kh.appendChild(fieldEl('span', 'keys.active'));
        kh.appendChild(document.createTextNode(' with requests queued'));
        var kt = keys.appendChild(el('table'));
        var khr = kt.appendChild(el('thead')).appendChild(el('tr'));
        khr.appendChild(el('th', null, 'key'));
        khr.appendChild(el('th', null, 'queued'));
        khr.appendChild(el('th', null, 'share'));
        khr.appendChild(el('th'));
        c.keysBody = kt.appendChild(el('tbody'));
        c.keys = keys;

        // shared budgets: one line per shared limit
        var shared = root.appendChild(el('div', 'section shared'));
        shared.dataset.field = 'shared';
        shared.hidden = true;
        shared.appendChild(el('h3', null, 'shared budgets'));
        c.sharedBody = shared.appendChild(el('div'));
        c.shared = shared;
        return c;
    }

    // ------------------------------------------------------------ card update

    function updateLimits(c, u) {
        var limits = Array.isArray(u.limits) ? u.limits : [];
        var items = [];
        for (var i = 0; i < limits.length; i++) {
            var l = limits[i] || {};
            var li = el('li');
            li.dataset.field = 'limit';
            li.dataset.index = String(i);
            li.dataset.rate = String(num(l.rate_per_sec));
            li.appendChild(el('b', null, fmtRateLimit(l)));
            li.appendChild(document.createTextNode(' burst ' + fmtInt(l.burst) + ', ' +
                (num(l.tokens) === null ? DASH : num(l.tokens).toFixed(1)) + ' tokens' +
                (l.shared && typeof l.shared.budget === 'string' ?
                    ', shared: ' + l.shared.budget : '')));
            items.push(li);
        }
        c.limits.replaceChildren.apply(c.limits, items);
    }

    function updatePause(c, u, now) {
        var p = u.pause;
        c.root.classList.toggle('paused', !!p);
        c.root.dataset.paused = p ? '1' : '0';
        if (!p) {
            c.pause.hidden = true;
            c.pauseEnd = null;
            return;
        }
        c.pause.hidden = false;
        put(c.f.pause_cause, p.cause, typeof p.cause === 'string' ? p.cause : 'pause');
        put(c.f.pause_scope, p.scope, p.scope ? 'scope: ' + p.scope : '');
        put(c.f.pause_key, p.key, typeof p.key === 'string' ? 'key: ' + p.key : '');
        var left = num(p.left_ms);
        c.pauseEnd = left === null ? null : now + left;
        tickCard(c, now);
    }

    function tickCard(c, now) {
        if (c.pauseEnd === null) {
            put(c.f.pause_left, null);
            return;
        }
        var left = Math.max(0, Math.round(c.pauseEnd - now));
        put(c.f.pause_left, left, fmtCountdown(left));
    }

    function updateRates(t, prefix, rates, totals, known) {
        var names = known.slice();
        var k;
        for (k in rates || {})
            if (names.indexOf(k) < 0)
                names.push(k);
        for (k in totals || {})
            if (names.indexOf(k) < 0)
                names.push(k);
        for (var i = 0; i < names.length; i++) {
            var name = names[i];
            var row = rateRow(t, prefix, name, !!totals || t.rows_.has(name));
            var r = rates ? num(rates[name]) : null;
            put(row.rate, r, fmtRate(r));
            row.rate.classList.toggle('hot', prefix === 'refusals' && r !== null && r > 0);
            if (row.total)
                put(row.total, totals ? num(totals[name]) : null,
                    fmtInt(totals ? totals[name] : null));
        }
    }

    function updateKeys(c, keys) {
        var show = !!keys && (num(keys.tracked) > 0 || (keys.top && keys.top.length > 0));
        c.keys.hidden = !show;
        if (!show)
            return;
        put(c.f.keys_tracked, num(keys.tracked), fmtInt(keys.tracked));
        put(c.f.keys_active, num(keys.active), fmtInt(keys.active));
        var top = Array.isArray(keys.top) ? keys.top.slice(0, 10) : [];
        var rows = [];
        for (var i = 0; i < top.length; i++) {
            var k = top[i] || {};
            var tr = el('tr');
            tr.dataset.key = String(k.key);        // attribute value, never markup
            var td = tr.appendChild(el('td', 'key', String(k.key)));
            td.dataset.field = 'key';
            td.title = String(k.key);
            var q = tr.appendChild(fieldEl('td', 'queued'));
            put(q, num(k.queued), fmtInt(k.queued));
            var share = num(k.share);
            var sh = tr.appendChild(fieldEl('td', 'share'));
            put(sh, share, share === null ? DASH : Math.round(share * 100) + '%');
            var cell = tr.appendChild(el('td', 'sharebar'));
            var fill = cell.appendChild(el('div', 'bar')).appendChild(el('div', 'fill'));
            fill.style.width = ((share || 0) * 100).toFixed(1) + '%';
            if (k.paused) {
                // the upstream paused this key alone (feedback scope: key)
                tr.classList.add('paused');
                tr.dataset.paused = '1';
                cell.appendChild(el('span', 'badge key-paused', 'paused'));
            }
            rows.push(tr);
        }
        c.keysBody.replaceChildren.apply(c.keysBody, rows);
    }

    /* The shared budgets of an upstream: the upstream's "shared" list, else each limit's. */
    function sharedList(u) {
        var out = [];
        var limits = Array.isArray(u.limits) ? u.limits : [];
        for (var i = 0; i < limits.length; i++)
            if (limits[i] && limits[i].shared)
                out.push(limits[i].shared);
        if (out.length === 0 && Array.isArray(u.shared))
            out = u.shared.slice();
        return out;
    }

    function leaseHealth(c, s) {
        var calls = s.calls || {};
        var bad = (num(calls.error) || 0) + (num(calls.timeout) || 0);
        var prev = c.prevShared[s.budget];
        c.prevShared[s.budget] = bad;
        if (s.mode === 'fallback')
            return ['fallback', 'fallback: pacing locally'];
        if (prev !== undefined && bad > prev)
            return ['failing', 'lease calls failing'];
        return ['ok', 'leases ok'];
    }

    function sharedItem(row, label, name, value, text) {
        var sp = row.appendChild(el('span'));
        if (label)
            sp.appendChild(document.createTextNode(label + ' '));
        put(sp.appendChild(fieldEl('b', name)), value, text);
    }

    function updateShared(c, u) {
        var list = sharedList(u);
        c.shared.hidden = list.length === 0;
        var rows = [];
        for (var i = 0; i < list.length; i++) {
            var s = list[i] || {};
            var calls = s.calls || {};
            var row = el('div', 'shared-limit');
            row.dataset.budget = String(s.budget);
            var item = sharedItem.bind(null, row);
            item('budget', 'shared.budget', s.budget, String(s.budget));
            item('', 'shared.mode', s.mode, String(s.mode));
            item('instances', 'shared.instances', num(s.instances), fmtInt(s.instances));
            item('slots held', 'shared.slots_held', num(s.slots_held), fmtInt(s.slots_held));
            item('dropped', 'shared.dropped', num(s.dropped), fmtInt(s.dropped));
            item('calls ok', 'shared.calls.ok', num(calls.ok), fmtInt(calls.ok));
            item('errors', 'shared.calls.error', num(calls.error), fmtInt(calls.error));
            item('timeouts', 'shared.calls.timeout', num(calls.timeout), fmtInt(calls.timeout));
            var h = leaseHealth(c, s);
            var hs = row.appendChild(fieldEl('span', 'shared.health', 'health'));
            hs.dataset.state = h[0];
            put(hs, h[0], h[1]);
            rows.push(row);
        }
        c.sharedBody.replaceChildren.apply(c.sharedBody, rows);
    }

    function updateCard(c, u, now) {
        var f = c.f;
        put(f.url, u.url, typeof u.url === 'string' ? u.url : '');
        put(f.tls, u.tls ? 1 : 0, u.tls ? 'TLS' : 'plain');
        f.tls.classList.toggle('tls', !!u.tls);
        put(f.state, u.retired ? 'retired' : '', u.retired ? 'retiring' : '');
        f.state.hidden = !u.retired;
        updateLimits(c, u);
        updatePause(c, u, now);

        var tightest = null;
        var limits = Array.isArray(u.limits) ? u.limits : [];
        for (var i = 0; i < limits.length; i++) {
            var r = limits[i] ? num(limits[i].rate_per_sec) : null;
            if (r !== null)
                tightest = tightest === null ? r : Math.min(tightest, r);
        }
        put(f.release_rate, num(u.release_rate), fmtRate(u.release_rate));
        put(f.release_limit, tightest,
            tightest === null ? '' : 'limit ' + fmtRate(tightest) + '/s');
        put(f.predicted_wait_ms, num(u.predicted_wait_ms), fmtMs(u.predicted_wait_ms));
        put(f.next_release_in_ms, num(u.next_release_in_ms), num(u.next_release_in_ms) === null ?
            'nothing queued' : 'next release in ' + fmtMs(u.next_release_in_ms));
        var qw = u.queue_wait_ms || {};
        var waited = num(qw.count) !== 0;   // no wait in the window: no percentile
        put(f['queue_wait_ms.p50'], waited ? num(qw.p50) : null, waited ? fmtMs(qw.p50) : DASH);
        put(f['queue_wait_ms.p99'], waited ? num(qw.p99) : null, waited ? fmtMs(qw.p99) : DASH);
        put(f['queue_wait_ms.count'], num(qw.count),
            fmtInt(qw.count) + ' waits in ' + (num(qw.window_s) || 60) + ' s');
        put(f.max_wait_ms, num(u.max_wait_ms), 'max ' + fmtMs(u.max_wait_ms));

        put(f.queue_depth, num(u.queue_depth), fmtInt(u.queue_depth));
        put(f.queue_capacity, num(u.queue_capacity), fmtInt(u.queue_capacity));
        setFill(c.fills.queue_depth, u.queue_depth, u.queue_capacity);
        put(f.in_flight, num(u.in_flight), fmtInt(u.in_flight));
        put(f.max_in_flight, num(u.max_in_flight), fmtInt(u.max_in_flight));
        setFill(c.fills.in_flight, u.in_flight, u.max_in_flight);

        updateRates(c.answers, 'answers', u.answers_rate, null, ANSWER_CLASSES);
        updateRates(c.refusals, 'refusals', u.refusals_rate, u.refusals || {}, REFUSAL_REASONS);

        var pool = u.pool || {};
        put(f['pool.idle'], num(pool.idle), fmtInt(pool.idle));
        put(f['pool.lent'], num(pool.lent), fmtInt(pool.lent));
        put(f['pool.keepalive'], num(pool.keepalive), fmtInt(pool.keepalive));

        updateKeys(c, u.keys);
        updateShared(c, u);

        var h = u.history || {};
        var per = num(h.interval_s) || 1;
        drawSpark(c.sparks.queue_depth, Array.isArray(h.queue_depth) ? h.queue_depth : [], 1, per);
        drawSpark(c.sparks.released, Array.isArray(h.released) ? h.released : [], 1 / per, per);
        drawSpark(c.sparks.refused, Array.isArray(h.refused) ? h.refused : [], 1 / per, per);
    }

    // ------------------------------------------------------------ whole page

    function updateSummary(st) {
        var state = typeof st.state === 'string' ? st.state : null;
        put(byId('state'), state);
        put(byId('version'), typeof st.version === 'string' ? st.version : null);
        put(byId('uptime'), num(st.uptime_s), fmtDuration(st.uptime_s));
        var cl = st.client || {};
        put(byId('client-connections'), num(cl.connections), fmtInt(cl.connections));
        put(byId('client-max'), num(cl.max_connections), fmtInt(cl.max_connections));
        var refused = cl.refused || {};
        var rate = cl.refused_rate || {};
        for (var i = 0; i < CLIENT_REASONS.length; i++) {
            var k = CLIENT_REASONS[i];
            put(byId('client-refused-' + k), num(refused[k]), fmtInt(refused[k]));
            put(byId('client-refused-rate-' + k), num(rate[k]), fmtRate(rate[k]));
        }
        return state;
    }

    function render(st) {
        var now = performance.now();
        var state = updateSummary(st);
        var main = byId('upstreams');
        var ups = Array.isArray(st.upstreams) ? st.upstreams : [];
        var seen = new Set();
        var order = [];
        for (var i = 0; i < ups.length; i++) {
            var u = ups[i];
            if (!u || typeof u.name !== 'string' || seen.has(u.name))
                continue;
            seen.add(u.name);
            var c = cards.get(u.name);
            if (!c) {
                c = makeCard(u.name);
                cards.set(u.name, c);
            }
            updateCard(c, u, now);
            order.push(c.root);
        }
        cards.forEach(function (c, name) {
            if (!seen.has(name))
                cards.delete(name);
        });
        // append in /status order; appendChild moves a node already there
        for (var j = 0; j < order.length; j++)
            if (main.children[j] !== order[j])
                main.insertBefore(order[j], main.children[j] || null);
        while (main.children.length > order.length)
            main.removeChild(main.lastChild);
        byId('empty').hidden = order.length > 0;

        lastOkAt = now;
        everOk = true;
        document.body.classList.remove('stale');
        var mode = state === 'draining' ? 'draining' : 'live';
        setConn(mode, mode, num(st.now_unix_ms) === null ? '' :
            'as of ' + new Date(st.now_unix_ms).toLocaleTimeString());
    }

    function setConn(state, text, note) {
        var c = byId('conn');
        c.dataset.state = state;
        c.textContent = text;
        byId('conn-note').textContent = note;
    }

    function fail(why) {
        document.body.classList.add('stale');
        var note = everOk ? 'last data ' + fmtDuration((performance.now() - lastOkAt) / 1000) +
            ' ago' : 'no data yet';
        setConn('disconnected', 'disconnected', String(why) + '; ' + note);
    }

    function poll() {
        var started = performance.now();
        var ctl = new AbortController();
        var timer = setTimeout(function () { ctl.abort(); }, TIMEOUT_MS);
        fetch('status?history=' + HISTORY_S, {
            cache: 'no-store',
            credentials: 'same-origin',
            headers: {'Accept': 'application/json'},
            signal: ctl.signal
        }).then(function (r) {
            if (!r.ok)
                throw new Error('HTTP ' + r.status);
            return r.json();
        }).then(function (st) {
            if (!st || typeof st !== 'object')
                throw new Error('not a status object');
            render(st);
        }, function (e) {
            fail(e && e.name === 'AbortError' ? 'timed out' : (e && e.message) || 'failed');
        }).catch(function (e) {
            // a bug in render: keep polling, and say so
            setConn('error', 'error', String(e && e.message));
            if (window.console)
                console.error(e);
        }).then(function () {
            clearTimeout(timer);
            setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
        });
    }

    function tick() {
        var now = performance.now();
        cards.forEach(function (c) { tickCard(c, now); });
    }

    function start() {
        poll();
        setInterval(tick, TICK_MS);
    }

    if (document.readyState === 'loading')
        document.addEventListener('DOMContentLoaded', start);
    else
        start();
}());
