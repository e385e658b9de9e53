"""
Sample from a trained model, and see the probability of everything it generates.

    python sample.py --init_from=gpt2 --start="Once upon a time" --num_samples=3 --max_new_tokens=50
    python sample.py --init_from=gpt2 --start="Once upon a time" --max_new_tokens=10 --num_samples=1 \
        --show_probs=True
    python sample.py --init_from=gpt2 --start="The capital of France is" --fixed_response=" Paris" \
        --show_probs=True
    python sample.py --init_from=gpt2 --start="Once upon a time" --compare_temperatures=0.5,1.0,2.0
    python sample.py --init_from=gpt2 --start="The capital of France is" --num_beams=4 --max_new_tokens=20
    python sample.py --out_dir=out-children --start=FILE:prompt.txt      # a checkpoint from train.py

Upstream nanoGPT's sample.py, with its settings and defaults (device and dtype default to 'auto'), plus:
- after each sample, its probability under the *model distribution* (softmax of the logits at
  temperature 1, no top-k/top-p: what the model believes) and under the *sampling distribution* (after
  temperature, top-k and top-p: what the tokens were actually drawn from), as probability and log-prob;
- show_probs=True: for every step, one terminal line and one bar chart of the probs_top_k most likely
  tokens, the chosen one in another colour, saved as results_dir/sample_<date-time>/sample_<i>/step_<n>.png
  (for the first chart_samples samples, drawn by one process per core), and per sample an overview
  figure (overview.png) of its tokens shaded by probability;
- fixed_response: score a given response after the prompt instead of sampling (same output and charts);
- compare_temperatures: one step's distribution under several temperatures, side by side (temperatures.png);
- num_beams=N: deterministic beam search (model.GPT.beam_search), its beams ranked with their scores shown
  as arithmetic, next to the greedy continuation and its probability (see tools/beam.py).
- html=True (the default): results_dir/sample_<date-time>/index.html, every token shaded by probability
  with its top candidates, logit lens and attention in a docked inspector (html_attribution='ig' adds
  integrated-gradients attribution), one self-contained page (html_report.py; serve.py is the live version).
The samples are generated together, batch_size at a time, as the rows of one batch through the KV cache;
sample i draws from its own random stream (seed + i - 1), so batch_size does not change its tokens
(its log-probs only by float rounding, ~1e-6 in float32; see docs/sample.md).
Charts are drawn after generation, from the numbers generate() collected.
"""
import os
import re
from ast import literal_eval
from collections.abc import Sequence
from datetime import datetime

import torch

from nanoprobs import checks, load
# renamed: this script has its own step_bars() and overview(), which build those modules' data
from nanoprobs.plots import common, overview as overviews, steps as step_charts
from configurator import UserError, configure, run_main
from nanoprobs.sampling import check_sampling, make_generator
from nanoprobs.beams import greedy_and_beams
from nanoprobs.decoding import under_temperatures
from nanoprobs.formatting import format_ppl, format_prob, perplexity, sampling_text, text_tail, token_label

