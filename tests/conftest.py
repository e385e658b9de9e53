"""Shared fixtures: tiny CPU models built in tmp_path, the offline GPT-2 vocabulary, a CLI runner."""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared'
if 'TIKTOKEN_CACHE_DIR' not in os.environ and (SHARED / 'tiktoken_cache').is_dir():
    os.environ['TIKTOKEN_CACHE_DIR'] = str(SHARED / 'tiktoken_cache')  # offline copy of GPT-2's BPE files
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

# A shell without job control starts a background job (`.ci/run &`, nohup, some CI runners) with SIGINT
# ignored, and an ignored signal stays ignored across fork and exec: every script a test starts would then
# shrug off the Ctrl-C the Ctrl-C tests send. Tests run as from a terminal, where Ctrl-C interrupts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if os.environ.get('PYTEST_XDIST_WORKER_COUNT'):  # pytest -n N: each worker's torch takes its share of the cores
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ['PYTEST_XDIST_WORKER_COUNT'])))

from model import GPT, GPTConfig  # noqa: E402
from nanoprobs import load, tokenizer  # noqa: E402
from nanoprobs.trainstate import save_checkpoint  # noqa: E402
from forkserver import ForkServer  # noqa: E402


def _bpe_missing():
    """None when tiktoken's GPT-2 files load (cached, or downloaded now); else the one line to print."""
    try:
        tokenizer.gpt2_tokenizer()
    except tokenizer.LoadError:
        where = os.environ.get('TIKTOKEN_CACHE_DIR') or 'tiktoken\'s default cache'
        return (f"GPT-2 BPE files (tiktoken's vocab.bpe and encoder.json) are not in {where} and cannot be "
                "downloaded: tests that need them are skipped. Provide them with TIKTOKEN_CACHE_DIR=<folder of "
                "tiktoken's cached files> (this project's ../shared/tiktoken_cache), or run once with network")
    return None


BPE_MISSING = _bpe_missing()  # checked once per session


def pytest_report_header(config):
    return f"note: {BPE_MISSING}" if BPE_MISSING else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Without the BPE files, a test that fails only because it needs them is reported as skipped."""
    outcome = yield
    rep = outcome.get_result()
    if BPE_MISSING and rep.failed and "could not load tiktoken's GPT-2 vocabulary" in str(rep.longrepr):
        rep.outcome = 'skipped'
        rep.longrepr = (str(item.path), item.location[1] or 0, 'Skipped: needs the GPT-2 BPE files')


def pytest_terminal_summary(terminalreporter):
    if BPE_MISSING:
        terminalreporter.write_line(f"note: {BPE_MISSING}", yellow=True)

TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, bias=True, dropout=0.0)


def tiny_model(seed=0, vocab_size=50257, gelu='tanh', **kw):
    """A random tiny GPT (2 layers, 32 channels). Its weights are scaled up so that, like a trained
    model, it has peaked, context-dependent next-token distributions (not near-uniform ones, and not
    one that just repeats its input token through the tied embedding)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, 'vocab_size': vocab_size, 'gelu': gelu, **kw}))
    sc = 20 if vocab_size > 1000 else 10
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and 'wte' not in name and 'wpe' not in name:
                p.mul_(5)
        model.transformer.wte.weight.mul_(sc)
        model.transformer.wpe.weight.mul_(2 * sc)
    return model.eval()


@pytest.fixture
def gpt2_tok():
    if BPE_MISSING:
        pytest.skip('needs the GPT-2 BPE files')
    return tokenizer.gpt2_tokenizer()


def write_ckpt(out_dir, model=None, config=None, **extra):
    """Save a tiny model as out_dir/ckpt.pt in train.py's (= upstream's) format."""
    model = model or tiny_model()
    ckpt = load.checkpoint_dict(model, config=config or {'dataset': 'none'}, **extra)
    os.makedirs(out_dir, exist_ok=True)
    save_checkpoint(ckpt, os.path.join(out_dir, 'ckpt.pt'))
    return os.path.join(out_dir, 'ckpt.pt')


@pytest.fixture
def tiny_ckpt(tmp_path):
    """tmp_path/out/ckpt.pt holding a tiny GPT-2-vocabulary model; returns the out dir."""
    write_ckpt(tmp_path / 'out')
    return tmp_path / 'out'


def make_hf_dir(path, seed=0, **cfg):
    """A local Hugging Face GPT-2 directory with random weights (+ the tokenizer files when available)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(**{**dict(n_layer=2, n_head=4, n_embd=32, n_positions=32, vocab_size=50257), **cfg})
    hf = GPT2LMHeadModel(config).eval()
    hf.save_pretrained(path)
    tokdir = SHARED / 'gpt2_tokenizer'
    if tokdir.is_dir():
        for f in tokdir.iterdir():
            shutil.copy(f, path)
    return hf


@pytest.fixture
def tiny_hf_dir(tmp_path):
    path = tmp_path / 'hf'
    make_hf_dir(path)
    return path


_server = []


def fork_server():
    """The session's fork server (tests/forkserver.py), started on first use; None where there is no fork."""
    if not _server and hasattr(os, 'fork') and os.environ.get('NANOPROBS_TEST_FORK', '1') != '0':
        _server.append(ForkServer({**os.environ, 'OMP_NUM_THREADS': '1'}))
    return _server[0] if _server else None


@pytest.fixture(scope='session', autouse=True)
def _close_fork_server():
    yield
    if _server:
        _server[0].close()


def run_script(script, *args, cwd, check=True, timeout=300, env=None):
    """Run the project as a user would, in cwd: a top-level script ('sample.py': python sample.py ...) or a
    tool or benchmark module ('tools.beam': python -m tools.beam ..., with the repository on the path)."""
    cmd = [str(ROOT / script)] if script.endswith('.py') else ['-m', script]
    # one thread: tiny models gain nothing from two, and threads that wait on a busy machine cost seconds
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    if not script.endswith('.py'):  # python -m puts the cwd on the path, and cwd is not the repository here
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    argv = [*cmd, *map(str, args)]
    server = fork_server()
    if server is not None and server.accepts(env):
        proc = server.run(argv, cwd, env, timeout, tmpdir=None)
    else:
        proc = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def one_thread():
    """One torch thread: tiny models gain nothing from more, and on a busy machine threads cost seconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def dead_pid():
    """The pid of a process that has ended: what a killed writer's temporary file names."""
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()  # reaped: its pid now belongs to no process (until the system hands it out again)
    return proc.pid
