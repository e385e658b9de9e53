"""The report and the live app in a real browser: Playwright driving Debian's Chromium.

Popovers show the Python numbers, keyboard navigation, no network request, injected markup stays text;
the live app generates greedy text equal to generate(), branches from an alternative, and stops.
SCREENSHOTS_DIR=results/examples python -m pytest tests/test_browser.py  also writes report_*.png there;
with SCREENSHOTS_MODEL=<a train.py out_dir> the report and app tests use that model (readable text for the README)."""
import contextlib
import math
import os
import time
import types

import pytest
import torch

from nanoprobs import html_report
import serve
from conftest import tiny_model
from nanoprobs.decoding import Sample, generate, score
from nanoprobs.formatting import format_prob
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


@pytest.fixture(scope='module')
def lm():
    """The model the report and app tests run: a tiny random one, or SCREENSHOTS_MODEL's checkpoint."""
    if not SHOTS_MODEL:
        return tiny_model()
    from nanoprobs import load
    return load.load_model('resume', SHOTS_MODEL, 'cpu', 'float32').model


def label(t):
    """A token as the popover labels it (visible whitespace)."""
    return t.replace(' ', '\u2423').replace('\n', '\u21b5').replace('\t', '\u21e5').replace('\r', '\u240d')


@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # a fresh temporary profile every launch
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page that records every request it makes and every script error."""
    ctx = browser.new_context(viewport={'width': 1100, 'height': 760})
    pg = ctx.new_page()
    pg.requests, pg.errors = [], []
    pg.on('request', lambda r: pg.requests.append(r.url))
    pg.on('pageerror', lambda e: pg.errors.append(str(e)))
    pg.on('console', lambda m: pg.errors.append(m.text) if m.type == 'error' else None)
    yield pg
    ctx.close()


def shot(pg, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        pg.screenshot(path=os.path.join(SHOTS, name))


def popover_top(pg):
    """(label, model probability text) of each row of the open popover's bars."""
    rows = pg.locator('#pop > table.bars tr').all()[1:]
    return [(r.locator('.tt').inner_text(), r.locator('.bt').first.inner_text()) for r in rows]


def fact(pg, name):
    return pg.locator(f'#pop .facts dt:text-is("{name}") + dd').inner_text()


def open_report(page, path):
    url = 'file://' + os.path.abspath(path)
    page.goto(url)
    page.wait_for_selector('body[data-ready]')
    return url


def test_report_popover_and_keyboard(page, tmp_path, gpt2_tok, lm):
    prompt = gpt2_tok.encode("Once upon a time")
    samples = generate(lm, torch.tensor([prompt] * 2), 15, temperature=0.8, top_k=50, details=6,
                       generator=torch.Generator().manual_seed(0))
    path = html_report.sample_html(samples, gpt2_tok, tmp_path, dict(temperature=0.8, top_k=50, top_p=1.0))
    url = open_report(page, path)
    s, st = samples[0], samples[0].steps

    page.hover('.tk[data-d="0"][data-t="3"]')
    assert page.is_visible('#pop')
    top = popover_top(page)
    assert top[0] == (label(gpt2_tok.token_text(st[3].top_ids[0])), format_prob(st[3].top_logprobs[0]))
    assert [p for _, p in top][:6] == [format_prob(x) for x in st[3].top_logprobs]
    assert fact(page, 'probability (model distribution)') == format_prob(s.logprobs[3].item())
    assert fact(page, 'probability (sampling distribution)') == format_prob(s.sample_logprobs[3].item())
    assert fact(page, 'rank under the model') == str(st[3].chosen_rank)
    shot(page, 'report_sample.png')

    # keyboard: focus a token, arrows move, Escape closes
    page.focus('.tk[data-d="1"][data-t="0"]')
    page.keyboard.press('ArrowRight')
    page.keyboard.press('ArrowRight')
    assert page.evaluate('document.activeElement.dataset.t') == '2'
    assert 'position 3 of 15' in page.inner_text('#pop .ptitle')
    assert fact(page, 'probability (model distribution)') == format_prob(samples[1].logprobs[2].item())
    page.keyboard.press('End')
    assert page.evaluate('document.activeElement.dataset.t') == '14'
    page.keyboard.press('Escape')
    assert not page.is_visible('#pop')

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
    tok = types.SimpleNamespace(decode=gpt2_tok.decode,
                                token_text=lambda i: INJ if i == bad else gpt2_tok.token_text(i))
    url = open_report(page, html_report.sample_html([s], tok, tmp_path, {}))
    assert page.inner_text('.doc .prompt') == gpt2_tok.decode(prompt)
    assert page.inner_text('.tk[data-d="0"][data-t="2"]') == INJ
    page.hover('.tk[data-d="0"][data-t="2"]')
    assert page.inner_text('#pop .ptitle .ptok') == label(INJ)
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


