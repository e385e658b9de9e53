"""The fault sweep's cases (issue 18): extreme values, damaged files, full disks, memory limits and interrupted
runs each end in a true result or one line naming the file, key or value and the fix; nothing is lost."""
import errno
import json
import math
import os
import pickle
import signal
import sys

import numpy as np
import pytest
import torch

from configurator import UserError
from conftest import ROOT, run_script, tiny_model, write_ckpt
from nanoprobs import checks, load, sampling, tokenizer
from nanoprobs.decoding import generate, under_temperatures


def one_line(e):
    msg = str(e.value if hasattr(e, 'value') else e)
    assert '\n' not in msg and 'Traceback' not in msg, msg
    return msg


# -----------------------------------------------------------------------------
# sampling: any positive temperature, however small

TINY_TEMPERATURES = [1e-310, 5e-324, 2e-308]


@pytest.mark.parametrize('t', TINY_TEMPERATURES)
def test_a_tiny_temperature_is_greedy_and_never_nan(t):
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 5  # (B, V)
    lp = sampling.sampling_logprobs(logits, t)
    greedy = sampling.sampling_logprobs(logits, 0)
    # exactly greedy's distribution; a log-prob may be a huge finite negative (-5e306) rather than -inf
    assert not lp.isnan().any() and torch.equal(lp.exp(), greedy.exp()) and (lp <= 0).all()
    ids, _ = sampling.sample(logits, t, generator=torch.Generator().manual_seed(0))
    assert ids.tolist() == logits.argmax(-1).tolist()
    tie = torch.tensor([[1.0, 3.0, 3.0, -2.0]])  # the limit T -> 0 splits the mass between exact ties
    assert sampling.sampling_logprobs(tie, t).exp().tolist() == [[0.0, 0.5, 0.5, 0.0]]


@pytest.mark.parametrize('t', [1e-3, 0.7, 1.0, 3.0])
def test_the_shifted_computation_equals_the_plain_one(t):
    """Where logits / T does not overflow, the result is the textbook log_softmax(logits / T) in float64."""
    torch.manual_seed(1)
    logits = torch.randn(4, 64) * 3
    want = (logits.double() / t).log_softmax(-1)
    assert torch.allclose(sampling.sampling_logprobs(logits, t), want, rtol=0, atol=1e-12)
    k = sampling.sampling_logprobs(logits, t, top_k=5)
    top = logits.double().topk(5).indices
    ref = torch.full_like(want, -math.inf).scatter(-1, top, (logits.double() / t).gather(-1, top).log_softmax(-1))
    assert torch.allclose(k, ref, rtol=0, atol=1e-12)


def test_generate_and_the_temperature_comparison_at_a_tiny_temperature():
    model = tiny_model(vocab_size=300)
    x = torch.tensor([[5, 17, 42]])
    greedy = generate(model, x, 6, temperature=0)[0]
    for t in TINY_TEMPERATURES:
        s = generate(model, x, 6, temperature=t, top_k=200, generator=sampling.make_generator('cpu', 0))[0]
        assert s.tokens == greedy.tokens and s.sample_logprobs.tolist() == [0.0] * 6
        assert torch.allclose(s.logprobs, greedy.logprobs, rtol=0, atol=1e-12)
    top, lps, ents = under_temperatures(model, [5, 17, 42], [1e-310, 5e-324, 1.0], k=5)
    for lp in lps[:2]:
        assert lp.exp().tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert not any(map(math.isnan, ents)) and ents[0] == ents[1] == 0.0


def test_a_checkpoint_with_nan_weights_is_one_line(tmp_path):
    m = tiny_model()
    with torch.no_grad():
        m.transformer.h[1].mlp.c_fc.weight[3, 4] = float('nan')
    path = write_ckpt(tmp_path / 'out', m)
    with pytest.raises(ValueError) as e:
        load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{path}: the weights hold NaN or infinite values (transformer.h.1.mlp.c_fc.weight")
    assert 'use an earlier checkpoint' in msg
