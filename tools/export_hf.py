"""
Write a model as a Hugging Face GPT-2 folder (config.json, weights, tokenizer files) that transformers'
GPT2LMHeadModel.from_pretrained loads with the same logits, e.g. to share a fine-tuned model on the hub.

$ python -m tools.export_hf --out_dir=out-children-stories        # its ckpt.pt -> out-children-stories/hf
$ python -m tools.export_hf --init_from=out-children-stories/ckpt_last.pt --export_dir=stories-gpt2
then
>>> from transformers import GPT2LMHeadModel, AutoTokenizer
>>> model = GPT2LMHeadModel.from_pretrained('out-children-stories/hf')
>>> tok = AutoTokenizer.from_pretrained('out-children-stories/hf')

- GELU: GPT-2's tanh approximation is transformers' 'gelu_new'; upstream nanoGPT's exact GELU is 'gelu'.
- Hugging Face stores the attention and MLP matrices as Conv1D, transposed relative to nn.Linear.
- A model trained with bias=False gets zero biases (the same function); vocab_size stays the model's
  (50304 for upstream-style models from scratch: ids past 50256 are never produced by the tokenizer).
- The tokenizer files are GPT-2's own vocab.json/merges.txt, read from tiktoken's cache (downloaded on
  first use); character-level and trained-BPE models (meta.pkl, tokenizer.json) get config and weights
  only, and a one-line note saying so.

A LoRA run (train.py --lora_rank=8, nanoprobs/lora.py) exports either way:
$ python -m tools.export_hf --out_dir=out-lora                 # PEFT's adapter folder -> out-lora/adapter
$ python -m tools.export_hf --out_dir=out-lora --merge=True    # merged into a full GPT-2 -> out-lora/hf
>>> from peft import PeftModel
>>> model = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained('gpt2'), 'out-lora/adapter')
The adapter folder (adapter_config.json, adapter_model.safetensors, the tokenizer) names its base in
adapter_config.json: a hub name or Hugging Face folder as the run had it; a nanoGPT checkpoint base is
written beside the adapters as a Hugging Face folder, <export_dir>/base. Either way the check compares
transformers' logits with our model with the adapters unmerged (PEFT's own forward).
"""

import contextlib
import os
import shutil
import tempfile

import torch

from configurator import UserError
from nanoprobs import lora
from nanoprobs.load import base_model, describe_init_from, load_checkpoint, load_model, model_from_checkpoint

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (out_dir/ckpt.pt), a checkpoint file/folder, 'gpt2*' or a Hugging Face folder
out_dir = 'out'  # with init_from='resume': the folder holding ckpt.pt
export_dir = ''  # where to write the Hugging Face folder; '' = <out_dir>/hf (<out_dir>/adapter: PEFT's)
merge = False  # a LoRA run: False = PEFT's adapter folder for its base; True = merged into a full GPT-2
tokenizer = True  # also write GPT-2's tokenizer files (models with GPT-2's vocabulary)
check = True  # reload the export with transformers and compare its logits with ours
# -----------------------------------------------------------------------------


def write_gpt2_tokenizer(path, max_length):
    """GPT-2's tokenizer in Hugging Face format, built from the vocab.json/merges.txt tiktoken caches."""
    from tiktoken.load import read_file_cached
    from transformers import AutoTokenizer
    from nanoprobs.tokenizer import GPT2_FILES, GPT2_URL
    with tempfile.TemporaryDirectory() as tmp:
        for url, name in (('encoder.json', 'vocab.json'), ('vocab.bpe', 'merges.txt')):
            with open(os.path.join(tmp, name), 'wb') as f:
                f.write(read_file_cached(GPT2_URL + url, GPT2_FILES[url]))
        with open(os.path.join(tmp, 'config.json'), 'w') as f:
            f.write('{"model_type": "gpt2"}')
        tok = AutoTokenizer.from_pretrained(tmp, model_max_length=max_length)
    tok.save_pretrained(path)
    return tok


def export(model, tok, path, with_tokenizer=True):
    """Write model (our GPT) and, for GPT-2's vocabulary, its tokenizer to the folder path."""
    gpt2_vocab = tok is not None and tok.name == 'gpt2'
    hf = model.to_hf(eot=tok.eot if gpt2_vocab else None)  # the weight mapping lives in hf.py
    hf.save_pretrained(path)
    if with_tokenizer and gpt2_vocab:
        write_gpt2_tokenizer(path, model.config.block_size)
    elif with_tokenizer:
        print(f"note: no tokenizer files written: the model uses {tok.kind if tok else 'an unknown'} "
              "tokens, not GPT-2's BPE; encode its text with this project's tokenizer.py (tokenizer_for)")
    return hf


