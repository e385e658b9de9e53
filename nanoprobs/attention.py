"""
Attention weights from the model's own forward pass (GPT.forward(capture=Capture())), for the pictures of
tools/attention.py and the page's inspector: the explicit attention path, whose outputs equal the fused
kernel's (tests/test_inspect.py), not a re-implementation.
"""

import torch

from model import Capture


def attention_maps(model, idx):
    """Attention weights (n_layer, n_head, T, T) of the prompt idx (1, T), float32 on the CPU:
    row i holds how query token i spreads its attention over tokens 0..i."""
    cap = Capture()
    with torch.inference_mode():
        model(idx, capture=cap)
    return stack(cap.attn)


def stack(attn):
    """Capture().attn of a one-row pass as one (n_layer, n_head, T, T) float32 CPU tensor."""
    return torch.stack([a[0] for a in attn]).float().cpu()


def token_attention(att, position):
    """Where the prediction of the token at `position` looked: the attention row of query position - 1
    over keys 0..position - 1, (n_layer, n_head, position), from att (n_layer, n_head, T, T). Each head's
    row sums to 1; the mean over heads is .mean(1)."""
    return att[:, :, position - 1, :position]
