"""
A TinyStories sample to pretrain a small base model on, offline: the opening of TinyStories' train split
(197,290 bytes, 48,366 GPT-2 tokens), shipped in this folder (tinystories_sample.txt.xz, 54 kB; its source
and licence, CDLA-Sharing-1.0, are in SOURCES.md), tokenized by prepare_bin.py's code.

    python data/tinystories_sample/prepare.py
    python train.py config/train_stories_tiny.py --dataset=tinystories_sample --out_dir=out-tinystories

The model trained on it is the base of the offline fine-tuning loop in the README: it has read simple
modern stories, so fine-tuning it on the children's stories (fairy tales, 19th-century English) moves
its probabilities visibly. The whole of TinyStories (with network): python prepare_bin.py
--dataset=roneneldan/TinyStories --out_dir=data/tinystories.

Writes into data/tinystories_sample/ (or --out_dir): input.txt (the text), train.bin, val.bin,
prepare_info.json (as prepare_bin.py writes them; val.bin is the last val_fraction of the tokens).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the project root: nanoprobs, configurator

from nanoprobs import textsource  # noqa: E402
from nanoprobs.prepare import prepare  # noqa: E402
from nanoprobs.textsource import PrepareError  # noqa: E402

# -----------------------------------------------------------------------------
out_dir: str = ''              # '' = this folder, where train.py --dataset=tinystories_sample looks
val_fraction: float = 0.1      # val.bin = the last this fraction of the tokens
block_size: int = 64           # the context length you will train with (each split must be longer)
num_threads: int = 0           # tokenizer threads; 0 = all cores
# -----------------------------------------------------------------------------

SHIPPED_FILE = os.path.join(HERE, 'tinystories_sample.txt.xz')
SHIPPED_SHA256 = '727e8b228375be3075114c20729c93ed6e81ae5d8fe7faf7cb54b304f0322d70'  # of the text (SOURCES.md)


def unpack(path, shipped=SHIPPED_FILE):
    """The shipped text, decompressed into `path` after checking it is the text SOURCES.md describes."""
    size = textsource.unpack_shipped(shipped, SHIPPED_SHA256, path, 'sample')
    print(f"unpacked {shipped} into {path} ({size:,} bytes)")
    return path


def run(out_dir='', val_fraction=0.1, block_size=64, num_threads=0):
    out_dir = out_dir or HERE
    text = unpack(os.path.join(out_dir, 'input.txt'))
    # one document: blank lines here separate paragraphs as well as stories, so they cannot mark stories
    return prepare(input=text, out_dir=out_dir, val_fraction=val_fraction, block_size=block_size,
                   doc_sep='file', num_threads=num_threads,
                   extra={'source': 'shipped copy: data/tinystories_sample/tinystories_sample.txt.xz'})


if __name__ == '__main__':
    from configurator import configure
    configure(globals())
    try:
        run(out_dir, val_fraction, block_size, num_threads)
    except PrepareError as e:
        sys.exit(f"error: {e}")
