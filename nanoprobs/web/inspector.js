// nanoGPT-probs: the docked inspector (beside the texts on a wide window, below them on a narrow one) of the
// token page.js chose: its candidates, then three panels: what each layer predicted (logit lens), where
// it looked (attention) and which earlier tokens made it likely (attribution). The static report carries
// the panels' numbers in its data; the live app asks its server (hooks.panels, hooks.attribute).
// The token at sequence position j is predicted at position j - 1: every panel shows that prediction.
'use strict';
const insp = document.getElementById('inspector');
const attSel = { layer: null, head: -1 };  // the attention panel's layer (null: the last) and head (-1: mean)
let cur = null;  // {di, ti (the inspected token), gi (its joined group's first token)}

function inspectNothing() {
  cur = null;
  insp.replaceChildren(clone('t-insp-empty'));
}
function barCell(lp, text, cls) {
  const td = clone('t-bar'), f = td.querySelector('.bf');
  if (cls) f.classList.add(cls);
  f.style.width = (lp === null ? 0 : Math.max(0.5, 100 * Math.exp(lp))) + '%';
  td.querySelector('.bt').textContent = text;
  return td;
}
// a bar of a signed or plain share w in [-1, 1] (attention, attribution), with Python's number as text
function shareCell(w, text) {
  const td = clone('t-bar'), f = td.querySelector('.bf');
  f.style.width = Math.max(0.5, 100 * Math.abs(w)) + '%';
  if (w < 0) f.classList.add('neg');
  td.querySelector('.bt').textContent = text;
  return td;
}
function section(id, title, what) {
  const sec = clone('t-panel');
  sec.id = id;
  sec.querySelector('h3').textContent = title;
  sec.querySelector('.what').textContent = what;
  return sec;
}

