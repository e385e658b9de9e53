"""
Score the prompt/response pairs of eval_data.json: how probable is each response after its prompt?
Run it before and after fine-tuning and compare.

    python eval.py --init_from=gpt2                            # OpenAI's GPT-2 (downloaded once)
    python eval.py --init_from=resume --out_dir=out-children   # a train.py checkpoint
    python eval.py --init_from=resume --out_dir=out-children --compare_to=results/eval_gpt2.json
    python eval.py --init_from=resume --out_dir=out-children --compare_init_from=gpt2 \\
                   --val_data=data/children_stories/val.bin    # + perplexity, bits/byte, top-1/5 accuracy

It takes sample.py's settings (init_from, out_dir, temperature, top_k, top_p, device, dtype, ...).
Every run prints one row per pair and totals, and writes results/eval_<name>.json (everything, machine-
readable), .csv, .md (a table for a report) and .png (per-pair bar chart, log scale; before vs after
when comparing, plus eval_<name>_tokens.png: the tokens that gained or lost the most).

In a notebook:
    from eval import eval
    run = eval('eval_data.json', 'gpt2')   # prints the table, returns an EvalRun

Probabilities are under the model's own distribution (temperature 1, no top-k/top-p). Setting
temperature, top_k or top_p adds the probability under that sampling distribution, labelled as such.
"""
import csv
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field

import torch

from load import load_model
from decoding import check_sampling, is_model_distribution
from formatting import format_prob, format_ratio

# -----------------------------------------------------------------------------
init_from: str = 'resume'  # 'resume' (out_dir/ckpt.pt), 'gpt2'...'gpt2-xl', a Hugging Face folder, or a ckpt file
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
eval_data: str = 'eval_data.json'  # JSON list of {"prompt": ..., "response": ...} (extra keys ignored)
join: str = 'auto'  # how prompt and response meet: 'auto' (as a person reads them), 'none' (as written), 'space'
batch_size: int = 16  # pairs (or val windows) per forward pass
temperature: float = 1.0  # 1.0 = the model's own distribution; other values add a sampling-distribution score
top_k: int | None = None  # None/0 = off; set: also report the score under top-k sampling
top_p: float = 1.0  # 1.0 = off; < 1: also report the score under nucleus sampling
seed: int = 1337  # scoring is deterministic; kept so sample.py's arguments work unchanged
device: str = 'auto'  # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'float32'  # 'auto' = bfloat16/float16 on CUDA: faster, but every log-prob moves by ~1e-2
compile: bool = False  # torch.compile the model (CUDA only); scoring is one pass, so it rarely pays off
start: str = '\n'  # sample.py setting, accepted and unused: the prompts come from eval_data
num_samples: int = 10  # sample.py setting, accepted and unused
max_new_tokens: int = 500  # sample.py setting, accepted and unused
# the rest of sample.py's settings, accepted so that any sample.py command line runs here unchanged (unused)
show_probs: bool = False
probs_top_k: int = 10
stop_at_eot: bool = False
fixed_response: str = ''
compare_temperatures: str = ''
compare_step: int = 0
num_beams: int = 0
length_penalty: float = 1.0
no_repeat_ngram_size: int = 0
compare_to: str = ''  # results/eval_<x>.json of an earlier run: the "before" of a before/after comparison
compare_init_from: str = ''  # or a second model (like init_from, not 'resume') scored in this run as "before"
val_data: str = ''  # held-out text file, or .bin of uint16 token ids: perplexity, bits/byte, top-1/top-5 accuracy
val_tokens: int = 20000  # predict at most this many tokens of val_data (0 = all); GPT-2 124M: ~4 min on 2 CPU cores
val_stride: int = 0  # tokens predicted per window of block_size; 0 = block_size // 2 (each sees >= half a block)
name: str = ''  # results/eval_<name>.*; '' = named after the model
results_dir: str = 'results'  # where the result files go
verbose: bool = False  # print every pair's exact response tokens with their log-probs
show: bool = False  # also open the charts in a window, when a display exists
# -----------------------------------------------------------------------------

JOIN_MODES = ('auto', 'none', 'space')
RESULTS_FORMAT = 'nanogpt-eval/1'


def perplexity(mean_logprob):
    """exp(-mean log-prob per token); inf rather than an OverflowError for absurdly unlikely text."""
    return math.exp(-mean_logprob) if mean_logprob > -700 else float('inf')


class EvalDataError(ValueError):
    """eval_data (or a results file) that cannot be used; the message says which entry and what to do."""


# -----------------------------------------------------------------------------
# reading pairs, joining prompt and response, tokenizing

def read_json(path, missing):
    """The JSON value in path, or EvalDataError naming the file, the spot and the fix (`missing` if absent)."""
    if not os.path.exists(path):
        raise EvalDataError(f"{path} does not exist: {missing}")
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise EvalDataError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
                            "Fix that spot (a trailing comma or an unescaped \" inside a string are the usual causes)") from None
    except UnicodeDecodeError as e:
        raise EvalDataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None


