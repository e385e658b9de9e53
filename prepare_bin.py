"""
Turn text into nanoGPT's data files: train.bin and val.bin, flat arrays of token ids (uint16), documents
separated by <|endoftext|>. train.py reads them from data/<name>/.

    python prepare_bin.py --input=stories.txt --out_dir=data/stories
    python prepare_bin.py --input=corpus/                  # every .txt file under the folder (recursive)
    python prepare_bin.py --input='books/**/*.txt'         # a glob (quote it so the shell leaves it alone)
    python prepare_bin.py --dataset=roneneldan/TinyStories --out_dir=data/tinystories   # Hugging Face hub
    python train.py --dataset=stories ...                  # then train on data/stories/{train,val}.bin
    python prepare_bin.py --input=stories.txt --tokenizer=char                 # characters: + meta.pkl
    python prepare_bin.py --input=stories.txt --tokenizer=bpe --vocab_size=4096  # own BPE: + tokenizer.json

Tokenizers. gpt2 (default): tiktoken's GPT-2 BPE, <|endoftext|> = 50256. char: one token per character of
the train split, written to meta.pkl in upstream's format (vocab_size, itos, stoi), <|endoftext|> the last
id; a character that occurs only in val is an error naming it, or becomes --char_unk if you set one.
bpe: a byte-level BPE trained with Hugging Face `tokenizers` on the train split (--vocab_size tokens,
--bpe_regex=True splits text with GPT-2's pattern first so no token crosses a word; False lets merges span
spaces), written to tokenizer.json. Every script finds these files through the checkpoint's dataset, and
train.py records the tokenizer in the checkpoint too.

Documents. Files are read in sorted order. In a text file a document ends at a blank line (one or more
empty or whitespace-only lines) and at the end of the file; --doc_sep=file makes each whole file one
document instead (for text where blank lines are only layout). Each row of a --dataset is one document.
Every document is followed by <|endoftext|>, as in upstream's openwebtext. Windows line endings become
\\n, a UTF-8 byte-order mark is dropped, and so are blank lines before a document and whitespace after it
(around a dataset row). Otherwise the text is kept as it is; "<|endoftext|>" written in it is ordinary text.

Split. val.bin is the last val_fraction of the token stream (rounded to whole tokens), train.bin the
rest, like upstream's shakespeare prepare.py does with characters. For char and bpe the tokenizer is made
from the train split, so the split is made in the text: val is the last val_fraction of the characters,
from the start of a line; this text is the same whichever tokenizer then encodes it. It is deterministic,
needs no second pass over the input, and for a corpus in book order it holds out the last books' text.
Each split must have more than block_size+1 tokens, or training could not draw a single (x, y) pair from it.

Streaming. The input is read line by line and cut into ~1 MB pieces (a long document is cut only between
lines where the cut cannot change its tokens); the pieces are tokenized by tiktoken on num_threads
threads while the next ones are read, and the ids are appended to the .bin on disk. Memory stays
bounded whatever the input size. Everything is written under temporary names and renamed at the end:
an error or Ctrl-C leaves no partial file. prepare_info.json records the sources, sizes, token counts,
the split and the tokenizer with its vocabulary size. (char and bpe read the whole text into memory first:
the tokenizer must see the train split before anything is encoded.)
"""

import glob
import json
import os
import re
import signal
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, asdict
from datetime import datetime, timezone

import numpy as np

from configurator import UserError, configure, run_main

