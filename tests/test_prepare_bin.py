"""prepare_bin.py and data/children_stories/prepare.py: round trip, split, inputs, errors, cleanup,
Gutenberg cleaning, a mocked download, and the datasets path (offline)."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nanoprobs import prepare as pb
from nanoprobs import textsource
from conftest import ROOT, dead_pid, run_script

EOT = '<|endoftext|>'

# documents with unicode, several paragraphs each, a long paragraph, indented verse, a line with trailing
# spaces and one starting with a space (places a piece must not be cut), and digits and punctuation
DOCS = [
    "Once upon a time there was a little fox who lived at the edge of a great dark wood.\n"
    "Every morning she ran down to the river to drink, and every evening she ran home again.\n"
    "One day the river was gone.",
    "Le petit prince — « dessine-moi un mouton » — 星の王子さま. Ünïcödé ✓ 🦊!\n"
    "  Twinkle, twinkle, little star,\n"
    "  How I wonder what you are!   \n"
    "Up above the world so high.",
    "THE END\n\n",  # trailing blank lines belong to no document
    "Chapter 2\n" + "\n".join(f"Line {i}: the wolf said {i * 7} times, 'let me in!'  " if i % 3 == 0 else
                               f"Line {i}: the pig said no." for i in range(40)),
]


def expected_docs(docs):
    return [d.strip() for d in docs]


def write_corpus(path, docs, sep='\n\n', newline='\n'):
    text = '\n\n\n' + sep.join(docs) + '\n'  # leading blank lines, then documents
    with open(path, 'w', encoding='utf-8', newline='') as f:
        f.write(text.replace('\n', newline))
    return path


def read_bins(out_dir):
    train = np.fromfile(os.path.join(out_dir, 'train.bin'), dtype=np.uint16)
    val = np.fromfile(os.path.join(out_dir, 'val.bin'), dtype=np.uint16)
    with open(os.path.join(out_dir, 'prepare_info.json'), encoding='utf-8') as f:
        info = json.load(f)
    return train, val, info


def reference_ids(enc, docs):
    """Each document tokenized whole by tiktoken, followed by <|endoftext|>: what train+val must hold."""
    ids = []
    for d in docs:
        ids += enc.encode_ordinary(d) + [enc.eot_token]
    return np.array(ids, dtype=np.uint16)


@pytest.fixture(scope='module')
def enc():
    try:
        return pb.gpt2_encoding()
    except textsource.PrepareError as e:
        pytest.skip(str(e))


def listing(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else None


# -----------------------------------------------------------------------------
# round trip and split

@pytest.mark.parametrize('newline, sep, piece_chars', [
    ('\n', '\n\n', 64),             # tiny pieces: long documents are cut many times
    ('\r\n', '\n \n\n\t\n', 1 << 20),  # Windows newlines, whitespace-only separator lines, one piece
])
def test_round_trip_and_split(tmp_path, enc, newline, sep, piece_chars):
    src = write_corpus(tmp_path / 'stories.txt', DOCS, sep, newline)
    res = pb.prepare(input=str(src), out_dir=str(tmp_path / 'out'), val_fraction=0.25, block_size=8,
                     num_threads=2, piece_chars=piece_chars, show_progress=False)
    train, val, info = read_bins(tmp_path / 'out')
    docs = expected_docs(DOCS)

    # the ids are exactly those of tokenizing each document whole (the cuts change nothing) + <|endoftext|>
    ref = reference_ids(enc, docs)
    assert np.array_equal(np.concatenate([train, val]), ref)
    # decode(train) + decode(val) is the input's documents, each followed by the separator
    text = (enc.decode_bytes(train.tolist()) + enc.decode_bytes(val.tolist())).decode('utf-8')
    assert text == ''.join(d + EOT for d in docs)
    assert text.split(EOT)[:-1] == docs

    # val is the last 25% of the tokens
    n = len(ref)
    assert len(val) == round(0.25 * n) and len(train) == n - len(val)
    assert (res.train_tokens, res.val_tokens, res.documents) == (len(train), len(val), len(docs))
    assert info['tokens'] == {'total': n, 'train': len(train), 'val': len(val)}
    assert info['documents'] == len(docs) and info['eot_token'] == 50256 and info['dtype'] == 'uint16'
    assert info['sources'] == [{'name': str(src), 'bytes': os.path.getsize(src), 'documents': len(docs), 'tokens': n}]
    assert info['split']['val_fraction'] == 0.25
    assert listing(tmp_path / 'out') == ['prepare_info.json', 'train.bin', 'val.bin']  # no temporary files


def test_long_document_cut_into_pieces(tmp_path, enc):
    """A long document (train.py's source, over 30 KB, read in 1 KB pieces) keeps exactly the ids of
    tokenizing it whole."""
    with open(ROOT / 'train.py', encoding='utf-8') as f:
        code = '\n'.join(ln for ln in f.read().split('\n') if ln.strip())  # indentation, quotes, no blank lines
    (tmp_path / 'code.txt').write_text(code, encoding='utf-8')
    pieces = list(textsource.file_pieces([str(tmp_path / 'code.txt')], [textsource.Source('x')], 'blank_line',
                                         piece_chars=1024))
    assert len(pieces) > 5 and [p[1] for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert ''.join(p[0] for p in pieces) == code.strip()
    assert sum((enc.encode_ordinary(p[0]) for p in pieces), []) == enc.encode_ordinary(code.strip())
    cut = list(textsource.split_text(code.strip(), piece_chars=1024))  # the same rule for dataset rows
    assert len(cut) > 5 and ''.join(cut) == code.strip()
    assert sum((enc.encode_ordinary(p) for p in cut), []) == enc.encode_ordinary(code.strip())

    # with doc_sep='file' blank lines stay inside a document; a cut after one would change the ids
    # ('text\n\n' + 'Next' gives the single token '\n\n', the whole text gives '\n', '\n')
    assert enc.encode_ordinary('a.\n\n') + enc.encode_ordinary('Next') != enc.encode_ordinary('a.\n\nNext')
    with open(ROOT / 'train.py', encoding='utf-8') as f:
        code = f.read().strip()
    (tmp_path / 'code.txt').write_text(code, encoding='utf-8')
    pieces = list(textsource.file_pieces([str(tmp_path / 'code.txt')], [textsource.Source('x')], 'file',
                                         piece_chars=256))
    assert len(pieces) > 10 and ''.join(p[0] for p in pieces) == code
    assert sum((enc.encode_ordinary(p[0]) for p in pieces), []) == enc.encode_ordinary(code)
    cut = list(textsource.split_text(code, piece_chars=256))
    assert len(cut) > 10 and sum((enc.encode_ordinary(p) for p in cut), []) == enc.encode_ordinary(code)


def test_folder_glob_and_doc_sep_file(tmp_path, enc):
    corpus = tmp_path / 'corpus'
    (corpus / 'sub').mkdir(parents=True)
    write_corpus(corpus / 'b.txt', DOCS[:2])
    write_corpus(corpus / 'sub' / 'a.txt', DOCS[3:])
    (corpus / 'notes.md').write_text('not text for training\n')
    (corpus / 'empty.txt').write_text('\n\n')

    # a folder: its .txt files, recursively, sorted by path; each file ends a document
    pb.prepare(input=str(corpus), out_dir=str(tmp_path / 'o1'), block_size=8, show_progress=False)
    train, val, info = read_bins(tmp_path / 'o1')
    docs = expected_docs(DOCS[:2] + DOCS[3:])
    assert np.array_equal(np.concatenate([train, val]), reference_ids(enc, docs))
    assert [s['name'] for s in info['sources']] == [str(corpus / p) for p in ('b.txt', 'empty.txt', 'sub/a.txt')]
    assert [s['documents'] for s in info['sources']] == [2, 0, 1]
    assert sum(s['tokens'] for s in info['sources']) == info['tokens']['total']

    # a glob: only what it matches
    pb.prepare(input=str(corpus / 'b*.txt'), out_dir=str(tmp_path / 'o2'), block_size=8, show_progress=False)
    train, val, info = read_bins(tmp_path / 'o2')
    assert np.array_equal(np.concatenate([train, val]), reference_ids(enc, expected_docs(DOCS[:2])))

    # doc_sep='file': blank lines are kept inside the document, one <|endoftext|> per file
    pb.prepare(input=str(corpus / '**' / '*.txt'), out_dir=str(tmp_path / 'o3'), doc_sep='file', block_size=8,
               show_progress=False)
    train, val, info = read_bins(tmp_path / 'o3')
    files = ['\n\n'.join(DOCS[:2]).strip(), '\n\n'.join(DOCS[3:]).strip()]  # empty.txt gives no document
    assert np.array_equal(np.concatenate([train, val]), reference_ids(enc, files))


def test_cli_default_out_dir_and_progress(tmp_path):
    write_corpus(tmp_path / 'stories.txt', DOCS)
    proc = run_script('prepare_bin.py', '--input=stories.txt', '--block_size=16', '--val_fraction=0.2', cwd=tmp_path)
    assert listing(tmp_path / 'data' / 'stories') == ['prepare_info.json', 'train.bin', 'val.bin']
    assert 'MB/s' in proc.stdout and 'train.bin has' in proc.stdout and 'val.bin has' in proc.stdout
    assert 'python train.py --dataset=stories' in proc.stdout
    assert 'tokenizing' in proc.stderr  # the tqdm bar


# -----------------------------------------------------------------------------
# bad input: a clear error naming the problem, and nothing left behind

def _bad_cases(tmp):
    (tmp / 'empty.txt').write_bytes(b'')
    (tmp / 'blank.txt').write_bytes(b'\n  \n\t\n')
    (tmp / 'latin1.txt').write_bytes('hello\nwor'.encode() + 'ld café'.encode('latin-1') + b'\n')
    (tmp / 'short.txt').write_text('A short story.\n\nAnother short story.\n')
    (tmp / 'utf16.txt').write_bytes('Once upon a time.\n'.encode('utf-16'))  # a byte-order mark, then NULs
    (tmp / 'utf16be.txt').write_bytes('Once upon a time.\n'.encode('utf-16-be'))  # no mark
    (tmp / 'emptydir').mkdir()
    write_corpus(tmp / 'stories.txt', DOCS)
    return {
        'empty': (dict(input=str(tmp / 'empty.txt')), ['no text in', 'empty.txt']),
        'blank': (dict(input=str(tmp / 'blank.txt')), ['no text in', 'only blank lines']),
        'not utf-8': (dict(input=str(tmp / 'latin1.txt')), ['latin1.txt is not UTF-8', 'byte 15 (line 2)', '0xe9', 'iconv']),
        'too small': (dict(input=str(tmp / 'short.txt')), ['only 10 tokens in all', 'block_size=1024', 'more than 1,025']),
        'too small train': (dict(input=str(tmp / 'short.txt'), block_size=2, val_fraction=0.9), ['train.bin would hold only 1 ', 'lower --val_fraction']),
        'too small val': (dict(input=str(tmp / 'stories.txt'), block_size=16, val_fraction=0.01), ['val.bin would hold only', 'raise --val_fraction']),
        'no match': (dict(input=str(tmp / 'nope' / '*.txt')), ['matches no files']),
        'missing': (dict(input=str(tmp / 'missing.txt')), ['missing.txt', 'no such file']),
        'utf-16': (dict(input=str(tmp / 'utf16.txt')), ['utf16.txt is not UTF-8', 'it is UTF-16 text: convert it with '
                                                       f"iconv -f utf-16 -t utf-8 '{tmp / 'utf16.txt'}' > fixed.txt"]),
        'utf-16 without a mark': (dict(input=str(tmp / 'utf16be.txt')), ['it is UTF-16 text', 'iconv -f utf-16']),
        'a device': (dict(input='/dev/zero'), ["--input='/dev/zero' is not a regular file or a folder (a device",
                                               'save the text to a file first']),
        'empty folder': (dict(input=str(tmp / 'emptydir')), ['has no .txt files']),
        'val_fraction 0': (dict(input=str(tmp / 'short.txt'), val_fraction=0.0), ['val_fraction=0.0', 'between 0 and 1']),
        'val_fraction 1': (dict(input=str(tmp / 'short.txt'), val_fraction=1.0), ['val_fraction=1.0', 'between 0 and 1']),
        'val_fraction -0.1': (dict(input=str(tmp / 'short.txt'), val_fraction=-0.1), ['between 0 and 1']),
        'nothing': (dict(), ['set one of --input']),
        'both': (dict(input=str(tmp / 'short.txt'), dataset='x'), ['not both']),
        'doc_sep': (dict(input=str(tmp / 'short.txt'), doc_sep='line'), ["doc_sep='line'"]),
    }


@pytest.mark.parametrize('case', [
    'empty', 'blank', 'not utf-8', 'too small', 'too small train', 'too small val', 'no match', 'missing', 'empty folder',
    'utf-16', 'utf-16 without a mark', 'a device',
    'val_fraction 0', 'val_fraction 1', 'val_fraction -0.1', 'nothing', 'both', 'doc_sep'])
def test_bad_input_clear_error_and_no_files(tmp_path, case, enc):
    kwargs, words = _bad_cases(tmp_path)[case]
    out = tmp_path / 'data' / 'new'  # neither data/ nor data/new exist yet
    with pytest.raises(textsource.PrepareError) as e:
        pb.prepare(out_dir=str(out), show_progress=False, **kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / 'data').exists()  # the folders it made are gone again


def test_failure_keeps_previous_output(tmp_path, enc, monkeypatch):
    """A failed or interrupted run leaves an earlier good output untouched and no temporary files."""
    write_corpus(tmp_path / 'stories.txt', DOCS)
    out = tmp_path / 'out'
    pb.prepare(input=str(tmp_path / 'stories.txt'), out_dir=str(out), block_size=8, show_progress=False)
    before = {p: (out / p).read_bytes() for p in listing(out)}

    (tmp_path / 'short.txt').write_text('Too short.\n')
    with pytest.raises(textsource.PrepareError):
        pb.prepare(input=str(tmp_path / 'short.txt'), out_dir=str(out), show_progress=False)
    assert {p: (out / p).read_bytes() for p in listing(out)} == before

    calls = []

    def interrupted(enc_, batch):  # Ctrl-C while the second batch is being tokenized
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(enc_, batch)
    real = pb._encode
    monkeypatch.setattr(pb, '_encode', interrupted)
    with pytest.raises(KeyboardInterrupt):
        pb.prepare(input=str(tmp_path / 'stories.txt'), out_dir=str(out), block_size=8, piece_chars=64,
                   num_threads=1, show_progress=False)
    assert len(calls) >= 2  # (a third batch may have started before the error reached the main thread)
    assert {p: (out / p).read_bytes() for p in listing(out)} == before


@pytest.mark.parametrize('tokenizer', ['gpt2', 'char'])
def test_full_disk_one_line_and_previous_output_kept(tmp_path, enc, monkeypatch, tokenizer):
    """An operating-system error while writing (here a full disk) is a PrepareError naming the path and the
    cause, not a traceback; the earlier output stays as it was and no temporary file is left."""
    write_corpus(tmp_path / 'stories.txt', DOCS)
    out = tmp_path / 'out'
    kw = dict(input=str(tmp_path / 'stories.txt'), out_dir=str(out), block_size=8, show_progress=False,
              tokenizer=tokenizer)
    pb.prepare(**kw)
    before = {p: (out / p).read_bytes() for p in listing(out)}
    real_dump = json.dump

    def full(obj, f, **kw_):  # prepare_info.json is written last, after both .bin files
        raise OSError(28, 'No space left on device', f.name)
    monkeypatch.setattr(pb.json, 'dump', full)
    with pytest.raises(textsource.PrepareError, match=r"cannot write .*prepare_info\.json.*: No space left on device; "
                                              r"the files already in .* are unchanged"):
        pb.prepare(**kw)
    monkeypatch.setattr(pb.json, 'dump', real_dump)
    assert {p: (out / p).read_bytes() for p in listing(out)} == before


def test_cli_out_dir_that_cannot_be_made(tmp_path):
    """--out_dir under a file: one line naming the path and the cause, exit status 1."""
    write_corpus(tmp_path / 'stories.txt', DOCS)
    (tmp_path / 'afile').write_text('not a folder')
    proc = run_script('prepare_bin.py', '--input=stories.txt', '--out_dir=afile/data', '--block_size=8',
                      cwd=tmp_path, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith('error: cannot write') and 'afile' in line and 'Not a directory' in line


def test_stale_temporary_files_of_killed_runs_removed(tmp_path, enc):
    """kill -9 leaves train.tmp<pid>-<hex>.bin behind: the next run removes those of dead processes only."""
    write_corpus(tmp_path / 'stories.txt', DOCS)
    out = tmp_path / 'out'
    out.mkdir()
    dead = dead_pid()
    stale = [out / f'train.tmp{dead}-0123abcd.bin', out / f'prepare_info.tmp{dead}-0123abcd.json']
    alive = out / f'train.tmp{os.getppid()}-0123abcd.bin'  # a run still in progress: not ours to remove
    for p in stale + [alive]:
        p.write_bytes(b'partial')
    pb.prepare(input=str(tmp_path / 'stories.txt'), out_dir=str(out), block_size=8, show_progress=False)
    assert not any(p.exists() for p in stale) and alive.exists()
    assert {'train.bin', 'val.bin', 'prepare_info.json'} <= set(listing(out))


def test_cli_error_and_ctrl_c(tmp_path):
    (tmp_path / 'bad.txt').write_bytes(b'caf\xe9\n')
    proc = run_script('prepare_bin.py', '--input=bad.txt', '--out_dir=out', cwd=tmp_path, check=False)
    assert proc.returncode == 1 and 'error: bad.txt is not UTF-8 text: byte 3' in proc.stderr
    assert 'Traceback' not in proc.stderr and not (tmp_path / 'out').exists()

    # Ctrl-C (SIGINT) in the middle of a real run: exit 130, no files
    para = ' '.join(f'The {i}th little pig built a house of straw, sticks and bricks.' for i in range(100))
    # ~40 MB: tokens stream into train.tmp for a second or more (at 25 MB/s), so the signal, sent as soon as
    # that file appears, lands mid-run; 5 MB was done within the poll's latency once on a quiet machine
    (tmp_path / 'big.txt').write_text('\n\n'.join([para] * 6400) + '\n')
    p = subprocess.Popen([sys.executable, str(ROOT / 'prepare_bin.py'), '--input=big.txt', '--out_dir=out',
                          '--num_threads=1'], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not any(n.startswith('train.tmp') for n in (listing(tmp_path / 'out') or [])):
        assert p.poll() is None and time.time() - t0 < 60, p.communicate()
        time.sleep(0.002)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert 'interrupted' in err and not (tmp_path / 'out').exists()


# -----------------------------------------------------------------------------
# Hugging Face datasets, offline

@pytest.fixture
def datasets_offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip('datasets')
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', tmp_path / 'hf_cache')  # not the user's cache
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    return datasets


def test_dataset_save_to_disk_and_local_files(tmp_path, enc, datasets_offline):
    datasets = datasets_offline
    rows = [DOCS[0], '', DOCS[1], None, DOCS[3] * 20]  # an empty and a missing row are skipped; a long one is cut
    ds = datasets.Dataset.from_dict({'id': list(range(len(rows))), 'story': rows})
    datasets.DatasetDict({'train': ds, 'validation': ds.select([0])}).save_to_disk(str(tmp_path / 'saved'))
    docs = [r.strip() for r in rows if r]

    pb.prepare(dataset=str(tmp_path / 'saved'), text_field='story', out_dir=str(tmp_path / 'o1'), block_size=8,
               piece_chars=256, show_progress=False)
    train, val, info = read_bins(tmp_path / 'o1')
    assert np.array_equal(np.concatenate([train, val]), reference_ids(enc, docs))
    assert info['documents'] == 3 and info['dataset']['text_field'] == 'story' and info['doc_sep'] == 'dataset row'

    with pytest.raises(textsource.PrepareError, match=r"no column 'text'; its columns are \['id', 'story'\]"):
        pb.prepare(dataset=str(tmp_path / 'saved'), out_dir=str(tmp_path / 'o2'), show_progress=False)
    with pytest.raises(textsource.PrepareError, match=r"holds int values"):
        pb.prepare(dataset=str(tmp_path / 'saved'), text_field='id', out_dir=str(tmp_path / 'o2'), show_progress=False)
    with pytest.raises(textsource.PrepareError, match=r"no split 'test'"):
        pb.prepare(dataset=str(tmp_path / 'saved'), split='test', out_dir=str(tmp_path / 'o2'), show_progress=False)
    assert not (tmp_path / 'o2').exists()

    # load_dataset itself (the hub code path) on a local folder of JSON lines
    (tmp_path / 'jsonl').mkdir()
    with open(tmp_path / 'jsonl' / 'part.jsonl', 'w', encoding='utf-8') as f:
        for d in DOCS:
            f.write(json.dumps({'text': d}) + '\n')
    pb.prepare(dataset=str(tmp_path / 'jsonl'), out_dir=str(tmp_path / 'o3'), block_size=8, show_progress=False)
    train, val, _ = read_bins(tmp_path / 'o3')
    assert np.array_equal(np.concatenate([train, val]), reference_ids(enc, expected_docs(DOCS)))

    with pytest.raises(textsource.PrepareError, match=r"could not load dataset .*no_such_dataset_here"):
        pb.prepare(dataset=str(tmp_path / 'no_such_dataset_here'), out_dir=str(tmp_path / 'o4'), show_progress=False)


# -----------------------------------------------------------------------------
# data/children_stories/prepare.py

def load_children():
    spec = importlib.util.spec_from_file_location('children_prepare', ROOT / 'data' / 'children_stories' / 'prepare.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


HEADER = """\ufeffThe Project Gutenberg eBook of {title}, by A. Writer\r
\r
This eBook is for the use of anyone anywhere in the United States and\r
most other parts of the world at no cost and with almost no restrictions\r
whatsoever.\r
\r
Title: {title}\r
\r
Release date: 2005 [eBook #{id}]\r
\r
*** START OF THE PROJECT GUTENBERG EBOOK {title_upper}\r
AND OTHER STORIES ***\r
\r
\r
Produced by Some Volunteers and the Online Distributed\r
Proofreading Team at https://www.pgdp.net\r
\r
"""
FOOTER = """\r
End of the Project Gutenberg EBook of {title}\r
\r
*** END OF THE PROJECT GUTENBERG EBOOK {title_upper} ***\r
\r
Updating editions will replace the previous one--the old editions will\r
be renamed. START: FULL LICENSE. THE FULL PROJECT GUTENBERG LICENSE\r
PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK\r
"""
BODY = """THE {title_upper}\r
\r
[Illustration: The fox and the crow]\r
\r
A Fox once saw a Crow fly off with a piece of cheese in its beak and\r
settle on a branch of a tree. "That's for me, as I am a Fox," said\r
Master Reynard, and he walked up to the _foot_ of the tree.\r
\r
          Flopsy,\r
       Mopsy,\r
   Cotton-tail,\r
and Peter.\r
\r
"Good-day, Mistress Crow," he cried. "How well you are looking to-day:\r
how glossy your feathers; how bright your eye."\r
\r
[Illustration]\r
\r
Do not trust flatterers.\r
"""
CLEAN = """THE {title_upper}
A Fox once saw a Crow fly off with a piece of cheese in its beak and settle on a branch of a tree. "That's for me, as I am a Fox," said Master Reynard, and he walked up to the foot of the tree.
Flopsy,
Mopsy,
Cotton-tail,
and Peter.
"Good-day, Mistress Crow," he cried. "How well you are looking to-day: how glossy your feathers; how bright your eye."
Do not trust flatterers."""


def fake_book(book_id, title):
    kw = dict(id=book_id, title=title, title_upper=title.upper())
    return (HEADER + BODY + FOOTER).format(**kw), CLEAN.format(**kw)


def test_strip_gutenberg_and_clean():
    cs = load_children()
    raw, clean = fake_book(7, 'The Fox and the Crow')
    body = cs.strip_gutenberg(raw)
    assert 'Project Gutenberg' not in body and 'LICENSE' not in body and 'This eBook' not in body
    assert body.strip().startswith('Produced by') and body.rstrip().endswith('Do not trust flatterers.')
    assert cs.clean(body) == clean
    with pytest.raises(textsource.PrepareError, match='does not look like a Project Gutenberg text'):
        cs.strip_gutenberg('<html>Too many requests</html>', name='ebook 7')


class FakeResponse:
    def __init__(self, content, status=200, url=''):
        self.content, self.status_code, self.url = content, status, url

    def raise_for_status(self):
        if self.status_code >= 400:
            import requests
            raise requests.HTTPError(f"{self.status_code} Client Error: Not Found for url: {self.url}")


def test_children_download_mocked(tmp_path, monkeypatch, enc):
    import requests
    cs = load_children()
    monkeypatch.setattr(cs, 'PAUSE', 0)
    books = [(101, 'The Fox and the Crow', 'Aesop', 'public domain'), (202, 'The Lion and the Mouse', 'Aesop', 'public domain')]
    fakes = {b[0]: fake_book(b[0], b[1]) for b in books}
    urls = []

    def fake_get(url, timeout=None, headers=None):
        urls.append(url)
        book_id = int(url.rsplit('/pg', 1)[1].split('.')[0])
        return FakeResponse(fakes[book_id][0].encode('utf-8'))
    monkeypatch.setattr(requests, 'get', fake_get)

    out = tmp_path / 'children'
    res = cs.run(out_dir=str(out), books=books, val_fraction=0.2, block_size=8)
    assert urls == ['https://www.gutenberg.org/cache/epub/101/pg101.txt', 'https://www.gutenberg.org/cache/epub/202/pg202.txt']
    assert listing(out) == ['input.txt', 'prepare_info.json', 'raw', 'train.bin', 'val.bin']
    assert listing(out / 'raw') == ['pg101.txt', 'pg202.txt']
    docs = [fakes[101][1], fakes[202][1]]
    assert (out / 'input.txt').read_text(encoding='utf-8') == '\n\n'.join(docs) + '\n'  # books split by a blank line
    train, val, info = read_bins(out)
    assert np.array_equal(np.concatenate([train, val]), reference_ids(enc, docs))  # one document per book
    assert res.documents == 2
    assert [b['ebook'] for b in info['books']] == [101, 202] and info['books'][0]['url'] == urls[0]

    # a second run downloads nothing: the raw files are kept
    urls.clear()
    cs.run(out_dir=str(out), books=books, val_fraction=0.2, block_size=8)
    assert urls == []

    # a failed download names the URL and the way on offline, and writes no corpus
    def offline(url, timeout=None, headers=None):
        raise requests.ConnectionError('Failed to resolve www.gutenberg.org')
    monkeypatch.setattr(requests, 'get', offline)
    out2 = tmp_path / 'offline'
    with pytest.raises(textsource.PrepareError) as e:
        cs.run(out_dir=str(out2), books=books)
    msg = str(e.value)
    assert 'download failed: https://www.gutenberg.org/cache/epub/101/pg101.txt' in msg
    assert 'ConnectionError' in msg and '--input=path/to/children_stories.txt' in msg
    assert not (out2 / 'input.txt').exists() and not (out2 / 'train.bin').exists()

    # a 200 answer that is not a book (rate limit, captive portal) is an error and is never cached
    page = b'<html>Too many requests, try again later</html>'
    monkeypatch.setattr(requests, 'get', lambda url, timeout=None, headers=None: FakeResponse(page, 200, url))
    with pytest.raises(textsource.PrepareError, match=r"pg101\.txt answered with 47 bytes that are not a Project Gutenberg text"):
        cs.run(out_dir=str(out2), books=books)
    assert not (out2 / 'raw' / 'pg101.txt').exists()  # the next run downloads it again

    monkeypatch.setattr(requests, 'get', lambda url, timeout=None, headers=None: FakeResponse(b'', 404, url))
    with pytest.raises(textsource.PrepareError, match=r'(?s)download failed: https://mirror.example/202\.txt.*404'):
        cs.run(out_dir=str(out2), books=books[1:], url='https://mirror.example/{id}.txt')


def test_children_cli_offline_input(tmp_path, enc):
    """The path for people who already have a corpus: --input=, nothing downloaded."""
    write_corpus(tmp_path / 'kaggle.txt', DOCS)
    run_script('data/children_stories/prepare.py', '--input=kaggle.txt', '--out_dir=cs', '--block_size=8',
               cwd=tmp_path)
    train, val, info = read_bins(tmp_path / 'cs')
    assert np.array_equal(np.concatenate([train, val]), reference_ids(enc, expected_docs(DOCS)))
    assert listing(tmp_path / 'cs') == ['prepare_info.json', 'train.bin', 'val.bin']
