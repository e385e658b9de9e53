"""
Checks of what a person hands in, in one place: model sizes (settings or a checkpoint's model_args),
weights that are not numbers, files of token ids, seeds, and whether a job fits in memory. Each check
raises an InputError: one line naming the file, key or value, and the fix.
"""

import os
import re

from configurator import UserError

SEED_MAX = 2 ** 32 - 1  # numpy's limit (train.py seeds numpy); every script takes the same seeds


class InputError(UserError, ValueError):
    """Bad input (a setting, a file): the message names it and the fix. A UserError (one line, exit 1)
    and a ValueError (what load.py's callers catch)."""


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# -----------------------------------------------------------------------------
# model sizes

SIZE_KEYS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size')


def check_model_args(args, where=None):
    """The architecture in args (GPTConfig's keys) makes a GPT: positive whole sizes, n_head dividing
    n_embd, bias a bool, dropout in [0, 1). where=None: the values are command-line settings (--n_head=3);
    else they are the model_args of the checkpoint at `where`."""
    if where is not None and not isinstance(args, dict):
        raise InputError(f"{where}: model_args is a {type(args).__name__}, not a dict of the model's "
                         "sizes; the checkpoint is damaged or was edited: use another checkpoint")

    def bad(key, why, fix):
        value = args.get(key)
        if where is None:
            return InputError(f"--{key}={value!r} {why}; {fix}")
        return InputError(f"{where}: model_args {key}={value!r} {why}; the checkpoint is damaged or its "
                          "model_args were edited (they must describe its weights): use another checkpoint")

    for key in SIZE_KEYS:
        if key in args and not (_int(args[key]) and args[key] >= 1):
            raise bad(key, "must be a whole number of at least 1", f"e.g. --{key}=4")
    if 'n_head' in args and 'n_embd' in args and args['n_embd'] % args['n_head']:
        e, h = args['n_embd'], args['n_head']
        divisors = [d for d in range(1, min(e, 64) + 1) if e % d == 0]
        raise bad('n_head', f"does not divide n_embd={e} (each head gets n_embd / n_head channels)",
                  f"use a divisor of {e}, e.g. --n_head={max(d for d in divisors if d <= h)} "
                  f"({', '.join(map(str, divisors))}), or change --n_embd")
    if 'bias' in args and not isinstance(args['bias'], bool):
        raise bad('bias', "must be True or False", "e.g. --bias=False")
    d = args.get('dropout', 0.0)
    if not (isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d < 1):
        raise bad('dropout', "must be a number at least 0 and less than 1", "e.g. --dropout=0.1")


def n_params(args):
    """Parameters of the GPT that args describe (tied embedding counted once), without building it."""
    L, C, V, T = args['n_layer'], args['n_embd'], args['vocab_size'], args['block_size']
    bias = args.get('bias', True)
    per_block = 12 * C * C + (13 * C if bias else 2 * C)  # attention and MLP matrices, biases, 2 LayerNorms
    return L * per_block + V * C + T * C + (2 if bias else 1) * C


def check_args_fit_weights(args, state_dict, where):
    """A checkpoint's model_args agree with the shapes of its weights (checked before any model is built:
    edited model_args of 1e9 layers must not allocate 1e9 layers)."""
    def shape(key):
        for k in (key, '_orig_mod.' + key):
            if k in state_dict and hasattr(state_dict[k], 'shape'):
                return tuple(state_dict[k].shape)
        return None

    blocks = {int(m.group(1)) for k in state_dict
              for m in [re.match(r'(?:_orig_mod\.)?transformer\.h\.(\d+)\.', k)] if m}
    found = {'n_layer': len(blocks)}
    wte, wpe = shape('transformer.wte.weight'), shape('transformer.wpe.weight')
    if wte:
        found['vocab_size'], found['n_embd'] = wte
    if wpe:
        found['block_size'] = wpe[0]
    for key, n in found.items():
        if args.get(key) != n:
            raise InputError(f"{where}: model_args {key}={args.get(key)!r} but its weights hold {n}; the "
                             "checkpoint is damaged or its model_args were edited: set model_args "
                             f"{key}={n}, or use another checkpoint")


def check_finite(model, where):
    """Every weight of model is a number (not NaN or inf): such a model has no probabilities to show."""
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            # a NaN or inf makes the sum non-finite: one pass, no (N,) bool tensor (10x faster); only then
            # is every value looked at, since finite weights past ~1e34 can overflow the sum too
            if not bool(torch.isfinite(p.sum())) and not bool(torch.isfinite(p).all()):
                raise InputError(f"{where}: the weights hold NaN or infinite values ({name}, among others "
                                 "perhaps): the training that wrote it diverged or the file is damaged; "
                                 "use an earlier checkpoint")


# -----------------------------------------------------------------------------
# pickles

