"""train.py and export_hf.py: learning, exact resume, kill -9, Ctrl-C, two-process gloo DDP, NaN stop,
early stopping, upstream's checkpoint format both ways, the Hugging Face export, device/dtype rules."""
import csv
import errno
import os
import pickle
import re
import runpy
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nanoprobs import load
from configurator import UserError
from conftest import ROOT, TINY, dead_pid, run_script, tiny_model
from model import GPT, GPTConfig, MODEL_ARGS

# a tiny model on a tiny task: small enough that each run is a couple of seconds on 2 CPU cores
ARGS = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=8, gradient_accumulation_steps=2,
            eval_iters=2, log_interval=1, learning_rate=1e-2, warmup_iters=0, lr_decay_iters=40, min_lr=1e-3,
            progress=False, plot=False, compile=False, device='cpu')


def args(out_dir, data_dir, **kw):
    return [f'--{k}={v}' for k, v in {**ARGS, 'out_dir': out_dir, 'data_dir': data_dir, **kw}.items()]


def cycles(rng, n, offset):
    """Cycles of 50 tokens, each cycle one of 3 variants: the next token mostly follows from the previous."""
    return np.concatenate([offset + np.arange(50) + 50 * rng.integers(0, 3) for _ in range(n)]).astype(np.uint16)


@pytest.fixture(scope='module')
def bpe_data(tmp_path_factory):
    """train.bin/val.bin of GPT-2 token ids (no meta.pkl: models get upstream's vocab_size 50304)."""
    d = tmp_path_factory.mktemp('bpe')
    ids = cycles(np.random.default_rng(0), 400, 1000)
    ids[:16000].tofile(d / 'train.bin')
    ids[16000:].tofile(d / 'val.bin')
    return d


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """A character-level dataset as upstream's shakespeare_char: 150 symbols, meta.pkl gives vocab_size."""
    d = tmp_path_factory.mktemp('char')
    ids = cycles(np.random.default_rng(1), 200, 0)
    ids[:8000].tofile(d / 'train.bin')
    ids[8000:].tofile(d / 'val.bin')
    chars = [chr(0x100 + i) for i in range(150)]
    with open(d / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 150, 'itos': dict(enumerate(chars)), 'stoi': {c: i for i, c in enumerate(chars)}}, f)
    return d


def read_log(out_dir):
    with open(os.path.join(out_dir, 'log.csv'), newline='') as f:
        return list(csv.DictReader(f))


def evals(rows):
    return [(int(r['iter']), float(r['train_loss']), float(r['val_loss'])) for r in rows if r['kind'] == 'eval']


def curve(rows):
    """The log without wall-clock times: what must be identical between two runs of the same training."""
    return [{k: v for k, v in r.items() if k != 'elapsed_s'} for r in rows]


