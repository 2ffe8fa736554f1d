// GET /: a small status page for operators, one HTML document with its own style and script (no build step).
// It holds no data: the browser fetches GET /v1/sync/call_center/parks, and with audit:read the audit trail
// (GET /v1/audit, /v1/audit/hourly, /v1/why), with the operator's bearer token (from ?token= or typed in, kept in
// localStorage), so the page itself needs no auth and /v1 stays as strict as it is. Every value reaches the page
// as text (textContent, setAttribute), never as markup.
import { createHash } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';

const STYLE = `
:root { color-scheme: light; --fg: #1d2430; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --on: #0f7b3f; --on-bg: #e3f5ea;
  --off: #5b6474; --off-bg: #eceef2; --bad: #b42318; --bad-bg: #fde8e6; --warn: #93540b; --warn-bg: #fef3e0; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 18px; font-weight: 650; }
header .sub { color: var(--muted); }
header .right { margin-left: auto; color: var(--muted); font-size: 13px; }
header button { margin-left: 8px; }
main { padding: 18px 24px 32px; max-width: 1400px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin-bottom: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .detail { color: var(--muted); font-size: 12px; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
th, td { text-align: left; padding: 9px 12px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .04em; background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:last-child td { border-bottom: 0; }
.small { color: var(--muted); font-size: 12px; }
.nowrap { white-space: nowrap; }
.card .label code { text-transform: none; letter-spacing: 0; }
.badge { white-space: nowrap; display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.badge.on { color: var(--on); background: var(--on-bg); }
.badge.off { color: var(--off); background: var(--off-bg); }
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.badge.warn { color: var(--warn); background: var(--warn-bg); }
.bad { color: var(--bad); font-weight: 600; }
.banner { padding: 10px 14px; border-radius: 8px; margin-bottom: 14px; background: var(--bad-bg); color: var(--bad); }
form { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px; max-width: 560px; }
form label { display: block; margin-bottom: 8px; }
input { font: inherit; padding: 6px 8px; width: 360px; border: 1px solid #c9ced6; border-radius: 6px; }
button { font: inherit; padding: 5px 12px; border: 1px solid #c9ced6; border-radius: 6px; background: #fff; cursor: pointer; }
[hidden] { display: none !important; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
h2 { font-size: 15px; font-weight: 650; margin: 22px 0 8px; }
h2 .small { font-weight: 400; margin-left: 8px; }
.note { padding: 9px 12px; border-radius: 8px; background: var(--warn-bg); color: var(--warn); margin-bottom: 8px; }
button.link { border: 0; padding: 0; background: none; color: #1d4ed8; text-decoration: underline; font: inherit; cursor: pointer; }
svg.spark { display: block; }
svg.spark rect { fill: #3b6fd8; }
svg.spark rect.zero { fill: var(--line); }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin-top: 12px; }
.panel-head { display: flex; align-items: baseline; gap: 12px; margin-bottom: 6px; }
.panel-head button { margin-left: auto; }
.panel pre { margin: 0; white-space: pre-wrap; font: 12px/1.5 ui-monospace, "DejaVu Sans Mono", monospace; }
`;

