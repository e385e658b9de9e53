"""
Sampling math in float64 log space: the model and sampling distributions, top-k / top-p, draws, entropy.

The *model* distribution is softmax(logits) at temperature 1 with no filtering; the *sampling*
distribution is softmax(logits / temperature) after top-k / top-p: what a token was drawn from.
temperature=0 means greedy (all mass on the argmax); any positive temperature, however small, is computed
exactly, without overflow (a tiny one gives greedy's distribution). Natural logs throughout.
"""

import math
from dataclasses import dataclass

import torch


def device64(device):
    """Where float64 math runs for tensors on `device`: the device itself, or the CPU for Apple MPS,
    which has no float64."""
    device = torch.device(device)
    return torch.device('cpu') if device.type == 'mps' else device


def f64(x):
    """x as float64 for log-space math, where device64 says (no copy if it already is)."""
    return x.to(device64(x.device), torch.float64)


def make_generator(device, seed):
    """A seeded torch.Generator for generate(): where the draws happen (device64 of the model's device)."""
    return torch.Generator(device=device64(device)).manual_seed(seed)


def check_ids(ids, vocab_size, name):
    """Raise ValueError naming `name` unless ids is a non-empty list of token ids in [0, vocab_size)."""
    if not isinstance(ids, (list, tuple)):
        raise ValueError(f"{name} must be a list of token ids, got {type(ids).__name__}")
    if not ids:
        raise ValueError(f"{name} is empty: give at least one token id")
    bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"{name} has ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """Raise ValueError naming the setting if a sampling value makes no sense."""
    if temperature is None or not isinstance(temperature, (int, float)) or math.isnan(temperature) \
            or temperature < 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be an int >= 0 (0 or None = off), got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or math.isnan(top_p)
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 or None = off), got {top_p!r}")


def is_model_distribution(temperature=1.0, top_k=None, top_p=None):
    """True when these settings sample from the model distribution itself (T=1, no top-k, no top-p)."""
    return temperature == 1 and not top_k and (top_p is None or top_p >= 1)


def sampling_logprobs(logits, temperature=1.0, top_k=None, top_p=None):
    """Log-probabilities (float64) of the sampling distribution for logits (..., V).

    temperature 0 = greedy (log 1 on the argmax, -inf elsewhere); top_k 0/None = off (clamped to V);
    top_p 1/None = off, else keep the smallest set of most likely tokens whose mass reaches top_p."""
    logits = f64(logits)
    if temperature == 0:
        lp = torch.full_like(logits, float('-inf'))
        return lp.scatter_(-1, logits.argmax(-1, keepdim=True), 0.0)
    # shifted so the largest logit is 0 before dividing: (logit - max) / T is <= 0 and overflows to -inf
    # at worst, never to +inf, so any positive temperature works, down to 5e-324 (the limit T -> 0 is
    # greedy: all mass on the argmax, split evenly between exact ties)
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[..., [-1]], float('-inf'))
    lp = logits.log_softmax(-1)
    if top_p is not None and top_p < 1:
        sorted_lp, order = lp.sort(-1, descending=True)
        cum = sorted_lp.exp().cumsum(-1)
        drop = (cum - sorted_lp.exp()) >= top_p  # mass before this token already reaches top_p
        drop = torch.zeros_like(drop).scatter(-1, order, drop)  # back to vocabulary order
        lp = lp.masked_fill(drop, float('-inf')).log_softmax(-1)
    return lp


@dataclass
class Kept:
    """A sampling distribution with all its mass on k tokens per row (top-k sampling), kept sparse: their
    ids (N, k), ascending, and log-probs (N, k) float64; every other token has log-prob -inf. Equal to
    sampling_logprobs() at those ids, at a cost of k instead of the vocabulary per row and step."""
    ids: torch.Tensor  # (N, k) int64, ascending
    lp: torch.Tensor   # (N, k) float64

    def at(self, idx):
        """Log-probs (N, m) of the token ids idx (N, m): -inf for a token that was not kept."""
        match = self.ids[:, None, :] == idx[:, :, None]  # (N, m, k)
        return torch.where(match, self.lp[:, None, :], float('-inf')).amax(-1)

    def dense(self, vocab_size):
        """The (N, V) log-probs sampling_logprobs() gives."""
        out = self.lp.new_full((self.lp.size(0), vocab_size), float('-inf'))
        return out.scatter_(-1, self.ids, self.lp)


def kept_logprobs(logits, temperature, top_k, top_p=None):
    """Top-k sampling's distribution over logits (N, V) as a Kept: the k most likely tokens, then
    temperature and top-p among them (sampling_logprobs on their logits). None where it does not apply
    (greedy, top_k off or >= V) or where tokens tied with the k-th keep more than k (sampling_logprobs
    keeps every token at or above the k-th value)."""
    V = logits.size(-1)
    if temperature == 0 or not top_k or top_k >= V:
        return None
    logits = f64(logits)
    v, ids = logits.topk(top_k)  # (N, k), most likely first; temperature > 0 keeps the order
    if bool(((logits >= v[:, -1:]).sum(-1) > top_k).any()):
        return None
    ids, order = ids.sort(-1)  # vocabulary order: the draw walks the same cumulative sum as the dense one
    return Kept(ids, sampling_logprobs(v.gather(-1, order), temperature, None, top_p))


def logprobs_at(dist, idx):
    """Log-probs (N, m) at token ids idx (N, m) of a distribution: (N, V) log-probs or a Kept."""
    return dist.at(idx) if isinstance(dist, Kept) else dist.gather(-1, idx)


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token id per row of logits (B, V). Returns (ids (B,), sampling log-probs (B, V) float64)."""
    lp = sampling_logprobs(logits, temperature, top_k, top_p)
    return draw(lp, temperature, generator), lp


