// nanoGPT-probs, shared by the report and the live app: the texts of the page's JSON data, token by token,
// their shading, and choosing a token (mouse and keyboard) for the docked inspector (inspector.js).
// The data's shape is described in html_report.py. Every number shown comes from the data (computed in
// Python); JavaScript only picks colours and bar lengths. Model text is untrusted: it only ever goes into
// textContent. inspector.js, then report.js or live.js run after this script.
'use strict';
const D = JSON.parse(document.getElementById('report-data').textContent);
const main = document.getElementById('main');
const head = document.getElementById('head');
// the live app's additions (live.js sets them): a button per alternative, a box below the candidates, and
// the panels computed on demand (the static report carries them in its data)
const hooks = { alternative: null, extras: null, panels: null, attribute: null };
let mode = D.mode || (D.compare ? 'change' : 'prob');  // what the shading shows: prob | rank | change | attention | attribution
let pinned = null;  // the token element chosen by a click or Enter (it stays until Escape)
let shown = null;  // the token element the inspector shows

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
// a token's text for labels: visible spaces, newlines and tabs (not inside a byte label such as <E2 80>,
// whose spaces are not the token's: formatting.BYTE_LABEL)
const BYTE_LABEL = /(<(?:[0-9A-F]{2}(?: [0-9A-F]{2})*|id \d+)>)/;
function label(t) {
  return t.split(BYTE_LABEL).map((p, i) => (i % 2 ? p : p.replace(/ /g, '\u2423'))).join('')
    .replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5').replace(/\r/g, '\u240d');
}

// --- colours (display only) ---
// the probability scale, shared with the PNG charts: web/scale.json, inlined by html_report.py
const SCALE = JSON.parse(document.getElementById('scale-data').textContent);  // {edges, names}: 8 buckets
const RANK_NAMES = ['top 10', 'top 100', 'top 1000', 'beyond'];
const DELTA_EDGES = [-2, -0.5, -0.1, 0.1, 0.5, 2];  // nats, 7 buckets
const DELTA_NAMES = ['fell > 2 nats', '0.5–2', '0.1–0.5', 'about the same', '0.1–0.5', '0.5–2',
  'rose > 2 nats'];
