// Eddy dashboard: plain browser JavaScript, no build step. Polls the JSON endpoints and renders
// tables, event lists and an inline SVG chart. Data is always inserted as text (textContent),
// never as HTML, so a client id or a reason from the log cannot inject markup.
'use strict';

const POLL_MS = 5000;
const SVG = 'http://www.w3.org/2000/svg';
const METRICS = [
  { key: 'precision', name: 'Precision' },
  { key: 'recall', name: 'Recall' },
  { key: 'f1', name: 'F1' },
];

const state = { selected: decodeURIComponent((location.hash.match(/client=([^&]+)/) || [])[1] || ''), search: '', offset: 0, limit: 50, total: 0, timer: 0, loading: false, again: false };

const $ = (sel) => document.querySelector(sel);
// A figure with nothing behind it arrives as null and shows as "—": not 0.000, which would read as "all wrong".
const fmt = (x) => (typeof x === 'number' && isFinite(x) ? x.toFixed(3) : '—');
const pct = (x) => (typeof x === 'number' && isFinite(x) ? `${x > 0 ? '+' : x < 0 ? '−' : ''}${Math.abs(x).toFixed(1)}%` : '—');
const TIMELINE = {
  ModelPublished: { name: 'published', shape: (x, y) => svg('path', { d: `M${x} ${y - 6} L${x + 6} ${y + 5} L${x - 6} ${y + 5} Z` }) },
  ModelPromoted: { name: 'promoted', shape: (x, y) => svg('circle', { cx: x, cy: y, r: 5 }) },
  ModelRolledBack: { name: 'rolled back', shape: (x, y) => svg('path', { d: `M${x} ${y - 6} L${x + 6} ${y} L${x} ${y + 6} L${x - 6} ${y} Z` }) },
  QualityAlert: { name: 'alert', shape: (x, y) => svg('path', { d: `M${x - 5} ${y - 5} L${x + 5} ${y + 5} M${x + 5} ${y - 5} L${x - 5} ${y + 5}` }) },
};
const when = (ms) => (ms ? new Date(ms).toLocaleString() : '–');
const iso = (ms) => new Date(ms).toISOString();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== undefined && c !== null) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function getJson(url) {
  const res = await fetch(url, { headers: { accept: 'application/json' } });
  // The session ended (or the key was revoked): sign in again, then come back here.
  if (res.status === 401) location.assign(`/dashboard/login?next=${encodeURIComponent(location.pathname + location.hash)}`);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${res.status}`);
  return body;
}

function setStatus(text, error) {
  const s = $('#status');
  s.textContent = text;
  s.classList.toggle('error', !!error);
}

function eventItem(e, withClient) {
  const kind = {
    ModelPublished: 'Published', ModelRejected: 'Rejected', ModelPromoted: 'Promoted', ModelRolledBack: 'Rolled back',
    RetrainRequested: 'Retrain', QualityAlert: 'Alert',
  }[e.type] || e.type;
  return el('li', { 'data-type': e.type },
    el('time', { datetime: iso(e.at) }, when(e.at)),
    el('span', { class: `kind${e.type === 'QualityAlert' || e.type === 'ModelRejected' || e.type === 'ModelRolledBack' ? ' badge bad' : ''}` }, kind),
    withClient ? el('strong', {}, `${e.clientId}: `) : null,
    e.title);
}

/** A client's F1 over its last rolling-week points: a small chart with a text equivalent. */
function sparkline(c) {
  const pts = c.trend.filter((p) => p.f1 !== null);
  if (pts.length === 0) return el('span', { class: 'muted' }, '—');
  const W = 120, H = 28;
  const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
  const lo = Math.min(...pts.map((p) => p.f1)), hi = Math.max(...pts.map((p) => p.f1));
  const v0 = Math.max(0, Math.min(lo - 0.05, hi - 0.1));
  const x = (t) => (t1 > t0 ? 2 + ((t - t0) / (t1 - t0)) * (W - 4) : W / 2);
  const y = (v) => 2 + (1 - (v - v0) / (Math.max(hi, v0 + 0.1) - v0)) * (H - 4);
  const first = pts[0], last = pts[pts.length - 1];
  const chart = svg('svg', { class: 'spark', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `F1 of ${c.clientId}: ${fmt(first.f1)} on ${when(first.t)}, ${fmt(last.f1)} on ${when(last.t)} (${pts.length} points)` },
  svg('polyline', { class: 'f1', points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.f1).toFixed(1)}`).join(' ') }),
  svg('circle', { class: 'f1-end', cx: x(last.t), cy: y(last.f1), r: 2.5 }));
  return chart;
}

