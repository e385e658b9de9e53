"""
How the shipped corpus children_stories.txt.xz was made (maintainers only; prepare.py just reads it).

    python data/children_stories/ship.py --corpus=../shared/corpus/children_stories.txt

The input is the cleaned 17-book corpus (prepare.py's input.txt layout: books in BOOKS order, one paragraph
per line, books separated by one blank line). It is cut at the blank lines, every book is checked against
the sha256 of its cleaned text below, the books that are public domain worldwide (WORLDWIDE) are joined the
same way and compressed with xz; the sizes and token counts it prints are the ones in SOURCES.md. Any other
copy of the text is refused, so the shipped file and its token counts can be reproduced exactly.
"""

import hashlib
import lzma
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from prepare import BOOKS, SHIPPED_FILE, WORLDWIDE  # noqa: E402

# -----------------------------------------------------------------------------
corpus: str = '../shared/corpus/children_stories.txt'  # the cleaned 17-book corpus
# -----------------------------------------------------------------------------

# sha256 of each book's cleaned text (its lines, each ending in \n), in BOOKS order
SHA256 = {
    2591: 'fb4183d9e44a9e01e7bacc3c30e626332d1ce93258e1b5d5f233d1887deb25c9',
    5314: 'd91bf163b2d4d6d7e4f93dcb065b141f78c8a213fe8f19d28080e3dd8f8dc8fb',
    27200: '6ff8372f0e2e3de20f8c1453e0a78621189fa742f66d3654b4d28f2e711df3c5',
    503: 'd8ca2ee18a422c83bbeb11b888bb36b564787cf60d0a262cbbe38dd2cfc134e8',
    640: '7b0b27060941dd325f9c790f17a8038c108c14cbf36de9514a1b70ada431f49e',
    29021: 'ce36670568b8380a345997331a14e207e5426f452cc45223f1b7a68158c2eebc',
    17208: '43f55919d1b1347cd6657ceb6b5d72a8a479a14ac12e43446fc6c63041714435',
    7128: 'd23909d043a37d7babdbb9f1c42cc397622be5c3b568198e44655beecab54fc4',
    3833: '2b96efb3d66667e1b86602ea631899004b1597401f597179ccb37810b0abd4a4',
    28: '695a793f6da73c1ac24d2c4bba683dc0bb7334bf4ba2ce36833cd07501022eed',
    11339: 'c4c0b64339dc43fcffa224f2638fee83f28c05234a96845a033aa61473d02590',
    473: '80db628dcc728c0b21d001b982221707a820a5d372284feafc8d1b258d145485',
    22816: 'a9d725a726b7abaf18a4b5979a8597f067e4680d37134f95694d181fe9679b8e',
    3655: '2f631ad54b3f7b4b9b25f15e18263e6a3eb7779fbc72926a1eb546b3976ad559',
    11: '52d67d4cc1954aecad0f9e025faaf9d71230528630931e6c3cab0ccd460fbe10',
    22566: '49e50e3010814532b5503b1d127b62db1cb9751e305b6e951a9717a27ed5aef3',
    14838: '036bab59b5297541d2992b2da7abb7088b564b085df8575824904d726c8e445c',
}


def split_books(data):
    """The books of a corpus file (bytes), each as its own lines ending in \\n, checked against SHA256."""
    parts = data.split(b'\n\n')
    books = [p + b'\n' for p in parts[:-1]] + parts[-1:]
    if len(books) != len(BOOKS):
        raise SystemExit(f"error: expected {len(BOOKS)} books separated by blank lines, found {len(books)}")
    for (pg, title, *_), b in zip(BOOKS, books):
        if hashlib.sha256(b).hexdigest() != SHA256[pg]:
            raise SystemExit(f"error: book {pg} ({title}) is not the text SOURCES.md describes "
                             "(sha256 differs)")
    return books


def main():
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    with open(corpus, 'rb') as f:
        books = dict(zip([b[0] for b in BOOKS], split_books(f.read())))
    keep = [pg for pg, *_ in BOOKS if pg in WORLDWIDE]
    text = b'\n'.join(books[pg] for pg in keep)  # each book ends in \n: one blank line between books
    with open(SHIPPED_FILE, 'wb') as f:
        f.write(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME))
    rows = []
    for pg, title, author, _ in BOOKS:
        b = books[pg]
        why = WORLDWIDE.get(pg)
        rows.append((pg, title, author, SHA256[pg], len(b), len(enc.encode_ordinary(b.decode())), why))
    print(f"wrote {SHIPPED_FILE}: {os.path.getsize(SHIPPED_FILE):,} bytes, {len(keep)} books, "
          f"{len(text):,} bytes of text, {len(enc.encode_ordinary(text.decode())):,} tokens, "
          f"sha256 {hashlib.sha256(text).hexdigest()}")
    for r in rows:
        print(f"  {'ship' if r[6] else 'skip'} {r[0]:>5} {r[4]:>9,} bytes {r[5]:>8,} tokens  {r[1]}")


if __name__ == '__main__':
    from configurator import configure
    configure(globals())
    main()