def read_pairs(path):
    """The pairs of a JSON file as [{'prompt', 'response', 'extra'}], or EvalDataError naming the problem."""
    data = read_json(path, 'write a JSON list of {"prompt": ..., "response": ...} pairs there, or point '
                           '--eval_data at one')
    return check_pairs(data, path)


def check_pairs(data, path='eval_data'):
    """Validate loaded JSON (or a list built in Python). An entry is {"prompt": str, "response": str, ...}
    (other keys kept as 'extra') or [prompt, response]."""
    if not isinstance(data, list):
        raise EvalDataError(f"{path} must hold a JSON list of pairs [{{\"prompt\": ..., \"response\": ...}}, ...], "
                            f"found a {type(data).__name__}")
    if not data:
        raise EvalDataError(f"{path} holds an empty list: add at least one prompt/response pair")
    pairs = []
    for i, e in enumerate(data, 1):
        where = f"{path}: pair {i} (entry {i} of the list)"
        if isinstance(e, list) and len(e) == 2:
            e = {'prompt': e[0], 'response': e[1]}
        if not isinstance(e, dict):
            raise EvalDataError(f"{where} is a {type(e).__name__}; write it as {{\"prompt\": \"...\", \"response\": \"...\"}}")
        for key in ('prompt', 'response'):
            if key not in e:
                raise EvalDataError(f"{where} has no \"{key}\" key (it has {sorted(e)}); add one")
            if not isinstance(e[key], str):
                raise EvalDataError(f"{where}: \"{key}\" must be a string, got {type(e[key]).__name__} {e[key]!r}")
        if e['response'] == '':
            raise EvalDataError(f"{where} has an empty response: there is nothing to score. "
                                "Write the continuation to score, or remove the pair")
        pairs.append({'prompt': e['prompt'], 'response': e['response'],
                      'extra': {k: v for k, v in e.items() if k not in ('prompt', 'response')}})
    return pairs


def join_texts(prompt, response, mode='auto'):
    """(prompt, response) as they will be tokenized: the response is the continuation of the prompt.

    'auto':  trailing whitespace of the prompt moves to the start of the response (GPT-2 writes a space
             as part of the next word: ' there'); if neither side has whitespace at the join and both
             sides are word characters, one space is inserted ('happily' + 'ever' -> 'happily ever').
             Anything else (punctuation, quotes) is kept as written.
    'space': exactly one space at the join (whitespace on both sides replaced by it).
    'none':  as written, concatenated.
    An empty prompt is left empty (the response is scored after <|endoftext|>, as a document start)."""
    if mode not in JOIN_MODES:
        raise ValueError(f"join={mode!r}: use one of {', '.join(JOIN_MODES)}")
    if mode == 'none' or prompt == '':
        return prompt, response
    p = prompt.rstrip()
    if mode == 'space':
        return p, ' ' + response.lstrip()
    r = prompt[len(p):] + response
    if p and not r[0].isspace() and re.match(r'\w', p[-1]) and re.match(r'\w', r[0]):
        r = ' ' + r
    return p, r


def tokenize_pair(tok, prompt, response):
    """(prompt_ids, response_ids, note): encode prompt+response together and split at the prompt.

    The split is the largest number of leading tokens whose bytes lie wholly inside the prompt. If a
    token spans the join (BPE merged the prompt's last characters with the response's first), it goes
    to the response and the note says so: the score then also covers those few prompt characters.
    An empty context becomes <|endoftext|>, GPT-2's document separator."""
    ids = tok.encode(prompt + response)
    plen = len(prompt.encode('utf-8'))
    k = n = 0
    while k < len(ids) and n + len(tok.token_bytes(ids[k])) <= plen:
        n += len(tok.token_bytes(ids[k]))
        k += 1
    note = ''
    if n != plen:
        b = tok.token_bytes(ids[k])
        head = b[:plen - n].decode('utf-8', 'backslashreplace')
        tail = b[plen - n:].decode('utf-8', 'backslashreplace')
        note = (f"token {tok.token_text(ids[k])!r} spans the join (prompt's {head!r} + response's {tail!r}); "
                f"it is scored as part of the response, after the {k} prompt token{'s' if k != 1 else ''} before it"
                + (" (after <|endoftext|>)" if k == 0 else ''))
    elif not prompt:
        note = "empty prompt: the response is scored after <|endoftext|>, as the start of a document"
    elif ids[:k] != tok.encode(prompt):
        note = "the prompt tokenizes differently before this response than alone; its joint tokens are used"
    context = ids[:k]
    if not context:
        if tok.eot is None:
            raise EvalDataError(f"an empty prompt needs an <|endoftext|> token to start from, and {tok.name} has none; "
                                "give the pair a prompt")
        context = [tok.eot]
    return context, ids[k:], note


# -----------------------------------------------------------------------------
# results

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
        """'…upon a time| there lived a…': the end of the prompt, '|', the start of the response, as joined."""
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


