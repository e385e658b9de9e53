"""
Children's stories for fine-tuning: 10 fairy-tale and children's books from Project Gutenberg that are in
the public domain worldwide, cleaned of the Gutenberg licence text, shipped in this folder
(children_stories.txt.xz, 1.25 MB, see SOURCES.md), and tokenized by prepare_bin.py.

    python data/children_stories/prepare.py                  # the shipped copy: offline, same tokens anywhere
    python data/children_stories/prepare.py --source=download      # the same books fetched from gutenberg.org
    python data/children_stories/prepare.py --source=download_all  # all 17 books (7 are PD in the USA only)
    python data/children_stories/prepare.py --input=children_stories.txt    # a corpus you already have
    python train.py config/finetune_children_stories.py      # then fine-tune on data/children_stories

Gutenberg revises its files now and then, so a download can differ from the shipped copy by a few lines
and tokens; the shipped copy is what the numbers in readme.md were measured on.

Writes into data/children_stories/ (or --out_dir):
  raw/pg<id>.txt    with --source=download: each book as downloaded (kept, so a re-run downloads
                    nothing twice)
  input.txt         the cleaned corpus: one paragraph per line, books separated by one blank line
  train.bin, val.bin, prepare_info.json   as prepare_bin.py writes them: each book is one document,
                    followed by <|endoftext|>; val.bin is the last val_fraction of the tokens

With --input=FILE (or a folder or glob) nothing is downloaded or cleaned: the text goes to prepare_bin.py
as it is, e.g. the Kaggle "Children Stories Text Corpus". There a blank line ends a document; if your
file puts blank lines between paragraphs rather than stories, add --doc_sep=file.

The books, their ebook numbers and licence notes are in BOOKS below and in readme.md.
"""

import os
import re
import sys
import time
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
# the project root, for prepare_bin and configurator
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import requests  # noqa: E402

from nanoprobs import atomic  # noqa: E402
from nanoprobs import textsource  # noqa: E402
from nanoprobs.textsource import PrepareError  # noqa: E402
from nanoprobs.prepare import prepare  # noqa: E402

# -----------------------------------------------------------------------------
input: str = ''                # an existing corpus (file, folder or glob) to use instead of the books below
source: str = 'shipped'        # 'shipped': the copy in this folder (offline); 'download': the same books
                               # from Project Gutenberg; 'download_all': also the 7 PD in the USA only
out_dir: str = ''              # '' = this folder, where train.py --dataset=children_stories looks
# where ebook {id} is fetched; a mirror works too
url: str = 'https://www.gutenberg.org/cache/epub/{id}/pg{id}.txt'
val_fraction: float = 0.1      # val.bin = the last this fraction of the tokens
block_size: int = 1024         # the context length you will train with (each split must be longer)
doc_sep: str = 'blank_line'    # with --input: what ends a document, 'blank_line' or 'file'
num_threads: int = 0           # tokenizer threads; 0 = all cores
# -----------------------------------------------------------------------------

# (Project Gutenberg ebook number, title, author / translator, licence note). All are in the public domain
# in the USA (Project Gutenberg's licence covers only its own header and footer, which are removed here);
# the notes say where that may not hold in countries with life+70 copyright terms.
BOOKS = [
    (2591, "Grimms' Fairy Tales", "Jacob and Wilhelm Grimm, tr. Edgar Taylor and Marian Edwardes",
     "public domain"),
    (5314, "Household Tales", "Jacob and Wilhelm Grimm, tr. Margaret Hunt (1884)", "public domain"),
    (27200, "Fairy Tales of Hans Christian Andersen",
     "Hans Christian Andersen (English translation as on Project Gutenberg)",
     "public domain in the USA; translator not verified"),
    (503, "The Blue Fairy Book", "ed. Andrew Lang (1889)", "public domain"),
    (640, "The Yellow Fairy Book", "ed. Andrew Lang (1894)", "public domain"),
    (29021, "The Fairy Tales of Charles Perrault",
     "Charles Perrault, tr. J. E. Mansion, ill. Harry Clarke (1922)",
     "public domain in the USA; the introduction by Thomas Bodkin (d. 1961) may be protected elsewhere"),
    (17208, "The Tales of Mother Goose", "Charles Perrault, tr. Charles Welsh (1901)", "public domain"),
    (7128, "Indian Fairy Tales", "ed. Joseph Jacobs (1892)", "public domain"),
    (3833, "Australian Legendary Tales", "K. Langloh Parker (1896)", "public domain"),
    (28, "The Fables of Aesop", "ed. Joseph Jacobs (1894)", "public domain"),
    (11339, "Aesop's Fables: a new translation", "tr. V. S. Vernon Jones, ill. Arthur Rackham (1912)",
     "public domain in the USA; translator's death date not verified"),
    (473, "Stories to Tell to Children", "Sara Cone Bryant (1907)",
     "public domain in the USA; author's death date not verified"),
    (22816, "The Adventures of Buster Bear", "Thornton W. Burgess (1916)",
     "public domain in the USA; protected until the end of 2035 in life+70 countries (Burgess d. 1965)"),
    (3655, "The Parent's Assistant", "Maria Edgeworth (1796)", "public domain"),
    (11, "Alice's Adventures in Wonderland", "Lewis Carroll (1865)", "public domain"),
    (22566, "Dorothy and the Wizard in Oz", "L. Frank Baum (1908)", "public domain"),
    (14838, "The Tale of Peter Rabbit", "Beatrix Potter (1902)",
     "public domain (text); 'Peter Rabbit' is a trademark of Warne"),
]

