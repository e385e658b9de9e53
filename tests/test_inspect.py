"""Beam search, attention capture, logit lens, token-embedding projection, before/after samples."""
import itertools
import pickle
import re

import pytest
import torch

from conftest import run_script, tiny_model, write_ckpt
from nanoprobs.formatting import format_prob
from model import Capture

ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # tiny models: threads only wait for each other on 2 busy cores
PROMPT = [464, 3290, 318, 257]  # "The dog is a"


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def greedy(model, prompt, n, stop=None):
    return model.generate(torch.tensor([prompt]), n, temperature=0, stop_token=stop)[0]


# -----------------------------------------------------------------------------
# beam search

@pytest.mark.parametrize('seed,prompt,n', [(0, PROMPT, 20), (1, list(range(300, 320)), 30)])  # 2nd: past block_size 32
def test_one_beam_is_greedy(seed, prompt, n):
    model = tiny_model(seed)
    g = greedy(model, prompt, n)
    (b,) = model.beam_search(prompt, n, num_beams=1)
    assert b.tokens == g.tokens and not b.stopped
    assert torch.allclose(b.logprobs, g.logprobs, rtol=0, atol=1e-6)
    # with a stop token: the token greedy produces at step 3, first seen there
    stop = next(t for i, t in enumerate(g.tokens) if i >= 2 and t not in g.tokens[:i])
    gs = greedy(model, prompt, n, stop)
    (bs,) = model.beam_search(torch.tensor([prompt]), n, num_beams=1, stop_token=stop)
    assert bs.tokens == gs.tokens and bs.tokens[-1] == stop and bs.stopped and gs.stopped


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('alpha', [0.0, 1.0])
def test_best_beam_scores_at_least_greedy(seed, alpha):
    model = tiny_model(seed)
    n = 10
    g = greedy(model, PROMPT, n)
    beams = model.beam_search(PROMPT, n, num_beams=4, length_penalty=alpha)
    assert len(beams) == 4 and len({tuple(b.tokens) for b in beams}) == 4
    assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)
    assert beams[0].score >= g.logprob / n ** alpha - 1e-9


@pytest.mark.parametrize('alpha', [0.0, 1.0, 2.0])
def test_beams_equal_exhaustive_search_when_beams_cover_every_prefix(alpha):
    """A 4-token vocabulary, 3 new tokens, stop token 0: all 40 possible outcomes (ending at the stop
    token after 1, 2 or 3 tokens, or running to 3 tokens) scored one by one with model.score. With 16
    beams every live prefix survives, so beam search must return exactly the 16 best by
    sum(log p) / len^alpha, in order (the stop token counting in both)."""
    V, n, stop = 4, 3, 0
    model = tiny_model(3, vocab_size=V)
    prompt = [1, 2]
    outcomes = [[stop]] + [list(s) + [stop] for k in (1, 2) for s in itertools.product(range(1, V), repeat=k)]
    outcomes += [list(s) for s in itertools.product(range(1, V), repeat=n)]
    assert len(outcomes) == 1 + 3 + 9 + 27
    ref = model.score([prompt] * len(outcomes), outcomes)
    ranked = sorted(((r.logprob / len(r.tokens) ** alpha, r.tokens) for r in ref), reverse=True)[:16]
    beams = model.beam_search(prompt, n, num_beams=16, length_penalty=alpha, stop_token=stop,
                              early_stopping='never')
    assert [b.tokens for b in beams] == [t for _, t in ranked]
    assert [b.score for b in beams] == pytest.approx([s for s, _ in ranked], abs=1e-5)
    assert all(b.stopped == (b.tokens[-1] == stop) for b in beams)