function renderClients(overview) {
  const tbody = $('#clients tbody');
  const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.client : undefined;
  tbody.replaceChildren();
  for (const c of overview.clients) {
    const selected = c.clientId === state.selected;
    const button = el('button', { type: 'button', class: 'client', 'data-client': c.clientId, 'aria-pressed': selected ? 'true' : 'false' }, c.clientId);
    button.addEventListener('click', () => select(c.clientId, true));
    // A rollback after the last retrain's outcome is what the operator needs to see first.
    const rolledBack = c.lastRollback && (!c.lastOutcome || c.lastRollback.at >= c.lastOutcome.at);
    const outcome = rolledBack
      ? el('span', { title: c.lastRollback.detail }, el('span', { class: 'badge bad' }, 'rolled back'), ` to ${c.live || '?'}`)
      : c.lastOutcome
      ? el('span', {}, el('span', { class: `badge ${c.lastOutcome.status === 'PUBLISHED' ? 'good' : 'bad'}` }, c.lastOutcome.status.toLowerCase()), ` ${c.lastOutcome.version || ''}`)
      : '–';
    const alerts = c.openAlerts.length ? el('span', {}, ...c.openAlerts.map((a) => el('span', { class: 'badge bad' }, a.replace(/_/g, ' ').toLowerCase()))) : 'none';
    const gaps = c.segmentGaps.length ? el('span', {}, ...c.segmentGaps.map((g) => el('span', { class: 'badge bad', title: `${pct(-g.gapPercent)} accuracy vs the client` }, g.segment))) : '—';
    const review = c.reviewQueue ? el('a', { href: `/dashboard/review?client=${encodeURIComponent(c.clientId)}` }, String(c.reviewQueue)) : '0';
    tbody.append(el('tr', { 'aria-selected': selected ? 'true' : 'false', 'data-client': c.clientId },
      el('th', { scope: 'row' }, button),
      el('td', {}, c.live || 'baseline'),
      el('td', { class: 'spark-cell' }, sparkline(c)),
      el('td', { class: 'num' }, fmt(c.quality.precision)),
      el('td', { class: 'num' }, fmt(c.quality.recall)),
      el('td', { class: 'num' }, fmt(c.quality.f1)),
      el('td', { class: 'num' }, c.quality.support),
      el('td', { class: 'num' }, review),
      el('td', {}, gaps),
      el('td', {}, c.lastRetrain ? `${when(c.lastRetrain.at)} (${c.lastRetrain.reason.toLowerCase().replace('_', ' ')})` : '–'),
      el('td', {}, outcome),
      el('td', {}, alerts)));
  }
  if (overview.clients.length === 0) tbody.append(el('tr', {}, el('td', { colspan: 12 }, state.search ? 'No client matches.' : 'No clients yet: the monitor has seen no predictions or models.')));
  state.total = overview.totalClients;
  const pages = Math.max(1, Math.ceil(overview.totalClients / state.limit));
  const page = Math.floor(state.offset / state.limit) + 1;
  $('#clients-count').textContent = overview.clients.length
    ? `Clients ${state.offset + 1}–${state.offset + overview.clients.length} of ${overview.totalClients} (page ${page} of ${pages}).`
    : `0 of ${overview.totalClients} clients.`;
  $('#prev-page').disabled = state.offset === 0;
  $('#next-page').disabled = state.offset + state.limit >= overview.totalClients;
  // Keep keyboard users where they were: re-rendering must not drop focus.
  if (focusedId) {
    const again = tbody.querySelector(`button[data-client="${CSS.escape(focusedId)}"]`);
    if (again) again.focus();
  }
}

function renderRates(overview) {
  const rates = $('#rates tbody');
  rates.replaceChildren(...overview.rates.map((r) => el('tr', {}, el('th', { scope: 'row' }, r.topic), el('td', { class: 'num' }, r.perSecond === null ? 'measuring…' : r.perSecond.toFixed(1)), el('td', { class: 'num' }, r.total))));
  if (!overview.rates.length) rates.append(el('tr', {}, el('td', { colspan: 3 }, 'Not sampled yet.')));
  const lag = $('#lag tbody');
  lag.replaceChildren(...overview.lag.map((l) => el('tr', {}, el('th', { scope: 'row' }, l.group), el('td', {}, l.topic), el('td', { class: 'num' }, l.lag))));
  if (!overview.lag.length) lag.append(el('tr', {}, el('td', { colspan: 3 }, 'No consumer groups yet.')));
}

