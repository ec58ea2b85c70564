// ferry status page: reads the gateway's status events (server-sent
// events from "events") and draws them. Rates and the five-minute history
// are derived here from the counters in each snapshot, so the gateway keeps
// no history for the page. Everything the gateway sends is inserted with
// textContent, never as HTML: topics, payloads and errors come from devices.
'use strict';
(() => {
  const WINDOW_MS = 5 * 60 * 1000; // history kept and drawn
  const HIDDEN_CLOSE_MS = 60 * 1000; // a hidden tab gives its stream slot back
  const DEADLETTER_POLL_MS = 30 * 1000;
  const DEADLETTER_COMMIT_MS = 2000; // more than a pipeline's commit interval
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const series = { ingest: [], forward: [], backlog: [], bytes: [] }; // [time ms, value]
  const streamSeries = new Map(); // stream name -> [time ms, events]
  let prev = null; // previous snapshot's counters, for rates
  let updates = 0;
  let es = null;
  let hiddenTimer = 0;
  let paused = false; // hidden long enough to have given the stream back
  let deadLetterTotal = -1;
  let deadLetterFetched = 0;

  const num = (n) => Math.round(n).toLocaleString('en-US');
  const rate = (n) => (n < 10 ? n.toFixed(1) : num(n));
  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? num(n) : n.toFixed(1)) + ' ' + units[i];
  }
  // dur rounds a Go duration string ("1m30.0521s", "19.800042ms") to
  // what a person reads at a glance.
  function dur(go) {
    const unit = { h: 3600e3, m: 60e3, s: 1e3, ms: 1, us: 1e-3, 'µs': 1e-3, ns: 1e-6 };
    let ms = 0;
    for (const [, v, u] of String(go).matchAll(/([\d.]+)(h|ms|m|s|us|µs|ns)/g)) ms += parseFloat(v) * unit[u];
    if (ms < 1) return ms ? Math.round(ms * 1000) + ' µs' : '0 s';
    if (ms < 1000) return (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + ' ms';
    const s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
  }
  function ago(iso) {
    const t = Date.parse(iso);
    if (!t || t < 0) return 'never'; // Go's zero time is year 1
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 120) return s + ' s ago';
    if (s < 7200) return Math.round(s / 60) + ' min ago';
    return new Date(t).toLocaleString();
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    const tr = document.createElement('tr');
    for (const c of cells) tr.append(c instanceof Node ? c : el('td', String(c)));
    return tr;
  }
  const numCell = (text) => el('td', text, 'num');

  function push(pts, t, v) {
    pts.push([t, v]);
    while (pts.length && pts[0][0] < t - WINDOW_MS) pts.shift();
  }

  // draw fills svg (viewBox 300x60) with an area chart of pts; the time
  // axis spans the history there is, up to WINDOW_MS, ending now.
  function draw(svg, pts, now) {
    const W = 300, H = 60;
    const parts = [];
    if (pts.length > 1) {
      const t0 = Math.max(now - WINDOW_MS, pts[0][0]);
      const span = Math.max(1, now - t0);
      const max = Math.max(...pts.map((p) => p[1])) || 1;
      for (const [t, v] of pts) {
        parts.push(((t - t0) / span * W).toFixed(1) + ',' + (H - 1 - v / max * (H - 4)).toFixed(1));
      }
    }
    const area = document.createElementNS(SVG, 'polygon');
    const line = document.createElementNS(SVG, 'polyline');
    if (parts.length) {
      area.setAttribute('points', '0,' + H + ' ' + parts.join(' ') + ' ' + W + ',' + H);
      line.setAttribute('points', parts.join(' '));
    }
    area.setAttribute('class', 'area');
    line.setAttribute('class', 'line');
    svg.replaceChildren(area, line);
  }

  // chart updates one chart card; its data- attributes (points, last, max)
  // state what it shows, for people and tests alike.
  function chart(id, pts, fmt, now) {
    const card = $(id);
    const last = pts.length ? pts[pts.length - 1][1] : 0;
    const max = pts.reduce((m, p) => Math.max(m, p[1]), 0);
    const value = card.querySelector('[data-role=value]');
    value.textContent = fmt(last);
    value.append(el('small', ' max ' + fmt(max)));
    card.dataset.points = pts.length;
    card.dataset.last = last;
    card.dataset.max = max;
    draw(card.querySelector('svg'), pts, now);
  }

  function sparkline(pts, now) {
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 300 60');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('class', 'spark');
    draw(svg, pts, now);
    return svg;
  }

  function renderLink(link) {
    const state = $('link-state');
    const err = $('link-error');
    if (!link) {
      state.textContent = 'uplink disabled';
      state.className = 'badge off';
      document.body.dataset.link = 'disabled';
      err.hidden = true;
      return;
    }
    state.textContent = link.Connected ? 'connected' : 'down';
    state.className = 'badge ' + (link.Connected ? 'ok' : 'bad');
    document.body.dataset.link = link.Connected ? 'connected' : 'down';
    $('link-endpoint').textContent = link.Endpoint || '';
    err.hidden = !link.LastError;
    err.textContent = 'last error: ' + link.LastError;
    err.className = (link.Connected ? 'muted' : 'error') + ' mono';
    const since = link.Connected ? 'up since ' + ago(link.LastConnected) : 'down since ' + ago(link.LastDisconnected);
    $('link-detail').textContent = since + ' · forwarded ' + num(link.ForwardedEvents) + ' events in ' +
      num(link.ForwardedMessages) + ' messages (' + bytes(link.ForwardedBytes) + ') · reconnects ' +
      num(link.Reconnects) + ' · resent ' + num(link.Resent) + ' · in flight ' + num(link.Inflight);
  }

  function renderStreams(streams, now) {
    const rows = [];
    for (const s of streams) {
      const drops = Object.values(s.drops || {}).reduce((a, b) => a + b, 0);
      const dropCell = numCell(num(drops));
      if (drops) {
        dropCell.className = 'num error';
        dropCell.title = Object.entries(s.drops).map(([k, v]) => k + ': ' + v).join(', ');
      }
      const spark = el('td');
      spark.append(sparkline(streamSeries.get(s.name) || [], now));
      rows.push(row([el('td', s.name, 'mono'), numCell(num(s.events)), numCell(bytes(s.bytes)),
        numCell(s.events ? dur(s.oldest_age) : '–'), dropCell, spark]));
    }
    $('streams').replaceChildren(...rows);
  }

  function renderDrivers(drivers) {
    $('drivers-none').hidden = drivers.length > 0;
    $('drivers').replaceChildren(...drivers.map((d) => row([
      el('td', d.name, 'mono'), d.kind, el('td', d.state, 'state-' + d.state),
      numCell(num(d.reads)), numCell(num(d.errors)), ago(d.last_ok), el('td', d.last_error || '', 'mono small'),
    ])));
  }

  function renderPipelines(pipelines) {
    $('pipelines-none').hidden = pipelines.length > 0;
    $('pipelines').replaceChildren(...pipelines.map((p) => row([
      el('td', p.name, 'mono'), numCell(num(p.in)), numCell(num(p.out)),
      el('td', num(p.dead_letters), 'num' + (p.dead_letters ? ' error' : '')),
    ])));
  }

  function renderAlerts(alerts) {
    $('alerts-none').hidden = alerts.length > 0;
    document.body.dataset.alerts = alerts.length;
    $('alerts').replaceChildren(...alerts.map((a) => {
      const payload = a.payload.length > 80 ? a.payload.slice(0, 80) + '…' : a.payload;
      return row([new Date(a.time).toLocaleTimeString(), el('td', a.pipeline, 'mono'), el('td', a.stream, 'mono'),
        el('td', a.source, 'mono'), el('td', payload, 'mono small')]);
    }));
  }

  async function fetchDeadLetters() {
    deadLetterFetched = Date.now();
    try {
      const res = await fetch('deadletters?n=10', { cache: 'no-store' });
      if (!res.ok) return;
      const list = await res.json();
      list.reverse(); // newest first
      $('deadletters-none').hidden = list.length > 0;
      document.body.dataset.deadletters = list.length;
      $('deadletters').replaceChildren(...list.map((d) => {
        const payload = d.payload.length > 80 ? d.payload.slice(0, 80) + '…' : d.payload;
        return row([new Date(d.time).toLocaleTimeString(), el('td', d.pipeline || '–', 'mono'), d.reason,
          el('td', d.topic, 'mono'), el('td', payload, 'mono small')]);
      }));
    } catch (e) {
      // The next status event or poll tries again.
    }
  }

  function onStatus(ev) {
    const st = JSON.parse(ev.data);
    const now = Date.now();
    updates++;
    const ingested = st.ingest.ingested;
    const forwarded = st.link ? st.link.ForwardedEvents : 0;
    if (prev && now > prev.t) {
      const dt = (now - prev.t) / 1000;
      // A counter that went down means the gateway restarted: no rate
      // for that step rather than a negative one.
      if (ingested >= prev.ingested) push(series.ingest, now, (ingested - prev.ingested) / dt);
      if (forwarded >= prev.forwarded) push(series.forward, now, (forwarded - prev.forwarded) / dt);
    }
    prev = { t: now, ingested, forwarded };

    const streams = st.streams || [];
    let events = 0, size = 0;
    for (const s of streams) {
      events += s.events;
      size += s.bytes;
      if (!streamSeries.has(s.name)) streamSeries.set(s.name, []);
      push(streamSeries.get(s.name), now, s.events);
    }
    for (const name of streamSeries.keys()) {
      if (!streams.some((s) => s.name === name)) streamSeries.delete(name);
    }
    push(series.backlog, now, events);
    push(series.bytes, now, size);

    const b = document.body.dataset;
    b.updates = updates;
    b.ingested = ingested;
    b.forwarded = forwarded;
    b.backlog = events;

    $('gateway-id').textContent = st.gateway_id;
    $('uptime').textContent = 'up ' + dur(st.uptime);
    renderLink(st.link);
    chart('chart-ingest', series.ingest, rate, now);
    chart('chart-forward', series.forward, rate, now);
    chart('chart-backlog', series.backlog, num, now);
    chart('chart-bytes', series.bytes, bytes, now);
    renderStreams(streams, now);
    renderDrivers(st.drivers || []);
    renderPipelines(st.pipelines || []);
    renderAlerts(st.alerts || []);

    const ig = st.ingest;
    $('broker').textContent = num(ig.clients) + ' clients · ' + num(ig.ingested) + ' ingested · ' +
      num(ig.refused) + ' refused · ' + num(ig.ignored) + ' matched no route · ' + num(st.commits) +
      ' commits, ' + dur(st.commit_avg) + ' average';
    $('disk-full').hidden = !st.disk_full;
    const q = $('quarantined');
    q.hidden = !st.quarantined;
    q.textContent = 'A corrupt buffer file was moved to ' + st.quarantined + ' at start-up.';

    // Dead letters are a separate request: fetched when a pipeline's count
    // changes, and now and then for those written by webhooks. A pipeline
    // counts a dead letter when it processes the event but commits it up
    // to a second later, so a change is fetched again shortly after.
    const total = (st.pipelines || []).reduce((a, p) => a + p.dead_letters, 0);
    if (total !== deadLetterTotal) {
      deadLetterTotal = total;
      fetchDeadLetters();
      setTimeout(fetchDeadLetters, DEADLETTER_COMMIT_MS);
    } else if (now - deadLetterFetched > DEADLETTER_POLL_MS) {
      fetchDeadLetters();
    }
  }

  function feed(text, cls) {
    const f = $('feed');
    f.textContent = text;
    f.className = 'badge ' + cls;
  }

  function connect() {
    if (es || paused) return;
    es = new EventSource('events');
    es.addEventListener('status', onStatus);
    es.onopen = () => feed('live', 'ok');
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // The browser gives up on a 503 (too many open pages) or any
        // other refusal; try again later ourselves.
        es = null;
        feed('gateway unreachable, retrying', 'bad');
        setTimeout(connect, 10000);
      } else {
        feed('reconnecting…', 'bad');
      }
    };
  }

  document.addEventListener('visibilitychange', () => {
    clearTimeout(hiddenTimer);
    if (document.hidden) {
      hiddenTimer = setTimeout(() => {
        paused = true;
        if (es) { es.close(); es = null; }
        feed('paused while hidden', 'off');
      }, HIDDEN_CLOSE_MS);
    } else {
      paused = false;
      connect();
    }
  });

  connect();
})();
