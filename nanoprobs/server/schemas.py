"""
The request bodies of both APIs as pydantic models: every field's type and range is declared here, once.

request_models(vocab_size, settings) builds them for one server (token ids below its vocabulary, texts and
max_new_tokens within its limits), so the OpenAPI document shows the limits the server enforces. Bodies
are strict (a number is not a string, 5.0 is not an int, 1 is not true), a null means the default, an
unknown field is refused, and error_text() turns pydantic's errors into one line per bad field.
"""
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator

from nanoprobs.attribution import STEPS

MAX_TOP = 50  # candidates per token: /api's top, /v1's logprobs
MAX_TEMPERATURES = 12  # columns of one /api/temperatures answer
MAX_TEMPERATURE = 1e6
MAX_SEED = 2 ** 63 - 1
MAX_N = 16  # completions per prompt
MAX_CHOICES = 64  # prompts x n in one completion request
MAX_STOPS, MAX_STOP_CHARS = 4, 200
MAX_ATTRIBUTION_STEPS = 256  # integrated gradients' steps in one /api/attribute request

Temperature = Annotated[float, Field(ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False,
                                     description="0 = greedy; 1 = the model distribution itself")]
TopK = Annotated[int, Field(ge=0, description="keep the k most likely tokens; 0 or null = off")]
TopP = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False,
                              description="nucleus sampling: keep the most likely tokens holding this much "
                                          "probability; 1 = off")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="the random stream of the draws")]
Top = Annotated[int, Field(ge=1, le=MAX_TOP, description="candidates shown per token")]

# what each limit is set by, said after a value over it
HINTS = {'max_new_tokens': "this server's limit; serve.py --max_tokens_limit raises it",
         'max_tokens': "this server's limit; serve.py --max_tokens_limit raises it",
         'prompt': "serve.py --max_prompt_chars raises it", 'response': "serve.py --max_prompt_chars raises it",
         'prefix': "serve.py --max_prompt_chars raises it"}


class Body(BaseModel):
    """A request body: strict types, no unknown fields, null = the field's default."""
    model_config = ConfigDict(strict=True, extra='forbid')

    @model_validator(mode='before')
    @classmethod
    def _null_is_default(cls, data):
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


def one_of(body, text, ids, required=True):
    """Refuse a body that gives both the text and the ids of one input (or neither, when required)."""
    a, b = getattr(body, text), getattr(body, ids)
    if a is not None and b is not None:
        raise ValueError(f"give {text} (text) or {ids} (token ids), not both")
    if required and a is None and b is None:
        raise ValueError(f"give {text} (text) or {ids} (a list of token ids)")
    return body


@dataclass(frozen=True)
class Models:
    """The request models of one server."""
    generate: type
    score: type
    temperatures: type
    completion: type
    inspect: type
    attribute: type