function renderChart(detail) {
  const points = detail.trend;
  const box = $('#chart');
  const figure = $('#trend-figure');
  figure.hidden = points.length === 0;
  box.replaceChildren();
  if (points.length === 0) return;
  const W = 900, H = 320, L = 48, R = 16, T = 28, B = 36, BAND = 64;
  let t0 = points[0].t, t1 = points[points.length - 1].t;
  // Show the version that was live when the window starts: its publication, up to a week earlier.
  for (const m of detail.markers) if (m.type === 'ModelPublished' && m.at < t0 && m.at >= t0 - 7 * 86_400_000) t0 = m.at;
  if (t1 - t0 < 60_000) { t0 -= 30_000; t1 += 30_000; }
  // The y axis starts below the lowest value (in steps of 0.1) so that a 5% drop is visible.
  const lowest = Math.min(...points.flatMap((p) => METRICS.map((m) => p[m.key])));
  const v0 = Math.max(0, Math.floor((lowest - 0.05) * 10) / 10);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - v0) / (1 - v0 || 1)) * (H - T - B);
  const last = points[points.length - 1];
  const first = points[0];
  const desc = `${points.length} points from ${when(first.t)} to ${when(last.t)}. Latest: precision ${fmt(last.precision)}, recall ${fmt(last.recall)}, F1 ${fmt(last.f1)} on ${last.support} judged predictions` +
    `${last.version ? ` (version ${last.version})` : ''}; first: F1 ${fmt(first.f1)}. The vertical axis runs from ${v0.toFixed(1)} to 1.`;
  const chart = svg('svg', { class: 'trend', viewBox: `0 0 ${W} ${H + BAND}`, role: 'img', 'aria-labelledby': 'chart-title', 'aria-describedby': 'chart-desc' },
    svg('title', { id: 'chart-title' }, `Quality trend of ${detail.clientId}`),
    svg('desc', { id: 'chart-desc' }, desc));
  const step = 1 - v0 <= 0.5 ? 0.1 : 0.25;
  for (let v = v0; v <= 1.0001; v += step) {
    chart.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    chart.append(svg('text', { x: L - 8, y: y(v) + 4, 'text-anchor': 'end' }, v.toFixed(2)));
  }
  chart.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  chart.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const ticks = 4;
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + ((t1 - t0) * i) / ticks;
    const d = new Date(t);
    const label = t1 - t0 > 2 * 86_400_000 ? d.toLocaleDateString() : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    chart.append(svg('text', { x: x(t), y: H - B + 18, 'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle' }, label));
  }
  for (const m of detail.markers) {
    if (m.at < t0 || m.at > t1) continue;
    const alert = m.type === 'QualityAlert';
    const line = svg('line', { class: `marker${alert ? ' marker-alert' : ''}`, x1: x(m.at), x2: x(m.at), y1: T - 4, y2: H - B });
    line.append(svg('title', {}, m.title));
    chart.append(line);
    if (!alert && m.version) chart.append(svg('text', { x: x(m.at) + 3, y: T - 10 }, m.version));
  }
  for (const m of METRICS) {
    chart.append(svg('polyline', { class: m.key, points: points.filter((p) => p.support > 0).map((p) => `${x(p.t).toFixed(1)},${y(p[m.key]).toFixed(1)}`).join(' ') }));
  }
  // The version timeline on the same time axis: versions in one lane, alerts in the other.
  const lanes = { versions: H + 18, alerts: H + 46 };
  chart.append(svg('text', { x: L - 8, y: lanes.versions + 4, 'text-anchor': 'end' }, 'versions'));
  chart.append(svg('text', { x: L - 8, y: lanes.alerts + 4, 'text-anchor': 'end' }, 'alerts'));
  for (const lane of Object.values(lanes)) chart.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: lane, y2: lane }));
  const g = svg('g', { class: 'timeline' });
  for (const m of detail.markers) {
    const kind = TIMELINE[m.type];
    if (!kind || m.at < t0 || m.at > t1) continue;
    const shape = kind.shape(x(m.at), m.type === 'QualityAlert' ? lanes.alerts : lanes.versions);
    shape.setAttribute('class', `tl tl-${m.type}`);
    shape.setAttribute('data-type', m.type);
    shape.append(svg('title', {}, `${when(m.at)}: ${m.title}`));
    g.append(shape);
  }
  chart.append(g);
  box.append(chart);
  const inWindow = detail.markers.filter((m) => TIMELINE[m.type] && m.at >= t0 && m.at <= t1);
  $('#chart-desc').textContent += inWindow.length
    ? ` Timeline: ${inWindow.map((m) => `${TIMELINE[m.type].name}${m.version ? ` ${m.version}` : ''} on ${when(m.at)}`).join('; ')}.`
    : ' No version changes or alerts in this window.';
  $('#trend-table tbody').replaceChildren(...points.slice(-200).map((p) => el('tr', {},
    el('td', {}, el('time', { datetime: iso(p.t) }, when(p.t))), el('td', {}, p.version || 'baseline'),
    el('td', { class: 'num' }, fmt(p.precision)), el('td', { class: 'num' }, fmt(p.recall)), el('td', { class: 'num' }, fmt(p.f1)), el('td', { class: 'num' }, p.support))));
}

