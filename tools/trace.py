"""
Trace one forward pass through the network, step by step in the order model.py runs them, as Markdown to
paste into a report: each tensor's shape, a few of its values, its mean and norm, the line of model.py
that makes it, and one head's attention weights per block.

    python -m tools.trace --init_from=gpt2 --start="The cat sat on the"
    python -m tools.trace --init_from=resume --out_dir=out-stories-tiny --start="Once upon a time" --head=1 --blocks=0

Writes results/trace_<model>.md and prints it. The tensors are the model's own: forward hooks on its
modules (nn.Module.register_forward_hook / register_forward_pre_hook) and its capture mode
(GPT.forward(capture=Capture(detail=True)): q, k, v, the masked scores and the attention weights), so
nothing of the model's math is repeated here. The source lines are found in model.py when the tool runs.
Numbers: 'values' are the first few entries of the last position's vector (for the attention steps, of
the first query's row, where the causal mask shows); mean and norm (L2, over all entries) skip the -inf
of the mask. The model runs in float32 with dropout off (eval mode).
"""

import os

import torch

from configurator import UserError

# each step: (what it is, a piece of model.py's code that makes it: the line cited beside the step)
CODE = {
    'embed': "x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))",
    'ln_1': "x = x + self.attn(self.ln_1(x), cache, layer, capture)",
    'c_attn': "q, k, v = self.c_attn(x).split(self.n_embd, dim=2)",
    'q': "q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)",
    'k': "k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)",
    'v': "v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)",
    'scores': "att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))",
    'mask': "scores = att.masked_fill(~mask, float('-inf'))",
    'softmax': "att = scores.softmax(dim=-1)",
    'heads': "y = y.transpose(1, 2).contiguous().view(B, T, C)",
    'c_proj': "return self.resid_dropout(self.c_proj(y))",
    'ln_2': "x = x + self.mlp(self.ln_2(x))",
    'mlp': "return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))",
    'ln_f': "return self.transformer.ln_f(x)",
    'lm_head': "logits = self.unembed(x if all_logits else x[:, [-1], :])",
}


def source_lines(path=None):
    """{step: (line number, code)} of CODE in model.py; a step whose code is not found exactly once there
    is an error (model.py changed: update CODE)."""
    import model
    path = path or model.__file__
    lines = open(path, encoding='utf-8').read().splitlines()
    out = {}
    for step, code in CODE.items():
        hits = [i + 1 for i, line in enumerate(lines) if line.split('  #')[0].strip() == code]
        if len(hits) != 1:
            raise RuntimeError(f"tools/trace.py: the code of step {step!r} is on {len(hits)} lines of model.py, "
                               f"not 1: {code!r}")
        out[step] = (hits[0], code)
    return out


