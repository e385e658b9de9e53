"""
Text into nanoGPT's data files: train.bin / val.bin (+ meta.pkl or tokenizer.json), staged and renamed as a set.

prepare() is what prepare_bin.py runs (its docstring says what the files hold and how the text is split);
prepare_text() is the char / trained-BPE path, which must see the whole train split first.
"""

import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, asdict
from datetime import datetime, timezone

import numpy as np

from nanoprobs import atomic
from nanoprobs.textsource import (PIECE_CHARS, PrepareError, Source, dataset_pieces, default_name, file_pieces,
                                  load_hf_dataset, resolve_inputs)

INFO = 'prepare_info.json'
DOC_SEPS = ('blank_line', 'file')
TOKENIZERS = ('gpt2', 'char', 'bpe')
VOCAB_FILES = {'char': 'meta.pkl', 'bpe': 'tokenizer.json'}


@dataclass
class Result:
    out_dir: str
    sources: list = field(default_factory=list)
    documents: int = 0
    bytes: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    seconds: float = 0.0

    @property
    def mb_per_s(self):
        return self.bytes / 1e6 / max(self.seconds, 1e-9)



# -----------------------------------------------------------------------------
# tokenizing and writing

def gpt2_encoding():
    """tiktoken's GPT-2 encoding (tokenizer.py loads it); missing files are a PrepareError, one line."""
    from nanoprobs.tokenizer import LoadError, gpt2_encoding as load_encoding
    try:
        return load_encoding()
    except LoadError as e:
        raise PrepareError(str(e)) from None


def _encode(enc, batch):
    """One job for a tokenizer thread: pieces -> uint16 ids with <|endoftext|> after each document,
    and the token count per source. tiktoken releases the GIL while it works."""
    arrays, counts = [], {}
    eot = np.array([enc.eot_token], dtype=np.uint16)
    for text, ends_doc, si in batch:
        if hasattr(enc, 'encode_to_numpy'):  # newer tiktoken: no Python list of ints on the way
            ids = enc.encode_to_numpy(text, disallowed_special=()).astype(np.uint16)
        else:
            ids = np.array(enc.encode_ordinary(text), dtype=np.uint16)
        arrays.append(ids)
        if ends_doc:
            arrays.append(eot)
        counts[si] = counts.get(si, 0) + len(ids) + ends_doc
    return np.concatenate(arrays) if arrays else np.zeros(0, np.uint16), counts


def encode_to_file(pieces, path, enc, sources, num_threads, piece_chars=PIECE_CHARS):
    """Tokenize the pieces on num_threads threads, in order, appending the ids to `path`. Returns the
    token count. At most 2*num_threads batches are in flight, so memory stays bounded."""
    def batches():
        batch, size = [], 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece[0])
            if size >= piece_chars:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    n = 0
    pool = ThreadPoolExecutor(num_threads)
    try:
        with open(path, 'wb') as f:
            inflight = deque()

            def write_oldest():
                nonlocal n
                ids, counts = inflight.popleft().result()
                ids.tofile(f)
                n += len(ids)
                for si, c in counts.items():
                    sources[si].tokens += c

            for batch in batches():
                inflight.append(pool.submit(_encode, enc, batch))
                if len(inflight) >= 2 * num_threads:
                    write_oldest()
            while inflight:
                write_oldest()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return n


def _move_tail(src, dst, start, itemsize=2, chunk=1 << 24):
    """Move items [start:] of the flat file src into dst (copy in chunks, then truncate src)."""
    with open(src, 'rb') as fin, open(dst, 'wb') as fout:
        fin.seek(start * itemsize)
        while block := fin.read(chunk):
            fout.write(block)
    os.truncate(src, start * itemsize)


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


