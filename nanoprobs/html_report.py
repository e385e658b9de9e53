"""
One self-contained HTML page of every probability: results as the page's data, assets inlined.

    from nanoprobs.html_report import sample_page, eval_page, write_html
    write_html(sample_page(samples, tok, settings), 'results/sample_x/index.html')   # decoding.Sample list
    write_html(eval_page(json.load(open('results/eval_gpt2.json'))), 'results/eval_gpt2.html')

The page is web/report.html with web/report.css, the scripts and the data inlined: nothing is loaded from
the network, it opens from disk and can be mailed. web/page.js (shared) draws the texts, web/inspector.js
the docked inspector of the chosen token and its panels (inspector.py computes them);
web/report.js draws the report, web/live.js the live app (serve.py serves the page with live=True, which
adds web/live.html's form and live.js; the static report holds neither).
Every number shown is computed here in Python (float64 log-probs, format_prob text), never in JavaScript:
the data holds both the log-probs (for the colours and bar lengths) and their text.
Model text is untrusted: it travels as JSON in a <script type="application/json"> element with <, >, &
and U+2028/2029 escaped, the page builds the DOM with textContent, and a Content-Security-Policy lets
only this page's own script and style run.
"""
import base64
import hashlib
import json
import math
import os
import re

from nanoprobs import atomic, gltr
from nanoprobs.tokenizer import text_pieces
from nanoprobs.formatting import (format_ppl, format_prob, format_ratio, perplexity,
                                  sampling_text)

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'web')
FORMAT = 'nanogpt-report/1'
# beam search ignores them
SAMPLING = ('num_samples', 'temperature', 'top_k', 'top_p', 'seed', 'fixed_response')
# shown in a sample.py report (report_settings keeps those that applied)
SAMPLE_SETTINGS = ('init_from', 'out_dir', 'start', 'num_samples', 'max_new_tokens', 'temperature', 'top_k',
                   'top_p', 'seed', 'stop_at_eot', 'fixed_response', 'device', 'dtype')
BEAM_SETTINGS = ('num_beams', 'length_penalty', 'no_repeat_ngram_size', 'early_stopping')



def num(x):
    """A float for JSON: None (null) for -inf/nan, which JSON cannot hold (-inf = probability 0)."""
    x = float(x)
    return x if math.isfinite(x) else None


def nats(x):
    return f"{x + 0.0:.3f} nats"  # + 0.0: an entropy of -0.0 shows as 0.000


# -----------------------------------------------------------------------------
# results -> the page's data

# The page's data (this shape is also what serve.py's JSON API answers with; its streamed generation sends
# {"start": the doc's prompt, prompt_ids, prompt_pieces and sampling}, one {"token": token} per token, then
# {"done": text, tokens (ids), logprob, sample_logprob, totals, prompt_pieces, joined, gltr}):
#   page: format, kind ('sample' | 'eval' | 'live'), title, sampling (text, or null), settings [[name, text]],
#         mode (the shading it opens with; default probability, or change when comparing), table {head, rows,
#         text (the columns holding text)} (eval's pairs, GLTR's texts),
#         docs [doc]; an eval page also compare (bool), summary [[name, text]];
#         the live page also defaults and limits (the controls') and eot (<|endoftext|>'s id, or null);
#         inspect: what the inspector's panels hold (inspector.add_panels), or null.
#   doc:  title, prompt (text), prompt_ids, tokens [token], totals [[name, text]]; forced (a scored fixed
#         response), model_only (beams: no sampling distribution), compare (eval: the before run's numbers
#         are there, token by token); prompt_pieces [[start, end, text]] (the prompt's tokens as display
#         pieces: tokenizer.pieces), joined [[start, end, text, logprob, prob]] (runs of tokens that together
#         form whole characters, shown as those characters; logprob = the run's sum), gltr (gltr.summary).
#   token: the model distribution is the model's own (T=1, no top-k/top-p); the sampling distribution the
#         one the token was drawn from (temperature, top-k, top-p). Each log-prob comes with its format_prob
#         text (the page shows the text, and only picks colours and bar lengths from the number);
#         a log-prob of null is probability 0.
#     id, text                     the token
#     logprob, prob                under the model distribution (prob: format_prob's text, '0.0131', '1.5e-08')
#     sample_logprob, sample_prob  under the sampling distribution (absent for beams and unsampled evals)
#     rank                         under the model distribution (1 = its most likely token)
#     entropy, sample_entropy      of the step's two distributions, as text ('2.345 nats')
#     alternatives                 the step's top-k tokens under the model: [{id, text, logprob, prob,
#                                  sample_logprob, sample_prob}], most likely first
#     expected                     eval: the model's most likely token there (text)
#     before_logprob, before_prob, before_rank, before_expected   eval comparison: the same, before
#     change, change_ratio, change_nats   eval comparison: logprob - before_logprob (a number), as a
#                                  probability ratio (text) and in nats (text)
#     lens, att, attr              the inspector's panels (see inspector.py)