const SCRIPT = `
'use strict';
const STATUS_URL = '/v1/sync/call_center/parks';
const AUDIT_URL = '/v1/audit?limit=20';
const HOURLY_URL = '/v1/audit/hourly?hours=24';
const WHY_URL = '/v1/why?uid=';
const REFRESH_MS = 2000;
// The hourly chart changes slowly and costs a scan of a day of the trail: read it less often than the rest.
const HOURLY_MS = 30000;
const SVG = 'http://www.w3.org/2000/svg';
const KEY = 'fleet-sync.token';
const $ = (id) => document.getElementById(id);

// A token in the address (?token=) is kept, then taken out of the address bar and history.
const params = new URLSearchParams(location.search);
if (params.has('token')) {
  localStorage.setItem(KEY, params.get('token'));
  params.delete('token');
  history.replaceState(null, '', location.pathname + (params.size ? '?' + params : ''));
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}
const plural = (n, word) => 'across ' + n + ' ' + word + (n === 1 ? '' : 's');
const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
function ago(iso) {
  if (!iso) return '–';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}
function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}
const seconds = (s) => (s === null || s === undefined ? '–' : s < 10 ? s.toFixed(2) + ' s' : Math.round(s) + ' s');

function showForm(message) {
  $('form').hidden = false;
  $('content').hidden = true;
  $('form-error').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

function sourceCard(source) {
  const state = source.state;
  const cls = state === 'streaming' ? 'on' : state === 'stopped' ? 'bad' : 'warn';
  return el('div', { class: 'card', id: 'source' },
    el('div', { class: 'label' }, 'Source · slot ', el('code', {}, source.slot)),
    el('div', { class: 'value' }, el('span', { class: 'badge ' + cls }, state)),
    el('div', { class: 'detail' }, 'slot lag ', bytes(source.lag_bytes), source.confirmed_lsn ? ' · confirmed ' + source.confirmed_lsn : '',
      source.wal_status ? ' · WAL ' + source.wal_status : ''));
}

function card(label, value, detail, id) {
  return el('div', { class: 'card', id }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), el('div', { class: 'detail' }, detail || ''));
}

// The sweep of a toggle does the toggle's work (its writes are expected, not drift).
const TOGGLE_WORK = { park_on: 'backfill', park_off: 'revocation', truncate: 'after a truncate' };

function sweepCell(sweep) {
  if (!sweep) return el('td', {}, el('span', { class: 'small' }, 'none yet'));
  const when = sweep.finished_at ? ago(sweep.finished_at) : 'running';
  return el('td', {},
    el('div', {}, TOGGLE_WORK[sweep.reason] || sweep.reason, ' · ', el('span', { title: sweep.finished_at || sweep.started_at }, when)),
    el('div', { class: 'small' }, 'checked ', num(sweep.checked), ' · in sync ', num(sweep.in_sync),
      sweep.skipped_no_uid ? ' · ' + num(sweep.skipped_no_uid) + ' without uid' : '', sweep.failed ? ' · failed ' + num(sweep.failed) : ''),
    sweep.error ? el('div', { class: 'bad' }, sweep.error) : null);
}

function correctionsCell(sweep) {
  if (!sweep) return el('td', { class: 'num' }, '–');
  const detail = 'profiles ' + num(sweep.corrected_profiles) + ' · grants ' + num(sweep.corrected_grants) + ' · revoked ' + num(sweep.revoked);
  const toggle = TOGGLE_WORK[sweep.reason];
  return el('td', { class: 'num' },
    el('div', { class: !toggle && sweep.drift > 0 ? 'bad' : '' }, toggle ? toggle : num(sweep.drift)),
    el('div', { class: 'small' }, detail));
}

function parkRow(p) {
  const ev = p.last_event;
  const sync = p.enabled
    ? el('span', { class: 'badge on' }, 'on')
    : el('span', { class: 'badge off', title: p.revoke_on_disable ? 'grants revoked when turned off' : 'grants kept when turned off' }, p.revoke_on_disable ? 'off · revoked' : 'off · kept');
  const dead = ev ? ev.dead_lettered : 0;
  return el('tr', { 'data-park': p.park_id },
    el('td', { class: 'nowrap' }, el('strong', {}, p.park_id), el('div', { class: 'small' }, p.roles.length + (p.roles.length === 1 ? ' role mapped' : ' roles mapped'))),
    el('td', {}, sync, el('div', { class: 'small', title: p.enabled ? p.enabled_at : p.disabled_at }, p.enabled ? 'since ' + ago(p.enabled_at) : p.disabled_at ? ago(p.disabled_at) : '')),
    el('td', { class: 'nowrap' }, el('code', {}, p.project_id)),
    el('td', { class: 'num', 'data-field': 'users_granted' }, num(p.users_granted)),
    el('td', {},
      ev ? el('div', { title: ev.at || '' }, ago(ev.at)) : el('span', { class: 'small' }, 'none yet'),
      ev ? el('div', { class: 'small' }, num(ev.events_applied), ev.events_applied === 1 ? ' event' : ' events', ev.skipped_no_uid ? ' · ' + num(ev.skipped_no_uid) + ' without uid' : '', ev.lsn ? ' · ' : '', ev.lsn ? el('code', {}, ev.lsn) : '') : null),
    el('td', { class: 'num' }, seconds(p.lag_seconds)),
    sweepCell(p.last_sweep),
    correctionsCell(p.last_sweep),
    el('td', { class: 'num' + (dead > 0 ? ' bad' : '') }, num(dead)),
    chartCell(p.park_id));
}

// ---- The audit trail (scope audit:read): latest changes, a chart per park, why a uid holds what it holds. ----

/** null until read; { denied: message } for a token without audit:read; else { start, parks: Map(park → changes) }. */
let hourly = null;
let hourlyReadAt = 0;

function chartCell(parkId) {
  if (!hourly) return el('td', { class: 'small' }, '–');
  if (hourly.denied) return el('td', { class: 'small', title: hourly.denied }, 'needs audit:read');
  const changes = hourly.parks.get(parkId) || new Array(24).fill(0);
  return el('td', { 'data-field': 'chart' }, chart(changes, Date.parse(hourly.start)));
}

/** Inline SVG bars, oldest hour first; each bar's title says its hour and count. */
function chart(changes, startMs) {
  const w = 4, gap = 1, h = 28;
  const max = Math.max(1, ...changes);
  const total = changes.reduce((a, b) => a + b, 0);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', String(changes.length * (w + gap)));
  svg.setAttribute('height', String(h));
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', total + ' changes in the last ' + changes.length + ' h');
  changes.forEach((n, i) => {
    const bar = document.createElementNS(SVG, 'rect');
    const height = n === 0 ? 1 : Math.max(2, Math.round((n / max) * h));
    bar.setAttribute('x', String(i * (w + gap)));
    bar.setAttribute('y', String(h - height));
    bar.setAttribute('width', String(w));
    bar.setAttribute('height', String(height));
    bar.setAttribute('data-count', String(n));
    if (n === 0) bar.setAttribute('class', 'zero');
    const title = document.createElementNS(SVG, 'title');
    title.textContent = new Date(startMs + i * 3600000).toISOString().slice(11, 16) + ' UTC: ' + n + (n === 1 ? ' change' : ' changes');
    bar.append(title);
    svg.append(bar);
  });
  return el('div', { title: total + ' changes in the last ' + changes.length + ' h' }, svg, el('div', { class: 'small' }, num(total) + ' in 24 h'));
}

const roles = (r) => (r === null || r === undefined ? '?' : '[' + r.join(', ') + ']');
const OPS = { c: 'insert', u: 'update', d: 'delete', r: 'snapshot', t: 'truncate' };

/** What a row did, in a few words. */
function what(e) {
  if (e.action === 'profile') return 'profile put';
  const where = e.project_id ? ' in ' + e.project_id : '';
  if (e.action === 'adopt') return 'adopted ' + roles(e.roles_after) + where;
  return e.action + ' ' + roles(e.roles_before) + ' → ' + roles(e.roles_after) + where;
}

/** The cause in a few words; the details in its title. */
function why(cause) {
  const first = cause && Array.isArray(cause.events) ? cause.events[0] : undefined;
  const more = cause && Array.isArray(cause.events) ? cause.events.length - 1 + (cause.more || 0) : 0;
  const ev = first ? first.topic.split('.').pop() + '[' + first.partition + ']@' + first.offset + ' · ' + (OPS[first.op] || first.op) + (more > 0 ? ' +' + more : '') : '';
  const detail = first ? first.topic + '[' + first.partition + ']@' + first.offset + ', lsn ' + first.lsn + ', tx ' + first.tx_id + ', committed ' + first.commit_ts : '';
  switch (cause && cause.kind) {
    case 'event': return { text: 'event ' + ev, title: detail };
    case 'sweep': {
      const t = cause.toggle;
      return { text: 'sweep #' + cause.run_id + ' · ' + cause.reason + (t ? ' by ' + t.token_name : ''), title: t ? 'turned ' + (t.enabled ? 'on' : 'off') + ' by token ' + t.token_name + ', request ' + t.request_id + ', at ' + t.at : '' };
    }
    case 'retry': return { text: 'retry · ' + cause.attempts + (cause.attempts === 1 ? ' attempt' : ' attempts'), title: detail };
    case 'replay': return { text: 'replay' + (ev ? ' ' + ev : ''), title: detail };
    default: return { text: JSON.stringify(cause), title: '' };
  }
}

const OUTCOMES = { applied: 'on', parked: 'warn', dead_lettered: 'bad', refused: 'bad' };

/** A cause of a shape this page does not know (a newer fleet-sync's) is shown as its JSON, never breaking the page. */
function causeCell(cause) {
  try {
    return why(cause);
  } catch (err) {
    return { text: JSON.stringify(cause), title: '' };
  }
}

function changeRow(e) {
  const cause = causeCell(e.cause);
  const who = el('button', { type: 'button', class: 'link', 'data-uid': e.uid, title: 'why does ' + e.uid + ' hold what it holds?' }, e.uid);
  who.addEventListener('click', () => openWhy(e.uid));
  return el('tr', { 'data-change': e.id },
    el('td', { class: 'nowrap', title: e.at }, ago(e.at)),
    el('td', { class: 'nowrap' }, who, el('div', { class: 'small' }, 'park ' + (e.park_id || '–'))),
    el('td', {}, what(e)),
    el('td', { title: cause.title }, cause.text),
    el('td', {}, el('span', { class: 'badge ' + (OUTCOMES[e.outcome] || 'warn'), title: e.error || '' }, e.outcome.replace('_', ' ')), e.error ? el('div', { class: 'small' }, e.error) : null));
}

function renderChanges(audit) {
  const note = $('audit-note');
  if (audit.denied) {
    note.hidden = false;
    note.textContent = 'This token lacks the audit:read scope: the latest changes, the charts and why are not shown.';
    note.title = audit.denied;
    $('changes-table').hidden = true;
    return;
  }
  if (audit.error) {
    note.hidden = false;
    note.textContent = 'Could not read the audit trail: ' + audit.error;
    return;
  }
  note.hidden = true;
  $('changes-table').hidden = false;
  const rows = audit.entries.map(changeRow);
  $('changes').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 5, class: 'small' }, 'No change yet.'))]));
}

async function openWhy(uid) {
  const panel = $('why-panel');
  panel.hidden = false;
  $('why-title').textContent = 'Why uid ' + uid;
  $('why-text').textContent = 'loading…';
  try {
    const { res, body } = await getJson(WHY_URL + encodeURIComponent(uid));
    if (!res.ok) throw new Error(body.message || 'the why route answered ' + res.status);
    let lines;
    if (!body.known) lines = ['uid ' + body.uid + ' is unknown to fleet-sync: no users row, grant record or audit row names it.'];
    else if (body.projects.length === 0) lines = ['uid ' + body.uid + ' holds nothing from fleet-sync in any project: none of its parks syncs to the call center.'];
    else lines = body.projects.flatMap((p) => p.explanation);
    $('why-text').textContent = lines.join('\\n');
  } catch (e) {
    $('why-text').textContent = 'Could not read why: ' + e.message;
  }
  panel.scrollIntoView({ block: 'nearest' });
}

async function getJson(url) {
  const res = await fetch(url, { headers: { authorization: 'Bearer ' + localStorage.getItem(KEY) }, cache: 'no-store' });
  return { res, body: await res.json().catch(() => ({})) };
}

/** The audit sections' data; never throws: a token without audit:read still sees the rest of the page. */
async function readAudit() {
  try {
    const { res, body } = await getJson(AUDIT_URL);
    if (res.status === 403) {
      hourly = { denied: body.message || 'forbidden' };
      return { denied: body.message || 'forbidden' };
    }
    if (!res.ok) throw new Error(body.message || 'the audit route answered ' + res.status);
    if (!hourly || hourly.denied || Date.now() - hourlyReadAt > HOURLY_MS) {
      const h = await getJson(HOURLY_URL);
      if (h.res.ok) {
        hourly = { start: h.body.start, parks: new Map(h.body.parks.map((p) => [p.park_id, p.changes])) };
        hourlyReadAt = Date.now();
      }
    }
    return { entries: body.entries };
  } catch (e) {
    return { error: e.message };
  }
}

function render(body) {
  const parks = body.parks;
  const on = parks.filter((p) => p.enabled);
  const sum = (f) => parks.reduce((a, p) => a + (f(p) || 0), 0);
  const dead = sum((p) => p.last_event && p.last_event.dead_lettered);
  const lags = on.map((p) => p.lag_seconds).filter((s) => s !== null);
  $('cards').replaceChildren(
    sourceCard(body.source),
    card('Parks syncing', num(on.length), 'of ' + num(parks.length) + ' ever turned on', 'parks-on'),
    card('Users granted', num(sum((p) => p.users_granted)), plural(new Set(on.map((p) => p.project_id)).size, 'project'), 'users-granted'),
    card('Events applied', num(sum((p) => p.last_event && p.last_event.events_applied)), 'lag ' + (lags.length ? seconds(Math.max(...lags)) : '–') + ' (slowest park)', 'events-applied'),
    card('Dead letters', el('span', { class: dead > 0 ? 'bad' : '' }, num(dead)), dead > 0 ? 'see the dead-letter topic' : 'none', 'dead-letters'));
  const rows = parks.map(parkRow);
  $('parks').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 10, class: 'small' }, 'No park has turned the call center on yet (POST /v1/sync/call_center/park/on).'))]));
}

let timer;
async function refresh() {
  clearTimeout(timer);
  const token = localStorage.getItem(KEY);
  if (!token) return showForm();
  try {
    const [res, audit] = await Promise.all([fetch(STATUS_URL, { headers: { authorization: 'Bearer ' + token }, cache: 'no-store' }), readAudit()]);
    if (res.status === 401 || res.status === 403) {
      const body = await res.json().catch(() => ({}));
      localStorage.removeItem(KEY);
      return showForm('The api refused that token: ' + (body.message || res.status) + '. It needs the users:read scope.');
    }
    if (!res.ok) throw new Error('the status route answered ' + res.status);
    render(await res.json());
    renderChanges(audit);
    $('banner').hidden = true;
    $('form').hidden = true;
    $('content').hidden = false;
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    $('banner').hidden = false;
    $('banner').textContent = 'Could not refresh: ' + e.message + ' (retrying)';
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

$('form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token').value.trim();
  if (token) localStorage.setItem(KEY, token);
  refresh();
});
$('why-close').addEventListener('click', () => {
  $('why-panel').hidden = true;
});
$('forget').addEventListener('click', () => {
  localStorage.removeItem(KEY);
  hourly = null;
  clearTimeout(timer);
  showForm();
});
refresh();
`;

