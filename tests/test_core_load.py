"""load.py: checkpoints (ours, upstream's, compiled), safe loading, tokenizers, device/dtype rules."""
import os
import pickle
import signal

import pytest
import torch

from nanoprobs import load
from conftest import ROOT, make_hf_dir, run_script, tiny_model, write_ckpt
from model import GPT, MODEL_ARGS
from nanoprobs.trainstate import save_checkpoint

UPSTREAM_MODEL_ARGS = {'n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout'}


def same_outputs(a, b, vocab=50257):
    x = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x, all_logits=True)[0], b(x, all_logits=True)[0])


def test_checkpoint_round_trip(tmp_path, gpt2_tok):
    model = tiny_model()
    write_ckpt(tmp_path / 'out', model, config={'dataset': 'children_stories', 'learning_rate': 3e-5})
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert set(ckpt['model_args']) == UPSTREAM_MODEL_ARGS == set(MODEL_ARGS)  # upstream builds GPTConfig(**model_args)
    assert ckpt['gelu'] == 'tanh' and ckpt['config']['dataset'] == 'children_stories'
    loaded = load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')
    assert loaded.model.config.gelu == 'tanh' and loaded.tok.name == 'gpt2'
    assert same_outputs(model, loaded.model)
    # the same checkpoint by path and by folder
    for init_from in (str(tmp_path / 'out' / 'ckpt.pt'), str(tmp_path / 'out')):
        assert same_outputs(model, load.load_model(init_from, device='cpu').model)


def test_upstream_format_checkpoint_loads_with_exact_gelu(tmp_path, gpt2_tok):
    """A checkpoint exactly as upstream's train.py writes it: compiled-model keys, no 'gelu' key,
    best_val_loss a tensor, optimizer state, config of primitives."""
    model = tiny_model(gelu='exact')
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    x = torch.randint(0, 50257, (2, 8))
    model(x, x)[1].backward()
    opt.step()
    ckpt = {
        'model': {'_orig_mod.' + k: v for k, v in model.state_dict().items()},
        'optimizer': opt.state_dict(),
        'model_args': dict(n_layer=2, n_head=4, n_embd=32, block_size=32, bias=True, vocab_size=50257, dropout=0.0),
        'iter_num': 250,
        'best_val_loss': torch.tensor(3.21),
        'config': {'dataset': 'openwebtext', 'batch_size': 12, 'learning_rate': 6e-4, 'compile': True},
    }
    os.makedirs(tmp_path / 'up')
    torch.save(ckpt, tmp_path / 'up' / 'ckpt.pt')
    loaded = load.load_model('resume', out_dir=str(tmp_path / 'up'), device='cpu')
    assert loaded.model.config.gelu == 'exact'  # trained with exact GELU, keeps it
    assert same_outputs(model, loaded.model)