// --- the inspector of one token ---
function inspect(di, gi, k) {
  const doc = D.docs[di], g = doc.groups && doc.groups[gi];
  const ti = gi + (k || 0), t = doc.tokens[ti];
  cur = { di, ti, gi };
  const title = clone('t-ptitle');
  title.querySelector('.what').textContent = doc.forced ? 'forced token ' : 'token ';
  title.querySelector('.ptok').textContent = label(t.text);
  title.querySelector('.where').textContent = ` · position ${ti + 1} of ${doc.tokens.length} · ${doc.title}`;
  const out = [title];
  if (g) out.push(piecesBox(doc, di, g, ti));
  const both = !doc.model_only;  // beams: the model distribution only (beam search does not sample)
  const rows = [['probability (model distribution)', t.prob]];
  if (t.sample_prob !== undefined) rows.push(['probability (sampling distribution)', t.sample_prob]);
  rows.push(['rank under the model', t.rank]);
  rows.push(both && t.sample_entropy ? ['entropy (model / sampling)', t.entropy + ' / ' + t.sample_entropy]
    : ['entropy (model)', t.entropy]);
  if (t.expected !== undefined) rows.push(['the model\u2019s most likely token here', label(t.expected)]);
  if (t.before_prob !== undefined) {
    rows.push(['before: probability, rank', `${t.before_prob}, rank ${t.before_rank}`],
              ['after: probability, rank', `${t.prob}, rank ${t.rank}`],
              ['change', t.change_ratio + (t.change_nats ? ` (${t.change_nats})` : '')]);
  }
  out.push(facts(rows));
  if (t.alternatives) out.push(alternativesTable(t, di, ti, both));
  if (hooks.extras) out.push(hooks.extras(di, ti));
  const I = D.inspect;
  if (I) {
    out.push(section('p-lens', 'What each layer predicted', '(logit lens)'),
      section('p-att', 'Where it looked', '(attention)'), section('p-attr', 'Which earlier tokens made it likely',
        '(attribution)'));
  }
  insp.replaceChildren(...out);
  insp.scrollTop = 0;
  if (I) panels(di, ti);
}
// a character made of several tokens: its byte pieces, each a button showing that token
function piecesBox(doc, di, g, ti) {
  const box = clone('t-pieces');
  box.querySelector('.chars').textContent = label(g[2]);
  box.querySelector('.joint').textContent = `${g[1] - g[0]} tokens, together probability ${g[4]} ` +
    '(model distribution); each piece:';
  for (let k = g[0]; k < g[1]; k++) {
    const b = el('button', 'alt piece', `${label(doc.tokens[k].text)} ${doc.tokens[k].prob}`);
    b.setAttribute('aria-pressed', String(k === ti));
    b.addEventListener('click', (e) => { e.stopPropagation(); inspect(di, g[0], k - g[0]); focusPiece(k - g[0]); });
    box.querySelector('.plist').append(b);
  }
  return box;
}
function focusPiece(k) { const b = insp.querySelectorAll('button.piece')[k]; if (b) b.focus(); }
function alternativesTable(t, di, ti, both) {
  const tb = el('table', 'bars'), hr = el('tr');
  hr.append(el('th', '', 'top ' + t.alternatives.length), el('th', '', 'model distribution'));
  if (both && t.alternatives.some((a) => a.sample_prob !== undefined)) hr.append(el('th', '', 'sampling distribution'));
  else both = false;
  if (hooks.alternative) hr.append(el('th', '', ''));
  tb.append(hr);
  // one row per alternative, the chosen token marked; a chosen token outside the top k gets a last row
  const row = (a, n) => {
    const tr = el('tr', a.id === t.id ? 'chosen' : ''), lab = el('td', 'lab');
    lab.append((a.id === t.id ? '\u25b6 ' : '') + n + ' ', el('span', 'tt', label(a.text)));
    tr.append(lab, barCell(a.logprob, a.prob, ''));
    if (both) tr.append(barCell(a.sample_logprob === undefined ? null : a.sample_logprob, a.sample_prob || '', 's'));
    return tr;
  };
  t.alternatives.forEach((a, j) => {
    const tr = row(a, j + 1);
    if (hooks.alternative) tr.append(hooks.alternative(di, ti, a));
    tb.append(tr);
  });
  if (!t.alternatives.some((a) => a.id === t.id)) tb.append(row(t, t.rank));
  tb.id = 'candidates';
  return tb;
}

