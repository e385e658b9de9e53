"""
The error of half-precision weights: per-token log-probabilities with bfloat16 (or float16) weights
against float32, and float32's own against float64, on the held-out pairs and on a sampled text.

    python -m bench.precision                          # GPT-2 124M shape, random weights, bfloat16
    python -m bench.precision --init_from=gpt2         # the real GPT-2 (downloads once)
    python -m bench.precision --init_from=out/ckpt.pt --eval_data=my_pairs.json

The same model is loaded three times, as sample.py, eval.py and serve.py load it: --dtype=float64 (the
reference), float32, and `dtype` (bfloat16 by default: real bfloat16 matmul weights, float32 logits,
float64 log-softmax). Every pair of eval_data is tokenized as eval.py does and scored by GPT.score
(what eval.py calls) under each; then the float32 model samples max_new_tokens tokens after `start`
(temperature 1, seeded) and those tokens are scored under each the same way. Printed: the largest and the mean per-token |log p difference| (nats)
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


def logprobs(L, rows):
    """Per-token log-probs (float64) of each (prompt_ids, response_ids) row, scored by L.model.score under
    L.ctx, as eval.py scores its pairs."""
    with torch.no_grad(), L.ctx:
        scored = L.model.score([p for p, _ in rows], [r for _, r in rows])
    return [s.logprobs.double().cpu() for s in scored]


def gaps(got, ref):
    """Per-token |log p - log p_ref| over every row (flattened), and |difference| of each row's sum."""
    tokens = torch.cat([(a - b).abs() for a, b in zip(got, ref)])
    sums = torch.tensor([abs(float(a.sum() - b.sum())) for a, b in zip(got, ref)])
    return tokens, sums


def main():
    from nanoprobs.load import load_model
    from nanoprobs.pairs import join_texts, read_pairs, tokenize_pair
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
        L = loaded['float32']
        pairs = [tokenize_pair(L.tok, *join_texts(p['prompt'], p['response']))[:2] for p in read_pairs(eval_data)]
        prompt = L.tok.encode(start)
        g = torch.Generator(device='cpu').manual_seed(seed)
        with torch.no_grad(), L.ctx:
            text = L.model.generate(torch.tensor([prompt], device=L.device), max_new_tokens, temperature=1.0,
                                    generator=g)[0]
        sets = {'held-out pairs': pairs, 'a sampled text': [(prompt, text.tokens)]}
        print(f"model: {init_from or 'GPT-2 124M shape, random weights'}; {dtype} weights on {device}; "
              f"{len(pairs)} pairs of {eval_data}, {max_new_tokens} tokens sampled after {start!r}")
        for name, rows in sets.items():
            lps = {dt: logprobs(Ld, rows) for dt, Ld in loaded.items()}
            n = sum(len(r) for _, r in rows)
            for dt in ('float32', dtype):
                tokens, sums = gaps(lps[dt], lps['float64'])
                print(f"{name} ({n} tokens), {dt:8s} vs float64: per-token |log p difference| max "
                      f"{tokens.max():.2e}, mean {tokens.mean():.2e} nats; whole response max {sums.max():.2e}")
            tokens, _ = gaps(lps[dtype], lps['float32'])
            print(f"{name}, {dtype} vs float32: per-token max {tokens.max():.2e} nats "
                  f"(a factor {float(tokens.max().exp()):.4f} on a probability)")


if __name__ == '__main__':
    main()
