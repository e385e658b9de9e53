"""
Decoding with a GPT: what generate() and score() return, the sampling math, one-pass scoring, beam search.

Two distributions, always named the same way:
- the *model* distribution: softmax(logits), temperature 1, no top-k/top-p: what the model believes.
- the *sampling* distribution: softmax(logits / temperature) after top-k / top-p filtering: what the
  token was actually drawn from. temperature=0 means greedy (all mass on the argmax).
Log-probabilities are natural logs, computed and summed in float64.

model.py's GPT.generate(), GPT.score() and GPT.beam_search() call the functions here.
"""

import math
import time
from dataclasses import dataclass

import torch

from model import KVCache

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


# -----------------------------------------------------------------------------
# Checks, where float64 math runs, the two distributions, sampling, per-token statistics

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
    logits = logits / temperature
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


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token id per row of logits (B, V). Returns (ids (B,), sampling log-probs (B, V) float64)."""
    lp = sampling_logprobs(logits, temperature, top_k, top_p)
    return draw(lp, temperature, generator), lp


def draw(lp, temperature, generator=None):
    """One token id (B,) per row of sampling log-probs lp (B, V) float64; the argmax when temperature is 0.

    generator: one torch.Generator for every row, or a list of B generators, one per row: row b then
    draws from its own stream, so what it gets does not depend on the other rows in the batch."""
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
    """Entropy in nats of the distributions whose log-probs are lp (..., V); 0 log 0 counts as 0."""
    return (-(lp.exp() * lp.nan_to_num(neginf=0.0)).sum(-1)).clamp_min(0.0)


def distributions(logits, temperature=1.0, top_k=None, top_p=None):
    """Log-probs (N, V) float64 of logits (N, V) under the model and the sampling distribution:
    (model_lp, sample_lp), one and the same tensor when the settings sample from the model itself."""
    logits = f64(logits)
    model_lp = logits.log_softmax(-1)
    if is_model_distribution(temperature, top_k, top_p):
        return model_lp, model_lp
    return model_lp, sampling_logprobs(logits, temperature, top_k, top_p)


def token_stats(model_lp, sample_lp, chosen, details=0):
    """What generate() and score() report about the chosen ids (N,), given both distributions' log-probs
    (N, V) float64: (model log-prob (N,), sampling log-prob (N,), rank under the model (N,), the model's
    most likely token (N,), and with details=k one Step per row, else None)."""
    idx = chosen.to(model_lp.device)[:, None]  # (N, 1)
    lp = model_lp.gather(-1, idx)[:, 0]  # (N,)
    sample_lp_chosen = sample_lp.gather(-1, idx)[:, 0]  # (N,)
    rank = (model_lp > lp[:, None]).sum(-1) + 1  # (N,) 1 + tokens the model finds strictly more likely
    top1 = model_lp.argmax(-1)  # (N,)
    steps = None
    if details:
        top_lp, top_ids = model_lp.topk(min(details, model_lp.size(-1)), dim=-1)  # (N, k)
        model_h = entropy(model_lp)  # (N,)
        sample_h = model_h if sample_lp is model_lp else entropy(sample_lp)  # one distribution at T=1
        cols = [top_ids, top_lp, sample_lp.gather(-1, top_ids), idx[:, 0], lp, sample_lp_chosen, rank,
                model_h, sample_h]
        steps = [Step(*row) for row in zip(*(c.cpu().tolist() for c in cols))]
    return lp, sample_lp_chosen, rank, top1, steps


# -----------------------------------------------------------------------------
# Generation and scoring

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
        logits = model.lm_head(hs[c:c + 256])  # (n, V)
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


# -----------------------------------------------------------------------------
# Beam search

@torch.inference_mode()
def beam_search(model, idx, max_new_tokens, num_beams=4, length_penalty=1.0, no_repeat_ngram_size=0,
                stop_token=None, early_stopping=False):
    """Deterministic beam search from one prompt. Returns the finished beams (list of `Beam`), best first.

    idx: the prompt, a (1, T) LongTensor or a list of token ids.
    Every step extends each live beam by every token and keeps the num_beams extensions with the
    highest total log-probability (model distribution, float64). A beam finishes when it produces
    stop_token (kept in its tokens, as generate() does) or after max_new_tokens tokens.
    Finished beams are ranked by
        score = sum of the generated tokens' log-probs / (number of generated tokens) ** length_penalty
    (a stop token counts in both): length_penalty 1 ranks by mean log-prob per token, 0 by total
    log-prob (which favours short beams), > 1 favours longer ones still.
    no_repeat_ngram_size n > 0: no n-gram occurs twice in prompt + beam (tokens that would repeat
        one are banned), as Hugging Face does.

    Finished hypotheses and stopping are Hugging Face's (transformers' generate(num_beams=...),
    whose beams this returns token for token; tests/test_inspect.py checks it):
    - each step ranks the 2 * num_beams best candidates; a stop token among the best num_beams of
      them finishes that beam; the num_beams best other candidates live on;
    - at the last step (max_new_tokens) the best num_beams candidates all finish;
    - at most num_beams finished beams are kept, the best by score;
    - early_stopping=True: stop once num_beams beams have finished. False (the default): also stop
      once the best live beam, scored at its current length, cannot beat the worst finished one
      (a heuristic). 'never': stop only when no live beam can beat it at any length (exact).
    The length in the score counts generated tokens (not the prompt), the stop token included, as
    in transformers' current beam search: score is exactly sum(logprobs) / len(tokens) ** length_penalty.
    Fewer than num_beams beams come back only when no_repeat_ngram_size bans every continuation.
    num_beams=1 is greedy decoding: the same tokens as generate(temperature=0).

    Uses the KV cache (num_beams rows, reordered as beams move); past block_size the cropped
    window is recomputed every step, as generate() does."""
    if torch.is_tensor(idx):
        if idx.dim() == 2 and idx.size(0) != 1:
            raise ValueError(f"beam_search takes one prompt, got a batch of {idx.size(0)}: "
                             "idx must be (1, T)")
        prompt = idx.reshape(-1).tolist()
    else:
        prompt = list(idx) if isinstance(idx, (list, tuple)) else idx
    V = model.config.vocab_size
    check_ids(prompt, V, "the prompt")
    for name, val, lo in (('max_new_tokens', max_new_tokens, 1), ('num_beams', num_beams, 1),
                          ('no_repeat_ngram_size', no_repeat_ngram_size, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
            or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if early_stopping not in (True, False, 'never'):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")

    device = model.lm_head.weight.device
    T0, bs = len(prompt), model.config.block_size
    seqs = torch.tensor([prompt], device=device)  # (nb, T0 + t): live beams, one at first
    dev64 = device64(device)
    lps = torch.zeros(1, 0, dtype=torch.float64, device=dev64)  # (nb, t) per-token log-probs
    sums = torch.zeros(1, dtype=torch.float64, device=dev64)  # (nb,) total log-prob of each beam
    cache = KVCache(model.config, 1, device, model.lm_head.weight.dtype)
    finished = []  # Beams, best first, at most num_beams

    def finish(row_lps, tokens, stopped):
        n = len(tokens)
        b = Beam(prompt=list(prompt), tokens=tokens, logprobs=row_lps.cpu(),
                 score=float(row_lps.sum()) / n ** length_penalty, length_penalty=length_penalty,
                 stopped=stopped)
        finished.append(b)
        finished.sort(key=lambda h: -h.score)  # stable: on a tie the earlier beam stays ahead
        del finished[num_beams:]

    for t in range(max_new_tokens):
        lp = f64(next_logits(model, seqs, cache)).log_softmax(-1)  # (nb, V) model distribution
        cand = sums[:, None] + lp  # (nb, V) total log-prob of every extension
        if no_repeat_ngram_size:
            for b, row in enumerate(seqs.tolist()):
                banned = _ngram_bans(row, no_repeat_ngram_size)
                if banned:
                    cand[b, banned] = float('-inf')
        top, flat = cand.view(-1).topk(min(2 * num_beams, cand.numel()))  # best first
        last = t == max_new_tokens - 1  # every candidate ends here
        keep_b, keep_t = [], []
        for rank, (s, f) in enumerate(zip(top.tolist(), flat.tolist())):
            if s == float('-inf') or (last and rank == num_beams):
                break
            b, tk = divmod(f, V)
            if tk == stop_token or last:
                if rank < num_beams:  # an ending below the top num_beams candidates is dropped, as in HF
                    tokens = seqs[b, T0:].tolist() + [tk]
                    finish(torch.cat((lps[b], lp[b, tk:tk + 1])), tokens, tk == stop_token)
                continue
            keep_b.append(b)
            keep_t.append(tk)
            if len(keep_b) == num_beams:
                break
        if not keep_b:  # the last step, or every extension banned or stopped
            break
        bi, ti = torch.tensor(keep_b, device=dev64), torch.tensor(keep_t, device=dev64)
        new_lp = lp[bi, ti]  # (nb,)
        lps = torch.cat((lps[bi], new_lp[:, None]), dim=1)
        sums = sums[bi] + new_lp
        bi, ti = bi.to(device), ti.to(device)
        seqs = torch.cat((seqs[bi], ti[:, None]), dim=1)
        if seqs.size(1) <= bs:
            cache.reorder(bi)  # each beam takes its parent's keys and values along
        if len(finished) == num_beams:
            if early_stopping is True:
                break
            # can a live beam still beat the worst finished one? Its total log-prob can only fall, so
            # 'never' bounds its score at the length that maximises it (exact); False assumes the
            # current length, t + 1 tokens (Hugging Face's heuristic)
            n = max_new_tokens if early_stopping == 'never' and length_penalty > 0 else t + 1
            if finished[-1].score >= float(sums.max()) / n ** length_penalty:
                break
    return finished


def greedy_and_beams(model, prompt, max_new_tokens, num_beams=4, length_penalty=1.0, no_repeat_ngram_size=0,
                     stop_token=None, early_stopping=False):
    """Greedy decoding and beam search from one prompt (token ids), what beam.py and sample.py
    --num_beams print side by side (beam.print_beams). Returns (the greedy Sample, the Beams best
    first, (greedy seconds, beam search seconds))."""
    x = torch.tensor([prompt], dtype=torch.long, device=model.lm_head.weight.device)  # (1, T)
    t0 = time.time()
    greedy = generate(model, x, max_new_tokens, temperature=0, stop_token=stop_token)[0]
    t1 = time.time()
    beams = beam_search(model, prompt, max_new_tokens, num_beams, length_penalty, no_repeat_ngram_size,
                        stop_token, early_stopping)
    return greedy, beams, (t1 - t0, time.time() - t1)


def _ngram_bans(seq, n):
    """Token ids that would complete an n-gram already in seq (a list of ids): what no_repeat_ngram bans."""
    if len(seq) < n - 1:
        return []
    prefix = seq[len(seq) - n + 1:]
    return [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == prefix]