def test_beams_equal_transformers_beam_search(tmp_path):
    """The reference: transformers' generate(num_beams=4) on the same weights returns the same beams,
    in the same order, for every early_stopping mode and length penalty, with a stop token that ends
    beams after 1 to 18 tokens, and with no_repeat_ngram_size."""
    transformers = pytest.importorskip('transformers')
    from model import GPT
    torch.manual_seed(2)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=8,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # peaked distributions, as tiny_model does
        for name, p in hf.named_parameters():
            if p.dim() == 2:
                p.mul_(10 if 'wte' in name else 20 if 'wpe' in name else 5)
    hf.save_pretrained(tmp_path / 'hf')
    ours = GPT.from_pretrained(str(tmp_path / 'hf')).eval()
    stop, n = 0, 20
    stopped, results = set(), {}
    for prompt, nb, es, alpha, ngram in [
            ([1, 2, 3], 4, False, 0.0, 0), ([1, 2, 3], 4, False, 1.0, 0), ([1, 2, 3], 4, False, 2.0, 0),
            ([1, 2, 3], 4, True, 1.0, 0), ([1, 2, 3], 4, 'never', 2.0, 0), ([1, 2, 3], 4, False, 1.0, 2),
            ([4, 5], 3, False, 1.5, 0), ([4, 5], 3, 'never', 1.5, 0), ([4, 5], 3, True, 1.5, 0)]:
        T = len(prompt)
        ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, T, dtype=torch.long), num_beams=nb,
                          num_return_sequences=nb, max_new_tokens=n, do_sample=False, length_penalty=alpha,
                          early_stopping=es, no_repeat_ngram_size=ngram, eos_token_id=stop, pad_token_id=stop)
        ref = [s[T:s.index(stop, T) + 1] if stop in s[T:] else s[T:] for s in ref.tolist()]
        beams = ours.beam_search(prompt, n, nb, alpha, ngram, stop, es)
        assert [b.tokens for b in beams] == ref, (prompt, nb, es, alpha, ngram)
        stopped |= {len(b.tokens) for b in beams if b.stopped}
        results[es] = ref
    assert len(stopped) >= 4  # beams ended at the stop token after several different lengths
    assert results[False] != results['never'] != results[True]  # the last three runs tell the modes apart


@pytest.mark.parametrize('seed,V,prompt,num_beams,alpha,n', [
    (11, 6, [3], 3, 1.0, 12), (4, 5, [4], 3, 1.5, 16), (14, 8, [7], 2, 2.0, 12)])
def test_early_stopping_false_scores_live_beams_at_their_current_length(seed, V, prompt, num_beams, alpha, n):
    """early_stopping=False stops once the worst finished beam scores at least the best live beam's
    total log-prob / (its current length, t + 1 after step t) ** alpha, as transformers does. Here that
    boundary decides the outcome: dividing by t instead stops too early and returns other beams."""
    pytest.importorskip('transformers')
    model = tiny_model(seed, vocab_size=V)
    hf = model.to_hf(eot=0)
    T = len(prompt)
    ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, T, dtype=torch.long),
                      num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=n, do_sample=False,
                      length_penalty=alpha, early_stopping=False, eos_token_id=0, pad_token_id=0)
    ref = [s[T:s.index(0, T) + 1] if 0 in s[T:] else s[T:] for s in ref.tolist()]
    beams = model.beam_search(prompt, n, num_beams, alpha, stop_token=0, early_stopping=False)
    assert [b.tokens for b in beams] == ref


@pytest.mark.parametrize('kw', [
    dict(prompt=PROMPT, n=12, num_beams=3, stop=True),
    dict(prompt=list(range(1000, 1012)), n=30, num_beams=4, no_repeat_ngram_size=2),  # past block_size
    dict(prompt=PROMPT, n=10, num_beams=2, length_penalty=0.5, stop=True),
])
def test_beam_logprobs_equal_rescoring(kw):
    kw = dict(kw)
    model = tiny_model(1)
    prompt, n = kw.pop('prompt'), kw.pop('n')
    if kw.pop('stop', False):
        kw['stop_token'] = model.beam_search(prompt, n, 3)[0].tokens[2]  # a token the beams like
    beams = model.beam_search(prompt, n, **kw)
    alpha = kw.get('length_penalty', 1.0)
    ref = model.score([b.prompt for b in beams], [b.tokens for b in beams])
    for b, r in zip(beams, ref):
        assert b.prompt == prompt and b.logprobs.dtype == torch.float64 and len(b.logprobs) == len(b.tokens)
        assert torch.allclose(b.logprobs, r.logprobs, rtol=0, atol=1e-5), (b.logprobs - r.logprobs).abs().max()
        assert abs(b.logprob - r.logprob) < 1e-5
        assert b.score == pytest.approx(b.logprob / len(b.tokens) ** alpha, rel=1e-12)
    if 'stop_token' in kw:
        assert any(b.stopped for b in beams)


def ngrams(seq, n):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