def test_weights_only_refuses_code(tmp_path):
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    ckpt = load.checkpoint_dict(tiny_model())
    ckpt['config'] = {'x': Evil()}
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    with pytest.raises(ValueError, match='run code'):
        load.load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert not marker.exists()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no checkpoint at .*ckpt.pt'):
        load.load_model('resume', out_dir=str(tmp_path / 'nothing'), device='cpu')
    path = write_ckpt(tmp_path / 'out')
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[: len(data) // 2])  # truncated download
    with pytest.raises(ValueError, match='not a readable torch checkpoint'):
        load.load_checkpoint(path)
    torch.save({'weights': {}}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match="expected keys 'model' and 'model_args'"):
        load.load_checkpoint(str(tmp_path / 'other.pt'))
    ckpt = load.checkpoint_dict(tiny_model())
    ckpt['model_args']['n_embd'] = 64
    torch.save(ckpt, tmp_path / 'wrong.pt')
    with pytest.raises(ValueError, match='model_args n_embd=64 but its weights hold 32'):
        load.load_model(str(tmp_path / 'wrong.pt'), device='cpu')
    with pytest.raises(ValueError, match="unknown init_from='gpt5'"):
        load.load_model('gpt5', device='cpu')
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(ValueError, match='neither config.json'):
        load.load_model(str(tmp_path / 'empty'), device='cpu')


def test_only_ckpt_last_is_offered(tmp_path, gpt2_tok):
    """A run whose val loss never beat iteration 0's leaves ckpt_last.pt and no ckpt.pt: loading its out_dir
    says so in one line with the setting that loads the file, and that setting works."""
    model = tiny_model()
    out = tmp_path / 'run'
    os.replace(write_ckpt(out, model), out / 'ckpt_last.pt')
    last = str(out / 'ckpt_last.pt')
    for init_from in ('resume', str(out)):  # --out_dir=run, or --init_from=run (a folder)
        with pytest.raises(FileNotFoundError) as e:
            load.load_model(init_from, out_dir=str(out), device='cpu')
        msg = str(e.value)
        assert '\n' not in msg and 'ckpt_last.pt' in msg and msg.endswith(f"--init_from={last}"), msg
    assert same_outputs(model, load.load_model(last, device='cpu').model)
    os.remove(last)  # nothing at all: the message for a folder that never held a run
    with pytest.raises(FileNotFoundError, match='train one with train.py'):
        load.load_model('resume', out_dir=str(out), device='cpu')


def test_vocab_size_mismatch_is_an_error(tmp_path, gpt2_tok):
    write_ckpt(tmp_path / 'out', tiny_model(vocab_size=1000))
    with pytest.raises(ValueError, match='vocab_size 1000'):
        load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')


def test_char_level_checkpoint_uses_meta_pkl(tmp_path, monkeypatch):
    chars = sorted(set('once upon a time\n'))
    meta = {'vocab_size': len(chars), 'stoi': {c: i for i, c in enumerate(chars)}, 'itos': dict(enumerate(chars))}
    os.makedirs(tmp_path / 'data' / 'tiny_char')
    with open(tmp_path / 'data' / 'tiny_char' / 'meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    write_ckpt(tmp_path / 'out', tiny_model(vocab_size=len(chars)), config={'dataset': 'tiny_char'})
    monkeypatch.chdir(tmp_path)  # upstream looks for data/<dataset>/meta.pkl from the working directory
    loaded = load.load_model('resume', device='cpu')
    assert loaded.tok.name.startswith('char:')
    assert loaded.tok.decode(loaded.tok.encode('a time')) == 'a time'
    with pytest.raises(ValueError, match=r"\['z'\] are not in the vocabulary"):
        loaded.tok.encode('zoo')


def test_hf_directory_loads_with_tokenizer(tiny_hf_dir, gpt2_tok):
    loaded = load.load_model(str(tiny_hf_dir), device='cpu')
    assert loaded.model.config.gelu == 'tanh' and loaded.tok.eot == 50256
    assert not loaded.model.training


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = write_ckpt(tmp_path / 'out')
    before = open(path, 'rb').read()

    def crash(obj, f):
        with open(f, 'wb') as half:
            half.write(b'half a checkpoint')
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(load.checkpoint_dict(tiny_model(seed=1)), path)
    assert open(path, 'rb').read() == before  # the previous good checkpoint is intact
    assert os.listdir(tmp_path / 'out') == ['ckpt.pt']  # and no temp file is left behind


def test_tokenizer_token_text(gpt2_tok):
    ids = gpt2_tok.encode('Once upon a time\n<|endoftext|>')
    assert ids[-1] == 50256 and gpt2_tok.decode(ids) == 'Once upon a time\n<|endoftext|>'
    assert [gpt2_tok.token_text(i) for i in ids[:3]] == ['Once', ' upon', ' a']
    assert gpt2_tok.token_text(50300) == '<id 50300>'  # padded vocabulary (50304) ids the tokenizer lacks
    partial = gpt2_tok.encode('é')  # may be one token or split bytes; never raises
    assert ''.join(gpt2_tok.token_text(i) for i in partial)


# -----------------------------------------------------------------------------
# device, dtype, autocast, GradScaler rules (no GPU here: availability is monkeypatched)

def fake_hardware(monkeypatch, cuda=False, capability=(8, 0), mps=False):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda *a, **k: capability)
    # newer torch says True here even on GPUs that only emulate bfloat16: the rule must not rely on it
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: mps)


