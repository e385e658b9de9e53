"""load.py faults: damaged or malicious files are one clear line; offline hub models fail fast."""
import os
import pickle
import time

import pytest

import load
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
    with pytest.raises(load.LoadError, match=r'meta\.pkl is not a readable pickle \(truncated or corrupt\?\)'):
        load.char_tokenizer(str(path))
