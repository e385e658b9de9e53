"""
Benchmark generation speed in one process: our KV-cached generate() against transformers' generate() (and,
greedy, upstream nanoGPT's uncached loop) on the same weights, side by side, and against the machine's limit.

    python -m bench.generate                                  # GPT-2 124M shape, batch 1, greedy, CPU float32
    python -m bench.generate --dtype=bfloat16                 # ours with bfloat16 weights (transformers float32)
    python -m bench.generate --batch_size=10 --temperature=0.8 --top_k=200 --max_new_tokens=64  # sample.py's
    python -m bench.generate --upstream_dir=/path/to/nanoGPT  # run upstream's own model.py as the baseline
    python -m bench.generate --max_new_tokens=64 --n_layer=4  # quicker

Greedy runs (temperature=0) compare three implementations, which must produce the same tokens in float32
(checked and printed): ours, transformers, and upstream's uncached loop (without --upstream_dir our own
generate(use_cache=False), which recomputes the whole context every step exactly as upstream does).
Sampling runs draw batch_size samples of one prompt, as sample.py does (ours with details=10, what its
default HTML report records) and as transformers' generate(num_return_sequences=batch_size) does.
The runs alternate (A B A B ...) over `repeats` rounds after a warm-up round; medians are printed. The
limit: one step reads every weight once, so steps x the bytes of a step (bench/machine.py step_bytes)
at the bandwidth of a matrix-vector product measured here is the least time any such decoder needs.
"""
import importlib.util
import os
import statistics
import tempfile
import time

import torch

from bench import machine
from configurator import configure

# -----------------------------------------------------------------------------
max_new_tokens: int = 256  # tokens generated per run
prompt_len: int = 16  # prompt tokens (random ids)
batch_size: int = 1  # rows generated together (samples of one prompt)
temperature: float = 0.0  # 0 = greedy (the three implementations are compared token by token)
top_k: int = 0  # sampling: keep the top_k most likely tokens (0 = off)
dtype: str = 'float32'  # ours: 'float32' or 'bfloat16' (real bfloat16 weights); transformers stays float32
n_layer: int = 12  # GPT-2 124M shape by default
n_head: int = 12
n_embd: int = 768
repeats: int = 3  # timed rounds (medians are reported), after one warm-up round
upstream_dir: str = ''  # a checkout of karpathy/nanoGPT; '' = use our uncached loop as the upstream baseline
threads: int = 0  # torch threads; 0 = torch's default
seed: int = 1337
configure(globals())
# -----------------------------------------------------------------------------


def measure(fns):
    """Median wall time of each fn over `repeats` rounds, interleaved (A B C A B C ...) so that a busy
    machine slows every implementation alike; one warm-up round first. Returns (medians, last outputs)."""
    times, outs = {name: [] for name in fns}, {}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            if r > 0:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, outs


def upstream_generate(ours, x):
    """Upstream nanoGPT's own model.py with our weights: its uncached generate(), greedy."""
    path = os.path.join(upstream_dir, 'model.py')
    spec = importlib.util.spec_from_file_location('upstream_model', path)
    up = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(up)
    um = up.GPT(up.GPTConfig(**ours.model_args)).eval()
    res = um.load_state_dict(ours.state_dict(), strict=False)  # upstream may keep mask buffers (attn.bias)
    assert not res.missing_keys or all(k.endswith('.attn.bias') for k in res.missing_keys), res.missing_keys
    for block in um.transformer.h:  # same GELU as the others, so the tokens can be compared
        block.mlp.gelu = torch.nn.GELU(approximate='tanh')

    def run():
        with torch.no_grad():
            return um.generate(x, max_new_tokens, temperature=1e-9, top_k=1)[0, prompt_len:].tolist()
    return f"upstream nanoGPT generate() ({path}, uncached)", run


def main():
    from transformers import GPT2Config, GPT2LMHeadModel
    from nanoprobs.load import load_model
    from nanoprobs.sampling import make_generator
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        loaded = load_model(d, device='cpu', dtype=dtype)
        ours, ctx = loaded.model, loaded.ctx
        ours.generate(torch.zeros(1, 1, dtype=torch.long), 1)  # make the kept unembedding before timing
    greedy = temperature == 0
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50257, (1, prompt_len), generator=g)
    print(machine.describe())
    print(f"ours {dtype}, transformers float32; GPT-2 shape n_layer={n_layer} n_embd={n_embd}, random weights; "
          f"{batch_size} row(s), prompt {prompt_len} tokens, {max_new_tokens} new tokens, "
          + ('greedy' if greedy else f"T={temperature}, top-k {top_k or 'off'}"))

    def run_ours():
        gens = None if greedy else [make_generator('cpu', seed + i) for i in range(batch_size)]
        with ctx:
            out = ours.generate(x.expand(batch_size, -1), max_new_tokens, temperature=temperature,
                                top_k=top_k or None, details=0 if greedy else 10, generator=gens)
        return out[0].tokens

    def run_hf():
        kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature,
                                                       top_k=top_k or 0, top_p=1.0)
        with torch.inference_mode():
            y = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                            min_new_tokens=max_new_tokens, num_return_sequences=batch_size, pad_token_id=50256,
                            **kw)
        return y[0, prompt_len:].tolist()

    fns = {f'ours (KV cache, {dtype})': run_ours, 'transformers generate() (float32)': run_hf}
    if greedy and batch_size == 1 and upstream_dir and dtype == 'float32':
        name, run_up = upstream_generate(ours, x)
        fns[name] = run_up
    elif greedy and batch_size == 1:
        def run_up():
            with ctx:
                return ours.generate(x, max_new_tokens, temperature=0, use_cache=False)[0].tokens
        fns["uncached loop (ours, use_cache=False: upstream's algorithm)"] = run_up
    secs, outs = measure(fns)
    tokens = batch_size * max_new_tokens
    for name in fns:
        print(f"{name:<62s} {tokens / secs[name]:8.2f} tokens/s  ({secs[name]:.2f} s, median of {repeats})")
    names = list(fns)
    if greedy:
        same = all(o == outs[names[0]] for o in outs.values())
        print(f"same greedy tokens in all {len(fns)}: {same}"
              + ('' if dtype == 'float32' else ' (bfloat16 rounds differently: a different token is expected)'))
    print(f"ratio ours / transformers: {secs[names[1]] / secs[names[0]]:.2f}x")
    if len(names) > 2:
        print(f"ratio ours / uncached    : {secs[names[2]] / secs[names[0]]:.2f}x")
    bandwidth = machine.matvec_bandwidth()
    limit = machine.weights_read_limit(machine.step_bytes(ours), max_new_tokens, bandwidth)
    print(f"weights-read limit: {max_new_tokens} steps x {machine.step_bytes(ours) / 1e6:.0f} MB at "
          f"{bandwidth / 1e9:.1f} GB/s (a matrix-vector product here) = {limit:.2f} s; ours takes "
          f"{secs[names[0]]:.2f} s: it runs at {limit / secs[names[0]]:.2f} of the speed the limit allows")


if __name__ == '__main__':
    main()
