"""The shipped children's corpus: only books in the public domain worldwide, exactly the text SOURCES.md
lists, used by prepare.py offline by default; the download stays available."""
import hashlib
import importlib.util
import lzma
import os
import re
import sys

import numpy as np
import pytest

from conftest import ROOT

HERE = ROOT / 'data' / 'children_stories'


def load(name):
    sys.path.insert(0, str(HERE))
    try:
        spec = importlib.util.spec_from_file_location(f'children_{name}', HERE / f'{name}.py')
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(HERE))


def test_shipped_corpus_is_the_worldwide_public_domain_books():
    cs, ship = load('prepare'), load('ship')
    size = os.path.getsize(HERE / 'children_stories.txt.xz')
    assert size < 2_000_000
    text = lzma.decompress((HERE / 'children_stories.txt.xz').read_bytes())
    assert hashlib.sha256(text).hexdigest() == cs.SHIPPED_SHA256
    parts = text.split(b'\n\n')
    books = [p + b'\n' for p in parts[:-1]] + parts[-1:]
    shipped = [pg for pg, *_ in cs.BOOKS if pg in cs.WORLDWIDE]
    assert [hashlib.sha256(b).hexdigest() for b in books] == [ship.SHA256[pg] for pg in shipped]
    flagged = {27200, 29021, 11339, 473, 22816}  # Andersen, 1922 Perrault (Bodkin), Vernon Jones, Bryant, Burgess
    assert not flagged & set(shipped) and len(shipped) == 10
    sources = (HERE / 'SOURCES.md').read_text(encoding='utf-8')
    included, _, excluded = sources.partition('## Left out')
    for pg in shipped:  # every shipped book listed with its sha256 and byte count
        row = re.search(rf'^\| \[{pg}\]\(.*$', included, re.M).group(0)
        assert ship.SHA256[pg] in row and f"{len(books[shipped.index(pg)]):,}" in row
    for pg, *_ in cs.BOOKS:
        if pg not in cs.WORLDWIDE:
            assert re.search(rf'^\| {pg} \|', excluded, re.M), pg
    assert f"{size:,} bytes" in sources and cs.SHIPPED_SHA256 in sources


def test_prepare_uses_the_shipped_copy_offline(tmp_path, monkeypatch, gpt2_tok):
    cs = load('prepare')

    def no_network(*a, **k):
        raise AssertionError('prepare.py went to the network')

    monkeypatch.setattr(cs.requests, 'get', no_network)
    res = cs.run(out_dir=str(tmp_path / 'cs'), val_fraction=0.1, block_size=64)
    assert (tmp_path / 'cs' / 'input.txt').read_bytes() == lzma.decompress(
        (HERE / 'children_stories.txt.xz').read_bytes())
    train = np.memmap(tmp_path / 'cs' / 'train.bin', dtype=np.uint16, mode='r')
    val = np.memmap(tmp_path / 'cs' / 'val.bin', dtype=np.uint16, mode='r')
    assert len(train) + len(val) == 1_177_041 and (np.concatenate([train, val]) == 50256).sum() == 10
    assert gpt2_tok.decode(train[:6].tolist()).startswith('Household Tales by Brothers Grimm')
    import json
    info = json.loads((tmp_path / 'cs' / 'prepare_info.json').read_text())
    assert info['source'] == 'shipped' and len(info['books']) == 10
    assert all('d. ' in b['licence'] for b in info['books'])
    del res


def test_damaged_shipped_copy_is_one_line(tmp_path):
    cs = load('prepare')
    bad = tmp_path / 'c.xz'
    bad.write_bytes(lzma.compress(b'other text\n'))
    with pytest.raises(cs.PrepareError, match=r"is not the shipped corpus \(its sha256 differs"):
        cs.unpack_shipped(str(tmp_path / 'input.txt'), shipped=str(bad))
    bad.write_bytes(b'not xz')
    with pytest.raises(cs.PrepareError, match=r"cannot read the shipped corpus .*--source=download"):
        cs.unpack_shipped(str(tmp_path / 'input.txt'), shipped=str(bad))
    assert not (tmp_path / 'input.txt').exists()


@pytest.mark.parametrize('source,n', [('download', 10), ('download_all', 17)])
def test_download_is_still_offered(tmp_path, monkeypatch, source, n):
    cs = load('prepare')
    asked = []

    def fake_build(path, raw_dir, books, url):
        asked.extend(b[0] for b in books)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write('\n\n'.join(f'book {b[0]} ' + 'once upon a time ' * 40 for b in books) + '\n')
        return path

    monkeypatch.setattr(cs, 'build_corpus', fake_build)
    cs.run(out_dir=str(tmp_path / 'cs'), block_size=8, source=source)
    assert len(asked) == n and (set(asked) == set(cs.WORLDWIDE)) == (source == 'download')
    with pytest.raises(cs.PrepareError, match="source='web' must be one of shipped, download, download_all"):
        cs.run(out_dir=str(tmp_path / 'cs'), source='web')


def test_shipped_tinystories_sample_prepares_offline(tmp_path, gpt2_tok):
    """data/tinystories_sample: the text SOURCES.md names, its GPT-2 tokens in train.bin + val.bin; a damaged
    copy is one line and writes nothing."""
    spec = importlib.util.spec_from_file_location('tinystories_prepare', ROOT / 'data' / 'tinystories_sample' / 'prepare.py')
    ts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ts)
    ts.run(out_dir=str(tmp_path / 'ts'))
    text = (tmp_path / 'ts' / 'input.txt').read_bytes()
    assert hashlib.sha256(text).hexdigest() == ts.SHIPPED_SHA256 and ts.SHIPPED_SHA256 in (
        ROOT / 'data' / 'tinystories_sample' / 'SOURCES.md').read_text()
    ids = np.concatenate([np.fromfile(tmp_path / 'ts' / f'{s}.bin', dtype=np.uint16) for s in ('train', 'val')])
    # one document (its last newline ends it), then <|endoftext|>
    assert ids.tolist() == gpt2_tok.encode(text.decode('utf-8').removesuffix('\n')) + [gpt2_tok.eot]
    bad = tmp_path / 'bad.xz'
    bad.write_bytes(lzma.compress(b'other text\n'))
    with pytest.raises(ts.PrepareError, match=r"is not the shipped sample \(its sha256 differs"):
        ts.unpack(str(tmp_path / 'x' / 'input.txt'), shipped=str(bad))
    assert not (tmp_path / 'x').exists()
