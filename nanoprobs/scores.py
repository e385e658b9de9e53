"""
Eval's result data: scored pairs, held-out metrics, runs and before/after comparisons, and their JSON form.

eval.py fills these; report.py renders them; pairs.py reads a saved run back. Log-probs are natural
logs under the model distribution unless their name says sample_ (the sampling distribution).
"""
import heapq
import math
from dataclasses import dataclass, field

import torch

from configurator import UserError
from nanoprobs.formatting import format_ppl, format_prob, perplexity  # noqa: F401  (scores.format_ppl, as before)

RESULTS_FORMAT = 'nanogpt-eval/1'  # the "format" of results/eval_<name>.json


class EvalDataError(UserError, ValueError):
    """eval_data (or a results file) that cannot be used; the message says which entry and what to do.
    A UserError (run_main prints one line) and, as before, a ValueError."""


def json_number(x):
    """x for a results file: JSON has no inf, so a perplexity past float range is null (its mean log-prob,
    beside it, holds the number in log space)."""
    return x if math.isfinite(x) else None


class Lazy(list):
    """A list whose items are made one at a time as it is read: fn(x) for each x of items. A list, so
    json's encoder writes it (report.iter_json), one item at a time."""
    def __init__(self, items, fn):
        super().__init__()
        self.items, self.fn = items, fn

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return map(self.fn, self.items)


@dataclass
class PairResult:
    """One scored pair. Log-probs are natural logs under the model distribution unless named sample_."""
    index: int               # 1-based position in eval_data
    prompt: str              # as written in the file
    response: str
    prompt_ids: list         # the context the response is scored after
    response_ids: list       # the scored tokens
    tokens: list             # their text
    logprobs: list           # per token
    ranks: list              # per token: 1 = the model's most likely token (greedy would pick it)
    expected: list           # per token: the text of the model's most likely token there
    sample_logprobs: list = None  # per token, under the sampling distribution (None when it is the model's)
    note: str = ''           # what the join or the tokenizer did that a reader should know
    extra: dict = field(default_factory=dict)  # the entry's other keys
    joined: tuple = None     # (prompt, response) after the join rules: the text that was tokenized

    @property
    def n(self):
        return len(self.response_ids)

    @property
    def logprob(self):
        return math.fsum(self.logprobs)

    @property
    def mean_logprob(self):
        return self.logprob / self.n

    @property
    def perplexity(self):
        return perplexity(self.mean_logprob)

    @property
    def greedy(self):
        """Greedy decoding from the prompt would produce exactly this response."""
        return all(r == 1 for r in self.ranks)

    @property
    def surprise(self):
        """Position of the least likely response token."""
        return min(range(self.n), key=lambda i: self.logprobs[i])

    @property
    def sample_logprob(self):
        return None if self.sample_logprobs is None else math.fsum(self.sample_logprobs)

    def label(self, width=30):
        """'…upon a time| there lived a…': the end of the prompt, '|', the start of the
        response (joined)."""
        a = width * 2 // 5
        p, r = self.joined or (self.prompt, self.response)
        p, r = p.replace('\n', '\\n'), r.replace('\n', '\\n')
        p = p if len(p) <= a else '…' + p[-(a - 1):]
        b = width - len(p) - 1
        r = r if len(r) <= b else r[:b - 1] + '…'
        return f"{p}|{r}"


@dataclass
class ValResult:
    """Next-token prediction on held-out text: each of `tokens` tokens predicted once."""
    path: str
    tokens: int          # predicted tokens
    bytes: int           # UTF-8 bytes of those tokens
    nll: float           # summed negative log-likelihood, nats
    top1: int            # predictions where the true token was the most likely
    top5: int            # ... among the five most likely
    window: int          # block_size
    stride: int          # tokens predicted per window

    @property
    def perplexity(self):
        return perplexity(-self.nll / self.tokens)

    @property
    def bits_per_byte(self):
        return self.nll / math.log(2) / self.bytes

    @property
    def acc1(self):
        return self.top1 / self.tokens

    @property
    def acc5(self):
        return self.top5 / self.tokens

    def metrics(self):
        """[(name, value as text)]: the rows of every held-out table, console and Markdown."""
        return [('perplexity', format_ppl(self.perplexity)), ('bits per byte', f"{self.bits_per_byte:.4f}"),
                ('top-1 accuracy', f"{100 * self.acc1:.2f}%"), ('top-5 accuracy', f"{100 * self.acc5:.2f}%")]