# -----------------------------------------------------------------------------
init_from: str = 'resume'  # 'resume' (from out_dir), a gpt2 variant ('gpt2-xl'), a Hugging Face folder, a .pt
out_dir: str = 'out'  # ignored if init_from is not 'resume'
start: str = "\n"  # or "<|endoftext|>" or etc. Can also specify a file, use as: "FILE:prompt.txt"
num_samples: int = 10  # number of samples to draw
batch_size: int = 10  # samples generated together in one batch; lower it to save memory (the KV cache
#   takes 75 MB a row for GPT-2 124M, 630 MB for gpt2-xl, in float32). Sample i draws from its own
#   random stream seeded with seed+i-1, so a seed gives the same samples whatever the batch size (the
#   log-probs differ by float rounding, ~1e-6 in float32, which could flip a draw only at a near-exact tie)
max_new_tokens: int = 500  # number of tokens generated in each sample
temperature: float = 0.8  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, 0 = greedy
top_k: int | None = 200  # retain only the top_k most likely tokens, others get 0 probability (None = off)
top_p: float = 1.0  # nucleus: keep the most likely tokens holding top_p of the probability (1.0 = off)
seed: int = 1337  # sample i (1-based) draws from its own random stream seeded with seed+i-1
device: str = 'auto'  # 'auto' (cuda, then mps, then cpu), or 'cpu', 'cuda', 'cuda:0', 'cuda:1', 'mps', etc.
dtype: str = 'auto'  # 'auto' (bfloat16 or float16 on CUDA, else float32), 'float32', 'bfloat16', 'float16'
compile: bool = False  # torch.compile the model (CUDA only); as upstream, generate() itself runs uncompiled
stop_at_eot: bool = False  # end a sample once it produces <|endoftext|> (counted in its probability)
show_probs: bool = False  # per step: a terminal line and a bar chart of the probs_top_k most likely tokens
chart_samples: int = 0  # show_probs: step charts for the first N samples (-1 = all; 0 = all if they come
#   to at most 100 charts, else sample 1 only). Every sample still gets its terminal lines and overview.png
chart_workers: int = 0  # processes drawing step charts: 0 = one per core (at most 8), 1 = this process only
probs_top_k: int = 10  # how many of the most likely tokens each step's chart and line show
fixed_response: str | list = ''  # score this response instead of sampling: text, "FILE:path" or
#   token ids "[464, 3290]"; text that looks like a broken id list ("[1,") is an error: write "text:[1,"
#   to score it as text
compare_temperatures: str | list = ''  # e.g. "0.5,1.0,2.0": one step's top tokens under each
#   temperature, side by side
compare_step: int = 0  # the step compared: 0 = the first new token, n = after n tokens of sample 1
#   (or the response)
results_dir: str = 'results'  # charts go to results_dir/sample_<date-time>/
show: bool = True  # also show the charts in windows when a display exists (after the run; False = files only)
num_beams: int = 0  # > 0: beam search with this many beams instead of sampling, shown next to greedy decoding
length_penalty: float = 1.0  # beam score = sum of log-probs / tokens^length_penalty
no_repeat_ngram_size: int = 0  # beam search: n > 0 bans any n-gram from occurring twice
early_stopping: bool | str = False  # beam search: True, False (Hugging Face's heuristic) or 'never' (exact)
html: bool = True  # write results_dir/sample_<date-time>/index.html: every token's probability, in a browser
html_inspect: bool = True  # the page's inspector also shows each token's logit lens and attention (one extra
#   forward pass per sample; a page past a stated size keeps them for the first N tokens of each text)
html_attribution: str = ''  # 'ig' (integrated gradients) or 'gxi' (gradient x input): which earlier tokens
#   made each token likely, in the page (Captum; backward passes per token, its cost is printed). '' = off
# -----------------------------------------------------------------------------

MAX_WINDOWS = 4  # with show, at most this many overview windows (every PNG is saved regardless)


ID_LIST = re.compile(r'\s*\[[\d\s,.+-]*\]?\s*')  # only what a list of token ids is made of


def parse_response(value):
    """fixed_response as a list of token ids, or as a str: text, FILE:path, or text:<the text itself>.
    Text made only of what an id list is made of ("[1,", "[1 2]") is a mistyped list: an error."""
    if isinstance(value, str) and value.lstrip().startswith('['):
        try:
            parsed = literal_eval(value.strip())
        except (SyntaxError, ValueError):
            parsed = None
        if isinstance(parsed, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in parsed):
            return parsed  # a list of token ids
        if ID_LIST.fullmatch(value):
            raise UserError(f"fixed_response={value!r} looks like a list of token ids but is not one: write "
                            f"the ids as --fixed_response='[464, 3290]', or --fixed_response='text:{value}' "
                            f"to score it as text")
    return value  # text, e.g. "[Verse 1] ..."


def response_ids(value, tok):
    """The token ids of fixed_response: text, FILE:path, text:<text> (taken as is), or a list of ids
    ("[464, 3290]" or a list). Returns (ids, what it was read as)."""
    value = parse_response(value)
    if isinstance(value, (list, tuple)):
        ids, what = list(value), 'token ids'  # checked against the vocabulary by model.score()
    elif value.startswith('text:'):
        ids, what = tok.encode(value[len('text:'):]), 'text'
    else:
        ids, what = tok.encode(load.read_text(value, 'fixed_response')), 'text'
    if not ids:
        raise ValueError("fixed_response is empty: give the text (or token ids) to score after the prompt")
    return ids, what


