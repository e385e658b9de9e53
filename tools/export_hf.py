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
"""

import os
import tempfile

import torch

from nanoprobs.load import load_model

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (out_dir/ckpt.pt), a checkpoint file/folder, 'gpt2*' or a Hugging Face folder
out_dir = 'out'  # with init_from='resume': the folder holding ckpt.pt
export_dir = ''  # where to write the Hugging Face folder; '' = <out_dir>/hf
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


def max_logit_diff(model, path, ids):
    """Largest |logit| difference between our model and the export reloaded by transformers."""
    from transformers import GPT2LMHeadModel
    hf = GPT2LMHeadModel.from_pretrained(path).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        ours = model(x, all_logits=True)[0]
        theirs = hf(x).logits
    return (ours - theirs).abs().max().item()


def main():
    loaded = load_model(init_from, out_dir, device='cpu', dtype='float32')
    model = loaded.model
    path = export_dir or os.path.join(out_dir, 'hf')
    print(f"exporting {loaded.source} ({model.get_num_params() / 1e6:.2f}M parameters, "
          f"GELU {model.config.gelu}, vocab {model.config.vocab_size}) to {path}")
    export(model, loaded.tok, path, tokenizer)
    print(f"wrote {', '.join(sorted(os.listdir(path)))}")
    if check:  # random token ids: any vocabulary, character-level included
        n = min(64, model.config.block_size)
        ids = torch.randint(0, model.config.vocab_size, (n,),
                            generator=torch.Generator().manual_seed(0)).tolist()
        diff = max_logit_diff(model, path, ids)
        print(f"check: transformers' logits match ours to {diff:.2e} (max abs difference over {n} tokens)")
        if diff > 1e-3:
            raise ValueError(f"the export's logits differ from the model's by {diff:.3g}")
    print(f"load it with GPT2LMHeadModel.from_pretrained({path!r})")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