const ATT_EDGES = [0.01, 0.05, 0.1, 0.2, 0.4];  // attention weight, 6 buckets
const ATT_NAMES = ['< 0.01', '0.01–0.05', '0.05–0.1', '0.1–0.2', '0.2–0.4', '≥ 0.4'];
const ATTR_EDGES = [-0.6, -0.3, -0.1, 0.1, 0.3, 0.6];  // attribution / the largest |score| of the context
const ATTR_NAMES = ['lowered it most', '', '', 'little', '', '', 'raised it most'];
function bucket(x, edges) { let i = 0; while (i < edges.length && x >= edges[i]) i++; return i; }
function probClass(lp) { return lp === null ? 'c-none' : 'c-p' + bucket(Math.exp(lp), SCALE.edges); }
function shade(t, g) {
  if (mode === 'rank') {
    if (t.rank === undefined) return 'c-none';
    return 'c-r' + (t.rank <= 10 ? 1 : t.rank <= 100 ? 2 : t.rank <= 1000 ? 3 : 4);
  }
  if (mode === 'change') {
    if (t.change === undefined) return '';  // the two runs tokenized this pair differently
    return t.change === null ? 'c-d3' : 'c-d' + bucket(t.change, DELTA_EDGES);
  }
  if (mode === 'prob') return probClass(g ? g[3] : t.logprob);  // a joined character: its pieces' product
  return '';  // attention, attribution: shadeContext colours the inspected token's context
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
  const I = D.inspect || {};
  if (I.live || I.attention) modes.push(['attention', 'attention of the inspected token']);
  if (I.live || I.attribution) modes.push(['attribution', 'attribution of the inspected token']);
  for (const [m, name] of modes) {
    const lab = clone('t-mode'), r = lab.querySelector('input');
    r.value = m; r.id = 'mode-' + m; r.checked = m === mode;
    r.addEventListener('change', () => setMode(m));
    lab.append(' ' + name + '  ');
    head.querySelector('.modes').append(lab);
  }
  head.querySelector('.hint').append(hint);
  for (const n of I.notes || []) head.querySelector('.hint').append(el('div', 'muted', 'Note: ' + n + '.'));
  head.hidden = false;
  drawLegend();
}
function setMode(m) {
  mode = m;
  const r = document.getElementById('mode-' + m);
  if (r) r.checked = true;
  drawLegend(); recolour();
  if (shown && (m === 'attention' || m === 'attribution')) refreshContext();
}
function drawLegend() {
  const lg = head.querySelector('.legend'); lg.replaceChildren();
  const spec = {
    prob: ['probability (model): ', SCALE.names, 'c-p', 0], rank: ['rank under the model: ', RANK_NAMES, 'c-r', 1],
    change: ['log-prob after vs before: ', DELTA_NAMES, 'c-d', 0],
    attention: ['attention weight from the inspected token: ', ATT_NAMES, 'c-a', 0],
    attribution: ['contribution to the inspected token\u2019s log-prob: ', ATTR_NAMES, 'c-d', 0] }[mode];
  lg.append(el('span', 'muted', spec[0]));
  spec[1].forEach((n, i) => lg.append(el('span', 'sw ' + spec[2] + (i + spec[3]), n || '\u2007')));
}
function recolour() {
  for (const s of main.querySelectorAll('.tk')) s.className = tokenClass(s);
  for (const s of main.querySelectorAll('.pt')) s.className = 'pt';
}
function tokenClass(s) {
  const doc = D.docs[+s.dataset.d], ti = +s.dataset.t;
  return 'tk ' + shade(doc.tokens[ti], doc.groups && doc.groups[ti]) + (s === pinned ? ' sel' : '') +
    (s === shown ? ' cur' : '') + (s.dataset.n ? ' joined' : '');
}

