"""
The error of half-precision weights: per-token log-probabilities with bfloat16 (or float16) weights
against float32, and float32's own against float64, on the held-out pairs and on a sampled text.

    python -m bench.precision                          # GPT-2 124M shape, random weights, bfloat16
    python -m bench.precision --init_from=gpt2         # the real GPT-2 (downloads once)
    python -m bench.precision --init_from=out/ckpt.pt --eval_data=my_pairs.json

The same model is loaded three times, as sample.py, eval.py and serve.py load it: --dtype=float64 (the
reference), float32, and `dtype` (bfloat16 by default: real bfloat16 matmul weights, float32 logits,
float64 log-softmax). Every pair of eval_data is scored by eval.py's score_pairs under each; then the
float32 model samples max_new_tokens tokens after `start` (temperature 1, seeded) and that text is
scored under each the same way. Printed: the largest and the mean per-token |log p difference| (nats)
of float32 and of `dtype` against float64, and the largest difference of a whole response's log-prob.
tests/test_precision.py bounds the same numbers on a tiny model.
"""
import os
import tempfile

import torch

from configurator import configure

# -----------------------------------------------------------------------------
init_from: str = ''  # '' = a GPT-2 124M-shaped Hugging Face folder of random weights; else as sample.py takes it
dtype: str = 'bfloat16'  # the half precision measured: 'bfloat16' (CPU or GPU) or 'float16' (GPU)
device: str = 'cpu'
eval_data: str = 'eval_data.json'  # the held-out pairs
start: str = "Once upon a time"
max_new_tokens: int = 200
seed: int = 1337
configure(globals())
# -----------------------------------------------------------------------------


def gaps(runs, ref):
    """Per-token |log p - log p_ref| of every pair (flattened) and of every whole response, for two
    score_pairs results over the same pairs."""
    tokens, sums = [], []
    for a, b in zip(runs.pairs, ref.pairs):
        assert a.response_ids == b.response_ids
        d = (torch.tensor(a.logprobs, dtype=torch.float64) - torch.tensor(b.logprobs, dtype=torch.float64)).abs()
        tokens.append(d)
        sums.append(abs(sum(a.logprobs) - sum(b.logprobs)))
    return torch.cat(tokens), torch.tensor(sums, dtype=torch.float64)


def main():
    from eval import score_pairs
    from nanoprobs.load import load_model
    from nanoprobs.pairs import read_pairs
    from bench import machine
    print(machine.describe())
    with tempfile.TemporaryDirectory() as d:
        source = init_from
        if not source:
            from transformers import GPT2Config, GPT2LMHeadModel
            torch.manual_seed(seed)
            source = os.path.join(d, 'hf')
            GPT2LMHeadModel(GPT2Config()).save_pretrained(source)
        loaded = {dt: load_model(source, device=device, dtype=dt) for dt in ('float64', 'float32', dtype)}
        tok = loaded['float32'].tok
        L = loaded['float32']
        prompt = tok.encode(start)
        g = torch.Generator(device='cpu').manual_seed(seed)
        with L.ctx:
            text = L.model.generate(torch.tensor([prompt], device=L.device), max_new_tokens, temperature=1.0,
                                    generator=g)[0]
        sampled = [{'prompt': start, 'response': tok.decode(text.tokens)}]
        sets = {'held-out pairs': read_pairs(eval_data), 'a sampled text': sampled}
        print(f"model: {init_from or 'GPT-2 124M shape, random weights'}; {dtype} weights on {device}; "
              f"{len(sets['held-out pairs'])} pairs of {eval_data}, {max_new_tokens} tokens sampled after "
              f"{start!r}")
        for name, pairs in sets.items():
            runs = {dt: score_pairs(pairs, L, quiet=True) for dt, L in loaded.items()}
            n = sum(len(p.response_ids) for p in runs['float64'].pairs)
            for dt in ('float32', dtype):
                tokens, sums = gaps(runs[dt], runs['float64'])
                print(f"{name} ({n} tokens), {dt:8s} vs float64: per-token |log p difference| max "
                      f"{tokens.max():.2e}, mean {tokens.mean():.2e} nats; whole response max {sums.max():.2e}")
            tokens, _ = gaps(runs[dtype], runs['float32'])
            print(f"{name}, {dtype} vs float32: per-token max {tokens.max():.2e} nats "
                  f"(a factor {float(tokens.max().exp()):.4f} on a probability)")


if __name__ == '__main__':
    main()
