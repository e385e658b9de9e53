"""The report and the live app in a real browser: Playwright driving Debian's Chromium.

The docked inspector shows the Python numbers (candidates, logit lens, attention, attribution), keyboard
navigation reaches every panel, it never covers the form or the inspected token (wide and narrow windows),
characters split across tokens are joined, GLTR's summary, no network request, injected markup stays text;
the live app generates greedy text equal to generate(), branches from an alternative, computes the panels
on demand, and stops. One browser for the whole module.
SCREENSHOTS_DIR=results/examples python -m pytest tests/test_browser.py  also writes report_*.png there;
with SCREENSHOTS_MODEL=<a train.py out_dir> the report and app tests use that model (readable text for the docs)."""
import contextlib
import math
import os
import time
import types

import pytest
import torch

from nanoprobs import html_report, inspector
import serve
from conftest import tiny_model
from nanoprobs.decoding import Sample, generate, score
from nanoprobs.attribution import attribute
from nanoprobs.formatting import BYTE_LABEL, format_prob
from nanoprobs.gltr import score_text
from nanoprobs.server import Engine, serve_in_thread

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--no-first-run']
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
pytestmark = [pytest.mark.skipif(sync_playwright is None or not os.path.exists(CHROMIUM),
                                 reason="browser tests need Chromium and Playwright: apt-get install -y chromium "
                                        "&& pip install playwright (never `playwright install`)"),
              pytest.mark.usefixtures('one_thread')]  # see conftest.one_thread
INJ = '</script><img src=x onerror="window.__pwned=1">"\'&'
SHOTS = os.environ.get('SCREENSHOTS_DIR')
SHOTS_MODEL = os.environ.get('SCREENSHOTS_MODEL')
PROMPT = "Once upon a time, the “little” fox"  # the curly quotes are two tokens each in GPT-2's BPE


@pytest.fixture(scope='module')
def lm():
    """The model the report and app tests run: a tiny random one, or SCREENSHOTS_MODEL's checkpoint."""
    if not SHOTS_MODEL:
        return tiny_model()
    from nanoprobs import load
    return load.load_model('resume', SHOTS_MODEL, 'cpu', 'float32').model


def label(t):
    """A token as the inspector labels it (visible whitespace, except inside a byte label like <E2 80>)."""
    t = ''.join(p if i % 2 else p.replace(' ', '\u2423') for i, p in enumerate(BYTE_LABEL.split(t)))
    return t.replace('\n', '\u21b5').replace('\t', '\u21e5').replace('\r', '\u240d')


@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # a fresh temporary profile every launch
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page that records every request it makes and every script error."""
    ctx = browser.new_context(viewport={'width': 1400, 'height': 800})
    pg = ctx.new_page()
    pg.requests, pg.errors = [], []
    pg.on('request', lambda r: pg.requests.append(r.url))
    pg.on('pageerror', lambda e: pg.errors.append(str(e)))
    pg.on('console', lambda m: pg.errors.append(m.text) if m.type == 'error' else None)
    yield pg
    ctx.close()


def shot(pg, name, selector=None):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        (pg.locator(selector) if selector else pg).screenshot(path=os.path.join(SHOTS, name))


def show_panel(pg, panel):
    """The page at its top, the inspector scrolled to the panel (for a screenshot)."""
    pg.evaluate('window.scrollTo(0, 0)')
    pg.eval_on_selector('#inspector', f'e => {{ e.scrollTop = e.querySelector("{panel}").offsetTop - 60; }}')


def candidates(pg):
    """(label, model probability text) of each row of the inspector's candidates."""
    rows = pg.locator('#candidates tr').all()[1:]
    return [(r.locator('.tt').inner_text(), r.locator('.bt').first.inner_text()) for r in rows]


def fact(pg, name, where='#inspector'):
    return pg.locator(f'{where} .facts dt:text-is("{name}") + dd').first.inner_text()


def open_report(page, path):
    url = 'file://' + os.path.abspath(path)
    page.goto(url)
    page.wait_for_selector('body[data-ready]')
    return url


