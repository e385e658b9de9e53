"""tokenizer.py and prepare_bin.py --tokenizer=char|bpe: exact round trips, upstream's meta.pkl, a deterministic
trained BPE, bits per byte checked by hand, and char/bpe checkpoints that sample and evaluate on their own."""
import math
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from nanoprobs import load
from nanoprobs.prepare import prepare
from nanoprobs.textsource import PrepareError
from nanoprobs import tokenizer as tk
from conftest import run_script, tiny_model, write_ckpt

STORY = ("Once upon a time there was a little fox. The fox liked to run in the green wood.\n"
         "One day the fox met a bear. \"Hello, bear!\" said the fox. The bear was happy.\n")
ODD = "Ünïcödé — naïve café, 日本語 and an emoji 🦊 too\n\ttabs   and  spaces"


def corpus(tmp_path, n=40, tail=''):
    """A text file of n short stories separated by blank lines (documents), optional extra text at the end."""
    docs = [STORY.replace('fox', ['fox', 'cat', 'owl', 'dog'][i % 4]) + f"The end {i}." for i in range(n)]
    path = tmp_path / 'stories.txt'
    path.write_text('\n\n'.join(docs) + tail, encoding='utf-8')
    return path, docs


def upstream_meta(path):
    """What upstream nanoGPT's sample.py does with data/<dataset>/meta.pkl."""
    with open(path, 'rb') as f:
        meta = pickle.load(f)
    stoi, itos = meta['stoi'], meta['itos']
    return meta['vocab_size'], (lambda s: [stoi[c] for c in s]), (lambda l: ''.join([itos[i] for i in l]))


def test_char_round_trip_and_upstream_meta(tmp_path):
    path, docs = corpus(tmp_path)
    prepare(input=str(path), out_dir=str(tmp_path / 'd'), tokenizer='char', block_size=16,
                        show_progress=False)
    n, encode, decode = upstream_meta(tmp_path / 'd' / 'meta.pkl')
    tok = tk.char_tokenizer(str(tmp_path / 'd' / 'meta.pkl'))
    chars = sorted(set(''.join(docs)))
    assert n == tok.vocab_size == len(chars) + 1  # every character of train, then <|endoftext|>
    assert [tok.decode([i]) for i in range(n - 1)] == chars and tok.eot == n - 1
    for text in (docs[0], docs[-1][5:]):
        assert tok.decode(tok.encode(text)) == text
        assert tok.encode(text) == encode(text)  # upstream encodes our vocabulary the same way
    # train.bin + val.bin, decoded by upstream's code: the documents, each followed by <|endoftext|>
    ids = np.concatenate([np.fromfile(tmp_path / 'd' / f'{s}.bin', dtype=np.uint16) for s in ('train', 'val')])
    assert decode(ids.tolist()) == ''.join(d + tk.EOT for d in docs)
    assert tok.encode('ab' + tk.EOT + 'c') == [tok.encode('a')[0], tok.encode('b')[0], tok.eot, tok.encode('c')[0]]
    with pytest.raises(ValueError, match=r"\['Z'\] are not in the vocabulary"):
        tok.encode('Zoo')


def test_char_val_only_characters_error_or_unk(tmp_path):
    path, docs = corpus(tmp_path, tail='\n\nZebras queue at the jazz club ZZ.')
    with pytest.raises(PrepareError) as e:
        prepare(input=str(path), out_dir=str(tmp_path / 'd'), tokenizer='char', block_size=16,
                            val_fraction=0.05, show_progress=False)
    msg = str(e.value)
    assert "'Z' (3x)" in msg and "'q' (1x)" in msg and "--char_unk" in msg and "val_fraction" in msg
    assert not (tmp_path / 'd').exists()  # nothing written
    prepare(input=str(path), out_dir=str(tmp_path / 'd'), tokenizer='char', block_size=16,
                        val_fraction=0.05, char_unk='?', show_progress=False)
    tok = tk.data_tokenizer(str(tmp_path / 'd'))
    val = tok.decode(np.fromfile(tmp_path / 'd' / 'val.bin', dtype=np.uint16).tolist())
    assert val.endswith('?ebras ?ueue at the ?a?? club ??.' + tk.EOT)
    assert tok.encode('Zq') == [tok.encode('?')[0]] * 2