def popen_train(*argv):
    return subprocess.Popen([sys.executable, str(ROOT / 'train.py'), *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'})


# -----------------------------------------------------------------------------

STRAIGHT = dict(eval_interval=4, dropout=0.1, always_save_checkpoint=False)


@pytest.fixture(scope='module')
def straight(tmp_path_factory, bpe_data):
    """8 iterations from scratch on GPT-2 ids (upstream's vocab 50304), evaluated every 4; its output dir."""
    tmp = tmp_path_factory.mktemp('straight')
    proc = run_script('train.py', *args(tmp / 'out', bpe_data, max_iters=8, plot=True, **STRAIGHT), cwd=tmp)
    return tmp / 'out', proc.stdout


def test_training_lowers_the_loss_and_writes_upstream_checkpoint(straight):
    out, stdout = straight
    ev = evals(read_log(out))
    assert [e[0] for e in ev] == [0, 4, 8]
    assert ev[0][2] > 10.0 and ev[-1][2] < ev[0][2] - 1.5, ev  # from ln(50304) ~ 10.8 down
    assert all(b[2] < a[2] for a, b in zip(ev, ev[1:])), ev
    assert 'step 8: train loss' in stdout and 'iter 7: loss' in stdout  # upstream's log lines
    steps = [r for r in read_log(out) if r['kind'] == 'step']
    assert [int(r['iter']) for r in steps] == list(range(8))
    assert int(steps[-1]['tokens']) == 8 * 2 * 8 * 16
    assert (out / 'loss.png').read_bytes()[:4] == b'\x89PNG'

    # the checkpoint: upstream's keys, exactly upstream's model_args, weights_only-readable, plus extras
    raw = torch.load(out / 'ckpt.pt', map_location='cpu', weights_only=True)
    assert {'model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config'} <= set(raw)
    assert set(raw['model_args']) == set(MODEL_ARGS)
    assert raw['model_args'] == dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False,
                                     vocab_size=50304, dropout=0.1)
    assert raw['iter_num'] == 8 and raw['gelu'] == 'exact'
    assert abs(float(raw['best_val_loss']) - ev[-1][2]) < 1e-6
    cfg = raw['config']
    assert cfg['dataset'] == 'openwebtext' and cfg['max_iters'] == 8 and cfg['learning_rate'] == 1e-2
    assert all(isinstance(v, (int, float, bool, str)) for v in cfg.values())
    assert not any(k.startswith('_orig_mod.') for k in raw['model'])
    # upstream's own loading code path: GPTConfig(**model_args), load_state_dict
    m = GPT(GPTConfig(**raw['model_args']))
    m.load_state_dict(raw['model'])
    ts = raw['train_state']
    assert ts['evaluated_iter'] == 8 and len(ts['rng']) == 1 and ts['tokens_seen'] == 8 * 256
    assert not (out / 'ckpt_last.pt').exists()  # every eval improved: ckpt.pt is the latest state too


def test_resume_continues_the_same_loss_curve(tmp_path, bpe_data, straight):
    """8 iterations straight == 4, stop, resume for 4 more: same losses to the last bit (dropout and its
    RNG, batch sampling, AdamW state and the LR schedule all continue)."""
    run_script('train.py', *args(tmp_path / 'b', bpe_data, max_iters=4, **STRAIGHT), cwd=tmp_path)
    proc = run_script('train.py', *args(tmp_path / 'b', bpe_data, max_iters=8, init_from='resume', **STRAIGHT),
                      cwd=tmp_path)
    assert 'Resuming training from' in proc.stdout
    a, b = curve(read_log(straight[0])), curve(read_log(tmp_path / 'b'))
    assert len(a) == 8 + 3 and a == b
    sa = torch.load(straight[0] / 'ckpt.pt', weights_only=True)['model']
    sb = torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)['model']
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_kill_9_during_training_then_resume(tmp_path, data_dir):
    out = tmp_path / 'out'
    proc = popen_train(*args(out, data_dir, max_iters=100000, eval_interval=2))
    try:
        deadline = time.time() + 60
        saves = 0
        for line in proc.stdout:
            saves += line.startswith('saving checkpoint')
            if saves >= 2 or time.time() > deadline:
                break
        time.sleep(0.3)  # somewhere in the next iterations, maybe in the middle of a save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert saves >= 2 and proc.returncode == -signal.SIGKILL
    ckpt = load.load_checkpoint(out)  # the kill left a whole checkpoint
    it = ckpt['iter_num']
    assert it >= 4 and it % 2 == 0
    half = f'ckpt.tmp{dead_pid()}-0123abcd.pt'
    (out / half).write_bytes(b'half a save')  # what a kill inside torch.save leaves behind
    done = run_script('train.py', *args(out, data_dir, max_iters=it + 3, eval_interval=2, init_from='resume'),
                      cwd=tmp_path)
    assert f'(iter {it},' in done.stdout
    assert f'removed {half}' in done.stdout and not (out / half).exists()
    rows = read_log(out)
    steps = [int(r['iter']) for r in rows if r['kind'] == 'step']
    assert steps == list(range(it + 3))  # rows logged after the checkpoint were dropped, then redone
    assert load.load_checkpoint(out)['iter_num'] == it + 3


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, and a job scheduler's stop
def test_ctrl_c_saves_the_current_state_and_exits_cleanly(tmp_path, data_dir, sig):
    out = tmp_path / 'out'
    proc = popen_train(*args(out, data_dir, max_iters=100000, eval_interval=1000, always_save_checkpoint=False))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith('iter 3:'):
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=60)
    text = ''.join(lines) + rest
    assert proc.returncode == 0, text
    assert sig.name in text and 'Traceback' not in text
    assert 'interrupted at iter' in text
    assert not (out / 'ckpt.pt').exists()  # no eval improved after iter 0: the best-val slot stays empty
    ckpt = load.load_checkpoint(out / 'ckpt_last.pt')
    assert ckpt['iter_num'] >= 4
    assert f"interrupted at iter {ckpt['iter_num']}" in text
    assert ckpt['train_state']['rng'][0]['data'].dtype == torch.uint8  # the batch sampler, for an exact resume


