"""eval.py: pair scores against independent computations, join rules, batching, comparison, bad input,
held-out metrics, and the command line writing its result files."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch

import eval as ev
from conftest import dead_pid, make_hf_dir, run_script, tiny_model, write_ckpt
from nanoprobs.heldout import evaluate_val, read_val_ids
from nanoprobs.pairs import join_texts, read_pairs, tokenize_pair
from nanoprobs.report import arrow, compare_report, csv_text, markdown, pairs_report, write_results
from nanoprobs.scores import EvalDataError, EvalRun, PairResult, RESULTS_FORMAT, compare, perplexity

PAIRS = [
    {"prompt": "Once upon a time", "response": " there lived a king.", "kind": "opening"},
    {"prompt": "Once upon a time ", "response": "there lived a king."},  # trailing space moves
    {"prompt": "And they lived happily", "response": "ever after."},        # a space is inserted
    ["The fox said, \"", "Come closer, my friend.\""],                       # list form, quote kept
    {"prompt": "", "response": "Once upon a time a mouse found a button."},  # scored after <|endoftext|>
    {"prompt": "The moral is:", "response": " be kind."},
    {"prompt": "The end", "response": "."},
]


def ref_logprobs(model, ids, start):
    """Log-probs of ids[start:] from one plain float64 forward pass (a float64 copy of the model)."""
    m = tiny_copy64(model)
    with torch.no_grad():
        logits = m(torch.tensor([ids]), all_logits=True)[0][0]  # (T, V)
    lp = logits.double().log_softmax(-1)
    return [float(lp[t - 1, ids[t]]) for t in range(start, len(ids))], lp


_copies = {}


def tiny_copy64(model):
    if id(model) not in _copies:
        import copy
        _copies[id(model)] = copy.deepcopy(model).double().eval().requires_grad_(False)
    return _copies[id(model)]


@pytest.fixture(scope='module')
def model():
    return tiny_model()


@pytest.fixture(scope='module')
def run(model):
    from nanoprobs.tokenizer import gpt2_tokenizer
    try:
        tok = gpt2_tokenizer()
    except ValueError as e:  # load.LoadError: the BPE files are not cached and there is no network
        pytest.skip(str(e))
    return ev.score_pairs(PAIRS, model, tok, quiet=True), tok


# -----------------------------------------------------------------------------
# the numbers

def test_scores_equal_plain_forward_pass(model, run):
    r, tok = run
    assert len(r.pairs) == len(PAIRS) and r.passes == 1
    for p in r.pairs:
        ids = p.prompt_ids + p.response_ids
        ref, lp = ref_logprobs(model, ids, len(p.prompt_ids))
        assert p.logprobs == pytest.approx(ref, abs=1e-4)
        assert p.logprob == pytest.approx(math.fsum(ref), abs=1e-3)
        assert p.mean_logprob == pytest.approx(math.fsum(ref) / len(ref), abs=1e-4)
        assert p.perplexity == pytest.approx(math.exp(-math.fsum(ref) / len(ref)), rel=1e-4)
        # greedy iff every response token is the argmax; ranks and the model's expected token
        am = [int(lp[t - 1].argmax()) for t in range(len(p.prompt_ids), len(ids))]
        assert p.expected == [tok.token_text(i) for i in am]
        assert p.greedy == (am == p.response_ids)
        assert [r_ == 1 for r_ in p.ranks] == [a == t for a, t in zip(am, p.response_ids)]
        assert p.surprise == int(np.argmin(ref))
        assert p.sample_logprobs is None  # default settings: the model distribution only
    # text of the prompt/response tokens is exactly the joined text
    assert tok.decode(r.pairs[0].response_ids) == " there lived a king."
    assert tok.decode(r.pairs[4].prompt_ids) == '<|endoftext|>' and 'empty prompt' in r.pairs[4].note
    assert r.log_sum_prob == pytest.approx(math.log(sum(math.exp(p.logprob) for p in r.pairs)), abs=1e-9)


def test_greedy_flag_true_for_the_models_own_greedy_output(model, run):
    _, tok = run
    prompt = tok.encode("Once upon a time")
    out = model.generate(torch.tensor([prompt]), 6, temperature=0)[0]
    text = tok.decode(out.tokens)
    r = ev.score_pairs([{"prompt": "Once upon a time", "response": text}], model, tok, join='none', quiet=True)
    assert r.pairs[0].response_ids == out.tokens  # the greedy text re-encodes to the same tokens
    assert r.pairs[0].greedy and r.pairs[0].ranks == [1] * 6
    # change one token: no longer what greedy decoding says
    r = ev.score_pairs([{"prompt": "Once upon a time", "response": text + " the"}], model, tok, join='none', quiet=True)
    assert r.pairs[0].ranks[-1] > 1 and not r.pairs[0].greedy


def test_scores_equal_transformers(tmp_path, run):
    _, tok = run
    hf = make_hf_dir(tmp_path / 'hf', n_positions=48).double()
    r = ev.score_pairs(PAIRS, str(tmp_path / 'hf'), quiet=True, device='cpu')
    assert r.model == str(tmp_path / 'hf')
    for p in r.pairs:
        ids = p.prompt_ids + p.response_ids
        with torch.no_grad():
            lp = hf(torch.tensor([ids])).logits[0].double().log_softmax(-1)
        ref = [float(lp[t - 1, ids[t]]) for t in range(len(p.prompt_ids), len(ids))]
        assert p.logprobs == pytest.approx(ref, abs=1e-4)


def test_eval_is_generate_with_fixed_response(model, run):
    r, _ = run
    for p in r.pairs:
        s = model.generate(torch.tensor([p.prompt_ids]), 0, fixed_response=p.response_ids)[0]
        assert s.logprobs.tolist() == pytest.approx(p.logprobs, abs=1e-6)


def test_batch_size_invariance(model, run):
    r1, tok = run
    for bsz in (1, 3):
        r = ev.score_pairs(PAIRS, model, tok, batch_size=bsz, quiet=True)
        assert r.passes == math.ceil(len(PAIRS) / bsz)
        for a, b in zip(r.pairs, r1.pairs):
            assert a.response_ids == b.response_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-6)
            assert a.ranks == b.ranks


def test_sampling_distribution_only_when_asked(model, run):
    r0, tok = run
    r = ev.score_pairs(PAIRS, model, tok, temperature=0.8, top_k=5, quiet=True)
    assert r.sampling
    for p, q in zip(r.pairs, r0.pairs):
        assert p.logprobs == pytest.approx(q.logprobs, abs=1e-9)  # the model's scores do not move
        ids = p.prompt_ids + p.response_ids
        logits = tiny_copy64(model)(torch.tensor([ids]), all_logits=True)[0][0] / 0.8
        for j, t in enumerate(range(len(p.prompt_ids), len(ids))):
            row = logits[t - 1]
            if p.ranks[j] <= 5:
                kept = row.masked_fill(row < row.topk(5).values[-1], float('-inf'))
                assert p.sample_logprobs[j] == pytest.approx(float(kept.log_softmax(-1)[ids[t]]), abs=1e-4)
            else:
                assert p.sample_logprobs[j] == float('-inf')  # outside top-k: probability 0, shown as 0
    text = pairs_report(r)
    assert 'sampling p' in text and 'temperature 0.8' in text
    assert 'sampling p' not in pairs_report(r0)


# -----------------------------------------------------------------------------
# joining prompt and response

@pytest.mark.parametrize('prompt, response, mode, want', [
    ("Once upon a time ", "there was", 'auto', ("Once upon a time", " there was")),   # trailing space moves
    ("Once upon a time", "there was", 'auto', ("Once upon a time", " there was")),    # no space: one inserted
    ("Once upon a time", " there was", 'auto', ("Once upon a time", " there was")),   # leading space kept
    ("Once upon a time", ", there was", 'auto', ("Once upon a time", ", there was")),  # punctuation: as written
    ('He said, "', "Come here", 'auto', ('He said, "', "Come here")),                  # opening quote: no space
    ("The end.", "\nOnce", 'auto', ("The end.", "\nOnce")),
    ("time\n", "There", 'auto', ("time", "\nThere")),                                  # newline moves too
    ("", "Once upon", 'auto', ("", "Once upon")),                                      # empty prompt
    ("café", "au lait", 'auto', ("café", " au lait")),                                 # unicode word chars
    ("time ", "there", 'none', ("time ", "there")),
    ("time", "there", 'none', ("time", "there")),
    ("time  ", "  there", 'space', ("time", " there")),
    ("time", ",there", 'space', ("time", " ,there")),
])
def test_join_rules(prompt, response, mode, want):
    assert join_texts(prompt, response, mode) == want


def test_join_changes_tokens_as_a_reader_expects(run):
    r, tok = run
    a, b, c = r.pairs[0], r.pairs[1], r.pairs[2]
    assert a.prompt_ids == b.prompt_ids and a.response_ids == b.response_ids  # 'time ' + 'there' == 'time' + ' there'
    assert a.logprobs == b.logprobs
    assert b.tokens[0] == ' there' and c.tokens[0] == ' ever'
    # without the join, ' there' spans prompt and response: still split the same way, but reported
    ctx, resp, note = tokenize_pair(tok, "Once upon a time ", "there lived a king.")
    assert (ctx, resp) == (a.prompt_ids, a.response_ids) and 'spans the join' in note and not a.note
    # encoding the two halves separately (what public solutions do) scores other tokens: ' ' then 'there'
    naive = tok.encode("Once upon a time ") + tok.encode("there lived a king.")
    assert naive != a.prompt_ids + a.response_ids and tok.token_text(naive[4]) == ' ' 


def test_straddling_token_is_reported_and_scored_in_the_response(run, model):
    _, tok = run
    ctx, resp, note = tokenize_pair(tok, "I said hel", "lo")
    assert [tok.token_text(i) for i in ctx] == ['I', ' said'] and [tok.token_text(i) for i in resp] == [' hello']
    assert 'spans the join' in note and "' hel'" in note
    ctx, resp, note = tokenize_pair(tok, "Hel", "lo world")
    assert ctx == [tok.eot] and tok.token_text(resp[0]) == 'Hello' and 'spans the join' in note
    r = ev.score_pairs([["I said hel", "lo"]], model, tok, join='none', quiet=True)
    assert 'spans the join' in r.pairs[0].note and 'spans the join' in pairs_report(r)


# -----------------------------------------------------------------------------
# comparison

def _run(lps, name, tokens=None):
    pairs = [PairResult(index=i + 1, prompt=f"p{i}", response=f" r{i}", prompt_ids=[1], response_ids=[2 + j for j in range(len(x))],
                           tokens=tokens or [f"t{j}" for j in range(len(x))], logprobs=x, ranks=[1] * len(x),
                           expected=['x'] * len(x)) for i, x in enumerate(lps)]
    return EvalRun(name, {'eval_data': 'x.json'}, pairs, source=f"{name}.json")


def test_comparison_direction_and_counts():
    before = _run([[-5.0, -5.0], [-1.0, -2.0], [-3.0], [-900.0, -900.0]], 'before')
    after = _run([[-2.0, -4.0], [-1.5, -4.0], [-3.0], [-10.0, -10.0]], 'after')
    c = compare(before, after)
    assert c.deltas == pytest.approx([4.0, -2.5, 0.0, 1780.0])
    assert (c.rose, c.fell) == (2, 1)
    text = compare_report(c)
    rows = {int(line.split()[0]): line for line in text.splitlines() if line[:3].strip().isdigit()}
    assert rows[1].rstrip().endswith('↑') and '+4.000' in rows[1] and '×54.6' in rows[1]
    assert rows[2].rstrip().endswith('↓') and '-2.500' in rows[2] and '×0.0821' in rows[2]
    assert rows[3].rstrip().endswith('=')
    assert '×' in rows[4] and 'e+773' in rows[4]  # exp(1780) overflows a float; the ratio does not
    assert '2 of 4 pairs rose (↑), 1 fell (↓), 1 unchanged' in text
    gains, losses = c.top_tokens(3, True), c.top_tokens(3, False)
    assert [(p.index, i) for p, i, _ in gains] == [(4, 0), (4, 1), (1, 0)]
    assert [(p.index, i, d) for p, i, d in losses] == [(2, 1, -2.0), (2, 0, -0.5)]
    assert rows[2].split()[3:6] == ['0.0498', '0.0041', '×0.0821']  # before, after, ratio: in that order
    assert 'sum of log-probabilities  -1816.000 → -34.500  (+1781.500 nats' in text
    md = markdown(after, c)
    assert '| 2 | p1 | 0.0498 | 0.0041 | ×0.0821 | -2.500 | ↓ |' in md and '2 of 4 pairs rose, 1 fell' in md
    rows = list(csv.DictReader(csv_text(after, c).splitlines()))
    assert [r['direction'] for r in rows] == ['↑', '↓', '=', '↑']
    assert (rows[1]['logprob'], rows[1]['before_logprob'], rows[1]['delta_logprob']) == ('-5.500000', '-3.000000', '-2.500000')
    # different pairs cannot be compared
    with pytest.raises(EvalDataError, match="pair 1's prompt differs"):
        other = _run([[-1.0]], 'x')
        other.pairs[0].prompt = 'something else'
        compare(_run([[-1.0]], 'y'), other)
    with pytest.raises(EvalDataError, match='scored 1 pairs'):
        compare(_run([[-1.0]], 'y'), _run([[-1.0], [-2.0]], 'z'))
    # the same pairs joined differently (a missing space) cannot be compared either
    a, b = _run([[-1.0]], 'a'), _run([[-1.0]], 'b')
    a.pairs[0].joined, b.pairs[0].joined = ('And they lived happily', ' ever after.'), ('And they lived happily', 'ever after.')
    with pytest.raises(EvalDataError, match='same --join'):
        compare(b, a)


def test_flags_of_a_pair_and_a_run():
    p = _run([[-1.0, -2.0]], 'x').pairs[0]
    assert p.greedy
    p.ranks = [2, 1]
    assert not p.greedy  # every token must be the model's first choice, not just the last
    assert perplexity(-800.0) == float('inf') and perplexity(-1.0) == pytest.approx(math.e)


def test_sampling_score_for_top_p_alone(model, run):
    _, tok = run
    r = ev.score_pairs(PAIRS, model, tok, top_p=0.5, quiet=True)
    assert r.sampling and all(p.sample_logprobs is not None for p in r.pairs)


def test_results_json_round_trip(run):
    r, _ = run
    back = EvalRun.from_dict(json.loads(json.dumps(r.to_dict())), 'f.json')
    assert [p.logprobs for p in back.pairs] == [p.logprobs for p in r.pairs]
    assert back.logprob == r.logprob and back.pairs[3].extra == {} and back.pairs[0].extra == {'kind': 'opening'}
    c = compare(back, r)
    assert c.deltas == [0.0] * len(r.pairs)


# -----------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize('content, match', [
    (None, r'does not exist.*--eval_data'),
    ('[{"prompt": "a", "response": "b"},\n {"prompt": "c" "response": "d"}]', r'not valid JSON.*line 2, column 17'),
    ('{"prompt": "a", "response": "b"}', r'must hold a JSON list.*found a dict'),
    ('[]', r'empty list'),
    ('[{"prompt": "a", "response": "b"}, "just text"]', r'pair 2 .*is a str'),
    ('[{"prompt": "a", "response": "b"}, {"prompt": "c"}]', r'pair 2 .*has no "response" key'),
    ('[{"prompt": 3, "response": "b"}]', r'pair 1 .*"prompt" must be a string, got int'),
    ('[{"prompt": "a", "response": "b"}, {"prompt": "a", "response": ""}]', r'pair 2 .*empty response.*remove the pair'),
])
def test_bad_eval_data(tmp_path, content, match):
    path = tmp_path / 'pairs.json'
    if content is not None:
        path.write_text(content, encoding='utf-8')
    with pytest.raises(EvalDataError, match=match):
        read_pairs(str(path))


def test_pair_longer_than_block_size_is_scored_with_a_sliding_window(model, run):
    """A pair past block_size (32) is scored as generate() conditions it: each token sees the 32 before it; the
    table's notes name the pair."""
    _, tok = run
    pairs = [["a", " b"], ["Once upon a time", " there" * 40]]
    r = ev.score_pairs(pairs, model, tok, quiet=True)
    p, r_ids = tok.encode("Once upon a time"), tok.encode(" there" * 40)
    ids = p + r_ids
    m = tiny_copy64(model)
    with torch.no_grad():
        want = [float(m(torch.tensor([ids[max(0, t - 32):t]]))[0][0, -1].log_softmax(-1)[ids[t]])
                for t in range(len(p), len(ids))]
    assert r.pairs[1].logprobs == pytest.approx(want, abs=1e-4)
    assert r.pairs[0].note == '' and r.pairs[1].note.startswith(
        f"scored past the block size: {len(ids)} tokens (prompt {len(p)} + response {len(r_ids)}); each token "
        "after position 32 sees only the 32 tokens before it")
    assert "  pair 2: scored past the block size" in pairs_report(r, False, tok)


