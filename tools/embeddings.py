"""
Token embeddings in 2-D: a PCA of the model's token embeddings (transformer.wte, which GPT-2 also uses
as its output layer) for a word list or a corpus's most frequent tokens, as a labelled scatter plot.
With a second model (e.g. after fine-tuning), its embeddings of the same words are drawn in the same
projection, with arrows showing how each word moved; the moves are also printed.

    python -m tools.embeddings --init_from=gpt2 --words="king,queen,man,woman,cat,dog,red,green,one,two"
    python -m tools.embeddings --init_from=gpt2 --corpus=data/children_stories/train.bin --num_tokens=80
    python -m tools.embeddings --init_from=gpt2 --compare_init_from=resume --compare_out_dir=out-children

Words: with GPT-2's BPE each word is embedded as it appears mid-sentence, with its leading space
(" king"; --space_prefix=False for "king"). A word of several tokens is the mean of its tokens'
embeddings (--multi_token=first: its first token); the token count is printed. Character-level
models embed characters, so a word is the mean of its characters; --corpus shows the characters.
The projection is fitted on the first model (init_from) only, so "after" points are where the second
model's embeddings fall on the first model's map. A second model of another width (same vocabulary) has
no common space with the first: each gets its own PCA, the second map is turned onto the first
(orthogonal Procrustes), and each word's nearest neighbour in both models is printed instead of moves.
Writes results/<name>_<model>.png (with a second model, results/<name>_<model>_vs_<model>.png).
"""

import os

import numpy as np
import torch

from configurator import UserError


def token_groups(tok, words, space_prefix=True):
    """Each word's token ids (a list per word). BPE words get a leading space when space_prefix."""
    bpe = tok.name == 'gpt2'
    groups = []
    for w in words:
        try:
            ids = tok.encode((' ' + w) if bpe and space_prefix else w)
        except ValueError as e:
            raise ValueError(f"word {w!r}: {e}") from None
        if not ids:
            raise ValueError(f"word {w!r} encodes to no tokens")
        groups.append(ids)
    return groups


def word_vectors(model, groups, multi_token='mean'):
    """(N, C) float64 embedding of each group of token ids: the mean of its rows of wte, or the first row."""
    if multi_token not in ('mean', 'first'):
        raise ValueError(f"multi_token must be 'mean' or 'first', got {multi_token!r}")
    wte = model.transformer.wte.weight.detach()  # (V, C); only the rows needed go to float64
    return torch.stack([wte[g].double().mean(0) if multi_token == 'mean' else wte[g[0]].double()
                        for g in groups]).cpu()


def pca_2d(x):
    """Principal components of the rows of x (N, C) by SVD of the centred matrix, in float64.
    Returns (mean (C,), components (C, 2), explained-variance ratio (2,));
    project with (y - mean) @ components.
    Each component's sign is fixed so that its largest loading is positive (a deterministic picture)."""
    x = x.double()
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    comps = vh[:2].T.clone()  # (C, 2)
    sign = comps.gather(0, comps.abs().argmax(0, keepdim=True)).sign()
    comps *= sign
    var = s ** 2
    return mean, comps, var[:2] / var.sum()


def align_2d(y, x):
    """y (N, 2) turned (rotated or reflected) onto x (N, 2) as closely as possible (orthogonal Procrustes,
    both centred) and scaled to x's spread: the second of two separate PCA maps made to face the first."""
    u, _, vt = torch.linalg.svd(y.T @ x)
    return ((x ** 2).sum() / (y ** 2).sum()).sqrt() * y @ (u @ vt)


def frequent_tokens(path, tok, n):
    """The n most frequent token ids of a text file (encoded with tok) or a .bin of uint16 token ids
    (prepare.py's train.bin), most frequent first, with their counts."""
    if path.endswith('.bin'):
        ids = np.memmap(path, dtype=np.uint16, mode='r')
    else:
        with open(path, 'r', encoding='utf-8') as f:
            ids = np.array(tok.encode(f.read()), dtype=np.int64)
    if len(ids) == 0:
        raise ValueError(f"{path} holds no tokens")
    counts = np.bincount(ids)
    if len(counts) > tok.vocab_size:
        raise ValueError(f"{path} has token id {len(counts) - 1}, outside the {tok.vocab_size}-token "
                         f"vocabulary of {tok.name}: was it prepared for another tokenizer?")
    order = np.argsort(-counts, kind='stable')[:n]
    order = order[counts[order] > 0]
    return order.tolist(), counts[order].tolist()


