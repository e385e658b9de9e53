// nanoGPT-probs, shared by the report and the live app: the texts of the page's JSON data, token by token,
// and the popover of a token's alternatives. The data's shape is described in html_report.py.
// Every number shown comes from the data (computed in Python); JavaScript only picks colours and bar
// lengths from the log-probs. Model text is untrusted: it only ever goes into textContent.
// report.js or live.js runs after this script and draws the page.
'use strict';
const D = JSON.parse(document.getElementById('report-data').textContent);
const pop = document.getElementById('pop');
const main = document.getElementById('main');
const head = document.getElementById('head');
// the live app's additions to a popover (live.js sets them): a button per alternative, and a box below
const hooks = { alternative: null, popover: null };
let mode = D.compare ? 'change' : 'prob';  // what the shading shows: 'prob' | 'rank' | 'change'
let pinned = null;  // the token element whose popover stays open (clicked)
let shown = null;  // the token element whose popover is shown

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
// a copy of report.html's <template id="name">
function clone(name) {
  return document.getElementById(name).content.firstElementChild.cloneNode(true);
}
// a token's text for labels: visible spaces, newlines and tabs
function label(t) {
  return t.replace(/ /g, '\u2423').replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5').replace(/\r/g, '\u240d');
}

// --- colours (display only) ---
// the probability scale, shared with the PNG charts: web/scale.json, inlined by html_report.py
const SCALE = JSON.parse(document.getElementById('scale-data').textContent);
const PROB_EDGES = SCALE.edges;  // 8 buckets of probability
const PROB_NAMES = SCALE.names;
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
    if (t.change === undefined) return '';  // the two runs tokenized this pair differently
    return t.change === null ? 'c-d3' : 'c-d' + bucket(t.change, DELTA_EDGES);
  }
  return t.logprob === null ? 'c-none' : 'c-p' + bucket(Math.exp(t.logprob), PROB_EDGES);
}

// --- header (report.html's markup): title, settings, shading toggle, legend ---
function drawHead(hint) {
  head.querySelector('h1').textContent = D.title;
  const dist = head.querySelector('.dist');
  if (D.sampling) dist.textContent = 'sampling distribution: ' + D.sampling +
    ' · model distribution: T=1, no top-k/top-p (what the model believes)';
  else dist.remove();
  for (const [k, v] of D.settings || []) {
    const li = el('li');
    li.append(el('b', '', k + ' '), v);
    head.querySelector('.settings').append(li);
  }
  const modes = [['prob', 'probability'], ['rank', 'rank (top 10 / 100 / 1000)']];
  if (D.compare) modes.push(['change', 'change in log-prob']);
  for (const [m, name] of modes) {
    const lab = clone('t-mode'), r = lab.querySelector('input');
    r.value = m; r.id = 'mode-' + m; r.checked = m === mode;
    r.addEventListener('change', () => { mode = m; drawLegend(); recolour(); });
    lab.append(' ' + name + '  ');
    head.querySelector('.modes').append(lab);
  }
  head.querySelector('.hint').append(hint);
  head.hidden = false;
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
  if (t.text.includes('\n')) s.textContent = t.text.replace(/\n/g, '\u21b5\n');  // a visible mark, then the break
  else if (t.text.trim() === '') s.textContent = t.text.replace(/ /g, '\u00b7');
  else s.textContent = t.text;
  return s;
}
function facts(pairs, cls) {
  const dl = el('dl', cls || 'facts');
  for (const [k, v] of pairs) {
    if (v !== undefined && v !== null) dl.append(el('dt', '', k), el('dd', '', v));
  }
  return dl;
}
function drawDoc(doc, di, where) {
  const sec = clone('t-doc');
  sec.id = 'doc-' + (di + 1);
  sec.querySelector('h2').textContent = doc.title;
  const text = sec.querySelector('.text');
  text.querySelector('.prompt').textContent = doc.prompt;
  doc.tokens.forEach((t, ti) => text.append(tokenSpan(t, di, ti)));
  const first = text.querySelector('.tk'); if (first) first.tabIndex = 0;
  sec.append(facts(doc.totals || [], 'totals'));  // (a streamed text's are replaced when it is done)
  if (where) where.prepend(sec); else main.append(sec);
  doc.el = sec;
  return sec;
}

