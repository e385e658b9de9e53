"""
LoRA fine-tuning on Hugging Face PEFT: low-rank adapters on a frozen base, kept in PEFT's own format.

train.py's lora_rank=r (0 = off) gives each targeted matrix W (out, in) of the GPT a trainable update
B @ A * lora_alpha / r, with A (r, in) and B (out, r); B starts at zero, so training starts from the base
exactly, and only A and B train (the base gets no gradients and no AdamW state).

The route. PEFT is applied to our own GPT (model.py), through PEFT's API for any torch model
(peft.inject_adapter_in_model with LoraConfig(target_modules=...)): PEFT replaces each targeted
nn.Linear with its lora.Linear, so PEFT's code computes the forward, the dropout, the initialisation and
the merge. Nothing needs converting on save, for two reasons:
- our module names are Hugging Face GPT-2's (transformer.h.<i>.attn.c_attn, .attn.c_proj, .mlp.c_fc,
  .mlp.c_proj: nanoprobs/hf.py maps the weights name for name), so PEFT's state-dict keys are the keys a
  PeftModel around transformers' GPT2LMHeadModel expects, with PeftModel's prefix 'base_model.model.';
- PEFT keeps A and B in the same orientation for both kinds of layer: lora_A is (r, in) and lora_B is
  (out, r) for an nn.Linear (ours, weight (out, in)) and for a transformers Conv1D (GPT-2's, weight
  (in, out)) alike; only the application differs, which PEFT's config says with fan_in_fan_out. Our
  layers need fan_in_fan_out=False, GPT-2's Conv1D True: that one flag is all that differs between
  the config we train with and the adapter_config.json we write (write_peft).
The other routes were worse: training PEFT on transformers' GPT2LMHeadModel would lose this project's
model (KV cache, capture, scoring), and LoRA layers of our own would not be the ecosystem's.

A LoRA run's checkpoint (out_dir/ckpt.pt, read with weights_only=True like every other) holds, instead of
upstream's 'model' weights, 'lora': the adapter tensors exactly as adapter_model.safetensors holds them,
the settings, and its base: the init_from it started from (a hub name such as 'gpt2', a Hugging Face
folder, or a nanoGPT checkpoint) with the SHA-256 of the base's weights, checked whenever the run is
loaded. The AdamW state (adapters only), the RNG and the counters are as for any run (trainstate.py), so
a LoRA run resumes exactly. For inference (sample.py, eval.py, serve.py, the tools: load.py) the adapters
are merged into the base's weights, so the model is a plain GPT, as fast as the base.

freeze_layers and LoRA do not combine (refused in one line): LoRA already freezes every base weight.
"""

import hashlib
import os
from dataclasses import asdict, dataclass

import torch

from configurator import UserError

KEYS = ('lora_rank', 'lora_alpha', 'lora_dropout', 'lora_targets')  # train.py's settings
TARGETS = ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')  # every matrix of a block (HF's names)
SHORT = {'c_attn': 'attn.c_attn', 'c_fc': 'mlp.c_fc'}  # unambiguous short names ('c_proj' is two layers)
PREFIX = 'base_model.model.'  # where a PeftModel keeps the model it wraps: the keys of PEFT's files
ADAPTER = 'default'  # PEFT's name for the one adapter


class LoraError(UserError, ValueError):
    """A LoRA setting or checkpoint that cannot be used (a UserError that ValueError handlers catch too)."""


def parse_targets(text):
    """'c_attn,mlp.c_proj' -> ('attn.c_attn', 'mlp.c_proj'); 'all' -> every matrix of a block."""
    names = [t.strip() for t in text.split(',') if t.strip()]
    if names == ['all']:
        return TARGETS
    out = []
    for t in names:
        full = SHORT.get(t, t)
        if full not in TARGETS:
            hint = " (ambiguous: attn.c_proj or mlp.c_proj?)" if t == 'c_proj' else ""
            raise LoraError(f"lora_targets={text!r}: unknown layer {t!r}{hint}; use 'all' or a comma list "
                            f"of {', '.join(TARGETS)} (c_attn and c_fc also work)")
        if full not in out:
            out.append(full)
    if not out:
        raise LoraError(f"lora_targets={text!r} names no layer; use 'all' or a comma list of "
                        f"{', '.join(TARGETS)}")
    return tuple(out)


