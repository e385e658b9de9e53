"""
Benchmark sample.py as a user runs it: whole processes, side by side in one run, on the same weights.

    python -m bench.sample                                  # GPT-2 124M shape, random weights, CPU float32
    python -m bench.sample --dtype=bfloat16                 # sample.py with bfloat16 weights (transformers float32)
    python -m bench.sample --max_new_tokens=300 --n_layer=4 # longer samples, a smaller model
    python -m bench.sample --one_at_a_time=True             # also sample.py --batch_size=1

Each round runs, one after the other (so a busy machine slows each alike):
- `python sample.py` drawing num_samples samples together (batch_size = num_samples), printing each
  sample's text and its probabilities under both distributions and writing its HTML report, with
  --html_inspect=False (the page without the inspector's logit lens and attention panels, the work
  transformers' generate does not do);
- a script that loads the same folder with transformers and calls
  generate(do_sample=True, num_return_sequences=num_samples) with the same temperature and top-k in
  float32, then prints each sample's text;
- with panels (the default), the same sample.py command as by default: the report also holds every
  token's logit lens (a full-vocabulary unembedding per layer and token) and attention;
- with one_at_a_time, sample.py --batch_size=1: the samples one after another, as sample.py drew them before.
Every process loads the model from a temporary Hugging Face folder of random weights (nothing is
downloaded) and generates exactly max_new_tokens tokens per sample (no early stop). Prints the median
wall and CPU time (user + system, all threads) of each over `repeats` rounds and their ratios, and
sample.py's time against the weights-read limit of this machine (bench/machine.py): max_new_tokens steps
that each read every weight once, at the bandwidth of a matrix-vector product measured here.
"""
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from bench import machine
from configurator import configure

# -----------------------------------------------------------------------------
num_samples: int = 10  # samples per process
max_new_tokens: int = 64  # tokens per sample
temperature: float = 0.8  # sample.py's default
top_k: int = 200  # sample.py's default
prompt: str = "Once upon a time"
n_layer: int = 12  # GPT-2 124M shape by default
n_head: int = 12
n_embd: int = 768
dtype: str = 'float32'  # sample.py's --dtype: 'float32' or 'bfloat16' (transformers runs float32 either way)
repeats: int = 3  # timed rounds (the median of each is reported)
one_at_a_time: bool = False  # also time sample.py --batch_size=1 (the samples one after another)
panels: bool = True  # also time sample.py's default report, with the inspector's logit lens and attention
threads: int = 0  # torch threads in every process (OMP_NUM_THREADS); 0 = torch's default. On a machine busy
#   with other work, 1 avoids threads waiting for each other and measures the work itself
seed: int = 1337
configure(globals())
# -----------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: sample.py is there

HF_SCRIPT = """
import sys, tiktoken, torch
from transformers import GPT2LMHeadModel
folder, prompt, n, tokens, temperature, top_k, seed = sys.argv[1:]
n, tokens, top_k = int(n), int(tokens), int(top_k)
torch.manual_seed(int(seed))
model = GPT2LMHeadModel.from_pretrained(folder).eval()
enc = tiktoken.get_encoding('gpt2')
x = torch.tensor([enc.encode(prompt)])
with torch.inference_mode():
    y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, num_return_sequences=n,
                       max_new_tokens=tokens, min_new_tokens=tokens, temperature=float(temperature),
                       top_k=top_k, top_p=1.0, pad_token_id=50256)
for i, row in enumerate(y.tolist(), start=1):
    print(enc.decode(row))
    print(f"sample {i}/{n}: {len(row) - x.size(1)} new tokens")
"""


def cpu_of_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd):
    """Wall and CPU seconds of one whole process (its output is checked, not shown)."""
    t0, c0 = time.perf_counter(), cpu_of_children()
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)} if threads else None
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    secs, cpu = time.perf_counter() - t0, cpu_of_children() - c0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return secs, cpu, proc.stdout


def main():
    from transformers import GPT2Config, GPT2LMHeadModel
    from nanoprobs.load import load_model
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        del hf
        ours = [sys.executable, 'sample.py', f'--init_from={d}', f'--start={prompt}',
                f'--num_samples={num_samples}', f'--max_new_tokens={max_new_tokens}',
                f'--temperature={temperature}', f'--top_k={top_k}', f'--results_dir={d}/results',
                '--device=cpu', f'--dtype={dtype}', f'--seed={seed}']
        runs = {f'sample.py {dtype}, {num_samples} samples together (batch_size={num_samples})':
                ours + [f'--batch_size={num_samples}', '--html_inspect=False'],
                'transformers generate(do_sample=True, num_return_sequences), float32':
                [sys.executable, '-c', HF_SCRIPT, d, prompt, str(num_samples), str(max_new_tokens),
                 str(temperature), str(top_k), str(seed)]}
        if panels:
            runs[f'sample.py {dtype}, as above, report with inspector panels'] = ours + [f'--batch_size={num_samples}']
        if one_at_a_time:
            runs[f'sample.py {dtype} --batch_size=1 (one after another)'] = ours + ['--batch_size=1',
                                                                                  '--html_inspect=False']
        print(machine.describe())
        print(f"CPU, {threads or torch.get_num_threads()} threads per process, GPT-2 shape n_layer={n_layer} "
              f"n_embd={n_embd}, random weights; {num_samples} samples x {max_new_tokens} tokens, "
              f"T={temperature}, top-k {top_k}; whole processes (start, load, generate, print), median of "
              f"{repeats}")
        walls = {name: [] for name in runs}
        cpus = {name: [] for name in runs}
        for r in range(repeats):
            for name, cmd in runs.items():
                secs, cpu, out = timed(cmd)
                print(f"  round {r + 1}: {name}: {secs:.1f} s wall, {cpu:.1f} s CPU", flush=True)
                done = re.findall(rf'^sample \d+/{num_samples}: {max_new_tokens} new tokens', out, re.M)
                assert len(done) == num_samples, out[-1000:]
                walls[name].append(secs)
                cpus[name].append(cpu)
        loaded = load_model(d, device='cpu', dtype=dtype)
        loaded.model.inference_head()
        nbytes = machine.step_bytes(loaded.model)
        del loaded
    tokens = num_samples * max_new_tokens
    wall = {name: statistics.median(v) for name, v in walls.items()}
    cpu = {name: statistics.median(v) for name, v in cpus.items()}
    for name in runs:
        print(f"{name:<70s} {wall[name]:7.1f} s wall ({tokens / wall[name]:6.1f} tokens/s), {cpu[name]:7.1f} s CPU")
    names = list(runs)
    for what, b in (('wall', wall), ('CPU', cpu)):
        print(f"ratio transformers / sample.py, {what:>4} time: {b[names[1]] / b[names[0]]:.2f}x")
        for name in names[2:]:
            print(f"ratio transformers / {name}, {what:>4} time: {b[names[1]] / b[name]:.2f}x")
    bandwidth = machine.matvec_bandwidth()
    limit = machine.weights_read_limit(nbytes, max_new_tokens, bandwidth)
    print(f"weights-read limit: {max_new_tokens} steps x {nbytes / 1e6:.0f} MB at {bandwidth / 1e9:.1f} GB/s = "
          f"{limit:.2f} s, {limit / wall[names[0]]:.2f} of sample.py's whole process ({wall[names[0]]:.1f} s, "
          f"start and load included; python -m bench.generate times generation alone)")
    print(f"(load average {machine.load_average():.1f} at the end: other work slows every process, compare "
          "within one run)")


if __name__ == '__main__':
    main()