# -----------------------------------------------------------------------------
init_from: str = 'gpt2'  # 'resume' (from out_dir), a gpt2 variant, a Hugging Face folder or a ckpt.pt path
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
words: str = ("king,queen,prince,princess,man,woman,boy,girl,mother,father,cat,dog,wolf,fox,bird,castle,"
              "forest,house,gold,silver,red,green,blue,one,two,three,happy,sad,"
              "Monday,Friday")  # comma-separated
corpus: str = ''  # a text file or a .bin of token ids: its num_tokens most frequent tokens instead of words
num_tokens: int = 60  # how many frequent tokens with --corpus
multi_token: str = 'mean'  # a word of several tokens: 'mean' of their embeddings, or the 'first' token's
space_prefix: bool = True  # GPT-2 BPE: embed " king" (the mid-sentence form) rather than "king"
compare_init_from: str = ''  # a second model (kinds as init_from; 'resume' reads compare_out_dir): arrows
compare_out_dir: str = 'out'  # where compare_init_from='resume' finds ckpt.pt
arrow_scale: float = 1.0  # draw moves this many times longer (fine-tuning moves embeddings little); printed
results_dir: str = 'results'  # where the PNG goes
name: str = 'embeddings'  # file name prefix; the models' names follow it
device: str = 'cpu'  # only the embedding matrix is read: the CPU is enough
# -----------------------------------------------------------------------------


def main():
    from nanoprobs.load import load_model
    from nanoprobs.formatting import file_tag, model_label
    from nanoprobs.plots.internals import embedding_scatter

    a = load_model(init_from, out_dir, device, 'float32')
    if corpus:
        ids, counts = frequent_tokens(corpus, a.tok, num_tokens)
        groups, labels = [[i] for i in ids], [a.tok.token_text(i) for i in ids]
        print(f"the {len(ids)} most frequent tokens of {corpus}: "
              + ', '.join(f"{s!r} {c}" for s, c in zip(labels[:20], counts[:20]))
              + (' ...' if len(ids) > 20 else ''))
    else:
        labels = [w.strip() for w in words.split(',') if w.strip()]
        if len(labels) < 3:
            raise UserError(f"--words needs at least 3 comma-separated words, got {words!r}")
        groups = token_groups(a.tok, labels, space_prefix)
    xa = word_vectors(a.model, groups, multi_token)  # (N, C)
    mean, comps, ratio = pca_2d(xa)
    pa = (xa - mean) @ comps  # (N, 2)
    print(f"{a.source}: {len(groups)} points, PCA of their embeddings; PC1 explains {ratio[0]:.1%} of the "
          f"variance, PC2 {ratio[1]:.1%}")

    pb, b = None, None
    if compare_init_from:
        b = load_model(compare_init_from, compare_out_dir, device, 'float32')
        if b.tok.name != a.tok.name:
            raise UserError(f"the two models use different vocabularies ({a.tok.name} vs {b.tok.name}): "
                            "their token embeddings cannot be compared")
        xb = word_vectors(b.model, groups, multi_token)
        if xb.size(1) != xa.size(1):
            pb = _compare_widths(xa, xb, pa, labels, groups, a.source, b.source)
        else:
            pb = (xb - mean) @ comps
            _print_moves(xa, xb, labels, groups, a.source, b.source)
    else:
        print(f"  {'token/word':<16} {'tokens':>6} {'PC1':>8} {'PC2':>8}")
        for lbl, g, (x, y) in zip(labels, groups, pa.tolist()):
            print(f"  {lbl!r:<16} {len(g):>6} {x:>8.3f} {y:>8.3f}")
    multi = sum(len(g) > 1 for g in groups)
    if multi:
        how = 'mean of their token embeddings' if multi_token == 'mean' else 'first token only'
        print(f"{multi} word(s) span several tokens: {how}")

    separate = b is not None and xb.size(1) != xa.size(1)
    what = (f"the {len(groups)} most frequent tokens of {os.path.basename(corpus)}" if corpus
            else f"{len(groups)} words")
    title = f"token embeddings of {what}: PCA of {model_label(a.source)}"
    if separate:
        title = (f"token embeddings of {what}: a PCA of each model "
                 f"({xa.size(1)} and {xb.size(1)} dimensions)\n"
                 f"blue: {model_label(a.source)}, red: {model_label(b.source)} "
                 "turned onto it (orthogonal Procrustes)")
    elif b is not None:
        title += f"\nblue: {model_label(a.source)}, red: {model_label(b.source)}"
    path = embedding_scatter(pa.numpy(), labels,
                             os.path.join(results_dir, f"{name}_{file_tag(a.source, b and b.source)}.png"),
                             xy_after=None if pb is None else pb.numpy(),
                             names=(model_label(a.source), model_label(b.source) if b else ''),
                             arrow_scale=arrow_scale,
                             axis_labels=(f"PC1 ({ratio[0]:.1%} of variance)", f"PC2 ({ratio[1]:.1%})")
                             if not separate else
                             (f"PC1 of {model_label(a.source)}", f"PC2 of {model_label(a.source)}"),
                             moves=not separate,
                             title=title)
    print(f"saved {path}")