def parse_temperatures(value):
    """'0.5,1.0,2.0' (or a list) -> [0.5, 1.0, 2.0]; '' -> []."""
    items = value if isinstance(value, (list, tuple)) else [v for v in value.replace(' ', '').split(',') if v]
    temps = []
    for v in items:
        try:
            t = float(v)
            check_sampling(t)
        except (TypeError, ValueError):
            raise ValueError(f"compare_temperatures={value!r}: {v!r} is not a temperature (a number >= 0); "
                             "write them comma-separated, e.g. --compare_temperatures=0.5,1.0,2.0") from None
        temps.append(t)
    return temps


MAX_KEPT_SAMPLES = 10_000  # html / show_probs: every sample's steps stay in memory for the report


class SampleGenerators(Sequence):
    """make_generator(device, seed + i) for sample i, made when its batch runs (a list of a million
    generators would hold a million generator states at once)."""

    def __init__(self, device, seed, n):
        self.device, self.seed, self.n = device, seed, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return make_generator(self.device, self.seed + i % self.n)


def generate_samples(model, ctx, prompt, n, max_new_tokens, temperature, top_k, top_p, details=0,
                     response=None, stop_token=None, generator=None, batch_size=None):
    """Yield n decoding.Sample results for the prompt (token ids), in order, generated batch_size at a
    time as the rows of one batch (all n at once by default): each batch is one pass through the KV
    cache, where a row that stops early waits for the others. generator: a list of n generators, one per
    sample, makes each sample independent of batch_size; a single one is shared by the rows.
    With response (token ids), that response is forced and scored instead of sampled."""
    device = model.lm_head.weight.device
    per_row = isinstance(generator, Sequence)  # a list, or SampleGenerators
    bs = batch_size or n
    for i in range(0, n, bs):
        b = min(bs, n - i)
        x = torch.tensor([prompt] * b, dtype=torch.long, device=device)  # (b, T)
        with torch.no_grad(), ctx:
            out = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                 fixed_response=response, stop_token=stop_token, details=details,
                                 generator=generator[i:i + b] if per_row else generator)
        yield from out  # outside the autocast context: the caller's code runs as usual


def step_line(t, step, tok, forced=False, alternatives=4):
    """One compact terminal line for step t (1-based): chosen token, its probability and rank, the top few."""
    label = token_label(tok.token_text(step.chosen), 16)
    top = ' '.join(f"{token_label(tok.token_text(i), 12)} {format_prob(lp, 3)}"
                   for i, lp in zip(step.top_ids[:alternatives], step.top_logprobs[:alternatives]))
    verb = 'forced' if forced else 'chose'
    return (f"  step {t:>3} {verb} {label:<16} p {format_prob(step.chosen_logprob):>9} "
            f"(sampling {format_prob(step.chosen_sample_logprob):>9})  rank {step.chosen_rank:<5} top: {top}")


def summary(sample, i, n, temperature, top_k, top_p, forced=False):
    """The lines printed after a sample: its length and its probability under both distributions."""
    sampling = sampling_text(temperature, top_k, top_p)
    T = len(sample.tokens)
    if forced:
        head = f"fixed_response: {T} tokens, scored after the prompt"
        sdist = f"sampling distribution ({sampling}; what sampling would have drawn from)"
    else:
        head = f"sample {i}/{n}: {T} new tokens" + (" (stopped at <|endoftext|>)" if sample.stopped else '')
        sdist = f"sampling distribution ({sampling}; what the tokens were drawn from)"
    mdist = "model distribution (T=1, no top-k/top-p; what the model believes)"
    lp, slp = sample.logprob, sample.sample_logprob
    ppl = f", perplexity {format_ppl(perplexity(lp / T), '.2f')}" if T else ''  # inf past float range
    lines = [head,
             f"  probability under the {mdist}: {format_prob(lp)} (log-prob {lp:.4f}{ppl})",
             f"  probability under the {sdist}: {format_prob(slp)} (log-prob {slp:.4f})"]
    if slp == float('-inf'):
        out = int(torch.isinf(sample.sample_logprobs).sum())
        lines.append(f"  ({out} of its tokens lie outside what top-k/top-p would have allowed)")
    return lines