def apart(pg, a, b):
    """The boxes of the elements a and b (selectors) do not overlap on the screen."""
    r, s = pg.locator(a).first.bounding_box(), pg.locator(b).bounding_box()
    return r['x'] + r['width'] <= s['x'] or s['x'] + s['width'] <= r['x'] or \
        r['y'] + r['height'] <= s['y'] or s['y'] + s['height'] <= r['y']


def test_report_inspector_candidates_and_keyboard(page, tmp_path, gpt2_tok, lm):
    prompt = gpt2_tok.encode("Once upon a time")
    samples = generate(lm, torch.tensor([prompt] * 2), 15, temperature=0.8, top_k=50, details=6,
                       generator=torch.Generator().manual_seed(0))
    path = html_report.sample_html(samples, gpt2_tok, tmp_path, dict(temperature=0.8, top_k=50, top_p=1.0))
    url = open_report(page, path)
    s, st = samples[0], samples[0].steps
    t3 = page.locator('.tk[data-d="0"][data-t="3"]')
    t3.hover()
    top = candidates(page)
    assert top[0] == (label(gpt2_tok.token_text(st[3].top_ids[0])), format_prob(st[3].top_logprobs[0]))
    assert [p for _, p in top][:6] == [format_prob(x) for x in st[3].top_logprobs]
    assert fact(page, 'probability (model distribution)') == format_prob(s.logprobs[3].item())
    assert fact(page, 'probability (sampling distribution)') == format_prob(s.sample_logprobs[3].item())
    assert fact(page, 'rank under the model') == str(st[3].chosen_rank)
    assert apart(page, '.tk[data-d="0"][data-t="3"]', '#inspector')  # beside the text, not over it
    shot(page, 'report_sample.png')

    # keyboard: focus a token, arrows move, Escape lets go
    page.focus('.tk[data-d="1"][data-t="0"]')
    page.keyboard.press('ArrowRight')
    page.keyboard.press('ArrowRight')
    assert page.evaluate('document.activeElement.dataset.t') == '2'
    assert 'position 3 of 15' in page.inner_text('#inspector .ptitle')
    assert fact(page, 'probability (model distribution)') == format_prob(samples[1].logprobs[2].item())
    page.keyboard.press('End')
    assert page.evaluate('document.activeElement.dataset.t') == '14'
    page.keyboard.press('Escape')
    assert page.locator('#inspector .empty').count() == 1

    # probability shading: each token's colour is the scale's (web/scale.json) for its probability, as the
    # PNG overview draws it (test_charts: test_overview_shades_tokens_with_the_page_scale)
    from nanoprobs.plots.common import ProbabilityScale
    scale = ProbabilityScale()
    rgb = lambda h: f"rgb({int(h[1:3], 16)}, {int(h[3:5], 16)}, {int(h[5:7], 16)})"  # noqa: E731
    got = page.eval_on_selector_all('.tk[data-d="0"]', 'els => els.map(e => getComputedStyle(e).backgroundColor)')
    assert got == [rgb(scale.color(math.exp(x))) for x in s.logprobs.tolist()]

    # rank buckets
    page.click('#mode-rank')
    want = ['c-r' + str(1 if r <= 10 else 2 if r <= 100 else 3 if r <= 1000 else 4) for r in s.ranks.tolist()]
    got = page.eval_on_selector_all('.tk[data-d="0"]', 'els => els.map(e => e.classList[1])')
    assert got == want
    assert page.errors == [] and set(page.requests) == {url}  # no network request at all