@dataclass
class Settings:
    """What defines the adapters: rank, scale (alpha / rank), dropout on their input, the layers."""
    rank: int
    alpha: float
    dropout: float
    targets: tuple

    @classmethod
    def from_config(cls, config):
        """The settings of train.py's config; LoraError naming the key and the fix for a bad one."""
        rank, alpha, dropout = config['lora_rank'], config['lora_alpha'], config['lora_dropout']
        if rank < 1:
            raise LoraError(f"lora_rank={rank}: use a rank of at least 1 (8 is a common start), or 0 for "
                            "full fine-tuning")
        if not 0 < alpha < float('inf'):
            raise LoraError(f"lora_alpha={alpha} must be a positive number (the adapters are scaled by "
                            "lora_alpha / lora_rank)")
        if not 0 <= dropout < 1:
            raise LoraError(f"lora_dropout={dropout} must be at least 0 and less than 1")
        return cls(rank, alpha, dropout, parse_targets(config['lora_targets']))

    def config_values(self):
        """The settings as train.py's config keys."""
        return dict(lora_rank=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                    lora_targets=','.join(self.targets))

    def peft_config(self, hf_conv1d=False):
        """PEFT's LoraConfig: for our nn.Linear layers, or (hf_conv1d) for transformers' GPT-2."""
        from peft import LoraConfig
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.targets), bias='none', fan_in_fan_out=hf_conv1d,
                          task_type='CAUSAL_LM' if hf_conv1d else None)


def checksum(model):
    """SHA-256 of a model's weights: every parameter once (the tied matrix once), by name, shape and
    float32 bytes. It names the base whatever file format holds it."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        t = p.detach().to('cpu', torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy())
    return h.hexdigest()


@dataclass
class Base:
    """The model a LoRA run adapts: how to load it (init_from) and the checksum of its weights."""
    init_from: str  # a hub name ('gpt2'), or the path of a Hugging Face folder or checkpoint, as given
    path: str  # the absolute path of a folder or checkpoint ('' for a hub name)
    sha256: str

    @classmethod
    def of(cls, init_from, model, hub=False):
        """The base model (as loaded, before any crop) loaded from init_from; hub: init_from is a hub name."""
        return cls(init_from, '' if hub else os.path.abspath(init_from), checksum(model))

    def location(self):
        """What to load now: the path as given if it is there (relative to here), else the absolute one."""
        return self.init_from if not self.path or os.path.exists(self.init_from) else self.path

    def verify(self, model, ckpt_path):
        """LoraError unless model's weights are the ones this run was trained on."""
        found = checksum(model)
        if found != self.sha256:
            raise LoraError(
                f"{ckpt_path}: the LoRA adapters were trained on {self.location()} with weights of SHA-256 "
                f"{self.sha256[:12]}..., but it now holds {found[:12]}... (changed since, e.g. trained "
                "further): the adapters fit only the weights they were trained on. Put those weights back "
                "there, or train new adapters on the current ones")


def new_run_settings(config):
    """The adapters' Settings of a new LoRA run (train.py's config, lora_rank > 0), checked before any model
    is loaded: LoraError for a setting, a start from scratch or freezing that do not apply."""
    if config['init_from'] == 'scratch':
        raise LoraError(f"lora_rank={config['lora_rank']} with init_from='scratch': LoRA adapts a trained "
                        "model; use --init_from=gpt2, a Hugging Face folder or a checkpoint (or lora_rank=0)")
    if config['freeze_layers'] != 0:
        raise LoraError(f"freeze_layers={config['freeze_layers']} with lora_rank={config['lora_rank']}: "
                        "LoRA already freezes every base weight and trains only its adapters; drop "
                        "--freeze_layers (or use --lora_rank=0 to train unfrozen layers in full)")
    return Settings.from_config(config)


def attach(model, settings):
    """Put PEFT's LoRA layers into model (our GPT) in place: only the adapters train from here."""
    from peft import inject_adapter_in_model
    inject_adapter_in_model(settings.peft_config(), model, adapter_name=ADAPTER)
    return model


def counts(model):
    """(trainable, total) parameters, each tensor once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adapter_state(model):
    """The adapter tensors of model under the keys of PEFT's adapter_model.safetensors."""
    from peft import get_peft_model_state_dict
    return {PREFIX + k: v.detach().clone() for k, v in
            get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def load_adapter_state(model, state, path):
    """Set model's adapters (attach first) from adapter_state's dict; LoraError if they do not fit."""
    from peft import set_peft_model_state_dict
    sd = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}
    want = {k.replace(f'.{ADAPTER}.', '.') for k, _ in model.named_parameters() if 'lora_' in k}
    if set(sd) != want:
        raise LoraError(f"{path}: the adapters do not fit the model: {sorted(set(sd) ^ want)[:3]} ...")
    try:
        set_peft_model_state_dict(model, sd, adapter_name=ADAPTER)
    except RuntimeError as e:  # a shape that does not fit
        raise LoraError(f"{path}: the adapters do not fit the model: {str(e).splitlines()[0]}") from None