def record(model, idx):
    """One forward pass of idx (1, T) with every step's tensor recorded: (a list of (step, name, tensor) in
    the order the model makes them, the Capture, the logits (1, T, V))."""
    from model import Capture
    steps, hooks = [], []

    def out(step, name):
        return lambda mod, inp, o: steps.append((step, name, o.detach()))

    def into(step, name):
        return lambda mod, inp: steps.append((step, name, inp[0].detach()))
    tr = model.transformer
    hooks += [tr.wte.register_forward_hook(out('embed', 'wte(idx): token embeddings')),
              tr.wpe.register_forward_hook(out('embed', 'wpe(pos): position embeddings')),
              tr.drop.register_forward_pre_hook(into('embed', 'x = token + position embeddings'))]
    for i, b in enumerate(tr.h):
        a, m = b.attn, b.mlp
        hooks += [b.ln_1.register_forward_hook(out('ln_1', f'block {i}: ln_1(x)')),
                  a.c_attn.register_forward_hook(out('c_attn', f'block {i}: c_attn(x) = [q | k | v]')),
                  a.c_proj.register_forward_pre_hook(into('heads', f'block {i}: heads side by side, y')),
                  a.c_proj.register_forward_hook(out('c_proj', f'block {i}: c_proj(y), the attention output')),
                  b.ln_2.register_forward_pre_hook(into('ln_1', f'block {i}: x + attention (residual add)')),
                  b.ln_2.register_forward_hook(out('ln_2', f'block {i}: ln_2(x)')),
                  m.c_fc.register_forward_hook(out('mlp', f'block {i}: c_fc(x), 4 x wider')),
                  m.gelu.register_forward_hook(out('mlp', f'block {i}: gelu(...)')),
                  m.c_proj.register_forward_hook(out('mlp', f'block {i}: c_proj(...), the MLP output')),
                  b.register_forward_hook(out('ln_2', f'block {i}: x + MLP (residual add), the block output'))]
    hooks += [tr.ln_f.register_forward_hook(out('ln_f', 'ln_f(x): the final layer norm'))]
    cap = Capture(detail=True)
    try:
        with torch.no_grad():
            logits = model(idx, all_logits=True, capture=cap)[0]
    finally:
        for h in hooks:
            h.remove()
    # the last step is forward()'s own output: outside training unembed() multiplies by a kept transposed
    # copy of lm_head's weight (model.py says why), so no lm_head hook would see it
    steps.append(('lm_head', 'unembed(x): logits over the vocabulary', logits))
    return steps, cap, logits


def stats(x, first_row=False, n=4):
    """(shape, the first n values of the last position (or of the first row), mean, L2 norm), as text."""
    x = x.float()
    vec = x.reshape(-1, x.shape[-1])[0] if first_row else x[..., -1, :].reshape(-1, x.shape[-1])[0]
    vals = vec[:n].tolist()
    fin = x[torch.isfinite(x)]
    return ('(' + ', '.join(map(str, x.shape)) + ')', ', '.join('-inf' if v == float('-inf') else f"{v:.3f}"
                                                             for v in vals),
            f"{fin.mean():.4f}", f"{fin.norm():.3f}")


def cell(text):
    return text.replace('|', '\\|').replace('\n', '\\n')