// --- texts ---
function tokenSpan(t, di, ti) {
  const s = el('span', 'tk ' + shade(t));
  s.dataset.d = di; s.dataset.t = ti; s.dataset.ids = t.id; s.tabIndex = -1;
  s.textContent = shownText(t.text);
  return s;
}
function shownText(text) {
  if (text.includes('\n')) return text.replace(/\n/g, '\u21b5\n');  // a visible mark, then the break
  if (text.trim() === '') return text.replace(/ /g, '\u00b7');
  return text;
}
// runs of tokens that together form whole characters (doc.joined) are one element showing the characters;
// the inspector lists their byte pieces
function joinGroup(doc, di, g, text) {
  const [a, b, chars] = g, first = text.querySelector(`.tk[data-t="${a}"]`);
  if (!first) return;
  for (let k = a + 1; k < b; k++) { const o = text.querySelector(`.tk[data-t="${k}"]`); if (o) o.remove(); }
  first.textContent = shownText(chars);
  first.dataset.n = b - a;
  first.dataset.ids = doc.tokens.slice(a, b).map((t) => t.id).join(',');
  first.title = chars + ' = ' + doc.tokens.slice(a, b).map((t) => t.text).join(' + ') + ` (${b - a} tokens)`;
  doc.groups = doc.groups || {};
  doc.groups[a] = g;
  first.className = tokenClass(first);
}
function facts(pairs, cls) {
  const dl = el('dl', cls || 'facts');
  for (const [k, v] of pairs) {
    if (v !== undefined && v !== null) dl.append(el('dt', '', k), el('dd', '', v));
  }
  return dl;
}
function drawPrompt(doc, text) {
  const p = text.querySelector('.prompt');
  if (!doc.prompt_pieces) { p.textContent = doc.prompt; return; }
  p.replaceChildren();
  for (const [a, b, t] of doc.prompt_pieces) {
    const s = el('span', 'pt', shownText(t));
    s.dataset.k = a; s.dataset.n = b - a;
    p.append(s);
  }
}
function drawDoc(doc, di, where) {
  const sec = clone('t-doc');
  sec.id = 'doc-' + (di + 1);
  sec.querySelector('h2').textContent = doc.title;
  const text = sec.querySelector('.text');
  drawPrompt(doc, text);
  doc.tokens.forEach((t, ti) => text.append(tokenSpan(t, di, ti)));
  joinAll(doc, di, text);
  const first = text.querySelector('.tk'); if (first) first.tabIndex = 0;
  sec.append(facts(doc.totals || [], 'totals'));  // (a streamed text's are replaced when it is done)
  if (doc.gltr) sec.append(gltrBox(doc.gltr));
  if (where) where.prepend(sec); else main.append(sec);
  doc.el = sec;
  return sec;
}
function joinAll(doc, di, text) { for (const g of doc.joined || []) joinGroup(doc, di, g, text); }
// the GLTR summary of a text: shares of its tokens by rank, and a histogram of their probability
function gltrBox(g) {
  const box = el('div', 'gltr'), ranks = el('div', 'gbar');
  ranks.title = 'share of tokens by rank under the model';
  g.ranks.forEach(([name, n, share], i) => {
    const seg = el('span', 'c-r' + (i + 1));
    seg.style.flexGrow = n;
    if (n) ranks.append(seg);
  });
  const rl = el('div', 'glist');
  g.ranks.forEach(([name, n, share], i) => {
    const it = el('span'); it.append(el('span', 'sw c-r' + (i + 1), name), ` ${share} (${n})`); rl.append(it);
  });
  const most = Math.max(1, ...g.histogram.map((h) => h[1])), hist = el('div', 'ghist');
  g.histogram.forEach(([name, n], i) => {
    const col = el('div', 'gcol'), bar = el('div', 'gfill c-p' + i);
    bar.style.height = (100 * n / most) + '%';
    col.title = `p ${name}: ${n} tokens`;
    col.append(bar, el('div', 'gn', n));
    hist.append(col);
  });
  box.append(el('div', 'muted', `GLTR view: ${g.tokens} tokens by rank, and by probability (model distribution)`),
    ranks, rl, hist, el('div', 'muted gaxis', `${SCALE.names[0]}  \u2192  ${SCALE.names[SCALE.names.length - 1]}`));
  return box;
}

// --- the inspected token's context: shaded by its attention or its attribution (inspector.js sets it) ---
let context = null;  // {di, ti, values: number per sequence position, kind: 'attention' | 'attribution', scale}
function keyElements(doc) {
  // [start, end, element] of every prompt piece and response token of doc, in sequence positions
  const P = doc.prompt_ids.length, out = [];
  for (const s of doc.el.querySelectorAll('.pt')) out.push([+s.dataset.k, +s.dataset.k + +s.dataset.n, s]);
  for (const s of doc.el.querySelectorAll('.tk')) {
    const t = +s.dataset.t; out.push([P + t, P + t + (+s.dataset.n || 1), s]);
  }
  return out;
}
function shadeContext(c) {
  if (context) clearContext();
  context = c;
  if (!c || mode !== c.kind) return;
  const doc = D.docs[c.di], end = doc.prompt_ids.length + c.ti;
  for (const [a, b, s] of keyElements(doc)) {
    if (a >= end) continue;
    let v = 0;
    for (let k = a; k < Math.min(b, end); k++) v += c.values[k] || 0;  // a joined character: the sum of its pieces
    const cls = c.kind === 'attention' ? 'c-a' + bucket(v, ATT_EDGES)
      : 'c-d' + bucket(c.scale > 0 ? v / c.scale : 0, ATTR_EDGES);
    s.classList.add(cls, 'ctx');
  }
}
function clearContext() {
  if (!context) return;
  const doc = D.docs[context.di];
  if (doc && doc.el) for (const [, , s] of keyElements(doc)) {
    if (s.classList.contains('tk')) s.className = tokenClass(s);
    else s.className = 'pt';
  }
  context = null;
}

