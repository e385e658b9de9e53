"""
Decoding with a GPT: what generate() and score() return, the KV cache, generation and one-pass scoring.

Two distributions, always named the same way:
- the *model* distribution: softmax(logits), temperature 1, no top-k/top-p: what the model believes.
- the *sampling* distribution: softmax(logits / temperature) after top-k / top-p filtering: what the
  token was actually drawn from. temperature=0 means greedy (all mass on the argmax).
Log-probabilities are natural logs, computed and summed in float64 (the math is in sampling.py).

model.py's GPT.generate() and GPT.score() forward to the functions here; this file never imports model.py
(it takes the model as an argument), so the network does not depend on its decoding.
"""

import math
from dataclasses import dataclass

import torch

from nanoprobs.sampling import (check_ids, check_sampling, device64, distributions, draw, entropy, f64,
                                logprobs_at, sampling_logprobs)

# -----------------------------------------------------------------------------
# What generate() and score() return

@dataclass
class Step:
    """One generation (or scoring) step of one sample: the model's top-k candidates and the chosen token.

    Candidates are ranked by the model distribution; ranks are 1-based. `chosen` may lie outside the
    top k (then chosen_rank > k). Numbers are kept as float64 natural logs (a probability can underflow;
    print it with format_prob); the *_prob properties give the probabilities. Entropies are in nats."""
    top_ids: list            # k candidate token ids, most likely first
    top_logprobs: list       # their log-probabilities under the model distribution
    top_sample_logprobs: list  # ... under the sampling distribution (-inf: top-k/top-p excluded it)
    chosen: int              # the token taken (sampled, or forced by fixed_response)
    chosen_logprob: float    # under the model distribution
    chosen_sample_logprob: float  # under the sampling distribution
    chosen_rank: int         # 1 + number of tokens the model found strictly more likely
    entropy: float           # of the model distribution
    sample_entropy: float    # of the sampling distribution

    @property
    def top_probs(self):
        return [math.exp(x) for x in self.top_logprobs]

    @property
    def top_sample_probs(self):
        return [math.exp(x) for x in self.top_sample_logprobs]

    @property
    def chosen_prob(self):
        return math.exp(self.chosen_logprob)

    @property
    def chosen_sample_prob(self):
        return math.exp(self.chosen_sample_logprob)


class _Tokens:
    """What every result with a prompt, its tokens and their log-probs (model distribution) offers."""

    @property
    def ids(self):
        return self.prompt + self.tokens

    @property
    def logprob(self):
        """Total log-probability (float64 sum of the per-token logs)."""
        return float(self.logprobs.sum())

    @property
    def prob(self):
        """exp(logprob): may underflow to 0.0, so print format_prob(logprob) instead."""
        return math.exp(self.logprob)


@dataclass
class Sample(_Tokens):
    """One sequence's result from GPT.generate() or GPT.score().

    logprobs[i] is log p(tokens[i] | prompt, tokens[:i]) under the model distribution; sample_logprobs
    under the sampling distribution (with fixed_response, the distribution sampling would have used;
    -inf where top-k/top-p would have excluded the token). Both are float64 CPU tensors.
    Totals are float64 sums of logs; `prob` may underflow to 0.0 for long responses, so print
    probabilities with format_prob(logprob), which never shows a silent 0."""
    prompt: list            # prompt token ids
    tokens: list            # generated (or forced) token ids, after the prompt
    logprobs: torch.Tensor  # (T,) float64, model distribution
    sample_logprobs: torch.Tensor  # (T,) float64, sampling distribution
    ranks: torch.Tensor = None  # (T,) int64: 1-based rank of each token under the model distribution
    top1: torch.Tensor = None   # (T,) int64: the model's most likely token at each position (greedy's choice)
    steps: list = None      # list[Step], one per token, when generate(details=k) asked for them
    stopped: bool = False   # generation ended at stop_token (which is included in tokens)

    @property
    def sample_logprob(self):
        return float(self.sample_logprobs.sum())

    @property
    def sample_prob(self):
        return math.exp(self.sample_logprob)


