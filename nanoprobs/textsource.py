"""
Text for prepare_bin.py: files, folders, globs or a Hugging Face dataset, read as documents in ~1 MB pieces.
"""

import glob
import hashlib
import lzma
import os
from dataclasses import dataclass

from configurator import UserError
from nanoprobs import atomic, checks

PIECE_CHARS = 1 << 20          # text handed to one tokenizer call (~1 MB): bounds memory, spreads work





class PrepareError(UserError, ValueError):
    """Bad input or settings; the message names the file or value and what to do."""



@dataclass
class Source:
    """One input file (or the dataset) and what came out of it."""
    name: str
    bytes: int = 0       # UTF-8 bytes read
    documents: int = 0
    tokens: int = 0      # including one <|endoftext|> per document



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
    if os.path.exists(spec):  # a device (/dev/zero), a pipe, a socket: no end, or read once
        raise PrepareError(f"--input={spec!r} is not a regular file or a folder (a device, pipe or socket); "
                           "save the text to a file first and give that file")
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
        if checks.looks_utf16(checks.head_of(path)):  # without a byte-order mark it decodes: as NULs
            raise PrepareError(f"{path} is not UTF-8 text; {checks.encoding_fix(path, checks.head_of(path))}, "
                               "and run again")
        with open(path, 'rb') as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode('utf-8')
                except UnicodeDecodeError as e:
                    bad = offset + e.start
                    raise PrepareError(
                        f"{path} is not UTF-8 text: byte {bad:,} (line {lineno}) is 0x{raw[e.start]:02x}; "
                        f"{checks.encoding_fix(path, checks.head_of(path))}, and run again") from None
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


def unpack_shipped(shipped, sha256, path, what='corpus', fix='restore it with git checkout'):
    """The text of a corpus that ships xz-compressed in the repository (data/<name>/), decompressed into
    path after checking it is exactly the text its SOURCES.md names (sha256); returns its size in bytes.
    what: what messages call it; fix: what they say to do."""
    try:
        with open(shipped, 'rb') as f:
            text = lzma.decompress(f.read())
    except (OSError, lzma.LZMAError) as e:
        raise PrepareError(f"cannot read the shipped {what} {shipped} ({e}); {fix}") from None
    if hashlib.sha256(text).hexdigest() != sha256:
        raise PrepareError(f"{shipped} is not the shipped {what} (its sha256 differs from SOURCES.md): {fix}")
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    atomic.write_bytes(path, text)
    return len(text)
