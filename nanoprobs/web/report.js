// nanoGPT-probs report: draws the texts of the page's JSON data, token by token, with a popover per token.
// One script for the static report (sample.py, eval.py) and the live app (serve.py, kind 'live').
// Every number shown comes from the data (computed in Python); JavaScript only picks colours and
// bar lengths from the log-probs. Model text is untrusted: it only ever goes into textContent.
'use strict';
(function () {
  const D = JSON.parse(document.getElementById('report-data').textContent);
  const LIVE = D.kind === 'live';
  const pop = document.getElementById('pop');
  const main = document.getElementById('main');
  let mode = D.compare ? 'change' : 'prob';  // what the shading shows: 'prob' | 'rank' | 'change'
  let pinned = null;  // the token element whose popover stays open (clicked)
  let shown = null;  // the token element whose popover is shown

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  // a token's text for labels: visible spaces, newlines and tabs
  function label(t) {
    return t.replace(/ /g, '\u2423').replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5')
      .replace(/\r/g, '\u240d');
  }

  // --- colours (display only) ---
  const PROB_EDGES = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75];  // 8 buckets of probability
  const PROB_NAMES = ['< 0.001', '0.001–0.01', '0.01–0.05', '0.05–0.1', '0.1–0.25', '0.25–0.5', '0.5–0.75',
    '≥ 0.75'];
  const RANK_NAMES = ['top 10', 'top 100', 'top 1000', 'beyond'];
  const DELTA_EDGES = [-2, -0.5, -0.1, 0.1, 0.5, 2];  // nats, 7 buckets
  const DELTA_NAMES = ['fell > 2 nats', '0.5–2', '0.1–0.5', 'about the same', '0.1–0.5', '0.5–2',
    'rose > 2 nats'];
  function bucket(x, edges) { let i = 0; while (i < edges.length && x >= edges[i]) i++; return i; }
  function shade(t) {
    if (mode === 'rank') {
      if (t.rank === undefined) return 'c-none';
      return 'c-r' + (t.rank <= 10 ? 1 : t.rank <= 100 ? 2 : t.rank <= 1000 ? 3 : 4);
    }
    if (mode === 'change') {
      if (t.d === undefined) return '';  // the two runs tokenized this pair differently
      return t.d === null ? 'c-d3' : 'c-d' + bucket(t.d, DELTA_EDGES);
    }
    return t.lp === null ? 'c-none' : 'c-p' + bucket(Math.exp(t.lp), PROB_EDGES);
  }

  // --- header: title, settings, shading toggle, legend ---
  const head = document.getElementById('head');
  function drawHead() {
    head.replaceChildren();
    head.append(el('h1', '', D.title));
    if (D.sampling) head.append(el('div', 'muted', 'sampling distribution: ' + D.sampling +
      ' · model distribution: T=1, no top-k/top-p (what the model believes)'));
    const ul = el('ul', 'settings');
    for (const [k, v] of D.settings || []) {
      const li = el('li');
      li.append(el('b', '', k + ' '), v);
      ul.append(li);
    }
    head.append(ul);
    const bar = el('div', 'toolbar');
    const modes = [['prob', 'probability'], ['rank', 'rank (top 10 / 100 / 1000)']];
    if (D.compare) modes.push(['change', 'change in log-prob']);
    const group = el('div'); group.append(el('span', 'muted', 'shade by: '));
    for (const [m, name] of modes) {
      const lab = el('label'); const r = el('input'); r.type = 'radio'; r.name = 'mode'; r.value = m;
      r.checked = m === mode; r.id = 'mode-' + m;
      r.addEventListener('change', () => { mode = m; drawLegend(); recolour(); });
      lab.append(r, ' ' + name + '  '); group.append(lab);
    }
    bar.append(group, el('div', 'legend')); head.append(bar);
    head.append(el('div', 'hint', 'Hover, click or Tab to a token (then \u2190 \u2192 to move, Esc to close) ' +
      'to see what else the model could have written there.' +
      (LIVE ? ' Click an alternative to continue the text from it.' : '')));
    drawLegend();
  }
  function drawLegend() {
    const lg = head.querySelector('.legend'); lg.replaceChildren();
    const names = mode === 'rank' ? RANK_NAMES : mode === 'change' ? DELTA_NAMES : PROB_NAMES;
    const cls = mode === 'rank' ? 'c-r' : mode === 'change' ? 'c-d' : 'c-p';
    lg.append(el('span', 'muted', mode === 'rank' ? 'rank under the model: ' :
      mode === 'change' ? 'log-prob after vs before: ' : 'probability (model): '));
    names.forEach((n, i) => lg.append(el('span', 'sw ' + cls + (mode === 'rank' ? i + 1 : i), n)));
  }
  function recolour() {
    for (const s of main.querySelectorAll('.tk')) {
      const t = D.docs[+s.dataset.d].tokens[+s.dataset.t];
      s.className = 'tk ' + shade(t) + (s === pinned ? ' sel' : '');
    }
  }

  // --- texts ---
  function tokenSpan(t, di, ti) {
    const s = el('span', 'tk ' + shade(t));
    s.dataset.d = di; s.dataset.t = ti; s.dataset.id = t.id; s.tabIndex = -1;
    // newlines: a visible mark, then the line break itself
    if (t.t.includes('\n')) s.textContent = t.t.replace(/\n/g, '\u21b5\n'); else s.textContent = t.t;
    if (t.t.trim() === '' && !t.t.includes('\n')) s.textContent = t.t.replace(/ /g, '\u00b7');
    return s;
  }
  function drawTotals(box, doc) {
    box.replaceChildren();
    for (const [k, v] of doc.totals || []) box.append(el('dt', '', k), el('dd', '', v));
  }
  function drawDoc(doc, di, where) {
    const sec = el('section', 'doc'); sec.id = 'doc-' + (di + 1);
    sec.append(el('h2', '', doc.title));
    const text = el('div', 'text');
    text.append(el('span', 'prompt', doc.prompt));
    doc.tokens.forEach((t, ti) => text.append(tokenSpan(t, di, ti)));
    const first = text.querySelector('.tk'); if (first) first.tabIndex = 0;
    const tot = el('dl', 'totals'); drawTotals(tot, doc);
    sec.append(text, tot);
    if (where) where.prepend(sec); else main.append(sec);
    doc.el = sec;
    return sec;
  }
  function drawTable() {
    if (!D.table) return;
    const sec = el('section');
    if (D.summary) sec.append(facts(D.summary, 'totals'));
    const tb = el('table', 'pairs'); const tr = el('tr');
    for (const h of D.table.head) tr.append(el('th', '', h));
    const thead = el('thead'); thead.append(tr); tb.append(thead);
    const body = el('tbody');
    D.table.rows.forEach((row, i) => {
      const r = el('tr');
      row.forEach((c, j) => {
        const td = el('td', j === 1 || j === 2 ? 'txt' : 'n');
        if (j === 0) {  // the pair's number links to its text
          const a = el('a', '', c);
          a.href = '#doc-' + (i + 1);
          td.append(a);
        } else td.textContent = c;
        if (j === 1 || j === 2) td.title = c;
        r.append(td);
      });
      body.append(r);
    });
    tb.append(body);
    const wrap = el('div', 'scroll');
    wrap.append(tb);
    sec.append(wrap);
    main.append(sec);
  }

  // --- popover ---
  function facts(pairs, cls) {
    const dl = el('dl', cls || 'facts');
    for (const [k, v] of pairs) {
      if (v !== undefined && v !== null) dl.append(el('dt', '', k), el('dd', '', v));
    }
    return dl;
  }
  function barCell(lp, text, cls) {
    const td = el('td', 'bar'); const w = el('div', 'bw'); const f = el('div', 'bf ' + cls);
    f.style.width = (lp === null ? 0 : Math.max(0.5, 100 * Math.exp(lp))) + '%';
    w.append(f, el('span', 'bt', text)); td.append(w); return td;
  }
  function showPop(s, pin) {
    const di = +s.dataset.d, ti = +s.dataset.t, doc = D.docs[di], t = doc.tokens[ti];
    if (pinned && pinned !== s) pinned.classList.remove('sel');
    pinned = pin ? s : (pinned === s ? s : null);
    if (pinned) s.classList.add('sel');
    pop.replaceChildren();
    const title = el('div', 'ptitle');
    title.append(doc.forced ? 'forced token ' : 'token ', el('span', 'ptok', label(t.t)),
                 ` · position ${ti + 1} of ${doc.tokens.length}`);
    pop.append(title);
    const rows = [['probability (model distribution)', t.p]];
    if (t.sp !== undefined) rows.push(['probability (sampling distribution)', t.sp]);
    const both = !doc.model_only;  // beams: the model distribution only (beam search does not sample)
    rows.push(['rank under the model', t.rank]);
    rows.push(both ? ['entropy (model / sampling)', t.ent ? t.ent + ' / ' + t.sent : null] : ['entropy', t.ent]);
    if (t.exp !== undefined) rows.push(['the model\u2019s most likely token here', label(t.exp)]);
    if (t.bp !== undefined) {
      rows.push(['before: probability, rank', `${t.bp}, rank ${t.brank}`],
                ['after: probability, rank', `${t.p}, rank ${t.rank}`],
                ['change', t.dr + (t.dn ? ` (${t.dn})` : '')]);
    }
    pop.append(facts(rows));
    if (t.top) {
      const tb = el('table', 'bars'); const hr = el('tr');
      hr.append(el('th', '', 'top ' + t.top.length), el('th', '', 'model distribution'));
      if (both) hr.append(el('th', '', 'sampling distribution'));
      if (LIVE) hr.append(el('th', '', ''));
      tb.append(hr);
      let seen = false;
      t.top.forEach(([id, text, lp, p, slp, sp], j) => {
        const tr = el('tr', id === t.id ? 'chosen' : '');
        if (id === t.id) seen = true;
        const lab = el('td', 'lab');
        lab.append((id === t.id ? '\u25b6 ' : '') + (j + 1) + ' ', el('span', 'tt', label(text)));
        tr.append(lab, barCell(lp, p, ''));
        if (both) tr.append(barCell(slp, sp, 's'));
        if (LIVE) {
          const td = el('td', 'lab'); const b = el('button', 'alt', id === t.id ? 'regenerate' : 'use this');
          b.title = 'cut the text here and continue from this token'; b.dataset.id = id;
          b.addEventListener('click', (e) => { e.stopPropagation(); branch(di, ti, id); });
          td.append(b); tr.append(td);
        }
        tb.append(tr);
      });
      if (!seen) {
        const tr = el('tr', 'chosen'); const lab = el('td', 'lab');
        lab.append('\u25b6 ' + t.rank + ' ', el('span', 'tt', label(t.t)));
        tr.append(lab, barCell(t.lp, t.p, ''));
        if (both) tr.append(barCell(t.slp === undefined ? null : t.slp, t.sp || '', 's'));
        tb.append(tr);
      }
      pop.append(tb);
    }
    if (LIVE) {
      const b = el('button', 'alt', 'compare temperatures at this step');
      b.addEventListener('click', (e) => { e.stopPropagation(); temperatures(di, ti); });
      const box = el('div'); box.id = 'temps'; box.style.marginTop = '6px'; box.append(b); pop.append(box);
    }
    pop.hidden = false;
    shown = s;
    place(s);
  }
  function place(s) {
    // under the token when it fits (or when there is more room under it than above), else above it;
    // a popover taller than the room scrolls
    pop.style.maxHeight = '';
    const r = s.getBoundingClientRect(), pw = pop.offsetWidth, ph = pop.offsetHeight;
    const vw = document.documentElement.clientWidth, vh = document.documentElement.clientHeight;
    const below = vh - r.bottom - 14, above = r.top - 14;
    const x = Math.min(Math.max(8, r.left), vw - pw - 8);
    let y;
    if (ph <= below || below >= above) {
      y = r.bottom + 6;
      pop.style.maxHeight = Math.max(below, 120) + 'px';
    } else {
      y = Math.max(8, r.top - 6 - Math.min(ph, above));
      pop.style.maxHeight = above + 'px';
    }
    pop.style.left = x + 'px'; pop.style.top = y + 'px';
  }
  function hidePop() {
    pop.hidden = true;
    if (pinned) pinned.classList.remove('sel');
    pinned = null;
  }
  // after Escape, hovering opens a popover again only once the mouse moves: the token that the closed
  // popover uncovers under a still pointer gets a mouseover, which must not undo the Escape
  let escaped = false;
  main.addEventListener('mousemove', () => { escaped = false; });
  main.addEventListener('mouseover', (e) => {
    const s = e.target.closest && e.target.closest('.tk');
    if (s && !pinned && !escaped) showPop(s, false);
  });
  main.addEventListener('mouseout', (e) => {
    const s = e.target.closest && e.target.closest('.tk');
    if (s && !pinned && !(e.relatedTarget && (pop.contains(e.relatedTarget)))) pop.hidden = true;
  });
  main.addEventListener('click', (e) => {
    const s = e.target.closest && e.target.closest('.tk');
    if (s) { s.focus({ preventScroll: true }); showPop(s, true); }
  });
  main.addEventListener('focusin', (e) => {
    const s = e.target.closest && e.target.closest('.tk');
    if (!s) return;
    // roving tabindex: Tab enters a text at the token last visited, arrows move inside it
    for (const o of s.parentNode.querySelectorAll('.tk[tabindex="0"]')) o.tabIndex = -1;
    s.tabIndex = 0;
    showPop(s, false);
  });
  main.addEventListener('keydown', (e) => {
    const s = e.target.closest && e.target.closest('.tk');
    if (!s) return;
    let n = null;
    if (e.key === 'ArrowRight') n = s.nextElementSibling;
    else if (e.key === 'ArrowLeft') n = s.previousElementSibling;
    else if (e.key === 'Home') n = s.parentNode.querySelector('.tk');
    else if (e.key === 'End') n = s.parentNode.lastElementChild;
    else if (e.key === 'Enter' || e.key === ' ') {  // pin the popover; in the app, into its buttons
      e.preventDefault();
      showPop(s, true);
      const b = pop.querySelector('button');
      if (b && LIVE) b.focus();
      return;
    }
    if (n && n.classList.contains('tk')) { e.preventDefault(); n.focus(); }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !pop.hidden) {
      const back = pinned; hidePop(); escaped = true; if (back) back.focus({ preventScroll: true });
    }
  });
  document.addEventListener('click', (e) => {
    if (!pop.hidden && !pop.contains(e.target) && !(e.target.closest && e.target.closest('.tk'))) hidePop();
  });
  window.addEventListener('scroll', () => { if (!pop.hidden && shown) place(shown); }, { passive: true });

  // --- live app: generate (streamed), score, branch, compare temperatures ---
  let ctrl = null, form = null;
  function status(msg, err) {
    const s = form.querySelector('.status');
    s.textContent = msg;
    s.className = 'status' + (err ? ' err' : '');
  }
  function settingsFromForm() {
    const v = (id) => form.querySelector('#' + id).value.trim();
    const o = { temperature: Number(v('temperature')), top_k: v('top_k') === '' ? null : Number(v('top_k')),
      top_p: Number(v('top_p')), max_new_tokens: Number(v('max_new_tokens')), seed: Number(v('seed')) };
    return o;
  }
  function busy(on) {
    form.querySelector('#generate').disabled = on; form.querySelector('#score').disabled = on;
    form.querySelector('#stop').disabled = !on;
  }
  async function post(path, body, signal) {
    const r = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body), signal });
    if (!r.ok) {
      let m = 'status ' + r.status;
      try { m = (await r.json()).error || m; } catch (e) { /* not JSON */ }
      throw new Error(m);
    }
    return r;
  }
  async function generate(body, title) {
    hidePop(); busy(true); ctrl = new AbortController();
    let doc = null, di = -1, text = null, n = 0;
    const t0 = performance.now();
    status('generating\u2026');
    try {
      const r = await post('/api/generate', Object.assign({ stream: true }, body), ctrl.signal);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
          if (!line.trim()) continue;
          const m = JSON.parse(line);
          if (m.error) throw new Error(m.error);
          if (m.start) {
            doc = Object.assign({ title, tokens: [], totals: [] }, m.start);
            D.docs.push(doc); di = D.docs.length - 1;
            text = drawDoc(doc, di, document.getElementById('docs')).querySelector('.text');
          } else if (m.token) {
            doc.tokens.push(m.token); const s = tokenSpan(m.token, di, doc.tokens.length - 1);
            if (doc.tokens.length === 1) s.tabIndex = 0;
            text.append(s); n++;
            status(`generating\u2026 ${n} tokens`);
          } else if (m.done) {
            doc.totals = m.done.totals; drawTotals(doc.el.querySelector('.totals'), doc);
            status(`${doc.tokens.length} tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          }
        }
      }
    } catch (e) {
      if (e.name === 'AbortError') status(`stopped after ${n} tokens`);
      else status('error: ' + e.message, true);
    } finally { busy(false); ctrl = null; }
  }
  function branch(di, ti, id) {
    const doc = D.docs[di];
    const prefix = doc.tokens.slice(0, ti).map((t) => t.id).concat([id]);
    const alt = doc.tokens[ti].top.find((x) => x[0] === id);
    generate(Object.assign(settingsFromForm(), { prompt_ids: doc.prompt_ids, prefix_ids: prefix }),
      `branch of \u201c${doc.title}\u201d at token ${ti + 1}: ${label(alt ? alt[1] : String(id))}`);
  }
  async function score() {
    hidePop(); busy(true); status('scoring\u2026');
    try {
      const st = settingsFromForm();
      const r = await post('/api/score', { prompt: form.querySelector('#prompt').value,
        response: form.querySelector('#response').value, temperature: st.temperature, top_k: st.top_k,
        top_p: st.top_p });
      const doc = (await r.json()).doc; doc.title = 'scored response'; D.docs.push(doc);
      drawDoc(doc, D.docs.length - 1, document.getElementById('docs'));
      status(`scored ${doc.tokens.length} tokens`);
    } catch (e) { status('error: ' + e.message, true); } finally { busy(false); }
  }
  async function temperatures(di, ti) {
    const doc = D.docs[di], box = pop.querySelector('#temps'), st = settingsFromForm();
    box.replaceChildren(el('span', 'muted', 'computing\u2026'));
    try {
      const ids = doc.prompt_ids.concat(doc.tokens.slice(0, ti).map((t) => t.id));
      const body = { ids, temperatures: [0, 0.5, 1, 1.5, 2], top_k: st.top_k, top_p: st.top_p };
      const r = await (await post('/api/temperatures', body)).json();
      const tb = el('table', 'bars'); const hr = el('tr'); hr.append(el('th', '', 'token'));
      for (const c of r.columns) hr.append(el('th', '', c.name));
      tb.append(hr);
      r.tokens.forEach(([id, text], j) => {
        const tr = el('tr', id === doc.tokens[ti].id ? 'chosen' : ''); const lab = el('td', 'lab');
        lab.append(el('span', 'tt', label(text))); tr.append(lab);
        for (const c of r.columns) {
          const td = barCell(c.logprobs[j], c.probs[j], 's');
          td.style.width = 'auto';
          tr.append(td);
        }
        tb.append(tr);
      });
      const er = el('tr'); er.append(el('td', 'lab muted', 'entropy'));
      for (const c of r.columns) er.append(el('td', 'muted', c.entropy));
      tb.append(er);
      box.replaceChildren(el('div', 'muted', r.title), tb);
      if (pinned) place(pinned);
    } catch (e) { box.replaceChildren(el('span', 'status err', 'error: ' + e.message)); }
  }
  function drawLive() {
    const dft = D.defaults || {}, lim = D.limits || {};
    form = el('section', 'live');
    const left = el('div');
    const p = el('textarea'); p.id = 'prompt'; p.rows = 4; p.placeholder = 'Prompt, e.g. Once upon a time';
    p.value = dft.start || ''; p.maxLength = lim.max_prompt_chars || 20000;
    const rsp = el('textarea');
    rsp.id = 'response'; rsp.rows = 2; rsp.placeholder = 'A fixed response to score after the prompt (Score)';
    const lp = el('label', 'muted', 'prompt'); lp.htmlFor = 'prompt';
    const lr = el('label', 'muted', 'response to score'); lr.htmlFor = 'response';
    left.append(lp, p, lr, rsp);
    const c = el('div', 'controls');
    const inputs = [['temperature', 'temperature', dft.temperature, '0.1'],
      ['top_k', 'top-k (empty = off)', dft.top_k, '1'], ['top_p', 'top-p', dft.top_p, '0.05'],
      ['max_new_tokens', `max new tokens (\u2264 ${lim.max_new_tokens})`, dft.max_new_tokens, '1'],
      ['seed', 'seed', dft.seed, '1']];
    for (const [id, name, val, step] of inputs) {
      const l = el('label', '', name); l.htmlFor = id;
      const i = el('input');
      i.id = id; i.type = 'number'; i.step = step; i.value = val === null || val === undefined ? '' : val;
      c.append(l, i);
    }
    const btns = el('div', 'buttons');
    const g = el('button', 'primary', 'Generate'); g.id = 'generate';
    const stop = el('button', '', 'Stop'); stop.id = 'stop'; stop.disabled = true;
    const sc = el('button', '', 'Score'); sc.id = 'score';
    g.addEventListener('click', () => generate(Object.assign(settingsFromForm(), { prompt: p.value }),
                                               'generated'));
    stop.addEventListener('click', () => { if (ctrl) ctrl.abort(); });
    sc.addEventListener('click', score);
    btns.append(g, stop, sc, el('span', 'status'));
    form.append(left, c, btns);
    main.append(form);
    const docs = el('div'); docs.id = 'docs'; main.append(docs);
  }

  // --- draw ---
  main.replaceChildren();
  drawHead();
  if (LIVE) drawLive();
  drawTable();
  D.docs.forEach((doc, di) => drawDoc(doc, di));
  document.body.dataset.ready = '1';  // for tests: the page is drawn and interactive
})();
