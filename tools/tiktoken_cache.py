"""
Build a TIKTOKEN_CACHE_DIR folder from GPT-2's two BPE files, so GPT-2's tokenizer loads without network.

    python -m tools.tiktoken_cache --vocab_bpe=vocab.bpe --encoder_json=encoder.json --out=tiktoken_cache
    python -m tools.tiktoken_cache --vocab_bpe=gpt2/merges.txt --encoder_json=gpt2/vocab.json   # the same
    export TIKTOKEN_CACHE_DIR=$PWD/tiktoken_cache    # then every script here reads GPT-2's BPE from it

tiktoken downloads vocab.bpe and encoder.json on first use (nanoprobs/tokenizer.py: GPT2_URL) and caches
each under the SHA-1 of its download address, checking the SHA-256 of its bytes; this writes both files
under those names after the same check. Where to get them on a machine with network: the two addresses
(GPT2_URL + vocab.bpe, + encoder.json), or any Hugging Face GPT-2 folder, whose merges.txt and vocab.json
are the same two files. A vocab.json saved with other JSON spacing, or either file with Windows line
ends, is written back in the original form when its content is the same; anything else stops with one
line naming the file.
"""

import json
import os

from configurator import UserError
from nanoprobs.atomic import write_bytes
from nanoprobs.tokenizer import GPT2_FILES, GPT2_URL, tiktoken_cache_name

# -----------------------------------------------------------------------------
vocab_bpe: str = ''  # GPT-2's vocab.bpe (Hugging Face: merges.txt)
encoder_json: str = ''  # GPT-2's encoder.json (Hugging Face: vocab.json)
out: str = 'tiktoken_cache'  # the folder to write; then export TIKTOKEN_CACHE_DIR=<this folder>
# -----------------------------------------------------------------------------


def sha256(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def original_bytes(name, path):
    """The bytes tiktoken expects for GPT-2's file `name`, read from path: as they are, or restored from a
    copy with Windows line ends (either file) or other JSON spacing (encoder.json). A UserError otherwise."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"--{name.replace('.', '_')}={path}: cannot read it ({e.strerror})") from None
    want = GPT2_FILES[name]
    candidates = [data, data.replace(b'\r\n', b'\n')]
    if name == 'encoder.json':
        try:  # the original is json.dumps's default spacing, non-ASCII escaped
            candidates.append(json.dumps(json.loads(data.decode('utf-8'))).encode())
        except (UnicodeDecodeError, ValueError):
            pass
    for c in candidates:
        if sha256(c) == want:
            return c
    raise UserError(f"--{name.replace('.', '_')}={path} is not GPT-2's {name}: its SHA-256 is {sha256(data)}, "
                    f"tiktoken expects {want} ({GPT2_URL}{name})")


def build(vocab_bpe, encoder_json, out):
    """Write out/<sha1 of each download address> from the two files; returns the paths written."""
    files = {'vocab.bpe': original_bytes('vocab.bpe', vocab_bpe),
             'encoder.json': original_bytes('encoder.json', encoder_json)}
    try:
        os.makedirs(out, exist_ok=True)
        return [write_bytes(os.path.join(out, tiktoken_cache_name(name)), data) for name, data in files.items()]
    except OSError as e:
        raise UserError(f"cannot write {e.filename or out}: {e.strerror or e}; give --out=<another folder>") \
            from None


def main():
    if not vocab_bpe or not encoder_json:
        raise UserError("give both files: --vocab_bpe=<vocab.bpe or merges.txt> "
                        "--encoder_json=<encoder.json or vocab.json>")
    paths = build(vocab_bpe, encoder_json, out)
    for name, path in zip(GPT2_FILES, paths):
        print(f"{path}  ({name}, {os.path.getsize(path):,} bytes, SHA-256 checked)")
    print(f"now: export TIKTOKEN_CACHE_DIR={os.path.abspath(out)}")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
