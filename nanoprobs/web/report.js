// nanoGPT-probs, the static report only (sample.py, eval.py, tools/gltr.py): draws the header, the table
// (eval's pairs, GLTR's texts) and every text of the page's data, with page.js's pieces.
'use strict';
function drawTable() {
  if (!D.table) return;
  const sec = el('section');
  if (D.summary) sec.append(facts(D.summary, 'totals'));
  const tb = el('table', 'pairs'), tr = el('tr');
  for (const h of D.table.head) tr.append(el('th', '', h));
  const thead = el('thead'); thead.append(tr); tb.append(thead);
  const body = el('tbody');
  D.table.rows.forEach((row, i) => {
    const r = el('tr');
    row.forEach((c, j) => {
      const text = (D.table.text || [1, 2]).includes(j);  // texts: cut to one line, whole in the title
      const td = el('td', text ? 'txt' : 'n');
      if (j === 0) {  // the pair's number links to its text
        const a = el('a', '', c);
        a.href = '#doc-' + (i + 1);
        td.append(a);
      } else td.textContent = c;
      if (text) td.title = c;
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

main.replaceChildren();
drawHead('');
drawTable();
D.docs.forEach((doc, di) => drawDoc(doc, di));
document.body.dataset.ready = '1';  // for tests: the page is drawn and interactive