def _print_moves(xa, xb, labels, groups, source_a, source_b):
    """How far each point moved between two models of the same width, in the full embedding space."""
    moved = (xb - xa).norm(dim=1)  # (N,)
    rel = moved / xa.norm(dim=1)
    cos = torch.nn.functional.cosine_similarity(xa, xb, dim=1)
    na, nb = _nearest(xa), _nearest(xb)  # nearest other word by cosine similarity, in each model
    print(f"how each point moved from {source_a} to {source_b} (full {xa.size(1)}-d space; "
          "largest relative move first):")
    print(f"  {'token/word':<16} {'tokens':>6} {'|moved|':>9} {'relative':>9} {'cosine':>8}  "
          "nearest word before -> after")
    for i in sorted(range(len(groups)), key=lambda i: -float(rel[i])):
        # significant digits, not decimals: fine-tuning moves embeddings by tiny amounts
        print(f"  {labels[i]!r:<16} {len(groups[i]):>6} {moved[i]:>9.3g} {f'{100 * rel[i]:.3g}%':>9} "
              f"{cos[i]:>8.4f}  {labels[na[i]]!r} -> {labels[nb[i]]!r}")


def _compare_widths(xa, xb, pa, labels, groups, source_a, source_b):
    """Two models of different widths: their embedding spaces share no axes, so nothing can be measured
    between them point by point. Each gets its own PCA; the second map is turned onto the first
    (align_2d), and each word's nearest neighbours are compared. Returns the second map (N, 2)."""
    from nanoprobs.formatting import model_label
    mb, cb, rb = pca_2d(xb)
    pb = align_2d((xb - mb) @ cb, pa)
    na, nb = _nearest(xa), _nearest(xb)
    print(f"{source_a} has {xa.size(1)}-d embeddings and {source_b} {xb.size(1)}-d: no common space to "
          f"measure moves in, so each model gets its own PCA ({source_b}: PC1 {rb[0]:.1%}, "
          f"PC2 {rb[1]:.1%}), the second turned onto the first; the nearest word of each word, "
          "by cosine similarity in each model:")
    print(f"  {'token/word':<16} {'tokens':>6}  "
          f"nearest word in {model_label(source_a)} -> in {model_label(source_b)}")
    for i in range(len(groups)):
        print(f"  {labels[i]!r:<16} {len(groups[i]):>6}  {labels[na[i]]!r} -> {labels[nb[i]]!r}"
              + ('' if na[i] == nb[i] else '  (changed)'))
    same = sum(x == y for x, y in zip(na, nb))
    print(f"{same} of {len(groups)} words keep their nearest word")
    return pb


def _nearest(x):
    """Index of each row's most cosine-similar other row."""
    xn = torch.nn.functional.normalize(x, dim=1)
    sim = xn @ xn.T
    sim.fill_diagonal_(-2)
    return sim.argmax(1).tolist()


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    run_main(main)
