"""
Benchmark loading a model, in one process, side by side: ours from a Hugging Face folder and from a nanoGPT
checkpoint against transformers' GPT2LMHeadModel.from_pretrained of the same folder, and the way this fork
loaded before (build a transformers model, initialise our GPT randomly, copy).

    python -m bench.load                 # GPT-2 124M shape, random weights
    python -m bench.load --n_layer=4     # quicker

The weights are written first (a folder by save_pretrained; a checkpoint as train.py writes it, with
AdamW's state, three times the model's size), then each loader runs in turn (A B C A B C ...) over
`repeats` rounds after a warm-up round, so every file is in the page cache and a busy machine slows all
alike; medians are printed. Imports are not timed here (python -m bench.startup times whole processes).
The loaded models are checked: ours gives transformers' logits (float32 rounding apart) and the
checkpoint's model the folder's, exactly.
"""
import gc
import os
import statistics
import tempfile
import time

import torch

from bench import machine
from configurator import configure

# -----------------------------------------------------------------------------
n_layer: int = 12  # GPT-2 124M shape by default
n_head: int = 12
n_embd: int = 768
repeats: int = 5  # timed rounds (medians are reported), after one warm-up round
threads: int = 0  # torch threads; 0 = torch's default
seed: int = 1337
configure(globals())
# -----------------------------------------------------------------------------


def old_from_pretrained(folder):
    """This fork's loader before: a transformers model, then our GPT initialised randomly, then a copy."""
    from transformers import GPT2LMHeadModel
    from model import GPT, GPTConfig
    from nanoprobs import hf
    src = GPT2LMHeadModel.from_pretrained(folder)
    model = GPT(GPTConfig(**hf.config_args(src.config.to_dict(), folder)))
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in src.state_dict().items():
            if not k.endswith(hf.MASKS) and k in sd:
                sd[k].copy_(v.t() if k.endswith(hf.CONV1D) else v)
    return model


def old_from_checkpoint(path):
    """Before: the whole checkpoint read into memory, a randomly initialised GPT, then a copy."""
    from model import GPT, GPTConfig, MODEL_ARGS
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    model = GPT(GPTConfig(**{k: ckpt['model_args'][k] for k in MODEL_ARGS}, gelu=ckpt.get('gelu', 'exact')))
    model.load_state_dict(ckpt['model'])
    return model


def write_checkpoint(model, path):
    """ckpt.pt as train.py writes it: the model, AdamW's two moments per weight, the settings."""
    from nanoprobs.load import checkpoint_dict
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the state is made, the weights stay
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # makes the optimizer state (exp_avg, exp_avg_sq)
    torch.save(checkpoint_dict(model, opt, iter_num=1), path)


def main():
    from transformers import GPT2Config, GPT2LMHeadModel
    from model import GPT
    from nanoprobs.load import load_checkpoint, model_from_checkpoint
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    print(machine.describe())
    with tempfile.TemporaryDirectory() as d:
        folder, ckpt = os.path.join(d, 'hf'), os.path.join(d, 'ckpt.pt')
        GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)).save_pretrained(folder)
        write_checkpoint(GPT.from_pretrained(folder), ckpt)
        sizes = {p: sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) if p == folder
                 else os.path.getsize(p) for p in (folder, ckpt)}
        print(f"GPT-2 shape n_layer={n_layer} n_embd={n_embd}: Hugging Face folder {sizes[folder] / 1e6:.0f} MB, "
              f"checkpoint with optimizer state {sizes[ckpt] / 1e6:.0f} MB; in-process, files in the page cache, "
              f"median of {repeats}")
        fns = {
            'transformers GPT2LMHeadModel.from_pretrained(folder)': lambda: GPT2LMHeadModel.from_pretrained(folder),
            'ours GPT.from_pretrained(folder)': lambda: GPT.from_pretrained(folder),
            'ours model_from_checkpoint(load_checkpoint(ckpt.pt))':
                lambda: model_from_checkpoint(load_checkpoint(ckpt), path=ckpt),
            'before: transformers model + random init + copy (folder)': lambda: old_from_pretrained(folder),
            'before: torch.load + random init + copy (ckpt.pt)': lambda: old_from_checkpoint(ckpt),
        }
        times = {name: [] for name in fns}
        models = {}
        for r in range(repeats + 1):
            for name, fn in fns.items():
                gc.collect()
                t = time.perf_counter()
                m = fn()
                dt = time.perf_counter() - t
                if r:
                    times[name].append(dt)
                models[name] = m if r == repeats else None
                del m
        secs = {name: statistics.median(t) for name, t in times.items()}
        names = list(fns)
        for name in names:
            print(f"{name:<62s} {secs[name]:7.3f} s")
        ref = secs[names[0]]
        print(f"ratio ours (folder) / transformers: {secs[names[1]] / ref:.2f}   (goal <= 1.5)")
        print(f"ratio ours (ckpt.pt) / transformers: {secs[names[2]] / ref:.2f}   (goal <= 1.5)")
        print(f"ours against before: folder {secs[names[3]] / secs[names[1]]:.1f}x faster, "
              f"checkpoint {secs[names[4]] / secs[names[2]]:.1f}x faster")

        x = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = models[names[0]].eval()(x).logits
            got = models[names[1]].eval()(x, all_logits=True)[0]
            from_ckpt = models[names[2]].eval()(x, all_logits=True)[0]
        print(f"logits: ours (folder) vs transformers max |difference| {float((got - want).abs().max()):.2e} "
              f"(of max |logit| {float(want.abs().max()):.2f}); ours (ckpt.pt) vs ours (folder) identical: "
              f"{torch.equal(got, from_ckpt)}")
        models.clear()
    print(f"(load average {machine.load_average():.1f} at the end)")


if __name__ == '__main__':
    main()