def test_bad_input_on_the_command_line_writes_nothing(tmp_path, tiny_ckpt):
    (tmp_path / 'bad.json').write_text('[["Once", " upon"], ["Once", " upon a \\ud800"]]')  # half a character
    p = run_script('eval.py', f'--init_from={tiny_ckpt / "ckpt.pt"}', '--eval_data=bad.json', cwd=tmp_path, check=False)
    assert p.returncode != 0 and 'pair 2' in p.stderr and 'lone surrogate' in p.stderr
    assert 'Traceback' not in p.stderr
    assert not (tmp_path / 'results').exists() or not any((tmp_path / 'results').iterdir())


# -----------------------------------------------------------------------------
# held-out data: perplexity, bits per byte, top-1/top-5 accuracy

TEXT = ("Once upon a time there was a little hen who found a grain of wheat. \"Who will help me plant it?\" "
        "she asked. \"Not I,\" said the duck. \"Not I,\" said the cat. So she planted it herself, and when "
        "the wheat was tall and golden she baked a loaf of bread, and ate it all, with her chicks. ") * 2


@pytest.mark.parametrize('stride', [0, 31, 7])
def test_val_metrics_equal_independent_computation(model, run, stride):
    _, tok = run
    ids = tok.encode(TEXT)[:75]
    v = evaluate_val(model, tok, ids, 'text', stride=stride, batch_size=4, progress=False)
    bs = 32
    s = stride or bs // 2
    # reference: each target t predicted in one float64 forward pass over its own context, where the
    # context is everything before t in the window that predicts t (window ends at min(end + s, N))
    m = tiny_copy64(model)
    nll, top1, top5 = 0.0, 0, 0
    for t in range(1, len(ids)):
        start = 0 if t < bs else min(bs + ((t - bs) // s + 1) * s, len(ids)) - bs
        lp = m(torch.tensor([ids[start:t]]))[0][0, -1].double().log_softmax(-1)
        nll -= float(lp[ids[t]])
        rank = int((lp > lp[ids[t]]).sum()) + 1
        top1 += rank == 1
        top5 += rank <= 5
        assert t - start <= bs and (t < bs or t - start >= bs - s)
    assert v.tokens == len(ids) - 1 and v.window == bs and v.stride == s
    assert v.nll == pytest.approx(nll, abs=1e-3)
    assert (v.top1, v.top5) == (top1, top5)
    assert v.bytes == len(tok.decode(ids[1:]).encode('utf-8'))
    assert v.perplexity == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-5)
    assert v.bits_per_byte == pytest.approx(nll / math.log(2) / v.bytes, rel=1e-5)
    assert v.acc1 == top1 / v.tokens and v.acc5 == top5 / v.tokens


def test_bits_per_byte_count_text_bytes_not_document_separators(model, run):
    _, tok = run
    docs = ["Once upon a time there was a hen.", "The duck said no.", "The end."]
    ids = [t for d in docs for t in tok.encode(d) + [tok.eot]]
    v = evaluate_val(model, tok, ids, 'docs', progress=False)
    assert v.tokens == len(ids) - 1  # separators are predicted (and cost nats)...
    assert v.bytes == len(''.join(docs).encode('utf-8')) - len(tok.decode(ids[:1]).encode('utf-8'))  # ...but are not text


def test_top5_counts_a_rank_5_token(model, run):
    """top-5 accuracy includes rank 5 exactly (a `< 5` slip would drop it)."""
    _, tok = run
    ctx = tok.encode(TEXT)[:20]
    with torch.no_grad():
        order = model(torch.tensor([ctx]))[0][0, -1].argsort(descending=True).tolist()
    v = evaluate_val(model, tok, ctx + [order[4]], 'x', progress=False)  # the last target is rank 5
    head = evaluate_val(model, tok, ctx, 'x', progress=False)
    assert v.top5 == head.top5 + 1 and v.top1 == head.top1


def test_result_files_are_all_or_nothing(tmp_path, monkeypatch, run):
    from nanoprobs.plots import evals
    r, _ = run
    first = write_results(r, None, str(tmp_path), 'x')
    before = {p: open(p, 'rb').read() for p in first}

    def broken(*a, **k):
        raise RuntimeError('disk full while drawing')

    monkeypatch.setattr(evals, 'eval_pairs', broken)
    with pytest.raises(RuntimeError):
        write_results(_run([[-9.0]], 'other'), None, str(tmp_path), 'x')
    assert {p: open(p, 'rb').read() for p in first} == before  # the earlier results are intact
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in first)  # no temp files left