def draw(lp, temperature, generator=None):
    """One token id (B,) per row of sampling log-probs lp (B, V) float64 (or a Kept); the argmax when
    temperature is 0. A Kept draws the token a dense lp would give for the same random number.

    generator: one torch.Generator for every row, or a list of B generators, one per row: row b then
    draws from its own stream, so what it gets does not depend on the other rows in the batch."""
    if isinstance(lp, Kept):
        return lp.ids.gather(-1, draw(lp.lp, temperature, generator)[:, None])[:, 0]
    if temperature == 0:
        return lp.argmax(-1)
    # inverse-CDF draw: the first token whose cumulative probability exceeds a uniform u. Same
    # distribution as torch.multinomial, ~10x cheaper on CPU over a 50k vocabulary; a token of
    # probability 0 is never drawn (its CDF step is empty)
    cdf = lp.exp().cumsum(-1)  # (B, V)
    if isinstance(generator, (list, tuple)):
        if len(generator) != cdf.size(0):
            raise ValueError(f"{len(generator)} generators for a batch of {cdf.size(0)} rows: "
                             "give one per row")
        u = torch.cat([torch.rand(1, 1, generator=g, dtype=cdf.dtype, device=cdf.device) for g in generator])
    else:
        u = torch.rand(cdf.size(0), 1, generator=generator, dtype=cdf.dtype, device=cdf.device)  # (B, 1)
    u = torch.minimum(u * cdf[:, -1:], cdf[:, -1:] * (1 - 1e-12))  # never at or past the total
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def entropy(lp):
    """Entropy in nats of the distributions whose log-probs are lp (..., V) (or a Kept); 0 log 0 counts
    as 0."""
    if isinstance(lp, Kept):
        lp = lp.lp
    return (-(lp.exp() * lp.nan_to_num(neginf=0.0)).sum(-1)).clamp_min(0.0)


def distributions(logits, temperature=1.0, top_k=None, top_p=None):
    """Log-probs (N, V) float64 of logits (N, V) under the model and the sampling distribution:
    (model_lp, sample_lp), one and the same tensor when the settings sample from the model itself.
    With top-k, sample_lp is a Kept (the same numbers, sparse: read it with logprobs_at, draw, entropy)."""
    logits = f64(logits)
    model_lp = logits.log_softmax(-1)
    if is_model_distribution(temperature, top_k, top_p):
        return model_lp, model_lp
    kept = kept_logprobs(logits, temperature, top_k, top_p)
    return model_lp, kept if kept is not None else sampling_logprobs(logits, temperature, top_k, top_p)