def merge(model):
    """Merge the adapters into the base weights with PEFT (W += B @ A * alpha / r) and take PEFT's layers
    out again: a plain GPT computing the same function, every parameter trainable as after any load."""
    from peft.tuners.lora import LoraLayer
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(adapter_names=[ADAPTER])
            parent, _, child = name.rpartition('.')
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model, 'peft_config'):
        del model.peft_config
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@dataclass
class Run:
    """A LoRA run's identity: its adapters' settings and its base. checkpoint() turns the checkpoint of
    trainstate.save into the LoRA checkpoint."""
    settings: Settings
    base: Base

    @classmethod
    def of_checkpoint(cls, ckpt):
        """The Run a LoRA checkpoint records (None for any other checkpoint)."""
        info = ckpt.get('lora')
        if not info:
            return None
        s = info['settings']
        return cls(Settings(s['rank'], s['alpha'], s['dropout'], tuple(s['targets'])), Base(**info['base']))

    @classmethod
    def resumed(cls, ckpt, config, asked):
        """The LoRA run a resume continues (None: a full run): the checkpoint's settings. A LoRA setting
        asked for (on the command line or in a config file) that differs is a LoraError; config gets the
        checkpoint's values."""
        run = cls.of_checkpoint(ckpt)
        saved = ckpt.get('config') or {}
        stored = {k: saved.get(k, v) for k, v in run.settings.config_values().items()} if run else \
            {'lora_rank': 0}

        def differs(k):
            if k == 'lora_targets':  # as parsed: 'all' is every layer
                return parse_targets(config[k]) != run.settings.targets
            return config[k] != stored[k]

        bad = [k for k in KEYS if k in asked and k in stored and differs(k)]
        if bad:
            what = ("with LoRA (" + ', '.join(f"{k}={v!r}" for k, v in stored.items()) + ")") if run else \
                "in full (lora_rank=0)"
            raise LoraError(f"the checkpoint was trained {what} but this run asks for "
                            + ', '.join(f"{k}={config[k]!r}" for k in bad) + ": a resumed run keeps how it "
                            "trains, so drop " + ' and '.join(f"--{k}" for k in bad) + ", or start a new run "
                            "from its weights with --init_from=<out_dir>/ckpt.pt --out_dir=<a new folder>")
        if run:
            config.update(stored)
        return run

    def checkpoint(self, ckpt, model):
        """ckpt (load.checkpoint_dict of model) with the adapters and the base's name in place of the
        weights: a few MB instead of the whole model."""
        import peft
        out = {k: v for k, v in ckpt.items() if k != 'model'}
        out['lora'] = {'adapter': adapter_state(model), 'peft_version': peft.__version__,
                       'settings': {**asdict(self.settings), 'targets': list(self.settings.targets)},
                       'base': asdict(self.base)}
        return out

    def describe(self, model):
        """The lines a run prints: what trains, on which base, and the parameter counts."""
        trainable, total = counts(model)
        s = self.settings
        frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad) / 2**20
        return [f"LoRA (PEFT): rank {s.rank}, alpha {s.alpha:g} (scale {s.alpha / s.rank:g}), dropout "
                f"{s.dropout:g}, on {', '.join(s.targets)} of {model.config.n_layer} blocks; the base "
                f"({self.base.init_from}, SHA-256 {self.base.sha256[:12]}...) is frozen and not saved",
                f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)",
                f"the frozen base gets no gradients and no AdamW state: {3 * frozen:,.1f} MiB saved"]


def restore(model, ckpt, path, merge_adapters=True):
    """A LoRA checkpoint's model: model is its base as just loaded (checked against the checksum), cropped
    to the run's block_size, with the adapters on it; merged into it unless merge_adapters=False (to
    train on)."""
    run = Run.of_checkpoint(ckpt)
    run.base.verify(model, path)
    block = ckpt['model_args']['block_size']
    if block < model.config.block_size:
        model.crop_block_size(block)
    attach(model, run.settings)
    load_adapter_state(model, ckpt['lora']['adapter'], path)
    return merge(model) if merge_adapters else model


def write_peft(folder, ckpt, base_name):
    """The adapter folder PeftModel.from_pretrained(GPT2LMHeadModel..., folder) loads: adapter_config.json
    (the run's settings, for GPT-2's Conv1D layers) and adapter_model.safetensors (the checkpoint's
    adapter tensors, unchanged). base_name: where transformers finds the base (hub name or folder)."""
    from safetensors.torch import save_file
    run = Run.of_checkpoint(ckpt)
    cfg = run.settings.peft_config(hf_conv1d=True)
    cfg.base_model_name_or_path = base_name
    os.makedirs(folder, exist_ok=True)
    cfg.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in ckpt['lora']['adapter'].items()}
    save_file(state, os.path.join(folder, 'adapter_model.safetensors'), metadata={'format': 'pt'})
