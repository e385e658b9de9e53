"""
Benchmark generation speed: our KV-cached generate() against transformers' generate() and upstream
nanoGPT's uncached loop, on the same weights, side by side in one run. Prints tokens/s and ratios.

    python -m bench.generate                                  # GPT-2 124M shape, random weights, CPU float32
    python -m bench.generate --upstream_dir=/path/to/nanoGPT  # run upstream's own model.py as the baseline
    python -m bench.generate --max_new_tokens=64 --n_layer=4  # quicker

Without --upstream_dir (a checkout of karpathy/nanoGPT) the uncached baseline is our own
generate(use_cache=False), which recomputes the whole context every step exactly as upstream does.
All runs are greedy, so every implementation must produce the same tokens (checked and printed).
"""
import importlib.util
import os
import tempfile
import time

import torch

from configurator import configure
from model import GPT

# -----------------------------------------------------------------------------
max_new_tokens: int = 256  # tokens generated per run
prompt_len: int = 16  # prompt tokens (random ids)
n_layer: int = 12  # GPT-2 124M shape by default
n_head: int = 12
n_embd: int = 768
repeats: int = 2  # timed rounds (the best is reported), after one warm-up round
upstream_dir: str = ''  # a checkout of karpathy/nanoGPT; '' = use our uncached loop as the upstream baseline
threads: int = 0  # torch threads; 0 = torch's default
seed: int = 1337
configure(globals())
# -----------------------------------------------------------------------------


def measure(fns):
    """Best wall time of each fn over `repeats` rounds, interleaved (A B C A B C ...) so that a busy
    machine slows every implementation alike; one warm-up round first."""
    best, outs = {name: float('inf') for name in fns}, {}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            if r > 0:
                best[name] = min(best[name], time.perf_counter() - t0)
    return best, outs


def main():
    from transformers import GPT2Config, GPT2LMHeadModel
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = GPT.from_pretrained(d).eval()
    x = torch.randint(0, 50257, (1, prompt_len), generator=torch.Generator().manual_seed(seed))
    print(f"CPU float32, {torch.get_num_threads()} threads, GPT-2 shape n_layer={n_layer} n_embd={n_embd}, "
          f"random weights, batch 1, prompt {prompt_len} tokens, {max_new_tokens} new tokens, greedy")

    results = {}

    def run_ours():
        return ours.generate(x, max_new_tokens, temperature=0)[0].tokens

    def run_hf():
        with torch.inference_mode():
            y = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                            min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=50256)
        return y[0, prompt_len:].tolist()

    if upstream_dir:
        path = os.path.join(upstream_dir, 'model.py')
        spec = importlib.util.spec_from_file_location('upstream_model', path)
        up = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(up)
        um = up.GPT(up.GPTConfig(**ours.model_args)).eval()
        # upstream may keep mask buffers (attn.bias)
        res = um.load_state_dict(ours.state_dict(), strict=False)
        assert (not res.missing_keys
                or all(k.endswith('.attn.bias') for k in res.missing_keys)), res.missing_keys
        for block in um.transformer.h:  # same GELU as the others, so the tokens can be compared
            block.mlp.gelu = torch.nn.GELU(approximate='tanh')
        up_name = f"upstream nanoGPT generate() ({path}, uncached)"

        def run_up():
            with torch.no_grad():
                return um.generate(x, max_new_tokens, temperature=1e-9, top_k=1)[0, prompt_len:].tolist()
    else:
        up_name = "uncached loop (ours, use_cache=False: upstream's algorithm)"

        def run_up():
            return ours.generate(x, max_new_tokens, temperature=0, use_cache=False)[0].tokens

    fns = {'ours (KV cache)': run_ours, 'transformers generate()': run_hf, up_name: run_up}
    best, outs = measure(fns)
    for name in fns:
        results[name] = (max_new_tokens / best[name], outs[name])
        print(f"{name:<60s} {max_new_tokens / best[name]:7.2f} tok/s  ({best[name]:.2f} s)")

    names = list(results)
    ref = results[names[0]][1]
    same = all(r[1] == ref for r in results.values())
    print(f"same greedy tokens in all three: {same}")
    ours_tps = results[names[0]][0]
    print(f"ratio ours / transformers: {ours_tps / results[names[1]][0]:.2f}x   (goal >= 1.0)")
    print(f"ratio ours / uncached    : {ours_tps / results[names[2]][0]:.2f}x   (goal >= 5.0)")


if __name__ == '__main__':
    main()