const hash = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>fleet-sync status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>fleet-sync</h1><span class="sub">call-center sync status</span>
  <span class="right"><span id="updated">loading…</span><button id="forget" type="button">change token</button></span>
</header>
<main>
  <div id="banner" class="banner" hidden></div>
  <form id="form" hidden>
    <label for="token">A bearer token of the api with the <code>users:read</code> scope, and <code>audit:read</code> for the audit trail (one of <code>API_TOKENS</code>); it stays in this browser.</label>
    <input id="token" type="password" autocomplete="off" placeholder="token"> <button type="submit">Show status</button>
    <p id="form-error" class="bad"></p>
  </form>
  <div id="content" hidden>
    <div id="cards" class="cards"></div>
    <table>
      <thead><tr><th>Park</th><th>Sync</th><th>Project</th><th>Users granted</th><th>Last event applied</th><th>Lag</th><th>Last sweep</th><th>Corrections</th><th>Dead letters</th><th>Changes · 24 h</th></tr></thead>
      <tbody id="parks"></tbody>
    </table>
    <p class="small">Refreshes every 2 s from <code>GET /v1/sync/call_center/parks</code>. Corrections: what the last sweep repaired, each something the stream missed; the sweep of a toggle (backfill, revocation) does the toggle's work instead. Changes · 24 h: what fleet-sync changed in the call center per hour (<code>GET /v1/audit/hourly</code>). Also: <a href="/metrics">metrics</a>, <a href="/docs">OpenAPI</a>, <a href="/readyz">readiness</a>.</p>
    <h2>Latest changes<span class="small">from <code>GET /v1/audit</code>; a uid opens why it holds what it holds</span></h2>
    <div id="audit-note" class="note" hidden></div>
    <table id="changes-table">
      <thead><tr><th>When</th><th>Who</th><th>What</th><th>Why</th><th>Outcome</th></tr></thead>
      <tbody id="changes"></tbody>
    </table>
    <div id="why-panel" class="panel" hidden>
      <div class="panel-head"><strong id="why-title"></strong><button id="why-close" type="button">close</button></div>
      <pre id="why-text"></pre>
    </div>
  </div>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;

// Only this document's own style and script run, and it talks to this origin only.
const CSP = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const statusPageRoutes: FastifyPluginAsync = async (app) => {
  app.get('/', { schema: { summary: 'Status page for operators (HTML; its data comes from GET /v1/sync/call_center/parks and /v1/audit with a token)', tags: ['ops'] } }, async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', CSP)
      .header('referrer-policy', 'no-referrer')
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-store')
      .send(PAGE),
  );
};
