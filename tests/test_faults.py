"""The fault sweep's cases (issue 18): extreme values, damaged files, full disks, memory limits and interrupted
runs each end in a true result or one line naming the file, key or value and the fix; nothing is lost."""
import errno
import math
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from configurator import UserError
from conftest import tiny_model, write_ckpt
from nanoprobs import checks, load, sampling, tokenizer
from nanoprobs.decoding import generate, under_temperatures


def one_line(e):
    msg = str(e.value if hasattr(e, 'value') else e)
    assert '\n' not in msg and 'Traceback' not in msg, msg
    return msg


# -----------------------------------------------------------------------------
# sampling: any positive temperature, however small

TINY_TEMPERATURES = [1e-310, 5e-324, 2e-308]


@pytest.mark.parametrize('t', TINY_TEMPERATURES)
def test_a_tiny_temperature_is_greedy_and_never_nan(t):
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 5  # (B, V)
    lp = sampling.sampling_logprobs(logits, t)
    greedy = sampling.sampling_logprobs(logits, 0)
    # exactly greedy's distribution; a log-prob may be a huge finite negative (-5e306) rather than -inf
    assert not lp.isnan().any() and torch.equal(lp.exp(), greedy.exp()) and (lp <= 0).all()
    ids, _ = sampling.sample(logits, t, generator=torch.Generator().manual_seed(0))
    assert ids.tolist() == logits.argmax(-1).tolist()
    tie = torch.tensor([[1.0, 3.0, 3.0, -2.0]])  # the limit T -> 0 splits the mass between exact ties
    assert sampling.sampling_logprobs(tie, t).exp().tolist() == [[0.0, 0.5, 0.5, 0.0]]


@pytest.mark.parametrize('t', [1e-3, 0.7, 1.0, 3.0])
def test_the_shifted_computation_equals_the_plain_one(t):
    """Where logits / T does not overflow, the result is the textbook log_softmax(logits / T) in float64."""
    torch.manual_seed(1)
    logits = torch.randn(4, 64) * 3
    want = (logits.double() / t).log_softmax(-1)
    assert torch.allclose(sampling.sampling_logprobs(logits, t), want, rtol=0, atol=1e-12)
    k = sampling.sampling_logprobs(logits, t, top_k=5)
    top = logits.double().topk(5).indices
    ref = torch.full_like(want, -math.inf).scatter(-1, top, (logits.double() / t).gather(-1, top).log_softmax(-1))
    assert torch.allclose(k, ref, rtol=0, atol=1e-12)


def test_generate_and_the_temperature_comparison_at_a_tiny_temperature():
    model = tiny_model(vocab_size=300)
    x = torch.tensor([[5, 17, 42]])
    greedy = generate(model, x, 6, temperature=0)[0]
    for t in TINY_TEMPERATURES:
        s = generate(model, x, 6, temperature=t, top_k=200, generator=sampling.make_generator('cpu', 0))[0]
        assert s.tokens == greedy.tokens and s.sample_logprobs.tolist() == [0.0] * 6
        assert torch.allclose(s.logprobs, greedy.logprobs, rtol=0, atol=1e-12)
    top, lps, ents = under_temperatures(model, [5, 17, 42], [1e-310, 5e-324, 1.0], k=5)
    for lp in lps[:2]:
        assert lp.exp().tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert not any(map(math.isnan, ents)) and ents[0] == ents[1] == 0.0