// --- the panels: from the data, or (live app) from the server, once per token ---
function panels(di, ti) {
  const t = D.docs[di].tokens[ti];
  drawLens(t); drawAttention(di, ti); drawAttribution(di, ti);
  if (t.lens || !hooks.panels || t.asked) return;
  t.asked = true;
  hooks.panels(di, ti).then((r) => {
    Object.assign(t, r);
    if (cur && cur.di === di && cur.ti === ti) { drawLens(t); drawAttention(di, ti); }
  }, (e) => { t.asked = false; note('p-lens', 'error: ' + e.message); note('p-att', 'error: ' + e.message); });
}
function body(id) { const b = insp.querySelector('#' + id + ' .body'); b.replaceChildren(); return b; }
function note(id, text) { const b = insp.querySelector('#' + id + ' .body'); if (b) b.replaceChildren(el('div', 'muted', text)); }
function missing(t) {
  return hooks.panels ? 'computing\u2026' : t.lens === undefined && D.inspect.lens === false
    ? 'not in this report (sample.py --html_inspect=False)' : 'not kept in this page (see the note at the top)';
}
function drawLens(t) {
  const b = body('p-lens'), rows = D.inspect.rows;
  if (!t.lens || !rows) { b.append(el('div', 'muted', missing(t))); return; }
  const tb = el('table', 'bars lens'), hr = el('tr');
  hr.append(el('th', '', 'after'), el('th', '', 'its top token'), el('th', '', 'p of ' + label(t.text)),
    el('th', '', 'rank'));
  tb.append(hr);
  t.lens.forEach(([top, topP, lp, p, rank], r) => {
    const last = r === t.lens.length - 1, tr = el('tr', (last ? 'final' : '') + (top === t.text ? ' hit' : ''));
    const lab = el('td', 'lab', rows[r] + (last ? ' = the model' : '')), tt = el('td', 'lab');
    tt.append(el('span', 'tt', label(top)), ' ' + topP);
    tr.append(lab, tt, barCell(lp, p, ''), el('td', 'n', rank));
    tb.append(tr);
  });
  b.append(el('div', 'muted', 'each layer\u2019s residual stream read through ln_f and the unembedding, as ' +
    'the last one is; the last row is the model distribution (the token\u2019s own probability)'), tb);
}
// the query's weights (a flat [key, thousandths, ...] list) as a number per sequence position
function attValues(t, layer, h) {
  const row = t.att[layer][h + 1], v = [];
  for (let i = 0; i < row.length; i += 2) v[row[i]] = row[i + 1] / 1000;
  return v;
}
// [text, where, byte label or ''] of the context token at sequence position k: a byte piece of a joined
// character shows the character and which piece it is (its own label on hover)
function keyLabel(doc, k) {
  const P = doc.prompt_ids.length;
  let g = null, where, own;
  if (k >= P) {
    const t = k - P;
    g = Object.values(doc.groups || {}).find((x) => x[0] <= t && t < x[1]);
    where = 'token ' + (t + 1); own = doc.tokens[t].text;
    if (!g) return [label(own), where, ''];
    g = [g[0] + P, g[1] + P, g[2]];
  } else {
    g = (doc.prompt_pieces || []).find((x) => x[0] <= k && k < x[1]);
    where = 'prompt ' + (k + 1); own = '';
    if (!g) return ['#' + k, where, ''];
    if (g[1] - g[0] === 1) return [label(g[2]), where, ''];
  }
  return [label(g[2]), `${where}, byte piece ${k - g[0] + 1} of ${g[1] - g[0]}`, own];
}
function keyCell(doc, k) {
  const [text, where, own] = keyLabel(doc, k), lab = el('td', 'lab'), tt = el('span', 'tt', text);
  if (own) tt.title = label(own);
  lab.append(tt, ' ' + where);
  return lab;
}
function drawAttention(di, ti) {
  const doc = D.docs[di], t = doc.tokens[ti], b = body('p-att');
  if (!t.att) { b.append(el('div', 'muted', missing(t))); return; }
  const L = t.att.length, H = t.att[0].length - 1;
  if (attSel.layer === null || attSel.layer >= L) attSel.layer = L - 1;
  if (attSel.head >= H) attSel.head = -1;
  const ctl = clone('t-att-controls'), ls = ctl.querySelector('.layer'), hs = ctl.querySelector('.head');
  for (let l = 0; l < L; l++) ls.append(new Option('layer ' + l, l, false, l === attSel.layer));
  hs.append(new Option(`mean of the ${H} heads`, -1, false, attSel.head === -1));
  for (let h = 0; h < H; h++) hs.append(new Option('head ' + h, h, false, h === attSel.head));
  ls.addEventListener('change', () => { attSel.layer = +ls.value; drawAttention(di, ti); focusSel('.layer'); });
  hs.addEventListener('change', () => { attSel.head = +hs.value; drawAttention(di, ti); focusSel('.head'); });
  ctl.querySelector('button').addEventListener('click', (e) => { e.stopPropagation(); setMode('attention'); });
  const v = attValues(t, attSel.layer, attSel.head), P = doc.prompt_ids.length;
  const keys = v.map((w, k) => [w, k]).filter((x) => x[0] !== undefined).sort((a, c) => c[0] - a[0]).slice(0, 8);
  const tb = el('table', 'bars att');
  for (const [w, k] of keys) {
    const tr = el('tr');
    tr.append(keyCell(doc, k), shareCell(w, (w).toFixed(3)));
    tb.append(tr);
  }
  b.append(ctl, el('div', 'muted', `how the prediction of this token (made at ${ti + P} tokens of context) ` +
    'spreads its attention over them: Capture\u2019s weights, each head\u2019s summing to 1, rounded to 0.001 ' +
    '(smaller ones left out); the strongest:'), tb);
  if (mode === 'attention') shadeContext({ di, ti, kind: 'attention', values: v });
}
function focusSel(cls) { const s = insp.querySelector('#p-att ' + cls); if (s) s.focus(); }
function drawAttribution(di, ti) {
  const doc = D.docs[di], t = doc.tokens[ti], b = body('p-attr'), A = D.inspect.attribution;
  const a = t.attr || (t.attrs && (t.attrs[attrMethod] || t.attrs.ig || t.attrs.gxi));
  if (hooks.attribute) {  // the live app: computed on demand
    const ctl = clone('t-attr-buttons');
    for (const btn of ctl.querySelectorAll('button[data-method]')) {
      btn.addEventListener('click', (e) => { e.stopPropagation(); askAttribution(di, ti, btn.dataset.method); });
    }
    b.append(ctl);
  } else if (!a) {
    b.append(el('div', 'muted', A ? 'not computed for this token' : 'not in this report: sample.py ' +
      '--html_attribution=ig adds it (integrated gradients: backward passes for every token, its cost is printed)'));
    return;
  }
  if (!a) return;
  const scores = a.scores, most = Math.max(1e-12, ...scores.map(Math.abs));
  const order = scores.map((s, i) => [s, i + a.start]).sort((x, y) => Math.abs(y[0]) - Math.abs(x[0])).slice(0, 8);
  const rows = [['method', a.method_name + (a.method === 'ig' ? `, ${a.steps} steps` : '')],
    ['baseline', a.baseline || 'none (first-order: gradient \u00b7 embedding)'],
    ['log-prob of the token', a.logprob]];
  if (a.method === 'ig') {
    rows.push(['at the baseline', a.baseline_logprob], ['sum of the scores', a.total],
      ['completeness gap', a.gap + ' (sum \u2212 the difference of the two above)']);
  } else rows.push(['sum of the scores', a.total + ' (need not equal anything)']);
  const tb = el('table', 'bars attr');
  for (const [s, k] of order) {
    const tr = el('tr');
    tr.append(keyCell(doc, k), shareCell(s / most, String(s)));
    tb.append(tr);
  }
  const shadeBtn = el('button', 'alt', 'shade the text by it');
  shadeBtn.addEventListener('click', (e) => { e.stopPropagation(); setMode('attribution'); });
  b.append(facts(rows), el('div', 'muted', 'each earlier token\u2019s contribution to the token\u2019s log-prob, ' +
    'in nats (blue raised it, orange lowered it); the largest:'), tb, shadeBtn);
  if (mode === 'attribution') shadeContext({ di, ti, kind: 'attribution', scale: most, values: attrValues(a) });
}
let attrMethod = 'ig';
function attrValues(a) { const v = []; a.scores.forEach((s, i) => { v[a.start + i] = s; }); return v; }
function askAttribution(di, ti, method) {
  const t = D.docs[di].tokens[ti];
  attrMethod = method;
  note('p-attr', 'computing\u2026');
  hooks.attribute(di, ti, method).then((a) => {
    t.attrs = Object.assign(t.attrs || {}, { [method]: a });
    if (cur && cur.di === di && cur.ti === ti) {
      drawAttribution(di, ti);
      const b = insp.querySelector(`#p-attr button[data-method="${method}"]`); if (b) b.focus();
    }
  }, (e) => note('p-attr', 'error: ' + e.message));
}
// the shading of the inspected token's context, after the mode changed
function refreshContext() {
  if (!cur) return;
  if (mode === 'attention') drawAttention(cur.di, cur.ti);
  else if (mode === 'attribution') drawAttribution(cur.di, cur.ti);
}
inspectNothing();