// --- choosing a token: mouse and keyboard ---
// after Escape, hovering shows a token again only once the mouse moves
let escaped = false;
const tokenOf = (e) => e.target.closest && e.target.closest('.tk');
function choose(s, pin) {
  if (pinned && pinned !== s) pinned.classList.remove('sel');
  if (shown && shown !== s) shown.classList.remove('cur');
  pinned = pin ? s : (pinned === s ? s : null);
  if (pinned) s.classList.add('sel');
  shown = s; s.classList.add('cur');
  inspect(+s.dataset.d, +s.dataset.t);
}
function unchoose() {
  if (pinned) pinned.classList.remove('sel');
  if (shown) shown.classList.remove('cur');
  pinned = null; shown = null;
  clearContext();
  inspectNothing();
}
main.addEventListener('mousemove', () => { escaped = false; });
main.addEventListener('mouseover', (e) => {
  const s = tokenOf(e);
  if (s && !pinned && !escaped && s !== shown) choose(s, false);
});
main.addEventListener('click', (e) => {
  const s = tokenOf(e);
  if (s) { s.focus({ preventScroll: true }); choose(s, true); }
});
main.addEventListener('focusin', (e) => {
  const s = tokenOf(e);
  if (!s) return;
  // roving tabindex: Tab enters a text at the token last visited, arrows move inside it
  for (const o of s.parentNode.querySelectorAll('.tk[tabindex="0"]')) o.tabIndex = -1;
  s.tabIndex = 0;
  if (s !== shown || !pinned) choose(s, pinned !== null);
  keepVisible(s);
});
main.addEventListener('keydown', (e) => {
  const s = tokenOf(e);
  if (!s) return;
  let n = null;
  if (e.key === 'ArrowRight') n = s.nextElementSibling;
  else if (e.key === 'ArrowLeft') n = s.previousElementSibling;
  else if (e.key === 'Home') n = s.parentNode.querySelector('.tk');
  else if (e.key === 'End') n = s.parentNode.lastElementChild;
  else if (e.key === 'Enter' || e.key === ' ') {  // pin it, and move into the inspector's controls
    e.preventDefault();
    choose(s, true);
    const b = insp.querySelector('button, select');
    if (b) b.focus();
    return;
  }
  if (n && n.classList.contains('tk')) { e.preventDefault(); n.focus({ preventScroll: true }); }
});
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || !shown) return;
  const back = pinned || (insp.contains(document.activeElement) ? shown : null);
  unchoose(); escaped = true;
  if (back) back.focus({ preventScroll: true });
});
// on a narrow window the inspector is a sheet at the bottom: it starts below the live app's form while the
// form is on the screen, so it never covers it (with no room below the form it waits, folded, until the
// page scrolls; choosing a token scrolls it into sight, which makes the room)
const NARROW = window.matchMedia('(max-width: 999px)'), SHEET = 0.44;  // the sheet's largest share (report.css: --insp-h)
function dock() {
  const form = document.querySelector('.live');
  if (!NARROW.matches || !form) { insp.style.height = ''; insp.classList.remove('folded'); return; }
  const vh = document.documentElement.clientHeight, bottom = form.getBoundingClientRect().bottom;
  const h = Math.round(Math.min(SHEET * vh, vh - Math.max(bottom, 0) - 8));
  insp.classList.toggle('folded', h < 60);
  insp.style.height = Math.max(h, 0) + 'px';
}
window.addEventListener('scroll', dock, { passive: true });
window.addEventListener('resize', dock);
// the inspected token stays in sight: above the inspector when it is docked at the bottom (narrow windows).
// In the live app the sheet grows as the form scrolls away, so the token goes above the sheet's largest size.
function keepVisible(s) {
  const r = s.getBoundingClientRect(), vh = document.documentElement.clientHeight;
  const bottom = NARROW.matches ? Math.min(insp.getBoundingClientRect().top, (1 - SHEET) * vh) : vh;
  if (r.bottom > bottom - 8) window.scrollBy(0, r.bottom - bottom + 24);
  else if (r.top < 8) window.scrollBy(0, r.top - 24);
}