def test_json_results_are_strict_json_with_impossible_tokens(tmp_path, model, run):
    _, tok = run
    r = ev.score_pairs(PAIRS, model, tok, top_k=1, quiet=True)  # most response tokens are impossible under top-1
    assert any(x == float('-inf') for p in r.pairs for x in p.sample_logprobs)
    path, = [p for p in write_results(r, None, str(tmp_path), 'k1') if p.endswith('.json')]

    def no_constants(c):
        raise AssertionError(f"{c} is not JSON")

    json.loads(open(path).read(), parse_constant=no_constants)


def test_val_reads_text_and_bin_and_caps_tokens(tmp_path, run):
    _, tok = run
    ids = tok.encode(TEXT)
    (tmp_path / 'val.txt').write_text(TEXT, encoding='utf-8')
    np.array(ids, dtype=np.uint16).tofile(tmp_path / 'val.bin')
    assert read_val_ids(str(tmp_path / 'val.txt'), tok, 50) == ids[:51]
    assert read_val_ids(str(tmp_path / 'val.bin'), tok, 50) == ids[:51]
    assert read_val_ids(str(tmp_path / 'val.bin'), tok, 0) == ids
    with pytest.raises(EvalDataError, match='no such file'):
        read_val_ids(str(tmp_path / 'nope.bin'), tok, 10)