def test_a_checkpoint_with_nan_weights_is_one_line(tmp_path):
    m = tiny_model()
    with torch.no_grad():
        m.transformer.h[1].mlp.c_fc.weight[3, 4] = float('nan')
    path = write_ckpt(tmp_path / 'out', m)
    with pytest.raises(ValueError) as e:
        load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{path}: the weights hold NaN or infinite values (transformer.h.1.mlp.c_fc.weight")
    assert 'use an earlier checkpoint' in msg


def test_huge_finite_weights_are_not_taken_for_infinite_ones(tmp_path):
    """check_finite's quick test sums each weight; finite weights that overflow the sum still load."""
    m = tiny_model()
    with torch.no_grad():
        m.transformer.h[0].attn.c_proj.weight[:2] = 3e38  # each finite; their sum is inf in float32
    write_ckpt(tmp_path / 'out', m)
    loaded = load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')
    assert loaded.model.transformer.h[0].attn.c_proj.weight.max().item() == pytest.approx(3e38)
    with torch.no_grad():
        m.transformer.h[0].attn.c_proj.weight[5, 5] = float('-inf')
    write_ckpt(tmp_path / 'out', m)
    with pytest.raises(ValueError, match=r'NaN or infinite values \(transformer.h.0.attn.c_proj.weight'):
        load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')


# -----------------------------------------------------------------------------
# train.py: settings that make no model, data it cannot use, wandb, full disks (run in this process)

@pytest.fixture(scope='module')
def char_data(tmp_path_factory):
    """A character-level dataset: 150 symbols (meta.pkl), train.bin and val.bin of cycling ids."""
    d = tmp_path_factory.mktemp('char')
    ids = (np.arange(6000) % 150).astype(np.uint16)
    ids[:5000].tofile(d / 'train.bin')
    ids[5000:].tofile(d / 'val.bin')
    chars = [chr(0x100 + i) for i in range(150)]
    with open(d / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 150, 'itos': dict(enumerate(chars)), 'stoi': {c: i for i, c in enumerate(chars)}}, f)
    return d


def train_here(monkeypatch, out_dir, data_dir, **kw):
    from test_train import train_here as run
    return run(monkeypatch, out_dir, data_dir, **kw)


@pytest.mark.parametrize('kw,start', [
    (dict(n_head=3), "--n_head=3 does not divide n_embd=32 (each head gets n_embd / n_head channels); use a "
                     "divisor of 32, e.g. --n_head=2 (1, 2, 4, 8, 16, 32)"),
    (dict(n_embd=0), "--n_embd=0 must be a whole number of at least 1"),
    (dict(n_head=0), "--n_head=0 must be a whole number of at least 1"),
    (dict(seed=99999999999999999999), "--seed=99999999999999999999 must be a whole number from 0 to 4294967295"),
    (dict(wandb_log=True), "wandb_log=True needs the wandb package: pip install wandb (or --wandb_log=False)"),
])
def test_train_settings_that_make_no_run_fail_before_any_work(tmp_path, monkeypatch, kw, start):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # not installed: `import wandb` raises ImportError
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', tmp_path / 'nodata', **kw)
    assert one_line(e).startswith(start), str(e.value)
    assert not (tmp_path / 'out').exists()


def test_train_a_model_too_big_for_memory_is_one_line(tmp_path, monkeypatch, char_data):
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', char_data, n_layer=10 ** 9)
    msg = one_line(e)
    assert msg.startswith("a model of 12,") and 'cannot fit' in msg and '--n_layer' in msg, msg


def test_train_token_ids_beyond_the_vocabulary_name_the_file(tmp_path, monkeypatch, char_data):
    bad = tmp_path / 'bad'
    bad.mkdir()
    for f in ('meta.pkl', 'val.bin'):
        (bad / f).write_bytes((char_data / f).read_bytes())
    (np.arange(3000) % 200).astype(np.uint16).tofile(bad / 'train.bin')  # ids up to 199, vocabulary of 150
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', bad, max_iters=2)
    msg = one_line(e)
    assert msg.startswith(f"{bad / 'train.bin'} holds token id 1") and "vocabulary of 150 tokens" in msg
    assert 'prepare_bin.py' in msg


def test_train_odd_sized_bin_names_the_file(tmp_path, monkeypatch, char_data):
    bad = tmp_path / 'odd'
    bad.mkdir()
    (bad / 'train.bin').write_bytes((char_data / 'train.bin').read_bytes() + b'\x07')
    (bad / 'val.bin').write_bytes((char_data / 'val.bin').read_bytes())
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', bad)
    assert one_line(e).startswith(f"{bad / 'train.bin'} is 10,001 bytes, an odd number: a .bin holds 2-byte")


