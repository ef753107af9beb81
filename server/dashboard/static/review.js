// The review page: one item at a time, labelled with the keyboard. Plain browser JavaScript; data
// is inserted as text (textContent), never as HTML: request texts come from users.
'use strict';

const state = { clientId: '', items: [], labels: [], index: 0, total: 0, busy: false };
const $ = (sel) => document.querySelector(sel);
const REASONS = { CONFIDENTLY_WRONG: 'sure and wrong', DISAGREEMENT: 'versions disagree', UNSURE: 'unsure' };

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

function setStatus(text, error) {
  $('#status').textContent = text;
  $('#status').classList.toggle('error', !!error);
}

async function api(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) location.assign(`/dashboard/login?next=${encodeURIComponent(location.pathname + location.search + location.hash)}`);
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(json.error ? `${json.error.code}: ${json.error.message}` : `HTTP ${res.status}`);
  return json;
}

const base = () => `/v1/clients/${encodeURIComponent(state.clientId)}/review`;

async function load() {
  const q = await api('GET', `${base()}?limit=50`);
  state.items = q.items;
  state.labels = q.labels;
  state.total = q.total;
  state.index = 0;
  render();
}

function render() {
  const item = state.items[state.index];
  document.body.dataset.items = String(state.items.length);
  const labels = $('#labels');
  labels.replaceChildren();
  $('#facts').replaceChildren();
  if (!item) {
    $('#item-title').textContent = state.clientId ? `Nothing to review for ${state.clientId}` : 'Choose a client';
    $('#position').textContent = '';
    $('#text').textContent = '';
    $('#accept').disabled = true;
    $('#skip').disabled = true;
    document.body.dataset.itemId = '';
    return;
  }
  $('#accept').disabled = false;
  $('#skip').disabled = false;
  document.body.dataset.itemId = item.itemId;
  $('#item-title').textContent = `Item ${state.index + 1} of ${state.items.length}` + (state.total > state.items.length ? ` (${state.total} queued)` : '');
  $('#position').textContent = `Client ${state.clientId}. Asked ${item.occurrences} time${item.occurrences === 1 ? '' : 's'}; last on ${new Date(item.lastSeenAt).toLocaleString()}.`;
  $('#text').textContent = item.text;
  const fact = (name, ...value) => $('#facts').append(el('dt', {}, name), el('dd', {}, ...value));
  fact('Model answered', `${item.predicted.label} (${(item.predicted.score * 100).toFixed(0)}%${item.predicted.version ? `, ${item.predicted.version}` : ', baseline'})`);
  fact('Why it is here', ...item.reasons.map((r) => el('span', { class: 'badge bad' }, REASONS[r.reason] || r.reason)));
  if (item.shadow) fact('Shadow version said', `${item.shadow.label} (${(item.shadow.score * 100).toFixed(0)}%, ${item.shadow.version})`);
  if (item.feedback) fact('Feedback said', item.feedback.outcome === 'REASSIGNED' ? `reassigned to ${item.feedback.correctLabel}` : item.feedback.outcome.toLowerCase());
  const md = Object.entries(item.metadata);
  if (md.length) fact('Details', md.map(([k, v]) => `${k}: ${v}`).join(', '));
  state.labels.forEach((label, i) => {
    const key = i < 9 ? String(i + 1) : undefined;
    const b = el('button', { type: 'button', class: `label${label === item.predicted.label ? ' predicted' : ''}`, 'data-label': label, 'aria-keyshortcuts': key },
      key ? el('kbd', {}, key) : null, ` ${label}`, label === item.predicted.label ? ' (model)' : '');
    b.addEventListener('click', () => decide(label));
    labels.append(b);
  });
}

async function decide(label) {
  const item = state.items[state.index];
  if (!item || state.busy) return;
  state.busy = true;
  try {
    if (label === null) {
      await api('POST', `${base()}/${encodeURIComponent(item.itemId)}/skip`, {});
      setStatus(`Skipped: “${item.text.slice(0, 60)}”.`);
    } else {
      await api('POST', `${base()}/${encodeURIComponent(item.itemId)}/label`, { label });
      setStatus(`Labelled ${label}: “${item.text.slice(0, 60)}”.`);
    }
    state.items.splice(state.index, 1);
    state.total = Math.max(0, state.total - 1);
    if (state.index >= state.items.length) state.index = 0;
    document.body.dataset.decided = String(Number(document.body.dataset.decided || 0) + 1);
    if (state.items.length === 0) await load();
    else render();
  } catch (err) {
    setStatus(`Could not save: ${err.message}`, true);
  } finally {
    state.busy = false;
  }
}

function onKey(e) {
  if (e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
  const item = state.items[state.index];
  if (!item) return;
  if (/^[1-9]$/.test(e.key)) {
    const label = state.labels[Number(e.key) - 1];
    if (label) { e.preventDefault(); decide(label); }
  } else if ((e.key === 'Enter' && !(e.target instanceof HTMLButtonElement)) || e.key === 'a') {
    e.preventDefault();
    decide(item.predicted.label);
  } else if (e.key === 's') {
    e.preventDefault();
    decide(null);
  } else if (e.key === 'j' || e.key === 'k') {
    e.preventDefault();
    state.index = (state.index + (e.key === 'j' ? 1 : state.items.length - 1)) % state.items.length;
    render();
  }
}

document.addEventListener('DOMContentLoaded', async () => {
  document.addEventListener('keydown', onKey);
  $('#accept').addEventListener('click', () => decide(state.items[state.index] ? state.items[state.index].predicted.label : null));
  $('#skip').addEventListener('click', () => decide(null));
  $('#sign-out').addEventListener('click', async () => { await fetch('/dashboard/session', { method: 'DELETE' }); location.assign('/dashboard/login'); });
  $('#choose').addEventListener('submit', (e) => {
    e.preventDefault();
    location.assign(`/dashboard/review?client=${encodeURIComponent($('#client').value.trim())}`);
  });
  try {
    const { principal } = await api('GET', '/dashboard/api/me');
    state.clientId = principal.kind === 'client' ? principal.clientId : new URLSearchParams(location.search).get('client') || '';
    $('#choose').hidden = principal.kind === 'client';
    if (state.clientId) await load(); else render();
    setStatus(state.clientId ? `${state.total} item${state.total === 1 ? '' : 's'} to review.` : 'Choose a client.');
    document.body.dataset.loaded = 'true';
    $('#item').focus();
  } catch (err) {
    setStatus(`Could not load the queue: ${err.message}`, true);
  }
});