@dataclass
class EvalRun:
    """A model's scores on every pair (and optionally on held-out text), as saved in results/eval_<name>.json."""
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

    def to_dict(self):
        def clean(xs):  # JSON has no -inf: null means probability 0 (outside top-k/top-p)
            return None if xs is None else [x if math.isfinite(x) else None for x in xs]
        pairs = []
        for p in self.pairs:
            d = dict(index=p.index, prompt=p.prompt, response=p.response, extra=p.extra, note=p.note,
                     joined=list(p.joined) if p.joined else None,
                     prompt_ids=p.prompt_ids, response_ids=p.response_ids, tokens=p.tokens,
                     logprobs=clean(p.logprobs), ranks=p.ranks, expected=p.expected,
                     sample_logprobs=clean(p.sample_logprobs),
                     # derived, for readers of the file; recomputed when it is read back
                     logprob=p.logprob, probability=format_prob(p.logprob), mean_logprob=p.mean_logprob,
                     perplexity=p.perplexity, greedy=p.greedy)
            pairs.append(d)
        val = None if self.val is None else dict(vars(self.val), perplexity=self.val.perplexity,
                                                  bits_per_byte=self.val.bits_per_byte,
                                                  top1_accuracy=self.val.acc1, top5_accuracy=self.val.acc5)
        return dict(format=RESULTS_FORMAT, model=self.model, settings=self.settings, passes=self.passes,
                    totals=dict(pairs=len(self.pairs), tokens=self.n_tokens, logprob=self.logprob,
                                mean_logprob=self.mean_logprob, sum_of_probabilities=format_prob(self.log_sum_prob)),
                    pairs=pairs, val=val)

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


def read_results(path):
    """An EvalRun from a results/eval_<name>.json written by an earlier run."""
    d = read_json(path, "--compare_to needs the results of an earlier run: run eval.py on the 'before' model "
                        "first (it writes results/eval_<name>.json), or use --compare_init_from=<model>")
    if not isinstance(d, dict) or d.get('format') != RESULTS_FORMAT:
        raise EvalDataError(f"--compare_to={path} is not a results file of eval.py (format "
                            f"{d.get('format') if isinstance(d, dict) else type(d).__name__!r}, expected "
                            f"{RESULTS_FORMAT!r}); give it a results/eval_<name>.json")
    try:
        return EvalRun.from_dict(d, source=path)
    except (KeyError, TypeError, AttributeError) as e:
        raise EvalDataError(f"--compare_to={path} is not a results file of eval.py (missing {e}); "
                            "give it a results/eval_<name>.json") from None


# -----------------------------------------------------------------------------
# scoring

def _loaded(model, tok, **load_kw):
    """(model, tok, description, autocast ctx, dtype) from a GPT + tokenizer, a load.Loaded, or an init_from."""
    if isinstance(model, str):
        model = load_model(model, **load_kw)
    if hasattr(model, 'tok') and hasattr(model, 'model'):  # load.Loaded
        return model.model, model.tok, model.source, model.ctx, model.dtype
    if tok is None:
        raise ValueError("eval(model=<GPT>) needs tok=<load.Tokenizer> too (or pass a load.Loaded / an init_from)")
    from contextlib import nullcontext
    return model, tok, type(model).__name__, nullcontext(), str(model.lm_head.weight.dtype).replace('torch.', '')


def eval(eval_data='eval_data.json', model='resume', tok=None, *, join='auto', batch_size=16, temperature=1.0,
         top_k=None, top_p=1.0, verbose=False, quiet=False, out_dir='out', device='auto', dtype='float32'):
    """Score every prompt/response pair of eval_data with a model; print the table and return an EvalRun.

    eval_data: a JSON file path, or a list of pairs already in memory (dicts or [prompt, response]).
    model: a GPT (then give tok), a load.Loaded, or an init_from string ('gpt2', 'resume' with out_dir,
    a Hugging Face folder, a checkpoint), loaded on device/dtype.

    For each pair this is exactly model.generate(prompt_ids, fixed_response=response_ids): generate()
    hands a fixed response to model.score(), which is called here directly for batch_size pairs at a
    time, so N pairs take ceil(N / batch_size) padded forward passes."""
    model, tok, source, ctx, dtype = _loaded(model, tok, out_dir=out_dir, device=device, dtype=dtype)
    if isinstance(eval_data, str):
        path, pairs = eval_data, read_pairs(eval_data)
    else:
        path, pairs = '<in memory>', check_pairs(eval_data, 'eval_data')
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    bs = model.config.block_size
    prompts, responses, notes, joined = [], [], [], []
    for i, p in enumerate(pairs, 1):
        pt, rt = join_texts(p['prompt'], p['response'], join)
        joined.append((pt, rt))
        try:
            ctx_ids, resp_ids, note = tokenize_pair(tok, pt, rt)
        except ValueError as e:  # a character vocabulary without some character of the pair
            raise EvalDataError(f"{path}: pair {i} cannot be encoded: {e}") from None
        if len(ctx_ids) + len(resp_ids) > bs:
            raise EvalDataError(f"{path}: pair {i} is {len(ctx_ids) + len(resp_ids)} tokens (prompt {len(ctx_ids)} + "
                                f"response {len(resp_ids)}), longer than the model's block_size {bs}: shorten it")
        prompts.append(ctx_ids)
        responses.append(resp_ids)
        notes.append(note)

    sampling = not is_model_distribution(temperature, top_k, top_p)
    results, passes = [], 0
    with ctx:
        for b in range(0, len(pairs), batch_size):
            # each token's rank and the model's top choice come from the same pass
            results += model.score(prompts[b:b + batch_size], responses[b:b + batch_size], temperature, top_k, top_p)
            passes += 1
    run_pairs = []
    for i, (p, s, note, jt) in enumerate(zip(pairs, results, notes, joined), 1):
        run_pairs.append(PairResult(
            index=i, prompt=p['prompt'], response=p['response'], prompt_ids=s.prompt, response_ids=s.tokens,
            tokens=[tok.token_text(t) for t in s.tokens], logprobs=s.logprobs.tolist(),
            ranks=s.ranks.tolist(), expected=[tok.token_text(t) for t in s.top1.tolist()],
            sample_logprobs=s.sample_logprobs.tolist() if sampling else None, note=note, extra=p['extra'],
            joined=jt))
    settings = dict(eval_data=path, join=join, temperature=temperature, top_k=top_k, top_p=top_p,
                    batch_size=batch_size, device=str(model.lm_head.weight.device), dtype=dtype,
                    block_size=bs)
    run = EvalRun(source, settings, run_pairs, passes=passes)
    if not quiet:
        print(pairs_report(run, verbose, tok))
    return run