def torch_full_disk(real_save, fail_on):
    """torch.save as it fails on a full disk: torch's own RuntimeError, not an OSError (written half)."""
    calls = []

    def save(obj, f):
        calls.append(f)
        if len(calls) == fail_on:
            with open(f, 'wb') as half:
                half.write(b'PK half a checkpoint')
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')
        real_save(obj, f)
    return save, calls


def test_train_full_disk_in_torch_save_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch, char_data):
    out = tmp_path / 'out'
    save, calls = torch_full_disk(torch.save, 2)
    monkeypatch.setattr(torch, 'save', save)
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, out, char_data, max_iters=4, eval_interval=2)
    msg = one_line(e)
    assert len(calls) == 2 and msg.startswith(f"could not save {out / 'ckpt.pt'}: torch could not write the file")
    assert f"{out / 'ckpt.pt'} is as before" in msg and 'free' in msg
    assert load.load_checkpoint(out)['iter_num'] == 2  # the earlier checkpoint, whole
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.csv']  # no temporary file left


def test_train_disk_full_at_start_is_one_line(tmp_path, monkeypatch, char_data):
    """The first file train.py writes is the loss log (through the atomic writer): a full disk there is one
    line too, and a resumed run's log.csv stays as it was."""
    from nanoprobs import atomic
    monkeypatch.setattr(atomic, 'write_all', full_disk_writes(atomic.write_all))
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', char_data, max_iters=2)
    msg = one_line(e)
    assert msg.startswith(f"could not write {tmp_path / 'out' / 'log.csv'}: No space left on device"), msg
    assert os.listdir(tmp_path / 'out') == []  # the temporary file is gone


def full_disk_writes(real_write_all):
    """atomic.write_all on a full disk: each file's writer starts, then fails with ENOSPC."""
    def write_all(writers, *a, **k):
        def fail(tmp):
            with open(tmp, 'w') as f:
                f.write('half')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_all({p: fail for p in writers}, *a, **k)
    return write_all


# -----------------------------------------------------------------------------
# damaged or edited files: checkpoints, vocabularies, Hugging Face folders

def test_n_params_counts_what_the_model_has():
    from model import GPT, GPTConfig
    for bias in (True, False):
        args = dict(n_layer=3, n_head=2, n_embd=16, block_size=8, vocab_size=70, bias=bias)
        assert checks.n_params(args) == GPT(GPTConfig(**args)).get_num_params(non_embedding=False)


@pytest.mark.parametrize('edit,part', [
    (lambda a: a.update(n_layer='2'), "model_args n_layer='2' must be a whole number of at least 1"),
    (lambda a: a.update(n_embd=0), "model_args n_embd=0 must be a whole number of at least 1"),
    (lambda a: a.update(n_layer=10 ** 9), "model_args n_layer=1000000000 but its weights hold 2"),
    (lambda a: a.update(n_head=5), "model_args n_head=5 does not divide n_embd=32"),
    (lambda a: a.update(vocab_size=100), "model_args vocab_size=100 but its weights hold 50257"),
])
def test_edited_model_args_are_one_line(tmp_path, monkeypatch, edit, part):
    ckpt = load.checkpoint_dict(tiny_model())
    edit(ckpt['model_args'])
    os.makedirs(tmp_path / 'out')
    torch.save(ckpt, tmp_path / 'out' / 'ckpt.pt')
    with pytest.raises(ValueError) as e:
        load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{tmp_path / 'out' / 'ckpt.pt'}: {part}") and 'use another checkpoint' in msg, msg


def test_model_args_that_are_not_a_dict(tmp_path):
    ckpt = load.checkpoint_dict(tiny_model())
    ckpt['model_args'] = 'n_layer=2'
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    with pytest.raises(ValueError) as e:
        load.load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert one_line(e) == (f"{tmp_path / 'ckpt.pt'}: model_args is a str, not a dict of the model's sizes; the "
                           "checkpoint is damaged or was edited: use another checkpoint")