def test_injected_markup_is_shown_as_text(page, tmp_path, gpt2_tok):
    prompt = gpt2_tok.encode("Once upon a time " + INJ)
    s = generate(tiny_model(), torch.tensor([prompt]), 5, temperature=0, details=3)[0]
    bad = s.tokens[2]  # shown as INJ: model text that tries to be markup
    text_of = lambda i: INJ if i == bad else gpt2_tok.token_text(i)  # noqa: E731
    tok = types.SimpleNamespace(decode=gpt2_tok.decode, token_text=text_of,
                                pieces=lambda ids: [(k, k + 1, text_of(i)) for k, i in enumerate(ids)])
    url = open_report(page, html_report.sample_html([s], tok, tmp_path, {}))
    assert page.inner_text('.tk[data-d="0"][data-t="2"]') == INJ
    page.hover('.tk[data-d="0"][data-t="2"]')
    assert page.inner_text('#inspector .ptitle .ptok') == label(INJ)
    assert page.evaluate('window.__pwned') is None and page.evaluate('document.images.length') == 0
    assert page.errors == [] and set(page.requests) == {url}


def eval_results(tok, after_model):
    """A results dict in eval.py's JSON format (the fields the page reads), before and after, from two tiny models."""
    pairs = [("Once upon a time", " there was a little fox"), ("The end", " of the story.")]

    def run(m):
        out = []
        for i, (p, r) in enumerate(pairs, 1):
            pi, ri = tok.encode(p), tok.encode(r)
            s = score(m, [pi], [ri])[0]
            out.append(dict(index=i, prompt=p, response=r, joined=[p, r], prompt_ids=pi, response_ids=ri,
                            tokens=[tok.token_text(t) for t in ri], logprobs=s.logprobs.tolist(),
                            ranks=s.ranks.tolist(), expected=[tok.token_text(t) for t in s.top1.tolist()],
                            sample_logprobs=None, logprob=s.logprob, probability=format_prob(s.logprob),
                            perplexity=math.exp(-s.logprob / len(ri)), greedy=False))
        lps = [p['logprob'] for p in out]
        totals = dict(pairs=2, tokens=sum(len(p['tokens']) for p in out), logprob=math.fsum(lps),
                      sum_of_probabilities=format_prob(float(torch.tensor(lps, dtype=torch.float64).logsumexp(0))))
        return dict(model='tiny', settings=dict(eval_data='pairs.json', join='auto', temperature=1.0), pairs=out,
                    totals=totals)
    after, before = run(after_model), run(tiny_model(seed=0))
    after['comparison'] = dict(before=before, before_source='before.json', rose=1, fell=1)
    return after, before


@pytest.mark.parametrize('width', [1400, 700])
def test_eval_report_before_after_and_its_whole_table(page, tmp_path, gpt2_tok, lm, width):
    after, before = eval_results(gpt2_tok, lm if SHOTS_MODEL else tiny_model(seed=1))
    path = html_report.write_html(html_report.eval_page(after), str(tmp_path / 'eval.html'))
    page.set_viewport_size({'width': width, 'height': 800})
    open_report(page, path)
    assert page.is_checked('#mode-change')
    # every column of the pairs table is on the page or inside its scrolling box: none is cut off
    last = page.locator('table.pairs tr').nth(1).locator('td').last
    assert last.inner_text() == html_report.format_ratio(after['pairs'][0]['logprob'] - before['pairs'][0]['logprob'])
    assert page.evaluate("(() => { const w = document.querySelector('.scroll'), t = w.querySelector('table');"
                         " return t.getBoundingClientRect().right <= w.getBoundingClientRect().right + 0.5"
                         " || w.scrollWidth > w.clientWidth; })()")
    page.hover('.tk[data-d="0"][data-t="1"]')
    a, b = after['pairs'][0], before['pairs'][0]
    assert fact(page, 'before: probability, rank') == f"{format_prob(b['logprobs'][1])}, rank {b['ranks'][1]}"
    assert fact(page, 'after: probability, rank') == f"{format_prob(a['logprobs'][1])}, rank {a['ranks'][1]}"
    assert fact(page, 'the model\u2019s most likely token here') == label(a['expected'][1])
    if width == 1400:
        shot(page, 'report_eval.png')
        for w in (1100, 800):  # every column of the pairs table shows (the texts give way), no scrolling needed
            page.set_viewport_size({'width': w, 'height': 760})
            assert page.evaluate("(() => { const t = document.querySelector('table.pairs');"
                                 " return t.scrollWidth <= t.parentElement.clientWidth; })()"), w
    assert page.errors == []