/** The live version's model builder info: configuration, cross-validated and held-out macro-F1, calibration. */
function modelInfoText(m) {
  if (!m) return '';
  let config = m.config;
  try {
    const c = JSON.parse(m.config);
    config = `${c.kind} ${Object.entries(c.params).map(([k, v]) => `${k}=${v}`).join(' ')}${c.charNgrams.length ? ` chars=${c.charNgrams.join(',')}` : ''}`;
  } catch { /* older trainers publish no configuration */ }
  return ` Model ${m.version}: ${config || 'configuration not recorded'} (${m.searched ? 'chosen by this version\'s search' : 'reused from the last search'}), ` +
    `cross-validated macro-F1 ${fmt(m.cvMacroF1)}, held-out macro-F1 ${fmt(m.macroF1)}, trained on ${m.trainingExamples} examples by ${m.backend || '?'}; ` +
    `calibration error ${fmt(m.eceBefore)} -> ${fmt(m.eceAfter)}, unsure below ${fmt(m.unsureBelow)}.`;
}

function renderDetail(detail) {
  $('#detail-title').textContent = `Client ${detail.clientId}`;
  const q = detail.quality;
  $('#detail-summary').textContent = `Live version ${detail.live || 'none (baseline)'}; versions ${detail.versions.join(', ') || 'none'}. ` +
    `Last 7 days: precision ${fmt(q.precision)}, recall ${fmt(q.recall)}, F1 ${fmt(q.f1)}, accuracy ${fmt(q.accuracy)} on ${q.support} judged predictions; ` +
    `prediction bias (Jensen-Shannon) ${fmt(q.bias)}.` + modelInfoText(detail.model);
  renderChart(detail);
  $('#detail-review').replaceChildren(detail.reviewQueue
    ? el('span', {}, `${detail.reviewQueue} request${detail.reviewQueue === 1 ? '' : 's'} wait for a human label: `, el('a', { href: `/dashboard/review?client=${encodeURIComponent(detail.clientId)}` }, 'open the review queue'), '.')
    : 'Nothing waits for review.');
  const open = new Set(detail.segmentGaps.map((g) => g.segment));
  $('#segments tbody').replaceChildren(...detail.segments.map((g) => el('tr', { class: open.has(g.segment) ? 'gap' : undefined },
    el('th', { scope: 'row' }, g.segment, open.has(g.segment) ? el('span', { class: 'badge bad' }, 'gap') : null),
    el('td', { class: 'num' }, fmt(g.precision)), el('td', { class: 'num' }, fmt(g.recall)), el('td', { class: 'num' }, fmt(g.f1)), el('td', { class: 'num' }, fmt(g.accuracy)),
    el('td', { class: 'num' }, g.support), el('td', { class: 'num' }, pct(-g.gapPercent)), el('td', { class: 'num' }, g.dropPercent === null ? '—' : pct(-g.dropPercent)))));
  if (!detail.segments.length) $('#segments tbody').append(el('tr', {}, el('td', { colspan: 8 }, 'No judged requests in any segment in the last 7 days.')));
  $('#labels tbody').replaceChildren(...detail.labels.map((l) => el('tr', {}, el('th', { scope: 'row' }, l.label),
    el('td', { class: 'num' }, fmt(l.precision)), el('td', { class: 'num' }, fmt(l.recall)), el('td', { class: 'num' }, fmt(l.f1)), el('td', { class: 'num' }, l.support))));
  if (!detail.labels.length) $('#labels tbody').append(el('tr', {}, el('td', { colspan: 5 }, 'No feedback in the last 7 days.')));
  $('#versions tbody').replaceChildren(...detail.byVersion.map((v) => el('tr', {}, el('th', { scope: 'row' }, v.version + (v.version === detail.live ? ' (live)' : '')),
    el('td', { class: 'num' }, fmt(v.precision)), el('td', { class: 'num' }, fmt(v.recall)), el('td', { class: 'num' }, fmt(v.f1)), el('td', { class: 'num' }, fmt(v.accuracy)), el('td', { class: 'num' }, v.support))));
  if (!detail.byVersion.length) $('#versions tbody').append(el('tr', {}, el('td', { colspan: 6 }, 'No feedback in the last 14 days.')));
  $('#client-events').replaceChildren(...detail.events.map((e) => eventItem(e, false)));
  if (!detail.events.length) $('#client-events').append(el('li', {}, 'No retrains, versions or alerts yet.'));
}