@contextmanager
def staged(out_dir, names):
    """Temporary files {name: path} in out_dir for the block to write; when it ends without error they are
    renamed into place (atomic.staged), else (an error, Ctrl-C, kill) removed with any folder this made:
    nothing half-written stays, and the files already there are unchanged. An operating-system error (a
    full disk, a folder that cannot be written) becomes one PrepareError naming the path and the cause."""
    made = []  # folders this creates, deepest first, removed again if it fails
    d = os.path.abspath(out_dir)
    while not os.path.exists(d):
        made.append(d)
        d = os.path.dirname(d)
    try:
        os.makedirs(out_dir, exist_ok=True)
        remove_stale_tmp(out_dir)
        with atomic.staged([os.path.join(out_dir, k) for k in names]) as tmps:
            yield {k: tmps[os.path.join(out_dir, k)] for k in names}
    except BaseException as e:
        for d in made:
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        if isinstance(e, OSError):
            raise PrepareError(f"cannot write {atomic.final_path(e.filename or out_dir)}: {e.strerror or e}; the files "
                               f"already in {out_dir} are unchanged: free some space or choose another "
                               "--out_dir") from None
        raise


def remove_stale_tmp(out_dir):
    """Delete the temporary files of runs that were killed (kill -9, a power loss) and so never cleaned
    up; those of a process still running are left alone (atomic.remove_stale)."""
    for tmp, _ in atomic.remove_stale(out_dir):
        print(f"removed {tmp}: left by an earlier run that was killed")