def attention_class(w):
    """page.js's bucket of an attention weight (ATT_EDGES)."""
    return 'c-a' + str(sum(w >= e for e in (0.01, 0.05, 0.1, 0.2, 0.4)))


def test_report_panels_lens_attention_attribution_and_joined_characters(page, tmp_path, gpt2_tok, lm):
    pytest.importorskip('captum', reason="attribution needs Captum: pip install captum")
    prompt = gpt2_tok.encode(PROMPT)
    n = 40 if SHOTS_MODEL else 6  # (the screenshots: a longer text)
    samples = generate(lm, torch.tensor([prompt] * 2), n, temperature=0.8, top_k=50, details=5,
                       generator=torch.Generator().manual_seed(1))
    panels = inspector.Panels(attribution='ig', steps=8 if not SHOTS_MODEL else 32)
    d = html_report.sample_page(samples, gpt2_tok, dict(temperature=0.8, top_k=50), model=lm, panels=panels)
    url = open_report(page, html_report.write_html(d, str(tmp_path / 'index.html')))
    P, doc = len(prompt), d['docs'][0]
    # the prompt's curly quotes are joined: one element each showing the character, its pieces in its title
    quotes = page.locator('.doc').first.locator('.pt').all_inner_texts()
    assert ' “' in quotes and '”' in quotes and '<E2 80>' not in ''.join(quotes)

    # keyboard: Tab into the text, arrows move, Enter pins the token and moves into the inspector
    spans = page.locator('.tk[data-d="0"]')
    i = spans.count() - 8 if SHOTS_MODEL else 2
    ti = int(spans.nth(i).get_attribute('data-t'))
    page.focus('.tk[data-d="0"][data-t="0"]')
    for _ in range(i):
        page.keyboard.press('ArrowRight')
    t = doc['tokens'][ti]
    assert f'position {ti + 1} of {n}' in page.inner_text('#inspector .ptitle')

    # 1. logit lens: one row per layer; the last is the model distribution, the token's own probability
    rows = page.locator('#p-lens tr').all()[1:]
    assert len(rows) == lm.config.n_layer + 1
    assert [r.locator('td').nth(2).inner_text() for r in rows] == [row[3] for row in t['lens']]
    assert rows[-1].locator('td').nth(2).inner_text() == t['prob'] and rows[-1].locator('td').nth(3).inner_text() == str(t['rank'])
    show_panel(page, '#p-lens')
    shot(page, 'report_lens.png')

    # 2. attention: the layer and head controls by keyboard; the context shaded by Python's weights
    page.click('#mode-attention')
    page.focus(f'.tk[data-d="0"][data-t="{ti}"]')
    page.keyboard.press('Enter')
    page.focus('#p-att .layer')
    page.keyboard.press('ArrowUp')  # the last layer is the default: one up
    assert page.input_value('#p-att .layer') == str(lm.config.n_layer - 2)
    page.focus('#p-att .head')
    page.keyboard.press('ArrowDown')  # mean -> head 0
    assert page.input_value('#p-att .head') == '0'
    flat = t['att'][lm.config.n_layer - 2][1]  # head 0's row
    weights = dict(zip(flat[::2], [w / 1000 for w in flat[1::2]]))
    shown = page.locator('#p-att table.att .bt').all_inner_texts()
    assert shown == [f"{w:.3f}" for w in sorted(weights.values(), reverse=True)[:8]]
    pts = page.locator('.doc').first.locator('.prompt .pt').all()
    pieces = doc['prompt_pieces']
    for (a, b, _), el in zip(pieces, pts):  # a joined character gets the sum of its pieces' weights
        assert attention_class(sum(weights.get(k, 0) for k in range(a, b))) in el.get_attribute('class').split()
    assert apart(page, f'.tk[data-d="0"][data-t="{ti}"]', '#inspector')
    show_panel(page, '#p-att')
    shot(page, 'report_attention.png')

    # 3. attribution: Python's integrated-gradients scores, their sum and completeness gap
    page.click('#mode-attribution')
    a = t['attr']
    assert fact(page, 'sum of the scores', '#p-attr') == str(a['total'])
    assert fact(page, 'completeness gap', '#p-attr').startswith(a['gap'])
    top = sorted(a['scores'], key=abs, reverse=True)[:8]
    assert [float(x) for x in page.locator('#p-attr table.attr .bt').all_inner_texts()] == top
    k = max(range(len(a['scores'])), key=lambda i: a['scores'][i])  # the most positive: the darkest blue
    el = pts[next(i for i, (x, y, _) in enumerate(pieces) if x <= k < y)] if k < P else \
        page.locator(f'.tk[data-d="0"][data-t="{k - P}"]')
    assert 'c-d6' in el.get_attribute('class').split()
    show_panel(page, '#p-attr')
    shot(page, 'report_attribution.png')

    # narrow: the inspector docks below the text and the inspected token stays above it
    page.set_viewport_size({'width': 700, 'height': 800})
    page.focus('.tk[data-d="1"][data-t="4"]')
    assert apart(page, '.tk[data-d="1"][data-t="4"]', '#inspector')
    shot(page, 'report_narrow.png')
    assert page.errors == [] and set(page.requests) == {url}