MANY = dict(eval_interval=3, dropout=0.1, always_save_checkpoint=False, gradient_accumulation_steps=16, batch_size=2)


def test_ctrl_c_mid_iteration_then_resume_continues_the_same_loss_curve(tmp_path, bpe_data):
    """Ctrl-C between micro-steps saves the state from the start of that iteration (to ckpt_last.pt, newer
    than the best ckpt.pt); resuming from it gives exactly the uninterrupted run."""
    run_script('train.py', *args(tmp_path / 'a', bpe_data, max_iters=6, **MANY), cwd=tmp_path)
    out = tmp_path / 'b'
    proc = popen_train(*args(out, bpe_data, max_iters=6, **MANY))
    for line in proc.stdout:
        if line.startswith('iter 3:'):
            time.sleep(float(re.search(r'time ([\d.]+)ms', line).group(1)) / 3000)  # a third into iteration 4
            proc.send_signal(signal.SIGINT)
            break
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and 'interrupted at iter 4' in text, text
    last = torch.load(out / 'ckpt_last.pt', weights_only=True)['iter_num']
    r = run_script('train.py', *args(out, bpe_data, max_iters=6, init_from='resume', **MANY), cwd=tmp_path)
    assert f'ckpt_last.pt (iter {last},' in r.stdout  # continues from the Ctrl-C save, not the older best
    assert curve(read_log(tmp_path / 'a')) == curve(read_log(out))
    sa = torch.load(tmp_path / 'a' / 'ckpt.pt', weights_only=True)['model']
    sb = torch.load(out / 'ckpt.pt', weights_only=True)['model']
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_two_process_gloo_ddp(tmp_path, data_dir):
    out = tmp_path / 'out'
    # train.py through tests/ddp_probe.py, which compares the ranks' weights at the end: they stay equal
    # only if DDP really averages the gradients (dropout and different batches per rank would split them)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'tests' / 'ddp_probe.py'), *args(out, data_dir, max_iters=4, eval_interval=2, dropout=0.1)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'terminate called' not in proc.stderr  # no abort at interpreter exit (train.py leaves with os._exit)
    assert 'ranks hold identical weights: True' in proc.stdout
    assert '2 processes (gloo)' in proc.stdout
    assert proc.stdout.count('step 4: train loss') == 1  # only the master logs
    ckpt = load.load_checkpoint(out)
    assert ckpt['iter_num'] == 4 and ckpt['config']['backend'] == 'gloo'
    ts = ckpt['train_state']
    assert ts['world_size'] == 2 and len(ts['rng']) == 2
    assert not torch.equal(ts['rng'][0]['data'], ts['rng'][1]['data'])  # each rank draws its own batches
    assert ts['tokens_seen'] == 4 * 2 * 8 * 16  # 2 micro-steps: one per process
    model = load.model_from_checkpoint(ckpt)
    assert model.config.n_layer == 2


