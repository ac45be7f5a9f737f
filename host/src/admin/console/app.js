// synchost admin console: a single page over the admin HTTP API v1.
// Vanilla ES2020, no build step. Every string from the API is rendered with
// textContent / createElement only: tenants and plugin authors control them.
'use strict';
(() => {
  const TOKEN_KEY = 'synchost-token';
  const REFRESH_MS = 2000;
  const API = '/api/v1';

  const $ = (id) => document.getElementById(id);
  const view = $('view');
  const enc = encodeURIComponent;

  // ---------- DOM helpers ----------

  function put(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'fk') el.dataset.fk = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function add(el, kids) {
    for (const c of kids.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    put(el, attrs);
    return add(el, kids);
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    put(el, attrs);
    return add(el, kids);
  }

  // ---------- formatting ----------

  const pad = (n, w = 2) => String(n).padStart(w, '0');
  function time(iso, none = 'none') {
    if (!iso) return h('span', { class: 'none' }, none);
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return h('span', {}, String(iso));
    const text = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
    return h('time', { datetime: String(iso) }, text);
  }
  function ms(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '';
    if (n < 1000) return `${Math.round(n)} ms`;
    const sec = n / 1000;
    if (sec < 60) return `${sec.toFixed(1)} s`;
    const m = Math.floor(sec / 60);
    if (m < 60) return `${m} min ${pad(Math.floor(sec % 60))} s`;
    return `${Math.floor(m / 60)} h ${pad(m % 60)} min`;
  }
  function durationMs(r) {
    if (!r.started_at || !r.finished_at) return null;
    const d = Date.parse(r.finished_at) - Date.parse(r.started_at);
    return Number.isNaN(d) ? null : Math.max(0, d);
  }
  const word = (st) => String(st).replace(/_/g, ' ');
  const STATUSES = ['running', 'succeeded', 'succeeded_with_errors', 'failed', 'stopped',
    'blocked', 'paused', 'abandoned', 'superseded', 'ok', 'degraded', 'not loaded'];
  function badge(st) {
    const known = STATUSES.includes(st) ? st.replace(/ /g, '_') : 'other';
    return h('span', { class: `badge st-${known}` }, word(st));
  }
  const short = (d) => (d ? String(d).slice(0, 12) : '');
  function digest(d) {
    return d ? h('code', { class: 'digest', title: String(d) }, short(d)) : h('span', { class: 'none' }, 'none');
  }
  function val(v) {
    if (v === null || v === undefined) return h('span', { class: 'none' }, 'null');
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    return h('code', {}, JSON.stringify(v));
  }
  const num = (n) => (n === null || n === undefined ? '' : Number(n).toLocaleString('en'));
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  // ---------- regions ----------

  function setStatus(...kids) {
    $('status').replaceChildren();
    add($('status'), kids);
  }
  let alertKind = null;
  function setAlert(err, kind) {
    alertKind = kind;
    const msg = err instanceof ApiError
      ? [h('strong', {}, `Error (${err.code}): `), err.message]
      : [h('strong', {}, 'Error: '), String(err && err.message || err)];
    $('alert').replaceChildren();
    add($('alert'), msg);
  }
  function clearAlert(kind) {
    if (kind && alertKind !== kind) return;
    alertKind = null;
    $('alert').replaceChildren();
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  const getToken = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(method, path, body) {
    const token = getToken();
    if (!token) throw new ApiError(401, 'unauthorized', 'not signed in');
    const init = { method, cache: 'no-store', headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', `cannot reach synchost (${e.message})`);
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) {
      const code = data && typeof data.code === 'string' ? data.code : `http_${res.status}`;
      const message = data && typeof data.message === 'string' ? data.message : (res.statusText || 'request failed');
      const err = new ApiError(res.status, code, message);
      if (res.status === 401) signedOut(message);
      throw err;
    }
    if (data === null && text) throw new ApiError(res.status, 'bad_response', 'the answer was not JSON');
    return data;
  }
  const get = (path) => api('GET', path);
  const post = (path, body) => api('POST', path, body);
  const pipePath = (t, p) => `${API}/tenants/${enc(t)}/pipelines/${enc(p)}`;

  // ---------- links ----------

  const hrefPipeline = (t, p) => `#/pipeline/${enc(t)}/${enc(p)}`;
  const hrefRun = (id) => `#/run/${enc(id)}`;
  const hrefPlan = (id) => `#/plan/${enc(id)}`;
  const hrefPlugins = (t) => `#/tenant/${enc(t)}/plugins`;
  const runLink = (id, text) => h('a', { href: hrefRun(id) }, text || `run ${id}`);

  function crumbs(...items) {
    return h('nav', { 'aria-label': 'Breadcrumb', class: 'crumbs' },
      h('ol', {}, [['Overview', '#/'], ...items].map(([text, href], i, all) =>
        h('li', {}, i === all.length - 1 ? h('span', { 'aria-current': 'page' }, text) : href ? h('a', { href }, text) : text))));
  }
  function dl(rows, attrs) {
    return h('dl', Object.assign({ class: 'facts' }, attrs || {}),
      rows.filter(Boolean).map(([k, v, id]) => [h('dt', {}, k), h('dd', id ? { id } : {}, v)]));
  }
  function table(id, caption, heads, rows, opts = {}) {
    const capId = `${id}-caption`;
    const t = h('table', { id, class: opts.class || null },
      h('caption', { id: capId }, caption),
      h('thead', {}, h('tr', {}, heads.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows));
    return h('div', { class: 'scroll', role: 'region', 'aria-labelledby': capId, tabindex: '0' }, t);
  }
  // Busy buttons stay focusable (aria-disabled, not disabled) so focus survives a repaint.
  function button(text, onclick, attrs = {}) {
    const { busyKey, ...rest } = attrs;
    return h('button', Object.assign(rest, {
      type: 'button',
      'aria-disabled': busyKey && pending.has(busyKey) ? 'true' : null,
      onclick: () => { if (!(busyKey && pending.has(busyKey))) onclick(); },
    }), text);
  }

  // ---------- actions ----------

  const pending = new Set();
  async function act(key, startText, fn) {
    if (pending.has(key)) return;
    pending.add(key);
    clearAlert();
    setStatus(startText);
    rerender();
    let out = null;
    let failed = null;
    try {
      out = await fn();
    } catch (e) {
      failed = e;
    }
    pending.delete(key);
    // Show the outcome beside the data it changed: fetch the page again first.
    await refreshNow();
    rerender();
    if (failed) {
      setStatus();
      if (!(failed instanceof ApiError && failed.status === 401)) setAlert(failed, 'action');
    } else if (out) {
      setStatus(out);
    }
  }

  function changeText(c) {
    const parts = [`Tenant ${c.tenant}: ${c.change}`];
    if (c.plugins && Object.keys(c.plugins).length) {
      parts.push(`; plugins ${Object.entries(c.plugins).map(([n, d]) => `${n} ${short(d)}`).join(', ')}`);
    }
    return h('li', {}, parts.join(''),
      c.problems && c.problems.length ? h('ul', {}, c.problems.map((p) => h('li', {}, p))) : null);
  }

  function reload() {
    act('reload', 'Reloading config…', async () => {
      const r = await post(`${API}/reload`);
      const changes = (r && r.changes) || [];
      return [h('p', {}, changes.length ? `Config reloaded: ${plural(changes.length, 'change', 'changes')}.` : 'Config reloaded: no changes.'),
        changes.length ? h('ul', {}, changes.map(changeText)) : null];
    });
  }

  // ---------- pages ----------

  const pages = {};

  // Overview
  pages.overview = {
    title: () => 'Overview',
    load: () => get(`${API}/tenants`),
    render(_p, tenants) {
      const rows = [];
      for (const t of tenants) {
        const tenantCells = () => [
          h('th', { scope: 'row', class: 'tenant' }, t.name),
          h('td', {}, badge(t.health), t.refused ? h('div', { class: 'note' }, 'config refused') : null,
            t.rolled_back ? h('div', { class: 'note' }, 'rolled back') : null),
        ];
        const plugins = h('a', { href: hrefPlugins(t.name), 'aria-label': `Plugins of tenant ${t.name}` }, 'Plugins');
        if (!t.pipelines.length) {
          rows.push(h('tr', {}, tenantCells(), h('td', { colspan: '8', class: 'none' }, 'no pipelines'), h('td', {}, plugins)));
        }
        for (const p of t.pipelines) {
          const last = p.last_run;
          rows.push(h('tr', {},
            tenantCells(),
            h('td', {}, h('a', { href: hrefPipeline(t.name, p.name) }, p.name)),
            h('td', {}, p.mode),
            h('td', {}, p.schedule),
            h('td', {},
              p.running ? h('div', {}, badge('running'), ' ', runLink(p.running.run)) : null,
              last ? h('div', {}, runLink(last.id, `run ${last.id}`), ' ', badge(last.status), ' ', time(last.started_at))
                : (p.running ? null : h('span', { class: 'none' }, 'never'))),
            h('td', {}, time(p.next_run_at)),
            h('td', {}, p.paused ? [h('span', { class: 'badge st-paused' }, 'paused'), p.paused.reason ? ` (${p.paused.reason})` : null] : 'no'),
            h('td', { class: 'n' }, num(p.dead_letters)),
            h('td', { class: 'n' }, num(p.retry_queue)),
            h('td', { class: 'links' }, plugins.cloneNode(true),
              p.blocked_run !== null && p.blocked_run !== undefined
                ? h('a', { href: hrefPlan(p.blocked_run), class: 'warn', 'aria-label': `Blocked plan: review run ${p.blocked_run}` }, 'Blocked plan: review') : null)));
        }
      }
      const refused = tenants.filter((t) => t.refused);
      return [
        h('h1', { id: 'page-title', tabindex: '-1' }, 'Overview'),
        tenants.length
          ? table('tenants', `Tenants and pipelines (${plural(tenants.length, 'tenant', 'tenants')})`,
            ['Tenant', 'Health', 'Pipeline', 'Mode', 'Schedule', 'Last run', 'Next run', 'Paused', 'Dead letters', 'Retry queue', 'Links'], rows)
          : h('p', {}, 'No tenants are configured.'),
        refused.length ? h('section', { 'aria-labelledby': 'refused-h' },
          h('h2', { id: 'refused-h' }, 'Refused tenant files'),
          h('ul', { class: 'refused' }, refused.map((t) => h('li', {},
            h('strong', {}, t.name), ' — refused ', time(t.refused.at), ':',
            h('ul', {}, (t.refused.problems || []).map((x) => h('li', {}, x))))))) : null,
      ];
    },
  };

  // Bar chart: one bar per run, oldest left.
  function chart(id, title, runs, valueOf, fmt) {
    const pts = runs.slice().reverse().map((r) => ({ id: r.id, v: valueOf(r) }));
    if (!pts.length) return h('p', {}, `${title}: no runs yet.`);
    const vals = pts.map((p) => p.v).filter((v) => v !== null);
    const max = vals.length ? Math.max(...vals) : 0;
    const maxPt = pts.find((p) => p.v === max);
    const lastPt = pts[pts.length - 1];
    const desc = `${title}: ${plural(pts.length, 'run', 'runs')}, oldest first, run ${pts[0].id} to run ${lastPt.id}; ` +
      `highest ${fmt(max)}${maxPt ? ` (run ${maxPt.id})` : ''}; latest ${lastPt.v === null ? 'not finished' : fmt(lastPt.v)}.`;
    const W = 600, H = 150, L = 48, T = 12, B = 22, R = 8;
    const w = (W - L - R) / pts.length;
    const y = (v) => (max > 0 ? (H - B) - (v / max) * (H - B - T) : H - B);
    const bars = pts.map((p, i) => {
      const top = p.v === null ? H - B : y(p.v);
      const hgt = Math.max(p.v ? 1 : 0, H - B - top);
      return s('rect', { x: (L + i * w + w * 0.12).toFixed(1), y: (H - B - hgt).toFixed(1), width: Math.max(1, w * 0.76).toFixed(1), height: hgt.toFixed(1), class: 'bar' },
        s('title', {}, `Run ${p.id}: ${p.v === null ? 'not finished' : fmt(p.v)}`));
    });
    return h('figure', { class: 'chart' },
      s('svg', { id, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': desc },
        s('title', {}, desc),
        s('line', { x1: L, y1: T, x2: W - R, y2: T, class: 'grid' }),
        s('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }),
        s('text', { x: L - 4, y: T + 4, 'text-anchor': 'end' }, fmt(max)),
        s('text', { x: L - 4, y: H - B + 4, 'text-anchor': 'end' }, '0'),
        s('text', { x: L, y: H - 6 }, `run ${pts[0].id}`),
        s('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, `run ${lastPt.id}`),
        bars),
      h('figcaption', {}, title));
  }

  // Pipeline
  pages.pipeline = {
    title: (p) => `Pipeline ${p.tenant}/${p.pipeline}`,
    async load({ tenant, pipeline }) {
      const q = new URLSearchParams({ tenant, pipeline, limit: '50' });
      const [p, runs] = await Promise.all([get(pipePath(tenant, pipeline)), get(`${API}/runs?${q}`)]);
      const letters = p.mode === 'event' ? await get(`${pipePath(tenant, pipeline)}/dead-letters`) : null;
      return { p, runs, letters };
    },
    render({ tenant, pipeline }, { p, runs, letters }) {
      const base = pipePath(tenant, pipeline);
      const sync = () => act('sync', `Queueing a sync of ${tenant}/${pipeline}…`, async () => {
        await post(`${base}/sync`);
        return `Sync of ${tenant}/${pipeline} queued.`;
      });
      const reconcile = () => act('reconcile', `Queueing a reconciliation of ${tenant}/${pipeline}…`, async () => {
        await post(`${base}/reconcile`);
        return `Reconciliation of ${tenant}/${pipeline} queued.`;
      });
      const pauseForm = p.paused
        ? button('Resume', () => act('pause', `Resuming ${tenant}/${pipeline}…`, async () => {
          await post(`${base}/resume`);
          return `${tenant}/${pipeline} resumed.`;
        }), { id: 'resume', fk: 'pause-toggle', busyKey: 'pause' })
        : h('form', { class: 'inline', id: 'pause-form', onsubmit: (e) => {
          e.preventDefault();
          if (pending.has('pause')) return;
          const reason = $('pause-reason').value.trim() || null;
          act('pause', `Pausing ${tenant}/${pipeline}…`, async () => {
            await post(`${base}/pause`, { reason });
            return `${tenant}/${pipeline} paused.`;
          });
        } },
        h('label', { for: 'pause-reason' }, 'Pause reason (optional)'),
        h('input', { id: 'pause-reason', type: 'text', autocomplete: 'off' }),
        h('button', { type: 'submit', id: 'pause', fk: 'pause-toggle', 'aria-disabled': pending.has('pause') ? 'true' : null }, 'Pause'));

      const live = p.running ? h('section', { 'aria-labelledby': 'live-h', class: 'live' },
        h('h2', { id: 'live-h' }, 'Running now'),
        dl([
          ['Run', runLink(p.running.run, `run ${p.running.run}`), 'live-run'],
          ['Started', time(p.running.started_at)],
          ['Read', num(p.running.stats.read)],
          ['Created', num(p.running.stats.created)],
          ['Updated', num(p.running.stats.updated)],
          ['Deleted', num(p.running.stats.deleted)],
          ['Upserted', num(p.running.stats.upserted)],
        ], { class: 'facts grid' }),
        h('p', {}, h('label', { for: 'live-progress' }, 'Operations applied: '),
          p.running.total !== null && p.running.total !== undefined
            ? [h('progress', { id: 'live-progress', max: Math.max(1, p.running.total), value: p.running.done || 0 }),
              ` ${num(p.running.done || 0)} of ${num(p.running.total)}`]
            : [h('progress', { id: 'live-progress' }), ' not planned yet'])) : null;

      const runRows = runs.map((r) => h('tr', {},
        h('th', { scope: 'row' }, runLink(r.id, String(r.id))),
        h('td', {}, badge(r.status)),
        h('td', {}, time(r.started_at)),
        h('td', { class: 'n' }, r.finished_at ? ms(durationMs(r)) : 'not finished'),
        ['read', 'created', 'updated', 'deleted', 'upserted', 'dead_lettered'].map((k) => h('td', { class: 'n' }, num(r.stats[k])))));

      let letterSection = null;
      if (p.mode === 'event') {
        const retry = (ids, what) => act(`retry-${ids ? ids.join(',') : 'all'}`, `Retrying ${what}…`, async () => {
          const r = await post(`${base}/dead-letters/retry`, ids ? { ids } : { all: true });
          const ok = r.requeued || [], bad = r.refused || [];
          return [h('p', {}, ok.length ? `Requeued ${plural(ok.length, 'dead letter', 'dead letters')}: ${ok.join(', ')}.` : 'Nothing was requeued.'),
            bad.length ? h('ul', {}, bad.map((x) => h('li', {}, `Dead letter ${x.id} refused: ${x.reason}`))) : null];
        });
        const drop = (id) => {
          if (!window.confirm(`Drop dead letter ${id}? Its operation will never be applied.`)) return;
          act(`drop-${id}`, `Dropping dead letter ${id}…`, async () => {
            const r = await post(`${base}/dead-letters/drop`, { ids: [id] });
            return `Dropped ${plural(r.dropped, 'dead letter', 'dead letters')} (${id}).`;
          });
        };
        const rows = (letters || []).map((d) => h('tr', { 'data-id': d.id },
          h('th', { scope: 'row' }, String(d.id)),
          h('td', {}, h('code', {}, d.key)),
          h('td', {}, d.reason),
          h('td', {}, time(d.created_at)),
          h('td', {}, d.superseded_by === null || d.superseded_by === undefined ? h('span', { class: 'none' }, 'no') : d.superseded_by),
          h('td', { class: 'actions' },
            button('Retry', () => retry([d.id], `dead letter ${d.id}`), { 'aria-label': `Retry dead letter ${d.id}`, fk: `retry-${d.id}`, busyKey: `retry-${d.id}` }),
            ' ',
            button('Drop', () => drop(d.id), { 'aria-label': `Drop dead letter ${d.id}`, fk: `drop-${d.id}`, busyKey: `drop-${d.id}`, class: 'danger' }))));
        letterSection = h('section', { 'aria-labelledby': 'dl-h' },
          h('h2', { id: 'dl-h' }, 'Dead letters'),
          rows.length
            ? [h('p', {}, button('Retry all', () => retry(null, 'all dead letters'), { id: 'retry-all', busyKey: 'retry-all' })),
              table('dead-letters', `Dead letters (${rows.length})`, ['ID', 'Key', 'Reason', 'Created', 'Superseded by', 'Actions'], rows)]
            : h('p', { id: 'no-dead-letters' }, 'No dead letters.'));
      }

      const dur = (r) => { const d = durationMs(r); return d === null ? null : d / 1000; };
      return [
        crumbs([`tenant ${tenant}`], [`pipeline ${pipeline}`]),
        h('h1', { id: 'page-title', tabindex: '-1' }, `Pipeline ${tenant}/${pipeline}`),
        h('div', { class: 'toolbar' }, button('Sync now', sync, { id: 'sync', busyKey: 'sync' }),
          p.mode === 'event' ? button('Reconcile now', reconcile, { id: 'reconcile', busyKey: 'reconcile' }) : null, pauseForm),
        dl([
          ['Mode', p.mode],
          ['Schedule', p.schedule],
          ['Next run', time(p.next_run_at)],
          ['Paused', p.paused ? [h('span', { class: 'badge st-paused' }, 'paused'), ' since ', time(p.paused.at), p.paused.reason ? ` — ${p.paused.reason}` : ''] : 'no', 'paused-state'],
          ['Cursor', p.cursor === null || p.cursor === undefined ? h('span', { class: 'none' }, 'none') : h('code', {}, p.cursor)],
          ['Lag', p.lag === null || p.lag === undefined ? h('span', { class: 'none' }, 'not reported by the source') : num(p.lag)],
          ['Retry queue', num(p.retry_queue)],
          ['Dead letters', num(p.dead_letters)],
          ['Last run', p.last_run ? [runLink(p.last_run.id), ' ', badge(p.last_run.status)] : h('span', { class: 'none' }, 'never')],
          p.reconcile ? ['Reconciles', p.reconcile] : null,
          p.last_reconcile ? ['Last reconciliation', [runLink(p.last_reconcile.id), ' ', badge(p.last_reconcile.status), ' ',
            driftText(p.last_reconcile.stats.drift)], 'last-reconcile'] : null,
          p.blocked_run !== null && p.blocked_run !== undefined ? ['Blocked plan', h('a', { href: hrefPlan(p.blocked_run), class: 'warn' }, `Blocked plan: review run ${p.blocked_run}`)] : null,
        ], { id: 'pipeline-facts' }),
        live,
        h('section', { 'aria-labelledby': 'hist-h' },
          h('h2', { id: 'hist-h' }, 'Run history'),
          h('div', { class: 'charts' },
            chart('chart-read', 'Rows read per run', runs, (r) => r.stats.read, num),
            chart('chart-duration', 'Run duration (s) per run', runs, dur, (v) => `${(v || 0).toFixed(1)} s`)),
          runRows.length
            ? table('runs', `Last ${plural(runRows.length, 'run', 'runs')}, newest first`,
              ['Run', 'Status', 'Started', 'Duration', 'Read', 'Created', 'Updated', 'Deleted', 'Upserted', 'Dead-lettered'], runRows)
            : h('p', {}, 'No runs yet.')),
        letterSection,
      ];
    },
  };

  // What a reconciliation found, in a line.
  function driftText(d) {
    if (!d) return '';
    return `${num(d.missing)} missing, ${num(d.extra)} extra, ${num(d.different)} different; `
      + `${num(d.repaired)} repaired, ${num(d.left_to_stream)} left to the stream`;
  }
  // A reconcile run's drift: counts, fields, samples, watermarks.
  function driftSection(d) {
    const keys = (list) => (list && list.length ? list.map((k) => h('code', {}, k)).reduce((a, k) => [...a, a.length ? ', ' : '', k], [])
      : h('span', { class: 'none' }, 'none'));
    return h('section', { 'aria-labelledby': 'drift-h' },
      h('h2', { id: 'drift-h' }, 'Drift'),
      dl([
        ['Found', driftText(d), 'drift-found'],
        ['Fields that differed', Object.keys(d.fields || {}).length
          ? Object.entries(d.fields).map(([f, n]) => `${f} (${num(n)})`).join(', ') : h('span', { class: 'none' }, 'none')],
        ['Missing', keys(d.samples.missing)],
        ['Extra', keys(d.samples.extra)],
        ['Different', keys((d.samples.different || []).map((x) => `${x.key} (${x.fields.join(', ')})`))],
        ['Left to the stream', keys(d.samples.left_to_stream)],
        ['Watermarks', `${d.low_watermark ?? 'start'} → ${d.high_watermark ?? 'start'} (${num(d.events_between)} events between)`],
      ], { id: 'run-drift', class: 'facts' }));
  }

  // Run
  const STAT_ORDER = ['read', 'desired', 'destination', 'created', 'updated', 'deleted', 'upserted', 'unchanged', 'failed',
    'rejected', 'batches', 'collapsed', 'retried', 'queued', 'dead_lettered', 'pending_retries', 'held'];
  pages.run = {
    title: (p) => `Run ${p.id}`,
    load: ({ id }) => get(`${API}/runs/${enc(id)}`),
    render({ id }, { run, batches }) {
      const st = run.stats || {};
      const pl = run.pipeline || {};
      const timings = Object.entries(st.timings_ms || {});
      const bRows = (batches || []).map((b) => h('tr', {},
        h('th', { scope: 'row' }, String(b.seq)),
        h('td', {}, b.cursor_before === null ? h('span', { class: 'none' }, 'none') : h('code', {}, b.cursor_before)),
        h('td', {}, h('code', {}, b.cursor_after)),
        ['events', 'operations', 'collapsed', 'superseded', 'retried', 'upserted', 'deleted', 'queued', 'rejected', 'expired', 'pending_retries', 'lanes']
          .map((k) => h('td', { class: 'n' }, num(b[k]))),
        ['read_ms', 'transform_ms', 'apply_ms', 'commit_ms', 'work_ms'].map((k) => h('td', { class: 'n' }, b[k] === null || b[k] === undefined ? '' : ms(b[k])))));
      return [
        crumbs([`tenant ${pl.tenant}`], [`pipeline ${pl.pipeline}`, hrefPipeline(pl.tenant, pl.pipeline)], [`run ${run.id}`]),
        h('h1', { id: 'page-title', tabindex: '-1' }, `Run ${run.id}`),
        run.status === 'blocked' ? h('p', { class: 'callout' }, 'This run is blocked: its plan waits for approval. ',
          h('a', { href: hrefPlan(run.id), id: 'review-plan' }, 'Review the blocked plan')) : null,
        dl([
          ['Run ID', String(run.id), 'run-id'],
          ['Pipeline', h('a', { href: hrefPipeline(pl.tenant, pl.pipeline) }, `${pl.tenant}/${pl.pipeline}`)],
          ['Mode', run.mode],
          ['Status', badge(run.status), 'run-status'],
          ['Started', time(run.started_at)],
          ['Finished', time(run.finished_at, 'not finished')],
          ['Duration', run.finished_at ? ms(durationMs(run)) : 'not finished'],
          ['Error', run.error ? h('span', { class: 'error-text' }, run.error) : h('span', { class: 'none' }, 'none'), 'run-error'],
        ]),
        h('section', { 'aria-labelledby': 'stats-h' },
          h('h2', { id: 'stats-h' }, 'Stats'),
          dl([
            ...STAT_ORDER.filter((k) => k in st).map((k) => [word(k), num(st[k])]),
            ...Object.keys(st).filter((k) => !STAT_ORDER.includes(k) && !['cursor_before', 'cursor_after', 'timings_ms', 'drift'].includes(k)).map((k) => [word(k), val(st[k])]),
            ['cursor before', st.cursor_before === null || st.cursor_before === undefined ? h('span', { class: 'none' }, 'none') : h('code', {}, st.cursor_before)],
            ['cursor after', st.cursor_after === null || st.cursor_after === undefined ? h('span', { class: 'none' }, 'none') : h('code', {}, st.cursor_after)],
          ], { id: 'run-stats', class: 'facts grid' }),
          timings.length ? [h('h3', {}, 'Timings'), dl(timings.map(([k, v]) => [word(k), ms(v)]), { class: 'facts grid' })] : null),
        st.drift ? driftSection(st.drift) : null,
        h('section', { 'aria-labelledby': 'plugins-h' },
          h('h2', { id: 'plugins-h' }, 'Plugins'),
          Object.keys(run.plugins || {}).length
            ? table('run-plugins', 'Plugin digests used by this run (first 12 characters of sha256)', ['Plugin', 'Digest'],
              Object.entries(run.plugins).map(([n, d]) => h('tr', {}, h('th', { scope: 'row' }, n), h('td', {}, digest(d)))))
            : h('p', {}, 'No plugins recorded.')),
        run.mode === 'event' || bRows.length ? h('section', { 'aria-labelledby': 'batches-h' },
          h('h2', { id: 'batches-h' }, 'Batches'),
          bRows.length ? table('batches', `Batches (${bRows.length})`,
            ['Seq', 'Cursor before', 'Cursor after', 'Events', 'Operations', 'Collapsed', 'Superseded', 'Retried', 'Upserted', 'Deleted',
              'Queued', 'Rejected', 'Expired', 'Pending retries', 'Lanes', 'Read', 'Transform', 'Apply', 'Commit', 'Work'], bRows, { class: 'compact' })
            : h('p', {}, 'No batches recorded.')) : null,
      ];
    },
  };

  // Plan
  function approveText(c) {
    return `Approve: ${plural(c.creates, 'create', 'creates')}, ${plural(c.updates, 'update', 'updates')}, ${plural(c.deletes, 'delete', 'deletes')}`;
  }
  // The plan's columns (in order) that the samples carry, then any others they carry.
  function fieldNames(columns, samples) {
    const present = new Set();
    for (const x of samples) for (const k of Object.keys(x.fields || {})) present.add(k);
    const names = (columns || []).filter((c) => present.has(c));
    for (const k of present) if (!names.includes(k)) names.push(k);
    return names;
  }
  function shown(list, count) {
    return list.length < count ? ` (showing ${list.length} of ${num(count)})` : ` (${num(count)})`;
  }
  pages.plan = {
    title: (p) => `Plan of run ${p.run}`,
    async load({ run }) {
      try {
        return { plan: await get(`${API}/runs/${enc(run)}/plan`) };
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return { missing: e.message };
        throw e;
      }
    },
    render({ run }, { plan, missing }) {
      if (!plan) {
        return [crumbs([`run ${run}`, hrefRun(run)], ['plan']),
          h('h1', { id: 'page-title', tabindex: '-1' }, `Plan of run ${run}`),
          h('p', { id: 'plan-missing' }, `Run ${run} has no plan to review (event runs do not plan). The server said: ${missing}`), h('p', {}, runLink(run, `View run ${run}`))];
      }
      const c = plan.counts;
      const sm = plan.samples || { creates: [], updates: [], deletes: [], held: [] };
      const pl = plan.pipeline;
      const cNames = fieldNames(plan.columns, sm.creates);
      const uNames = fieldNames(plan.columns, sm.updates);
      const approve = () => {
        if (!window.confirm(`${approveText(c)} to ${pl.tenant}/${pl.pipeline} (run ${plan.run})?`)) return;
        act('approve', `Approving run ${plan.run}; the sync is running…`, async () => {
          const r = await post(`${API}/runs/${enc(plan.run)}/approve`);
          const st = r.stats || {};
          return [h('p', {}, `Run ${r.run} ${word(r.status)}: ${num(st.created)} created, ${num(st.updated)} updated, ${num(st.deleted)} deleted, ` +
            `${num(st.upserted)} upserted, ${num(st.failed)} failed.`, r.handed_over ? ' Handed over to the daemon.' : null, ' ', runLink(r.run, `View run ${r.run}`)),
          r.error ? h('p', {}, `Error: ${r.error}`) : null,
          (r.failures || []).length ? h('ul', {}, r.failures.slice(0, 20).map(([k, why]) => h('li', {}, `${k}: ${why}`))) : null];
        });
      };
      return [
        crumbs([`tenant ${pl.tenant}`], [`pipeline ${pl.pipeline}`, hrefPipeline(pl.tenant, pl.pipeline)], [`run ${plan.run}`, hrefRun(plan.run)], ['plan']),
        h('h1', { id: 'page-title', tabindex: '-1' }, `Plan of run ${plan.run}`),
        dl([
          ['Pipeline', h('a', { href: hrefPipeline(pl.tenant, pl.pipeline) }, `${pl.tenant}/${pl.pipeline}`)],
          ['Run', runLink(plan.run)],
          ['Status', badge(plan.status), 'plan-status'],
          ['Blocked because', plan.blocked ? plan.blocked : h('span', { class: 'none' }, 'not blocked'), 'plan-reason'],
        ]),
        h('h2', {}, 'Counts'),
        dl([
          ['Creates', num(c.creates), 'count-creates'],
          ['Updates', num(c.updates), 'count-updates'],
          ['Deletes', num(c.deletes), 'count-deletes'],
          ['Held', num(c.held), 'count-held'],
          ['Unchanged', num(c.unchanged)],
          ['Desired rows', num(c.desired_rows)],
          ['Destination rows', num(c.destination_rows)],
        ], { id: 'plan-counts', class: 'facts grid' }),
        plan.status === 'blocked'
          ? h('p', { class: 'toolbar' }, button(approveText(c), approve, { id: 'approve', class: 'primary', busyKey: 'approve' }))
          : h('p', { id: 'not-approvable', class: 'callout' }, `This plan cannot be approved: run ${plan.run} has status “${word(plan.status)}”; only a blocked run can be approved.`),
        h('section', { 'aria-labelledby': 'samples-h' },
          h('h2', { id: 'samples-h' }, 'Samples'),
          table('creates', `Creates${shown(sm.creates, c.creates)}`, ['Key', ...cNames],
            sm.creates.map((x) => {
              const f = x.fields || {};
              return h('tr', {}, h('th', { scope: 'row' }, val(x.key)), cNames.map((n) => h('td', {}, n in f ? val(f[n]) : '')));
            })),
          table('updates', `Updates${shown(sm.updates, c.updates)}: new values; changed fields are bold and marked “changed”`, ['Key', ...uNames],
            sm.updates.map((x) => {
              const f = x.fields || {};
              return h('tr', {}, h('th', { scope: 'row' }, val(x.key)), uNames.map((n) => {
                const ch = (x.changed || []).includes(n);
                if (!(n in f)) return h('td', {}, ch ? h('span', { class: 'marker' }, '(changed)') : h('span', { class: 'none' }, 'unchanged'));
                return h('td', { class: ch ? 'changed' : null }, ch ? [h('strong', {}, val(f[n])), ' ', h('span', { class: 'marker' }, '(changed)')] : val(f[n]));
              }));
            })),
          table('deletes', `Deletes${shown(sm.deletes, c.deletes)}`, ['Key'],
            sm.deletes.map((x) => h('tr', {}, h('th', { scope: 'row' }, val(x.key))))),
          table('held', `Held conflicts${shown(sm.held, c.held)}`, ['Key', 'Conflicts with', 'Field', 'Value'],
            sm.held.map((x) => h('tr', {}, h('th', { scope: 'row' }, val(x.key)), h('td', {}, val(x.other)), h('td', {}, x.field), h('td', {}, val(x.value)))))),
      ];
    },
  };

  // Plugins
  pages.plugins = {
    title: (p) => `Plugins of ${p.tenant}`,
    load: ({ tenant }) => get(`${API}/tenants/${enc(tenant)}/plugins`),
    render({ tenant }, plugins) {
      const rollback = (name) => {
        if (!window.confirm(`Roll back ${name} of tenant ${tenant} to its previous version?`)) return;
        act(`rollback-${name}`, `Rolling back ${name}…`, async () => {
          const c = await post(`${API}/tenants/${enc(tenant)}/plugins/${enc(name)}/rollback`);
          return [h('p', {}, `Roll back ${name}: ${c.change}.`), h('ul', {}, changeText(c))];
        });
      };
      return [
        crumbs([`tenant ${tenant}`], ['plugins']),
        h('h1', { id: 'page-title', tabindex: '-1' }, `Plugins of tenant ${tenant}`),
        plugins.length ? null : h('p', {}, 'This tenant has no plugins.'),
        plugins.map((p, i) => {
          const hid = `plugin-${i}-h`;
          const many = (p.versions || []).length > 1;
          return h('section', { 'aria-labelledby': hid, class: 'plugin' },
            h('h2', { id: hid }, p.name),
            dl([['Kind', p.kind], ['Active digest', digest(p.digest)], ['WIT version', p.wit_version], ['Versions kept', String((p.versions || []).length)]]),
            table(`versions-${i}`, `Versions of ${p.name}, oldest first`, ['Digest', 'Active since', 'State'],
              (p.versions || []).map((v) => h('tr', { class: v.active ? 'active' : null },
                h('th', { scope: 'row' }, digest(v.digest)), h('td', {}, time(v.active_since, 'never')),
                h('td', {}, v.active ? h('strong', {}, 'active') : h('span', { class: 'none' }, 'kept'))))),
            h('p', {}, many
              ? button(`Roll back ${p.name}`, () => rollback(p.name), { fk: `rollback-${p.name}`, busyKey: `rollback-${p.name}` })
              : [h('button', { type: 'button', disabled: true }, `Roll back ${p.name}`), h('span', { class: 'note' }, ' Only one version is kept: nothing to roll back to.')]));
        }),
      ];
    },
  };

  pages.notfound = {
    title: () => 'Not found',
    load: async () => ({}),
    render: () => [h('h1', { id: 'page-title', tabindex: '-1' }, 'Page not found'), h('p', {}, h('a', { href: '#/' }, 'Go to the overview'))],
  };

  // ---------- routing and refresh ----------

  function parse(hash) {
    const parts = hash.replace(/^#\/?/, '').split('/').filter((x) => x !== '').map((x) => {
      try { return decodeURIComponent(x); } catch (e) { return x; }
    });
    const [a, b, c] = parts;
    if (!parts.length) return ['overview', {}];
    if (a === 'pipeline' && parts.length === 3) return ['pipeline', { tenant: b, pipeline: c }];
    if (a === 'run' && parts.length === 2 && /^\d+$/.test(b)) return ['run', { id: b }];
    if (a === 'plan' && parts.length === 2 && /^\d+$/.test(b)) return ['plan', { run: b }];
    if (a === 'tenant' && parts.length === 3 && c === 'plugins') return ['plugins', { tenant: b }];
    return ['notfound', {}];
  }

  let gen = 0;
  let cur = null; // {name, params, json, data}
  let inflight = null; // the current route's load in progress
  let again = false;

  function editing() {
    const a = document.activeElement;
    if (!a || a === document.body) return false;
    return a.matches('input:not([type=button]):not([type=submit]), textarea, select') || !!a.closest('dialog');
  }
  function focusKey(el) {
    if (!el || !view.contains(el)) return null;
    return (el.dataset && el.dataset.fk) || el.id || `${el.tagName}|${el.getAttribute('href') || ''}|${el.textContent}`;
  }
  function paint(nodes) {
    const key = focusKey(document.activeElement);
    const y = window.scrollY;
    const typed = new Map([...view.querySelectorAll('input[id]')].map((el) => [el.id, el.value]));
    view.replaceChildren();
    add(view, nodes);
    for (const [id, v] of typed) { const el = $(id); if (el && view.contains(el) && v) el.value = v; }
    if (key) {
      const found = [...view.querySelectorAll('[id], [data-fk], a, button')].find((el) => focusKey(el) === key);
      if (found) found.focus({ preventScroll: true });
    }
    if (window.scrollY !== y) window.scrollTo(0, y);
  }
  function rerender() {
    if (!cur || cur.data === undefined || !getToken()) return;
    paint(pages[cur.name].render(cur.params, cur.data));
  }
  function stamp() {
    const d = new Date();
    $('updated').textContent = `updated ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // One load at a time per route; a refresh asked for meanwhile runs after it.
  function refresh() {
    if (!cur || !getToken()) return Promise.resolve();
    if (inflight) { again = true; return inflight; }
    const my = gen;
    const p = load(my).finally(() => {
      if (inflight === p) inflight = null;
      if (again && my === gen) { again = false; refresh(); }
    });
    inflight = p;
    return p;
  }
  // A load that starts after everything done so far: waits out one in flight.
  async function refreshNow() {
    if (inflight) await inflight.catch(() => {});
    again = false;
    return refresh();
  }
  async function load(my) {
    const page = pages[cur.name];
    try {
      const data = await page.load(cur.params);
      if (my !== gen) return;
      stamp();
      clearAlert('load');
      const json = JSON.stringify(data);
      if (json === cur.json) return;
      if (cur.data !== undefined && editing()) return; // keep the user's input; next tick paints
      cur.json = json;
      cur.data = data;
      paint(page.render(cur.params, data));
    } catch (e) {
      if (my !== gen) return;
      if (e instanceof ApiError && e.status === 401) return;
      setAlert(e, 'load');
      if (cur.data === undefined) {
        paint([h('h1', { id: 'page-title', tabindex: '-1' }, page.title(cur.params)), h('p', {}, 'Could not load this page; retrying every 2 seconds.')]);
      }
    }
  }

  function route(moveFocus) {
    if (!getToken()) { signedOut(null); return; }
    showChrome(true);
    const [name, params] = parse(location.hash || '#/');
    gen += 1;
    again = false;
    inflight = null;
    cur = { name, params, json: null, data: undefined };
    setStatus();
    clearAlert();
    document.title = `${pages[name].title(params)} — synchost`;
    paint([h('h1', { id: 'page-title', tabindex: '-1' }, pages[name].title(params)), h('p', {}, 'Loading…')]);
    if (moveFocus) $('page-title').focus();
    refresh();
  }

  function showChrome(on) {
    $('nav').hidden = !on;
    $('session').hidden = !on;
    if (!on) $('updated').textContent = '';
  }

  function signedOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    gen += 1;
    cur = null;
    pending.clear();
    showChrome(false);
    setStatus();
    clearAlert();
    document.title = 'Sign in — synchost';
    const form = h('form', { id: 'signin', class: 'signin', 'aria-labelledby': 'page-title', onsubmit: (e) => {
      e.preventDefault();
      const v = $('token').value.trim();
      if (!v) { $('signin-error').textContent = 'Enter the admin token.'; $('token').focus(); return; }
      sessionStorage.setItem(TOKEN_KEY, v);
      route(true);
    } },
    h('p', {}, h('label', { for: 'token' }, 'Admin token')),
    h('p', {}, h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, 'aria-describedby': 'token-hint signin-error' })),
    h('p', { id: 'token-hint', class: 'hint' }, 'The token is in the file named by token_file in synchost.toml (default state/admin.token)'),
    h('p', { id: 'signin-error', class: 'error-text', role: 'alert' }, message ? `The server refused the token: ${message}` : ''),
    h('p', {}, h('button', { type: 'submit', id: 'signin-button', class: 'primary' }, 'Sign in')));
    view.replaceChildren(h('h1', { id: 'page-title', tabindex: '-1' }, 'Sign in'), form);
    if (message) $('token').focus();
  }

  // ---------- wiring ----------

  $('skip').addEventListener('click', (e) => {
    e.preventDefault();
    $('main').focus();
    $('main').scrollIntoView();
  });
  $('reload').addEventListener('click', () => { if (!pending.has('reload')) reload(); });
  $('signout').addEventListener('click', () => {
    signedOut(null);
    setStatus('Signed out.');
  });
  window.addEventListener('hashchange', () => route(true));
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  route(false);
})();
