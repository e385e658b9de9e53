"""
The inside of a model, for the inspect tools: attention maps (tools/attention.py), the logit lens
(tools/logit_lens.py) and token embeddings (tools/embeddings.py).
"""

from nanoprobs.formatting import prob_text, token_label
from nanoprobs.plots.common import ProbabilityScale, fit_text, pyplot, save


def attention_grid(att, path, layer_names=None, title='', show=False):
    """Every head's attention pattern in one picture: a layer x head grid of small heatmaps.
    att: (n_layer, n_head, T, T) weights, query rows, key columns. The colour scale is a square root
    (PowerNorm 0.5) so the faint weights a head spreads beside its main target stay visible."""
    plt = pyplot()
    from matplotlib.colors import PowerNorm
    import numpy as np
    L, H = len(att), len(att[0])
    cell = 1.0 if H <= 12 else 12.0 / H
    width, height = max(cell * H + 1.4, 6.5), cell * L + 1.0
    fig, axes = plt.subplots(L, H, figsize=(width, height), squeeze=False)
    norm = PowerNorm(0.5, vmin=0.0, vmax=1.0)
    cmap = plt.get_cmap('viridis').copy()
    cmap.set_bad('white')  # above the diagonal: future tokens, never attended
    for l in range(L):
        for h in range(H):
            ax = axes[l][h]
            a = np.asarray(att[l][h], dtype=float)
            a = np.where(np.triu(np.ones_like(a, dtype=bool), 1), np.nan, a)
            im = ax.imshow(a, cmap=cmap, norm=norm, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if l == 0:
                ax.set_title(f"H{h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(layer_names[l] if layer_names else f"L{l}", fontsize=8, rotation=0, ha='right',
                              va='center')
    fig.suptitle(title or 'attention weights: layers down, heads across; in each map query down, key across',
                 fontsize=9)
    fig.subplots_adjust(left=0.7 / width, right=1 - 1.0 / width, top=1 - 0.75 / height, bottom=0.1 / height,
                        wspace=0.08, hspace=0.08)
    cax = fig.add_axes([1 - 0.8 / width, 0.15, 0.15 / width, 0.7])
    fig.colorbar(im, cax=cax).set_label('weight (square-root scale)', fontsize=8)
    return save(fig, path, show)


def attention_head(att, labels, path, title='', show=False):
    """One head's attention, large, with the tokens on both axes: row i is what token i (the query)
    looks at among tokens 0..i (the keys). Weights are written in the cells when there is room."""
    plt = pyplot()
    T = len(labels)
    size = min(max(4.5, 0.42 * T + 2.0), 16.0)
    import numpy as np
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    a = np.asarray(att, dtype=float)
    a = np.where(np.triu(np.ones_like(a, dtype=bool), 1), np.nan, a)  # future keys: masked, not weight 0
    cmap = plt.get_cmap('Blues').with_extremes(bad='0.82')
    im = ax.imshow(a, cmap=cmap, vmin=0.0, vmax=1.0, interpolation='nearest')
    if T > 1:  # hatch over the masked cells: a staircase right of the diagonal (row r masks keys r+1..)
        stairs = [(T - 0.5, -0.5), (T - 0.5, T - 1.5)] + [xy for r in range(T - 2, -1, -1)
                                                          for xy in ((r + 0.5, r + 0.5), (r + 0.5, r - 0.5))]
        ax.add_patch(plt.Polygon(stairs, closed=True, fill=False, hatch='///', edgecolor='0.6', linewidth=0))
    ticks = [token_label(s, 12) for s in labels]
    ax.set_xticks(range(T))
    ax.set_xticklabels(ticks, rotation=90, fontsize=8)
    ax.set_yticks(range(T))
    ax.set_yticklabels(ticks, fontsize=8)
    ax.set_xlabel('key (attended to)')
    ax.set_ylabel('query (attending)')
    if T <= 24:
        for i in range(T):
            for j in range(i + 1):
                w = float(att[i][j])
                if w >= 0.01:
                    ax.text(j, i, f"{w:.2f}"[1:] if w < 0.995 else '1', ha='center', va='center', fontsize=6.5,
                            color='white' if w > 0.6 else 'black')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label('attention weight')
    title += '\ngrey hatched: later tokens, masked (a query never sees them)'
    ax.set_title(fit_text(title, fig.get_figwidth() - 1.0, 10), fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)


def logit_lens_table(cells, probs, row_names, col_names, path, hits=None, title='', show=False):
    """The logit lens as a table: rows = layers (bottom = input embeddings, top = the model's output),
    columns = positions; each cell is the token that layer's residual stream predicts next and its
    probability, coloured by that probability. hits[r][c] True outlines cells whose token is the
    prompt's actual next token."""
    plt = pyplot()
    R, C = len(cells), len(cells[0])
    fig, ax = plt.subplots(figsize=(min(max(0.8 * C + 2.6, 7.0), 30.0), max(0.42 * R + 1.9, 3.4)))
    scale = ProbabilityScale()  # the HTML report's probability scale
    cmap, norm = scale.cmap_norm()
    ax.imshow(probs, cmap=cmap, norm=norm, aspect='auto', origin='lower')
    for r in range(R):
        for c in range(C):
            p = float(probs[r][c])
            ax.text(c, r, f"{token_label(cells[r][c], 9)}\n{prob_text(p)}", ha='center', va='center',
                    fontsize=6.5, color=scale.ink(p), linespacing=1.0)
            if hits is not None and hits[r][c]:  # the page's outline colour: seen on every colour of the scale
                ax.add_patch(plt.Rectangle((c - 0.45, r - 0.45), 0.9, 0.9, fill=False, edgecolor='#e6550d',
                                           linewidth=2.0))
    ax.set_xticks(range(C))
    ax.set_xticklabels([token_label(s, 10) for s in col_names], rotation=45, ha='right', fontsize=8)
    ax.set_yticks(range(R))
    ax.set_yticklabels(row_names, fontsize=8)
    ax.set_xlabel('input token (each column predicts the token after it)')
    ax.set_ylabel('residual stream after')
    scale.colorbar(fig, 'vertical', ax=ax, fraction=0.025, pad=0.02).set_label(
        "probability of the top token (the HTML report's scale)")
    ax.set_title(fit_text(title or 'logit lens: top next-token prediction of every layer '
                          '(orange box: the actual next token)', fig.get_figwidth() - 1.6, 10),
                 fontsize=10, loc='left')
    fig.tight_layout()
    return save(fig, path, show)


def embedding_scatter(xy, labels, path, xy_after=None, names=('before', 'after'), arrow_scale=1.0,
                      axis_labels=('PC1', 'PC2'), title='', show=False, moves=True):
    """Labelled scatter of 2-D points (N, 2). With xy_after, a second model's points in the same
    projection and an arrow from each word's first position to its second (scaled by arrow_scale
    when the moves are too small to see; the legend says so). moves=False: the two sets are separate
    maps (models of different widths), so each word's two points are only joined by a thin grey line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 7.5))
    x0, y0 = [float(p[0]) for p in xy], [float(p[1]) for p in xy]
    xs = list(x0)
    if xy_after is None:
        ax.scatter(x0, y0, s=14, color='#1f77b4', label=names[0], zorder=3)
    else:  # before: a ring above the after dot, so a word that barely moved shows both
        ax.scatter(x0, y0, s=46, facecolors='none', edgecolors='#1f77b4', linewidths=1.2, label=names[0],
                   zorder=4)
        scale = arrow_scale if moves else 1.0  # no move to magnify between two separate maps
        x1 = [a + scale * (float(p[0]) - a) for a, p in zip(x0, xy_after)]
        y1 = [b + scale * (float(p[1]) - b) for b, p in zip(y0, xy_after)]
        for a, b, c, d in zip(x0, y0, x1, y1):
            if moves:
                ax.annotate('', xy=(c, d), xytext=(a, b), zorder=2,
                            arrowprops=dict(arrowstyle='->', color='#d62728', lw=0.9, shrinkA=0, shrinkB=0))
            else:
                ax.plot([a, c], [b, d], color='0.7', lw=0.6, zorder=1)
        scaled = f" (moves ×{scale:g})" if scale != 1 else ''
        ax.scatter(x1, y1, s=12, color='#d62728', label=names[1] + scaled, zorder=3)
        xs += x1
    lo, hi = min(xs), max(xs)
    for a, b, s in zip(x0, y0, labels):  # labels of the right-most points go to their left: inside the frame
        left = hi > lo and a > lo + 0.8 * (hi - lo)
        ax.annotate(token_label(s, 16), (a, b), xytext=(-4 if left else 4, 3), textcoords='offset points',
                    fontsize=8, ha='right' if left else 'left', zorder=5)
    ax.margins(0.06)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    ax.set_title(title or 'token embeddings, first two principal components', fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)