def prepare(input='', dataset='', dataset_config='', split='train', text_field='text', out_dir='',
            val_fraction=0.1, doc_sep='blank_line', block_size=1024, num_threads=0,
            piece_chars=PIECE_CHARS, show_progress=True, extra=None, tokenizer='gpt2', vocab_size=4096,
            bpe_regex=True, char_unk='', text_split=False):
    """Tokenize the input into out_dir/train.bin, val.bin and prepare_info.json (plus the dict `extra`, e.g.
    where the text came from). Returns a Result. Raises PrepareError on bad input or settings, leaving
    nothing behind.
    text_split=True splits GPT-2 data in the text too (as char and bpe always do), so that every tokenizer
    gets the identical val text (tools/compare_tokenizers.py)."""
    if bool(input) == bool(dataset):
        raise PrepareError("set one of --input=FILE|FOLDER|GLOB or --dataset=NAME" if not input else
                           "set --input or --dataset, not both")
    if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
        raise PrepareError(f"val_fraction={val_fraction!r} must be between 0 and 1 (exclusive), "
                           "e.g. --val_fraction=0.1")
    if block_size < 1:
        raise PrepareError(f"block_size={block_size!r} must be a positive number of tokens, "
                           "e.g. --block_size=1024")
    if doc_sep not in DOC_SEPS:
        raise PrepareError(f"doc_sep={doc_sep!r} must be one of {', '.join(DOC_SEPS)}")
    if num_threads < 0:
        raise PrepareError(f"num_threads={num_threads!r} must be >= 0 (0 = all cores)")
    num_threads = num_threads or _cores()
    if tokenizer not in TOKENIZERS:
        raise PrepareError(f"tokenizer={tokenizer!r} must be one of {', '.join(TOKENIZERS)}")
    if tokenizer == 'bpe' and not 257 < vocab_size <= 65536:
        raise PrepareError(f"vocab_size={vocab_size} must be above 257 (256 bytes + <|endoftext|>) "
                           "and at most "
                           "65,536 (token ids are stored as uint16), e.g. --vocab_size=4096")
    if char_unk and len(char_unk) != 1:
        raise PrepareError(f"char_unk={char_unk!r} must be a single character, e.g. --char_unk='?'")

    if input:
        paths = resolve_inputs(input)
        sources = [Source(p) for p in paths]
    else:
        ds = load_hf_dataset(dataset, dataset_config, split)
        if text_field not in ds.column_names:
            raise PrepareError(f"dataset {dataset!r} has no column {text_field!r}; "
                               f"its columns are {ds.column_names}: "
                               "set --text_field")
        sources = [Source(f"{dataset}{':' + dataset_config if dataset_config else ''} "
                          f"[{split}].{text_field}")]
    out_dir = out_dir or os.path.join('data', default_name(input, dataset))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PrepareError(f"--out_dir={out_dir!r} is a file; give a folder")
    if tokenizer != 'gpt2' or text_split:
        pieces = (file_pieces(paths, sources, doc_sep, piece_chars) if input else
                  dataset_pieces(ds, text_field, sources[0], piece_chars))
        return prepare_text(pieces, sources, out_dir, tokenizer, val_fraction, block_size, vocab_size,
                            bpe_regex,
                            char_unk, info={'doc_sep': 'dataset row' if dataset else doc_sep,
                                            'dataset': (dict(name=dataset, config=dataset_config, split=split,
                                                             text_field=text_field) if dataset else None),
                                            **(extra or {})})
    enc = gpt2_encoding()

    from tqdm import tqdm
    res = Result(out_dir=out_dir, sources=sources)
    t0 = time.time()
    with staged(out_dir, ('train.bin', 'val.bin', INFO)) as tmp:
        if input:
            total = sum(os.path.getsize(p) for p in paths)
            print(f"reading {len(paths)} file{'s' * (len(paths) > 1)} ({total / 1e6:,.2f} MB): "
                  f"{', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''}")
            bar = tqdm(total=total, unit='B', unit_scale=True, desc='tokenizing', disable=not show_progress)
            pieces = file_pieces(paths, sources, doc_sep, piece_chars, progress=bar.update)
        else:
            print(f"reading {len(ds):,} rows of {sources[0].name}")
            bar = tqdm(total=len(ds), unit=' docs', unit_scale=True, desc='tokenizing',
                       disable=not show_progress)
            pieces = dataset_pieces(ds, text_field, sources[0], piece_chars, progress=bar.update)
        with bar:
            n = encode_to_file(pieces, tmp['train.bin'], enc, sources, num_threads, piece_chars)
        res.seconds = time.time() - t0
        res.documents = sum(s.documents for s in sources)
        res.bytes = sum(s.bytes for s in sources)
        if not res.documents:
            what = input if input else sources[0].name
            raise PrepareError(f"no text in {what!r}: the input is empty or only blank lines")
        res.val_tokens = max(1, round(n * val_fraction))
        res.train_tokens = n - res.val_tokens
        need = block_size + 2  # tokens per split for one (x, y) pair of block_size tokens, with room to spare
        if n < 2 * need:
            raise PrepareError(f"the input has only {n:,} tokens in all, but training with "
                               f"block_size={block_size} needs more than {block_size + 1:,} in each of "
                               "train and val: add text or lower --block_size")
        for name, k, fix in (('train', res.train_tokens, 'lower'), ('val', res.val_tokens, 'raise')):
            if k < need:
                raise PrepareError(f"{name}.bin would hold only {k:,} of the {n:,} tokens "
                                   f"(val_fraction={val_fraction}), but training with "
                                   f"block_size={block_size} needs more than {block_size + 1:,}: "
                                   f"{fix} --val_fraction or lower --block_size")
        _move_tail(tmp['train.bin'], tmp['val.bin'], res.train_tokens)
        info = {
            'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'script': 'prepare_bin.py',
            'tokenizer': f"tiktoken gpt2 (tiktoken {_version('tiktoken')})",
            'vocab_size': enc.n_vocab,
            'dtype': 'uint16',
            'eot_token': enc.eot_token,
            'documents_end_with_eot': True,
            'doc_sep': 'dataset row' if dataset else doc_sep,
            'sources': [asdict(s) for s in sources],
            'dataset': (dict(name=dataset, config=dataset_config, split=split, text_field=text_field)
                        if dataset else None),
            'bytes': res.bytes,
            'documents': res.documents,
            'tokens': {'total': n, 'train': res.train_tokens, 'val': res.val_tokens},
            'split': {'val_fraction': val_fraction,
                      'rule': 'val.bin is the last val_fraction of the token stream'},
            'block_size': block_size,
            'seconds': round(res.seconds, 3),
            'mb_per_s': round(res.mb_per_s, 2),
            'num_threads': num_threads,
            **(extra or {}),
        }
        with open(tmp[INFO], 'w', encoding='utf-8') as f:
            json.dump(info, f, indent=2, ensure_ascii=False)
            f.write('\n')

    print(f"tokenized {res.bytes / 1e6:,.2f} MB in {res.seconds:.2f} s: {res.mb_per_s:.1f} MB/s "
          f"on {num_threads} thread{'s' * (num_threads > 1)}")
    print(f"{res.documents:,} document{'s' * (res.documents != 1)}, {n:,} tokens "
          f"(including {res.documents:,} <|endoftext|>)")
    print(f"train.bin has {res.train_tokens:,} tokens")
    print(f"val.bin has {res.val_tokens:,} tokens (the last {res.val_tokens / n:.1%})")
    print(f"wrote {', '.join(os.path.join(out_dir, k) for k in ('train.bin', 'val.bin', INFO))}")
    for f in VOCAB_FILES.values():
        if os.path.exists(os.path.join(out_dir, f)):
            print(f"note: {os.path.join(out_dir, f)} (a vocabulary from another run) would make "
                  "sample.py decode these GPT-2 ids with it: delete it")
    return res


