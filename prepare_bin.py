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

import os
import signal
import sys

from configurator import configure, run_main
from nanoprobs.prepare import prepare

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