# -----------------------------------------------------------------------------
# the command line, as a user runs it

def test_cli_writes_results_and_compares(tmp_path):
    pytest.importorskip('transformers')
    make_hf_dir(tmp_path / 'gpt2-tiny', n_positions=48)
    write_ckpt(tmp_path / 'out-children', tiny_model(seed=3, block_size=48))
    (tmp_path / 'pairs.json').write_text(json.dumps(PAIRS), encoding='utf-8')
    (tmp_path / 'val.txt').write_text(TEXT, encoding='utf-8')

    p = run_script('eval.py', f'--init_from={tmp_path / "gpt2-tiny"}', '--eval_data=pairs.json', '--val_data=val.txt',
                   '--val_tokens=60', cwd=tmp_path)
    out = p.stdout
    assert 'sum of probabilities' in out and 'mean log-prob per token' in out and 'perplexity' in out
    assert 'top-5 accuracy' in out and 'bits per byte' in out
    names = {f.name for f in (tmp_path / 'results').iterdir()}
    assert names == {'eval_gpt2-tiny.json', 'eval_gpt2-tiny.csv', 'eval_gpt2-tiny.md', 'eval_gpt2-tiny.png',
                     'eval_gpt2-tiny.html'}  # html=True: the browser report
    d = json.loads((tmp_path / 'results' / 'eval_gpt2-tiny.json').read_text())
    assert d['format'] == RESULTS_FORMAT and len(d['pairs']) == len(PAIRS) and d['val']['tokens'] == 60
    first = EvalRun.from_dict(d)
    assert (tmp_path / 'results' / 'eval_gpt2-tiny.png').read_bytes()[:4] == b'\x89PNG'

    p = run_script('eval.py', '--init_from=resume', '--out_dir=out-children', '--eval_data=pairs.json',
                   '--compare_to=results/eval_gpt2-tiny.json', '--val_data=val.txt', '--val_tokens=60', cwd=tmp_path)
    out = p.stdout
    assert 'before vs after' in out and 'pairs rose' in out and 'tokens that gained' in out
    d2 = json.loads((tmp_path / 'results' / 'eval_out-children.json').read_text())
    second = EvalRun.from_dict(d2)
    c = compare(first, second)
    assert d2['comparison']['rose'] == c.rose and d2['comparison']['deltas'] == pytest.approx(c.deltas)
    assert f"{c.rose} of {len(PAIRS)} pairs rose" in out
    for p_, d_ in zip(second.pairs, c.deltas):  # every printed row carries the arrow its numbers give
        assert any(line.startswith(f"{p_.index:>3}  ") and line.rstrip().endswith(arrow(d_))
                   for line in out.splitlines())
    for ext in ('.csv', '.md', '.png', '_tokens.png'):
        assert (tmp_path / 'results' / f'eval_out-children{ext}').stat().st_size > 0
    md = (tmp_path / 'results' / 'eval_out-children.md').read_text()
    assert '## Before vs after' in md and '## Held-out data' in md and '| before | after |' in md
    assert not [f for f in (tmp_path / 'results').iterdir() if '.tmp' in f.name]