# -----------------------------------------------------------------------------
input: str = ''                # a text file, a folder (.txt files, recursively) or a glob like 'books/*.txt'
dataset: str = ''              # or a Hugging Face dataset: hub name (needs internet) or save_to_disk folder
dataset_config: str = ''       # the dataset's configuration, for datasets that have several ('' = default)
split: str = 'train'           # which split of --dataset to read
text_field: str = 'text'       # the column of --dataset that holds the text; each row is one document
out_dir: str = ''              # where train.bin, val.bin and prepare_info.json go; '' = data/<input's name>
val_fraction: float = 0.1      # val.bin = the last this fraction of the tokens, in (0, 1)
doc_sep: str = 'blank_line'    # what ends a document in text files: 'blank_line' or 'file'
block_size: int = 1024         # the context length to train with: each split needs > block_size+1 tokens
num_threads: int = 0           # tokenizer threads; 0 = every core this process may use
tokenizer: str = 'gpt2'        # 'gpt2' (tiktoken), 'char' (meta.pkl) or 'bpe' (trained here: tokenizer.json)
vocab_size: int = 4096         # bpe: tokens in the trained vocabulary (256 bytes + merges + <|endoftext|>)
bpe_regex: bool = True         # bpe: split text with GPT-2's regex before merging (False: merges cross words)
char_unk: str = ''             # char: one character that val-only characters become ('' = they are an error)
# -----------------------------------------------------------------------------

INFO = 'prepare_info.json'
PIECE_CHARS = 1 << 20          # text handed to one tokenizer call (~1 MB): bounds memory, spreads work
DOC_SEPS = ('blank_line', 'file')
TOKENIZERS = ('gpt2', 'char', 'bpe')
VOCAB_FILES = {'char': 'meta.pkl', 'bpe': 'tokenizer.json'}


class PrepareError(UserError, ValueError):
    """Bad input or settings; the message names the file or value and what to do."""


@dataclass
class Source:
    """One input file (or the dataset) and what came out of it."""
    name: str
    bytes: int = 0       # UTF-8 bytes read
    documents: int = 0
    tokens: int = 0      # including one <|endoftext|> per document


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
# inputs

def resolve_inputs(spec):
    """--input as a sorted list of files: a file, a folder's .txt files (recursive), or a glob."""
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(glob.escape(spec), '**', '*.txt'), recursive=True))
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise PrepareError(f"folder {spec!r} has no .txt files (searched recursively); "
                               f"for other names give a glob, e.g. --input='{os.path.join(spec, '*.md')}'")
        return paths
    if _has_magic(spec):
        paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not paths:
            raise PrepareError(f"--input={spec!r} matches no files (relative to {os.getcwd()}); "
                               "check the pattern, and quote it so the shell does not expand it")
        return paths
    raise PrepareError(f"--input={spec!r}: no such file or folder (relative to {os.getcwd()})")


def _has_magic(spec):
    return any(c in spec for c in '*?[')


def default_name(input, dataset):
    """data/<name> when --out_dir is not given: the file's stem, the folder's or glob root's name,
    the dataset's."""
    if dataset:
        name = dataset.rstrip('/\\').replace('\\', '/').split('/')[-1]
    else:
        root = input
        while _has_magic(root):
            root = os.path.dirname(root)
        root = os.path.normpath(root or '.')
        if os.path.isfile(root):
            name = os.path.splitext(os.path.basename(root))[0]
        else:
            name = os.path.basename(os.path.abspath(root))
    return name or 'custom'


def _safe_cut(prev, line):
    """True if tokenizing the text up to `prev` and from `line` on separately gives the same ids as
    tokenizing it whole: GPT-2's pre-tokenizer never joins a lone '\\n' between two non-space
    characters to its neighbours (a run of spaces or blank lines would be split differently)."""
    return (len(prev) >= 2 and prev[-1] == '\n' and not prev[-2].isspace()
            and line[:1] != '' and not line[0].isspace())