# The books in the public domain worldwide, with why: everyone whose text is in the book died before 1955,
# over 70 years ago (the longest term of most countries), and it was published before 1930 (the USA's rule).
# children_stories.txt.xz holds exactly these, cleaned (ship.py made it; SOURCES.md lists every book).
WORLDWIDE = {
    5314: "Grimm brothers d. 1859 and 1863; translator Margaret Hunt d. 1912; published 1884",
    503: "editor Andrew Lang d. 1912; published 1889",
    640: "editor Andrew Lang d. 1912; published 1894",
    7128: "editor Joseph Jacobs d. 1916; published 1892",
    3833: "author K. Langloh Parker d. 1940; published 1896",
    28: "editor Joseph Jacobs d. 1916; published 1894",
    3655: "author Maria Edgeworth d. 1849; published 1796",
    11: "author Lewis Carroll d. 1898; published 1865",
    22566: "author L. Frank Baum d. 1919; published 1908",
    14838: "author Beatrix Potter d. 1943; published 1902",
}
SHIPPED_FILE = os.path.join(HERE, 'children_stories.txt.xz')
# the sha256 of the decompressed text
SHIPPED_SHA256 = '07eb05ab05e95638eadc3bee23fa1e4a896b04e69ead6c1c804eee7814755168'


# -----------------------------------------------------------------------------
# download

PAUSE = 1.0  # seconds between downloads: be gentle with gutenberg.org

def download(book_id, raw_dir, url=url):
    """The text of one ebook: raw_dir/pg<id>.txt if an earlier run saved it, else fetched and saved there."""
    path = os.path.join(raw_dir, f'pg{book_id}.txt')
    if not os.path.exists(path):
        link = url.format(id=book_id)
        try:
            r = requests.get(link, timeout=60,
                             headers={'User-Agent': 'nanoGPT data/children_stories/prepare.py'})
            r.raise_for_status()
        except requests.RequestException as e:
            raise PrepareError(
                f"download failed: {link}\n  ({type(e).__name__}: {e})\n"
                f"Books downloaded so far are kept in {raw_dir} and are not fetched again: run the same "
                "command later to continue, or point --url at a Project Gutenberg mirror. Offline, leave out "
                "--source to use the shipped copy of the public-domain-worldwide books, or give a corpus "
                "file you already have (e.g. the Kaggle \"Children Stories Text Corpus\"):\n"
                "  python data/children_stories/prepare.py --input=path/to/children_stories.txt") from None
        head = r.content.decode('utf-8-sig', errors='replace')
        # a rate-limit or portal page, not a book: never cache it
        if not (START.search(head) and END.search(head)):
            raise PrepareError(f"download failed: {link} answered with {len(r.content):,} bytes that are "
                               f"not a Project Gutenberg text (they start {r.content[:60]!r}); try again "
                               "later, point --url at a mirror, or use --input=path/to/children_stories.txt")
        os.makedirs(raw_dir, exist_ok=True)
        atomic.write_bytes(path, r.content)  # a half-written book is never taken for a whole one
        time.sleep(PAUSE)
    with open(path, 'rb') as f:
        data = f.read()
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError:
        return data.decode('latin-1')  # Gutenberg's older plain-text files are ISO-8859-1


# -----------------------------------------------------------------------------
# cleaning

START = re.compile(r'^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG[^*]*\*\*\*[^\n]*$', re.M | re.I)
END = re.compile(r'^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG[^*]*\*\*\*', re.M | re.I)
# "End of Project Gutenberg's ..."
END_LINE = re.compile(r'^\s*end of (the )?project gutenberg.*$', re.M | re.I)
# production notes
CREDITS = re.compile(r'^\[?(produced by|e-?text prepared by|transcriber[\'’]s note)', re.I)
# "Note: Project Gutenberg also has ..."
SOURCE_NOTE = re.compile(r'project gutenberg|archive\.org|pgdp\.net', re.I)
ILLUSTRATION = re.compile(r'\[Illustration[^\]]*\]', re.I)


