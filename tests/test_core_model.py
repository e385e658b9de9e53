"""model.py: GPT-2 equivalence with transformers, probabilities, one-pass scoring, KV cache, sampling."""
import math

import pytest
import torch

from conftest import make_hf_dir, tiny_model
from nanoprobs.sampling import sample, sampling_logprobs
from nanoprobs.formatting import format_prob
from model import GPT

V = 97  # small vocabulary for the pure-math tests


def loop_logprobs(model, prompt, tokens):
    """Independent reference: one plain forward pass per token over the context generation would use
    (the last block_size tokens), log_softmax in float64."""
    bs = model.config.block_size
    seq, out = list(prompt), []
    with torch.no_grad():
        for t in tokens:
            logits, _ = model(torch.tensor([seq[-bs:]]))
            out.append(logits[0, -1].double().log_softmax(-1)[t].item())
            seq.append(t)
    return torch.tensor(out, dtype=torch.float64)


def reference_sampling_lp(logits, temperature, top_k, top_p):
    """Sampling distribution written out the long way (sorting, python loops) to check model.sampling_logprobs."""
    logits = logits.double()
    order = sorted(range(len(logits)), key=lambda i: -logits[i].item())
    keep = set(order[:top_k] if top_k else order)
    if temperature == 0:
        p = torch.zeros_like(logits)
        p[order[0]] = 1
        return p.log()
    p = (logits / temperature).softmax(-1)
    p = torch.where(torch.tensor([i in keep for i in range(len(p))]), p, torch.zeros_like(p))
    p = p / p.sum()
    if top_p < 1:
        mass, nucleus = 0.0, set()
        for i in sorted(range(len(p)), key=lambda i: -p[i].item()):
            if mass >= top_p:
                break
            nucleus.add(i)
            mass += p[i].item()
        p = torch.where(torch.tensor([i in nucleus for i in range(len(p))]), p, torch.zeros_like(p))
        p = p / p.sum()
    return p.log()


# -----------------------------------------------------------------------------
# GPT-2, exactly

def hf_logits(hf, x):
    with torch.no_grad():
        return hf(x).logits


def test_logits_match_transformers_tiny(tmp_path):
    hf = make_hf_dir(tmp_path / 'hf', n_positions=32, vocab_size=V)
    model = GPT.from_pretrained(str(tmp_path / 'hf')).eval()
    assert model.config.gelu == 'tanh'
    x = torch.randint(0, V, (3, 32), generator=torch.Generator().manual_seed(0))
    ref = hf_logits(hf, x)
    with torch.no_grad():
        ours = model(x, all_logits=True)[0]
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel < 1e-6, rel
    # the test can see GELU: the same weights with upstream's exact GELU are measurably off
    for block in model.transformer.h:
        block.mlp.gelu.approximate = 'none'
    with torch.no_grad():
        exact = model(x, all_logits=True)[0]
    assert (exact - ref).abs().max() / ref.abs().max() > 10 * rel