def test_ctrl_c_under_torchrun_saves_and_torchrun_exits_as_documented(tmp_path, data_dir):
    """docs/train.md: Ctrl-C to torchrun's process group saves the checkpoint at the iteration reached;
    torchrun itself then prints its SignalException and exits 1 (its agent's doing, not train.py's)."""
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'train.py'), *args(out, data_dir, max_iters=100000, eval_interval=100000, log_interval=1)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    lines = []
    try:
        for line in proc.stdout:  # the master logs every iteration: Ctrl-C once training runs
            lines.append(line)
            if line.startswith('iter 3:'):
                os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
                break
        lines += proc.stdout.readlines()
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = ''.join(lines)
    assert rc == 1 and 'SignalException' in text, text[-3000:]
    m = re.search(r'interrupted at iter (\d+)', text)
    assert m, text[-3000:]
    assert load.load_checkpoint(out)['iter_num'] == int(m.group(1)) >= 3


def upstream_checkpoint(path, iter_num=6):
    """A checkpoint exactly as upstream nanoGPT's train.py writes it (compiled model: '_orig_mod.' keys,
    a tensor best_val_loss, AdamW state, no 'gelu', no resume extras)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=150, dropout=0.0))
    opt = torch.optim.AdamW([{'params': [p for p in model.parameters() if p.dim() >= 2], 'weight_decay': 0.1},
                             {'params': [p for p in model.parameters() if p.dim() < 2], 'weight_decay': 0.0}],
                            lr=1e-3, betas=(0.9, 0.95))
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    opt.step()
    ckpt = {'model': {'_orig_mod.' + k: v for k, v in model.state_dict().items()},
            'optimizer': opt.state_dict(), 'model_args': model.model_args, 'iter_num': iter_num,
            'best_val_loss': torch.tensor(7.5), 'config': {'dataset': 'x', 'batch_size': 8}}
    os.makedirs(path, exist_ok=True)
    torch.save(ckpt, os.path.join(path, 'ckpt.pt'))
    return model


def test_upstream_checkpoint_resumes_here_and_nan_stops_without_saving(tmp_path, data_dir):
    out = tmp_path / 'out'
    model = upstream_checkpoint(out)
    proc = run_script('train.py', *args(out, data_dir, max_iters=8, eval_interval=2, init_from='resume'),
                      cwd=tmp_path)
    assert 'Resuming training from' in proc.stdout and 'no sampling state' in proc.stdout
    steps = [int(r['iter']) for r in read_log(out) if r['kind'] == 'step']
    assert steps == [6, 7]  # continues from upstream's iter_num
    ckpt = load.load_checkpoint(out)
    assert ckpt['iter_num'] == 8 and set(ckpt['model_args']) == set(MODEL_ARGS)
    assert ckpt['gelu'] == 'exact'  # upstream trained with exact GELU; it stays so
    assert not torch.equal(ckpt['model']['lm_head.weight'], model.state_dict()['lm_head.weight'])

    # a diverging run stops before the optimizer step and leaves the good checkpoint as it was; no eval
    # comes before the end (eval_interval 1000), so it is the training-loss check that stops it
    before = (out / 'ckpt.pt').read_bytes()
    proc = run_script('train.py', *args(out, data_dir, max_iters=30, eval_interval=1000, init_from='resume',
                                        learning_rate=1e6, grad_clip=0.0, decay_lr=False), cwd=tmp_path, check=False)
    m = re.search(r'error: loss (nan|inf) at iter (\d+)', proc.stderr)
    assert proc.returncode == 1 and m and int(m.group(2)) < 30, proc.stderr
    assert 'diverged' in proc.stderr and 'nothing saved' in proc.stderr, proc.stderr
    assert (out / 'ckpt.pt').read_bytes() == before and not (out / 'ckpt_last.pt').exists()


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, data_dir):
    """learning_rate 0: the val loss never beats iter 0's, so no ckpt.pt (best) is written; patience 2 stops
    the run at the third eval and the latest state goes to ckpt_last.pt."""
    out = tmp_path / 'out'
    proc = run_script('train.py', *args(out, data_dir, max_iters=100, eval_interval=2, learning_rate=0.0,
                                        min_lr=0.0, early_stop_patience=2, always_save_checkpoint=False),
                      cwd=tmp_path)
    assert 'early stop: 2 evals without a better val loss' in proc.stdout
    assert [e[0] for e in evals(read_log(out))] == [0, 2, 4]
    assert not (out / 'ckpt.pt').exists()
    assert load.load_checkpoint(out / 'ckpt_last.pt')['iter_num'] == 4


def test_missing_data_is_a_clear_error(tmp_path):
    proc = run_script('train.py', *args(tmp_path / 'out', tmp_path / 'nodata', max_iters=2), cwd=tmp_path,
                      check=False)
    assert proc.returncode == 1
    assert 'nodata/train.bin not found' in proc.stderr and 'prepare_bin.py' in proc.stderr
    assert 'Traceback' not in proc.stderr


# -----------------------------------------------------------------------------
# export_hf

@pytest.mark.parametrize('gelu,bias,vocab', [('tanh', True, 50257), ('exact', False, 50304)])
def test_export_hf_logits_match_transformers(tmp_path, gelu, bias, vocab):
    from transformers import GPT2LMHeadModel
    model = tiny_model(gelu=gelu, bias=bias, vocab_size=vocab)
    model.to_hf().save_pretrained(tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert hf.config.activation_function == {'tanh': 'gelu_new', 'exact': 'gelu'}[gelu]
    assert hf.config.vocab_size == vocab and hf.config.n_positions == TINY['block_size']
    x = torch.randint(0, vocab, (2, TINY['block_size']), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x, all_logits=True)[0], hf(x).logits
    assert ours.abs().max() > 1.0  # not a degenerate comparison
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=1e-5)
    # and back: our loader reads the export as a local Hugging Face folder
    back = GPT.from_pretrained(str(tmp_path))
    assert back.config.gelu == gelu
    torch.testing.assert_close(back(x, all_logits=True)[0], ours, atol=2e-5, rtol=1e-5)


def test_export_hf_script_writes_a_loadable_folder_with_tokenizer(tmp_path, tiny_ckpt, gpt2_tok):
    from transformers import AutoTokenizer
    proc = run_script('tools.export_hf', f'--out_dir={tiny_ckpt}', cwd=tmp_path)
    assert 'check: transformers\' logits match ours' in proc.stdout
    tok = AutoTokenizer.from_pretrained(tiny_ckpt / 'hf')
    text = "Once upon a time, naïve 🦊 said:\n\n  'hello'  <|endoftext|>The end."
    assert tok.encode(text) == gpt2_tok.encode(text)
    assert tok.eos_token == '<|endoftext|>'


def test_export_hf_character_level_and_bad_input(tmp_path, monkeypatch):
    """A character-level checkpoint exports (config + weights, no GPT-2 tokenizer) and passes the logit
    check; a missing checkpoint is a one-line error."""
    chars = sorted(set('once upon a time\n'))
    meta = {'vocab_size': len(chars), 'stoi': {c: i for i, c in enumerate(chars)}, 'itos': dict(enumerate(chars))}
    os.makedirs(tmp_path / 'data' / 'tiny_char')
    with open(tmp_path / 'data' / 'tiny_char' / 'meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    from conftest import write_ckpt
    write_ckpt(tmp_path / 'out', tiny_model(vocab_size=len(chars)), config={'dataset': 'tiny_char'})
    proc = run_script('tools.export_hf', '--out_dir=out', cwd=tmp_path)
    assert "check: transformers' logits match ours" in proc.stdout
    assert sorted(os.listdir(tmp_path / 'out' / 'hf'))[:1] == ['config.json']
    bad = run_script('tools.export_hf', '--out_dir=nowhere', cwd=tmp_path, check=False)
    assert bad.returncode == 1 and 'Traceback' not in bad.stderr and bad.stderr.startswith('error: no checkpoint at')


# -----------------------------------------------------------------------------
# settings and faults, with train.py run in this process: no interpreter start-up, a fraction of a second

def train_here(monkeypatch, out_dir, data_dir, **kw):
    """Run train.py with args(out_dir, data_dir, **kw) in this process; returns its globals. The signal
    handlers and the excepthook it installs are put back afterwards."""
    monkeypatch.setattr(sys, 'argv', ['train.py', *args(out_dir, data_dir, **kw)])
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as run_script: threads that wait on a busy machine cost seconds
    try:
        return runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')
    finally:
        torch.set_num_threads(threads)
        for s, h in handlers.items():
            signal.signal(s, h)


@pytest.mark.parametrize('warmup,max_iters', [(2, 4), (0, 2)])
def test_lr_schedule_without_a_decay_phase_trains(tmp_path, data_dir, monkeypatch, warmup, max_iters):
    """lr_decay_iters == warmup_iters (both 0 too) divided by zero at iter lr_decay_iters; now the warmup
    is followed by min_lr directly."""
    train_here(monkeypatch, tmp_path / 'out', data_dir, max_iters=max_iters, eval_interval=1000,
               warmup_iters=warmup, lr_decay_iters=warmup, learning_rate=1e-2, min_lr=1e-3)
    rows = read_log(tmp_path / 'out')
    by_hand = [1e-2 * (it + 1) / (warmup + 1) if it < warmup else 1e-3 for it in range(max_iters + 1)]
    assert [int(r['iter']) for r in rows if r['kind'] == 'step'] == list(range(max_iters))
    assert [float(r['lr']) for r in rows if r['kind'] == 'step'] == pytest.approx(by_hand[:-1], rel=1e-5)
    assert [(int(r['iter']), float(r['lr'])) for r in rows if r['kind'] == 'eval'] == \
        [(0, pytest.approx(by_hand[0], rel=1e-5)), (max_iters, pytest.approx(1e-3, rel=1e-5))]
    assert load.load_checkpoint(tmp_path / 'out')['iter_num'] == max_iters


@pytest.mark.parametrize('kw,message', [
    (dict(max_iters=-5), "max_iters=-5 must be at least 0"),
    (dict(warmup_iters=-1), "warmup_iters=-1 must be at least 0"),
    (dict(lr_decay_iters=-1), "lr_decay_iters=-1 must be at least 0"),
    (dict(early_stop_patience=-2), "early_stop_patience=-2 must be at least 0"),
    (dict(warmup_iters=20, lr_decay_iters=10), "lr_decay_iters=10 is less than warmup_iters=20"),
    (dict(min_lr=0.1), "min_lr=0.1 is above learning_rate=0.01"),
    (dict(learning_rate=-0.001), "learning_rate=-0.001 must be a finite number, at least 0"),
    (dict(learning_rate='nan'), "learning_rate=nan must be a finite number, at least 0"),
    (dict(grad_clip=-1.0), "grad_clip=-1.0 must be a finite number, at least 0"),
    (dict(dropout=1.5), "dropout=1.5 must be at least 0 and less than 1"),
    (dict(beta2=1.0), "beta2=1.0 must be at least 0 and less than 1"),
    (dict(seed=-1), "seed=-1 must be at least 0"),
])
def test_nonsensical_settings_fail_before_any_work(tmp_path, monkeypatch, kw, message):
    """One line naming the setting, before any folder is made or data and model are read (the data folder
    does not exist: reaching it would fail differently)."""
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', tmp_path / 'nodata', **kw)
    assert str(e.value).startswith(message) and '\n' not in str(e.value)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('kw', [
    dict(decay_lr=False, min_lr=0.1, warmup_iters=20, lr_decay_iters=10),
    dict(max_iters=0, warmup_iters=0, lr_decay_iters=0, learning_rate=0.0, min_lr=0.0),
])
def test_settings_that_make_sense_pass_the_checks(tmp_path, monkeypatch, kw):
    """decay_lr=False ignores the schedule (upstream's fine-tuning configs have min_lr > learning_rate)."""
    with pytest.raises(UserError, match='nodata/train.bin not found'):
        train_here(monkeypatch, tmp_path / 'out', tmp_path / 'nodata', **kw)


def test_full_disk_while_saving_is_one_line_and_keeps_the_checkpoint(tmp_path, data_dir, monkeypatch):
    out = tmp_path / 'out'
    saves, before = [], {}
    save = torch.save

    def disk_fills_up(obj, f):  # the second save runs out of space half-way
        saves.append(f)
        if len(saves) == 2:
            before['ckpt'] = (out / 'ckpt.pt').read_bytes()
            with open(f, 'wb') as half:
                half.write(b'half a checkpoint')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(obj, f)

    monkeypatch.setattr(torch, 'save', disk_fills_up)
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, out, data_dir, max_iters=4, eval_interval=2)
    assert len(saves) == 2 and '\n' not in str(e.value)
    assert re.match(re.escape(f"could not save {out / 'ckpt.pt'}: No space left on device (") + r"[\d,]+ MB free "
                    + re.escape(f"on that disk); {out / 'ckpt.pt'} is as before"), str(e.value)), e.value
    assert (out / 'ckpt.pt').read_bytes() == before['ckpt']  # the iter-2 checkpoint, intact
    assert load.load_checkpoint(out)['iter_num'] == 2
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.csv']  # no temp file left