# -----------------------------------------------------------------------------
# char and trained BPE: split the text, make the vocabulary from train, encode both

def split_docs(docs, val_fraction):
    """[(text, ends_document, source_index)] -> (train, val) in the same form: val is the last val_fraction
    of the characters, starting at a line start (a document cut in two ends train without <|endoftext|>)."""
    total = sum(len(t) for t, _, _ in docs)
    cut = round(total * (1 - val_fraction))
    pos = 0
    for i, (t, ends, si) in enumerate(docs):
        if pos + len(t) > cut:
            off = cut - pos
            nl = t.rfind('\n', 0, off) if off else -1  # back to the line's start: no word is cut in two
            off = nl + 1 if nl != -1 else off
            head = [(t[:off], False, si)] if off else []
            return docs[:i] + head, [(t[off:], ends, si)] + docs[i + 1:]
        pos += len(t)
    return docs, []


def make_tokenizer(kind, train, val, vocab_size, bpe_regex, char_unk):
    """(Tokenizer, file name, write(path)) for the vocabulary made from the train texts."""
    from nanoprobs import tokenizer as tk
    if kind == 'gpt2':
        return tk.gpt2_tokenizer(), None, None
    text = [t for t, _, _ in train]
    if kind == 'char':
        known = set().union(*map(set, text))
        counts = {}
        for t, _, _ in val:
            for c in set(t) - known:
                counts[c] = counts.get(c, 0) + t.count(c)
        if counts and not char_unk:
            shown = ', '.join(f"{c!r} ({n}x)" for c, n in sorted(counts.items(), key=lambda x: -x[1])[:10])
            raise PrepareError(f"{len(counts)} character{'s' * (len(counts) > 1)} occur only in the "
                               f"val split: {shown}{' ...' if len(counts) > 10 else ''}. "
                               "The vocabulary comes from train, so the model "
                               "could not read them: map them to an unknown symbol with --char_unk='?', "
                               "or move text "
                               "with them into train (a smaller --val_fraction)")
        if counts:
            print(f"note: {sum(counts.values()):,} characters of val ({len(counts)} kinds) "
                  f"become {char_unk!r}")
        meta = tk.char_meta(''.join(text), char_unk)
        return tk.char_from_meta(meta, 'meta.pkl'), 'meta.pkl', lambda p: tk.save_meta(meta, p)
    # bpe: whole documents with the regex (it splits them anyway); line by line without it, since BPE
    # training rescans a sequence at every merge and a whole book as one sequence would take hours
    texts = text if bpe_regex else (line for t in text for line in t.splitlines(keepends=True))
    hf = tk.train_bpe(texts, vocab_size, bpe_regex)
    return tk.bpe_tokenizer(hf.to_str(), 'tokenizer.json'), 'tokenizer.json', hf.save


