"""
Does bfloat16 autocast train as float32 does, and how much faster is it? train.py's dtype=auto picks it on
CPUs with native bfloat16 matmuls (AMX or AVX512-BF16; nanoprobs/load.py resolve_dtype); this shows why.

$ python data/children_stories/prepare.py        # once: the corpus as train.bin / val.bin
$ python -m bench.train_dtype                    # GPT-2 124M shape from scratch, 30 iterations per run
$ python -m bench.train_dtype --iters=60 --n_layer=6 --n_embd=384 --n_head=6   # smaller, longer

Three train.py runs on the same data, one after the other: float32 and bfloat16 autocast from one seed
(the same initial weights and batches: only the arithmetic differs), and float32 from another seed, whose
distance from the first is the noise between two runs a user would call the same. Prints every
iteration's train loss, both runs' mean distance from the float32 run, each run's final val loss and
tokens per second (between consecutive log lines), and draws the curves into
results/train_dtype.png. Nothing else is saved: each run is stopped after its last eval.
"""
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# -----------------------------------------------------------------------------
data_dir = 'data/children_stories'  # train.bin / val.bin (python data/children_stories/prepare.py)
iters = 30  # iterations per run
batch_size = 4
block_size = 256
n_layer = 12  # GPT-2 124M
n_head = 12
n_embd = 768
learning_rate = 6e-4
eval_iters = 8  # batches per split in the last eval (val loss)
seeds = (1337, 1338)  # the first for float32 and bfloat16, the second for the float32 noise run
out = 'results/train_dtype.png'
# -----------------------------------------------------------------------------
from configurator import UserError, configure, run_main  # noqa: E402
configure(globals())

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: train.py is there
ITER = re.compile(r'^iter (\d+): loss ([\d.naif]+)')
EVAL = re.compile(r'^step (\d+): train loss ([\d.]+), val loss ([\d.]+)')


def run(dtype, seed, out_dir):
    """One train.py run: ({iter: train loss}, val loss at the end, seconds per iteration (median))."""
    args = [f'--data_dir={os.path.abspath(data_dir)}', '--init_from=scratch', f'--out_dir={out_dir}',
            f'--dtype={dtype}', f'--seed={seed}', f'--batch_size={batch_size}', f'--block_size={block_size}',
            '--gradient_accumulation_steps=1', f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_embd={n_embd}',
            '--dropout=0.0', '--device=cpu', '--compile=False', f'--max_iters={iters}', f'--eval_interval={iters}',
            f'--eval_iters={eval_iters}', '--log_interval=1', f'--learning_rate={learning_rate}',
            f'--warmup_iters={max(1, iters // 6)}', f'--lr_decay_iters={iters}',
            f'--min_lr={learning_rate / 10}', '--progress=False', '--plot=False']
    proc = subprocess.Popen([sys.executable, 'train.py', *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    losses, val, stamps, tail = {}, None, [], []
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-20:]
            m = ITER.match(line)
            if m:
                losses[int(m.group(1))] = float(m.group(2))
                stamps.append(time.perf_counter())
            m = EVAL.match(line)
            if m and int(m.group(1)) == iters:
                val = float(m.group(3))
                break
    finally:
        proc.send_signal(signal.SIGKILL)  # the last eval is in: no checkpoint needed
        proc.wait()
    if val is None:
        raise UserError(f"train.py --dtype={dtype} stopped before its last eval:\n{''.join(tail)}")
    steps = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # from iteration 2 on (allocator warm-up)
    return losses, val, statistics.median(steps)


def main():
    from bench import machine
    from nanoprobs.load import resolve_dtype
    from nanoprobs.plots.training import loss_curves
    for split in ('train', 'val'):
        if not os.path.exists(os.path.join(data_dir, f'{split}.bin')):
            raise UserError(f"no {split}.bin in {data_dir}: run python data/children_stories/prepare.py "
                            "(or give --data_dir)")
    print(machine.describe())
    print(f"train.py --dtype=auto picks {resolve_dtype('auto', 'cpu', training=True)} for training here")
    print(f"model: {n_layer} layers, {n_head} heads, {n_embd} channels, from scratch; batch {batch_size} x "
          f"{block_size}; {iters} iterations, learning rate {learning_rate:g}; data {data_dir}")
    runs = {f'float32 seed {seeds[0]}': ('float32', seeds[0]),
            f'bfloat16 seed {seeds[0]}': ('bfloat16', seeds[0]),
            f'float32 seed {seeds[1]}': ('float32', seeds[1])}  # the last: noise between runs
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (dtype, seed) in runs.items():
            res[name] = run(dtype, seed, os.path.join(tmp, 'out'))
            print(f"  {name}: val loss {res[name][1]:.4f}, {res[name][2]:.2f} s per iteration", flush=True)
    names = list(runs)
    base, bf16, noise = (res[n][0] for n in names)
    its = sorted(set(base) & set(bf16) & set(noise))
    print(f"\n{'iter':>5s} " + ' '.join(f'{n:>20s}' for n in names))
    for i in its:
        print(f"{i:5d} " + ' '.join(f'{res[n][0][i]:20.4f}' for n in names))
    d_bf16 = statistics.mean(abs(bf16[i] - base[i]) for i in its)
    d_noise = statistics.mean(abs(noise[i] - base[i]) for i in its)
    print(f"\nmean |train loss - float32 seed {seeds[0]}'s| over iterations 0..{its[-1]}: bfloat16 {d_bf16:.4f}, "
          f"float32 seed {seeds[1]} {d_noise:.4f} (ratio {d_bf16 / d_noise:.2f}: below 1 = within the noise "
          "between runs)")
    print(f"val loss after {iters} iterations: " + ', '.join(f"{n} {res[n][1]:.4f}" for n in names))
    tokens = batch_size * block_size
    t32, t16 = res[names[0]][2], res[names[1]][2]
    print(f"tokens/s: float32 {tokens / t32:.0f}, bfloat16 autocast {tokens / t16:.0f} ({t32 / t16:.2f}x)")
    title = (f"{n_layer} layers x {n_embd}, batch {batch_size} x {block_size}: float32 and bfloat16 autocast "
             f"(seed {seeds[0]}), float32 (seed {seeds[1]})")
    print(f"chart: {loss_curves({n: sorted(res[n][0].items()) for n in names}, out, title)}")
    print(f"(load average {machine.load_average():.1f} at the end: other work slows every run)")


if __name__ == '__main__':
    run_main(main)