def step_bars(sample, tok, i, temperature, top_k, top_p, forced=False):
    """The bar-chart data (plots.steps.StepBars) of every step of a sample generated with details."""
    sampling = sampling_text(temperature, top_k, top_p)
    P, n = len(sample.prompt), len(sample.steps)
    who = 'fixed_response' if forced else f"sample {i}"
    out = []
    for t, step in enumerate(sample.steps):
        so_far = tok.display(sample.ids[max(0, P + t - 24):P + t])  # the tail is all the title shows
        title = f"{who} · step {t + 1}/{n} · {sampling}\ntext so far: \"{text_tail(so_far)}\""
        out.append(step_charts.step_bars(step, tok, title, sampling, forced))
    return out


def overview(sample, tok, i, temperature, top_k, top_p, forced=False):
    """The per-sample overview figure's data (plots.overview.SampleOverview)."""
    sampling = sampling_text(temperature, top_k, top_p)
    lp, slp = sample.logprob, sample.sample_logprob
    who = 'fixed_response' if forced else f"sample {i}"
    title = (f"{who}: {len(sample.tokens)} tokens · {sampling}\n"
             f"probability of the whole response: {format_prob(lp)} (log {lp:.2f}) "
             "under the model distribution, "
             f"{format_prob(slp)} (log {slp:.2f}) under the sampling distribution")
    return overviews.SampleOverview(prompt=tok.decode(sample.prompt),
                                tokens=[tok.token_text(t) for t in sample.tokens],
                                logprobs=sample.logprobs.tolist(),
                                sample_logprobs=sample.sample_logprobs.tolist(),
                                title=title, sampling=sampling, forced=forced,
                                pieces=tok.pieces(sample.tokens))  # a character of several tokens: one piece


@torch.no_grad()
def temperature_comparison(model, ctx, ids, temps, top_k, top_p, k, tok, step=0):
    """The next-token distribution after ids (token ids) under each temperature
    (plots.overview.TemperatureComparison).
    One forward pass; the k tokens shown are the model's most likely (temperature keeps their order)."""
    with ctx:
        top, lps, entropies = under_temperatures(model, ids, temps, top_k, top_p, k)
    probs = [lp.exp().tolist() for lp in lps]
    filt = sampling_text(1, top_k, top_p).partition(', ')[2]  # the top-k/top-p part only
    title = (f"Next-token distribution at step {step + 1}, after "
             f"\"{text_tail(tok.display(ids[-24:]), 50)}\": "
             f"the model's {len(top)} most likely tokens under each temperature")
    return overviews.TemperatureComparison(labels=[token_label(tok.token_text(i)) for i in top.tolist()],
                                       temperatures=list(temps), probs=probs, entropies=entropies,
                                       title=title, sampling=filt)


def temperature_table(cmp):
    """The comparison as text: one row per token, one column per temperature."""
    cols = ['greedy' if t == 0 else f"T={t:g}" for t in cmp.temperatures]
    rows = [f"  {'token':<16}" + ''.join(f"{c:>10}" for c in cols)]
    for j, lab in enumerate(cmp.labels):
        rows.append(f"  {lab:<16}" + ''.join(f"{p[j]:>10.4f}" for p in cmp.probs))
    rows.append(f"  {'entropy (nats)':<16}" + ''.join(f"{e:>10.3f}" for e in cmp.entropies))
    return rows