def strip_gutenberg(text, name='the text'):
    """The book itself: the text strictly between the *** START OF ... *** and *** END OF ... *** lines
    (the Project Gutenberg header and licence are outside them), minus an "End of Project Gutenberg's ..."
    line."""
    start, end = START.search(text), END.search(text)
    if not start or not end or end.start() < start.end():
        raise PrepareError(f"{name} does not look like a Project Gutenberg text: no '*** START OF THE "
                           "PROJECT GUTENBERG EBOOK' / '*** END OF ...' lines around the book")
    return END_LINE.sub('', text[start.end():end.start()])


def clean(text):
    """One paragraph per line: hard-wrapped prose joined, verse and lists (short or indented lines) kept
    line by line; illustration tags, footnotes, credits and _italic_ underscores removed, spaces collapsed."""
    text = unicodedata.normalize('NFC', text.replace('\r\n', '\n'))
    text = ILLUSTRATION.sub('', text)
    text = re.sub(r'(?<!_)_(?!_)', '', text)  # _italics_ (even across paragraphs); a ____ blank stays
    out = []
    for block in re.split(r'\n\s*\n', text):
        lines = [ln for ln in block.split('\n') if ln.strip()]
        if (not lines or CREDITS.match(lines[0].strip()) or lines[0].lstrip().startswith('[Footnote')
                or SOURCE_NOTE.search(block)):
            continue
        verse = any(ln[:1].isspace() for ln in lines) or max(len(ln) for ln in lines[:-1] or ['']) < 55
        lines = ([ln.strip() for ln in lines] if verse or len(lines) == 1
                 else [' '.join(ln.strip() for ln in lines)])
        out += [re.sub(r'\s{2,}', ' ', ln) for ln in lines]
    return '\n'.join(out)


def build_corpus(path, raw_dir, books=BOOKS, url=url):
    """Download and clean the books into `path` (written under a temporary name, renamed at the end)."""
    texts = []
    for i, (book_id, title, author, _) in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {book_id:>5}  {title}, {author}")
        raw = download(book_id, raw_dir, url)
        texts.append(clean(strip_gutenberg(
            raw, name=f"ebook {book_id} ({os.path.join(raw_dir, f'pg{book_id}.txt')})")))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.write_text(path, '\n\n'.join(texts) + '\n')
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, {len(books)} books)")
    return path


def unpack_shipped(path, shipped=SHIPPED_FILE):
    """The shipped corpus, decompressed into `path` after checking it is the exact text SOURCES.md
    describes."""
    size = textsource.unpack_shipped(shipped, SHIPPED_SHA256, path, 'corpus',
                                     'restore it with git checkout, or use --source=download (needs internet)')
    print(f"unpacked {shipped} into {path} ({size / 1e6:.2f} MB, {len(WORLDWIDE)} books)")
    return path


SOURCES = ('shipped', 'download', 'download_all')


def run(input='', out_dir='', url=url, val_fraction=0.1, block_size=1024, doc_sep='blank_line',
        num_threads=0, books=None, source='shipped'):
    out_dir = out_dir or HERE
    extra = None
    """Tokenize the corpus into out_dir: `input` as it is, else the shipped copy, else downloaded books
    (`source`); a list of `books` (BOOKS entries) is downloaded whatever the source."""
    if source not in SOURCES:
        raise PrepareError(f"source={source!r} must be one of {', '.join(SOURCES)}")
    if books is None:
        books = BOOKS if source == 'download_all' else [b for b in BOOKS if b[0] in WORLDWIDE]
    elif source == 'shipped':
        source = 'download'
    if not input:
        if source == 'shipped':
            input = unpack_shipped(os.path.join(out_dir, 'input.txt'))
            url = 'shipped copy: ' + os.path.relpath(SHIPPED_FILE, os.path.dirname(os.path.dirname(HERE)))
        else:
            input = build_corpus(os.path.join(out_dir, 'input.txt'), os.path.join(out_dir, 'raw'), books, url)
        doc_sep = 'blank_line'  # our input.txt: one book per blank-line-separated block
        extra = {'source': source, 'books': [dict(ebook=i, title=t, author=a, licence=WORLDWIDE.get(i, lic),
                                                  url=url.format(id=i)) for i, t, a, lic in books]}
    return prepare(input=input, out_dir=out_dir, val_fraction=val_fraction, block_size=block_size,
                   doc_sep=doc_sep, num_threads=num_threads, extra=extra)


if __name__ == '__main__':
    from configurator import configure
    configure(globals())
    try:
        run(input, out_dir, url, val_fraction, block_size, doc_sep, num_threads, source=source)
    except PrepareError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("\ninterrupted: books downloaded so far are kept in raw/; run again to continue")
