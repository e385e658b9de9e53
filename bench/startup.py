"""
Benchmark the startup of every script: whole processes (imports, loading, one small job), side by side.

    python -m bench.startup                # every script, 3 rounds
    python -m bench.startup --repeats=5

Each script runs a job that takes next to no time on a tiny random-weight GPT-2 (2 layers, 32 channels),
so what is measured is what every run of it pays before its work starts: Python, torch and the other
imports, reading the model and the tokenizer:
- sample.py: one sample of one token (--html=False);
- eval.py: the pairs of eval_data.json (--html=False);
- train.py: one iteration of a model from scratch on random token ids, its eval and its checkpoint;
- serve.py: until it prints the address it serves (then it is stopped);
- prepare_bin.py: tokenising a 3 KB text file.
Two yardsticks run in the same rounds: `python -c "import torch"` (no script starts faster) and loading
the same folder with transformers' GPT2LMHeadModel.from_pretrained (what loading through transformers
costs, imports included). The commands alternate over `repeats` rounds; medians of wall and CPU time.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from bench import machine
from configurator import configure

# -----------------------------------------------------------------------------
repeats: int = 3  # rounds (medians are reported), after one warm-up round
threads: int = 0  # torch threads in every process (OMP_NUM_THREADS); 0 = torch's default
configure(globals())
# -----------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "Once upon a time there was a little girl who lived in a village near the forest.\n\n" * 40


def cpu_of_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd, cwd, until=None):
    """Wall and CPU seconds of one process; with `until`, it is stopped once a line starts with it."""
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)} if threads else dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [ROOT, env.get('PYTHONPATH')]))
    t0, c0 = time.perf_counter(), cpu_of_children()
    if until is None:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    else:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(until):
                break
        proc.terminate()
        proc.communicate()
        out, rc = ''.join(lines), 0 if lines and lines[-1].startswith(until) else 1
    secs, cpu = time.perf_counter() - t0, cpu_of_children() - c0
    if rc != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed:\n{out[-2000:]}")
    return secs, cpu


def main():
    from transformers import GPT2Config, GPT2LMHeadModel
    py = sys.executable
    print(machine.describe())
    with tempfile.TemporaryDirectory() as d:
        tiny = os.path.join(d, 'tiny')
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)).save_pretrained(tiny)
        data = os.path.join(d, 'data')
        os.makedirs(data)
        for split in ('train', 'val'):
            np.random.default_rng(0).integers(0, 50257, 5000, dtype=np.uint16).tofile(os.path.join(data, f'{split}.bin'))
        with open(os.path.join(d, 'story.txt'), 'w') as f:
            f.write(TEXT)
        with open(os.path.join(d, 'pairs.json'), 'w') as f:
            json.dump([{'prompt': 'Once upon a time', 'response': ' there was a girl.'}], f)
        common = ['--device=cpu']
        cmds = {
            'python -c "import torch" (the floor)': ([py, '-c', 'import torch'], None),
            'transformers: import + GPT2LMHeadModel.from_pretrained': (
                [py, '-c', 'import sys; from transformers import GPT2LMHeadModel; '
                           'GPT2LMHeadModel.from_pretrained(sys.argv[1])', tiny], None),
            'sample.py (1 sample, 1 token)': (
                [py, os.path.join(ROOT, 'sample.py'), f'--init_from={tiny}', '--num_samples=1',
                 '--max_new_tokens=1', '--html=False', '--start=Once', *common], None),
            'eval.py (1 pair)': (
                [py, os.path.join(ROOT, 'eval.py'), f'--init_from={tiny}', '--eval_data=pairs.json',
                 '--html=False', f'--results_dir={d}/results', *common], None),
            'train.py (1 iteration, eval, checkpoint)': (
                [py, os.path.join(ROOT, 'train.py'), '--init_from=scratch', f'--data_dir={data}',
                 f'--out_dir={d}/out', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
                 '--batch_size=2', '--max_iters=1', '--eval_iters=1', '--eval_interval=1', '--warmup_iters=0',
                 '--lr_decay_iters=1', '--compile=False', '--progress=False', '--plot=False', *common], None),
            'serve.py (until it serves)': (
                [py, os.path.join(ROOT, 'serve.py'), f'--init_from={tiny}', '--port=0', *common], 'serving http'),
            'prepare_bin.py (3 KB of text)': (
                [py, os.path.join(ROOT, 'prepare_bin.py'), '--input=story.txt', f'--out_dir={d}/prep',
                 '--block_size=8'], None),
        }
        walls, cpus = {n: [] for n in cmds}, {n: [] for n in cmds}
        for r in range(repeats + 1):
            for name, (cmd, until) in cmds.items():
                secs, cpu = run(cmd, d, until)
                if r:
                    walls[name].append(secs)
                    cpus[name].append(cpu)
    print(f"whole processes on a tiny model, median of {repeats} (after a warm-up round):")
    floor = statistics.median(walls[next(iter(cmds))])
    for name in cmds:
        w, c = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"  {name:<56s} {w:6.2f} s wall ({w - floor:+5.2f} s over the floor), {c:6.2f} s CPU")
    print(f"(load average {machine.load_average():.1f} at the end)")


if __name__ == '__main__':
    main()