def test_main_with_two_models_in_one_run(tmp_path, monkeypatch, capsys):
    write_ckpt(tmp_path / 'a', tiny_model(seed=1))
    write_ckpt(tmp_path / 'b', tiny_model(seed=2))
    (tmp_path / 'pairs.json').write_text(json.dumps(PAIRS[:4]), encoding='utf-8')
    monkeypatch.chdir(tmp_path)
    for k, v in dict(init_from=str(tmp_path / 'b'), compare_init_from=str(tmp_path / 'a' / 'ckpt.pt'),
                     eval_data='pairs.json', top_k=3, verbose=True, name='ab').items():
        monkeypatch.setattr(ev, k, v)
    ev.main()
    out = capsys.readouterr().out
    assert 'before model:' in out and 'sampling p' in out and 'exact tokens' in out and 'every token, Δ log-prob' in out
    d = json.loads((tmp_path / 'results' / 'eval_ab.json').read_text())
    assert d['comparison']['before']['model'].endswith('ckpt.pt') and d['settings']['top_k'] == 3
    assert (tmp_path / 'results' / 'eval_ab_tokens.png').exists()
    # what can be checked before loading a model is, before loading it: errors that name the fix
    monkeypatch.setattr(ev, 'compare_init_from', '')
    for k, v, msg in (('top_k', -3, 'top_k must be an int >= 0'), ('val_data', 'nope.bin', 'val_data=nope.bin: no such file'),
                      ('compare_to', 'nope.json', 'nope.json does not exist: --compare_to needs the results'),
                      ('eval_data', 'missing.json', 'missing.json does not exist')):
        old = getattr(ev, k)
        monkeypatch.setattr(ev, k, v)
        with pytest.raises(ValueError, match=msg):  # run_main prints it as one line, exit status 1
            ev.main()
        monkeypatch.setattr(ev, k, old)


