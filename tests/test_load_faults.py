"""load.py faults: damaged or malicious files are one clear line; offline hub models fail fast."""
import os
import pickle
import time

import pytest

from nanoprobs import load, tokenizer
from conftest import run_script, tiny_model, write_ckpt


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.mark.parametrize('head', [b'', b'\x80', b'PK\x03\x04'])
def test_random_bytes_are_a_corrupt_file_not_code(tmp_path, head):
    """Random bytes (also ones that start like a pickle or a zip) are called corrupt, never a code-running pickle."""
    rng = __import__('random').Random(0)
    for i in range(20):
        path = tmp_path / f'ckpt{i}.pt'
        path.write_bytes(head + bytes(rng.randrange(256) for _ in range(3000)))
        with pytest.raises(ValueError) as e:
            load.load_checkpoint(str(path))
        msg = str(e.value)
        assert 'run code' not in msg and 'not a' in msg and ('corrupt' in msg) and str(path) in msg
        assert '\n' not in msg


def test_code_in_a_checkpoint_names_what_it_would_run(tmp_path):
    import torch
    ckpt = load.checkpoint_dict(tiny_model())
    ckpt['config'] = {'x': Evil(str(tmp_path / 'pwned'))}
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    with pytest.raises(ValueError, match=r'run code from the file\): it names (io|builtins)\.open$') as e:
        load.load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert 'Weights only load failed' not in str(e.value) and not (tmp_path / 'pwned').exists()


def test_malicious_meta_pkl_is_one_line(tmp_path):
    """sample.py on a char-level checkpoint whose meta.pkl would run code: refused, one line, no traceback."""
    os.makedirs(tmp_path / 'data' / 'evil')
    marker = tmp_path / 'pwned'
    with open(tmp_path / 'data' / 'evil' / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 3, 'stoi': {}, 'itos': {}, 'x': Evil(str(marker))}, f)
    write_ckpt(tmp_path / 'out', tiny_model(vocab_size=3), config={'dataset': 'evil'})
    proc = run_script('sample.py', '--out_dir=out', '--num_samples=1', '--max_new_tokens=2', '--device=cpu',
                      cwd=tmp_path, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()
    assert len(last) == 1 and last[0].startswith('error: ')
    assert 'meta.pkl' in last[0] and '.open' in last[0] and 'prepare.py' in last[0]
    assert not marker.exists()


def test_corrupt_meta_pkl(tmp_path):
    path = tmp_path / 'meta.pkl'
    path.write_bytes(b'\x80\x04\x95garbage')
    with pytest.raises(tokenizer.LoadError, match=r'meta\.pkl is not a readable pickle \(truncated or corrupt\?\)'):
        tokenizer.char_tokenizer(str(path))


# -----------------------------------------------------------------------------
# offline: one quick check of the hub instead of transformers' ~30 s of retries

def test_hub_reachable_is_one_quick_check(monkeypatch):
    import socket
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    port = server.getsockname()[1]
    monkeypatch.setenv('HTTPS_PROXY', f'http://127.0.0.1:{port}')  # the check goes to the proxy when one is set
    assert load.hub_reachable()
    server.close()
    t = time.perf_counter()
    assert not load.hub_reachable(timeout=2.0)  # nobody listens any more: refused at once
    assert time.perf_counter() - t < 2.6


def test_offline_gpt2_fails_fast_without_asking_the_hub(monkeypatch):
    from nanoprobs import hf
    called = []
    monkeypatch.setattr(hf, 'hub_folder', lambda name: called.append(name) or time.sleep(30))
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(load, 'hub_reachable', lambda timeout=2.0: False)
    monkeypatch.setattr(load, 'hub_cached', lambda name: None)
    with pytest.raises(tokenizer.LoadError, match=r"cannot download 'gpt2': no network .* not in the Hugging Face cache"):
        load.load_model('gpt2', device='cpu')
    assert called == []  # no download attempt, so no retries


def test_offline_gpt2_uses_the_cached_copy(monkeypatch, tmp_path):
    from conftest import make_hf_dir
    from nanoprobs import hf
    make_hf_dir(tmp_path / 'cached')
    called = []
    monkeypatch.setattr(hf, 'hub_folder', lambda name: called.append(name) or time.sleep(30))
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(load, 'hub_reachable', lambda timeout=2.0: False)
    monkeypatch.setattr(load, 'hub_cached', lambda name: str(tmp_path / 'cached') if name == 'gpt2' else None)
    m = load.load_model('gpt2', device='cpu')
    assert called == [] and m.source == 'gpt2' and m.model.config.n_embd == 32  # the cached folder, read as is


@pytest.mark.parametrize('script', ['sample.py', 'train.py'])
def test_offline_gpt2_script_is_one_fast_line(tmp_path, script):
    """--init_from=gpt2 with no network and an empty Hugging Face cache (simulated with a proxy that
    refuses connections): one line, well before transformers' ~33 s of retries, in every script."""
    env = {'HF_HUB_OFFLINE': '', 'HF_HOME': str(tmp_path / 'hf'), 'HTTPS_PROXY': 'http://127.0.0.1:9',
           'https_proxy': 'http://127.0.0.1:9'}
    args = ['--num_samples=1', '--max_new_tokens=2']
    if script == 'train.py':  # training reads its data before it loads the model
        import numpy as np
        (tmp_path / 'data').mkdir()
        for split in ('train', 'val'):
            np.arange(3000, dtype=np.uint16).tofile(tmp_path / 'data' / f'{split}.bin')
        args = ['--data_dir=data', '--block_size=64', '--compile=False', '--device=cpu']
    t = time.perf_counter()
    proc = run_script(script, '--init_from=gpt2', *args, cwd=tmp_path, check=False, env=env)
    took = time.perf_counter() - t
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "error: cannot download 'gpt2': no network" in proc.stderr and '--init_from=path' in proc.stderr
    assert took < 25, took  # imports included; the retries alone took ~33 s


def test_suite_without_bpe_files_skips_with_one_line(tmp_path):
    """The test suite on a machine without tiktoken's files: the tests that need them are skipped, and one
    line says what is missing and how to provide it (not a failed download per test)."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    os.makedirs(tmp_path / 'tests')
    for f in ('conftest.py', 'forkserver.py'):
        shutil.copy(ROOT / 'tests' / f, tmp_path / 'tests')
    (tmp_path / 'tests' / 'test_needs_bpe.py').write_text(
        "from nanoprobs import load\nfrom conftest import write_ckpt\n\n"
        "def test_loads(tmp_path):\n    write_ckpt(tmp_path / 'out')\n"
        "    load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')\n\n"
        "def test_fixture(gpt2_tok):\n    pass\n\n"
        "def test_plain():\n    assert 1 + 1 == 2\n")
    env = {**os.environ, 'TIKTOKEN_CACHE_DIR': str(tmp_path / 'empty'), 'HTTPS_PROXY': 'http://127.0.0.1:9',
           'https_proxy': 'http://127.0.0.1:9', 'PYTHONPATH': str(ROOT)}
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests'], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout
    assert '1 passed, 2 skipped' in proc.stdout
    notes = [ln for ln in proc.stdout.splitlines() if 'GPT-2 BPE files' in ln]
    assert len(notes) == 1 and 'TIKTOKEN_CACHE_DIR' in notes[0] and str(tmp_path / 'empty') in notes[0]
