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


def read_rows(model, h, chosen):
    """What each state of h (n, C) predicts when read as the last layer's is (ln_f, then the unembedding):
    (top token id, its log-prob, the log-prob of chosen[i], chosen[i]'s rank), each (n,). Log-probs are
    float64 differences logit - logsumexp(logits), where logsumexp = max + log(sum(exp(logit - max))) with
    the sum of terms <= 1 taken in float32 (relative error ~1e-7, below the float32 logits' own; a float64
    copy of the (n, V) logits would cost more than the product that made them). Ranks and top tokens compare
    the logits themselves (which log_softmax shifts, not reorders)."""
    logits = model.unembed(model.transformer.ln_f(h))  # (n, V) float32, as the model's own distribution
    top, top_id = logits.max(-1)  # (n,)
    lc = logits.gather(-1, chosen[:, None])  # (n, 1)
    # counted as float32 0/1 values (exact below 2**24): faster than a bool tensor's integer sum
    rank = torch.gt(logits, lc, out=torch.empty_like(logits)).sum(-1).long() + 1  # (n,)
    lse = f64(top) + f64(logits.sub_(top[:, None]).exp_().sum(-1)).log()  # (n,); logits are spent here
    return top_id, f64(top) - lse, f64(lc[:, 0]) - lse, rank


def states_lens(model, states, chosen, positions, chunk=256):
    """TokenLens of tokens chosen (N,) at sequence positions (N ints), from states (R, N, C): for each row
    of row_names(), the residual stream at the position before each token (one batch of N states may
    mix several texts: each state is read alone)."""
    cols = []  # per row: (top ids, top lps, chosen lps, ranks), each a list of N
    with torch.inference_mode():
        for r in states:  # (N, C)
            parts = [read_rows(model, r[c:c + chunk], chosen[c:c + chunk]) for c in range(0, len(chosen), chunk)]
            cols.append([torch.cat(p).cpu().tolist() for p in zip(*parts)])
    return [TokenLens(j, *([row[k][n] for row in cols] for k in range(4))) for n, j in enumerate(positions)]


def position_states(resid, positions):
    """(R, N, C): the residual stream of every row (Capture().resid of one text, each (1, T, C)) at the
    position before each token of positions, where that token is predicted."""
    pos = torch.tensor(positions, device=resid[0].device) - 1  # (N,)
    return torch.stack([r[0, pos] for r in resid])


def token_lens(model, ids, positions, resid=None, chunk=256):
    """TokenLens of ids[j] for each j in positions (1 <= j < len(ids), and j <= block_size: the context
    ids[:j] is read in one pass). resid: Capture().resid of a forward pass over ids already made (the
    inspector shares one pass with the attention panel); else one is made here. Log-probs as read_rows'."""
    positions = list(positions)
    if not positions:
        return []
    if resid is None:
        cap = Capture()
        x = torch.tensor([ids[:max(positions)]], device=model.lm_head.weight.device)  # (1, T)
        with torch.inference_mode():
            model(x, capture=cap)
        resid = cap.resid
    chosen = torch.tensor([ids[j] for j in positions], device=resid[0].device)  # (N,)
    return states_lens(model, position_states(resid, positions), chosen, positions, chunk)