def test_resume_keeps_the_checkpoint_architecture_and_says_so(tmp_path, data_dir, monkeypatch, capsys):
    """--n_layer=4 on a 1-layer checkpoint: a note that the checkpoint's 1 layer is kept, and the saved
    config agrees with model_args. A new run from a checkpoint's weights records that model's sizes too."""
    out = tmp_path / 'out'
    train_here(monkeypatch, out, data_dir, max_iters=2, eval_interval=2, n_layer=1)
    capsys.readouterr()
    train_here(monkeypatch, out, data_dir, max_iters=3, eval_interval=2, init_from='resume', n_layer=4,
               n_embd=64)
    text = capsys.readouterr().out
    assert "note: resuming keeps the checkpoint's n_layer=1 (not 4), n_embd=32 (not 64)" in text, text
    assert 'n_layer 1 -> 4' not in text and "n_layer': 4" not in text
    ckpt = load.load_checkpoint(out)
    assert ckpt['iter_num'] == 3 and ckpt['model_args']['n_layer'] == 1
    assert {k: ckpt['config'][k] for k in ('n_layer', 'n_head', 'n_embd', 'bias')} == \
        {k: ckpt['model_args'][k] for k in ('n_layer', 'n_head', 'n_embd', 'bias')}
    assert ckpt['config']['gelu'] == ckpt['gelu']
    # a new run from those weights (the settings say n_layer=2): no note, and a true config
    train_here(monkeypatch, tmp_path / 'new', data_dir, max_iters=1, init_from=out / 'ckpt.pt')
    assert 'keeps the checkpoint' not in capsys.readouterr().out
    new = load.load_checkpoint(tmp_path / 'new')
    assert new['config']['n_layer'] == new['model_args']['n_layer'] == 1


def test_gpt2_offline_is_one_line(tmp_path, bpe_data, monkeypatch):
    """transformers' offline error has two lines (and train.py added a third): one line, as load_model's."""
    def offline(cls, name, override_args=None):  # transformers' message, word for word
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't "
                      "find them in the cached files.\nCheck your internet connection or see how to run "
                      "the library in offline mode at "
                      "'https://huggingface.co/docs/transformers/installation#offline-mode'.")

    monkeypatch.setattr(GPT, 'from_pretrained', classmethod(offline))
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', bpe_data, init_from='gpt2')
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith("could not load 'gpt2': We couldn't connect"), msg
    assert msg.endswith("offline, give a local Hugging Face GPT-2 folder (config.json + weights) as "
                        "--init_from=path")