def test_eval_report_shows_before_and_after(page, tmp_path, gpt2_tok, lm):
    after, before = eval_results(gpt2_tok, lm if SHOTS_MODEL else tiny_model(seed=1))
    path = html_report.write_html(html_report.eval_page(after), str(tmp_path / 'eval.html'))
    page.goto('file://' + path)
    page.wait_for_selector('body[data-ready]')
    assert page.is_checked('#mode-change')
    page.hover('.tk[data-d="0"][data-t="1"]')
    a, b = after['pairs'][0], before['pairs'][0]
    assert fact(page, 'before: probability, rank') == f"{format_prob(b['logprobs'][1])}, rank {b['ranks'][1]}"
    assert fact(page, 'after: probability, rank') == f"{format_prob(a['logprobs'][1])}, rank {a['ranks'][1]}"
    assert fact(page, 'the model\u2019s most likely token here') == label(a['expected'][1])
    shot(page, 'report_eval.png')
    assert page.errors == []


def test_big_report_becomes_interactive_fast(page, tmp_path, gpt2_tok):
    """10 samples x 500 tokens: the time to open and answer a hover is printed, not asserted."""
    s = generate(tiny_model(), torch.tensor([gpt2_tok.encode("Once upon a time")]), 100, temperature=1.0,
                 details=10, generator=torch.Generator().manual_seed(0))[0]
    s = Sample(s.prompt, s.tokens * 5, s.logprobs.repeat(5), s.sample_logprobs.repeat(5), s.ranks.repeat(5),
               steps=s.steps * 5)  # 500 tokens, made fast
    path = html_report.sample_html([s] * 10, gpt2_tok, tmp_path, dict(temperature=1.0))
    t0 = time.perf_counter()
    page.goto('file://' + path)
    page.wait_for_selector('body[data-ready]')
    t1 = time.perf_counter()
    page.hover('.tk[data-d="9"][data-t="499"]')
    page.wait_for_selector('#pop:not([hidden])')
    t2 = time.perf_counter()
    print(f"\n10 samples x 500 tokens ({os.path.getsize(path) / 1e6:.1f} MB): drawn in {t1 - t0:.2f} s, "
          f"first popover after {t2 - t0:.2f} s")
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


def newest_ids(pg):
    return [int(x) for x in pg.eval_on_selector_all('#docs .doc:first-child .tk', 'els => els.map(e => e.dataset.id)')]


def test_live_app_generate_branch_compare_stop(page, live, gpt2_tok):
    srv, m = live
    page.set_viewport_size({'width': 1200, 'height': 1200})  # room for the popover under the text
    page.goto(srv.url + '/')
    page.wait_for_selector('body[data-ready]')
    page.fill('#prompt', 'Once upon a time')
    page.fill('#temperature', '0')
    page.fill('#top_k', '')
    page.click('#generate')
    page.wait_for_selector('.status:text-matches("tokens in")')
    prompt = gpt2_tok.encode('Once upon a time')
    greedy = generate(m, torch.tensor([prompt]), 12, temperature=0)[0]
    assert newest_ids(page) == greedy.tokens
    text = page.inner_text('#docs .doc:first-child .text')
    assert text == gpt2_tok.decode(prompt + greedy.tokens).replace('\n', '\u21b5\n')

    # click a token, pick an alternative: the text is cut there and continues from it
    page.click('#docs .doc:first-child .tk[data-t="3"]')
    alt_button = page.locator('#pop tr:not(.chosen) button.alt').first
    alt = int(alt_button.get_attribute('data-id'))
    page.click('#pop button:text("compare temperatures at this step")')
    page.wait_for_selector('#temps table')
    col = page.locator('#temps th').all_inner_texts().index('T=1')
    first_row = page.locator('#temps tr').nth(1).locator('td').nth(col).inner_text()
    assert first_row == popover_top(page)[0][1]  # T=1 without top-k/top-p is the model distribution
    shot(page, 'report_app.png')
    alt_button.click()
    page.locator('#docs .doc').nth(1).wait_for()  # (wait_for_function would need the 'unsafe-eval' the CSP forbids)
    page.wait_for_selector('.status:text-matches("tokens in")')
    ids = newest_ids(page)
    assert ids[:3] == greedy.tokens[:3] and ids[3] == alt
    assert ids[4:] == generate(m, torch.tensor([prompt + ids[:4]]), 12, temperature=0)[0].tokens

    # Score a fixed response
    page.fill('#response', ' there was a fox')
    page.click('#score')
    page.wait_for_selector('.status:text-matches("scored")')
    assert newest_ids(page) == gpt2_tok.encode(' there was a fox')
    ref = score(m, [prompt], [gpt2_tok.encode(' there was a fox')])[0]
    page.hover('#docs .doc:first-child .tk[data-t="1"]')
    assert fact(page, 'probability (model distribution)') == format_prob(ref.logprobs[1].item())

    # Stop: a long generation ends early, and the app works on
    page.fill('#max_new_tokens', '300')
    page.click('#generate')
    page.locator('#docs .doc').nth(3).wait_for()
    page.locator('#docs .doc:first-child .tk').nth(2).wait_for()
    page.click('#stop')
    page.wait_for_selector('.status:text-matches("stopped after")')
    n = len(newest_ids(page))
    assert 3 <= n < 300 and page.is_enabled('#generate')
    page.fill('#max_new_tokens', '2')
    page.click('#generate')
    page.wait_for_selector('.status:text-matches("2 tokens in")', timeout=20000)
    assert page.errors == [] and all(u.startswith(srv.url) for u in page.requests)