def test_every_sample_py_setting_is_accepted(tmp_path):
    """The brief: eval.py is called with the same arguments as sample.py."""
    import sample
    from configurator import configure
    names = [k for k in vars(sample) if k in getattr(sample, '__annotations__', {})]
    assert len(names) > 15
    g = dict(vars(ev))
    only_sample = ('fixed_response', 'compare_temperatures', 'html_inspect', 'html_attribution')  # its report's own
    configure(g, [f"--{k}={getattr(sample, k)}" for k in names if k not in only_sample])


# -----------------------------------------------------------------------------
# result files: one run's whole set, one-line errors

def _fake_charts(monkeypatch, barrier=None):
    """Charts as small text files naming their run (fast, and checkable), optionally all drawn at once."""
    from nanoprobs.plots import evals

    def chart(labels, series, path, *a, **k):
        if barrier is not None:
            barrier.wait(timeout=20)  # every writer is ready to rename at the same moment
        with open(path, 'w') as f:
            f.write(list(series)[-1])

    monkeypatch.setattr(evals, 'eval_pairs', chart)
    monkeypatch.setattr(evals, 'eval_token_changes',
                        lambda items, path, title, **k: open(path, 'w').write(title.split(' → ')[-1]))


def _result_set(folder, name):
    """The run each of results/eval_<name>.* says it holds."""
    base = os.path.join(folder, f'eval_{name}')
    d = json.loads(open(base + '.json', encoding='utf-8').read())
    md = open(base + '.md', encoding='utf-8').readline().removeprefix('# eval: ').strip()
    row, = csv.DictReader(open(base + '.csv', encoding='utf-8'))
    return {d['model'], md, 'model%d' % round(-1 - float(row['logprob'])), open(base + '.png').read()}


def _slow_renames(monkeypatch):
    """Renames that take a while: any interleaving of two runs' renames shows as a mixed set."""
    import time
    replace = os.replace

    def slow(a, b):
        time.sleep(0.03)
        replace(a, b)
    monkeypatch.setattr(os, 'replace', slow)


def _write_model(folder, i):
    write_results(_run([[-1.0 - i]], f'model{i}'), None, folder, 'same', keep=False)  # replace: one set