def unpickling_error(path, e, what):
    """The one line for a pickle that torch.load(weights_only=True) refused: code it would run (named, and
    never with advice to load it anyway), or damage."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # "Unsupported global: GLOBAL io.open was not ..."
    named = re.search(r'GLOBAL (\S+?)[.]?(\s|$)', str(e))
    if not named:  # the unpickler met bytes it cannot read: damage, not code
        why = lines[-2] if len(lines) > 1 else lines[0] if lines else 'unreadable pickle'
        return InputError(f"{path} is not a readable {what} (truncated or corrupt?): {why}")
    return InputError(f"{path} holds Python objects beyond tensors and plain values, so it is not loaded "
                      f"(loading it would run code from the file): it names {named.group(1)}")


# -----------------------------------------------------------------------------
# token files, seeds

def check_bin(path, setting=None):
    """A .bin of uint16 token ids: a whole number of 2-byte ids. Returns how many it holds."""
    size = os.path.getsize(path)
    if size % 2:
        what = f"--{setting}={path}" if setting else str(path)
        raise InputError(f"{what} is {size:,} bytes, an odd number: a .bin holds 2-byte (uint16) token ids, "
                         "so it is cut short or is not a token file; write it again with prepare_bin.py")
    return size // 2


def check_ids_below(top, vocab_size, path, model='the model'):
    """top, the largest token id read from the file at path, is inside the vocabulary."""
    if top >= vocab_size:
        raise InputError(f"{path} holds token id {top}, outside {model}'s vocabulary of {vocab_size} "
                         "tokens: the data was made with another tokenizer; make it again with "
                         "prepare_bin.py (--tokenizer as the model's), or train on a matching model")


def check_seed(seed, count=1, key='seed'):
    """seed (and the seed + count - 1 that follow it) are valid seeds everywhere: 0 .. SEED_MAX."""
    top = SEED_MAX - (count - 1)
    if not _int(seed) or not 0 <= seed <= top:
        after = f" minus the {count - 1:,} seeds used after it" if count > 1 else ''
        raise InputError(f"--{key}={seed!r} must be a whole number from 0 to {top} (2**32 - 1, numpy's "
                         f"limit{after}); e.g. --{key}=1337")


# -----------------------------------------------------------------------------
# text files

def encoding_fix(path, head):
    """How to make the file at path, which starts with the bytes `head` and is not UTF-8, into UTF-8 text:
    UTF-16 (a byte-order mark, or NULs between letters) and binary files are told apart from 8-bit text."""
    q = f"'{path}'"
    if looks_utf16(head):
        return f"it is UTF-16 text: convert it with iconv -f utf-16 -t utf-8 {q} > fixed.txt"
    if head.count(0) > len(head) // 100 or sum(b < 9 or 13 < b < 32 for b in head) > len(head) // 10:
        return "it holds binary data (NUL or control bytes), not text: give a text file"
    return (f"convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8 {q} > fixed.txt, if it is Latin-1), or save "
            "it as UTF-8 in an editor")


def looks_utf16(head):
    """Whether bytes read from a file's start are UTF-16: a byte-order mark, or a NUL in every other byte
    (ASCII as UTF-16, which is valid UTF-8 full of NULs)."""
    if head[:2] in (b'\xff\xfe', b'\xfe\xff'):
        return True
    n = len(head) // 2
    odd, even = head[1::2].count(0), head[0::2].count(0)
    return n >= 4 and (odd > n // 2 and even < n // 8 or even > n // 2 and odd < n // 8)


def head_of(path, n=4096):
    """The first n bytes of the file at path (b'' if it cannot be read)."""
    try:
        with open(path, 'rb') as f:
            return f.read(n)
    except OSError:
        return b''


# -----------------------------------------------------------------------------
# memory

def gib(n):
    return f"{n / 2 ** 30:.1f} GB" if n >= 2 ** 29 else f"{n / 2 ** 20:.0f} MB"


def available_memory(device='cpu'):
    """Bytes that a new allocation on device can still get (CPU: MemAvailable, within a container's
    limit), or None when it cannot be told."""
    kind = str(device).split(':')[0]
    try:
        import torch
        if kind == 'cuda':
            return torch.cuda.mem_get_info(device)[0]
        if kind == 'mps':
            return torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory()
    except Exception:
        return None
    free = None
    try:
        with open('/proc/meminfo') as f:
            info = dict(line.split(':', 1) for line in f)
        free = int(info['MemAvailable'].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            free = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (ValueError, OSError, AttributeError):
            return None
    try:  # a cgroup v2 limit (a container, a job scheduler) can be far below the machine's memory
        with open('/sys/fs/cgroup/memory.max') as f:
            limit = f.read().strip()
        with open('/sys/fs/cgroup/memory.current') as f:
            used = int(f.read())
        if limit != 'max':
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def check_fits(need, device, what, fix):
    """Refuse a job that needs `need` bytes on device when less is available: one line saying how much
    `what` needs, how much there is, and `fix`."""
    have = available_memory(device)
    if have is not None and need > have:
        raise InputError(f"{what} needs about {gib(need)} of memory on {device}, and {gib(max(have, 0))} is "
                         f"free: it cannot fit; {fix}")