def test_gltr_page_of_two_texts(page, tmp_path, gpt2_tok, lm):
    texts = ['Once upon a time there was a little fox who lived in the “green” wood.',
             'The the the the the the the the the the the the the.']
    samples = [score_text(lm, gpt2_tok, x) for x in texts]
    data = html_report.gltr_page(samples, ['story.txt', 'repeats.txt'], gpt2_tok, {}, model=lm,
                                 panels=inspector.Panels())
    url = open_report(page, html_report.write_html(data, str(tmp_path / 'gltr.html')))
    assert page.is_checked('#mode-rank')
    table = [[c.inner_text() for c in r.locator('td').all()] for r in page.locator('table.pairs tbody tr').all()]
    assert table == data['table']['rows']
    for i, doc in enumerate(data['docs']):
        box = page.locator('.doc').nth(i).locator('.gltr')
        assert box.locator('.gn').all_inner_texts() == [str(c) for _, c in doc['gltr']['histogram']]
        assert [x.split(' ')[-2] for x in box.locator('.glist > span').all_inner_texts()] == \
            [share for _, _, share in doc['gltr']['ranks']]
    quote = page.locator('.doc').first.locator('.tk.joined').first
    assert quote.inner_text() == '“' or quote.inner_text() == ' “'
    quote.click()
    pieces = page.locator('#inspector button.piece')
    assert pieces.count() == 2 and pieces.nth(0).inner_text().startswith('\u2423<E2 80> ')
    pieces.nth(1).press('Enter')  # the second byte piece: its own probability
    a = int(quote.get_attribute('data-t'))
    assert f"position {a + 2} of" in page.inner_text('#inspector .ptitle')
    assert fact(page, 'probability (model distribution)') == data['docs'][0]['tokens'][a + 1]['prob']
    shot(page, 'report_gltr.png')
    assert page.errors == [] and set(page.requests) == {url}