@pytest.mark.parametrize('size', [1, 2, 3])
def test_no_repeat_ngram_size(size):
    model = tiny_model(0)
    free = model.beam_search(PROMPT, 16, num_beams=3)
    assert any(len(set(ngrams(b.ids, size))) < len(ngrams(b.ids, size)) for b in free)  # the tiny model repeats
    for b in model.beam_search(PROMPT, 16, num_beams=3, no_repeat_ngram_size=size):
        grams = ngrams(b.ids, size)  # prompt included, as Hugging Face does
        assert len(set(grams)) == len(grams) and len(b.tokens) == 16


def test_stop_token_ends_beams():
    model = tiny_model(2)
    free = model.beam_search(PROMPT, 12, num_beams=4)
    stop = free[0].tokens[3]
    beams = model.beam_search(PROMPT, 12, num_beams=4, stop_token=stop)
    assert len(beams) == 4 and any(b.stopped for b in beams)
    for b in beams:
        if b.stopped:
            assert b.tokens[-1] == stop and stop not in b.tokens[:-1]
        else:
            assert len(b.tokens) == 12 and stop not in b.tokens


def test_early_stopping_modes():
    """True stops once num_beams beams have ended; False (heuristic) and 'never' (exact) search on,
    and the finished list only ever improves, so the best score can only rise from True to 'never'."""
    model = tiny_model(4, vocab_size=6)
    runs = {es: model.beam_search([1, 2, 3], 30, num_beams=3, stop_token=0, early_stopping=es)
            for es in (True, False, 'never')}
    assert all(b.stopped for b in runs[True])
    assert runs[True][0].score <= runs[False][0].score <= runs['never'][0].score
    assert runs[True][0].score < runs['never'][0].score  # here searching on finds better beams


def test_beam_search_rejects_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match='one prompt'):
        model.beam_search(torch.zeros(2, 3, dtype=torch.long), 5)
    with pytest.raises(ValueError, match='num_beams'):
        model.beam_search(PROMPT, 5, num_beams=0)
    with pytest.raises(ValueError, match='vocabulary|token ids'):
        model.beam_search([60000], 5)
    with pytest.raises(ValueError, match='early_stopping'):
        model.beam_search(PROMPT, 5, early_stopping='sometimes')


def test_print_beams_shows_score_arithmetic(capsys, gpt2_tok):
    from nanoprobs.beams import print_beams
    model = tiny_model()
    beams = model.beam_search(PROMPT, 7, num_beams=3)
    print_beams(beams, greedy(model, PROMPT, 7), gpt2_tok)
    out = capsys.readouterr().out
    b = beams[0]
    assert f"{b.logprob:.2f} / 7^1.0 = {b.score:.3f}" in out
    assert format_prob(b.logprob) in out and 'greedy' in out


# -----------------------------------------------------------------------------
# attention capture