def token_entry(tok, i, lp, slp=None, rank=None, step=None):
    """One token of a text (see the data shape above); with a decoding.Step its alternatives under both
    distributions and the entropies."""
    e = dict(id=int(i), text=tok.token_text(int(i)), logprob=num(lp), prob=format_prob(lp))
    if slp is not None:
        e.update(sample_logprob=num(slp), sample_prob=format_prob(slp))
    if rank is not None:
        e['rank'] = int(rank)
    if step is not None:
        sampled = step.top_sample_logprobs is not None  # beam search's Steps have no sampling distribution
        e['entropy'] = nats(step.entropy)
        if sampled:
            e['sample_entropy'] = nats(step.sample_entropy)
        e['alternatives'] = [dict(id=int(j), text=tok.token_text(int(j)), logprob=num(a), prob=format_prob(a))
                             for j, a in zip(step.top_ids, step.top_logprobs)]
        if sampled:
            for a, b in zip(e['alternatives'], step.top_sample_logprobs):
                a.update(sample_logprob=num(b), sample_prob=format_prob(b))
    return e


def pieces(tok, ids):
    """[[start, end, text]]: ids as the tokenizer's display pieces (a character split into several
    tokens is one piece)."""
    return [[a, b, text] for a, b, text in tok.pieces(ids)]


def joined(tok, ids, logprobs, pcs=None):
    """[[start, end, text, logprob, prob]] of the runs of ids that together form whole characters (and are
    shown as those characters); logprob: the run's total under the model distribution. pcs: the pieces,
    when they are known already (tokenizer.text_pieces)."""
    out = []
    for a, b, text in (pcs if pcs is not None else tok.pieces(ids)):
        if b - a > 1:
            lp = math.fsum(logprobs[a:b])
            out.append([a, b, text, num(lp), format_prob(lp)])
    return out


def text_fields(tok, prompt, tokens, logprobs, ranks):
    """A doc's fields about its texts as a whole: prompt_pieces, joined, and the GLTR summary."""
    return dict(prompt_pieces=pieces(tok, prompt), joined=joined(tok, tokens, logprobs),
                gltr=gltr.summary(ranks, logprobs, probability_scale()) if ranks is not None else None)


def sample_totals(s, sampling=None):
    """The totals the terminal prints after a sample (sample.summary), as (label, text) rows."""
    lp, T = s.logprob, len(s.tokens)
    rows = [['tokens', f"{T}" + (' (stopped at <|endoftext|>)' if getattr(s, 'stopped', False) else '')],
            ['probability under the model distribution', format_prob(lp)],
            ['log-prob (model)', f"{lp:.4f}"]]
    if T:
        rows.append(['perplexity', format_ppl(perplexity(lp / T), '.2f')])
    if sampling is not None and hasattr(s, 'sample_logprobs'):
        slp = s.sample_logprob
        rows += [[f"probability under the sampling distribution ({sampling})", format_prob(slp)],
                 ['log-prob (sampling)', f"{slp:.4f}"]]
    if hasattr(s, 'score'):  # a beam
        rows.append([f"beam score (log-prob / tokens^{s.length_penalty:g})", f"{s.score:.4f}"])
    return rows


