"""
Logit lens: what would the model predict if it stopped after layer k? Each layer's residual stream
is read the way the model reads its last one, through the final layer norm (ln_f) and the
unembedding (lm_head), giving a next-token distribution per layer and position. The top token and
its probability are drawn as a layer x position table coloured by probability, and printed.

    python -m tools.logit_lens --init_from=gpt2 --start="The Eiffel Tower is in the city of"
    python -m tools.logit_lens --init_from=resume --out_dir=out-children --start="Once upon a time, there"

Writes results/<name>_<model>.png. Row 'embeddings' is the input (token + position embeddings); row
'block k' is the residual stream after block k; the last row is the model's own prediction.
Probabilities are under the model distribution (softmax of the logits, temperature 1). An orange box
marks a cell whose top token is the prompt's actual next token.
"""

import os

import torch

from nanoprobs.lens import logit_lens, row_names  # the computation lives in the library


# -----------------------------------------------------------------------------
init_from: str = 'gpt2'  # 'resume' (from out_dir), a gpt2 variant, a Hugging Face folder or a ckpt.pt path
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
start: str = "The Eiffel Tower is in the city of"  # the prompt, or "FILE:prompt.txt"
results_dir: str = 'results'  # where the PNG goes
name: str = 'logit_lens'  # file name prefix; the model's name follows it
device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'float32'  # 'auto' = bfloat16/float16 on CUDA
# -----------------------------------------------------------------------------


def main():
    from nanoprobs.load import encode_prompt, load_model
    from nanoprobs.formatting import file_tag, model_label, prob_text, token_label
    from nanoprobs.plots.internals import logit_lens_table

    loaded = load_model(init_from, out_dir, device, dtype)
    bs = loaded.model.config.block_size
    ids = encode_prompt(loaded.tok, start, bs)
    text = loaded.tok.decode(ids)
    with loaded.ctx:
        lens = logit_lens(loaded.model, torch.tensor([ids], device=loaded.device))
    labels = [loaded.tok.token_text(i) for i in ids]
    rows = row_names(loaded.model.config.n_layer)
    cells = [[loaded.tok.token_text(i) for i in row] for row in lens.top_ids.tolist()]
    hits = [[c < len(ids) - 1 and row[c] == ids[c + 1] for c in range(len(ids))]
            for row in lens.top_ids.tolist()]

    print(f"{loaded.source}: logit lens of {text!r}")
    print("each cell: the top next-token prediction after that layer, and its probability "
          "(model distribution); * = the prompt's actual next token")
    w = 15
    print(f"{'input token':>12} " + ''.join(f"{token_label(s, w - 1):>{w}}" for s in labels))
    for name_, crow, prow, hrow in zip(rows, cells, lens.top_probs.tolist(), hits):
        cells_text = (token_label(c, w - 8) + (' *' if h else '') + ' ' + prob_text(p)
                      for c, p, h in zip(crow, prow, hrow))
        print(f"{name_:>12} " + ''.join(f"{t:>{w}}" for t in cells_text))
    if len(ids) > 1:
        final = lens.next_probs[-1]
        print("actual next tokens, their probability after the last layer: " +
              ', '.join(f"{labels[c + 1]!r} {final[c]:.3g}" for c in range(len(ids) - 1)))

    path = logit_lens_table(cells, lens.top_probs.numpy(), rows, labels,
                            os.path.join(results_dir, f"{name}_{file_tag(loaded.source)}.png"), hits=hits,
                            title=f"logit lens of {model_label(loaded.source)}: top next-token "
                            "prediction per layer (orange box = the actual next token)")
    print(f"saved {path}")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