def test_logits_match_transformers_gpt2_124M_shape(tmp_path):
    """A GPT-2-124M-shaped model (random weights, default GPT2Config) through a local HF directory.
    Both implementations are compared with the float64 truth: ours is as close to it as transformers'
    own float32 forward pass is, i.e. the remaining difference is float32 rounding, nothing else."""
    import copy
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(tmp_path / 'gpt2')
    model = GPT.from_pretrained(str(tmp_path / 'gpt2')).eval()
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / 'gpt2').eval()
    assert (model.config.n_layer, model.config.n_embd, model.config.vocab_size, model.config.block_size) == \
        (12, 768, 50257, 1024)
    x = torch.randint(0, 50257, (1, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(x).logits
        ours = model(x, all_logits=True)[0]
        truth = copy.deepcopy(model).double()(x, all_logits=True)[0]
    diff = (ours - ref).abs().max().item()
    assert diff < 2e-5 and diff / ref.abs().max().item() < 2e-6
    assert (ours - truth).abs().max() <= 1.5 * (ref - truth).abs().max() + 1e-7
    for block in model.transformer.h:  # upstream's exact GELU on GPT-2 weights: visibly wrong
        block.mlp.gelu.approximate = 'none'
    with torch.no_grad():
        assert (model(x, all_logits=True)[0] - ref).abs().max() > 50 * diff


def test_from_pretrained_rejects_unsupported_config(tmp_path):
    make_hf_dir(tmp_path / 'hf', vocab_size=V, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ValueError, match='scale_attn_by_inverse_layer_idx'):
        GPT.from_pretrained(str(tmp_path / 'hf'))


# -----------------------------------------------------------------------------
# generate(): probabilities under both distributions

@pytest.mark.parametrize('temperature,top_k,top_p', [(1.0, None, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.0, None, None)])
def test_generate_logprobs_equal_independent_recomputation(temperature, top_k, top_p):
    model = tiny_model(vocab_size=V)
    prompt = [1, 2, 3]
    g = torch.Generator().manual_seed(3)
    s = model.generate(torch.tensor([prompt]), 12, temperature=temperature, top_k=top_k, top_p=top_p, generator=g)[0]
    assert len(s.tokens) == 12 and s.logprobs.dtype == torch.float64
    # model distribution: a plain forward pass over the whole sequence in float64
    m64 = tiny_model(vocab_size=V).double()
    with torch.no_grad():
        logits = m64(torch.tensor([s.ids]), all_logits=True)[0][0]  # (T, V)
    lp = logits.log_softmax(-1)
    T0 = len(prompt)
    ref = torch.stack([lp[T0 - 1 + i, t] for i, t in enumerate(s.tokens)])
    assert torch.allclose(s.logprobs, ref, atol=1e-5, rtol=0)
    # sampling distribution, computed the long way
    ref_s = torch.stack([reference_sampling_lp(logits[T0 - 1 + i], temperature, top_k, top_p or 1.0)[t]
                         for i, t in enumerate(s.tokens)])
    assert torch.allclose(s.sample_logprobs, ref_s, atol=1e-5, rtol=0)
    assert math.isclose(s.logprob, float(ref.sum()), abs_tol=1e-4)
    assert math.isclose(s.prob, math.exp(float(ref.sum())), rel_tol=1e-4)
    if temperature == 0:
        assert s.sample_prob == 1.0 and s.tokens == [int(logits[T0 - 1 + i].argmax()) for i in range(12)]


@pytest.mark.parametrize('top_k,top_p', [(5, None), (None, 0.8), (5, 0.8)])
def test_generate_at_temperature_1_with_top_k_or_top_p_keeps_the_distributions_apart(top_k, top_p):
    """T=1 with top-k or top-p draws from a truncated, renormalised distribution, not the model's own:
    logprobs (and ranks, Steps) stay the model distribution of a plain float64 forward pass, while
    sample_logprobs are the renormalised one. Only T=1 with neither is the model distribution."""
    model = tiny_model(vocab_size=V)
    n = 12
    s = model.generate(torch.tensor([[1, 2, 3]]), n, temperature=1.0, top_k=top_k, top_p=top_p,
                       details=5, generator=torch.Generator().manual_seed(0))[0]
    m64 = tiny_model(vocab_size=V).double()
    with torch.no_grad():
        logits = m64(torch.tensor([s.ids]), all_logits=True)[0][0, 2:2 + n]  # (n, V), predicting tokens
    lp = logits.log_softmax(-1)  # (n, V) model distribution
    ref = lp.gather(-1, torch.tensor(s.tokens)[:, None])[:, 0]  # (n,)
    ref_s = torch.stack([reference_sampling_lp(logits[i], 1.0, top_k, top_p or 1.0)[t]
                         for i, t in enumerate(s.tokens)])  # (n,) sampling distribution, the long way
    assert torch.allclose(s.logprobs, ref, atol=1e-5, rtol=0)
    assert torch.allclose(s.sample_logprobs, ref_s, atol=1e-5, rtol=0)
    assert (s.sample_logprobs - s.logprobs).min() > 1e-3  # every drawn token gained the mass cut away
    assert s.ranks.tolist() == [int((lp[i] > lp[i, t]).sum()) + 1 for i, t in enumerate(s.tokens)]
    for i, st in enumerate(s.steps):
        top = torch.tensor(st.top_logprobs, dtype=torch.float64)
        assert torch.allclose(top, lp[i].topk(5).values, atol=1e-5)
        assert math.isclose(st.chosen_logprob, ref[i].item(), abs_tol=1e-5)
        assert math.isclose(st.chosen_sample_logprob, ref_s[i].item(), abs_tol=1e-5)


def test_low_temperature_sampling_prob_is_one_but_model_prob_is_not():
    model = tiny_model(vocab_size=V)
    s = model.generate(torch.tensor([[5, 6]]), 8, temperature=1e-4, generator=torch.Generator().manual_seed(0))[0]
    assert s.sample_prob > 0.999
    assert s.prob < 0.9  # what the model itself believes
    greedy = model.generate(torch.tensor([[5, 6]]), 8, temperature=0)[0]
    assert s.tokens == greedy.tokens


def test_steps_details_match_forward_pass():
    model = tiny_model(vocab_size=V)
    s = model.generate(torch.tensor([[4, 8]]), 6, temperature=2.0, top_k=30, details=10,
                       generator=torch.Generator().manual_seed(5))[0]
    with torch.no_grad():
        logits = model(torch.tensor([s.ids]), all_logits=True)[0][0].double()
    for i, st in enumerate(s.steps):
        lp = logits[1 + i].log_softmax(-1)
        top = lp.topk(10)
        assert st.top_ids == top.indices.tolist()
        assert torch.allclose(torch.tensor(st.top_probs, dtype=torch.float64), top.values.exp(), atol=1e-6)
        assert st.chosen == s.tokens[i]
        assert math.isclose(st.chosen_prob, lp[st.chosen].exp().item(), abs_tol=1e-6)
        assert st.chosen_rank == int((lp > lp[st.chosen]).sum()) + 1
        assert math.isclose(math.log(st.chosen_sample_prob), s.sample_logprobs[i].item(), abs_tol=1e-6)
        assert math.isclose(st.entropy, -(lp.exp() * lp).sum().item(), abs_tol=1e-5)
    # at temperature 2 with top-k 30 some chosen tokens fall outside the top 10: the rank says so
    assert any(st.chosen_rank > 10 for st in s.steps)
    assert all((st.chosen in st.top_ids) == (st.chosen_rank <= 10) for st in s.steps)


def test_format_prob_never_a_silent_zero():
    assert math.exp(-1000) == 0.0
    assert format_prob(-1000) == '5.076e-435'
    assert format_prob(math.log(0.25)) == '0.2500'
    assert format_prob(math.log(3.2e-12)) == '3.200e-12'
    assert format_prob(float('-inf')) == '0'


# -----------------------------------------------------------------------------
# fixed_response: one pass equals the token-by-token computation

def test_fixed_response_one_pass_equals_token_loop_float32(monkeypatch):
    model = tiny_model(vocab_size=V)
    prompt, resp = [3, 1, 4, 1, 5], torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(2)).tolist()
    calls = []
    orig = GPT.hidden
    monkeypatch.setattr(GPT, 'hidden', lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    s = model.generate(torch.tensor([prompt]), 0, fixed_response=resp)[0]
    assert len(calls) == 1  # one forward pass, not one per token
    monkeypatch.undo()
    assert s.tokens == resp
    assert (s.logprobs - loop_logprobs(model, prompt, resp)).abs().max() < 1e-5


def test_fixed_response_equals_token_loop_float64_past_block_size():
    model = tiny_model(vocab_size=V).double()
    bs = model.config.block_size
    prompt = [7] * 10
    resp = torch.randint(0, V, (3 * bs,), generator=torch.Generator().manual_seed(4)).tolist()  # well past block_size
    s = model.score([prompt], [resp])[0]
    ref = loop_logprobs(model, prompt, resp)
    assert (s.logprobs - ref).abs().max() < 1e-9
    # and a prompt that alone is longer than block_size
    s2 = model.score([list(range(bs + 5))], [resp[:7]])[0]
    assert (s2.logprobs - loop_logprobs(model, list(range(bs + 5)), resp[:7])).abs().max() < 1e-9


def test_score_batch_of_different_lengths_equals_one_at_a_time():
    model = tiny_model(vocab_size=V)
    g = torch.Generator().manual_seed(6)
    pairs = [(torch.randint(0, V, (n,), generator=g).tolist(), torch.randint(0, V, (m,), generator=g).tolist())
             for n, m in [(1, 3), (9, 1), (4, 40), (30, 5)]]
    batch = model.score([p for p, _ in pairs], [r for _, r in pairs])
    for (p, r), s in zip(pairs, batch):
        one = model.score([p], [r])[0]
        assert (s.logprobs - one.logprobs).abs().max() < 1e-6
        assert (s.logprobs - loop_logprobs(model, p, r)).abs().max() < 1e-5


def test_generated_tokens_rescored_with_fixed_response_agree():
    model = tiny_model(vocab_size=V)
    s = model.generate(torch.tensor([[1, 2]]), 50, temperature=0.9, top_k=10, generator=torch.Generator().manual_seed(1))[0]
    f = model.generate(torch.tensor([[1, 2]]), 0, temperature=0.9, top_k=10, fixed_response=s.tokens)[0]
    assert (s.logprobs - f.logprobs).abs().max() < 1e-5
    assert (s.sample_logprobs - f.sample_logprobs).abs().max() < 1e-5


def test_long_response_does_not_underflow():
    model = tiny_model(vocab_size=V)
    resp = torch.randint(0, V, (400,), generator=torch.Generator().manual_seed(0)).tolist()
    s = model.score([[1]], [resp])[0]
    assert s.prob == 0.0 and math.isfinite(s.logprob) and s.logprob < -745  # exp underflows float64...
    assert 'e-' in format_prob(s.logprob) and format_prob(s.logprob) != '0'  # ...its log does not


@pytest.mark.parametrize('bad,msg', [([], 'empty'), ('hello', 'list of token ids'), ([1, V], 'outside the vocabulary'),
                                     ([1, -1], 'outside the vocabulary'), ([1.5], 'outside the vocabulary')])
def test_fixed_response_bad_input(bad, msg):
    model = tiny_model(vocab_size=V)
    with pytest.raises(ValueError, match=msg):
        model.generate(torch.tensor([[1]]), 5, fixed_response=bad)


def test_out_of_top_k_forced_token_has_zero_sampling_probability():
    model = tiny_model(vocab_size=V)
    with torch.no_grad():
        lp = model(torch.tensor([[1, 2]]))[0][0, -1].log_softmax(-1)
    worst = int(lp.argmin())
    s = model.generate(torch.tensor([[1, 2]]), 0, top_k=5, fixed_response=[worst])[0]
    assert s.sample_logprobs[0] == float('-inf') and s.sample_prob == 0.0
    assert math.isclose(s.logprob, lp[worst].item(), abs_tol=1e-5)  # the model's own number is finite


# -----------------------------------------------------------------------------
# KV cache

def test_kv_cache_greedy_identical_to_uncached_past_block_size():
    model = tiny_model(vocab_size=V)
    bs = model.config.block_size
    x = torch.tensor([[3, 1, 4], [2, 7, 1]])
    a = model.generate(x, 3 * bs, temperature=0)
    b = model.generate(x, 3 * bs, temperature=0, use_cache=False)
    for sa, sb in zip(a, b):
        assert sa.tokens == sb.tokens
        assert (sa.logprobs - sb.logprobs).abs().max() < 1e-5


def test_kv_cache_sampling_same_seed_same_tokens():
    model = tiny_model(vocab_size=V)
    x = torch.tensor([[9, 9]])
    kw = dict(temperature=1.0, top_k=20, top_p=0.95)
    a = model.generate(x, 60, generator=torch.Generator().manual_seed(11), **kw)[0]
    b = model.generate(x, 60, generator=torch.Generator().manual_seed(11), use_cache=False, **kw)[0]
    c = model.generate(x, 60, generator=torch.Generator().manual_seed(11), **kw)[0]
    assert a.tokens == b.tokens == c.tokens


def test_chunked_prefill_with_cache_matches_full_pass():
    """Several new tokens after a cached prefix use an offset causal mask."""
    from nanoprobs.decoding import KVCache
    model = tiny_model(vocab_size=V)
    x = torch.randint(0, V, (2, 20), generator=torch.Generator().manual_seed(0))
    cache = KVCache(model.config, 2, 'cpu', torch.float32)
    with torch.no_grad():
        model(x[:, :7], cache=cache)
        part = model(x[:, 7:], cache=cache, all_logits=True)[0]
        full = model(x, all_logits=True)[0][:, 7:]
    assert (part - full).abs().max() < 1e-5


# -----------------------------------------------------------------------------
# sampling edge cases

def test_sampling_edge_values():
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(0))
    greedy, lp = sample(logits, temperature=0)
    assert torch.equal(greedy, logits.argmax(-1)) and torch.all(lp.exp().sum(-1) == 1)
    off = sampling_logprobs(logits, 1.0, None, None)
    for same in (sampling_logprobs(logits, 1.0, 0, 1.0), sampling_logprobs(logits, 1.0, 10 ** 6, None)):
        assert torch.allclose(off, same)  # top_k 0 = off, top_k > V clamped, top_p 1 = off
    k5 = sampling_logprobs(logits, 1.0, 5, None)
    assert torch.all(torch.isfinite(k5).sum(-1) == 5)
    p_small = sampling_logprobs(logits, 1.0, None, 1e-9)
    assert torch.all(torch.isfinite(p_small).sum(-1) == 1)  # nucleus keeps at least the top token
    for row in range(3):
        ref = reference_sampling_lp(logits[row], 0.8, 20, 0.7)
        assert torch.allclose(sampling_logprobs(logits[row], 0.8, 20, 0.7), ref, atol=1e-9)


@pytest.mark.parametrize('kw,name', [(dict(temperature=-1), 'temperature'), (dict(temperature=float('nan')), 'temperature'),
                                     (dict(top_k=-3), 'top_k'), (dict(top_p=0.0), 'top_p'), (dict(top_p=1.5), 'top_p'),
                                     (dict(top_p=float('nan')), 'top_p')])
def test_bad_sampling_values_name_the_setting(kw, name):
    model = tiny_model(vocab_size=V)
    with pytest.raises(ValueError, match=name):
        model.generate(torch.tensor([[1]]), 3, **kw)


def test_stop_token():
    """Rows of a batch stop independently: each keeps its tokens up to its own stop, and only their log-probs."""
    model = tiny_model(vocab_size=V)
    x = torch.tensor([[1, 2], [3, 4]])
    free = model.generate(x, 30, temperature=0)
    stop = next(t for t in free[0].tokens if t not in free[1].tokens)  # row 0 stops, row 1 never does
    out = model.generate(x, 30, temperature=0, stop_token=stop)
    first = free[0].tokens.index(stop)
    assert out[0].stopped and out[0].tokens == free[0].tokens[:first + 1]
    assert torch.allclose(out[0].logprobs, free[0].logprobs[:first + 1], atol=1e-6)
    assert len(out[0].ranks) == len(out[0].top1) == first + 1
    assert not out[1].stopped and out[1].tokens == free[1].tokens and len(out[1].logprobs) == 30
    assert torch.allclose(out[1].logprobs, free[1].logprobs, atol=1e-6)
    # a row that stops early in a batch that goes on: its result ends at its stop token
    both = next((t for t in free[1].tokens[3:] if t in free[0].tokens[5:]), None)
    if both is not None:
        out2 = model.generate(x, 30, temperature=0, stop_token=both)
        for row, f in zip(out2, free):
            n = f.tokens.index(both) + 1
            assert row.stopped and row.tokens == f.tokens[:n] and len(row.logprobs) == n


# -----------------------------------------------------------------------------
# The kernel for a few rows (generation's batch of samples) and the weight layout it reads

@pytest.mark.parametrize('rows', [1, 3, 4, 10, 128, 129])
@pytest.mark.parametrize('bias', [True, False])
def test_few_rows_linear_equals_nn_linear_values_and_gradients(rows, bias):
    from model import Linear
    torch.manual_seed(rows)
    ours = Linear(48, 40, bias=bias)
    ref = torch.nn.Linear(48, 40, bias=bias)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(rows, 1, 48, requires_grad=True)  # (B, T, C) as the blocks see it
    y, y_ref = ours(x), ref(x)
    truth = x.detach().double() @ ours.weight.detach().double().t() + (ours.bias.detach().double() if bias else 0)
    assert y.shape == y_ref.shape == (rows, 1, 40) and y.is_contiguous()
    assert (y.double() - truth).abs().max() <= 2 * (y_ref.double() - truth).abs().max() + 1e-6
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, ours.weight), g)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, ref.weight), g)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-5, atol=1e-6)


def test_fit_layout_before_batched_decoding_keeps_values_and_training(tmp_path):
    """A Hugging Face folder's matmul weights are transposed views (no copy at load); decoding 10 rows makes
    them contiguous in place: the same values, probabilities equal to a plain forward pass, and the model
    still trains (the new weights are not inference tensors)."""
    make_hf_dir(tmp_path / 'hf')
    model = GPT.from_pretrained(str(tmp_path / 'hf')).eval()
    w = model.transformer.h[0].mlp.c_fc.weight
    before = w.detach().clone()
    assert not w.is_contiguous()
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2)  # one row: nothing to change
    assert not w.is_contiguous()
    out = model.generate(torch.tensor([[1, 2, 3]] * 10), max_new_tokens=6, temperature=1.0)
    assert w.is_contiguous() and torch.equal(w.detach(), before)
    for s in out:
        torch.testing.assert_close(s.logprobs, loop_logprobs(model, s.prompt, s.tokens), rtol=0, atol=1e-5)
    model.train()
    _, loss = model(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[2, 3, 4, 5]]))
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
