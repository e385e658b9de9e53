"""sample.py: per-step bar charts (--show_probs), sample probabilities, fixed_response, temperature comparison.

Every number handed to a chart is checked against an independent float64 log_softmax of a plain
forward pass (no KV cache, no generate()); the CLI runs headless (Agg) on tiny models."""
import os
import re
from contextlib import nullcontext

import pytest
import torch

import sample as S
from conftest import make_hf_dir, run_script, tiny_model, write_ckpt
from configurator import configure
from nanoprobs.decoding import Sample
from nanoprobs.formatting import format_prob, plain, text_tail, token_label
from nanoprobs.plots import common, overview, steps

PROMPT = "Once upon a time"


@torch.no_grad()
def reference(model, ids, temperature=1.0, top_k=None):
    """float64 log-probs (V,) of the next token after ids: (model distribution, sampling distribution),
    written out here from a plain forward pass rather than taken from model.py's helpers."""
    logits = model(torch.tensor([ids]))[0][0, -1].double()  # (V,)
    model_lp = torch.log_softmax(logits, -1)
    z = logits / temperature
    if top_k:
        z = z.masked_fill(z < z.topk(top_k).values[-1], float('-inf'))
    return model_lp, torch.log_softmax(z, -1)


def check_bars(bars, model, ids, chosen, temperature, top_k, k, tok):
    """bars (plots.steps.StepBars) shows the model's k most likely tokens after ids, both distributions,
    and highlights `chosen` (by id), as an extra bar with its rank if it is outside the top k."""
    mlp, slp = reference(model, ids, temperature, top_k)
    ref = mlp.topk(k + 1)
    n = len(bars.ids)
    top = bars.ids[:k]
    # the k most likely tokens, most likely first (ids compared as sets where float32 rounding could swap a near-tie)
    assert bars.probs[:k] == pytest.approx(ref.values[:k].exp().tolist(), rel=1e-4, abs=1e-9)
    if ref.values[k - 1] - ref.values[k] > 1e-4:
        assert set(top) == set(ref.indices[:k].tolist())
    assert bars.probs[:n] == pytest.approx(mlp[bars.ids].exp().tolist(), rel=1e-4, abs=1e-9)
    assert bars.sample_probs == pytest.approx(slp[bars.ids].exp().tolist(), rel=1e-4, abs=1e-9)
    assert bars.labels == [token_label(tok.token_text(i)) for i in bars.ids]
    # the highlighted bar is the chosen token, matched by id, with its true rank under the model
    assert bars.ids[bars.chosen] == chosen
    rank = 1 + int((mlp > mlp[chosen]).sum())
    assert bars.ranks[bars.chosen] == rank
    assert bars.extra == (chosen not in top)
    if bars.extra:
        assert n == k + 1 and bars.chosen == k and rank > k
    else:
        assert n == k


def drawn(chart):
    """What a StepChart shows: (model bar widths, sampling bar widths, highlighted indices, y labels)."""
    n = len(chart.ax.get_yticks())
    mw = [b.get_width() for b in chart.model_bars[:n]]
    sw = [b.get_width() for b in chart.sample_bars[:n]]
    from matplotlib.colors import to_rgba
    red = to_rgba(common.CHOSEN_COLOR)
    hi = [i for i, b in enumerate(chart.model_bars[:n]) if tuple(b.get_facecolor()) == red]
    labels = chart.ax.get_yticklabels()
    assert [i for i, t in enumerate(labels) if to_rgba(t.get_color()) == red] == hi  # the token's label too
    return mw, sw, hi, [t.get_text() for t in labels]