def sample_doc(s, tok, title, sampling=None, forced=False):
    """A decoding.Sample (or Beam) as one text of the page."""
    steps = getattr(s, 'steps', None) or [None] * len(s.tokens)
    slps = s.sample_logprobs.tolist() if hasattr(s, 'sample_logprobs') else [None] * len(s.tokens)
    ranks = s.ranks.tolist() if getattr(s, 'ranks', None) is not None else [None] * len(s.tokens)
    lps = s.logprobs.tolist()
    tokens = [token_entry(tok, i, lp, slp, r, st)
              for i, lp, slp, r, st in zip(s.tokens, lps, slps, ranks, steps)]
    if all(r is None for r in ranks) and all(st is not None for st in steps):
        ranks = [st.chosen_rank for st in steps]  # a beam: its Steps hold the ranks
        for e, r in zip(tokens, ranks):
            e['rank'] = r
    return dict(title=title, forced=forced, prompt=tok.decode(s.prompt), prompt_ids=list(s.prompt),
                tokens=tokens, totals=sample_totals(s, sampling),
                **text_fields(tok, s.prompt, s.tokens, lps, None if None in ranks else ranks))


def with_panels(page, model, tok, panels):
    """page with the inspector's panels (inspector.add_panels) in its docs, when a model and Panels are
    given; page['inspect'] says what they hold."""
    if model is not None and panels is not None:
        from nanoprobs.inspector import add_panels
        page['inspect'] = add_panels(page['docs'], model, tok, panels)
    return page


def sample_page(samples, tok, settings, forced=False, title='', model=None, panels=None):
    """The page's data for sample.py's results: decoding.Sample objects; with the model and
    inspector.Panels, the inspector's panels too."""
    settings = dict(settings)
    sampling = sampling_text(settings.get('temperature', 1.0), settings.get('top_k'), settings.get('top_p'))
    docs = [sample_doc(s, tok, 'fixed_response' if forced else f"sample {i}", sampling, forced)
            for i, s in enumerate(samples, start=1)]
    what = 'fixed response scored' if forced else f"{len(samples)} sample{'s' * (len(samples) != 1)}"
    return with_panels(dict(format=FORMAT, kind='sample', title=title or f"sample.py: {what}",
                            sampling=sampling, settings=setting_rows(settings), docs=docs), model, tok, panels)


def beam_page(L, beams, greedy, settings, panels=None):
    """The page's data for sample.py --num_beams: each beam (decoding.Beam) and greedy decoding's Sample,
    generated with details (their Steps: the candidates beam search itself saw at every step). There is
    no sampling distribution (beam search is deterministic)."""
    seqs = [b for b in list(beams) + [greedy] if b is not None and b.tokens]
    docs = []
    for j, b in enumerate(seqs):
        title = f"beam {j + 1}" if hasattr(b, 'score') else 'greedy decoding (temperature 0)'
        docs.append(model_only(sample_doc(b, L.tok, title)))  # greedy's T=0 distribution is not shown
    settings = {k: v for k, v in settings.items() if k not in SAMPLING}
    page = dict(format=FORMAT, kind='sample', title=f"sample.py: beam search, {len(beams)} beams and greedy decoding",
                sampling=None, settings=setting_rows(settings), docs=docs)
    return with_panels(page, L.model, L.tok, panels)


def model_only(doc):
    """doc without its tokens' sampling distribution (beams, GLTR: only the model's is meant)."""
    doc['model_only'] = True
    for e in doc['tokens']:
        for key in ('sample_logprob', 'sample_prob', 'sample_entropy'):
            e.pop(key, None)
    return doc


