"""
The OpenAI-compatible completions API: POST /v1/completions and GET /v1/models, as OpenAI's API defines them.

Any OpenAI client, and lm-evaluation-harness' local-completions model, can sample and score with it. The
numbers are decoding's: a completion is generate()'s loop token by token (engine.stream_steps, its draws
from make_generator(device, seed + j) for the j-th completion of a prompt), echoed prompt tokens are
score()'s (one pass, the sliding window past block_size), and every log-prob is under the *model*
distribution (T=1, no top-k/top-p: the numbers eval.py and /api/score give), whatever temperature, top_p
or top_k the tokens were drawn with.

logprobs: tokens (each token's text; a token that is part of a UTF-8 character is "bytes:\\xe2\\x80", as
OpenAI writes it), token_logprobs (null for the very first prompt token, which has no context),
top_logprobs (the `logprobs` most likely tokens there, plus the chosen one), text_offset (where each
token's text begins, counted from the start of the prompt, echoed or not).
"""
import codecs
import time
import uuid
from dataclasses import dataclass, field

from fastapi import APIRouter, Request

from nanoprobs.decoding import score
from nanoprobs.sampling import make_generator
from nanoprobs.server.engine import BadRequest, stream_steps
from nanoprobs.server.answers import dumps, failure, json_response, start_job
from nanoprobs.server.jobs import JobStream, gather
from nanoprobs.server.schemas import MAX_SEED


def token_bytes(tok, i):
    """The bytes of one token; none for the ids a padded vocabulary adds beyond the tokenizer's."""
    return tok.token_bytes(i) if 0 <= i < tok.vocab_size else b''


def token_string(tok, i):
    """A token's text as OpenAI's API writes it: bytes that are not whole characters as "bytes:\\xNN"."""
    if not 0 <= i < tok.vocab_size:
        return f"<id {i}>"
    b = tok.token_bytes(i)
    s = b.decode('utf-8', 'replace')
    return s if '\ufffd' not in s else 'bytes:' + ''.join(f"\\x{x:02x}" for x in b)


class Detok:
    """Token ids to text as they come: a character split over tokens appears once its last byte has
    (the decoder keeps the first ones). The whole text is tok.decode()'s (UTF-8 with replacement)."""

    def __init__(self, tok):
        self.tok, self.dec = tok, codecs.getincrementaldecoder('utf-8')('replace')

    def feed(self, i):
        return self.dec.decode(token_bytes(self.tok, i))

    def flush(self):
        return self.dec.decode(b'', final=True)


@dataclass
class Entry:
    """One token of a choice's logprobs."""
    token: str
    logprob: float | None
    top: dict | None
    offset: int


@dataclass
class Piece:
    """Part of one choice: text, the tokens it holds, finish_reason once the choice has ended."""
    text: str
    entries: list = field(default_factory=list)
    finish: str | None = None
    generated: int = 0  # new tokens drawn (for usage.completion_tokens)


def top_dict(tok, step, k, chosen, lp):
    """{token text: log-prob} of the k most likely tokens (model distribution), and the chosen token."""
    d = {}
    for i, x in zip(step.top_ids[:k], step.top_logprobs[:k]):
        d.setdefault(token_string(tok, i), float(x))
    d.setdefault(token_string(tok, chosen), float(lp))
    return d


def echo_pieces(engine, prompts, k):
    """Per prompt, a Piece holding its text and (k is not None) its tokens with log-probs from score():
    the first token has none (no context), each other one its log-prob after the tokens before it."""
    tok, L = engine.L.tok, engine.L
    scored = {}
    rows = [i for i, p in enumerate(prompts) if len(p) > 1]
    if k is not None and rows:
        with L.ctx:
            out = score(L.model, [prompts[i][:1] for i in rows], [prompts[i][1:] for i in rows],
                        details=max(k, 1))
        scored = dict(zip(rows, out))
    pieces = []
    for i, p in enumerate(prompts):
        d, text, entries = Detok(tok), '', []
        s = scored.get(i)
        for j, t in enumerate(p):
            if k is not None:
                if j == 0:
                    entries.append(Entry(token_string(tok, t), None, None, len(text)))
                else:
                    step, lp = s.steps[j - 1], float(s.logprobs[j - 1])
                    entries.append(Entry(token_string(tok, t), lp, top_dict(tok, step, k, t, lp), len(text)))
            text += d.feed(t)
        pieces.append(Piece(text + d.flush(), entries))
    return pieces


