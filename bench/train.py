"""
Training speed on CPU, this fork against upstream nanoGPT, side by side in one run: both train.py scripts
train the same model (GPT-2 124M shape from scratch, batch 4 x 256, float32, no compile) on the same data,
one after the other, and the time between their "iter N" log lines gives tokens per second.

$ git clone https://github.com/karpathy/nanoGPT /tmp/upstream     # or any checkout of it
$ python -m bench.train --upstream_dir=/tmp/upstream
$ python -m bench.train --rounds=3 --iters=8                       # steadier numbers on a busy machine

Ours also runs with bfloat16 autocast when the CPU has native bf16 (AMX or AVX512-BF16), as
`python train.py --dtype=bfloat16` would; upstream cannot autocast on CPU. Without --upstream_dir (or
if the folder has no train.py) only ours is measured. Nothing is saved: every run is stopped after its
last measured iteration.
"""

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# -----------------------------------------------------------------------------
upstream_dir = '/tmp/upstream'  # a checkout of karpathy/nanoGPT (its train.py and configurator.py)
iters = 5  # measured iterations per run
warmup = 2  # iterations before those (allocator, caches)
rounds = 1  # run the set (upstream, ours float32, ours bfloat16) this many times, alternating; medians
batch_size = 4
block_size = 256
n_layer = 12  # GPT-2 124M
n_head = 12
n_embd = 768
bf16 = 'auto'  # also time ours with bfloat16 autocast: 'auto' (if the CPU has native bf16), 'yes', 'no'
data_dir = ''  # a folder with train.bin/val.bin; '' = random GPT-2 token ids in a temporary folder
# -----------------------------------------------------------------------------
from configurator import UserError, configure, run_main  # noqa: E402
configure(globals())

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: train.py is there
ITER = re.compile(r'^iter (\d+): loss ([\d.naif]+), time ([\d.]+)ms')


def cpu_info():
    """(model name, has native bfloat16 matmuls) from /proc/cpuinfo (Linux); elsewhere (platform, False)."""
    try:
        with open('/proc/cpuinfo') as f:
            text = f.read()
    except OSError:
        import platform
        return platform.processor() or platform.machine(), False
    name = re.search(r'model name\s*:\s*(.*)', text)
    flags = re.search(r'flags\s*:\s*(.*)', text)
    flags = set(flags.group(1).split()) if flags else set()
    return (name.group(1) if name else '?'), bool(flags & {'amx_bf16', 'avx512_bf16'})


def run(label, script_dir, extra, out_dir):
    """Run one train.py; return seconds per iteration for iterations warmup .. warmup+iters-1, measured
    between consecutive log lines (the same clock for both scripts), and the scripts' own timings."""
    args = [f'--batch_size={batch_size}', f'--block_size={block_size}', '--gradient_accumulation_steps=1',
            f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_embd={n_embd}', '--dropout=0.0',
            '--device=cpu', '--compile=False', '--init_from=scratch', f'--out_dir={out_dir}',
            '--eval_iters=1', '--eval_interval=1000000', '--log_interval=1', '--max_iters=1000000',
            '--warmup_iters=10', *extra]
    proc = subprocess.Popen([sys.executable, os.path.join(script_dir, 'train.py'), *args], cwd=script_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    walls, own, last, tail = [], [], None, []
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-20:]
            m = ITER.match(line)
            if not m:
                continue
            now, i = time.perf_counter(), int(m.group(1))
            if last is not None and i > warmup:
                walls.append(now - last)  # iteration i, from the end of i-1 to the end of i
            if i >= warmup:
                own.append(float(m.group(3)) / 1000)
            last = now
            if len(walls) >= iters:
                break
    finally:
        proc.send_signal(signal.SIGKILL)  # stop at once: no checkpoint, no final eval
        proc.wait()
    if len(walls) < iters:
        raise UserError(f"{label} stopped early:\n{''.join(tail)}")
    return walls, own[:iters]


def main():
    cpu, native_bf16 = cpu_info()
    import torch
    print(f"CPU: {cpu}; {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, "
          f"native bf16: {'yes' if native_bf16 else 'no'}; torch {torch.__version__}")
    tokens = batch_size * block_size
    print(f"model: {n_layer} layers, {n_head} heads, {n_embd} channels, vocab 50304 (GPT-2 124M shape); "
          f"batch {batch_size} x {block_size} = {tokens:,} tokens per iteration; {warmup} warmup + {iters} "
          f"measured iterations per run, {rounds} round(s)")
    with tempfile.TemporaryDirectory() as tmp:
        data = data_dir
        if not data:
            data = os.path.join(tmp, 'data')
            os.makedirs(data)
            rng = np.random.default_rng(0)
            for split, n in (('train', 2_000_000), ('val', 200_000)):
                rng.integers(0, 50257, n, dtype=np.uint16).tofile(os.path.join(data, f'{split}.bin'))
        data = os.path.abspath(data)
        runs = []
        if os.path.exists(os.path.join(upstream_dir, 'train.py')):
            # upstream reads data/<dataset>; an absolute dataset path makes that the folder itself
            runs.append(('upstream float32', upstream_dir, ['--dtype=float32', f'--dataset={data}']))
        else:
            print(f"upstream: no train.py in {upstream_dir}; skipped (clone karpathy/nanoGPT there, or set "
                  "--upstream_dir)")
        runs.append(('ours float32', ROOT, ['--dtype=float32', f'--data_dir={data}', '--progress=False',
                                            '--plot=False']))
        if bf16 == 'yes' or (bf16 == 'auto' and native_bf16):
            runs.append(('ours bfloat16', ROOT, ['--dtype=bfloat16', f'--data_dir={data}', '--progress=False',
                                                 '--plot=False']))
        results = {label: [] for label, _, _ in runs}
        own = {label: [] for label, _, _ in runs}
        load0 = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
        for r in range(rounds):
            for label, where, extra in runs:
                walls, mine = run(label, where, extra, os.path.join(tmp, 'out'))
                results[label] += walls
                own[label] += mine
                print(f"  round {r + 1} {label:17s} s/iter: {' '.join(f'{w:.2f}' for w in walls)}",
                      flush=True)
        load1 = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')

    print(f"\n{'':17s} {'s/iter':>7s} {'tokens/s':>9s} {'(own log)':>9s}  vs upstream")
    base = None
    for label, _, _ in runs:
        s = statistics.median(results[label])
        tps = tokens / s
        base = tps if label.startswith('upstream') else base
        ratio = f"{tps / base:.2f}x" if base else ''
        print(f"{label:17s} {s:7.2f} {tps:9.1f} {tokens / statistics.median(own[label]):9.1f}  {ratio}")
    print(f"(medians over {rounds * iters} iterations; load average {load0:.1f} before, {load1:.1f} after: "
          "other work on the machine slows both, compare within one run)")


if __name__ == '__main__':
    run_main(main)