@dataclass
class Beam(_Tokens):
    """One finished hypothesis of GPT.beam_search(). Log-probs are under the model distribution
    (beam search is deterministic: there is no sampling distribution)."""
    prompt: list            # prompt token ids
    tokens: list            # generated token ids (the stop token last, when stopped)
    logprobs: torch.Tensor  # (T,) float64: log p(tokens[i] | prompt, tokens[:i])
    score: float            # logprob / len(tokens) ** length_penalty, what beams are ranked by
    length_penalty: float
    stopped: bool = False   # ended at stop_token (else at max_new_tokens)
    steps: list = None      # list[Step], one per token, when beam_search(details=k) recorded them: the
    #   candidates beam search saw at that step (model distribution; the sample_ fields are None)


# -----------------------------------------------------------------------------
# The KV cache: GPT.forward(cache=...) appends each layer's keys and values to it

class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size.

    pos is the number of cached positions; the next token fed to the model gets position `pos`."""

    def __init__(self, config, batch_size, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, hs)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0

    def update(self, layer, k, v):
        """Store k, v (B, nh, T, hs) of `layer` at the current position; return all cached ones
        (B, nh, pos+T, hs)."""
        T = k.size(2)
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]

    def reorder(self, index):
        """Keep batch rows `index` (B',): beam search moves each beam's history along with it.
        Only the filled positions are copied (the buffers are preallocated to block_size)."""
        p = self.pos
        for name in ('k', 'v'):
            old = getattr(self, name)
            if old.size(1) == len(index):
                old[:, :, :, :p] = old[:, index, :, :p]  # the right side is a copy: safe in place
            else:  # the number of rows changes (one prompt row becomes num_beams beams)
                new = old.new_empty(old.shape[:1] + (len(index),) + old.shape[2:])
                new[:, :, :, :p] = old[:, index, :, :p]
                setattr(self, name, new)


# -----------------------------------------------------------------------------
# Per-token statistics, generation and scoring

def token_stats(model_lp, sample_lp, chosen, details=0):
    """What generate() and score() report about the chosen ids (N,), given both distributions' log-probs
    (N, V) float64 (the sampling one may be a sampling.Kept): (model log-prob (N,), sampling log-prob
    (N,), rank under the model (N,), the model's most likely token (N,), and with details=k one Step per
    row, else None)."""
    idx = chosen.to(model_lp.device)[:, None]  # (N, 1)
    lp = model_lp.gather(-1, idx)[:, 0]  # (N,)
    sample_lp_chosen = logprobs_at(sample_lp, idx)[:, 0]  # (N,)
    rank = (model_lp > lp[:, None]).sum(-1) + 1  # (N,) 1 + tokens the model finds strictly more likely
    top1 = model_lp.argmax(-1)  # (N,)
    steps = None
    if details:
        top_lp, top_ids = model_lp.topk(min(details, model_lp.size(-1)), dim=-1)  # (N, k)
        model_h = entropy(model_lp)  # (N,)
        sample_h = model_h if sample_lp is model_lp else entropy(sample_lp)  # one distribution at T=1
        cols = [top_ids, top_lp, logprobs_at(sample_lp, top_ids), idx[:, 0], lp, sample_lp_chosen, rank,
                model_h, sample_h]
        steps = [Step(*row) for row in zip(*(c.cpu().tolist() for c in cols))]
    return lp, sample_lp_chosen, rank, top1, steps


def next_logits(model, idx, cache):
    """Logits (B, V) for the token after idx (B, T), the context upstream's generate would use:
    the last block_size tokens at positions 0..block_size-1. Within block_size only the tokens
    not yet in the cache are fed; past it, absolute positions shift every step, so the cropped
    window is recomputed (exactly what upstream does every step)."""
    T, bs = idx.size(1), model.config.block_size
    if cache is None or T > bs:
        return model(idx[:, -bs:])[0][:, -1, :]
    return model(idx[:, cache.pos:], cache=cache)[0][:, -1, :]


@torch.inference_mode()
def under_temperatures(model, ids, temperatures, top_k=None, top_p=None, k=10):
    """The next-token distribution after ids (a token-id list) under each temperature, from one forward
    pass over the context generation would use: (the model's k most likely ids (k,), their sampling
    log-probs (k,) float64 per temperature, the entropy in nats per temperature). Temperature keeps the
    order of the tokens, so the same k are the most likely under every temperature (before top-k/top-p)."""
    x = torch.tensor([ids], dtype=torch.long, device=model.lm_head.weight.device)
    logits = next_logits(model, x, None)[0]  # (V,)
    top = f64(logits).topk(min(k, logits.size(-1))).indices  # (k,)
    lps = [sampling_logprobs(logits, t, top_k, top_p) for t in temperatures]  # each (V,) float64
    return top, [lp[top] for lp in lps], [float(entropy(lp)) for lp in lps]


@torch.inference_mode()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, fixed_response=None,
             stop_token=None, details=0, generator=None, use_cache=True):
    """Continue each row of idx (LongTensor (B, T)) and return one `Sample` per row.

    temperature: 0 = greedy; top_k: 0/None = off; top_p: 1/None = off (nucleus sampling).
    fixed_response: a list of token ids (or one list per row) to force instead of sampling;
        scored in one forward pass (see score()); max_new_tokens is then ignored.
    stop_token: end a row once it produces this id (e.g. 50256, <|endoftext|>); it is included.
    details: k > 0 records a `Step` (top-k candidates, chosen token and rank) per token.
    generator: a torch.Generator for reproducible draws (make_generator(device, seed) puts it where
        the draws happen), or a list of one per row (row b's tokens then depend only on its prompt and
        generator, not on the batch it is in); use_cache=False recomputes the whole context every step,
        as upstream does (the reference the KV cache is tested against).
    Most likely you'll want the model in eval() mode."""
    check_sampling(temperature, top_k, top_p)
    if not torch.is_tensor(idx) or idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be a (batch, time) tensor with at least one token, got "
                         f"{tuple(idx.shape) if torch.is_tensor(idx) else type(idx).__name__}")
    prompts = idx.tolist()
    for b, p in enumerate(prompts):
        check_ids(p, model.config.vocab_size, f"prompt of row {b}")
    if fixed_response is not None:
        if torch.is_tensor(fixed_response):
            fixed_response = fixed_response.tolist()
        B = idx.size(0)
        rows = fixed_response if fixed_response and isinstance(fixed_response[0], (list, tuple)) \
            else [fixed_response] * B
        if len(rows) != B:
            raise ValueError(f"fixed_response has {len(rows)} responses for a batch of {B} prompts")
        return score(model, prompts, rows, temperature, top_k, top_p, details)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")

    B, T0 = idx.shape
    new_ids, stats = [], []  # per step: (B,) ids and their token_stats
    for idx_next, st in decode(model, idx, max_new_tokens, temperature, top_k, top_p, stop_token, details,
                               generator, use_cache):
        new_ids.append(idx_next.cpu())
        stats.append(st)

    # (B, t) each: new ids, log-probs under both distributions, ranks, the model's top tokens
    cols = [torch.stack(c, 1).cpu() for c in [new_ids] + list(zip(*stats))[:4]] if stats else \
        [torch.zeros(B, 0, dtype=dt)
         for dt in (torch.long, torch.float64, torch.float64, torch.long, torch.long)]
    ids, lps, sample_lps, ranks, top1 = cols
    out = []
    for b in range(B):
        row = ids[b].tolist()
        stopped = stop_token is not None and stop_token in row
        n = row.index(stop_token) + 1 if stopped else len(row)  # finished rows were padded after the stop
        out.append(Sample(prompt=prompts[b], tokens=row[:n], logprobs=lps[b, :n].clone(),
                          sample_logprobs=sample_lps[b, :n].clone(), ranks=ranks[b, :n].clone(),
                          top1=top1[b, :n].clone(), steps=[s[4][b] for s in stats[:n]] if details else None,
                          stopped=stopped))
    return out