def request_models(vocab_size, settings):
    """The request models for a server over a vocabulary of vocab_size with these engine.Settings."""
    limit = settings.max_prompt_chars
    Id = Annotated[int, Field(ge=0, lt=vocab_size)]
    Ids = Annotated[list[Id], Field(max_length=limit, description="token ids")]
    Text = Annotated[str, Field(max_length=limit)]
    NewTokens = Annotated[int, Field(ge=0, le=settings.max_tokens_limit)]

    class GenerateRequest(Body):
        """POST /api/generate: continue a prompt, every token with its probabilities."""
        prompt: Text | None = None
        prompt_ids: Ids | None = None
        prefix: Text | None = Field(None, description="the response starts with this text (scored), then "
                                                      "generation continues after it")
        prefix_ids: Ids | None = None
        max_new_tokens: NewTokens = settings.max_new_tokens
        temperature: Temperature = 1.0
        top_k: TopK | None = None
        top_p: TopP = 1.0
        top: Top = settings.top
        seed: Seed = settings.seed
        stop_at_eot: bool = Field(False, description="end at <|endoftext|> (included)")
        stream: bool = Field(False, description="one JSON object per line as each token is drawn")

        @model_validator(mode='after')
        def _inputs(self):
            return one_of(one_of(self, 'prompt', 'prompt_ids'), 'prefix', 'prefix_ids', required=False)

    class ScoreRequest(Body):
        """POST /api/score: the probability of a fixed response after a prompt."""
        prompt: Text | None = None
        prompt_ids: Ids | None = None
        response: Text | None = None
        response_ids: Ids | None = None
        temperature: Temperature = 1.0
        top_k: TopK | None = None
        top_p: TopP = 1.0
        top: Top = settings.top

        @model_validator(mode='after')
        def _inputs(self):
            return one_of(one_of(self, 'prompt', 'prompt_ids'), 'response', 'response_ids')

    class TemperaturesRequest(Body):
        """POST /api/temperatures: the next-token distribution after a context under several temperatures."""
        ids: Ids | None = Field(None, description="the context")
        prompt: Text | None = None
        temperatures: Annotated[list[Temperature], Field(min_length=1, max_length=MAX_TEMPERATURES)] = \
            [0, 0.5, 1, 1.5, 2]
        top_k: TopK | None = None
        top_p: TopP = 1.0
        top: Top = settings.top

        @model_validator(mode='after')
        def _inputs(self):
            return one_of(self, 'prompt', 'ids')

    def position_in(r):
        if not 1 <= r.position < len(r.ids):
            raise ValueError(f"position must be the index in ids of the token to explain, in [1, "
                             f"{len(r.ids) - 1}] (a token with one before it), got {r.position}")
        return r

    Position = Annotated[int, Field(ge=1, description="the index in ids of the token to explain (it is "
                                                      "predicted from ids[:position])")]

    class InspectRequest(Body):
        """POST /api/inspect: what each layer predicted for one token (logit lens) and where its prediction
        looked (attention, every layer and head)."""
        ids: Annotated[list[Id], Field(min_length=2, max_length=limit,
                                       description="the text's token ids: prompt, then response")]
        position: Position

        @model_validator(mode='after')
        def _position(self):
            return position_in(self)

    class AttributeRequest(Body):
        """POST /api/attribute: which earlier tokens made one token likely (Captum attribution of its
        log-prob to the token embeddings)."""
        ids: Annotated[list[Id], Field(min_length=2, max_length=limit,
                                       description="the text's token ids: prompt, then response")]
        position: Position
        method: Literal['ig', 'gxi'] = Field('ig', description="'ig': integrated gradients (Captum's "
                                             "LayerIntegratedGradients on the token embeddings); 'gxi': "
                                             "gradient x input, one backward pass")
        steps: Annotated[int, Field(ge=1, le=MAX_ATTRIBUTION_STEPS)] = Field(
            STEPS, description="integrated gradients' steps (each a forward and backward pass)")

        @model_validator(mode='after')
        def _position(self):
            return position_in(self)

    PromptForms = str | list[str] | list[Id] | list[list[Id]]

    def prompts(v):
        """The OpenAI prompt forms as a list of prompts, each text (str) or token ids (list of int)."""
        forms = "must be a string, a list of strings, a list of token ids, or a list of lists of token ids"
        ok_id = lambda t: isinstance(t, int) and not isinstance(t, bool)  # noqa: E731
        if isinstance(v, str):
            v = [v]
        elif not isinstance(v, list):
            raise ValueError(forms)
        elif v and all(ok_id(t) for t in v):
            v = [v]
        out = []
        for p in v:
            if isinstance(p, str):
                if not p.isascii():
                    try:
                        p.encode('utf-8')
                    except UnicodeEncodeError:  # what pydantic's str refuses in every other field
                        raise ValueError("a prompt is not valid Unicode text (it holds a lone surrogate)") from None
                if len(p) > limit:
                    raise ValueError(f"a prompt has {len(p)} characters; at most {limit} ({HINTS['prompt']})")
            elif isinstance(p, list) and all(ok_id(t) for t in p):
                bad = [t for t in p if not 0 <= t < vocab_size]
                if bad:
                    raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
                if len(p) > limit:
                    raise ValueError(f"a prompt has {len(p)} tokens; at most {limit}")
            else:
                raise ValueError(forms)
            out.append(p)
        if not out:
            raise ValueError("an empty list: give at least one prompt")
        return out

    class StreamOptions(Body):
        include_usage: bool = False

    Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]

    class CompletionRequest(Body):
        """POST /v1/completions, as OpenAI's API defines it. Log-probs are under the model distribution."""
        model: str | None = Field(None, description="any name: this server serves one model (GET /v1/models)")
        prompt: Annotated[Any, PlainValidator(prompts, json_schema_input_type=PromptForms)]
        max_tokens: NewTokens = Field(16, description="0: only score the prompt (with echo and logprobs)")
        temperature: Temperature = 1.0
        top_p: TopP = 1.0
        top_k: TopK | None = Field(None, description="an extension (vLLM has it too); null = off")
        n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
        stream: bool = Field(False, description="server-sent events, as OpenAI's API streams")
        stream_options: StreamOptions | None = None
        logprobs: Annotated[int, Field(ge=0, le=MAX_TOP)] | None = Field(
            None, description="this many most likely tokens per position (the chosen one is always added), "
                              "under the model distribution")
        echo: bool = Field(False, description="the prompt comes back before the completion, with its log-probs")
        stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
        seed: Seed | None = None
        presence_penalty: float = 0.0
        frequency_penalty: float = 0.0
        best_of: int | None = None
        logit_bias: dict[str, float] | None = None
        suffix: str | None = None
        user: str | None = None

        @model_validator(mode='after')
        def _supported(self):
            for name in ('presence_penalty', 'frequency_penalty'):
                if getattr(self, name) != 0:
                    raise ValueError(f"{name} is not supported by this server: leave it out (or 0)")
            if self.best_of not in (None, 1, self.n):
                raise ValueError("best_of is not supported by this server: leave it out (or equal to n)")
            if self.logit_bias:
                raise ValueError("logit_bias is not supported by this server: leave it out")
            if self.suffix:
                raise ValueError("suffix is not supported by this server: leave it out")
            if len(self.prompt) * self.n > MAX_CHOICES:
                raise ValueError(f"{len(self.prompt)} prompts x n={self.n} is more than {MAX_CHOICES} "
                                 "completions in one request: send fewer at a time")
            return self

        @property
        def stops(self):
            return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)

    return Models(GenerateRequest, ScoreRequest, TemperaturesRequest, CompletionRequest, InspectRequest,
                  AttributeRequest)


