"""
The live app's model and what its JSON API (/api/*) does with it, framework-free: the numbers are decoding's.

Each method takes a validated request (schemas.py), resolves its texts to token ids, refuses what cannot be
computed (BadRequest) and returns the request's work: a generator function that jobs.Job runs in a thread
of its own while it holds Engine.lock (one request at a time on the model). Its messages are the page's
data (html_report.py describes their shape); a generation yields one message per token, so its job stops
at the next token once its client goes away.
"""
import threading
from dataclasses import dataclass

import torch

from nanoprobs import html_report
from nanoprobs.attribution import attribute
from nanoprobs.inspector import token_panels
from nanoprobs.decoding import Sample, decode, score, under_temperatures
from nanoprobs.formatting import format_prob, sampling_text
from nanoprobs.sampling import check_sampling, make_generator
from nanoprobs.server.schemas import MAX_SEED, MAX_TOP, request_models


@dataclass(frozen=True)
class Settings:
    """What the page starts with, what a request that names nothing gets, the limits of a request and the
    timeouts of a connection (serve.py's flags of the same names; serve.settings() reads them)."""
    start: str
    temperature: float
    top_k: int | None
    top_p: float
    max_new_tokens: int
    seed: int
    top: int
    max_prompt_chars: int
    max_tokens_limit: int
    timeout: float = 10.0  # seconds a client may take to send a request, or to take the next chunk

    def check(self):
        """Refuse settings no request could use, as one line naming the flag."""
        check_sampling(self.temperature, self.top_k, self.top_p)
        if not 1 <= self.top <= MAX_TOP:
            raise ValueError(f"--top={self.top} must be in [1, {MAX_TOP}]")
        if self.max_tokens_limit < 1 or self.max_prompt_chars < 1:
            raise ValueError("--max_tokens_limit and --max_prompt_chars must be >= 1")
        if not 0 <= self.max_new_tokens <= self.max_tokens_limit:
            raise ValueError(f"--max_new_tokens={self.max_new_tokens} must be in [0, --max_tokens_limit="
                             f"{self.max_tokens_limit}]")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"--seed={self.seed} must be in [0, 2**63)")
        if not 0 < self.timeout <= 3600:
            raise ValueError(f"--timeout={self.timeout} must be in (0, 3600] seconds")
        return self

    @property
    def defaults(self):
        return dict(start=self.start, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                    max_new_tokens=self.max_new_tokens, seed=self.seed)

    @property
    def limits(self):
        return dict(max_prompt_chars=self.max_prompt_chars, max_new_tokens=self.max_tokens_limit)


class BadRequest(ValueError):
    """Bad input from a client: answered with a 400 and the message."""


class Unavailable(Exception):
    """What this server cannot do (an optional package is missing): answered with a 501 and the message."""


def stream_steps(model, ctx, prompt, n, temperature=1.0, top_k=None, top_p=None, k=10, stop_token=None,
                 generator=None):
    """Yield one decoding.Step per new token as it is drawn: decoding.generate()'s own loop (decode) for
    one row, so each token can be sent at once and the numbers are generate()'s. The next token is computed
    only when the caller asks for it."""
    device = model.lm_head.weight.device
    idx = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
    with ctx:
        for _, (*_, steps) in decode(model, idx, n, temperature, top_k, top_p, stop_token, k, generator):
            yield steps[0]


def as_sample(prompt, steps, stopped=False):
    """A decoding.Sample from streamed Steps (float64 sums, as generate() returns them)."""
    lps = torch.tensor([s.chosen_logprob for s in steps], dtype=torch.float64)
    slps = torch.tensor([s.chosen_sample_logprob for s in steps], dtype=torch.float64)
    ranks = torch.tensor([s.chosen_rank for s in steps], dtype=torch.long)
    return Sample(prompt=list(prompt), tokens=[s.chosen for s in steps], logprobs=lps, sample_logprobs=slps,
                  ranks=ranks, steps=list(steps), stopped=stopped)


num = html_report.num