def find_stop(text, stops, start):
    """Where the first stop sequence found from text[start] on begins (an index of text), or None."""
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def completion_pieces(engine, prompt, base, r, seed, sampling, k):
    """One completion of prompt (ids): Pieces as tokens are drawn, the last with its finish_reason.
    base: the length of the prompt's text (offsets count from the prompt's start). Text that could be
    the start of a stop sequence is held back until it is not; a stop sequence found ends the completion
    before it (the tokens that begin inside or after it are left out, as is <|endoftext|>'s text)."""
    tok, L = engine.L.tok, engine.L
    if r.max_tokens == 0:
        yield Piece('', finish='length')
        return
    stops = r.stops
    hold = max(map(len, stops)) - 1 if stops else 0
    d, text, sent, pending, new = Detok(tok), '', 0, [], 0
    finish = 'length'
    t, top_k, top_p = sampling
    gen = make_generator(L.device, seed)
    for s in stream_steps(L.model, L.ctx, prompt, r.max_tokens, t, top_k, top_p, max(k or 0, 1), tok.eot, gen):
        new += 1
        lp = float(s.chosen_logprob)
        e = Entry(token_string(tok, s.chosen), lp, None if k is None else top_dict(tok, s, k, s.chosen, lp),
                  base + len(text))
        if tok.eot is not None and s.chosen == tok.eot:
            pending.append(e)
            finish = 'stop'
            break
        before = len(text)
        text += d.feed(s.chosen)
        pending.append(e)
        cut = find_stop(text, stops, max(0, before - hold)) if stops else None
        if cut is not None:
            yield Piece(text[sent:cut], [x for x in pending if x.offset - base < cut] if k is not None else [],
                        'stop', generated=new)
            return
        ready = len(text) - hold
        out = [x for x in pending if x.offset - base < ready]
        if ready > sent or out:
            pending = pending[len(out):]
            yield Piece(text[sent:max(ready, sent)], out if k is not None else [], generated=new)
            sent, new = max(ready, sent), 0
    text += d.flush()
    yield Piece(text[sent:], pending if k is not None else [], finish, generated=new)


def completion_work(engine, r):
    """The work of a completion request: (the prompts as token ids, a generator function yielding
    (choice index, Piece) for every choice in order, n per prompt)."""
    tok = engine.L.tok
    prompts = [tok.encode(p) if isinstance(p, str) else list(p) for p in r.prompt]
    if any(not p for p in prompts):
        start = " (give '<|endoftext|>' to start from nothing)" if tok.eot is not None else ''
        raise BadRequest(f"a prompt is empty: the model needs at least one token to continue{start}")
    sampling = engine.sampling(r)
    seed = engine.settings.seed if r.seed is None else r.seed
    k = r.logprobs

    def work():
        echoes = echo_pieces(engine, prompts, k if r.echo else None)
        for i, p in enumerate(prompts):
            for j in range(r.n):
                index = i * r.n + j
                if r.echo:
                    yield index, echoes[i]
                for piece in completion_pieces(engine, p, len(echoes[i].text), r, (seed + j) % (MAX_SEED + 1),
                                               sampling, k):
                    yield index, piece
    return prompts, work


def logprobs_json(entries):
    return dict(tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries],
                top_logprobs=[e.top for e in entries], text_offset=[e.offset for e in entries])


def router(engine):
    """The /v1 routes over engine (an engine.Engine)."""
    api = APIRouter(prefix='/v1', tags=['OpenAI API'])
    created = int(time.time())

    @api.get('/models', summary="the one model this server serves")
    async def models():
        return dict(object='list', data=[dict(id=engine.model_id, object='model', created=created,
                                              owned_by='nanoprobs')])

    @api.post('/completions', summary="OpenAI's completions: sample, or score a prompt (echo, logprobs)")
    async def completions(body: engine.models.completion, request: Request):
        prompts, work = completion_work(engine, body)
        job = start_job(engine, work)
        head = dict(id=f"cmpl-{uuid.uuid4().hex}", object='text_completion', created=int(time.time()),
                    model=body.model or engine.model_id)
        n_prompt = sum(map(len, prompts))
        usage = dict(prompt_tokens=n_prompt, completion_tokens=0, total_tokens=n_prompt)

        def choice(index, piece):
            return dict(index=index, text=piece.text, finish_reason=piece.finish,
                        logprobs=None if body.logprobs is None else logprobs_json(piece.entries))

        if body.stream:
            def event(obj):
                return f"data: {dumps(obj)}\n\n".encode('utf-8')

            def encode(msg):
                index, piece = msg
                usage['completion_tokens'] += piece.generated
                return event(dict(head, choices=[choice(index, piece)]))

            def end():
                usage['total_tokens'] = usage['prompt_tokens'] + usage['completion_tokens']
                last = event(dict(head, choices=[], usage=usage)) if (
                    body.stream_options and body.stream_options.include_usage) else b''
                return last + b"data: [DONE]\n\n"

            def on_error(e):
                status, message = failure(e)
                kind = 'invalid_request_error' if status < 500 else 'server_error'
                return event(dict(error=dict(message=message, type=kind, param=None, code=None)))
            return JobStream(job, encode, end, on_error, 'text/event-stream', engine.settings.timeout)

        choices = [dict(index=i, text='', logprobs=None, finish_reason=None)
                   for i in range(len(prompts) * body.n)]
        entries = [[] for _ in choices]
        for index, piece in await gather(job, request.receive):
            c = choices[index]
            c['text'] += piece.text
            entries[index] += piece.entries
            c['finish_reason'] = piece.finish or c['finish_reason']
            usage['completion_tokens'] += piece.generated
        for c, es in zip(choices, entries):
            if body.logprobs is not None:
                c['logprobs'] = logprobs_json(es)
        usage['total_tokens'] = usage['prompt_tokens'] + usage['completion_tokens']
        return json_response(dict(head, choices=choices, usage=usage))

    return api