def gltr_page(samples, names, tok, settings, title='', model=None, panels=None):
    """The page of tools/gltr.py: each text (a decoding.Sample scored after <|endoftext|>, gltr.score_text)
    shaded by rank, with its GLTR summary, and a table of the texts' summaries side by side."""
    docs = [model_only(sample_doc(s, tok, name)) for s, name in zip(samples, names)]
    rows = []
    for doc in docs:
        g = doc['gltr']
        rows.append([doc['title'], str(g['tokens'])] + [share for _, _, share in g['ranks']] +
                    [g['mean_logprob'] or '', g['perplexity'] or ''])
    table = dict(head=['text', 'tokens', 'top 10', 'top 100', 'top 1000', 'beyond', 'mean log-prob',
                       'perplexity'], rows=rows, text=[0])
    page = dict(format=FORMAT, kind='sample', mode='rank', sampling=None,
                title=title or f"GLTR view: {len(docs)} text{'s' * (len(docs) != 1)}, every token scored after "
                               "<|endoftext|>", settings=setting_rows(settings), table=table, docs=docs)
    return with_panels(page, model, tok, panels)


def eval_page(d, title=''):
    """The page's data for eval.py's results: the dict it writes as results/eval_<name>.json."""
    cmp = d.get('comparison')
    before = {p['index']: p for p in cmp['before']['pairs']} if cmp else {}
    sampled = any(p.get('sample_logprobs') is not None for p in d['pairs'])
    rows, docs = [], []
    for j, p in enumerate(d['pairs']):
        lps = [-math.inf if x is None else x for x in p['logprobs']]
        slps = p.get('sample_logprobs')
        b = before.get(p['index'])
        same = b is not None and b['prompt_ids'] == p['prompt_ids'] and b['response_ids'] == p['response_ids']
        tokens = []
        for i, (t, lp, r, ex) in enumerate(zip(p['response_ids'], lps, p['ranks'], p['expected'])):
            e = dict(id=t, text=p['tokens'][i], logprob=num(lp), prob=format_prob(lp), rank=r, expected=ex)
            if slps is not None:
                s = -math.inf if slps[i] is None else slps[i]
                e.update(sample_logprob=num(s), sample_prob=format_prob(s))
            if same:
                blp = -math.inf if b['logprobs'][i] is None else b['logprobs'][i]
                e.update(before_logprob=num(blp), before_prob=format_prob(blp), before_rank=b['ranks'][i],
                         before_expected=b['expected'][i], change=num(lp - blp), change_ratio=format_ratio(lp - blp),
                         change_nats=f"{lp - blp:+.3f} nats" if math.isfinite(lp - blp) else '')
            tokens.append(e)
        mean = p.get('mean_logprob', p['logprob'] / max(1, len(p['tokens'])))  # results of earlier versions lack it
        ppl = format_ppl(perplexity(mean), '.2f')  # 'inf' past float range (null in the file)
        totals = [['tokens', str(len(tokens))], ['probability of the response', format_prob(p['logprob'])],
                  ['log-prob', f"{p['logprob']:.4f}"], ['perplexity', ppl],
                  ['greedy decoding gives it', 'yes' if p['greedy'] else 'no']]
        row = [str(p['index']), (p.get('joined') or [p['prompt']])[0],
               (p.get('joined') or [0, p['response']])[1],
               format_prob(p['logprob']), f"{p['logprob']:.3f}", ppl]
        if b is not None:
            dl = p['logprob'] - b['logprob']
            totals += [['before: probability', format_prob(b['logprob'])],
                       ['change', f"{dl:+.4f} nats ({format_ratio(dl)})"]]
            if not same:
                totals.append(['per-token change', 'not shown: the two runs tokenized this pair differently'])
            row += [format_prob(b['logprob']), f"{dl:+.3f}", format_ratio(dl)]
        prompt = (p.get('joined') or [p['prompt']])[0]
        docs.append(dict(title=f"pair {p['index']}", prompt=prompt, prompt_ids=p['prompt_ids'], tokens=tokens,
                         totals=totals, compare=same, gltr=gltr.summary(p['ranks'], lps, probability_scale()),
                         joined=joined(None, None, lps, text_pieces(p['tokens']))))
        rows.append(row)
    head = ['#', 'prompt', 'response', 'probability', 'log-prob', 'perplexity']
    if cmp:
        head += ['before', 'Δ log-prob', 'ratio']
    s = d.get('settings', {})
    settings = [['model', d.get('model', '')]] + [[k, str(v)] for k, v in s.items()]
    if cmp:
        settings.insert(1, ['before', f"{cmp['before'].get('model', '')} ({cmp.get('before_source', '')})"])
    t = d.get('totals', {})
    summary = [['pairs', str(t.get('pairs', len(docs)))], ['tokens', str(t.get('tokens', ''))],
               ['total log-prob', f"{t['logprob']:.4f}" if 'logprob' in t else ''],
               ['sum of the pairs\u2019 probabilities', t.get('sum_of_probabilities', '')]]
    if cmp:
        summary.append(['pairs more / less likely than before', f"{cmp.get('rose')} / {cmp.get('fell')}"])
    if isinstance(t.get('pairs'), int) and t['pairs'] > len(docs):  # report.HTML_PAIRS: a long run's first pairs
        summary.append(['pairs shown here', f"the first {len(docs):,} of {t['pairs']:,}; the results' .json and "
                        ".csv files hold every pair"])
    sampling = sampling_text(s.get('temperature', 1), s.get('top_k'), s.get('top_p')) if sampled else None
    return dict(format=FORMAT, kind='eval', title=title or f"eval.py: {d.get('model', '')}",
                sampling=sampling, compare=bool(cmp), settings=settings, summary=summary,
                table=dict(head=head, rows=rows), docs=docs)


