"""
Beam search, and its report beside greedy decoding: each beam's score shown as the arithmetic it is.

score = (sum of the beam's token log-probs) / (number of tokens) ** length_penalty, natural logs, model
distribution. model.py's GPT.beam_search() forwards to beam_search(); tools/beam.py and
sample.py --num_beams=N print greedy_and_beams() with print_beams().
"""

import math
import time

import torch

from nanoprobs import checks
from nanoprobs.decoding import Beam, KVCache, Step, generate, next_logits
from nanoprobs.formatting import format_prob
from nanoprobs.sampling import check_ids, device64, entropy, f64


LOG_SCALE_MAX = 690.0  # ln(1e300): tokens ** length_penalty stays a float, a log-prob sum over it too


@torch.inference_mode()
def beam_search(model, idx, max_new_tokens, num_beams=4, length_penalty=1.0, no_repeat_ngram_size=0,
                stop_token=None, early_stopping=False, details=0):
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
    window is recomputed every step, as generate() does.
    details: k > 0 records in each Beam one decoding.Step per token, from the very distribution the
    search ranked it in: the model's top k there, the token's log-prob and rank, the entropy
    (no_repeat_ngram_size's bans are not applied to the candidates; there is no sampling distribution)."""
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
    if max_new_tokens > 1 and abs(length_penalty) * math.log(max_new_tokens) > LOG_SCALE_MAX:
        top = LOG_SCALE_MAX / math.log(max_new_tokens)  # n ** length_penalty within 1e-300 .. 1e300
        raise ValueError(f"length_penalty={length_penalty!r} is too large for a beam of up to {max_new_tokens} "
                         f"tokens: the score divides by tokens ** length_penalty, which is past float range; "
                         f"use a value from {-top:.0f} to {top:.0f} (0 ranks by total log-prob, 1 by mean "
                         "log-prob per token)")
    if early_stopping not in (True, False, 'never'):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")

    device = model.lm_head.weight.device
    T0, bs = len(prompt), model.config.block_size
    cfg = model.config
    per_beam = (2 * cfg.n_layer * bs * cfg.n_embd * model.lm_head.weight.element_size()  # its KV cache
                + 4 * cfg.vocab_size * 8)  # its next-token logits and log-probs, candidates, in float64
    checks.check_fits(num_beams * per_beam, device, f"beam search with num_beams={num_beams:,} (a KV cache and "
                      f"{cfg.vocab_size:,} candidate scores per beam)", "use fewer beams (--num_beams)")
    seqs = torch.tensor([prompt], device=device)  # (nb, T0 + t): live beams, one at first
    dev64 = device64(device)
    lps = torch.zeros(1, 0, dtype=torch.float64, device=dev64)  # (nb, t) per-token log-probs
    sums = torch.zeros(1, dtype=torch.float64, device=dev64)  # (nb,) total log-prob of each beam
    cache = KVCache(model.config, 1, device, model.lm_head.weight.dtype)
    finished = []  # Beams, best first, at most num_beams
    steps = [[]]  # details: per live beam, its tokens' Steps

    def step_of(lp_row, tk, top):  # the Step of token tk drawn from the model distribution lp_row (V,)
        c = float(lp_row[tk])
        return Step(top[1], top[0], None, int(tk), c, None, int((lp_row > c).sum()) + 1, float(entropy(lp_row)),
                    None)

    def finish(row_lps, tokens, stopped, row_steps):
        n = len(tokens)
        b = Beam(prompt=list(prompt), tokens=tokens, logprobs=row_lps.cpu(),
                 score=float(row_lps.sum()) / n ** length_penalty, length_penalty=length_penalty,
                 stopped=stopped, steps=row_steps if details else None)
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
        tops = [[x.tolist() for x in row.topk(min(details, V))] for row in lp] if details else None  # (lps, ids)
        last = t == max_new_tokens - 1  # every candidate ends here
        keep_b, keep_t = [], []
        for rank, (s, f) in enumerate(zip(top.tolist(), flat.tolist())):
            if s == float('-inf') or (last and rank == num_beams):
                break
            b, tk = divmod(f, V)
            if tk == stop_token or last:
                if rank < num_beams:  # an ending below the top num_beams candidates is dropped, as in HF
                    tokens = seqs[b, T0:].tolist() + [tk]
                    row_steps = steps[b] + [step_of(lp[b], tk, tops[b])] if details else None
                    finish(torch.cat((lps[b], lp[b, tk:tk + 1])), tokens, tk == stop_token, row_steps)
                continue
            keep_b.append(b)
            keep_t.append(tk)
            if len(keep_b) == num_beams:
                break
        if not keep_b:  # the last step, or every extension banned or stopped
            break
        if details:
            steps = [steps[b] + [step_of(lp[b], tk, tops[b])] for b, tk in zip(keep_b, keep_t)]
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
                     stop_token=None, early_stopping=False, details=0):
    """Greedy decoding and beam search from one prompt (token ids), what tools/beam.py and sample.py
    --num_beams print side by side (beam.print_beams). Returns (the greedy Sample, the Beams best
    first, (greedy seconds, beam search seconds)). details: k > 0 records every token's Step in both
    (what sample.py's HTML report shows)."""
    x = torch.tensor([prompt], dtype=torch.long, device=model.lm_head.weight.device)  # (1, T)
    with torch.no_grad():  # an untimed first pass: one-time costs (allocation, kernel set-up) would
        model(x[:, -model.config.block_size:])  # otherwise all land on whichever is timed first
    t0 = time.time()
    greedy = generate(model, x, max_new_tokens, temperature=0, stop_token=stop_token, details=details)[0]
    t1 = time.time()
    beams = beam_search(model, prompt, max_new_tokens, num_beams, length_penalty, no_repeat_ngram_size,
                        stop_token, early_stopping, details)
    return greedy, beams, (t1 - t0, time.time() - t1)