def test_big_report_becomes_interactive_fast(page, tmp_path, gpt2_tok):
    """10 samples x 500 tokens, lens and attention included: the time to open and answer a hover is printed,
    not asserted."""
    m = tiny_model(block_size=512)
    s = generate(m, torch.tensor([gpt2_tok.encode("Once upon a time")]), 100, temperature=1.0,
                 details=10, generator=torch.Generator().manual_seed(0))[0]
    s = Sample(s.prompt, s.tokens * 5, s.logprobs.repeat(5), s.sample_logprobs.repeat(5), s.ranks.repeat(5),
               steps=s.steps * 5)  # 500 tokens, made fast
    share = inspector.Panels(max_lens_cells=inspector.MAX_LENS_CELLS // 10,  # one text's share of a page of ten
                             max_attention_numbers=inspector.MAX_ATTENTION_NUMBERS // 10)
    data = html_report.sample_page([s], gpt2_tok, dict(temperature=1.0), model=m, panels=share)
    data['docs'] = [data['docs'][0]] + [html_report.sample_doc(s, gpt2_tok, f"sample {i}") for i in range(2, 11)]
    for doc in data['docs'][1:]:  # the same text ten times: its panels computed once (the page is as big)
        for e, e0 in zip(doc['tokens'], data['docs'][0]['tokens']):
            e.update({k: e0[k] for k in ('lens', 'att') if k in e0})
    path = html_report.write_html(data, str(tmp_path / 'big.html'))
    t0 = time.perf_counter()
    page.goto('file://' + path)
    page.wait_for_selector('body[data-ready]')
    t1 = time.perf_counter()
    page.hover('.tk[data-d="9"][data-t="499"]')
    page.wait_for_selector('#p-lens table')
    t2 = time.perf_counter()
    print(f"\n10 samples x 500 tokens ({os.path.getsize(path) / 1e6:.1f} MB): drawn in {t1 - t0:.2f} s, "
          f"first inspector after {t2 - t0:.2f} s")
    assert page.locator('.tk').count() == 5000


@pytest.fixture
def live(gpt2_tok, lm):
    m = lm
    forward = m.forward

    def slow(*a, **k):  # a tiny model is too fast to press Stop in time
        time.sleep(0.01)
        return forward(*a, **k)

    m.forward = slow
    L = types.SimpleNamespace(model=m, tok=gpt2_tok, ctx=contextlib.nullcontext(), device='cpu', dtype='float32',
                              source='tiny')
    engine = Engine(L, serve.settings(max_new_tokens=12))
    srv = serve_in_thread(engine)
    yield srv, m
    m.forward = forward
    srv.stop()
    with engine.lock:  # no job left on the model
        pass


def ids_of(pg):
    """The token ids of the newest text of the app (a joined character's element holds several)."""
    ids = pg.eval_on_selector_all('#docs .doc:first-child .tk', 'els => els.map(e => e.dataset.ids)')
    return [int(x) for s in ids for x in s.split(',')]


def test_live_app_generate_branch_inspect_compare_stop(page, live, gpt2_tok):
    pytest.importorskip('captum', reason="attribution needs Captum: pip install captum")
    srv, m = live
    page.goto(srv.url + '/')
    page.wait_for_selector('body[data-ready]')
    page.fill('#prompt', 'Once upon a time')
    page.fill('#temperature', '0')
    page.fill('#top_k', '')
    page.click('#generate')
    page.wait_for_selector('.status:text-matches("tokens in")')
    prompt = gpt2_tok.encode('Once upon a time')
    greedy = generate(m, torch.tensor([prompt]), 12, temperature=0)[0]
    assert ids_of(page) == greedy.tokens
    text = page.inner_text('#docs .doc:first-child .text')
    assert text == gpt2_tok.display(prompt + greedy.tokens).replace('\n', '\u21b5\n')

    # click a token: the server computes its lens and attention; attribution on demand, by keyboard
    page.click('#docs .doc:first-child .tk[data-t="3"]')
    page.wait_for_selector('#p-lens table')
    ids = prompt + greedy.tokens
    ref = inspector.token_panels(m, gpt2_tok, ids, len(prompt) + 3)
    assert [r.locator('td').nth(2).inner_text() for r in page.locator('#p-lens tr').all()[1:]] == [r[3] for r in ref['lens']]
    page.focus('#p-attr button[data-method="gxi"]')
    page.keyboard.press('Enter')
    page.wait_for_selector('#p-attr table.attr')
    a = attribute(m, ids, len(prompt) + 3, 'gxi').to_json()
    assert fact(page, 'sum of the scores', '#p-attr').startswith(str(a['total']))

    alt_button = page.locator('#candidates tr:not(.chosen) button.alt').first
    alt = int(alt_button.get_attribute('data-id'))
    page.click('#inspector button:text("compare temperatures at this step")')
    page.wait_for_selector('#temps table')
    col = page.locator('#temps th').all_inner_texts().index('T=1')
    first_row = page.locator('#temps tr').nth(1).locator('td').nth(col).inner_text()
    assert first_row == candidates(page)[0][1]  # T=1 without top-k/top-p is the model distribution
    # the comparison stays inside the inspector (it scrolls there), and the inspector never covers the form
    box = page.locator('#inspector').bounding_box()
    tb = page.locator('#temps').bounding_box()
    assert tb['x'] + tb['width'] <= box['x'] + box['width'] + 0.5 and apart(page, '.live', '#inspector')
    page.locator('#temps').scroll_into_view_if_needed()
    shot(page, 'report_app.png')
    page.set_viewport_size({'width': 700, 'height': 800})
    page.evaluate('window.scrollTo(0, 0)')
    assert apart(page, '.live', '#inspector')
    # narrow: clicking a token below the form scrolls it above the sheet, which then has room to open
    last = page.locator('#docs .doc:first-child .tk').last
    sel = f'#docs .doc:first-child .tk[data-t="{last.get_attribute("data-t")}"]'
    last.click()  # (the inspector's title is drawn at once, its panels when the server answers)
    assert f'position {int(last.get_attribute("data-t")) + 1} of' in page.inner_text('#inspector .ptitle')
    assert apart(page, sel, '#inspector') and apart(page, '.live', '#inspector')
    assert page.locator('#inspector').is_visible() and page.locator('#inspector').bounding_box()['height'] > 200
    page.set_viewport_size({'width': 1400, 'height': 800})
    page.click('#docs .doc:first-child .tk[data-t="3"]')  # back to the token whose alternative is taken
    alt_button.click()
    page.locator('#docs .doc').nth(1).wait_for()  # (wait_for_function would need the 'unsafe-eval' the CSP forbids)
    page.wait_for_selector('.status:text-matches("tokens in")')
    got = ids_of(page)
    assert got[:3] == greedy.tokens[:3] and got[3] == alt
    assert got[4:] == generate(m, torch.tensor([prompt + got[:4]]), 12, temperature=0)[0].tokens

    # Score a fixed response; Score text scores the prompt box after <|endoftext|>, with GLTR's summary
    page.fill('#response', ' there was a fox')
    page.click('#score')
    page.wait_for_selector('.status:text-matches("scored")')
    assert ids_of(page) == gpt2_tok.encode(' there was a fox')
    ref = score(m, [prompt], [gpt2_tok.encode(' there was a fox')])[0]
    page.hover('#docs .doc:first-child .tk[data-t="1"]')
    assert fact(page, 'probability (model distribution)') == format_prob(ref.logprobs[1].item())
    page.click('#score_text')
    page.wait_for_selector('#docs .doc:first-child h2:text-matches("whole text")')
    assert page.locator('#docs .doc:first-child .gltr').count() == 1
    whole = score_text(m, gpt2_tok, 'Once upon a time')
    assert ids_of(page) == whole.tokens

    # Stop: a long generation ends early, and the app works on
    page.fill('#max_new_tokens', '300')
    page.click('#generate')
    page.locator('#docs .doc').nth(4).wait_for()
    page.locator('#docs .doc:first-child .tk').nth(2).wait_for()
    page.click('#stop')
    page.wait_for_selector('.status:text-matches("stopped after")')
    n = len(ids_of(page))
    assert 3 <= n < 300 and page.is_enabled('#generate')
    page.fill('#max_new_tokens', '2')
    page.click('#generate')
    page.wait_for_selector('.status:text-matches("2 tokens in")', timeout=20000)
    assert page.errors == [] and all(u.startswith(srv.url) for u in page.requests)