@contextlib.contextmanager
def staged_folder(path):
    """A temporary folder beside path to write into; when the block ends without error it replaces path
    (an earlier export), else it is removed and path stays as it was."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + '.tmp', dir=parent)
    try:
        yield tmp
        old = None
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=os.path.basename(path) + '.old', dir=parent)
            os.replace(path, os.path.join(old, 'x'))
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def max_logit_diff(model, hf, ids):
    """Largest |logit| difference between our model and hf (a transformers model) on the token ids."""
    x = torch.tensor([ids])
    with torch.no_grad():
        ours = model(x, all_logits=True)[0]
        theirs = hf(x).logits
    return (ours - theirs).abs().max().item()


def export_peft(ckpt, path, tok, with_tokenizer=True):
    """A LoRA checkpoint's adapters as PEFT's folder at path, with the name of its base; a nanoGPT
    checkpoint base is exported beside them (path/base). Returns the transformers model: base + adapters."""
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    base = lora.Run.of_checkpoint(ckpt).base
    kind, src = describe_init_from(base.location())
    if kind == 'ckpt':  # transformers cannot read a nanoGPT checkpoint: write the base as a GPT-2 folder
        src = os.path.join(path, 'base')
        print(f"the base {base.location()} is a nanoGPT checkpoint: writing it as a Hugging Face folder, {src}")
        export(base_model(base.location()), tok, src, with_tokenizer)
    lora.write_peft(path, ckpt, src)
    if with_tokenizer and tok is not None and tok.name == 'gpt2':
        write_gpt2_tokenizer(path, ckpt['model_args']['block_size'])
    return PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(src), path).eval()


def main():
    kind, where = describe_init_from(init_from, out_dir)
    ckpt = load_checkpoint(where) if kind == 'ckpt' else {}
    ckpt = ckpt if 'lora' in ckpt else {}  # a LoRA run's (a few MB) is needed below; a full one is not
    loaded = load_model(init_from, out_dir, device='cpu', dtype='float32')  # LoRA: adapters merged
    model = loaded.model
    peft_folder = 'lora' in ckpt and not merge
    path = export_dir or os.path.join(out_dir, 'adapter' if peft_folder else 'hf')
    what = ("its LoRA adapters (PEFT's format)" if peft_folder else
            "merged with its LoRA adapters" if 'lora' in ckpt else "")
    print(f"exporting {loaded.source} ({model.get_num_params() / 1e6:.2f}M parameters, "
          f"GELU {model.config.gelu}, vocab {model.config.vocab_size}){' ' + what if what else ''} to {path}")
    try:
        if peft_folder:  # in place: adapter_config.json names the base by its final path
            hf = export_peft(ckpt, path, loaded.tok, tokenizer)
        else:
            with staged_folder(path) as tmp:
                export(model, loaded.tok, tmp, tokenizer)
    except (OSError, RuntimeError) as e:  # also safetensors' and torch's own write errors (a full disk)
        if not (isinstance(e, OSError) or type(e).__module__.startswith('safetensors')
                or 'inline_container' in str(e) or 'No space left' in str(e)):
            raise
        kept = '' if peft_folder else f"; {path} is as it was"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"could not write the export to {path}: {first}{kept}; free some space, or give "
                        "--export_dir=<a writable folder>") from None
    print(f"wrote {', '.join(sorted(os.listdir(path)))}")
    if check:  # random token ids: any vocabulary, character-level included
        if not peft_folder:
            from transformers import GPT2LMHeadModel
            hf = GPT2LMHeadModel.from_pretrained(path).eval()
        if 'lora' in ckpt:  # against PEFT's forward with the adapters unmerged
            model = model_from_checkpoint(ckpt, None, where, merge=False).eval()
        n = min(64, model.config.block_size)
        ids = torch.randint(0, model.config.vocab_size, (n,),
                            generator=torch.Generator().manual_seed(0)).tolist()
        diff = max_logit_diff(model, hf, ids)
        print(f"check: transformers' logits match ours{' (adapters unmerged)' if 'lora' in ckpt else ''} "
              f"to {diff:.2e} (max abs difference over {n} tokens)")
        if diff > 1e-3:
            raise ValueError(f"the export's logits differ from the model's by {diff:.3g}")
    if peft_folder:
        print(f"load it with PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(<its base>), {path!r}); "
              "the base is named in adapter_config.json")
    else:
        print(f"load it with GPT2LMHeadModel.from_pretrained({path!r})")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
