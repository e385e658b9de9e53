"""Inference precision: real bfloat16 matmul weights (load.cast_matmul_weights) keep float32 logits and
float64 log-probs, with a bounded error against float32 (bench/precision.py measures it on GPT-2's shape);
the unembedding's kept float32 transposed copy (GPT.inference_head) computes lm_head exactly, trains
through to the embedding, follows weight changes and is never kept for training."""
import pytest
import torch

from conftest import tiny_model, write_ckpt
from nanoprobs import load

# the largest per-token |log p difference| of bfloat16 weights against float32 allowed on the tiny model
# (peaked distributions, logits up to ~60); bench/precision.py prints the same number for GPT-2's shape
BF16_BOUND = 0.05  # measured 0.013 here


def test_bfloat16_weights_are_real_and_their_logprobs_stay_close(tmp_path, gpt2_tok):
    from eval import score_pairs
    write_ckpt(tmp_path / 'out', tiny_model(seed=1))
    L = {dt: load.load_model('resume', str(tmp_path / 'out'), device='cpu', dtype=dt)
         for dt in ('float64', 'float32', 'bfloat16')}
    m = L['bfloat16'].model
    # every matmul weight is bfloat16, nn.Linear's contiguous layout; the tied embedding is that same tensor;
    # LayerNorms and the position embedding stay float32
    linear = [mod.weight for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert linear and all(w.dtype == torch.bfloat16 and w.is_contiguous() for w in linear)
    assert m.transformer.wte.weight is m.lm_head.weight
    assert m.transformer.wpe.weight.dtype == m.transformer.ln_f.weight.dtype == torch.float32
    x = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), L['bfloat16'].ctx:
        assert m(x)[0].dtype == torch.float32  # logits (through the float32 copy of the unembedding)

    pairs = [["Once upon a time", " there was a girl."], ["The fox said,", " \"Come closer, my friend.\""],
             ["", "And they lived happily ever after."]]
    with L['float32'].ctx:
        text = L['float32'].model.generate(torch.tensor([gpt2_tok.encode("Once")]), 20,
                                           generator=torch.Generator().manual_seed(2))[0]
    pairs.append(["Once", gpt2_tok.decode(text.tokens)])
    runs = {dt: score_pairs(pairs, Ld, quiet=True) for dt, Ld in L.items()}

    def gap(a, b):
        return max(abs(x - y) for pa, pb in zip(runs[a].pairs, runs[b].pairs)
                   for x, y in zip(pa.logprobs, pb.logprobs))

    assert gap('float32', 'float64') < 1e-4  # float32 is the exact mode
    half = gap('bfloat16', 'float32')
    assert 1e-4 < half < BF16_BOUND, half  # bfloat16 is really in use (not float32), and close


def test_kept_transposed_unembedding_is_lm_head_and_trains_through():
    model = tiny_model(seed=2)
    h = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(3))  # (B, T, C) final hidden states
    wt = model.inference_head()  # eval mode on CPU: the contiguous (C, V) float32 copy
    assert wt is not None and wt.shape == (32, 50257) and wt.is_contiguous()
    assert model.inference_head() is wt  # kept, not remade per call
    torch.testing.assert_close(model.unembed(h), model.lm_head(h), atol=1e-5, rtol=1e-5)
    # gradients reach the hidden states and the tied embedding as through lm_head
    def grads(fn):
        model.zero_grad()
        hx = h.clone().requires_grad_(True)
        (fn(hx) ** 2).mean().backward()
        return hx.grad, model.lm_head.weight.grad.clone()

    ours, ref = grads(model.unembed), grads(model.lm_head)
    assert ref[1].abs().max() > 0
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # an in-place change of the weights is seen (the version counter moves): the copy is remade
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    torch.testing.assert_close(model.unembed(h), model.lm_head(h), atol=1e-5, rtol=1e-5)
    # training keeps no copy
    model.train()
    assert model.inference_head() is None and '_inference_head' not in model.__dict__


@pytest.mark.parametrize('dt', ['float32', 'bfloat16'])
def test_generation_and_scoring_agree_with_half_precision_weights(tmp_path, dt):
    """generate() (KV cache, one token at a time) and score() (one padded pass) report the same per-token
    log-probs of the same tokens, in float32 and with bfloat16 weights (the cache holds what the weights
    make)."""
    write_ckpt(tmp_path / 'out', tiny_model(seed=4))
    L = load.load_model('resume', str(tmp_path / 'out'), device='cpu', dtype=dt)
    with torch.no_grad(), L.ctx:
        s = L.model.generate(torch.tensor([[11, 12, 13]]), 10, generator=torch.Generator().manual_seed(5))[0]
        r = L.model.score([[11, 12, 13]], [s.tokens])[0]
    tol = 1e-5 if dt == 'float32' else 0.05
    torch.testing.assert_close(r.logprobs, s.logprobs, atol=tol, rtol=0)
