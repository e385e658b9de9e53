"""
Prompt/response pairs: eval_data.json and earlier results read and validated, pairs joined and tokenized.

Every JSON file goes through read_json, so a broken file gets the same one-line message naming the spot.
"""
import json
import math
import os
import re
import sys

from nanoprobs.tokenizer import byte_text
from nanoprobs.scores import RESULTS_FORMAT, EvalDataError, EvalRun

JOIN_MODES = ('auto', 'none', 'space')


def read_json(path, missing):
    """The JSON value in path, or EvalDataError naming the file, the spot and the fix (`missing`: absent)."""
    if not os.path.exists(path):
        raise EvalDataError(f"{path} does not exist: {missing}")
    try:
        with open(path, encoding='utf-8-sig') as f:  # a UTF-8 byte-order mark (Windows editors) is fine
            return json.load(f)
    except json.JSONDecodeError as e:
        raise EvalDataError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
                            "Fix that spot (a trailing comma or an unescaped \" inside a string are "
                            "the usual causes)") from None
    except UnicodeDecodeError as e:
        raise EvalDataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                            "save it as UTF-8") from None
    except RecursionError:  # json's reader recurses once per [ or {
        raise EvalDataError(f"{path} nests lists or objects deeper than can be read (about "
                            f"{sys.getrecursionlimit()} levels): it is not a file of pairs or results; write "
                            "pairs as a flat list [{\"prompt\": ..., \"response\": ...}, ...]") from None


LONE_SURROGATE = re.compile('[\ud800-\udfff]')  # half of a UTF-16 pair: no text, no UTF-8, no tokens


def check_text(text, where):
    """text is real text: no lone surrogate (a JSON escape such as \\ud800 without its other half)."""
    m = LONE_SURROGATE.search(text)
    if m:
        raise EvalDataError(f"{where} holds a lone surrogate \\u{ord(m.group()):04x} at character {m.start()}, "
                            "half of a UTF-16 pair that is no character; write the character itself, or both "
                            "halves of its escape (an emoji is two: \\ud83d\\ude00)")


def read_pairs(path):
    """The pairs of a JSON file as [{'prompt', 'response', 'extra'}], or EvalDataError naming the problem."""
    data = read_json(path, 'write a JSON list of {"prompt": ..., "response": ...} pairs there, or point '
                           '--eval_data at one')
    return check_pairs(data, path)


def check_pairs(data, path='eval_data'):
    """Validate loaded JSON (or a list built in Python). An entry is {"prompt": str, "response": str, ...}
    (other keys kept as 'extra') or [prompt, response]."""
    if not isinstance(data, list):
        raise EvalDataError(f"{path} must hold a JSON list of pairs "
                            f"[{{\"prompt\": ..., \"response\": ...}}, ...], found a {type(data).__name__}")
    if not data:
        raise EvalDataError(f"{path} holds an empty list: add at least one prompt/response pair")
    pairs = []
    for i, e in enumerate(data, 1):
        where = f"{path}: pair {i} (entry {i} of the list)"
        if isinstance(e, list) and len(e) == 2:
            e = {'prompt': e[0], 'response': e[1]}
        if not isinstance(e, dict):
            raise EvalDataError(f"{where} is a {type(e).__name__}; "
                                "write it as {\"prompt\": \"...\", \"response\": \"...\"}")
        for key in ('prompt', 'response'):
            if key not in e:
                raise EvalDataError(f"{where} has no \"{key}\" key (it has {sorted(e)}); add one")
            if not isinstance(e[key], str):
                raise EvalDataError(f"{where}: \"{key}\" must be a string, "
                                    f"got {type(e[key]).__name__} {e[key]!r}")
            check_text(e[key], f"{where}: \"{key}\"")
        if e['response'] == '':
            raise EvalDataError(f"{where} has an empty response: there is nothing to score. "
                                "Write the continuation to score, or remove the pair")
        extra = {k: v for k, v in e.items() if k not in ('prompt', 'response')}
        check_text(json.dumps(extra, ensure_ascii=False), f"{where}: the rest of the pair")  # results keep it
        pairs.append({'prompt': e['prompt'], 'response': e['response'], 'extra': extra})
    return pairs


def read_results(path):
    """An EvalRun from a results/eval_<name>.json written by an earlier run (the "before" of --compare_to)."""
    d = read_json(path, "--compare_to needs the results of an earlier run: run eval.py on the 'before' model "
                        "first (it writes results/eval_<name>.json), or use --compare_init_from=<model>")
    if not isinstance(d, dict) or d.get('format') != RESULTS_FORMAT:
        raise EvalDataError(f"--compare_to={path} is not a results file of eval.py (format "
                            f"{d.get('format') if isinstance(d, dict) else type(d).__name__!r}, expected "
                            f"{RESULTS_FORMAT!r}); give it a results/eval_<name>.json")
    check_results(d, f"--compare_to={path}")
    return EvalRun.from_dict(d, source=path)


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# the list fields of a scored pair in a results file: (check of one entry, what an entry should be)
_LISTS = {'prompt_ids': (lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0, 'a token id'),
          'response_ids': (lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0, 'a token id'),
          'tokens': (lambda x: isinstance(x, str), 'a string'),
          'expected': (lambda x: isinstance(x, str), 'a string'),
          'ranks': (lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 1, 'a rank >= 1'),
          # log-probs are <= 0; null is probability 0 (JSON has no -inf); 1e-6: float rounding of log(1)
          'logprobs': (lambda x: x is None or _number(x) and x <= 1e-6, 'a log-prob (a number <= 0 or null)'),
          'sample_logprobs': (lambda x: x is None or _number(x) and x <= 1e-6,
                              'a log-prob (a number <= 0 or null)')}


