"""
The logit lens: each layer's residual stream read the way the model reads its last one, through the
final layer norm (ln_f) and the unembedding (lm_head), giving a next-token distribution per layer.

Row 0 reads the embeddings (token + position), row k the output of block k - 1; the last row is the
model's own output distribution (softmax of the logits, temperature 1). Log-probs are float64.
tools/logit_lens.py draws logit_lens() as a table; the page's inspector shows token_lens() per token.
"""

from dataclasses import dataclass

import torch

from model import Capture
from nanoprobs.sampling import f64


@dataclass
class Lens:
    top_ids: torch.Tensor    # (n_layer + 1, T) the most likely next token of each layer at each position
    top_probs: torch.Tensor  # (n_layer + 1, T) float64, its probability
    next_probs: torch.Tensor  # (n_layer + 1, T - 1) float64, probability of the prompt's actual next token


def row_names(n_layer):
    """The lens's rows: the embeddings, then each block's output."""
    return ['embeddings'] + [f"block {k}" for k in range(n_layer)]


def logit_lens(model, idx):
    """The logit lens of prompt idx (1, T): row 0 reads the embeddings, row k the output of block
    k - 1; the last row is exactly the model's output distribution."""
    cap = Capture()
    tops, top_ps, nexts = [], [], []
    with torch.inference_mode():
        model(idx, capture=cap)
        for r in cap.resid:  # (1, T, C) each
            lp = read(model, r[0])  # (T, V)
            p, i = lp.max(-1)
            tops.append(i)
            top_ps.append(p.exp())
            nexts.append(lp[:-1].gather(-1, idx[0, 1:, None])[:, 0].exp())
    return Lens(torch.stack(tops).cpu(), torch.stack(top_ps).cpu(), torch.stack(nexts).cpu())


def read(model, h):
    """Residual states h (N, C) read as the last layer's are: log_softmax(lm_head(ln_f(h))), (N, V) float64."""
    return f64(model.lm_head(model.transformer.ln_f(h))).log_softmax(-1)


@dataclass
class TokenLens:
    """What each layer predicted for one token of a text: one entry per row of row_names() (the last is
    the model distribution, the one the token's own probability is under)."""
    position: int        # the token's index in the sequence; it is predicted at position - 1
    top_ids: list        # each row's most likely token there
    top_logprobs: list   # its log-prob under that row's reading
    logprobs: list       # the token's log-prob under each row's reading (float64)
    ranks: list          # the token's rank under each row's reading (1 = that row's top token)


def token_lens(model, ids, positions, resid=None, chunk=256):
    """TokenLens of ids[j] for each j in positions (1 <= j < len(ids), and j <= block_size: the context
    ids[:j] is read in one pass). resid: Capture().resid of a forward pass over ids already made (the
    inspector shares one pass with the attention panel); else one is made here.
    Log-probs are float64 (logit - logsumexp of the float64 logits, as log_softmax computes them); the
    ranks and top tokens compare the logits themselves (which log_softmax shifts, not reorders)."""
    positions = list(positions)
    if not positions:
        return []
    if resid is None:
        cap = Capture()
        x = torch.tensor([ids[:max(positions)]], device=model.lm_head.weight.device)  # (1, T)
        with torch.inference_mode():
            model(x, capture=cap)
        resid = cap.resid
    device = resid[0].device
    pos = torch.tensor(positions, device=device)  # (N,)
    chosen = torch.tensor([ids[j] for j in positions], device=device)[:, None]  # (N, 1)
    cols = []  # per row: (top ids, top lps, chosen lps, ranks), each (N,)
    with torch.inference_mode():
        for r in resid:  # (1, T, C)
            parts = []
            for c in range(0, len(positions), chunk):
                logits = model.lm_head(model.transformer.ln_f(r[0, pos[c:c + chunk] - 1]))  # (n, V)
                lse = f64(logits).logsumexp(-1)  # (n,)
                top, top_id = logits.max(-1)
                lc = logits.gather(-1, chosen[c:c + chunk])  # (n, 1)
                parts.append((top_id, f64(top) - lse, f64(lc[:, 0]) - lse, (logits > lc).sum(-1, dtype=torch.int32) + 1))
            cols.append([torch.cat(p).cpu().tolist() for p in zip(*parts)])
    return [TokenLens(j, *([row[k][n] for row in cols] for k in range(4))) for n, j in enumerate(positions)]
