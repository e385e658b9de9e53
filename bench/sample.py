"""
Benchmark sample.py as a user runs it: whole processes, side by side in one run, on the same weights.

    python -m bench.sample                                  # GPT-2 124M shape, random weights, CPU float32
    python -m bench.sample --max_new_tokens=64 --n_layer=4  # quicker
    python -m bench.sample --one_at_a_time=False            # only sample.py and transformers

Each round runs, one after the other (so a busy machine slows each alike):
- `python sample.py` drawing num_samples samples together (batch_size = num_samples), printing each
  sample's text and its probabilities under both distributions, as by default;
- the same with --batch_size=1: the samples one after another, as sample.py drew them before;
- a script that loads the same folder with transformers and calls
  generate(do_sample=True, num_return_sequences=num_samples) with the same temperature and top-k,
  then prints each sample's text.
Every process loads the model from a temporary Hugging Face folder of random weights (nothing is
downloaded) and generates exactly max_new_tokens tokens per sample (no early stop). Prints the best
wall time and the best CPU time (user + system, all threads) of each over `repeats` rounds, and their
ratios: on a machine shared with other work, CPU time is the steadier of the two.
"""
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import torch

from configurator import configure

# -----------------------------------------------------------------------------
num_samples: int = 10  # samples per process
max_new_tokens: int = 300  # tokens per sample
temperature: float = 0.8  # sample.py's default
top_k: int = 200  # sample.py's default
prompt: str = "Once upon a time"
n_layer: int = 12  # GPT-2 124M shape by default
n_head: int = 12
n_embd: int = 768
repeats: int = 2  # timed rounds (the best time of each is reported)
one_at_a_time: bool = True  # also time sample.py --batch_size=1 (the samples one after another)
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
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        del hf
        ours = [sys.executable, 'sample.py', f'--init_from={d}', f'--start={prompt}',
                f'--num_samples={num_samples}', f'--max_new_tokens={max_new_tokens}',
                f'--temperature={temperature}', f'--top_k={top_k}',
                '--device=cpu', '--dtype=float32', f'--seed={seed}']
        runs = {f'sample.py, {num_samples} samples together (batch_size={num_samples})':
                ours + [f'--batch_size={num_samples}'],
                'transformers generate(do_sample=True, num_return_sequences)':
                [sys.executable, '-c', HF_SCRIPT, d, prompt, str(num_samples), str(max_new_tokens),
                 str(temperature), str(top_k), str(seed)]}
        if one_at_a_time:
            runs['sample.py --batch_size=1 (one after another)'] = ours + ['--batch_size=1']
        print(f"CPU float32, {threads or torch.get_num_threads()} threads, GPT-2 shape n_layer={n_layer} "
              f"n_embd={n_embd}, "
              f"random weights; {num_samples} samples x {max_new_tokens} tokens, T={temperature}, "
              f"top-k {top_k}; "
              f"whole processes (start, load, generate, print), best of {repeats}")
        best = {name: float('inf') for name in runs}
        best_cpu = dict(best)
        for r in range(repeats):
            for name, cmd in runs.items():
                secs, cpu, out = timed(cmd)
                print(f"  round {r + 1}: {name}: {secs:.1f} s wall, {cpu:.1f} s CPU", flush=True)
                done = re.findall(rf'^sample \d+/{num_samples}: {max_new_tokens} new tokens', out, re.M)
                assert len(done) == num_samples, out[-1000:]
                best[name], best_cpu[name] = min(best[name], secs), min(best_cpu[name], cpu)
    tokens = num_samples * max_new_tokens
    for name, secs in best.items():
        print(f"{name:<62s} {secs:7.1f} s wall ({tokens / secs:6.1f} tokens/s), {best_cpu[name]:7.1f} s CPU")
    names = list(best)
    for what, b in (('wall', best), ('CPU', best_cpu)):
        print(f"ratio transformers / sample.py, {what:>4} time: "
              f"{b[names[1]] / b[names[0]]:.2f}x   (goal >= 1.0)")
        if one_at_a_time:
            print(f"ratio one-at-a-time / together, {what:>4} time: {b[names[2]] / b[names[0]]:.2f}x")


if __name__ == '__main__':
    main()