def prepare_text(pieces, sources, out_dir, kind, val_fraction, block_size, vocab_size=4096, bpe_regex=True,
                 char_unk='', info=None):
    """prepare() for a tokenizer made from the train split (or text_split=True): read everything, split
    the text, make the vocabulary, encode, check, write atomically."""
    t0 = time.time()
    docs, cur = [], []
    for text, ends, si in pieces:  # whole documents, so a document is encoded in one piece
        cur.append(text)
        if ends:
            docs.append((''.join(cur), True, si))
            cur = []
    if not docs:
        raise PrepareError(f"no text in {sources[0].name!r}: the input is empty or only blank lines")
    train, val = split_docs(docs, val_fraction)
    print(f"{len(docs):,} documents; split in the text: "
          f"{sum(len(t) for t, _, _ in train):,} characters train, "
          f"{sum(len(t) for t, _, _ in val):,} val")
    tok, vocab_file, write_vocab = make_tokenizer(kind, train, val, vocab_size, bpe_regex, char_unk)
    if tok.vocab_size > 65536:
        raise PrepareError(f"the {kind} vocabulary has {tok.vocab_size:,} tokens, "
                           "more than uint16 ids can hold "
                           "(65,536): lower --vocab_size")
    print(f"tokenizer: {kind}, {tok.vocab_size:,} tokens")
    res = Result(out_dir=out_dir, sources=sources, documents=len(docs), bytes=sum(s.bytes for s in sources))
    arrays = {}
    for name, part in (('train', train), ('val', val)):
        ids = tok.encode_batch([t for t, _, _ in part])
        for (t, ends, si), x in zip(part, ids):
            sources[si].tokens += len(x) + ends
        arr = [np.array(x + [tok.eot] * ends, dtype=np.int64) for (t, ends, si), x in zip(part, ids)]
        arr = np.concatenate(arr) if arr else np.zeros(0, np.int64)
        assert not len(arr) or arr.max() < 65536, "ids checked against the vocabulary size above"
        arrays[name] = arr.astype(np.uint16)
    res.train_tokens, res.val_tokens = len(arrays['train']), len(arrays['val'])
    n = res.train_tokens + res.val_tokens
    need = block_size + 2
    for name, k, fix in (('train', res.train_tokens, 'lower'), ('val', res.val_tokens, 'raise')):
        if k < need:
            raise PrepareError(f"{name}.bin would hold only {k:,} of the {n:,} {kind} tokens (val_fraction="
                               f"{val_fraction}), but training with block_size={block_size} needs more than "
                               f"{block_size + 1:,}: {fix} --val_fraction, lower --block_size or add text")
    res.seconds = time.time() - t0
    meta = {
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'script': 'prepare_bin.py',
        'tokenizer': kind if kind != 'gpt2' else f"tiktoken gpt2 (tiktoken {_version('tiktoken')})",
        'vocab_size': tok.vocab_size,
        **({'bpe_regex': bpe_regex, 'library': f"tokenizers {_version('tokenizers')}"}
           if kind == 'bpe' else {}),
        **({'char_unk': char_unk} if kind == 'char' else {}),
        'vocab_file': vocab_file,
        'dtype': 'uint16',
        'eot_token': tok.eot,
        'documents_end_with_eot': True,
        'sources': [asdict(s) for s in sources],
        'bytes': res.bytes,
        'documents': res.documents,
        'tokens': {'total': n, 'train': res.train_tokens, 'val': res.val_tokens},
        'split': {'val_fraction': val_fraction,
                  'rule': 'val is the last val_fraction of the text (characters), '
                  'from a line start; the vocabulary is made from train only',
                  'train_chars': sum(len(t) for t, _, _ in train),
                  'val_chars': sum(len(t) for t, _, _ in val)},
        'block_size': block_size,
        'seconds': round(res.seconds, 3),
        **(info or {}),
    }
    names = ['train.bin', 'val.bin', INFO] + ([vocab_file] if vocab_file else [])
    with staged(out_dir, names) as tmp:
        arrays['train'].tofile(tmp['train.bin'])
        arrays['val'].tofile(tmp['val.bin'])
        with open(tmp[INFO], 'w', encoding='utf-8') as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write('\n')
        if vocab_file:
            write_vocab(tmp[vocab_file])
    for other in VOCAB_FILES.values():  # a stale vocabulary of another kind would be picked up by the loaders
        if other != vocab_file and os.path.exists(os.path.join(out_dir, other)):
            os.remove(os.path.join(out_dir, other))
            print(f"removed {os.path.join(out_dir, other)}: a vocabulary from an earlier run of another kind")
    print(f"{res.documents:,} documents, {n:,} tokens; train.bin has {res.train_tokens:,}, "
          f"val.bin {res.val_tokens:,}; "
          f"{res.bytes / max(n, 1):.2f} bytes per token")
    print(f"wrote {', '.join(os.path.join(out_dir, k) for k in names)}")
    return res


def _version(pkg):
    from importlib.metadata import version
    try:
        return version(pkg)
    except Exception:
        return 'unknown'