def trace_markdown(model, tok, ids, head=0, blocks=None, top=5):
    """The Markdown trace of one forward pass of ids (a token-id list). blocks: the blocks shown in full
    (None: all); head: the head whose attention weights each shown block prints."""
    lines_of = source_lines()
    idx = torch.tensor([ids], device=model.lm_head.weight.device)
    steps, cap, logits = record(model, idx)
    c = model.config
    blocks = set(range(c.n_layer)) if blocks is None else set(blocks)
    labels = [tok.token_text(i) for i in ids]
    out = [f"# One forward pass of nanoGPT's model.py on {len(ids)} tokens", '',
           'Tokens: ' + ' '.join(f"`{cell(t)}`" for t in labels) + f" (ids {ids})", '',
           f"Model: {c.n_layer} blocks, {c.n_head} heads, n_embd {c.n_embd} (head size {c.n_embd // c.n_head}), "
           f"vocabulary {c.vocab_size}. B = 1 row, T = {len(ids)} positions. 'values': the first entries of the "
           "last position's vector (attention steps: of the first query's row, where the causal mask shows); "
           "mean and norm (L2) over all entries, the mask's -inf left out.", '']
    table = ['| step | model.py | shape | values | mean | norm |', '|---|---|---|---|---:|---:|']

    def row(name, step, x, first_row=False):
        line, code = lines_of[step]
        shape, vals, mean, norm = stats(x, first_row)
        table.append(f"| {cell(name)} | {line}: `{cell(code)}` | {shape} | {vals} | {mean} | {norm} |")

    layer = -1
    for step, name, x in steps:
        if name.startswith('block '):
            layer = int(name.split()[1].rstrip(':'))
            if layer not in blocks:
                continue
        row(name, step, x)
        if step == 'c_attn':  # inside the attention: the capture's q, k, v, scores and weights
            q, k, v = cap.qkv[layer]
            for nm, t in (('k', k), ('q', q), ('v', v)):  # model.py's order
                row(f"block {layer}: {nm} in heads, (B, nh, T, hs)", nm, t)
            sc = cap.scores[layer][:, :1]  # (1, 1, T, T) head 0; the last query sees every key: unmasked
            row(f"block {layer}: scores q k^T / sqrt(hs) (head 0, last query)", 'scores', sc)
            row(f"block {layer}: causal mask, -inf above the diagonal (head 0, first query)", 'mask', sc, True)
            row(f"block {layer}: softmax, the attention weights (head 0, first query)", 'softmax',
                cap.attn[layer][:, :1], True)
    out += table
    for layer in sorted(blocks):
        att = cap.attn[layer][0, head].float()  # (T, T)
        ln, code = lines_of['softmax']
        out += ['', f"## Block {layer}, head {head}: attention weights (model.py {ln}: `{code}`)", '',
                'Row = query (the position attending), column = key (the position attended to); each row sums '
                'to 1, and a query never sees a later key (the causal mask makes those 0).', '']
        show = list(range(max(0, len(ids) - 12), len(ids)))  # at most the last 12 positions
        out.append('| query \\ key | ' + ' | '.join(f"`{cell(labels[j])}`" for j in show) + ' |')
        out.append('|---|' + '---:|' * len(show))
        for i in show:
            out.append(f"| `{cell(labels[i])}` | " + ' | '.join(f"{att[i, j]:.2f}" for j in show) + ' |')
    lp = logits[0, -1].double().log_softmax(-1)  # the model distribution of the next token
    vals, top_ids = lp.topk(top)
    ln, code = lines_of['lm_head']
    out += ['', f"## The next token (model.py {ln}: `{code}`, then softmax)", '',
            f"After `{cell(tok.display(ids[-8:]))}`, the model's {top} most likely next tokens (model distribution: "
            "softmax of the last position's logits, temperature 1):", '', '| token | probability |', '|---|---:|']
    out += [f"| `{cell(tok.token_text(int(i)))}` | {p.exp():.4f} |" for p, i in zip(vals, top_ids.tolist())]
    return '\n'.join(out) + '\n'


# -----------------------------------------------------------------------------
init_from: str = 'gpt2'  # 'resume' (from out_dir), a gpt2 variant, a Hugging Face folder or a ckpt.pt path
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
start: str = "The cat sat on the"  # the prompt, or "FILE:prompt.txt"
head: int = 0  # the head whose attention weights each block prints
blocks: str = 'all'  # the blocks traced in full: 'all', or e.g. '0,11' (negative counts from the last)
results_dir: str = 'results'  # where trace_<model>.md goes
device: str = 'cpu'  # 'auto', 'cpu', 'cuda', 'mps'
# -----------------------------------------------------------------------------


def main():
    from nanoprobs.atomic import write_text
    from nanoprobs.formatting import file_tag
    from nanoprobs.load import encode_prompt, load_model
    loaded = load_model(init_from, out_dir, device, 'float32')
    c = loaded.model.config
    ids = encode_prompt(loaded.tok, start, c.block_size)
    chosen = None
    if blocks != 'all':
        try:
            chosen = [int(b) % c.n_layer if -c.n_layer <= int(b) < c.n_layer else None for b in blocks.split(',')]
        except ValueError:
            chosen = [None]
        if None in chosen:
            raise UserError(f"--blocks={blocks!r}: give 'all' or block numbers in [-{c.n_layer}, {c.n_layer - 1}], "
                            "comma-separated")
    if not 0 <= head < c.n_head:
        raise UserError(f"--head={head} is outside the model's {c.n_head} heads")
    text = trace_markdown(loaded.model, loaded.tok, ids, head, chosen)
    print(text)
    os.makedirs(results_dir, exist_ok=True)
    path = write_text(os.path.join(results_dir, f"trace_{file_tag(loaded.source)}.md"), text)
    print(f"saved {path}")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