@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_capture_gives_identical_outputs_and_valid_attention(dtype, tol):
    model = tiny_model(1).to(dtype)
    x = torch.randint(0, 50257, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(x, all_logits=True)[0]
        cap = Capture()
        captured = model(x, all_logits=True, capture=cap)[0]
    scale = plain.abs().max()
    assert (captured - plain).abs().max() <= tol * scale
    assert len(cap.attn) == 2 and len(cap.resid) == 3
    for a in cap.attn:
        assert a.shape == (2, 4, 20, 20)
        assert torch.allclose(a.sum(-1), torch.ones(2, 4, 20, dtype=dtype), atol=tol)
        assert (a.triu(1) == 0).all()  # nothing attends to the future
    # with the KV cache: the new tokens' rows are the same rows of the full pass
    from nanoprobs.decoding import KVCache
    cache = KVCache(model.config, 2, 'cpu', dtype)
    with torch.no_grad():
        model(x[:, :15], cache=cache)
        cap2 = Capture()
        step = model(x[:, 15:], cache=cache, all_logits=True, capture=cap2)[0]
    assert (step - plain[:, 15:]).abs().max() <= tol * scale
    for a_full, a_new in zip(cap.attn, cap2.attn):
        assert a_new.shape == (2, 4, 5, 20)
        assert torch.allclose(a_new, a_full[:, :, 15:], atol=tol)


def test_attention_maps_of_the_script():
    from tools.attention import attention_maps, head_roles
    model = tiny_model(2)
    x = torch.tensor([PROMPT + [11, 290, 262]])
    att = attention_maps(model, x)
    cap = Capture()
    with torch.no_grad():
        model(x, capture=cap)
    assert att.shape == (2, 4, 7, 7) and torch.equal(att, torch.stack([a[0] for a in cap.attn]))
    roles = head_roles(att)  # first / previous / self / other: mean weights, summing to 1
    assert roles.shape == (2, 4, 4) and torch.allclose(roles.sum(-1), torch.ones(2, 4), atol=1e-5)
    assert roles[0, 0, 1] == pytest.approx(att[0, 0, [2, 3, 4, 5, 6], [1, 2, 3, 4, 5]].mean().item(), abs=1e-6)


# -----------------------------------------------------------------------------
# logit lens

def test_logit_lens_ends_in_the_model_prediction_and_starts_at_the_embeddings():
    from tools.logit_lens import logit_lens
    model = tiny_model(1)
    x = torch.tensor([PROMPT + [11, 290]])
    lens = logit_lens(model, x)
    assert lens.top_ids.shape == (3, 6) and lens.next_probs.shape == (3, 5)
    with torch.no_grad():
        p = model(x, all_logits=True)[0][0].double().softmax(-1)  # (T, V) the model's own prediction
        emb = model.transformer.wte(x[0]) + model.transformer.wpe(torch.arange(6))
        p0 = model.lm_head(model.transformer.ln_f(emb)).double().softmax(-1)  # read straight off the input
    for row, q in ((-1, p), (0, p0)):
        assert torch.equal(lens.top_ids[row], q.argmax(-1))
        assert torch.allclose(lens.top_probs[row], q.max(-1).values, atol=1e-6)
        assert torch.allclose(lens.next_probs[row], q[:-1].gather(-1, x[0, 1:, None])[:, 0], atol=1e-6)
    assert not torch.equal(lens.top_ids[0], lens.top_ids[-1])  # the layers change the prediction


# -----------------------------------------------------------------------------
# token embeddings

def test_word_vectors_and_pca(gpt2_tok):
    from tools.embeddings import pca_2d, token_groups, word_vectors
    model = tiny_model()
    groups = token_groups(gpt2_tok, ['king', 'Rumpelstiltskin', 'dog'])
    assert groups[0] == gpt2_tok.encode(' king') and len(groups[1]) > 1
    wte = model.transformer.wte.weight.detach().double()
    v = word_vectors(model, groups)
    assert torch.allclose(v[1], wte[groups[1]].mean(0))
    assert torch.equal(word_vectors(model, groups, 'first')[1], wte[groups[1][0]])
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * torch.arange(1, 9)
    mean, comps, ratio = pca_2d(x)
    ev, evec = torch.linalg.eigh(torch.cov(x.T))  # the covariance's top eigenvectors, independently
    assert torch.allclose(comps.T @ comps, torch.eye(2, dtype=torch.float64), atol=1e-10)
    for k in range(2):
        assert abs(float(comps[:, k] @ evec[:, -1 - k])) == pytest.approx(1.0, abs=1e-8)
    assert ratio.tolist() == pytest.approx((ev[-2:].flip(0) / ev.sum()).tolist(), rel=1e-8)


# -----------------------------------------------------------------------------
# the scripts, end to end

def test_scripts_on_a_gpt2_vocabulary_checkpoint(tmp_path, gpt2_tok):
    write_ckpt(tmp_path / 'out')
    after = tiny_model()
    with torch.no_grad():
        after.transformer.wte.weight.mul_(1.1)
    write_ckpt(tmp_path / 'out-after', after)

    out = run_script('tools.attention', '--init_from=resume', '--start=The dog is a dog', '--layer=1', '--head=3',
                     cwd=tmp_path, env=ONE_THREAD).stdout
    assert (tmp_path / 'results' / 'attention_out_grid.png').stat().st_size > 5000
    assert (tmp_path / 'results' / 'attention_out_L1H3.png').stat().st_size > 5000
    assert 'saved results/attention_out_grid.png' in out and 'layer 1 head 3' in out

    out = run_script('tools.embeddings', '--init_from=resume', '--compare_init_from=resume',
                     '--compare_out_dir=out-after', '--words=king,queen,dog,Rumpelstiltskin', cwd=tmp_path, env=ONE_THREAD).stdout
    assert (tmp_path / 'results' / 'embeddings_out_vs_out-after.png').stat().st_size > 5000
    # every word moved by 10% of its length (the "after" model scaled the embeddings by 1.1)
    moves = re.findall(r"^\s+'(\w+)'\s+(\d+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)", out, re.M)
    assert {m[0] for m in moves} == {'king', 'queen', 'dog', 'Rumpelstiltskin'}
    assert all(float(m[3]) == pytest.approx(10.0, abs=0.01) and float(m[4]) == pytest.approx(1.0) for m in moves)
    assert '1 word(s) span several tokens: mean of their token embeddings' in out


CHARS = 'abcdefghijklmnopqrstuvwxyz .'


def char_checkpoints(tmp_path):
    """Two character-level checkpoints whose config names data/tinychars/meta.pkl, as upstream's
    shakespeare_char does."""
    stoi = {c: i for i, c in enumerate(CHARS)}
    meta = dict(vocab_size=len(CHARS), stoi=stoi, itos={i: c for c, i in stoi.items()})
    (tmp_path / 'data' / 'tinychars').mkdir(parents=True)
    with open(tmp_path / 'data' / 'tinychars' / 'meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    for seed, d in ((0, 'out'), (1, 'out-b')):
        write_ckpt(tmp_path / d, tiny_model(seed, vocab_size=len(CHARS)), config={'dataset': 'tinychars'})


def test_scripts_on_a_character_level_checkpoint(tmp_path, monkeypatch):
    char_checkpoints(tmp_path)
    (tmp_path / 'text.txt').write_text('the cat sat on the mat. the dog ate a bone. ' * 20)

    out = run_script('tools.embeddings', '--init_from=resume', '--corpus=text.txt', '--num_tokens=10',
                     '--compare_init_from=resume', '--compare_out_dir=out-b', cwd=tmp_path, env=ONE_THREAD).stdout
    assert "the 10 most frequent tokens of text.txt: ' ' 220, 't' 140" in out
    assert (tmp_path / 'results' / 'embeddings_out_vs_out-b.png').exists()

    out = run_script('tools.logit_lens', '--init_from=resume', '--start=the cat sat', cwd=tmp_path, env=ONE_THREAD).stdout
    assert 'saved results/logit_lens_out.png' in out and 'block 1' in out

    out = run_script('tools.beam', '--init_from=resume', '--start=the cat', '--num_beams=3', '--max_new_tokens=8',
                     cwd=tmp_path, env=ONE_THREAD).stdout
    assert out.count(' / 8^1.0 = ') == 4  # three beams and greedy, all 8 characters long
    # the timing line names the two in the order they are printed: beams, then greedy
    assert re.search(r'\ntime: beam search \d+\.\d\d s \(3 beams\), greedy \d+\.\d\d s ', out), out

    out = run_script('tools.compare_samples', '--init_from=resume', '--compare_init_from=resume',
                     '--compare_out_dir=out-b', '--prompts=the cat|a dog', '--num_samples=2', '--max_new_tokens=10',
                     '--temperature=1.0', '--top_k=None', cwd=tmp_path, env=ONE_THREAD).stdout
    table = (tmp_path / 'results' / 'compare_samples_out_vs_out-b.md').read_text()
    assert table.strip() in out and '| prompt | # | out | p | out-b | p |' in table
    rows = [r.split(' | ') for r in table.splitlines() if r.startswith('| ') and not r.startswith('| prompt')]
    assert len(rows) == 4
    # the probabilities in the table are those of the sampled text, rescored here by each model
    from nanoprobs import load
    monkeypatch.chdir(tmp_path)  # where data/tinychars/meta.pkl is found
    a = load.load_model('resume', str(tmp_path / 'out'), 'cpu', 'float32')
    b = load.load_model('resume', str(tmp_path / 'out-b'), 'cpu', 'float32')
    prompts = ['the cat', 'the cat', 'a dog', 'a dog']
    for prompt, r in zip(prompts, rows):
        for text, probs, m, other in ((r[2], r[3], a.model, b.model), (r[4], r[5].rstrip(' |'), b.model, a.model)):
            ids, resp = [CHARS.index(c) for c in prompt], [CHARS.index(c) for c in text]
            own, cross = m.score([ids], [resp])[0], other.score([ids], [resp])[0]
            assert f"model {format_prob(own.logprob)}<br>sampled {format_prob(own.logprob)}" in probs
            assert f"{format_prob(cross.logprob)}" in probs.split('under ')[1]