@pytest.mark.parametrize('hw,device,dtype,scaler', [
    (dict(cuda=True, capability=(8, 0)), 'cuda', 'bfloat16', False),  # A100 and newer: bfloat16 tensor cores
    (dict(cuda=True, capability=(7, 5)), 'cuda', 'float16', True),    # T4, V100: float16 with a GradScaler
    (dict(mps=True), 'mps', 'float32', False),
    (dict(), 'cpu', 'float32', False),
])
def test_auto_device_and_dtype(monkeypatch, hw, device, dtype, scaler):
    fake_hardware(monkeypatch, **hw)
    d = load.resolve_device('auto')
    assert d == device
    t = load.resolve_dtype('auto', load.device_type_of(d))
    assert t == dtype
    assert load.use_grad_scaler(load.device_type_of(d), t) == scaler


@pytest.mark.parametrize('native_bf16', [True, False])
def test_auto_dtype_trains_in_bfloat16_only_on_cpus_with_bfloat16_matmuls(monkeypatch, native_bf16):
    """dtype=auto: bfloat16 autocast for training on a CPU with AMX/AVX512-BF16, float32 on other CPUs and
    for inference everywhere on CPU (exact probabilities)."""
    monkeypatch.setattr(load, 'cpu_has_bf16', lambda: native_bf16)
    assert load.resolve_dtype('auto', 'cpu', training=True) == ('bfloat16' if native_bf16 else 'float32')
    assert load.resolve_dtype('auto', 'cpu') == 'float32'
    assert load.resolve_dtype('auto', 'mps', training=True) == 'float32'
    assert load.resolve_dtype('float32', 'cpu', training=True) == 'float32'


def test_explicit_device_rules(monkeypatch):
    fake_hardware(monkeypatch)
    with pytest.raises(ValueError, match='CUDA is not available'):
        load.resolve_device('cuda:1')
    with pytest.raises(ValueError, match='MPS is not available'):
        load.resolve_device('mps')
    with pytest.raises(ValueError, match='unknown device'):
        load.resolve_device('tpu')
    assert load.device_type_of('cuda:1') == 'cuda'
    assert not load.use_grad_scaler('mps', 'float16')  # GradScaler is for CUDA float16 only
    ctx = load.autocast_ctx('mps', 'float16')  # a Mac: its own autocast, not the CPU's
    assert isinstance(ctx, torch.autocast) and ctx.device == 'mps'
    with pytest.raises(ValueError, match='MPS has no float64'):
        load.resolve_dtype('float64', 'mps')
    assert not load.use_grad_scaler('cuda', 'bfloat16')
    with pytest.raises(ValueError, match='unknown dtype'):
        load.resolve_dtype('fp8', 'cpu')


def test_autocast_and_compile_rules(monkeypatch):
    assert isinstance(load.autocast_ctx('cpu', 'float32'), type(load.nullcontext()))
    ctx = load.autocast_ctx('cpu', 'bfloat16')
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    with ctx:
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert not load.should_compile(True, 'cpu') and not load.should_compile(True, 'mps')
    assert not load.should_compile(False, 'cuda')
    monkeypatch.setattr(os, 'name', 'posix')
    assert load.should_compile(True, 'cuda')
    monkeypatch.setattr(os, 'name', 'nt')
    assert not load.should_compile(True, 'cuda')


def test_float64_load_for_exact_reference(tmp_path, gpt2_tok):
    write_ckpt(tmp_path / 'out')
    loaded = load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu', dtype='float64')
    assert loaded.model.lm_head.weight.dtype == torch.float64
    s = loaded.model.generate(torch.tensor([[1, 2]]), 3, temperature=0)[0]
    assert len(s.tokens) == 3


def test_from_pretrained_gpt2_names_come_from_the_hub(monkeypatch, tmp_path):
    """'gpt2' etc. are downloaded from the hub (hf.hub_folder); here the hub is a local folder."""
    from nanoprobs import hf
    make_hf_dir(tmp_path / 'hub', vocab_size=50257)
    asked = []
    monkeypatch.setattr(hf, 'hub_folder', lambda name: asked.append(name) or str(tmp_path / 'hub'))
    model = GPT.from_pretrained('gpt2', dict(dropout=0.1))
    assert asked == ['gpt2'] and model.config.dropout == 0.1 and model.config.gelu == 'tanh'


def test_offline_gpt2_is_a_clear_error(monkeypatch):
    from nanoprobs import hf

    def offline(name):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(hf, 'hub_folder', offline)
    with pytest.raises(ValueError, match=r"could not load 'gpt2'.*offline, give a local Hugging Face GPT-2 folder"):
        load.load_model('gpt2', device='cpu')