class Engine:
    """One loaded model (load.load_model's result) and what the API does with it. lock: held by the job
    that runs on the model; stopping: set on Ctrl-C (no job starts a new forward pass after it)."""

    def __init__(self, L, settings: Settings):
        self.L, self.settings = L, settings.check()
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.jobs, self._jobs_lock = set(), threading.Lock()  # the jobs started and not yet ended
        c = L.model.config
        self.models = request_models(c.vocab_size, settings)
        self.defaults, self.limits = settings.defaults, settings.limits
        page = html_report.live_page(L.source, dict(device=L.device, dtype=L.dtype), self.defaults, self.limits,
                                     eot=L.tok.eot)
        self.page, self.policy = html_report.render(page, live=True)

    @property
    def model_id(self):
        """The model's name in the OpenAI API: what was loaded (init_from, resolved)."""
        return str(self.L.source)

    def stop(self):
        """End every job at its next token (Ctrl-C, or the server stopping)."""
        self.stopping.set()
        with self._jobs_lock:
            jobs = list(self.jobs)
        for j in jobs:
            j.cancel()

    def ids(self, text, ids):
        """Token ids from a list of ids (already checked by the request model) or a text (encoded)."""
        return list(ids) if ids is not None else self.L.tok.encode(text) if text else []

    def sampling(self, r):
        """(temperature, top_k, top_p) of a request, checked by sampling.check_sampling as generate() does."""
        try:
            check_sampling(r.temperature, r.top_k, r.top_p)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return r.temperature, r.top_k or None, r.top_p

    # -------------------------------------------------------------------------
    # the work of each /api request (run by a jobs.Job)

    def generate(self, r):
        """The messages of a generation: {"start": ...}, one {"token": ...} per token, {"done": ...}."""
        prompt = self.ids(r.prompt, r.prompt_ids)
        if not prompt:
            raise BadRequest("the prompt is empty: the model needs at least one token to continue")
        prefix = self.ids(r.prefix, r.prefix_ids)
        t, k, p = self.sampling(r)
        m, tok, L = self.L.model, self.L.tok, self.L
        eot = tok.eot if r.stop_at_eot else None

        def entry(s):
            return dict(token=html_report.token_entry(tok, s.chosen, s.chosen_logprob, s.chosen_sample_logprob,
                                                      s.chosen_rank, s))

        def work():
            yield dict(start=dict(prompt=tok.decode(prompt), prompt_ids=prompt, sampling=sampling_text(t, k, p),
                                  prompt_pieces=html_report.pieces(tok, prompt)))
            steps = []
            if prefix:  # the response starts with these tokens (a branch): scored, then continued
                with L.ctx:
                    steps = score(m, [prompt], [prefix], t, k, p, details=r.top)[0].steps
                for s in steps:
                    yield entry(s)
            stopped = eot is not None and bool(prefix) and prefix[-1] == eot
            gen = make_generator(L.device, r.seed)
            n = 0 if stopped else r.max_new_tokens
            for s in stream_steps(m, L.ctx, prompt + prefix, n, t, k, p, r.top, eot, gen):
                steps.append(s)
                stopped = s.chosen == eot
                yield entry(s)
            smp = as_sample(prompt, steps, stopped)
            yield dict(done=dict(text=tok.decode(smp.tokens), tokens=smp.tokens, logprob=num(smp.logprob),
                                 sample_logprob=num(smp.sample_logprob),
                                 totals=html_report.sample_totals(smp, sampling_text(t, k, p)),
                                 **html_report.text_fields(tok, prompt, smp.tokens, smp.logprobs.tolist(),
                                                           smp.ranks.tolist())))
        return work

    def score(self, r):
        """One message: the scored response as a doc of the page, and its log-prob."""
        prompt, response = self.ids(r.prompt, r.prompt_ids), self.ids(r.response, r.response_ids)
        if not prompt or not response:
            raise BadRequest("give a non-empty prompt and a non-empty response to score")
        t, k, p = self.sampling(r)

        def work():
            with self.L.ctx:
                s = score(self.L.model, [prompt], [response], t, k, p, details=r.top)[0]
            yield dict(doc=html_report.sample_doc(s, self.L.tok, 'scored response', sampling_text(t, k, p),
                                                  forced=True), logprob=num(s.logprob))
        return work

    def temperatures(self, r):
        """One message: the next-token distribution after the context under several temperatures
        (decoding.under_temperatures)."""
        ids = self.ids(r.prompt, r.ids)
        if not ids:
            raise BadRequest("the context is empty: give the ids (or the prompt) whose next token is compared")
        try:
            for tt in r.temperatures:
                check_sampling(tt, r.top_k, r.top_p)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        k, p, tok = r.top_k or None, r.top_p, self.L.tok

        def work():
            with self.L.ctx:
                order, lps, entropies = under_temperatures(self.L.model, ids, r.temperatures, k, p, r.top)
            cols = []
            for tt, lp, h in zip(r.temperatures, lps, entropies):
                lp = lp.tolist()
                cols.append(dict(temperature=tt, name='greedy' if tt == 0 else f"T={tt:g}",
                                 logprobs=[num(x) for x in lp], probs=[format_prob(x) for x in lp],
                                 entropy=html_report.nats(h)))
            title = (f"next token after \u201c…{tok.display(ids[-12:])}\u201d under each temperature"
                     f"{', ' + sampling_text(1, k, p).partition(', ')[2] if k or p < 1 else ''}")
            yield dict(title=title, tokens=[dict(id=i, text=tok.token_text(i)) for i in order.tolist()],
                       columns=cols)
        return work

    def inspect(self, r):
        """One message: the inspector's logit lens and attention of the token ids[position]
        (inspector.token_panels), from one forward pass over the tokens before it."""
        bs = self.L.model.config.block_size
        if r.position > bs:
            raise BadRequest(f"position {r.position} comes after block_size ({bs}) tokens of context: the lens "
                             f"and attention are shown for positions up to {bs}")

        def work():
            with self.L.ctx:
                yield token_panels(self.L.model, self.L.tok, r.ids, r.position)
        return work

    def attribute(self, r):
        """One message: the attribution of log p(ids[position] | ids before it) to each earlier token
        (attribution.attribute, Captum): attribution.Attribution.to_json()."""
        try:
            import captum  # noqa: F401
        except ImportError:
            raise Unavailable("attribution needs Captum, which this server lacks: pip install captum, then "
                              "restart serve.py") from None

        def work():
            with self.L.ctx:
                a = attribute(self.L.model, r.ids, r.position, r.method, r.steps, self.L.tok.eot)
            yield a.to_json()
        return work

    def info(self):
        c = self.L.model.config
        return dict(model=self.L.source, vocab_size=c.vocab_size, block_size=c.block_size, device=self.L.device,
                    dtype=self.L.dtype, defaults=self.defaults, limits=self.limits)


def collect(msgs):
    """The messages of a generation as one answer: {"doc": the page's text, "text", "tokens", ...}."""
    doc, tokens = None, []
    for m in msgs:
        if 'start' in m:
            doc = dict(m['start'], title='generated', tokens=tokens)
        elif 'token' in m:
            tokens.append(m['token'])
        elif 'done' in m:
            doc['totals'] = m['done']['totals']
            return dict(m['done'], doc=doc)
    raise BadRequest("the generation ended early (the server is stopping)")