def new_run_dir(results_dir, prefix='sample'):
    """results_dir/<prefix>_<date-time>, made fresh (a suffix if that second is taken)."""
    base = os.path.join(results_dir, f"{prefix}_{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"


AUTO_CHARTS = 100  # chart_samples=0: every sample's step charts up to this many in all, else sample 1's only


def charted_samples(lengths, chart_samples):
    """How many samples (of step counts `lengths`) get step charts, for the chart_samples setting."""
    if chart_samples < 0 or (chart_samples == 0 and sum(lengths) <= AUTO_CHARTS):
        return len(lengths)
    return min(chart_samples or 1, len(lengths))


def save_step_charts(samples, tok, run_dir, temperature, top_k, top_p, k, forced=False, windows=False,
                     chart_samples=0, workers=0):
    """The step charts of the first chart_samples samples (see charted_samples) and every sample's
    overview (samples generated with details) into run_dir. workers: see plots.steps.chart_workers_for."""
    jobs, all_bars = [], []
    drawn, n = charted_samples([len(s.steps) for s in samples], chart_samples), len(samples)
    for i, s in enumerate(samples, start=1):
        if i > drawn and not windows:  # a sample's bars are only for its charts and the step viewer
            continue
        digits = max(3, len(str(len(s.steps))))
        bars = step_bars(s, tok, i, temperature, top_k, top_p, forced)
        folder = os.path.join(run_dir, f"sample_{i}")
        if i <= drawn:
            jobs += [(b, os.path.join(folder, f"step_{t:0{digits}d}.png"))
                     for t, b in enumerate(bars, start=1)]
        all_bars += bars
    if drawn < n:
        total = sum(len(s.steps) for s in samples)
        print(f"step charts for {'sample 1' if drawn == 1 else f'samples 1-{drawn}'} only "
              f"(--chart_samples=-1 draws all {total} charts of the {n} samples)")
    procs = step_charts.chart_workers_for(len(jobs), workers)
    print(f"drawing {len(jobs)} step charts into {run_dir}/sample_<i>/step_<n>.png"
          + (f" ({procs} processes)" if procs > 1 else ''))
    secs = step_charts.draw_step_charts(jobs, k, procs)
    print(f"drew {len(jobs)} step charts in {secs:.1f} s ({secs / max(len(jobs), 1):.3f} s per chart)")
    for i, s in enumerate(samples, start=1):
        path = overviews.draw_overview(overview(s, tok, i, temperature, top_k, top_p, forced),
                                   os.path.join(run_dir, f"sample_{i}", 'overview.png'),
                                   show=windows and i <= MAX_WINDOWS)
        print(f"overview of {'fixed_response' if forced else f'sample {i}'}: {path}")
    if windows and all_bars:
        step_charts.step_viewer(all_bars, k)  # one window to page through every step


def panels():
    """The report's inspector panels (html_inspect, html_attribution), or None for none."""
    if not (html_inspect or html_attribution):
        return None
    from nanoprobs.inspector import Panels
    return Panels(lens=html_inspect, attention=html_inspect, attribution=html_attribution)


def beam_search_vs_greedy(loaded, prompt, stop_token):
    """num_beams > 0: the beams of a deterministic beam search, ranked, next to greedy decoding."""
    from nanoprobs.beams import print_beams
    with loaded.ctx:
        greedy, beams, _ = greedy_and_beams(loaded.model, prompt, max_new_tokens, num_beams, length_penalty,
                                            no_repeat_ngram_size, stop_token, early_stopping,
                                            details=probs_top_k if html else 0)
    print(f"prompt: {loaded.tok.decode(prompt)!r}")
    print_beams(beams, greedy, loaded.tok, length_penalty)
    if html:
        from nanoprobs import html_report
        settings = html_report.report_settings(globals(), loaded.device, loaded.dtype, beams=True)
        with loaded.ctx:
            path = html_report.beam_html(loaded, beams, greedy, new_run_dir(results_dir), settings, panels())
        print(f"report (open it in a browser): {path}")


def main():
    # check the settings before loading anything
    check_sampling(temperature, top_k, top_p)
    for name, value, lo in (('num_samples', num_samples, 1), ('batch_size', batch_size, 1),
                            ('chart_samples', chart_samples, -1)):
        if value < lo:
            raise UserError(f"{name} must be >= {lo}, got {value}" + (" (-1 = all)" if lo == -1 else ''))
    if (html or show_probs) and not fixed_response and num_samples > MAX_KEPT_SAMPLES:
        raise UserError(f"num_samples={num_samples:,} with {'html' if html else 'show_probs'}=True: the report "
                        f"keeps every sample's token details in memory, so at most {MAX_KEPT_SAMPLES:,}; use "
                        "fewer samples, or --html=False --show_probs=False to print any number (in bounded "
                        "memory, one batch at a time)")
    checks.check_seed(seed, count=1 if fixed_response else num_samples)  # sample i uses seed + i - 1
    if fixed_response:
        parse_response(fixed_response)  # a mistyped id list fails here, before the model loads
    if probs_top_k < 1:
        raise ValueError(f"probs_top_k must be >= 1, got {probs_top_k}")
    temps = parse_temperatures(compare_temperatures)
    if compare_step < 0:
        raise ValueError(f"compare_step must be >= 0 (0 = the first new token), got {compare_step}")
    if num_beams < 0 or no_repeat_ngram_size < 0:
        raise ValueError(f"num_beams and no_repeat_ngram_size must be >= 0, "
                         f"got {num_beams}, {no_repeat_ngram_size}")
    if html_attribution not in ('', 'ig', 'gxi'):
        raise UserError(f"html_attribution={html_attribution!r}: give 'ig' (integrated gradients), 'gxi' "
                        "(gradient x input) or '' (off)")
    if num_beams and (fixed_response or show_probs or compare_temperatures):
        raise ValueError("num_beams is beam search on its own: leave out fixed_response, show_probs and "
                         "compare_temperatures (or set --num_beams=0)")

    loaded = load.load_model(init_from, out_dir, device, dtype, compile, seed=seed)
    model, tok = loaded.model, loaded.tok
    # no TF32 here (upstream enables it): the printed probabilities stay float32-exact, as in eval.py
    prompt = load.encode_prompt(tok, start)
    response, forced = None, bool(fixed_response)
    if forced:
        response, what = response_ids(fixed_response, tok)
        print(f"fixed_response ({what}): {len(response)} tokens; scoring it once instead of sampling "
              f"(num_samples and max_new_tokens do not apply)")
    n = 1 if forced else num_samples
    stop_token = None
    if stop_at_eot:
        if tok.eot is None:
            print(f"note: stop_at_eot ignored, the tokenizer {tok.name} has no <|endoftext|>")
        else:
            stop_token = tok.eot
    if num_beams:
        return beam_search_vs_greedy(loaded, prompt, stop_token)
    if show_probs:
        steps = len(response) if forced else f"up to {max_new_tokens}"
        which = ('all samples' if chart_samples < 0 else f"the first {chart_samples}" if chart_samples else
                 f"every sample if they come to at most {AUTO_CHARTS} charts, else sample 1")
        print(f"show_probs: after generation, step charts ({n} sample{'s' * (n != 1)} x {steps} steps; charts for "
              f"{which}: --chart_samples) and every sample's overview go under {results_dir}/")
    # one random stream per sample: a seed gives the same samples whatever batch_size
    generators = SampleGenerators(loaded.device, seed, n)
    if n > 1:
        print(f"generating {n} samples, {min(batch_size, n)} at a time")

    samples = []
    details = probs_top_k if show_probs or html else 0
    for i, s in enumerate(generate_samples(model, loaded.ctx, prompt, n, max_new_tokens, temperature, top_k,
                                           top_p, details, response, stop_token, generators, batch_size),
                          start=1):
        if show_probs or html or not samples:  # the report's samples; else sample 1 (compare_temperatures)
            samples.append(s)
        print(tok.decode(s.ids))
        if show_probs:
            print(f"--- {'fixed_response' if forced else f'sample {i}'}, step by step "
                  f"(p: model distribution; sampling: sampling distribution; rank under the model) ---")
            for t, step in enumerate(s.steps, start=1):
                print(step_line(t, step, tok, forced))
        print('\n'.join(summary(s, i, n, temperature, top_k, top_p, forced)))
        print('---------------')

    run_dir = new_run_dir(results_dir) if (show_probs or temps or html) else None
    windows = show and common.interactive_display()
    if show_probs:
        save_step_charts(samples, tok, run_dir, temperature, top_k, top_p, probs_top_k, forced, windows,
                         chart_samples, chart_workers)
    if temps:
        base = samples[0].ids if samples else prompt
        # sample 1 may be shorter (<|endoftext|>, max_new_tokens)
        step = min(compare_step, len(base) - len(prompt))
        if step != compare_step:
            print(f"note: compare_step={compare_step}, but sample 1 has {len(base) - len(prompt)} tokens; "
                  f"comparing temperatures at step {step + 1}")
        cmp = temperature_comparison(model, loaded.ctx, base[:len(prompt) + step], temps, top_k, top_p,
                                     probs_top_k, tok, step)
        print(cmp.title)
        print('\n'.join(temperature_table(cmp)))
        path = overviews.draw_temperature_comparison(cmp, os.path.join(run_dir, 'temperatures.png'),
                                                     show=windows)
        print(f"temperature comparison: {path}")
    if html:
        from nanoprobs import html_report
        settings = html_report.report_settings(globals(), loaded.device, loaded.dtype, forced=forced)
        with loaded.ctx:
            path = html_report.sample_html(samples, tok, run_dir, settings, forced, model, panels())
        print(f"report (open it in a browser): {path}")
    if windows and (show_probs or temps):
        print("showing the charts (close the windows to finish; --show=False skips this)")
        common.show_windows()


if __name__ == '__main__':
    configure(globals())
    run_main(main)