# -----------------------------------------------------------------------------
# pydantic's errors as one line per bad field

UNION_TAGS = {'str', 'int', 'float', 'bool', 'list', 'dict', 'none'}  # pydantic names a union's members in loc


def _where(loc):
    parts = [p for p in loc if p != 'body' and
             (isinstance(p, int) or (p.isidentifier() and p not in UNION_TAGS))]
    out = ''
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _shown(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    s = repr(x)
    return s if len(s) <= 60 else s[:57] + '...'


def error_text(errors):
    """The errors of a pydantic ValidationError (or FastAPI's RequestValidationError) as one message:
    one part per bad field, naming it, what is wrong and what was sent."""
    parts, seen = [], set()
    for e in errors:
        kind, where, msg = e.get('type', ''), _where(e.get('loc', ())), e.get('msg', '')
        if where and where in seen:  # a union's members each fail: the first one says it
            continue
        seen.add(where)
        if kind == 'json_invalid':
            err = (e.get('ctx') or {}).get('error', msg)
            parts.append(f"the request body is not valid JSON ({err})")
            continue
        if not where:
            if kind == 'missing':
                parts.append("the request body is empty: send a JSON object, e.g. {\"prompt\": \"Once upon a time\"}")
            elif kind == 'value_error':
                parts.append(msg.removeprefix('Value error, '))
            else:
                parts.append("the request body must be a JSON object, e.g. {\"prompt\": \"Once upon a time\"}")
            continue
        if kind == 'extra_forbidden':
            parts.append(f"{where} is not a field of this request (a typo?)")
            continue
        if kind == 'missing':
            parts.append(f"{where} is required")
            continue
        msg = msg.removeprefix('Value error, ')
        text = f"{where}: {msg[:1].lower() + msg[1:]}"
        got = f"got {_shown(e['input'])}" if 'input' in e and kind != 'value_error' else ''
        hint = HINTS.get(str(where)) if kind in ('less_than_equal', 'string_too_long', 'too_long') else None
        extra = '; '.join(x for x in (got, hint) if x)
        parts.append(f"{text} ({extra})" if extra else text)
    return '; '.join(dict.fromkeys(parts)) or 'the request is not valid'