def check_results(d, where):
    """Every field EvalRun.from_dict reads, checked, so that a hand-edited results file gets one line
    naming the pair, the field and the entry instead of a TypeError deep in the report."""
    def bad(what):
        return EvalDataError(f"{where}: {what}; fix that entry or re-create the file by running eval.py "
                             "on that model again")
    if not isinstance(d.get('model'), str):
        raise bad(f'"model" must be a string, got {d.get("model")!r}')
    if not isinstance(d.get('settings', {}), dict):
        raise bad('"settings" must be an object {...}')
    if not isinstance(d.get('pairs'), list) or not d['pairs']:
        raise bad(f'"pairs" must be a non-empty list of scored pairs, got {str(d.get("pairs"))[:40]!r}')
    for i, p in enumerate(d['pairs'], 1):
        if not isinstance(p, dict):
            raise bad(f"pair {i} is a {type(p).__name__}, not an object {{...}}")
        for key in ('index', 'prompt', 'response', *_LISTS):
            if key not in p and key != 'sample_logprobs':
                raise bad(f'pair {i} has no "{key}"')
        if not (isinstance(p['index'], int) and not isinstance(p['index'], bool)):
            raise bad(f'pair {i}: "index" must be an integer, got {p["index"]!r}')
        for key in ('prompt', 'response', 'note'):
            if not isinstance(p.get(key, ''), str):
                raise bad(f'pair {i}: "{key}" must be a string, got {p[key]!r}')
        j = p.get('joined')
        if j is not None and not (isinstance(j, list) and len(j) == 2 and all(isinstance(x, str) for x in j)):
            raise bad(f'pair {i}: "joined" must be null or [prompt, response] strings, got {j!r}')
        if not isinstance(p.get('extra', {}), dict):
            raise bad(f'pair {i}: "extra" must be an object {{...}}')
        n = len(p['response_ids']) if isinstance(p['response_ids'], list) else 0
        for key, (ok, what) in _LISTS.items():
            xs = p.get(key)
            if key == 'sample_logprobs' and xs is None:
                continue
            if not isinstance(xs, list):
                raise bad(f'pair {i}: "{key}" must be a list, got {str(xs)[:40]!r}')
            for k, x in enumerate(xs):
                if not ok(x):
                    raise bad(f'pair {i}: "{key}"[{k}] is {str(x)[:40]!r}, not {what}')
            if key != 'prompt_ids' and len(xs) != n:
                raise bad(f'pair {i}: "{key}" has {len(xs)} entries for {n} response tokens')
        if n == 0 or not p['prompt_ids']:
            raise bad(f'pair {i}: "{"response_ids" if n == 0 else "prompt_ids"}" is empty')
    v = d.get('val')
    if v:
        if not isinstance(v, dict):
            raise bad('"val" must be null or an object {...}')
        for key in ('tokens', 'bytes', 'top1', 'top5', 'window', 'stride'):
            x, least = v.get(key), 0 if key in ('top1', 'top5') else 1
            if not (isinstance(x, int) and not isinstance(x, bool) and x >= least):
                raise bad(f'"val": "{key}" is {x!r}, not a whole number >= {least}')
        if not (_number(v.get('nll')) and v['nll'] >= 0):
            raise bad(f'"val": "nll" is {v.get("nll")!r}, not a number >= 0 (summed negative log-likelihood)')
        if not isinstance(v.get('path'), str):
            raise bad(f'"val": "path" must be a string, got {v.get("path")!r}')


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
        raise EvalDataError(f"join={mode!r}: use one of {', '.join(JOIN_MODES)}")
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
        head, tail = byte_text(b[:plen - n]), byte_text(b[plen - n:])  # '<E2 80>' for part of a character
        note = (f"token {tok.token_text(ids[k])!r} spans the join (prompt's {head!r} + response's {tail!r}); "
                f"it is scored as part of the response, after the {k} prompt token{'s' if k != 1 else ''} "
                "before it" + (" (after <|endoftext|>)" if k == 0 else ''))
    elif not prompt:
        note = "empty prompt: the response is scored after <|endoftext|>, as the start of a document"
    elif ids[:k] != tok.encode(prompt):
        note = "the prompt tokenizes differently before this response than alone; its joint tokens are used"
    context = ids[:k]
    if not context:
        if tok.eot is None:
            raise EvalDataError(f"an empty prompt needs an <|endoftext|> token to start from, and {tok.name} "
                                "has none; give the pair a prompt")
        context = [tok.eot]
    return context, ids[k:], note