@pytest.mark.parametrize('itos,part', [
    ({0: 'a', 2: 'b'}, "'itos' must map every id 0..1 to its text; id 1 is missing"),
    ({0: 'a', 1: 7}, "'itos' id 1 is 7, not a string"),
    ('ab', "'itos' is a str, not a dict {id: text} or a list"),
    (['a', 'a'], "'itos' holds 'a' twice"),
])
def test_malformed_meta_pkl_is_one_line(tmp_path, itos, part):
    path = tmp_path / 'meta.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'vocab_size': 2, 'itos': itos, 'stoi': {}}, f)
    with pytest.raises(tokenizer.LoadError) as e:
        tokenizer.char_tokenizer(str(path))
    msg = one_line(e)
    assert msg.startswith(f"{path}: {part}") and 'prepare_bin.py --tokenizer=char' in msg, msg


@pytest.mark.parametrize('rec,part', [
    ({'kind': 'char', 'itos': ['a', 3]}, "'itos' id 1 is 3, not a string"),
    ({'kind': 'char', 'itos': ['a', 'b'], 'unk': 5}, "'unk' is 5, not one character"),
    ({'kind': 'char', 'itos': 'ab'}, "'itos' is a str, not a dict {id: text} or a list"),
])
def test_character_tokenizer_record_of_the_wrong_type_is_one_line(rec, part):
    with pytest.raises(tokenizer.LoadError) as e:
        tokenizer.tokenizer_from_record(rec, 'out/ckpt.pt')
    msg = one_line(e)
    assert msg.startswith(f"out/ckpt.pt: {part}"), msg


def test_meta_pkl_vocab_size_must_match(tmp_path):
    path = tmp_path / 'meta.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'vocab_size': 9, 'itos': {0: 'a', 1: 'b'}, 'stoi': {}}, f)
    with pytest.raises(tokenizer.LoadError, match=r"'vocab_size' is 9 but 'itos' holds 2 tokens"):
        tokenizer.char_tokenizer(str(path))


class Runs:
    def __reduce__(self):
        return (print, ('this ran',))


@pytest.fixture(scope='module')
def hf_folder(tmp_path_factory):
    """A tiny Hugging Face GPT-2 folder (made once; each test edits its own copy) and its model."""
    from conftest import make_hf_dir
    path = tmp_path_factory.mktemp('hf') / 'hf'
    return path, make_hf_dir(path)


def copy_of(hf_folder, tmp_path):
    import shutil
    return shutil.copytree(hf_folder[0], tmp_path / 'hf'), hf_folder[1]


def test_hugging_face_folder_with_a_code_pickle_never_suggests_weights_only_false(tmp_path, capsys, hf_folder):
    _, hf = copy_of(hf_folder, tmp_path)
    os.remove(tmp_path / 'hf' / 'model.safetensors')
    sd = hf.state_dict()
    sd['x'] = Runs()
    torch.save(sd, tmp_path / 'hf' / 'pytorch_model.bin')
    with pytest.raises(ValueError) as e:
        load.load_model(str(tmp_path / 'hf'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{tmp_path / 'hf' / 'pytorch_model.bin'} holds Python objects beyond tensors"), msg
    assert 'it names print' in msg and 'weights_only' not in msg and 'trust' not in msg
    assert 'this ran' not in capsys.readouterr().out


def test_truncated_safetensors_is_one_line(tmp_path, hf_folder):
    copy_of(hf_folder, tmp_path)
    st = tmp_path / 'hf' / 'model.safetensors'
    st.write_bytes(st.read_bytes()[:st.stat().st_size // 2])
    with pytest.raises(ValueError) as e:
        load.load_model(str(tmp_path / 'hf'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{st} is not a readable weight file (truncated or corrupt?)"), msg