def report_settings(values, device=None, dtype=None, forced=False, beams=False):
    """The settings a sample.py report shows, from the script's values: only those that applied (no
    out_dir unless init_from='resume'; a fixed response has no num_samples, max_new_tokens, seed or
    stop_at_eot; beam search no sampling settings but its own), and the device and dtype used rather
    than 'auto'."""
    names = SAMPLE_SETTINGS + (BEAM_SETTINGS if beams else ())
    out = {k: values[k] for k in names if k in values}
    if out.get('init_from', 'resume') != 'resume':
        out.pop('out_dir', None)
    if forced:
        for k in ('num_samples', 'max_new_tokens', 'seed', 'stop_at_eot'):
            out.pop(k, None)
    else:
        out.pop('fixed_response', None)
    if beams:
        out = {k: v for k, v in out.items() if k not in SAMPLING}
    if device is not None:
        out['device'] = str(device)
    if dtype is not None:
        out['dtype'] = str(dtype)
    return out


def setting_rows(settings):
    """[[name, value as text], ...]; strings quoted, so that a prompt of '\\n' is visible."""
    return [[k, repr(v) if isinstance(v, str) else str(v)] for k, v in settings.items() if v != '']


def live_page(model_name, about, defaults, limits, eot=None):
    """The page's data for serve.py: no texts yet; about the model (shown), the controls' defaults
    and limits, and the vocabulary's <|endoftext|> id (a whole text is scored after it; None: none)."""
    return dict(format=FORMAT, kind='live', title=f"nanoGPT-probs live: {model_name}",
                settings=setting_rows(about), defaults=defaults, limits=limits, docs=[], eot=eot,
                inspect=dict(live=True))


# -----------------------------------------------------------------------------
# the page