def check_val_path(path):
    if not os.path.isfile(path):
        raise EvalDataError(f"--val_data={path}: no such file. Give a held-out text file or a val.bin "
                            "(data/<dataset>/val.bin, written by prepare.py)")


def read_val_ids(path, tok, max_tokens):
    """Token ids of held-out data (max_tokens predicted = max_tokens + 1 ids; 0 = all): a .bin of uint16
    ids (prepare.py's val.bin) is read as is, anything else as UTF-8 text encoded with tok."""
    check_val_path(path)
    n = max_tokens + 1 if max_tokens > 0 else None
    if path.endswith('.bin'):
        import numpy as np
        ids = np.memmap(path, dtype=np.uint16, mode='r')[:n].tolist()
    else:
        try:
            with open(path, encoding='utf-8') as f:
                # ~4 characters per GPT-2 token: read generously, never the whole of a huge file
                text = f.read(n * 16 if n else -1)
        except UnicodeDecodeError as e:  # replacing bytes would change the byte count of bits per byte
            raise EvalDataError(f"--val_data={path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                                "save it as UTF-8, or give a .bin of token ids") from None
        ids = tok.encode(text)[:n]
    if len(ids) < 2:
        raise EvalDataError(f"--val_data={path} holds {len(ids)} token(s); at least 2 are needed to predict one")
    if max(ids) >= tok.vocab_size:
        raise EvalDataError(f"--val_data={path} holds token id {max(ids)}, beyond the {tok.vocab_size} tokens of "
                            f"the model's tokenizer ({tok.name}): was it made with another tokenizer?")
    return ids


def evaluate_val(model, tok, ids, path='', stride=0, batch_size=16, ctx=None, progress=True):
    """Perplexity, bits per byte and top-1/top-5 accuracy of predicting ids[1:] from what precedes them.

    Sliding windows of block_size: the first predicts ids[1:block_size]; each next one predicts the
    following `stride` tokens after the block_size - stride before them. Every token is predicted once,
    by the same model.score() as the pairs (top-k correct: the token's rank under the model <= k)."""
    from contextlib import nullcontext
    from tqdm import tqdm
    bs = model.config.block_size
    stride = stride or max(1, bs // 2)
    if not 1 <= stride < bs:
        raise ValueError(f"val_stride={stride} must be between 1 and block_size - 1 = {bs - 1} (0 = block_size // 2)")
    windows = [(ids[:1], ids[1:bs])]  # (context, predicted tokens); each pair is at most block_size long
    for end in range(bs, len(ids), stride):
        stop = min(end + stride, len(ids))
        windows.append((ids[stop - bs:end], ids[end:stop]))
    nll, top1, top5 = 0.0, 0, 0
    with ctx or nullcontext():
        for b in tqdm(range(0, len(windows), batch_size), desc=f"val {os.path.basename(path)}", unit='batch',
                      disable=not progress or len(windows) <= batch_size, leave=False):
            chunk = windows[b:b + batch_size]
            for s in model.score([w[0] for w in chunk], [w[1] for w in chunk]):
                nll -= float(s.logprobs.sum())
                top1 += int((s.ranks == 1).sum())
                top5 += int((s.ranks <= 5).sum())
    n = len(ids) - 1
    # UTF-8 bytes of the predicted text; a document separator (<|endoftext|>) is not text
    nbytes = sum(len(tok.token_bytes(t)) for t in ids[1:] if t != tok.eot)
    return ValResult(path, n, nbytes, nll, top1, top5, bs, stride)


# -----------------------------------------------------------------------------
# comparison

@dataclass
class Comparison:
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
        items = [(p, i, d) for p, ds in zip(self.after.pairs, self.token_deltas) if ds for i, d in enumerate(ds)]
        items = [x for x in items if (x[2] > 0 if gains else x[2] < 0)]
        return sorted(items, key=lambda x: -abs(x[2]))[:n]


def compare(before, after):
    """Pair-by-pair comparison of two EvalRuns over the same eval_data (checked)."""
    if len(before.pairs) != len(after.pairs):
        raise EvalDataError(f"{before.source} scored {len(before.pairs)} pairs and this run {len(after.pairs)}: "
                            "compare runs over the same eval_data")
    token_deltas = []
    for a, b in zip(after.pairs, before.pairs):
        if (a.prompt, a.response) != (b.prompt, b.response):
            raise EvalDataError(f"pair {a.index} differs between {before.source} ({b.label()!r}) and this run "
                                f"({a.label()!r}): compare runs over the same eval_data")
        if a.joined and b.joined and tuple(a.joined) != tuple(b.joined):  # a missing space changes everything
            raise EvalDataError(f"pair {a.index}: {before.source} scored {tuple(b.joined)!r} (join="
                                f"{before.settings.get('join')}), this run {tuple(a.joined)!r} (join="
                                f"{after.settings.get('join')}): compare runs with the same --join")
        same = a.prompt_ids == b.prompt_ids and a.response_ids == b.response_ids
        token_deltas.append([x - y for x, y in zip(a.logprobs, b.logprobs)] if same else None)
    deltas = [a.logprob - b.logprob for a, b in zip(after.pairs, before.pairs)]
    return Comparison(before, after, deltas, token_deltas)


def arrow(d):
    return '↑' if d > 0 else '↓' if d < 0 else '='


# -----------------------------------------------------------------------------
# text reports

def pairs_report(run, verbose=False, tok=None):
    lines = [f"{len(run.pairs)} pairs from {run.settings.get('eval_data')}, model {run.model}, scored in "
             f"{run.passes} forward pass{'es' if run.passes != 1 else ''} (batch_size {run.settings.get('batch_size')}), "
             f"join={run.settings.get('join')}",
             "probabilities under the model distribution (temperature 1, no top-k/top-p)"]
    s = run.settings
    if run.sampling:
        lines.append(f"'sampling p' = under the sampling distribution (temperature {s['temperature']}, "
                     f"top_k {s['top_k']}, top_p {s['top_p']}); 0 = a token sampling could never draw")
    head = f"{'#':>3}  {'prompt|response':<30} {'tokens':>6} {'log-prob':>9} {'probability':>11} " \
           f"{'lp/token':>8} {'ppl':>7} {'greedy':>6}" + (f" {'sampling p':>11}" if run.sampling else '') + \
           "  most surprising token"
    lines += ['', head]
    for p in run.pairs:
        i = p.surprise
        line = f"{p.index:>3}  {p.label():<30} {p.n:>6} {p.logprob:>9.3f} {format_prob(p.logprob):>11} " \
               f"{p.mean_logprob:>8.3f} {p.perplexity:>7.6g} {'yes' if p.greedy else 'no':>6}"
        if run.sampling:
            line += f" {format_prob(p.sample_logprob):>11}"
        line += f"  {repr(p.tokens[i])} p={format_prob(p.logprobs[i])} (rank {p.ranks[i]}"
        line += f", model expected {repr(p.expected[i])})" if p.ranks[i] > 1 else ")"
        lines.append(line)
    lines += ['', f"totals over {len(run.pairs)} pairs ({run.n_tokens} response tokens):",
              f"  sum of probabilities       {format_prob(run.log_sum_prob):>11}   (the brief's number: "
              "dominated by the single likeliest pair)",
              f"  sum of log-probabilities   {run.logprob:>11.3f}   (log of the product: all pairs together)",
              f"  mean log-prob per token    {run.mean_logprob:>11.4f}   (perplexity {perplexity(run.mean_logprob):.6g}; "
              "compares across lengths)",
              f"  greedy decoding reproduces {sum(p.greedy for p in run.pairs)} of {len(run.pairs)} responses"]
    notes = [f"  pair {p.index}: {p.note}" for p in run.pairs if p.note]
    if notes:
        lines += ['', 'notes:'] + notes
    if verbose:
        lines += ['', 'exact tokens: the context (its last 8 tokens), then each response token, its log-prob and rank:']
        for p in run.pairs:
            last = [tok.token_text(t) for t in p.prompt_ids[-8:]] if tok else p.prompt_ids[-8:]
            lines.append(f"{p.index:>3}  context of {len(p.prompt_ids)} token{'s' if len(p.prompt_ids) != 1 else ''}: {'... ' if len(p.prompt_ids) > 8 else ''}"
                         + ' '.join(map(repr, last)))
            lines.append('     ' + '  '.join(f"{repr(t)} {lp:.2f} r{r}" for t, lp, r in zip(p.tokens, p.logprobs, p.ranks)))
    return '\n'.join(lines)


def val_report(runs):
    """Held-out data metrics of one or more runs (columns), e.g. before and after."""
    runs = [(label, r.val) for label, r in runs if r.val is not None]
    if not runs:
        return ''
    v0 = runs[0][1]
    lines = [f"held-out data {v0.path}: {v0.tokens:,} tokens predicted ({v0.bytes:,} UTF-8 bytes of text), windows of "
             f"{v0.window} tokens, {v0.stride} predicted per window",
             f"  {'':<16}" + ''.join(f"{label:>14}" for label, _ in runs)]
    rows = [('perplexity', lambda v: f"{v.perplexity:.3f}"), ('bits per byte', lambda v: f"{v.bits_per_byte:.4f}"),
            ('top-1 accuracy', lambda v: f"{100 * v.acc1:.2f}%"), ('top-5 accuracy', lambda v: f"{100 * v.acc5:.2f}%")]
    for title, f in rows:
        lines.append(f"  {title:<16}" + ''.join(f"{f(v):>14}" for _, v in runs))
    if len(runs) == 2 and (runs[0][1].path, runs[0][1].tokens) != (runs[1][1].path, runs[1][1].tokens):
        lines.append("  note: the two columns were measured on different data or token counts: not comparable")
    return '\n'.join(lines)


def compare_report(c, verbose=False):
    b, a = c.before, c.after
    lines = ["before vs after (probabilities under the model distribution; ratio = after / before):",
             f"  before: {b.model}  [{b.source}]", f"  after:  {a.model}  [{a.source}]", '',
             f"{'#':>3}  {'prompt|response':<30} {'before':>11} {'after':>11} {'ratio':>12} {'Δ log-prob':>10}"]
    for p, q, d in zip(a.pairs, b.pairs, c.deltas):
        lines.append(f"{p.index:>3}  {p.label():<30} {format_prob(q.logprob):>11} {format_prob(p.logprob):>11} "
                     f"{format_ratio(d):>12} {d:>+10.3f} {arrow(d)}")
    same = len(c.deltas) - c.rose - c.fell
    lines += ['', f"{c.rose} of {len(c.deltas)} pairs rose (↑), {c.fell} fell (↓)" + (f", {same} unchanged" if same else ''),
              f"  sum of log-probabilities  {b.logprob:.3f} → {a.logprob:.3f}  ({a.logprob - b.logprob:+.3f} nats, "
              f"{format_ratio(a.logprob - b.logprob)})",
              f"  mean log-prob per token   {b.mean_logprob:.4f} → {a.mean_logprob:.4f}  (perplexity "
              f"{perplexity(b.mean_logprob):.6g} → {perplexity(a.mean_logprob):.6g})",
              f"  sum of probabilities      {format_prob(b.log_sum_prob)} → {format_prob(a.log_sum_prob)}"]
    missing = [p.index for p, ds in zip(a.pairs, c.token_deltas) if ds is None]
    for gains in (True, False):
        top = c.top_tokens(8, gains)
        if top:
            lines += ['', f"tokens that {'gained' if gains else 'lost'} the most probability:"]
            for p, i, d in top:
                q = b.pairs[p.index - 1]
                lines.append(f"  pair {p.index:>2}  {repr(p.tokens[i]):<16} {format_prob(q.logprobs[i]):>10} → "
                             f"{format_prob(p.logprobs[i]):<10} {d:+.3f} {arrow(d)}")
    if missing:
        lines.append(f"  (pairs {missing} are tokenized differently in the two runs: no per-token view)")
    if verbose:
        lines += ['', 'every token, Δ log-prob (after − before):']
        for p, ds in zip(a.pairs, c.token_deltas):
            if ds:
                lines.append(f"{p.index:>3}  " + '  '.join(f"{repr(t)} {d:+.2f}" for t, d in zip(p.tokens, ds)))
    v = val_report([('before', b), ('after', a)])
    return '\n'.join(lines + (['', v] if v else []))


def markdown(run, c=None):
    """A Markdown report: pairs, totals, held-out metrics, and the comparison when there is one."""
    esc = lambda s: s.replace('|', '\\|').replace('\n', '\\n')  # noqa: E731
    s = run.settings
    out = [f"# eval: {run.model}", '',
           f"{len(run.pairs)} pairs from `{s.get('eval_data')}`, join={s.get('join')}, dtype {s.get('dtype')}. "
           "Probabilities are under the model distribution (temperature 1, no top-k/top-p)" +
           (f"; 'sampling p' under temperature {s['temperature']}, top_k {s['top_k']}, top_p {s['top_p']}." if run.sampling else '.'),
           '', '| # | prompt | response | tokens | log-prob | probability | log-prob/token | perplexity | greedy |'
           + (' sampling p |' if run.sampling else '') + ' most surprising token |',
           '|---:|---|---|---:|---:|---:|---:|---:|:---:|' + ('---:|' if run.sampling else '') + '---|']
    for p in run.pairs:
        i = p.surprise
        out.append(f"| {p.index} | {esc(p.prompt) or '*(empty)*'} | {esc(p.response)} | {p.n} | {p.logprob:.3f} | {format_prob(p.logprob)} | "
                   f"{p.mean_logprob:.3f} | {p.perplexity:.6g} | {'yes' if p.greedy else 'no'} |"
                   + (f" {format_prob(p.sample_logprob)} |" if run.sampling else '')
                   + f" `{esc(repr(p.tokens[i]))}` {format_prob(p.logprobs[i])} (rank {p.ranks[i]}) |")
    out += ['', f"Totals over {run.n_tokens} response tokens: sum of probabilities {format_prob(run.log_sum_prob)}, "
            f"sum of log-probabilities {run.logprob:.3f}, mean log-prob per token {run.mean_logprob:.4f} "
            f"(perplexity {perplexity(run.mean_logprob):.6g}).", '']
    if c is not None:
        b = c.before
        out += ['## Before vs after', '', f"Before: `{b.model}` ({b.source}). After: `{run.model}`. "
                f"{c.rose} of {len(c.deltas)} pairs rose, {c.fell} fell.", '',
                '| # | prompt | before | after | ratio | Δ log-prob | |', '|---:|---|---:|---:|---:|---:|:---:|']
        for p, q, d in zip(run.pairs, b.pairs, c.deltas):
            out.append(f"| {p.index} | {esc(p.prompt) or '*(empty)*'} | {format_prob(q.logprob)} | {format_prob(p.logprob)} | "
                       f"{format_ratio(d)} | {d:+.3f} | {arrow(d)} |")
        out += ['', f"Sum of log-probabilities {b.logprob:.3f} → {run.logprob:.3f}; mean per token "
                f"{b.mean_logprob:.4f} → {run.mean_logprob:.4f}.", '',
                '### Tokens that gained and lost the most', '', '| pair | token | before | after | Δ log-prob |',
                '|---:|---|---:|---:|---:|']
        for p, i, d in c.top_tokens(10, True) + c.top_tokens(10, False):
            out.append(f"| {p.index} | `{esc(repr(p.tokens[i]))}` | {format_prob(b.pairs[p.index - 1].logprobs[i])} | "
                       f"{format_prob(p.logprobs[i])} | {d:+.3f} {arrow(d)} |")
        out.append('')
    vals = [(lbl, r) for lbl, r in ((('before', c.before), ('after', run)) if c else (('model', run),)) if r.val]
    if vals:
        v0 = vals[0][1].val
        out += ['## Held-out data', '', f"`{v0.path}`: {v0.tokens:,} tokens predicted ({v0.bytes:,} UTF-8 bytes of text), "
                f"windows of {v0.window}, {v0.stride} predicted per window.", '',
                '| | ' + ' | '.join(lbl for lbl, _ in vals) + ' |', '|---|' + '---:|' * len(vals)]
        for title, f in (('perplexity', lambda v: f"{v.perplexity:.3f}"), ('bits per byte', lambda v: f"{v.bits_per_byte:.4f}"),
                         ('top-1 accuracy', lambda v: f"{100 * v.acc1:.2f}%"), ('top-5 accuracy', lambda v: f"{100 * v.acc5:.2f}%")):
            out.append(f"| {title} | " + ' | '.join(f(r.val) for _, r in vals) + ' |')
        out.append('')
    return '\n'.join(out)


def csv_text(run, c=None):
    f = io.StringIO()
    w = csv.writer(f)
    cols = ['pair', 'prompt', 'response', 'tokens', 'logprob', 'probability', 'mean_logprob', 'perplexity', 'greedy',
            'surprising_token', 'surprising_logprob']
    cols += ['sample_logprob'] if run.sampling else []
    cols += ['before_logprob', 'before_probability', 'delta_logprob', 'log10_ratio', 'direction'] if c else []
    w.writerow(cols)
    for k, p in enumerate(run.pairs):
        i = p.surprise
        row = [p.index, p.prompt, p.response, p.n, f"{p.logprob:.6f}", format_prob(p.logprob), f"{p.mean_logprob:.6f}",
               f"{p.perplexity:.4f}", p.greedy, p.tokens[i], f"{p.logprobs[i]:.6f}"]
        row += [f"{p.sample_logprob:.6f}"] if run.sampling else []
        if c:
            q, d = c.before.pairs[k], c.deltas[k]
            row += [f"{q.logprob:.6f}", format_prob(q.logprob), f"{d:.6f}", f"{d / math.log(10):.6f}", arrow(d)]
        w.writerow(row)
    return f.getvalue()


# -----------------------------------------------------------------------------
# files

def default_name(init_from, out_dir='out'):
    """results/eval_<name>: 'gpt2', the out_dir's name for 'resume', a folder's or file's name."""
    where = out_dir if init_from == 'resume' else init_from
    base = os.path.basename(os.path.normpath(where))
    if base == 'ckpt.pt':
        base = os.path.basename(os.path.dirname(os.path.abspath(where)))
    return re.sub(r'[^\w.-]+', '_', os.path.splitext(base)[0] if base.endswith('.pt') else base) or 'model'


def write_results(run, c, results_dir, name, show=False):
    """results/eval_<name>.json/.csv/.md/.png (+ _tokens.png when comparing), all or nothing: each is
    written to a temporary file first and renamed into place only once every file is ready."""
    import plots
    os.makedirs(results_dir, exist_ok=True)
    base = os.path.join(results_dir, f"eval_{name}")
    d = run.to_dict()
    if c is not None:
        d['comparison'] = dict(before=c.before.to_dict(), before_source=c.before.source, deltas=c.deltas,
                               rose=c.rose, fell=c.fell)
    texts = {'.json': json.dumps(d, indent=1, ensure_ascii=False, allow_nan=False), '.csv': csv_text(run, c), '.md': markdown(run, c)}
    tmps, final = [], []
    try:
        for ext, text in texts.items():
            tmp = f"{base}.tmp{os.getpid()}{ext}"
            tmps.append(tmp)
            with open(tmp, 'w', encoding='utf-8', newline='') as f:
                f.write(text)
            final.append((tmp, base + ext))
        labels = [f"{p.index}  {p.label(26)}" for p in run.pairs]
        if c is None:
            series = {run.model: [p.logprob for p in run.pairs]}
        else:
            series = {'before: ' + c.before.model: [p.logprob for p in c.before.pairs],
                      'after: ' + run.model: [p.logprob for p in run.pairs]}
        tmp = f"{base}.tmp{os.getpid()}.png"
        tmps.append(tmp)
        title = f"P(response | prompt), {len(run.pairs)} pairs of {os.path.basename(run.settings.get('eval_data', ''))}"
        plots.eval_pairs(labels, series, tmp, title, show=show)
        final.append((tmp, base + '.png'))
        if c is not None and (c.top_tokens(1, True) or c.top_tokens(1, False)):  # some token changed
            items = [(p.tokens[i], p.index, dd) for p, i, dd in c.top_tokens(12, True) + c.top_tokens(12, False)]
            tmp = f"{base}_tokens.tmp{os.getpid()}.png"
            tmps.append(tmp)
            plots.eval_token_changes(items, tmp, f"tokens whose probability changed most: {c.before.model} → {run.model}",
                                     show=show)
            final.append((tmp, base + '_tokens.png'))
        for tmp, path in final:
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
    return [path for _, path in final]


# -----------------------------------------------------------------------------

def main():
    if (start, num_samples, max_new_tokens) != ('\n', 10, 500):
        print("note: start, num_samples and max_new_tokens are sample.py settings; eval.py scores the pairs of "
              f"{eval_data} and does not use them")
    if compare_to and compare_init_from:
        raise ValueError("give either --compare_to (an earlier results file) or --compare_init_from (a model), not both")
    if compare_init_from == 'resume':
        raise ValueError("--compare_init_from=resume would load the same out_dir as init_from; give the checkpoint's "
                         "folder or file instead (e.g. --compare_init_from=out/ckpt.pt)")
    if join not in JOIN_MODES:
        raise ValueError(f"join={join!r}: use one of {', '.join(JOIN_MODES)}")
    t0 = time.time()
    # everything that can be checked before loading a model is checked first
    check_sampling(temperature, top_k, top_p)
    read_pairs(eval_data)
    if val_data:
        check_val_path(val_data)
    before = read_results(compare_to) if compare_to else None
    kw = dict(join=join, batch_size=batch_size, temperature=temperature, top_k=top_k, top_p=top_p)
    ld = load_model(init_from, out_dir, device, dtype, compile, seed=seed)
    print(f"model: {ld.source} on {ld.device} ({ld.dtype})")
    run = eval(eval_data, ld, verbose=verbose, **kw)
    models = [(run, ld)]
    if compare_init_from:
        ld0 = load_model(compare_init_from, out_dir, device, dtype, compile, seed=seed)
        print(f"\nbefore model: {ld0.source} on {ld0.device} ({ld0.dtype})")
        before = eval(eval_data, ld0, verbose=verbose, **kw)
        models.insert(0, (before, ld0))
    c = compare(before, run) if before is not None else None  # same pairs? checked before the slow part
    if val_data:
        for r, m in models:
            ids = read_val_ids(val_data, m.tok, val_tokens)
            t1 = time.time()
            r.val = evaluate_val(m.model, m.tok, ids, val_data, val_stride, batch_size, m.ctx)
            print(f"\n{r.model}: held-out data scored in {time.time() - t1:.1f}s")
    if c is None and run.val is not None:
        print('\n' + val_report([('model', run)]))
    if c is not None:
        print('\n' + compare_report(c, verbose))
    paths = write_results(run, c, results_dir, name or default_name(init_from, out_dir), show)
    print(f"\nwrote {', '.join(paths)} ({time.time() - t0:.1f}s)")
    if show:
        import plots
        plots.show_windows()  # last: every file is written and every number printed


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
