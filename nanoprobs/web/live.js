// nanoGPT-probs, the live app only (serve.py): the form, and its calls to serve.py's JSON API: generate
// (streamed, one JSON object per line), score a fixed response or a whole text (GLTR), branch from an
// alternative, compare temperatures at a step, and the inspector's panels on demand (inspect, attribute).
// Draws with page.js's pieces; the messages' shape is described in html_report.py.
'use strict';
let ctrl = null;  // aborts the generation in flight (Stop)
const form = clone('t-live');
const docs = el('div');  // the texts, newest first
docs.id = 'docs';
const input = (id) => form.querySelector('#' + id);

function say(msg, err) {
  const s = form.querySelector('.status');
  s.textContent = msg;
  s.className = 'status' + (err ? ' err' : '');
}
function settingsFromForm() {
  const v = (id) => input(id).value.trim();
  return { temperature: Number(v('temperature')), top_k: v('top_k') === '' ? null : Number(v('top_k')),
    top_p: Number(v('top_p')), max_new_tokens: Number(v('max_new_tokens')), seed: Number(v('seed')) };
}
function busy(on) {
  input('generate').disabled = on; input('score').disabled = on; input('stop').disabled = !on;
  input('score_text').disabled = on || D.eot === null || D.eot === undefined;
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
// each line of the stream is one message: {start: doc's prompt}, {token: token}, {done: totals}, {error}
async function generate(body, title) {
  unchoose(); busy(true); ctrl = new AbortController();
  let doc = null, di = -1, text = null, n = 0;
  const t0 = performance.now();
  say('generating\u2026');
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
          text = drawDoc(doc, di, docs).querySelector('.text');
        } else if (m.token) {
          doc.tokens.push(m.token);
          const s = tokenSpan(m.token, di, doc.tokens.length - 1);
          if (doc.tokens.length === 1) s.tabIndex = 0;
          text.append(s); n++;
          say(`generating\u2026 ${n} tokens`);
        } else if (m.done) {
          doc.totals = m.done.totals;
          doc.el.querySelector('.totals').replaceWith(facts(doc.totals, 'totals'));
          doc.joined = m.done.joined; doc.gltr = m.done.gltr;  // characters split across tokens, GLTR
          joinAll(doc, di, text);
          if (doc.gltr) doc.el.append(gltrBox(doc.gltr));
          say(`${doc.tokens.length} tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        }
      }
    }
  } catch (e) {
    if (e.name === 'AbortError') say(`stopped after ${n} tokens`);
    else say('error: ' + e.message, true);
  } finally { busy(false); ctrl = null; }
}
function branch(di, ti, alt) {
  const doc = D.docs[di];
  const prefix = doc.tokens.slice(0, ti).map((t) => t.id).concat([alt.id]);
  generate(Object.assign(settingsFromForm(), { prompt_ids: doc.prompt_ids, prefix_ids: prefix }),
    `branch of \u201c${doc.title}\u201d at token ${ti + 1}: ${label(alt.text)}`);
}
// Score: the response after the prompt; Score text: the prompt box's whole text after <|endoftext|>, as GLTR does
async function score(whole) {
  unchoose(); busy(true); say('scoring\u2026');
  try {
    const st = settingsFromForm();
    const body = whole ? { prompt_ids: [D.eot], response: input('prompt').value }
      : { prompt: input('prompt').value, response: input('response').value };
    const r = await post('/api/score', Object.assign(body, { temperature: st.temperature, top_k: st.top_k,
      top_p: st.top_p }));
    const doc = (await r.json()).doc;
    doc.title = whole ? 'whole text, scored after <|endoftext|>' : 'scored response'; D.docs.push(doc);
    drawDoc(doc, D.docs.length - 1, docs);
    say(`scored ${doc.tokens.length} tokens`);
  } catch (e) { say('error: ' + e.message, true); } finally { busy(false); }
}
// the step's next-token distribution under several temperatures, drawn into the inspector's box
async function temperatures(di, ti, box) {
  const doc = D.docs[di], st = settingsFromForm();
  box.replaceChildren(el('span', 'muted', 'computing\u2026'));
  try {
    const ids = doc.prompt_ids.concat(doc.tokens.slice(0, ti).map((t) => t.id));
    const body = { ids, temperatures: [0, 0.5, 1, 1.5, 2], top_k: st.top_k, top_p: st.top_p };
    const r = await (await post('/api/temperatures', body)).json();
    const tb = el('table', 'bars'), hr = el('tr');
    hr.append(el('th', '', 'token'));
    for (const c of r.columns) hr.append(el('th', '', c.name));
    tb.append(hr);
    r.tokens.forEach((t, j) => {
      const tr = el('tr', t.id === doc.tokens[ti].id ? 'chosen' : ''), lab = el('td', 'lab');
      lab.append(el('span', 'tt', label(t.text))); tr.append(lab);
      for (const c of r.columns) {
        const td = barCell(c.logprobs[j], c.probs[j], 's');
        td.style.width = 'auto';
        tr.append(td);
      }
      tb.append(tr);
    });
    const er = el('tr');
    er.append(el('td', 'lab muted', 'entropy'));
    for (const c of r.columns) er.append(el('td', 'muted', c.entropy));
    tb.append(er);
    box.replaceChildren(el('div', 'muted', r.title), tb);
  } catch (e) { box.replaceChildren(el('span', 'status err', 'error: ' + e.message)); }
}

// the inspector's additions: continue from an alternative, compare temperatures
hooks.alternative = (di, ti, alt) => {
  const td = clone('t-alt-button'), b = td.querySelector('button');
  b.textContent = alt.id === D.docs[di].tokens[ti].id ? 'regenerate' : 'use this';
  b.dataset.id = alt.id;
  b.addEventListener('click', (e) => { e.stopPropagation(); branch(di, ti, alt); });
  return td;
};
hooks.extras = (di, ti) => {
  const box = clone('t-temps-box');
  box.querySelector('button').addEventListener('click', (e) => { e.stopPropagation(); temperatures(di, ti, box); });
  return box;
};

// the inspector's panels, computed by the server for the chosen token: the doc's ids up to it, and its position
function upTo(doc, ti) {
  const j = doc.prompt_ids.length + ti;
  return { ids: doc.prompt_ids.concat(doc.tokens.slice(0, ti + 1).map((t) => t.id)), position: j };
}
hooks.panels = async (di, ti) => {
  const r = await (await post('/api/inspect', upTo(D.docs[di], ti))).json();
  D.inspect.rows = r.rows;
  return { lens: r.lens, att: r.att };
};
hooks.attribute = async (di, ti, method) =>
  (await post('/api/attribute', Object.assign(upTo(D.docs[di], ti), { method }))).json();

function drawForm() {
  const dft = D.defaults || {}, lim = D.limits || {};
  input('prompt').value = dft.start || '';
  input('prompt').maxLength = lim.max_prompt_chars || 20000;
  for (const id of ['temperature', 'top_k', 'top_p', 'max_new_tokens', 'seed']) {
    input(id).value = dft[id] === null || dft[id] === undefined ? '' : dft[id];
  }
  form.querySelector('.max-new').textContent = lim.max_new_tokens;
  input('generate').addEventListener('click',
    () => generate(Object.assign(settingsFromForm(), { prompt: input('prompt').value }), 'generated'));
  input('stop').addEventListener('click', () => { if (ctrl) ctrl.abort(); });
  input('score').addEventListener('click', () => score(false));
  input('score_text').addEventListener('click', () => score(true));
  if (D.eot === null || D.eot === undefined) {
    input('score_text').disabled = true;
    input('score_text').title = 'this vocabulary has no <|endoftext|> to score a whole text after';
  }
  main.append(form, docs);
}

main.replaceChildren();
drawHead(' Click an alternative to continue the text from it.');
drawForm();
dock();
document.body.dataset.ready = '1';  // for tests: the page is drawn and interactive