def script_json(obj):
    """obj as JSON that can sit inside a <script> element: nothing in it can close the element or start
    markup (<, >, & escaped), and U+2028/2029 are escaped too. NaN/inf are refused (use num())."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(',', ':'))
    for c, esc in (('&', '\\u0026'), ('<', '\\u003c'), ('>', '\\u003e'), ('\u2028', '\\u2028'),
                   ('\u2029', '\\u2029')):
        s = s.replace(c, esc)  # these characters only occur inside JSON strings, where the escape is equal
    return s


def _asset(name):
    with open(os.path.join(WEB, name), encoding='utf-8') as f:
        text = f.read()
    if name.endswith(('.js', '.css')) and re.search(r'</(script|style)', text, re.I):
        raise ValueError(f"web/{name} contains </script or </style, which would end its inline element")
    return text


def _sha(text):
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode('utf-8')).digest()).decode() + "'"


def scripts(live=False):
    """The page's scripts, in order: the shared page.js, then the report's or the live app's own."""
    return [_asset('page.js'), _asset('inspector.js'), _asset('live.js' if live else 'report.js')]


def csp(scripts, css, live=False):
    """The Content-Security-Policy: only the page's own inline scripts and style (by hash), no network
    (the live app may fetch from its own server), no forms, frames, plugins or base URL."""
    connect = "'self'" if live else "'none'"
    return (f"default-src 'none'; script-src {' '.join(_sha(js) for js in scripts)}; style-src {_sha(css)}; "
            f"img-src data:; connect-src {connect}; base-uri 'none'; form-action 'none'")


def probability_scale():
    """web/scale.json: the probability scale (bucket edges, names, colours, text ink) that the page's
    shading and the PNG charts share."""
    return json.loads(_asset('scale.json'))


def scale_css(scale):
    """The scale as CSS: the colours --v0..--v7 (the rank buckets reuse them) and the classes .c-p0..7."""
    colours = ' '.join(f"--v{i}: {c};" for i, c in enumerate(scale['colors']))
    classes = '\n'.join(f".c-p{i} {{ background: var(--v{i}); color: {ink}; }}"
                         for i, ink in enumerate(scale['ink']))
    return f":root {{ {colours} }}\n{classes}\n"


def render(data, live=False):
    """The whole page as a string: web/report.html with the CSS (the probability scale's first), the
    scripts and the data inlined; the live app adds web/live.html (its form's markup) and live.js, which the
    static report leaves out."""
    scale = probability_scale()
    html, css, js = _asset('report.html'), scale_css(scale) + _asset('report.css'), scripts(live)
    policy = csp(js, css, live)
    parts = {'CSP': policy, 'CSS': css, 'PAGE': _asset('live.html') if live else '',
             'SCRIPTS': '\n'.join(f"<script>{x}</script>" for x in js), 'DATA': script_json(data),
             'SCALE': script_json({k: scale[k] for k in ('edges', 'names')})}
    return re.sub(r'\{\{(CSP|CSS|PAGE|SCRIPTS|DATA|SCALE)\}\}', lambda m: parts[m.group(1)], html), policy


def write_html(data, path, live=False):
    """Write the page for data to path (atomically, so a reader never sees half a page)."""
    text, _ = render(data, live)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return atomic.write_text(path, text)


def sample_html(samples, tok, run_dir, settings, forced=False, model=None, panels=None):
    """run_dir/index.html for sample.py's samples (decoding.Sample objects); with the model and
    inspector.Panels, the inspector's panels too. Returns its path."""
    page = sample_page(samples, tok, settings, forced, model=model, panels=panels)
    return write_html(page, os.path.join(run_dir, 'index.html'))


def beam_html(L, beams, greedy, run_dir, settings, panels=None):
    """run_dir/index.html for sample.py --num_beams (see beam_page). Returns its path."""
    return write_html(beam_page(L, beams, greedy, settings, panels), os.path.join(run_dir, 'index.html'))