@pytest.mark.parametrize('regex', [True, False])
def test_bpe_exact_and_deterministic(regex):
    text = (STORY * 20 + ODD).splitlines(keepends=True)
    a = tk.train_bpe(text, 330, regex).to_str()
    assert tk.train_bpe(text, 330, regex).to_str() == a  # same text, same vocabulary, ids and merges
    tok = tk.bpe_tokenizer(a)
    assert tok.vocab_size == 330 and tok.token_bytes(tok.eot) == tk.EOT.encode()
    for s in (''.join(text), ODD, 'words it never saw: zyzzyva, Ωμέγα, 🦊🦊', STORY + tk.EOT + 'x'):
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert b''.join(tok.token_bytes(i) for i in ids) == s.encode('utf-8')  # bytes add up exactly
    assert tok.encode('a' + tk.EOT)[-1] == tok.eot
    pieces = [tok.token_bytes(i) for i in range(257, 330)]
    crossing = [p for p in pieces if b' ' in p.strip()]  # a space inside a token: it joins two words
    assert (crossing == []) == regex, crossing[:5]


def test_prepare_bpe_files_and_limits(tmp_path):
    path, docs = corpus(tmp_path)
    with pytest.raises(PrepareError, match='vocab_size=70000 must be .* at most 65,536'):
        prepare(input=str(path), out_dir=str(tmp_path / 'd'), tokenizer='bpe', vocab_size=70000)
    prepare(input=str(path), out_dir=str(tmp_path / 'd'), tokenizer='bpe', vocab_size=300,
                        block_size=16, show_progress=False)
    import json
    info = json.loads((tmp_path / 'd' / 'prepare_info.json').read_text())
    assert info['tokenizer'] == 'bpe' and info['vocab_size'] == 300 and info['bpe_regex'] is True
    tok = tk.bpe_tokenizer_file(str(tmp_path / 'd' / 'tokenizer.json'))
    ids = np.concatenate([np.fromfile(tmp_path / 'd' / f'{s}.bin', dtype=np.uint16) for s in ('train', 'val')])
    assert tok.decode(ids.tolist()) == ''.join(d + tk.EOT for d in docs)
    assert info['tokens']['total'] == len(ids)
    # the vocabulary is made from train only: a word only in val is not one token
    assert len(tok.encode(' 39')) > 1 or ' 39' not in ''.join(docs[:36])
    # then the same folder as characters: the stale tokenizer.json goes, so loaders cannot pick it up
    prepare(input=str(path), out_dir=str(tmp_path / 'd'), tokenizer='char', block_size=16,
                        show_progress=False)
    assert sorted(os.listdir(tmp_path / 'd')) == ['meta.pkl', 'prepare_info.json', 'train.bin', 'val.bin']


def hand_bits_per_byte(model, ids, text):
    """Independent float64: -sum log p(ids[t] | ids[:t]) / ln 2 / UTF-8 bytes of the text."""
    with torch.no_grad():
        model.double()
        lp = torch.log_softmax(model(torch.tensor([ids[:-1]]), all_logits=True)[0][0], -1)  # (T, V)
        model.float()
    nll = -sum(lp[t, ids[t + 1]].item() for t in range(len(ids) - 1))
    return nll / math.log(2) / len(text.encode('utf-8'))


def test_bits_per_byte_by_hand_for_each_tokenizer(tmp_path, gpt2_tok):
    from eval import evaluate_val
    text = "Once upon a time, a naïve fox — 🦊 — ran.\nThe end."
    bpe = tk.bpe_tokenizer(tk.train_bpe([STORY * 5 + ODD], 300).to_str())
    char = tk.char_from_meta(tk.char_meta(text), 'test')
    for tok in (char, bpe, gpt2_tok):
        ids = [tok.eot] + tok.encode(text)  # after <|endoftext|>: every byte of the text is predicted
        assert len(ids) <= 64
        model = tiny_model(vocab_size=tok.vocab_size, block_size=64)
        r = evaluate_val(model, tok, ids, stride=32, progress=False)
        assert r.bytes == len(text.encode('utf-8')) == 57
        assert r.bits_per_byte == pytest.approx(hand_bits_per_byte(model, ids, text), rel=1e-5), tok.kind
        # the separator is predicted (its loss counts) but is not text (its bytes do not)
        r2 = evaluate_val(model, tok, ids + [tok.eot], stride=32, progress=False)
        assert r2.bytes == r.bytes and r2.nll > r.nll


def test_checkpoint_records_tokenizer_and_upstream_ones_use_the_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, docs = corpus(tmp_path)
    prepare(input=str(path), out_dir='data/s', tokenizer='bpe', vocab_size=300, block_size=16,
                        show_progress=False)
    tok = tk.data_tokenizer('data/s')
    write_ckpt('up', tiny_model(vocab_size=300), config={'dataset': 's'})  # upstream: no 'tokenizer' key
    write_ckpt('ours', tiny_model(vocab_size=300), config={'dataset': 's'}, tokenizer=tok)
    assert load.load_model('up', device='cpu').tok.kind == 'bpe'  # found in data/<dataset>, as meta.pkl is
    ckpt = torch.load('ours/ckpt.pt', weights_only=True)  # plain data: no code runs on load
    assert ckpt['tokenizer']['kind'] == 'bpe' and 'tokenizer' not in ckpt['model_args']
    shutil.rmtree('data')
    copied = load.load_model('ours', device='cpu').tok  # the data folder is gone: the record decodes
    assert copied.encode(STORY) == tok.encode(STORY) and copied.decode(tok.encode(ODD)) == ODD
    with pytest.raises(ValueError, match="'tokenizer' entry is not one of gpt2, char, bpe"):
        tk.tokenizer_from_record({'kind': 'sentencepiece'})