def test_missing_bpe_files_offline_is_a_one_line_error(tmp_path):
    """No tiktoken cache and no network: the script says what to do, without a traceback."""
    import subprocess
    import sys
    from conftest import ROOT
    write_ckpt(tmp_path / 'out')
    env = {**os.environ, 'TIKTOKEN_CACHE_DIR': str(tmp_path / 'empty_cache'), 'HTTPS_PROXY': 'http://127.0.0.1:9',
           'https_proxy': 'http://127.0.0.1:9'}
    proc = subprocess.run([sys.executable, str(ROOT / 'sample.py'), '--out_dir=out', '--num_samples=1',
                           '--max_new_tokens=2'], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: could not load tiktoken's GPT-2 vocabulary")
    assert 'TIKTOKEN_CACHE_DIR' in proc.stderr


def test_every_hf_weight_layout_loads_the_same_without_touching_the_rng(tmp_path):
    """A folder's weights as model.safetensors, as shards with an index, as pytorch_model.bin, and as the
    hub's original GPT-2 files (keys without 'transformer.', no lm_head copy) give the same model, with
    transformers' logits; loading draws no random numbers (nothing is initialised only to be overwritten),
    and neither does a checkpoint's."""
    from safetensors.torch import save_file
    hf = make_hf_dir(tmp_path / 'st', vocab_size=97, n_positions=16)
    hf.save_pretrained(tmp_path / 'shards', max_shard_size='20KB')
    for f in ('bin', 'orig'):
        os.makedirs(tmp_path / f)
        hf.config.save_pretrained(tmp_path / f)
    torch.save(hf.state_dict(), tmp_path / 'bin' / 'pytorch_model.bin')  # older transformers' format
    save_file({k[len('transformer.'):]: v.contiguous() for k, v in hf.state_dict().items()
               if k.startswith('transformer.')}, str(tmp_path / 'orig' / 'model.safetensors'))
    assert len([f for f in os.listdir(tmp_path / 'shards') if f.endswith('.safetensors')]) > 1
    x = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = hf(x).logits
    rng = torch.get_rng_state()
    models = [GPT.from_pretrained(str(tmp_path / f)).eval() for f in ('st', 'shards', 'bin', 'orig')]
    write_ckpt(tmp_path / 'out', models[0])
    rng2 = torch.get_rng_state()
    models.append(load.model_from_checkpoint(load.load_checkpoint(str(tmp_path / 'out'))).eval())
    assert torch.equal(torch.get_rng_state(), rng2) and torch.equal(rng2, rng)
    with torch.no_grad():
        got = [m(x, all_logits=True)[0] for m in models]
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(g, got[0]) for g in got[1:])


CHILD = """import sys, torch
from nanoprobs import load
init_from, out_dir, path = sys.argv[1:]
x = torch.randint(0, 50257, (1, 8))
m = load.load_model(init_from, out_dir, 'cpu', 'float32').model
with torch.no_grad():
    before = m(x)[0]
with open(path, 'r+b') as f:  # in place: the same inode, truncated, then other contents
    f.truncate(0)
    f.write(b'other contents')
with torch.no_grad():
    sys.exit(0 if torch.equal(m(x)[0], before) else 3)
"""


def test_a_loaded_model_survives_its_file_rewritten_in_place(tmp_path):
    """Upstream's train.py truncates and rewrites ckpt.pt in place, save_pretrained rewrites model.safetensors:
    a model loaded from either keeps working with its own weights. A model still mapping its file dies of
    SIGBUS, so the check runs in its own process and the test reads how it ended."""
    write_ckpt(tmp_path / 'out')
    make_hf_dir(tmp_path / 'hf')
    (tmp_path / 'child.py').write_text(CHILD)
    for init_from, path in (('resume', tmp_path / 'out' / 'ckpt.pt'),
                            (str(tmp_path / 'hf'), tmp_path / 'hf' / 'model.safetensors')):
        proc = run_script(str(tmp_path / 'child.py'), init_from, tmp_path / 'out', path, cwd=tmp_path, check=False,
                          env={'PYTHONPATH': str(ROOT)})
        assert proc.returncode == 0, (f"{init_from}: ended with {proc.returncode} (-{int(signal.SIGBUS)} is "
                                      f"SIGBUS: the model still maps its file)\n{proc.stderr[-2000:]}")