def _ngram_bans(seq, n):
    """Token ids that would complete an n-gram already in seq (a list of ids): what no_repeat_ngram bans."""
    if len(seq) < n - 1:
        return []
    prefix = seq[len(seq) - n + 1:]
    return [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == prefix]


def score_text(logprob, n, length_penalty):
    """The score as arithmetic: '-12.34 / 7^1.0 = -1.763'."""
    return f"{logprob:.2f} / {n}^{float(length_penalty)} = {logprob / n ** length_penalty:.3f}"


def print_beams(beams, greedy, tok, length_penalty=None):
    """Print beams (GPT.beam_search's list of Beam, best first) ranked with their scores as arithmetic,
    then the greedy continuation (a Sample from generate(temperature=0), or None) scored the same way."""
    if not beams:
        print("beam search: no beam finished (no_repeat_ngram_size banned every continuation)")
        return
    alpha = beams[0].length_penalty if length_penalty is None else length_penalty
    print(f"beam search: {len(beams)} finished beams, ranked by score = sum of log-probs / "
          f"tokens^{float(alpha)} (natural logs, model distribution)")
    width = max(len(score_text(b.logprob, len(b.tokens), alpha)) for b in beams)
    for r, b in enumerate(beams, 1):
        end = 'stop token' if b.stopped else 'max_new_tokens'
        print(f"{r:2d}. score {score_text(b.logprob, len(b.tokens), alpha):<{width}}  "
              f"p = {format_prob(b.logprob)}  ({len(b.tokens)} tokens, ended at {end})")
        print(f"    {tok.display(b.tokens)!r}")
    if greedy is None:
        return
    n = len(greedy.tokens)
    print(f"greedy (temperature 0): p = {format_prob(greedy.logprob)} under the model distribution, "
          f"score {score_text(greedy.logprob, n, alpha) if n else 'n/a (no tokens)'}")
    print(f"    {tok.display(greedy.tokens)!r}")
    if n:
        best, g = beams[0].score, greedy.logprob / n ** alpha
        among = any(b.tokens == greedy.tokens for b in beams)
        verdict = 'equals' if beams[0].tokens == greedy.tokens else 'beats' if best > g else 'scores below'
        print(f"the best beam {verdict} greedy ({best:.3f} vs {g:.3f}); greedy is "
              f"{'' if among else 'not '}among the beams")