@pytest.mark.parametrize('kind', ['char', 'bpe'])
def test_train_sample_eval_end_to_end(tmp_path, kind):
    """prepare -> train.py -> (data folder moved away) sample.py and eval.py, all on the model's own tokens."""
    path, docs = corpus(tmp_path, n=30)
    prepare(input=str(path), out_dir=str(tmp_path / 'data' / 'st'), tokenizer=kind, vocab_size=300,
                        block_size=32, show_progress=False)
    run_script('train.py', '--dataset=st', '--out_dir=out', '--n_layer=1', '--n_head=2', '--n_embd=32',
               '--block_size=32', '--batch_size=4', '--max_iters=4', '--eval_interval=2', '--eval_iters=1',
               '--device=cpu', '--compile=False', '--plot=False', '--learning_rate=1e-2', cwd=tmp_path)
    os.rename(tmp_path / 'data', tmp_path / 'elsewhere')
    (tmp_path / 'eval_data.json').write_text('[{"prompt": "The fox", "response": " ran."}]')
    out = run_script('sample.py', '--out_dir=out', '--start=Once upon', '--num_samples=1', '--max_new_tokens=12',
                     '--device=cpu', '--seed=3', cwd=tmp_path).stdout
    assert 'Once upon' in out
    out = run_script('eval.py', '--out_dir=out', '--device=cpu', '--val_data=elsewhere/st/val.bin', cwd=tmp_path).stdout
    assert 'bits per byte' in out
    (tmp_path / 'eval_data.json').write_text('[{"prompt": "The fox", "response": " ran."}, {"prompt": "Zoo", '
                                             '"response": " ok"}]')
    if kind == 'char':  # a pair with a character the model has never seen names it and the pair
        proc = run_script('eval.py', '--out_dir=out', '--device=cpu', cwd=tmp_path, check=False)
        assert proc.returncode == 1
        assert "pair 2 cannot be encoded: characters ['Z'] are not in the vocabulary" in proc.stderr


def test_tiktoken_cache_folder_built_offline(tmp_path, monkeypatch, gpt2_tok):
    """tools/tiktoken_cache.py turns vocab.bpe and encoder.json (here: copies with Windows line ends and
    other JSON spacing) into a folder that tiktoken itself loads GPT-2 from with TIKTOKEN_CACHE_DIR set,
    downloading nothing; a file that is not GPT-2's stops with one line naming it."""
    import json
    import tiktoken
    import tiktoken.load
    import tiktoken_ext.openai_public
    from configurator import UserError
    from tools.tiktoken_cache import build
    cached = os.environ['TIKTOKEN_CACHE_DIR']  # the copies this test session loads GPT-2 from (conftest)
    read = lambda name: open(os.path.join(cached, tk.tiktoken_cache_name(name)), 'rb').read()  # noqa: E731
    (tmp_path / 'merges.txt').write_bytes(read('vocab.bpe').replace(b'\n', b'\r\n'))
    (tmp_path / 'vocab.json').write_text(json.dumps(json.loads(read('encoder.json')), indent=1))
    build(tmp_path / 'merges.txt', tmp_path / 'vocab.json', tmp_path / 'cache')

    def no_download(url):
        raise AssertionError(f"tiktoken tried to download {url}")
    monkeypatch.setattr(tiktoken.load, 'read_file', no_download)
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', str(tmp_path / 'cache'))
    enc = tiktoken.Encoding(**tiktoken_ext.openai_public.gpt2())  # what get_encoding('gpt2') builds
    text = 'Once upon a time, a tailor said "Hello world" to the moon.'
    assert enc.encode('Hello world') == [15496, 995] and enc.encode(text) == gpt2_tok.encode(text)
    assert sorted(os.listdir(tmp_path / 'cache')) == sorted(map(tk.tiktoken_cache_name, tk.GPT2_FILES))

    (tmp_path / 'bad.json').write_text('{"a": 0}')
    with pytest.raises(UserError, match=r"^--encoder_json=.*bad\.json is not GPT-2's encoder\.json: its SHA-256"):
        build(tmp_path / 'merges.txt', tmp_path / 'bad.json', tmp_path / 'cache2')
    assert not (tmp_path / 'cache2').exists()  # nothing written