def test_bars_are_the_models_top_k_and_highlight_the_sampled_token(gpt2_tok):
    model, tok = tiny_model(), gpt2_tok
    prompt = tok.encode(PROMPT)
    gen = torch.Generator().manual_seed(0)
    s, = S.generate_samples(model, nullcontext(), prompt, 1, 6, 0.8, 200, 1.0, details=10, generator=gen)
    bars = S.step_bars(s, tok, 1, 0.8, 200, 1.0)
    assert len(bars) == len(s.tokens) == 6
    chart = steps.StepChart(10)
    try:
        for t, b in enumerate(bars):
            check_bars(b, model, s.ids[:len(prompt) + t], s.tokens[t], 0.8, 200, 10, tok)
            assert f"step {t + 1}/6" in b.title and 'T=0.8' in b.title and 'top-k 200' in b.title
            assert text_tail(tok.decode(s.ids[:len(prompt) + t])[-40:], 40)[1:] in b.title  # text so far
            chart.render(b)  # the drawing shows exactly this data
            mw, sw, hi, labels = drawn(chart)
            assert mw == pytest.approx(b.probs) and sw == pytest.approx(b.sample_probs)
            assert hi == [b.chosen] and labels[b.chosen].startswith(plain(b.labels[b.chosen]))
            # the numbers beside the bars: model, then sampling, and the chosen one's rank
            for i in range(len(b.ids)):
                cells = chart.values[i].get_text().split()
                assert cells[:2] == [format_prob(b.logprobs[i], 3), format_prob(b.sample_logprobs[i], 3)]
            assert chart.values[b.chosen].get_text().endswith(f"chosen, rank {b.ranks[b.chosen]}")
            # the terminal line says the same: chosen token, p under the model, under sampling, rank
            step = s.steps[t]
            line = S.step_line(t + 1, step, tok)
            assert f"p {format_prob(step.chosen_logprob):>9} (sampling {format_prob(step.chosen_sample_logprob):>9})" in line
            assert f"rank {step.chosen_rank} " in line
    finally:
        chart.close()
    # the overview shades each token by its model probability, and plots both distributions
    ov = S.overview(s, tok, 1, 0.8, 200, 1.0)
    assert ov.logprobs == pytest.approx(s.logprobs.tolist()) and ov.sample_logprobs == pytest.approx(s.sample_logprobs.tolist())
    assert ov.tokens == [tok.token_text(i) for i in s.tokens]
    # the interactive viewer pages through the same charts with the arrow keys
    from matplotlib.backend_bases import KeyEvent
    viewer = steps.step_viewer(bars, 10)
    try:
        assert viewer.title.get_text() == bars[0].title
        for key, want in (('right', 1), ('right', 2), ('left', 1), ('end', 5), ('right', 5), ('home', 0)):
            viewer.fig.canvas.callbacks.process('key_press_event', KeyEvent('key_press_event', viewer.fig.canvas, key))
            assert viewer.title.get_text() == bars[want].title
    finally:
        viewer.close()