def test_concurrent_processes_writing_one_name_leave_one_whole_set(tmp_path, monkeypatch):
    import multiprocessing as mp
    ctx = mp.get_context('fork')
    n = 4
    _fake_charts(monkeypatch, ctx.Barrier(n))
    _slow_renames(monkeypatch)
    for attempt in range(2):
        procs = [ctx.Process(target=_write_model, args=(str(tmp_path), i)) for i in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * n
        one, = [_result_set(str(tmp_path), 'same')]
        assert len(one) == 1, f"a mixed set: {one}"  # json, md, csv and png all from the same run
    assert sorted(os.listdir(tmp_path)) == [f'eval_same{e}' for e in ('.csv', '.json', '.md', '.png')]


def test_concurrent_threads_writing_one_name_leave_one_whole_set(tmp_path, monkeypatch):
    import threading
    n = 3
    _fake_charts(monkeypatch, threading.Barrier(n))
    _slow_renames(monkeypatch)
    errors = []

    def write(i):
        try:
            _write_model(str(tmp_path), i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(_result_set(str(tmp_path), 'same')) == 1
    assert sorted(os.listdir(tmp_path)) == [f'eval_same{e}' for e in ('.csv', '.json', '.md', '.png')]


def test_a_set_without_a_comparison_removes_the_earlier_tokens_chart(tmp_path, monkeypatch):
    _fake_charts(monkeypatch)
    before, after = _run([[-3.0]], 'model2'), _run([[-1.0]], 'model0')
    paths = write_results(after, compare(before, after), str(tmp_path), 'x')
    assert os.path.join(str(tmp_path), 'eval_x_tokens.png') in paths
    write_results(_run([[-2.0]], 'model1'), None, str(tmp_path), 'x')
    assert not (tmp_path / 'eval_x_tokens.png').exists()  # it belonged to the earlier run's set
    assert _result_set(str(tmp_path), 'x') == {'model1'}


def test_a_second_run_of_one_name_keeps_the_earlier_set(tmp_path, monkeypatch, capsys):
    """eval.py run twice on one model (before and after more training, say): the earlier set is kept as
    eval_<name>_<its time>.*, byte for byte, and one line says so; the same numbers again, or
    keep_earlier=False, replace it."""
    import time
    _fake_charts(monkeypatch)
    before, after = _run([[-3.0]], 'model2'), _run([[-1.0]], 'model0')
    first = write_results(after, compare(before, after), str(tmp_path), 'x')  # with _tokens.png
    earlier = {os.path.basename(p): open(p, 'rb').read() for p in first}
    assert capsys.readouterr().out == ''  # nothing was there
    write_results(after, compare(before, after), str(tmp_path), 'x')
    assert 'an earlier run with the same numbers' in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == sorted(earlier)  # nothing to keep

    t = time.mktime((2025, 1, 2, 3, 4, 5, 0, 0, -1))  # when the earlier run wrote its set (local time)
    os.utime(tmp_path / 'eval_x.json', (t, t))
    paths = write_results(_run([[-2.0]], 'model1'), None, str(tmp_path), 'x')
    kept = os.path.join(str(tmp_path), 'eval_x_20250102-030405')
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and f"as {kept}.*" in out and 'keep_earlier=False' in out
    assert all(not p.startswith(kept) for p in paths)  # the new set's paths only
    assert {f.replace('eval_x_20250102-030405', 'eval_x'): open(tmp_path / f, 'rb').read()
            for f in os.listdir(tmp_path) if f.startswith('eval_x_2025')} == earlier
    assert _result_set(str(tmp_path), 'x') == {'model1'}

    n = len(os.listdir(tmp_path))
    write_results(_run([[-4.0]], 'model3'), None, str(tmp_path), 'x', keep=False)
    assert 'keep_earlier=False' in capsys.readouterr().out and len(os.listdir(tmp_path)) == n
    assert _result_set(str(tmp_path), 'x') == {'model3'}
    assert ev.default_name(str(tmp_path / 'run' / 'ckpt_last.pt')) == 'run_last'  # not run's own name


def test_temp_files_of_killed_runs_are_removed(tmp_path, monkeypatch):
    _fake_charts(monkeypatch)
    dead = dead_pid()
    (tmp_path / f'eval_old.tmp{dead}-0123abcd.json').write_text('{}')     # a killed run's
    (tmp_path / f'eval_old.tmp{os.getpid()}-0123abcd.png').write_text('')  # a live process's: kept
    write_results(_run([[-1.0]], 'model0'), None, str(tmp_path), 'x')
    assert not (tmp_path / f'eval_old.tmp{dead}-0123abcd.json').exists()
    assert (tmp_path / f'eval_old.tmp{os.getpid()}-0123abcd.png').exists()


def test_full_disk_is_one_line_and_earlier_results_stay(tmp_path, monkeypatch):
    import errno
    from nanoprobs import atomic
    from configurator import UserError
    _fake_charts(monkeypatch)
    first = write_results(_run([[-1.0]], 'model0'), None, str(tmp_path), 'x')
    before = {p: open(p, 'rb').read() for p in first}

    class Full:
        def __init__(self, path, *a, **k):
            self.f = open(path, *a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(atomic, 'open', Full, raising=False)
    with pytest.raises(UserError) as e:
        write_results(_run([[-2.0]], 'model1'), None, str(tmp_path), 'x')
    msg = str(e.value)
    assert 'eval_x.json' in msg and 'No space left on device' in msg and 'Free some disk space' in msg
    assert '\n' not in msg
    assert {p: open(p, 'rb').read() for p in first} == before
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in first)  # no temp files left


# -----------------------------------------------------------------------------
# hand-edited or odd input files

def _results_file(tmp_path, run, edit):
    d = json.loads(json.dumps(run.to_dict()))
    edit(d)
    path = tmp_path / 'before.json'
    path.write_text(json.dumps(d), encoding='utf-8')
    return str(path)


def _set(field, k, value):
    return lambda d: d['pairs'][field[0]][field[1]].__setitem__(k, value)


@pytest.mark.parametrize('edit, match', [
    (_set((2, 'logprobs'), 1, 'abc'), r'pair 3: "logprobs"\[1\] is .abc., not a log-prob'),
    (_set((0, 'logprobs'), 0, 1e308), r'pair 1: "logprobs"\[0\] is .1e\+308., not a log-prob'),
    (_set((1, 'logprobs'), 0, True), r'pair 2: "logprobs"\[0\] is .True.'),
    (lambda d: d['pairs'][1].__setitem__('logprobs', '-1.5'), r'pair 2: "logprobs" must be a list'),
    (lambda d: d['pairs'][1]['logprobs'].pop(), r'pair 2: "logprobs" has \d+ entries for \d+ response tokens'),
    (_set((0, 'ranks'), 0, 0), r'pair 1: "ranks"\[0\] is .0., not a rank >= 1'),
    (_set((0, 'response_ids'), 0, 'x'), r'pair 1: "response_ids"\[0\] is .x., not a token id'),
    (lambda d: d['pairs'][0].pop('tokens'), r'pair 1 has no "tokens"'),
    (lambda d: d['val'].__setitem__('nll', 'lots'), r'"val": "nll" is .lots.'),
])
def test_hand_edited_compare_to_file_names_the_field(tmp_path, run, edit, match):
    from nanoprobs.pairs import read_results
    from nanoprobs.scores import ValResult
    r, _ = run
    r = EvalRun(r.model, r.settings, r.pairs, ValResult('v.bin', 10, 40, 25.0, 3, 5, 32, 16))
    path = _results_file(tmp_path, r, edit)
    with pytest.raises(EvalDataError, match=match) as e:
        read_results(path)
    assert str(e.value).startswith(f'--compare_to={path}: ') and 'running eval.py' in str(e.value)
    back = read_results(_results_file(tmp_path, r, lambda d: None))  # the file as written reads back
    assert [p.logprobs for p in back.pairs] == [p.logprobs for p in r.pairs] and back.val == r.val


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, run):
    from nanoprobs.pairs import read_results
    r, _ = run
    (tmp_path / 'pairs.json').write_bytes(b'\xef\xbb\xbf' + json.dumps(PAIRS[:2]).encode('utf-8'))
    prompts = [p['prompt'] for p in read_pairs(str(tmp_path / 'pairs.json'))]
    assert prompts == [PAIRS[0]['prompt'], PAIRS[1]['prompt']]
    (tmp_path / 'r.json').write_bytes(b'\xef\xbb\xbf' + json.dumps(r.to_dict()).encode('utf-8'))
    assert read_results(str(tmp_path / 'r.json')).logprob == r.logprob
    _, tok = run
    (tmp_path / 'val.txt').write_bytes(b'\xef\xbb\xbf' + TEXT.encode('utf-8'))
    assert read_val_ids(str(tmp_path / 'val.txt'), tok, 0) == tok.encode(TEXT)


def test_odd_sized_or_empty_val_bin_names_the_file(tmp_path, run):
    _, tok = run
    (tmp_path / 'val.bin').write_bytes(np.array([1, 2, 3], dtype=np.uint16).tobytes() + b'\x00')
    with pytest.raises(EvalDataError, match=r'val\.bin is 7 bytes, an odd number.*prepare\.py'):
        read_val_ids(str(tmp_path / 'val.bin'), tok, 0)
    (tmp_path / 'empty.bin').write_bytes(b'')
    with pytest.raises(EvalDataError, match=r'empty\.bin holds 0 token'):
        read_val_ids(str(tmp_path / 'empty.bin'), tok, 0)


def test_ctrl_c_is_one_line_exit_130_and_writes_nothing(tmp_path, tiny_ckpt):
    import signal
    import subprocess
    import sys
    from conftest import ROOT
    (tmp_path / 'pairs.json').write_text(json.dumps(PAIRS[:2]), encoding='utf-8')
    np.random.default_rng(0).integers(0, 50000, 200_000, dtype=np.uint16).tofile(tmp_path / 'val.bin')
    p = subprocess.Popen([sys.executable, str(ROOT / 'eval.py'), f'--out_dir={tiny_ckpt}',
                          '--eval_data=pairs.json', '--val_data=val.bin', '--val_tokens=0'], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'},
                         # Ctrl-C's default action, even where this test runs with SIGINT ignored (a background job)
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stdout:
        if 'greedy decoding reproduces' in line:  # the pairs are scored; the held-out pass is running
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == 'interrupted; nothing written' and 'Traceback' not in err
    assert not (tmp_path / 'results').exists() or not any((tmp_path / 'results').iterdir())


# -----------------------------------------------------------------------------
# tables that stay aligned

def test_huge_perplexity_keeps_the_columns(run):
    from nanoprobs.report import COLUMNS, Row, console_table, val_report
    from nanoprobs.scores import ValResult
    v = ValResult('v.bin', 100, 400, 100 * 56.0, 3, 5, 32, 16)  # a random model: perplexity e^56
    r, _ = run
    text = val_report([('model', EvalRun('m', {}, r.pairs, v))])
    row, = [line for line in text.splitlines() if line.strip().startswith('perplexity')]
    assert row.split()[-1] == '2.092e+24' and len(row) == len('  perplexity      ') + 14
    p = _run([[-60.0, -58.0]], 'random').pairs[0]  # a pair's perplexity e^59
    ppl = [c for c in COLUMNS if c.title == 'ppl'][0]
    header, line = console_table('pairs', [Row(p)], False)
    assert len(ppl.text(Row(p))) <= ppl.width and header.index('greedy') + 6 == line.index('yes') + 3
    from nanoprobs.scores import format_ppl
    assert format_ppl(1.2345678e24) == '1.235e+24' and format_ppl(123.4567) == '123.457'
    assert format_ppl(float('inf')) == 'inf' and len(format_ppl(1e300)) <= 9


def test_each_model_shows_its_own_window(run):
    from nanoprobs.report import val_report
    from nanoprobs.scores import ValResult
    r, _ = run
    before = EvalRun('gpt2', {}, r.pairs, ValResult('v.bin', 100, 400, 300.0, 3, 5, 1024, 512))
    after = EvalRun('tiny', {}, r.pairs, ValResult('v.bin', 100, 400, 250.0, 3, 5, 64, 32))
    text = val_report([('before', before), ('after', after)])
    assert 'windows of 1024' not in text and "windows of each model's block_size" in text
    row, = [line for line in text.splitlines() if line.strip().startswith('window ')]
    assert row.split() == ['window', '(stride)', '1024', '(512)', '64', '(32)']
    assert len(row) == len([line for line in text.splitlines() if 'perplexity ' in line][0])  # aligned
    md = markdown(after, compare(before, after))
    assert '| window (stride) | 1024 (512) | 64 (32) |' in md and 'windows of 1024' not in md
    same = val_report([('before', before), ('after', EvalRun('x', {}, r.pairs, before.val))])
    assert 'windows of 1024 tokens, 512 predicted per window' in same and '\n  window' not in same


def test_results_file_written_in_pieces_is_json_dumps_text(model, run):
    from nanoprobs.report import iter_json, results_dict
    r, tok = run
    sampled = ev.score_pairs(PAIRS, model, tok, top_k=1, quiet=True)  # -inf sample log-probs: nulls
    c = compare(r, sampled)
    for d in (results_dict(sampled, c), results_dict(r)):
        lazy = results_dict(sampled, c, lazy=True) if 'comparison' in d else results_dict(r, lazy=True)
        assert ''.join(iter_json(lazy)) == json.dumps(d, indent=1, ensure_ascii=False, allow_nan=False)


def test_html_page_of_a_long_run_holds_its_first_pairs_and_says_so(tmp_path, monkeypatch, run):
    import re
    from nanoprobs import report
    r, _ = run
    monkeypatch.setattr(report, 'HTML_PAIRS', 3)
    paths = write_results(r, compare(r, r), str(tmp_path), 'x', html=True)
    page = open(next(p for p in paths if p.endswith('.html')), encoding='utf-8').read()
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1))
    assert [d['title'] for d in data['docs']] == ['pair 1', 'pair 2', 'pair 3'] and len(data['table']['rows']) == 3
    shown = dict(data['summary'])
    assert shown['pairs'] == str(len(PAIRS)) and shown['pairs shown here'].startswith(f'the first 3 of {len(PAIRS)}')
    full = json.load(open(next(p for p in paths if p.endswith('.json')), encoding='utf-8'))
    assert len(full['pairs']) == len(full['comparison']['before']['pairs']) == len(PAIRS)  # the file: every pair
