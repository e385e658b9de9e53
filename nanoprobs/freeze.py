"""
Layer freezing for fine-tuning: which parameters train, what freezing saves, and the resume rule.

train.py's freeze_layers=N freezes (requires_grad=False) the token and position embeddings and the first
N transformer blocks; N=-1 freezes every block, so only the final layer norm trains. 0 freezes nothing.

GPT-2 ties lm_head to the token embedding: both are one (vocab_size, n_embd) matrix. Freezing the
embedding therefore freezes the output layer too, and training the output layer trains the input
embedding too. train_tied_head=True chooses the second: the shared matrix trains (with freeze_layers=-1
that is "head only": the output layer, which is also the input embedding, plus the final layer norm).
Untying them would change the network upstream nanoGPT loads (it ties them again and keeps one), so
the choice stays between these two honest options.

A frozen parameter never gets a gradient, so AdamW keeps no state for it (exp_avg and exp_avg_sq: two
copies of the parameter) and weight decay leaves it alone. The optimizer keeps upstream's two groups
with every parameter in them, so a checkpoint of a frozen run still resumes in upstream nanoGPT (which
trains everything from there) and ours reads upstream's. The setting is saved in the checkpoint's
config; a resumed run keeps it, and asking for a different one is an error (an optimizer state for other
parameters, and a different experiment). Upstream's checkpoints have no such key: they froze nothing.
"""

from configurator import UserError

KEYS = ('freeze_layers', 'train_tied_head')
DEFAULTS = {'freeze_layers': 0, 'train_tied_head': False}  # upstream's checkpoints: nothing frozen


class FreezeError(UserError, ValueError):
    """A freezing setting that cannot be applied (a UserError that ValueError handlers catch too)."""


def freeze(model, n, train_tied_head=False):
    """Set requires_grad on a GPT's parameters for freeze_layers=n; returns (trainable, total) counts."""
    L = model.config.n_layer
    if n < -1 or n > L:
        raise FreezeError(f"freeze_layers={n}: the model has {L} blocks; use 0 (train everything), 1..{L} "
                          f"(the embeddings and that many blocks from the bottom), or -1 (every block)")
    tr = model.transformer
    frozen = [] if n == 0 else [tr.wte, tr.wpe, *tr.h[:L if n == -1 else n]]
    for p in model.parameters():
        p.requires_grad_(True)
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    if n != 0 and train_tied_head:
        model.transformer.wte.weight.requires_grad_(True)  # lm_head.weight is this very tensor
    params = list(model.parameters())  # each tensor once: the tied matrix counts once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def describe(model, n, train_tied_head, trainable, total):
    """The lines a run prints about its freezing: what is frozen, the tied head, the counts, memory saved."""
    L = model.config.n_layer
    lines = []
    if n != 0:
        k = L if n == -1 else n
        blocks = f"all {L} blocks" if k == L else "block 0" if k == 1 else f"blocks 0-{k - 1} of {L}"
        tied = ("is trained (train_tied_head=True): as output layer and as input embedding"
                if train_tied_head else
                "is frozen with it (train_tied_head=True would train the shared matrix, as output and input)")
        lines.append(f"freeze_layers={n}: frozen: token and position embeddings, {blocks}; "
                     f"lm_head is tied to the token embedding (one matrix, as GPT-2), so it {tied}")
    lines.append(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.1f}%)")
    if n != 0:
        frozen_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
        mib = frozen_bytes / 2**20
        lines.append(f"frozen parameters get no gradients and no AdamW state: {3 * mib:,.1f} MiB saved "
                     f"({2 * mib:,.1f} MiB optimizer state, {mib:,.1f} MiB gradients)")
    return lines


def resumed(ckpt_config, current, asked):
    """The freezing a resumed run continues with: the checkpoint's. ckpt_config: the checkpoint's config
    (None or without the keys: upstream's, nothing frozen); current: this run's settings; asked: the keys
    the command line or a config file set. A setting asked for that differs is a FreezeError."""
    stored = {k: (ckpt_config or {}).get(k, DEFAULTS[k]) for k in KEYS}
    bad = [k for k in KEYS if k in asked and current[k] != stored[k]]
    if bad:
        raise FreezeError(
            "the checkpoint was trained with " + ', '.join(f"{k}={stored[k]!r}" for k in KEYS)
            + " but this run asks for " + ', '.join(f"{k}={current[k]!r}" for k in bad)
            + ": a resumed run keeps its freezing, so drop " + ' and '.join(f"--{k}" for k in bad)
            + ", or start a new run from these weights with "
            "--init_from=<out_dir>/ckpt.pt --out_dir=<a new folder>")
    return stored['freeze_layers'], stored['train_tied_head']