def test_chosen_token_outside_top_k_is_an_extra_bar_with_its_rank(gpt2_tok, tmp_path):
    model, tok = tiny_model(), gpt2_tok
    prompt = tok.encode(PROMPT)
    # forced: the least likely token after the prompt, then the most likely one
    mlp, _ = reference(model, prompt)
    worst, best = int(mlp.argmin()), int(mlp.argmax())
    s, = S.generate_samples(model, nullcontext(), prompt, 1, 0, 0.8, 200, 1.0, details=10, response=[worst, best])
    bars = S.step_bars(s, tok, 1, 0.8, 200, 1.0, forced=True)
    check_bars(bars[0], model, prompt, worst, 0.8, 200, 10, tok)
    assert bars[0].extra and bars[0].ranks[-1] == 1 + int((mlp > mlp[worst]).sum()) > 10000
    assert bars[0].sample_probs[-1] == 0.0  # top-k 200 would never have drawn it
    check_bars(bars[1], model, prompt + [worst], best, 0.8, 200, 10, tok)
    chart = steps.StepChart(10)
    try:
        chart.draw(bars[0], str(tmp_path / 'extra.png'))
        mw, sw, hi, labels = drawn(chart)
        assert len(mw) == 11 and hi == [10] and labels[10].endswith(f"#{bars[0].ranks[-1]}")
        assert chart.sep.get_visible()
        assert (tmp_path / 'extra.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    finally:
        chart.close()
    # sampled: a high temperature and no top-k draw tokens outside the top 3 (the seed makes it reproducible)
    gen = torch.Generator().manual_seed(1)
    s, = S.generate_samples(model, nullcontext(), prompt, 1, 8, 3.0, None, 1.0, details=3, generator=gen)
    bars = S.step_bars(s, tok, 1, 3.0, None, 1.0)
    assert any(b.extra for b in bars)
    for t, b in enumerate(bars):
        check_bars(b, model, s.ids[:len(prompt) + t], s.tokens[t], 3.0, None, 3, tok)


def test_fixed_response_scores_and_highlights_the_forced_tokens(gpt2_tok):
    model, tok = tiny_model(), gpt2_tok
    prompt = tok.encode(PROMPT)
    response, what = S.response_ids("[464, 3290, 318]", tok)
    assert (response, what) == ([464, 3290, 318], 'token ids')
    s, = S.generate_samples(model, nullcontext(), prompt, 1, 500, 0.8, 200, 1.0, details=10, response=response)
    assert s.tokens == response
    bars = S.step_bars(s, tok, 1, 0.8, 200, 1.0, forced=True)
    want = 0.0
    for t, (b, r) in enumerate(zip(bars, response)):
        assert b.forced
        check_bars(b, model, prompt + response[:t], r, 0.8, 200, 10, tok)
        want += float(reference(model, prompt + response[:t])[0][r])
    assert s.logprob == pytest.approx(want, abs=1e-4)
    assert S.response_ids(" the dog", tok) == (tok.encode(" the dog"), 'text')
    assert S.response_ids("[Verse 1]", tok)[1] == 'text'  # not a list of ids: text
    ids, what = S.response_ids("[464, 99999999]", tok)
    assert what == 'token ids'
    with pytest.raises(ValueError, match='outside the vocabulary'):  # checked once, where it is scored
        model.generate(torch.tensor([prompt]), 0, fixed_response=ids)
    with pytest.raises(ValueError, match='nope.txt'):
        S.response_ids("FILE:nope.txt", tok)


def test_temperature_comparison_panels_and_numbers(gpt2_tok):
    model, tok = tiny_model(), gpt2_tok
    ids = tok.encode(PROMPT)
    temps = S.parse_temperatures("0.5, 1.0,2,0")
    assert temps == [0.5, 1.0, 2.0, 0.0]
    cmp = S.temperature_comparison(model, nullcontext(), ids, temps, 200, 1.0, 10, tok)
    mlp, _ = reference(model, ids)
    top = mlp.topk(10).indices
    assert cmp.labels == [token_label(tok.token_text(i)) for i in top.tolist()]
    for t, probs, ent in zip(temps, cmp.probs, cmp.entropies):
        if t == 0:  # greedy: all the mass on the most likely token
            assert probs == [1.0] + [0.0] * 9 and ent == 0.0
            continue
        _, slp = reference(model, ids, t, 200)
        assert probs == pytest.approx(slp[top].exp().tolist(), rel=1e-6)
        assert ent == pytest.approx(float(-(slp.exp() * slp.nan_to_num(neginf=0.0)).sum()), rel=1e-6)
    assert cmp.entropies[0] < cmp.entropies[1] < cmp.entropies[2]  # hotter: flatter
    fig = overview.temperature_figure(cmp)
    try:
        assert len(fig.axes) == len(temps)
        for ax, probs in zip(fig.axes, cmp.probs):
            assert [p.get_width() for p in ax.patches] == pytest.approx(probs)
    finally:
        common.pyplot().close(fig)
    with pytest.raises(ValueError, match="'hot'"):
        S.parse_temperatures("0.5,hot")
    with pytest.raises(ValueError, match="'-1'"):
        S.parse_temperatures("-1")


def test_show_probs_accepts_true_in_any_case():
    for text, want in (('true', True), ('True', True), ('TRUE', True), ('false', False), ('False', False)):
        g = {k: v for k, v in vars(S).items() if not k.startswith('__')} | {'__annotations__': S.__annotations__}
        configure(g, [f'--show_probs={text}'])
        assert g['show_probs'] is want


def test_summary_names_both_distributions_and_survives_underflow():
    s = Sample(prompt=[1], tokens=[2] * 100, logprobs=torch.full((100,), -20.0, dtype=torch.float64),
               sample_logprobs=torch.full((100,), -15.0, dtype=torch.float64))
    text = '\n'.join(S.summary(s, 1, 1, 0.8, 200, 1.0))
    assert 'model distribution' in text and 'sampling distribution' in text and '100 new tokens' in text
    assert format_prob(-2000.0) in text and 'log-prob -2000.0000' in text  # exp(-2000) == 0.0 in float64
    assert format_prob(-1500.0) in text and 'e-' in format_prob(-2000.0)


def test_overview_lays_out_every_token():
    tokens = [' Once', ' upon', '\n', 'a\ttime', ' ' + 'x' * 30]
    cells = overview._overview_cells('The prompt', tokens, cols=20)
    for i, tok in enumerate(tokens):
        shown = ''.join(c[2] for c in cells if c[3] == i)
        assert shown == tok.replace('\t', '⇥').replace('\n', '⏎')
    assert all(c[1] + len(c[2]) <= 20 for c in cells)
    assert [c[0] for c in cells] == sorted(c[0] for c in cells)  # lines only go down


def pngs(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*.png'))


def step_lines(stdout):
    return [ln for ln in stdout.splitlines() if re.match(r'\s+step\s+\d+ (chose|forced) ', ln)]


def test_cli_show_probs_headless_one_png_per_step(tmp_path):
    write_ckpt(tmp_path / 'out')
    (tmp_path / 'prompt.txt').write_text(PROMPT, encoding='utf-8')
    proc = run_script('sample.py', '--out_dir=out', '--start=FILE:prompt.txt', '--num_samples=2', '--max_new_tokens=4',
                      '--show_probs=true', '--device=cpu', cwd=tmp_path)
    out = proc.stdout
    run, = (tmp_path / 'results').iterdir()
    assert pngs(run) == [f"sample_{i}/{n}" for i in (1, 2) for n in
                         ['overview.png'] + [f"step_{t:03d}.png" for t in (1, 2, 3, 4)]]
    assert len(step_lines(out)) == 2 * 4
    assert out.count('probability under the model distribution') == 2
    assert out.count('probability under the sampling distribution') == 2
    assert 'drawing 8 step charts' in out and 's per chart' in out
    assert str(run.relative_to(tmp_path)) in out
    assert out.count(PROMPT) >= 2  # each sample's text starts with the prompt read from the file


def test_cli_fixed_response_and_temperatures_on_a_hf_folder(tmp_path, gpt2_tok):
    hf = make_hf_dir(tmp_path / 'hf')  # transformers' GPT2LMHeadModel: the reference for the printed probability
    prompt, response = gpt2_tok.encode(PROMPT), gpt2_tok.encode(" there was a dog")
    proc = run_script('sample.py', f'--init_from={tmp_path / "hf"}', f'--start={PROMPT}',
                      '--fixed_response= there was a dog', '--show_probs=True',
                      '--compare_temperatures=0.5,1.0,2.0', '--compare_step=1', cwd=tmp_path)
    out = proc.stdout
    run, = (tmp_path / 'results').iterdir()
    n = len(response)
    assert pngs(run) == ['sample_1/overview.png'] + [f"sample_1/step_{t:03d}.png" for t in range(1, n + 1)] \
        + ['temperatures.png']
    assert len(step_lines(out)) == n and all(' forced ' in ln for ln in step_lines(out))
    with torch.no_grad():
        lp = hf(torch.tensor([prompt + response])).logits[0].double().log_softmax(-1)  # (T, V)
    want = sum(float(lp[len(prompt) - 1 + t, r]) for t, r in enumerate(response))
    got = float(re.search(r'model distribution .*?log-prob (-?[\d.]+)', out).group(1))
    assert got == pytest.approx(want, abs=2e-4)
    assert 'Next-token distribution at step 2' in out and 'entropy (nats)' in out


def test_cli_bad_setting_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """Run as a script (in-process, to save a Python start): bad input exits with one line naming it."""
    import runpy
    monkeypatch.chdir(tmp_path)
    for args, words in ((['--compare_temperatures=0.5,hot'], ['compare_temperatures', "'hot'"]),
                        (['--temperature=-1'], ['temperature', '-1']),
                        (['--out_dir=nowhere'], ['nowhere', 'ckpt.pt'])):
        monkeypatch.setattr('sys.argv', ['sample.py', *args])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(S.__file__, run_name='__main__')
        msg = capsys.readouterr().err.strip()
        assert e.value.code == 1 and msg.startswith('error: ') and all(w in msg for w in words), msg
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_num_beams_prints_ranked_beams_next_to_greedy(tmp_path):
    model = tiny_model()
    write_ckpt(tmp_path / 'out', model)
    proc = run_script('sample.py', '--out_dir=out', f'--start={PROMPT}', '--num_beams=3', '--max_new_tokens=6',
                      '--device=cpu', cwd=tmp_path)
    out = proc.stdout
    scores = [float(x) for x in re.findall(r'^ ?\d+\. score (-?[\d.]+) / 6\^1\.0 = ', out, re.M)]
    assert len(scores) == 3
    from nanoprobs import tokenizer
    tok = tokenizer.gpt2_tokenizer()
    beams = model.beam_search(tok.encode(PROMPT), 6, num_beams=3)
    assert scores == pytest.approx([round(b.logprob, 2) for b in beams], abs=0.011)
    greedy = model.generate(torch.tensor([tok.encode(PROMPT)]), 6, temperature=0)[0]
    assert f"p = {format_prob(greedy.logprob)} under the model distribution" in out


def test_tiny_probabilities_are_printed_never_as_zero(gpt2_tok):
    """At temperature 0.001 a forced token's sampling probability is far below float64's range: the
    step line, the chart numbers and the summary all give it as a number, consistent with its log."""
    model, tok = tiny_model(), gpt2_tok
    prompt = tok.encode(PROMPT)
    s, = S.generate_samples(model, nullcontext(), prompt, 1, 0, 0.001, None, 1.0, details=10,
                            response=tok.encode(" the end of the story"))
    tiny = [st for st in s.steps if st.chosen_rank > 1]
    assert tiny and all(st.chosen_sample_prob == 0.0 and st.chosen_sample_logprob > -float('inf') for st in tiny)
    for t, st in enumerate(s.steps, 1):
        line = S.step_line(t, st, tok, forced=True)
        assert '(sampling         0)' not in line and f"(sampling {format_prob(st.chosen_sample_logprob):>9})" in line
    b = S.step_bars(s, tok, 1, 0.001, None, 1.0, forced=True)[s.steps.index(tiny[0])]
    assert format_prob(b.sample_logprobs[b.chosen], 3) != '0' and 'e-' in format_prob(b.sample_logprobs[b.chosen], 3)


def test_samples_drawn_together_equal_samples_drawn_one_at_a_time():
    """One generator per sample: a sample's tokens do not depend on batch_size, rows that stop early
    included, and its log-probs are the reference forward pass's (up to float32 rounding of the batch)."""
    from nanoprobs.sampling import make_generator
    model, prompt = tiny_model(), [464, 3290, 318]
    gens = lambda: [make_generator('cpu', 7 + i) for i in range(4)]  # noqa: E731
    first = list(S.generate_samples(model, nullcontext(), prompt, 4, 10, 1.5, None, 1.0, generator=gens()))
    stop = first[0].tokens[3]  # a token sample 1 draws: some rows stop early, at different steps
    calls = []
    generate = model.generate
    model.generate = lambda x, *a, **kw: calls.append(x.size(0)) or generate(x, *a, **kw)
    runs = {bs: list(S.generate_samples(model, nullcontext(), prompt, 4, 10, 1.5, None, 1.0, details=3,
                                        stop_token=stop, generator=gens(), batch_size=bs)) for bs in (4, 3, 1)}
    assert calls == [4, 3, 1, 1, 1, 1, 1]  # batch_size rows at a time, the last batch smaller
    lengths = {len(s.tokens) for s in runs[1]}
    assert len(lengths) > 1 and any(s.stopped for s in runs[1]) and not all(s.stopped for s in runs[1])
    for bs in (4, 3):
        for a, b in zip(runs[bs], runs[1]):
            assert a.tokens == b.tokens and a.stopped == b.stopped
            assert a.logprobs.tolist() == pytest.approx(b.logprobs.tolist(), abs=1e-5)
            assert a.sample_logprobs.tolist() == pytest.approx(b.sample_logprobs.tolist(), abs=1e-5)
            assert [st.chosen for st in a.steps] == b.tokens and [st.chosen_rank for st in a.steps] == \
                [st.chosen_rank for st in b.steps]
    assert len({tuple(s.tokens) for s in runs[4]}) == 4  # four different samples, not one repeated
    for s in runs[4]:  # the numbers themselves, against a plain forward pass
        for t, tk in enumerate(s.tokens):
            mlp, slp = reference(model, prompt + s.tokens[:t], 1.5)
            assert s.logprobs[t] == pytest.approx(float(mlp[tk]), abs=1e-4)
            assert s.sample_logprobs[t] == pytest.approx(float(slp[tk]), abs=1e-4)


def test_per_row_generators_need_one_per_row():
    from nanoprobs.sampling import sample
    logits = torch.randn(3, 50)
    with pytest.raises(ValueError, match='2 generators for a batch of 3'):
        sample(logits, generator=[torch.Generator(), torch.Generator()])
    ids, _ = sample(logits, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    for b in range(3):  # row b draws what it would draw alone with its generator
        alone, _ = sample(logits[b:b + 1], generator=torch.Generator().manual_seed(b))
        assert ids[b] == alone[0]


def test_chart_samples_rule_and_workers():
    assert S.charted_samples([4, 4, 4], 0) == 3  # small runs: every chart
    assert S.charted_samples([500] * 10, 0) == 1  # the default run: sample 1 only
    assert S.charted_samples([500] * 10, -1) == 10 and S.charted_samples([5] * 3, 2) == 2
    assert S.charted_samples([5] * 3, 7) == 3
    assert steps.chart_workers_for(500, 2) == 2 and steps.chart_workers_for(30, 2) == 1  # a process costs a start
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    assert steps.chart_workers_for(10 ** 6, 0) == min(cores, 8) and steps.chart_workers_for(10 ** 6, 64) == 64


def test_step_charts_drawn_by_processes_equal_those_drawn_here(gpt2_tok, tmp_path):
    model, tok = tiny_model(), gpt2_tok
    s, = S.generate_samples(model, nullcontext(), tok.encode(PROMPT), 1, 4, 0.8, 200, 1.0, details=5,
                            generator=torch.Generator().manual_seed(0))
    bars = S.step_bars(s, tok, 1, 0.8, 200, 1.0)
    steps.draw_step_charts([(b, str(tmp_path / 'here' / f"{t}.png")) for t, b in enumerate(bars)], 5, workers=1)
    steps.draw_step_charts([(b, str(tmp_path / 'procs' / f"{t}.png")) for t, b in enumerate(bars)], 5, workers=2)
    for t in range(4):
        assert (tmp_path / 'procs' / f"{t}.png").read_bytes() == (tmp_path / 'here' / f"{t}.png").read_bytes()


def test_cli_chart_samples_draws_the_first_n_and_says_how_to_get_all(tmp_path):
    write_ckpt(tmp_path / 'out')
    proc = run_script('sample.py', '--out_dir=out', f'--start={PROMPT}', '--num_samples=3', '--batch_size=2',
                      '--max_new_tokens=3', '--show_probs=True', '--chart_samples=2', '--device=cpu', cwd=tmp_path)
    out = proc.stdout
    run, = (tmp_path / 'results').iterdir()
    assert pngs(run) == [f"sample_{i}/{n}" for i in (1, 2) for n in
                         ['overview.png', 'step_001.png', 'step_002.png', 'step_003.png']] + ['sample_3/overview.png']
    assert 'step charts for samples 1-2 only (--chart_samples=-1 draws all 9 charts of the 3 samples)' in out
    assert len(step_lines(out)) == 3 * 3  # every sample's steps are printed
    assert [int(m) for m in re.findall(r'^sample (\d)/3: ', out, re.M)] == [1, 2, 3]  # in order


def test_cli_no_samples_and_a_mistyped_id_list_are_errors_before_loading(tmp_path, monkeypatch, capsys, gpt2_tok):
    import runpy
    monkeypatch.chdir(tmp_path)
    for args, words in ((['--num_samples=0'], ['num_samples', '>= 1', 'got 0']),
                        (['--fixed_response=[1,'], ["'[1,'", 'token ids', '[464, 3290]', "text:[1,"]),
                        (['--fixed_response=[1 2]'], ["'[1 2]'", 'text:[1 2]'])):
        monkeypatch.setattr('sys.argv', ['sample.py', '--out_dir=nowhere', *args])  # no model: checked first
        with pytest.raises(SystemExit) as e:
            runpy.run_path(S.__file__, run_name='__main__')
        msg = capsys.readouterr().err.strip()
        assert e.value.code == 1 and msg.startswith('error: ') and '\n' not in msg, msg
        assert all(w in msg for w in words) and 'ckpt.pt' not in msg, msg
    # text: scores the rest as text, whatever it looks like
    assert S.response_ids('text:[1,', gpt2_tok) == (gpt2_tok.encode('[1,'), 'text')
    assert S.response_ids('text:FILE:x', gpt2_tok) == (gpt2_tok.encode('FILE:x'), 'text')
    assert S.response_ids('[1, 2]', gpt2_tok) == ([1, 2], 'token ids')