def file_pieces(paths, sources, doc_sep='blank_line', piece_chars=PIECE_CHARS, progress=None):
    """Yield (text, ends_document, source_index) pieces from text files, about piece_chars each.
    Fills in sources[i].bytes/.documents; calls progress(n) with the bytes read."""
    for si, path in enumerate(paths):
        src = sources[si]
        lines, size, offset, unreported = [], 0, 0, 0
        with open(path, 'rb') as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode('utf-8')
                except UnicodeDecodeError as e:
                    bad = offset + e.start
                    raise PrepareError(
                        f"{path} is not UTF-8 text: byte {bad:,} (line {lineno}) is 0x{raw[e.start]:02x}. "
                        f"Convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8 '{path}' > fixed.txt, "
                        "or save it as UTF-8 in an editor) and run again") from None
                offset += len(raw)
                unreported += len(raw)
                if lineno == 1 and line.startswith('\ufeff'):
                    line = line[1:]  # byte-order mark
                if line.endswith('\r\n'):
                    line = line[:-2] + '\n'
                if not line.strip():
                    if doc_sep == 'blank_line' and lines:  # a blank line ends the document
                        yield ''.join(lines).rstrip(), True, si
                        src.documents += 1
                        lines, size = [], 0
                    if not lines:
                        continue  # blank lines before a document's first line are not part of it
                elif size >= piece_chars and _safe_cut(lines[-1], line):
                    yield ''.join(lines), False, si  # a long document, cut where it cannot change the ids
                    lines, size = [], 0
                lines.append(line)
                size += len(line)
                if progress and unreported >= piece_chars:
                    progress(unreported)
                    unreported = 0
        text = ''.join(lines).rstrip()
        if text:
            yield text, True, si
            src.documents += 1
        src.bytes = offset
        if progress and unreported:
            progress(unreported)
        if not src.documents:
            from tqdm import tqdm
            tqdm.write(f"note: {path} has no text; skipped")


def split_text(text, piece_chars=PIECE_CHARS):
    """Cut one long string into ~piece_chars pieces at the same safe places as file_pieces."""
    start = 0
    while len(text) - start > piece_chars:
        j = text.find('\n', start + piece_chars)
        while j != -1 and not _safe_cut(text[j - 1:j + 1], text[j + 1:j + 2]):
            j = text.find('\n', j + 1)
        if j == -1:
            break
        yield text[start:j + 1]
        start = j + 1
    yield text[start:]


def load_hf_dataset(name, config='', split='train'):
    """A Hugging Face dataset split: from a save_to_disk folder, or load_dataset (the hub, or a local
    folder of data files; downloads into the datasets cache)."""
    try:
        import datasets
    except ImportError:
        raise PrepareError("--dataset needs the `datasets` library: pip install datasets") from None
    try:
        saved = ('state.json', 'dataset_dict.json')  # what Dataset(Dict).save_to_disk writes
        if os.path.isdir(name) and any(os.path.exists(os.path.join(name, f)) for f in saved):
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise PrepareError(f"dataset {name!r} has no split {split!r}; it has {list(ds)}: "
                                       "set --split")
                ds = ds[split]
            return ds
        return datasets.load_dataset(name, config or None, split=split)
    except PrepareError:
        raise
    except Exception as e:
        raise PrepareError(
            f"could not load dataset {name!r} (config {config or 'default'!r}, split {split!r}): "
            f"{type(e).__name__}: {e}\nCheck the name on huggingface.co/datasets, set --dataset_config for "
            "datasets with several configurations, and check your internet connection; offline, save the "
            "text to files and use --input=") from e


def dataset_pieces(ds, text_field, source, piece_chars=PIECE_CHARS, progress=None):
    """Yield (text, ends_document, 0) pieces, one document per row of a datasets.Dataset."""
    for batch in ds.select_columns([text_field]).iter(batch_size=1000):
        for text in batch[text_field]:
            if text is None:
                continue
            if not isinstance(text, str):
                raise PrepareError(f"column {text_field!r} holds {type(text).__name__} values, not text: "
                                   "set --text_field to a text column")
            text = text.replace('\r\n', '\n').strip()
            source.bytes += len(text.encode('utf-8'))
            if not text:
                continue
            *head, last = split_text(text, piece_chars)
            for piece in head:
                yield piece, False, 0
            yield last, True, 0
            source.documents += 1
        if progress:
            progress(len(batch[text_field]))