@torch.inference_mode()
def decode(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None, details=0,
           generator=None, use_cache=True):
    """generate()'s loop, one step at a time: yields (ids (B,), token_stats(...) of them) for every new
    token, so a caller can show tokens as they come (serve.py streams them). Arguments as generate()'s,
    checked there. A row that produced stop_token is padded with it; the loop ends once every row has."""
    B = idx.size(0)
    model.fit_layout(B)
    cache = KVCache(model.config, B, idx.device, model.lm_head.weight.dtype) if use_cache else None
    done = torch.zeros(B, dtype=torch.bool, device=device64(idx.device))
    for _ in range(max_new_tokens):
        logits = next_logits(model, idx, cache)  # (B, V)
        model_lp, sample_lp = distributions(logits, temperature, top_k, top_p)  # (B, V) float64 each
        idx_next = draw(sample_lp, temperature, generator)  # (B,)
        if stop_token is not None:
            idx_next = idx_next.masked_fill(done, stop_token)  # finished rows: padding
        yield idx_next, token_stats(model_lp, sample_lp, idx_next, details)
        idx = torch.cat((idx, idx_next.to(idx.device)[:, None]), dim=1)
        if stop_token is not None:
            done |= idx_next == stop_token
            if bool(done.all()):
                break


@torch.inference_mode()
def score(model, prompts, responses, temperature=1.0, top_k=None, top_p=None, details=0, chunk=16):
    """Log-probability of each response after its prompt: one forward pass over all rows
    (teacher forcing, right padding: causal attention never looks at the padding after a row).

    prompts, responses: lists of token-id lists (one pair per row). Returns one `Sample` per row,
    equal to what generate() would report token by token if it had drawn these tokens. A pair
    longer than block_size is scored with a sliding window: each token after position block_size
    sees the block_size tokens before it, as generation would give it (one extra window each)."""
    check_sampling(temperature, top_k, top_p)
    V, bs = model.config.vocab_size, model.config.block_size
    if not isinstance(prompts, (list, tuple)) or not isinstance(responses, (list, tuple)) \
            or len(prompts) != len(responses):
        raise ValueError("score() takes two lists of equal length: prompts and responses (token-id lists)")
    for i, (p, r) in enumerate(zip(prompts, responses)):
        check_ids(p, V, f"prompt of row {i}")
        check_ids(r, V, f"fixed_response of row {i}")
    device = model.lm_head.weight.device
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]

    # 1) every target whose context fits in one block: one padded forward pass over all rows
    T = min(max(len(s) for s in seqs), bs)
    x = torch.zeros(len(seqs), T, dtype=torch.long, device=device)
    for b, s in enumerate(seqs):
        x[b, :min(len(s), T)] = torch.tensor(s[:T], device=device)
    h = model.hidden(x)  # (B, T, C)
    # 2) targets past block_size: each sees the block_size tokens before it, in a window of its own
    windows = [s[i - bs:i] for p, s in zip(prompts, seqs) for i in range(max(len(p), bs + 1), len(s))]
    wh = [model.hidden(torch.tensor(windows[w:w + chunk], device=device))[:, -1]  # (n, C)
          for w in range(0, len(windows), chunk)]
    wh = torch.cat(wh) if wh else h.new_zeros(0, h.size(-1))
    parts, w = [], 0
    for b, (p, s) in enumerate(zip(prompts, seqs)):
        end = min(len(s), bs + 1)  # targets [len(p), end) are predicted inside the block, at i-1
        parts.append(h[b, len(p) - 1:end - 1])
        n_out = len(s) - max(len(p), end)
        parts.append(wh[w:w + n_out])
        w += n_out
    hs = torch.cat(parts)  # (N, C): the state that predicts each response token, rows in order
    targets = torch.tensor([t for r in responses for t in r], device=device)  # (N,)

    stats = []
    for c in range(0, hs.size(0), 256):  # float64 log-softmax over V, a chunk at a time
        logits = model.unembed(hs[c:c + 256])  # (n, V), as forward() computes them
        model_lp, sample_lp = distributions(logits, temperature, top_k, top_p)  # (n, V) float64 each
        stats.append(token_stats(model_lp, sample_lp, targets[c:c + 256], details))
    lps, sample_lps, ranks, top1 = (torch.cat(col).cpu() for col in list(zip(*stats))[:4])  # (N,) each
    steps = [st for s in stats for st in s[4]] if details else None
    out, k = [], 0
    for p, r in zip(prompts, responses):
        n = len(r)
        out.append(Sample(prompt=list(p), tokens=list(r), logprobs=lps[k:k + n],
                          sample_logprobs=sample_lps[k:k + n], ranks=ranks[k:k + n], top1=top1[k:k + n],
                          steps=steps[k:k + n] if details else None))
        k += n
    return out
