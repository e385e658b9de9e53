"""
A text's GLTR summary (Gehrmann, Strobelt and Rush 2019, "GLTR: Statistical Detection and Visualization of
Generated Text"): how often its tokens are among the model's top 10 / 100 / 1000, and a histogram of each
token's probability, under the model distribution. Generated text sits mostly in the top 10; human text
reaches further down. A hint, not a detector: a summary of how predictable the text was to this model.

    score_text(model, tok, text) -> decoding.Sample   # every token scored after <|endoftext|>
    summary(ranks, logprobs, scale) -> dict            # JSON-ready; the page draws it beside the text
"""

import math

from nanoprobs.formatting import RANK_EDGES, RANK_NAMES, format_ppl, format_prob, perplexity


def rank_bucket(rank):
    """0 (top 10), 1 (top 100), 2 (top 1000) or 3 (beyond)."""
    return sum(rank > e for e in RANK_EDGES)


def prob_bucket(logprob, edges):
    """The bucket a probability (given by its log) falls in: i such that edges[i-1] <= p < edges[i], compared
    as probabilities as page.js's bucket() and plots' ProbabilityScale.bucket() do; probability 0 is bucket 0."""
    if logprob is None or logprob == -math.inf:
        return 0
    p = math.exp(logprob)
    return sum(p >= e for e in edges)


def summary(ranks, logprobs, scale):
    """{tokens, ranks: [[name, count, share text]], histogram: [[name, count]], mean_logprob, perplexity}
    of a text's tokens: ranks (1 = the model's most likely) and log-probs, both under the model
    distribution; the histogram's buckets are scale's {edges, names} (the page's probability scale,
    html_report.probability_scale). Counts are exact; shares are their text."""
    n = len(ranks)
    rc, hc = [0] * len(RANK_NAMES), [0] * len(scale['names'])
    for r, lp in zip(ranks, logprobs):
        rc[rank_bucket(r)] += 1
        hc[prob_bucket(lp, scale['edges'])] += 1
    finite = [lp for lp in logprobs if lp is not None and lp != -math.inf]
    mean = math.fsum(finite) / n if n and len(finite) == n else None
    return dict(tokens=n,
                ranks=[[name, c, f"{100 * c / n:.1f}%" if n else ''] for name, c in zip(RANK_NAMES, rc)],
                histogram=[[name, c] for name, c in zip(scale['names'], hc)],
                mean_logprob=None if mean is None else f"{mean:.4f}",
                perplexity=None if mean is None else format_ppl(perplexity(mean), '.2f'),
                probability=format_prob(math.fsum(finite)) if len(finite) == n else '0')


def context(tok):
    """The tokens a whole text is scored after: <|endoftext|> (GPT-2's document start), or nothing for a
    vocabulary without one (then the text's first token is its context and is not scored)."""
    return [tok.eot] if tok.eot is not None else []


def score_text(model, tok, text, k=10):
    """Every token of text scored by the model after <|endoftext|> (decoding.score with details=k): one
    Sample whose prompt is context(tok). A text longer than block_size is scored with score()'s sliding
    window."""
    from nanoprobs.decoding import score
    ids = tok.encode(text)
    ctx = context(tok)
    if not ctx:
        ctx, ids = ids[:1], ids[1:]
    if not ids:
        raise ValueError("the text has no token to score (it is empty, or one token without "
                         "<|endoftext|> before it)")
    return score(model, [ctx], [ids], details=k)[0]