function select(clientId, moveFocus) {
  state.selected = clientId;
  history.replaceState(null, '', `#client=${encodeURIComponent(clientId)}`);
  document.querySelectorAll('#clients tbody tr').forEach((tr) => {
    const b = tr.querySelector('button.client');
    const on = !!b && b.dataset.client === clientId;
    tr.setAttribute('aria-selected', on ? 'true' : 'false');
    if (b) b.setAttribute('aria-pressed', on ? 'true' : 'false');
  });
  refresh().then(() => { if (moveFocus) $('#client-detail').focus(); });
}

async function refresh() {
  // A refresh asked for while one is running (a click, a search) runs right after it.
  if (state.loading) { state.again = true; return; }
  state.loading = true;
  clearTimeout(state.timer);
  try {
    const params = new URLSearchParams({ limit: String(state.limit), offset: String(state.offset) });
    if (state.search) params.set('search', state.search);
    const overview = await getJson(`/dashboard/api/overview?${params}`);
    if (!state.selected && overview.clients.length) state.selected = overview.clients[0].clientId;
    renderClients(overview);
    $('#recent').replaceChildren(...overview.recent.map((e) => eventItem(e, true)));
    if (!overview.recent.length) $('#recent').append(el('li', {}, 'Nothing yet.'));
    renderRates(overview);
    if (state.selected) renderDetail(await getJson(`/dashboard/api/clients/${encodeURIComponent(state.selected)}`));
    setStatus(`Updated ${new Date(overview.generatedAt).toLocaleTimeString()}; next update in ${POLL_MS / 1000} s.`, false);
    document.body.dataset.loaded = 'true';
  } catch (err) {
    setStatus(`Could not update: ${err.message}. Retrying in ${POLL_MS / 1000} s.`, true);
  } finally {
    state.loading = false;
    if (state.again) { state.again = false; refresh(); } else state.timer = setTimeout(refresh, POLL_MS);
  }
}

document.addEventListener('DOMContentLoaded', async () => {
  let debounce = 0;
  $('#search').addEventListener('input', (e) => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.search = e.target.value.trim(); state.offset = 0; refresh(); }, 250);
  });
  $('#page-size').addEventListener('change', (e) => { state.limit = Number(e.target.value); state.offset = 0; refresh(); });
  $('#prev-page').addEventListener('click', () => { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
  $('#next-page').addEventListener('click', () => { if (state.offset + state.limit < state.total) { state.offset += state.limit; refresh(); } });
  $('#sign-out').addEventListener('click', async () => { await fetch('/dashboard/session', { method: 'DELETE' }); location.assign('/dashboard/login'); });
  state.limit = Number($('#page-size').value);
  try {
    const { principal } = await getJson('/dashboard/api/me');
    $('#who').textContent = principal.kind === 'admin' ? 'Signed in as admin (every client).' : `Signed in for ${principal.clientId}.`;
  } catch (err) {
    setStatus(`Could not load: ${err.message}`, true);
  }
  refresh();
});