# -----------------------------------------------------------------------------
# tokenizing and writing

def gpt2_encoding():
    """tiktoken's GPT-2 encoding (tokenizer.py loads it); missing files are a PrepareError, one line."""
    from tokenizer import LoadError, gpt2_encoding as load_encoding
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
    renamed into place, else (an error, Ctrl-C, kill) removed with any folder this made: nothing half-written
    stays, and the files already there are unchanged. An operating-system error (a full disk, a folder
    that cannot be written) becomes one PrepareError naming the path and the cause."""
    made = []  # folders this creates, deepest first, removed again if it fails
    d = os.path.abspath(out_dir)
    while not os.path.exists(d):
        made.append(d)
        d = os.path.dirname(d)
    tmp = {k: os.path.join(out_dir, f'.{k}.{os.getpid()}.tmp') for k in names}
    try:
        os.makedirs(out_dir, exist_ok=True)
        remove_stale_tmp(out_dir)
        yield tmp
        for k in names:
            os.replace(tmp[k], os.path.join(out_dir, k))
    except BaseException as e:
        for p in tmp.values():
            if os.path.exists(p):
                os.remove(p)
        for d in made:
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        if isinstance(e, OSError):
            raise PrepareError(f"cannot write {e.filename or out_dir}: {e.strerror or e}; the files "
                               f"already in {out_dir} are unchanged: free some space or choose another "
                               "--out_dir") from None
        raise


def remove_stale_tmp(out_dir):
    """Delete the temporary files (.train.bin.<pid>.tmp, ...) of runs that were killed (kill -9, a power
    loss) and so never cleaned up; those of a process still running are left alone."""
    if os.name == 'nt':  # os.kill(pid, 0) would end the process there, not ask about it
        return
    for f in os.listdir(out_dir):
        m = re.fullmatch(r'\.(.+)\.(\d+)\.tmp', f)
        if not m or int(m.group(2)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(2)), 0)  # signal 0: only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except PermissionError:  # it exists, under another user
            continue
        os.remove(os.path.join(out_dir, f))
        print(f"removed {os.path.join(out_dir, f)}: left by an earlier run that was killed")


def prepare(input='', dataset='', dataset_config='', split='train', text_field='text', out_dir='',
            val_fraction=0.1, doc_sep='blank_line', block_size=1024, num_threads=0,
            piece_chars=PIECE_CHARS, show_progress=True, extra=None, tokenizer='gpt2', vocab_size=4096,
            bpe_regex=True, char_unk='', text_split=False):
    """Tokenize the input into out_dir/train.bin, val.bin and prepare_info.json (plus the dict `extra`, e.g.
    where the text came from). Returns a Result. Raises PrepareError on bad input or settings, leaving
    nothing behind.
    text_split=True splits GPT-2 data in the text too (as char and bpe always do), so that every tokenizer
    gets the identical val text (compare_tokenizers.py)."""
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
    import tokenizer as tk
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # a kill (SIGTERM) cleans up like Ctrl-C


def main():
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        res = prepare(input=input, dataset=dataset, dataset_config=dataset_config, split=split,
                      text_field=text_field, out_dir=out_dir, val_fraction=val_fraction, doc_sep=doc_sep,
                      block_size=block_size, num_threads=num_threads, tokenizer=tokenizer,
                      vocab_size=vocab_size,
                      bpe_regex=bpe_regex, char_unk=char_unk)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing written (temporary files removed)", file=sys.stderr)
        sys.exit(130)
    name = os.path.basename(os.path.normpath(res.out_dir))
    if os.path.normpath(os.path.dirname(os.path.abspath(res.out_dir))) == os.path.abspath('data'):
        print(f"train on it with: python train.py --dataset={name}")


if __name__ == '__main__':
    configure(globals())
    run_main(main)  # a PrepareError (bad input, a full disk) ends as one line `error: ...`, exit status 1