// --- popover ---
function barCell(lp, text, cls) {
  const td = clone('t-bar'), f = td.querySelector('.bf');
  if (cls) f.classList.add(cls);
  f.style.width = (lp === null ? 0 : Math.max(0.5, 100 * Math.exp(lp))) + '%';
  td.querySelector('.bt').textContent = text;
  return td;
}
function showPop(s, pin) {
  const di = +s.dataset.d, ti = +s.dataset.t, doc = D.docs[di], t = doc.tokens[ti];
  if (pinned && pinned !== s) pinned.classList.remove('sel');
  pinned = pin ? s : (pinned === s ? s : null);
  if (pinned) s.classList.add('sel');
  const title = clone('t-ptitle');
  title.querySelector('.what').textContent = doc.forced ? 'forced token ' : 'token ';
  title.querySelector('.ptok').textContent = label(t.text);
  title.querySelector('.where').textContent = ` · position ${ti + 1} of ${doc.tokens.length}`;
  pop.replaceChildren(title);
  const both = !doc.model_only;  // beams: the model distribution only (beam search does not sample)
  const rows = [['probability (model distribution)', t.prob]];
  if (t.sample_prob !== undefined) rows.push(['probability (sampling distribution)', t.sample_prob]);
  rows.push(['rank under the model', t.rank]);
  rows.push(both ? ['entropy (model / sampling)', t.entropy ? t.entropy + ' / ' + t.sample_entropy : null]
    : ['entropy', t.entropy]);
  if (t.expected !== undefined) rows.push(['the model\u2019s most likely token here', label(t.expected)]);
  if (t.before_prob !== undefined) {
    rows.push(['before: probability, rank', `${t.before_prob}, rank ${t.before_rank}`],
              ['after: probability, rank', `${t.prob}, rank ${t.rank}`],
              ['change', t.change_ratio + (t.change_nats ? ` (${t.change_nats})` : '')]);
  }
  pop.append(facts(rows));
  if (t.alternatives) pop.append(alternativesTable(t, di, ti, both));
  if (hooks.popover) pop.append(hooks.popover(di, ti));
  pop.hidden = false;
  shown = s;
  place(s);
}
function alternativesTable(t, di, ti, both) {
  const tb = el('table', 'bars'), hr = el('tr');
  hr.append(el('th', '', 'top ' + t.alternatives.length), el('th', '', 'model distribution'));
  if (both) hr.append(el('th', '', 'sampling distribution'));
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
  return tb;
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

// --- mouse and keyboard ---
// after Escape, hovering opens a popover again only once the mouse moves: the token that the closed
// popover uncovers under a still pointer gets a mouseover, which must not undo the Escape
let escaped = false;
const tokenOf = (e) => e.target.closest && e.target.closest('.tk');
main.addEventListener('mousemove', () => { escaped = false; });
main.addEventListener('mouseover', (e) => {
  const s = tokenOf(e);
  if (s && !pinned && !escaped) showPop(s, false);
});
main.addEventListener('mouseout', (e) => {
  const s = tokenOf(e);
  if (s && !pinned && !(e.relatedTarget && pop.contains(e.relatedTarget))) pop.hidden = true;
});
main.addEventListener('click', (e) => {
  const s = tokenOf(e);
  if (s) { s.focus({ preventScroll: true }); showPop(s, true); }
});
main.addEventListener('focusin', (e) => {
  const s = tokenOf(e);
  if (!s) return;
  // roving tabindex: Tab enters a text at the token last visited, arrows move inside it
  for (const o of s.parentNode.querySelectorAll('.tk[tabindex="0"]')) o.tabIndex = -1;
  s.tabIndex = 0;
  showPop(s, false);
});
main.addEventListener('keydown', (e) => {
  const s = tokenOf(e);
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
    if (b) b.focus();
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
  if (!pop.hidden && !pop.contains(e.target) && !tokenOf(e)) hidePop();
});
window.addEventListener('scroll', () => { if (!pop.hidden && shown) place(shown); }, { passive: true });