@dataclass
class EvalRun:
    """A model's scores on every pair (and optionally held-out text), as saved in results/eval_<name>.json."""
    model: str               # what was loaded (init_from, resolved)
    settings: dict           # eval_data, join, temperature, top_k, top_p, device, dtype, batch_size
    pairs: list              # list[PairResult]
    val: ValResult = None
    passes: int = 0          # forward passes used to score the pairs
    source: str = 'this run'  # or the results file it was read from

    @property
    def n_tokens(self):
        return sum(p.n for p in self.pairs)

    @property
    def logprob(self):
        return math.fsum(p.logprob for p in self.pairs)

    @property
    def mean_logprob(self):
        return self.logprob / self.n_tokens

    @property
    def log_sum_prob(self):
        """log of the sum of the pairs' probabilities (logsumexp: no underflow)."""
        return float(torch.tensor([p.logprob for p in self.pairs], dtype=torch.float64).logsumexp(0))

    @property
    def sampling(self):
        return self.pairs[0].sample_logprobs is not None

    @staticmethod
    def pair_dict(p):
        """One scored pair as the results file holds it."""
        def clean(xs):  # JSON has no -inf: null means probability 0 (outside top-k/top-p)
            return None if xs is None else [x if math.isfinite(x) else None for x in xs]
        return dict(index=p.index, prompt=p.prompt, response=p.response, extra=p.extra, note=p.note,
                    joined=list(p.joined) if p.joined else None,
                    prompt_ids=p.prompt_ids, response_ids=p.response_ids, tokens=p.tokens,
                    logprobs=clean(p.logprobs), ranks=p.ranks, expected=p.expected,
                    sample_logprobs=clean(p.sample_logprobs),
                    # derived, for readers of the file; recomputed when it is read back
                    logprob=p.logprob, probability=format_prob(p.logprob), mean_logprob=p.mean_logprob,
                    perplexity=json_number(p.perplexity), greedy=p.greedy)

    def to_dict(self, first=None, lazy=False):
        """The results file's dict; first=N: only the first N pairs, the totals still over every pair.
        lazy: "pairs" is a Lazy list, each pair's dict made as it is written (report.iter_json)."""
        pairs = self.pairs[:first]
        pairs = Lazy(pairs, self.pair_dict) if lazy else [self.pair_dict(p) for p in pairs]
        val = None if self.val is None else dict(vars(self.val), perplexity=json_number(self.val.perplexity),
                                                  bits_per_byte=self.val.bits_per_byte,
                                                  top1_accuracy=self.val.acc1, top5_accuracy=self.val.acc5)
        totals = dict(pairs=len(self.pairs), tokens=self.n_tokens, logprob=self.logprob,
                      mean_logprob=self.mean_logprob, sum_of_probabilities=format_prob(self.log_sum_prob))
        return dict(format=RESULTS_FORMAT, model=self.model, settings=self.settings, passes=self.passes,
                    totals=totals, pairs=pairs, val=val)

    @classmethod
    def from_dict(cls, d, source='a results file'):
        def unclean(xs):
            return None if xs is None else [float('-inf') if x is None else x for x in xs]
        pairs = [PairResult(index=p['index'], prompt=p['prompt'], response=p['response'],
                            prompt_ids=p['prompt_ids'], response_ids=p['response_ids'], tokens=p['tokens'],
                            logprobs=unclean(p['logprobs']), ranks=p['ranks'], expected=p['expected'],
                            sample_logprobs=unclean(p.get('sample_logprobs')), note=p.get('note', ''),
                            extra=p.get('extra', {}), joined=tuple(p['joined']) if p.get('joined') else None)
                 for p in d['pairs']]
        val = None
        if d.get('val'):
            val = ValResult(**{k: d['val'][k] for k in ValResult.__dataclass_fields__})
        return cls(d['model'], d.get('settings', {}), pairs, val, d.get('passes', 0), source)


@dataclass
class Comparison:
    """Two runs over the same pairs: `before` (an earlier results file or a second model) and `after`."""
    before: EvalRun
    after: EvalRun
    deltas: list             # per pair: after.logprob - before.logprob (nats)
    token_deltas: list       # per pair: list of per-token deltas, or None when the tokens differ

    @property
    def rose(self):
        return sum(d > 0 for d in self.deltas)

    @property
    def fell(self):
        return sum(d < 0 for d in self.deltas)

    def top_tokens(self, n=8, gains=True):
        """The n tokens whose log-prob rose (gains) or fell the most: (pair, position, delta)."""
        items = ((p, i, d) for p, ds in zip(self.after.pairs, self.token_deltas) if ds
                 for i, d in enumerate(ds) if (d > 0 if gains else d < 0))
        return heapq.nlargest(n, items, key=lambda x: abs(x[2]))  # = sorted(...)[:n], ties in order

    def to_dict(self, first=None, lazy=False):
        """The "comparison" entry of the after run's results file (first=N: of its first N pairs)."""
        return dict(before=self.before.to_dict(first, lazy), before_source=self.before.source,
                    deltas=self.deltas[:first], rose=self.rose, fell=self.fell)


def spot(text, i, width=24):
    """text around character i: up to 8 characters before it and the rest of `width` from it, with '…'
    where text goes on (a difference shown where it is, not two identical starts)."""
    a = max(0, i - 8)
    return ('…' if a else '') + text[a:i + width - 8] + ('…' if i + width - 8 < len(text) else '')


def compare(before, after):
    """Pair-by-pair comparison of two EvalRuns over the same eval_data (checked)."""
    if len(before.pairs) != len(after.pairs):
        raise EvalDataError(f"{before.source} scored {len(before.pairs)} pairs and this run "
                            f"{len(after.pairs)}: compare runs over the same eval_data")
    token_deltas = []
    for a, b in zip(after.pairs, before.pairs):
        for key in ('prompt', 'response'):
            x, y = getattr(b, key), getattr(a, key)
            if x != y:
                i = next((i for i, (c, d) in enumerate(zip(x, y)) if c != d), min(len(x), len(y)))
                raise EvalDataError(f"pair {a.index}'s {key} differs between {before.source} and this run from "
                                    f"character {i} on: {spot(x, i)!r} there, {spot(y, i)!r} here; compare runs "
                                    "over the same eval_data")
        if a.joined and b.joined and tuple(a.joined) != tuple(b.joined):  # a missing space changes everything
            raise EvalDataError(f"pair {a.index}: {before.source} scored {tuple(b.joined)!r} (join="
                                f"{before.settings.get('join')}), this run {tuple(a.joined)!r} (join="
                                f"{after.settings.get('join')}): compare runs with the same --join")
        same = a.prompt_ids == b.prompt_ids and a.response_ids == b.response_ids
        token_deltas.append([x - y for x, y in zip(a.logprobs, b.logprobs)] if same else None)
    deltas = [a.logprob - b.logprob for a, b in zip(after.pairs, before.pairs)]
    return Comparison(before, after, deltas, token_deltas)
