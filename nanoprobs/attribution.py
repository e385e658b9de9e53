"""
Which earlier tokens made a token likely: attribution of its log-probability to the token embeddings,
with Captum (the PyTorch attribution library; imported inside attribute(): pip install captum).

    a = attribute(model, ids, position, method='ig')   # one score per token of ids[a.start:position]
    a.scores, a.gap                                      # nats; IG: sum(scores) = logprob - baseline_logprob + gap

The function explained is f(context) = log p(ids[position] | context), natural log, model distribution
(temperature 1, no top-k/top-p), float64. The context is ids[:position], or its last block_size tokens
(what generation would have seen). Two methods, both on the output of the token embedding
(transformer.wte; the position embeddings are left as they are):
- 'ig': integrated gradients (Captum's LayerIntegratedGradients), from a baseline in which every context
  token is replaced by BASELINE's token (<|endoftext|>, or token 0 for a vocabulary without one), in
  `steps` Gauss-Legendre steps. Completeness: the scores sum to f(input) - f(baseline), up to `gap`, the
  integral's numerical error, which shrinks as steps grow (tests/test_attribution.py bounds it).
- 'gxi': gradient x input (Captum's LayerGradientXActivation), one backward pass: the first-order
  estimate of each embedding's effect. Its scores need not sum to anything (gap is None).
A token's score is the sum over the embedding's channels. Scores say how f depends on each embedding
along the path, not why the model "decided": they are not explanations by themselves.
"""

import time
from dataclasses import dataclass

import torch

METHODS = {'ig': 'integrated gradients', 'gxi': 'gradient x input'}
STEPS = 32  # integrated gradients' default number of steps
BASELINE = "<|endoftext|> at every context position (position embeddings kept)"


@dataclass
class Attribution:
    """One token's attribution to the tokens before it (see the module docstring)."""
    scores: list             # one per token of ids[start:position], in nats
    start: int               # the first context token (> 0 when the context was cut to block_size)
    position: int            # the explained token's index in ids
    method: str              # 'ig' | 'gxi'
    baseline: str            # what the baseline is, in words ('' for gxi)
    steps: int               # integration steps (1 for gxi: one gradient)
    logprob: float           # f(input): log p(ids[position] | context), float64
    baseline_logprob: float  # f(baseline) (ig), else None
    gap: float               # sum(scores) - (logprob - baseline_logprob) (ig), else None
    passes: int              # forward + backward passes over the context it took
    seconds: float

    def to_json(self):
        """The JSON-ready answer of POST /api/attribute: the numbers rounded to 4 decimals (nats, as the
        page shows them), the completeness gap as text with 2 significant digits."""
        r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
        return dict(scores=[r(s) for s in self.scores], start=self.start, position=self.position,
                    method=self.method, method_name=METHODS[self.method], baseline=self.baseline,
                    steps=self.steps, logprob=r(self.logprob), baseline_logprob=r(self.baseline_logprob),
                    gap=None if self.gap is None else f"{self.gap:.2g}", total=r(sum(self.scores)),
                    passes=self.passes, seconds=round(self.seconds, 3))


def baseline_token(vocab_size, eot=None):
    """The token the baseline puts at every context position, and how it is described."""
    if eot is not None and 0 <= eot < vocab_size:
        return eot, BASELINE
    return 0, "token 0 at every context position (the vocabulary has no <|endoftext|>; position embeddings kept)"


def attribute(model, ids, position, method='ig', steps=STEPS, eot=None, batch=16):
    """Attribution of log p(ids[position] | the tokens before it) to each of those tokens (Attribution).
    eot: the vocabulary's <|endoftext|> id (the baseline's token; None: token 0). batch: interpolation
    steps per pass (memory)."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 1 <= position < len(ids):
        raise ValueError(f"position must be in [1, {len(ids) - 1}] (a token with at least one before it), "
                         f"got {position}")
    if method == 'ig' and not 1 <= steps <= 1024:
        raise ValueError(f"steps must be in [1, 1024], got {steps}")
    t0 = time.perf_counter()
    start = max(0, position - model.config.block_size)
    device = model.lm_head.weight.device
    x = torch.tensor([ids[start:position]], device=device)  # (1, T) the context
    target = int(ids[position])

    def f(inp):  # (n, T) ids -> (n,) float64 log-prob of the target after them
        return model(inp)[0][:, -1].double().log_softmax(-1)[:, target]

    wte = model.transformer.wte
    with torch.enable_grad():
        if method == 'ig':
            tok, baseline = baseline_token(model.config.vocab_size, eot)
            base = torch.full_like(x, tok)
            lig = LayerIntegratedGradients(f, wte)
            attr = lig.attribute(x, baselines=base, n_steps=steps, internal_batch_size=batch)  # (1, T, C)
            with torch.no_grad():
                lp, blp = float(f(x)[0]), float(f(base)[0])
            passes = steps
        else:
            attr = LayerGradientXActivation(f, wte).attribute(x)  # (1, T, C)
            with torch.no_grad():
                lp = float(f(x)[0])
            blp = gap = None
            baseline, passes, steps = '', 1, 1
    scores = attr[0].double().sum(-1).tolist()  # (T,) one per context token
    if method == 'ig':  # Captum's convergence delta, from these same two forward passes
        gap = sum(scores) - (lp - blp)
    return Attribution(scores, start, position, method, baseline, steps, lp, blp, gap, passes,
                       time.perf_counter() - t0)
