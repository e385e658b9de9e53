"""
Attention maps of a prompt: every layer's and head's attention weights in one grid, and one head
close up with the tokens on its axes. Also printed as text: what each head mostly attends to, and the
close-up head's strongest links.

    python -m tools.attention --init_from=gpt2 --start="When Mary and John went to the store, John gave a drink to"
    python -m tools.attention --init_from=resume --out_dir=out-children --layer=5 --head=1

Writes results/<name>_<model>_grid.png and results/<name>_<model>_L<layer>H<head>.png. The weights come
from the model's own forward pass (GPT.forward(capture=Capture()) runs the explicit attention path, whose
outputs equal the fused kernel's), not from a re-implementation.
"""

import os

import torch

from configurator import UserError
from nanoprobs.attention import attention_maps  # noqa: F401  (the computation lives in the library)


def head_roles(att):
    """What each head mostly does over the queries that have at least 2 tokens before them: mean
    weight on the first token, on the previous token, on itself, and on everything else.
    Returns (n_layer, n_head, 4) with columns first, previous, self, other."""
    L, H, T, _ = att.shape
    if T < 3:
        return torch.full((L, H, 4), float('nan'))
    q = torch.arange(2, T)
    first, prev, self_ = att[..., q, 0], att[..., q, q - 1], att[..., q, q]  # (L, H, T-2)
    other = 1 - first - prev - self_
    return torch.stack([first, prev, self_, other], -1).mean(2)


ROLES = ('first', 'prev', 'self', 'other')

# -----------------------------------------------------------------------------
init_from: str = 'gpt2'  # 'resume' (from out_dir), a gpt2 variant, a Hugging Face folder or a ckpt.pt path
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
start: str = "When Mary and John went to the store, John gave a drink to"  # the prompt, or "FILE:prompt.txt"
layer: int = -1  # the close-up's layer (negative counts from the last)
head: int = 0  # the close-up's head
results_dir: str = 'results'  # where the PNGs go
name: str = 'attention'  # file name prefix; the model's name follows it
device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'float32'  # float32 weights read best; 'auto' = bfloat16/float16 on CUDA
# -----------------------------------------------------------------------------


def main():
    from nanoprobs.load import encode_prompt, load_model
    from nanoprobs.formatting import file_tag, model_label
    from nanoprobs.plots.internals import attention_grid, attention_head

    loaded = load_model(init_from, out_dir, device, dtype)
    bs = loaded.model.config.block_size
    ids = encode_prompt(loaded.tok, start, bs)
    text = loaded.tok.decode(ids)
    n_layer, n_head = loaded.model.config.n_layer, loaded.model.config.n_head
    lay = layer + n_layer if layer < 0 else layer
    if not 0 <= lay < n_layer or not 0 <= head < n_head:
        raise UserError(f"--layer={layer} --head={head} is outside the model's {n_layer} layers x "
                        f"{n_head} heads")
    with loaded.ctx:
        att = attention_maps(loaded.model, torch.tensor([ids], device=loaded.device))  # (L, H, T, T)
    labels = [loaded.tok.token_text(i) for i in ids]
    print(f"{loaded.source}: {len(ids)} tokens: {' | '.join(labels)}")

    # text: each head's main habit, then the close-up head's strongest links
    roles = head_roles(att)
    if len(ids) >= 3:
        print("mean attention of each head on: first token / previous token / itself / the rest "
              "(queries from the 3rd token on); the largest is shown")
        for l in range(n_layer):
            cells = []
            for h in range(n_head):
                r = int(roles[l, h].argmax())
                cells.append(f"H{h} {ROLES[r]} {roles[l, h, r]:.2f}")
            print(f"  L{l:<2d} " + ' | '.join(cells))
    print(f"layer {lay} head {head}: the 3 tokens each token attends to most")
    a = att[lay, head]
    for i in range(len(ids)):
        w, j = a[i, :i + 1].topk(min(3, i + 1))
        links = ', '.join(f"{k}:{labels[k]!r} {v:.2f}" for v, k in zip(w.tolist(), j.tolist()))
        print(f"  {i:3d} {labels[i]!r:>16} -> {links}")

    tag = file_tag(loaded.source)  # in the file names: runs on other models do not overwrite these
    short = text if len(text) <= 60 else text[:57] + '...'
    grid = attention_grid(att.numpy(), os.path.join(results_dir, f"{name}_{tag}_grid.png"),
                          title=f"attention of {model_label(loaded.source)} on {short!r}\n"
                                f"rows: layers, columns: heads; in each map query down, key across")
    close = attention_head(a.numpy(), labels,
                           os.path.join(results_dir, f"{name}_{tag}_L{lay}H{head}.png"),
                           title=f"layer {lay}, head {head}: row = query token, column = key token")
    print(f"saved {grid}")
    print(f"saved {close}")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
