"""
Training runs and comparisons of them: train.py's loss curve, several runs' curves (bench/train_dtype.py),
tools/compare_tokenizers.py's token boundaries and loss per byte, tools/sweep.py's val loss against each
setting and every run's curve.
"""

from nanoprobs.plots.common import pyplot, save


def plot_loss(steps, evals, path, title='', show=False):
    """Training progress: train and val loss vs iteration.

    steps: [(iter, loss)] per logged iteration (the loss of that iteration's batches: noisy, drawn thin,
    with a moving average on top); evals: [(iter, train, val)] from each eval (eval_iters batches per
    split). The best val loss is marked: that is the model ckpt.pt keeps when always_save_checkpoint=False."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if steps:
        it, loss = zip(*steps)
        ax.plot(it, loss, color='tab:blue', alpha=0.25, lw=0.8, label='train, each logged iteration')
        if len(loss) >= 20:
            h = max(2, len(loss) // 40)  # centred moving average over ~5% of the run: no lag
            import numpy as np
            y = np.asarray(loss, dtype=float)
            i = np.arange(len(y))
            r = np.minimum(np.minimum(i, len(y) - 1 - i), h)  # narrower at the ends, still centred
            c = np.concatenate([[0.0], np.cumsum(y)])  # prefix sums: O(n), drawn at every eval of a long run
            avg = (c[i + r + 1] - c[i - r]) / (2 * r + 1)
            ax.plot(it, avg, color='tab:blue', alpha=0.6, lw=1.0,
                    label=f'train, moving average of {2 * h + 1}')
    if evals:
        it, tr, va = zip(*evals)
        ax.plot(it, tr, 'o--', color='navy', ms=4, lw=1.5, markeredgecolor='white', mew=0.5,
                label='train, eval estimate')
        ax.plot(it, va, 'o-', color='tab:orange', ms=4, lw=1.8, markeredgecolor='white', mew=0.5,
                label='val, eval estimate')
        best = min(range(len(va)), key=va.__getitem__)
        ax.plot([it[best]], [va[best]], '*', color='tab:red', ms=13, zorder=5,
                label=f'best val {va[best]:.4f} (iter {it[best]})')
        last = f"iter {it[-1]}: train {tr[-1]:.4f}, val {va[-1]:.4f}"
        title = f"{title} · {last}" if title else last
    ax.set_xlabel('iteration')
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel('loss (cross-entropy, nats per token)')
    ax.grid(alpha=0.3)
    if steps or evals:
        ax.legend(fontsize=8, loc='upper right')
    ax.set_title(title or 'training loss', fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)


def line_chart(curves, path, xlabel, ylabel, title, show=False, x_scale=1.0, styles=('o-',)):
    """Several runs' curves on one chart, each labelled with its last value; curves: {name: [(x, y), ...]},
    drawn in order, x divided by x_scale, styles cycled (matplotlib format strings)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for k, (name, pts) in enumerate(curves.items()):
        if pts:
            x, y = zip(*pts)
            ax.plot([v / x_scale for v in x], y, styles[k % len(styles)], ms=3, lw=1.6,
                    label=f"{name} (last {y[-1]:.3f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='upper right')
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)


def loss_curves(curves, path, title='', show=False):
    """Train loss against iteration for several runs (bench/train_dtype.py: float32 and bfloat16 from one
    seed, float32 from another as the noise between runs); curves: {name: [(iter, loss), ...]}."""
    return line_chart(curves, path, 'iteration', 'train loss (nats per token)', title or 'train loss', show,
                      styles=('-', '--', ':', '-.'))


# ---- compare_tokenizers: how a sentence is cut, loss against bytes of text seen ----

def token_boxes(rows, path, title='', show=False):
    """One row per tokenizer: the sentence's tokens as coloured boxes, each as wide as its characters.

    rows: [(name, [token text, ...])]; the texts of a row join to the sentence (a byte-level token that
    holds part of a character shows as '�'). Boxes alternate colours so neighbours are told apart."""
    plt = pyplot()
    from matplotlib.patches import Rectangle
    width = max(sum(len(t) for t in toks) for _, toks in rows)
    cw = 0.11  # inches per character: the figure grows with the sentence, text never overflows a box
    fig, ax = plt.subplots(figsize=(max(6.0, 2.6 + width * cw), 0.8 + 0.55 * len(rows)))
    colours = ('#cfe3f7', '#fde0c5', '#d5efd0', '#f3d2e6')
    for r, (name, toks) in enumerate(rows):
        y, x = len(rows) - 1 - r, 0
        for k, t in enumerate(toks):
            shown = t.replace(' ', '␣').replace('\n', '↵').replace('\t', '→')
            ax.add_patch(Rectangle((x, y + 0.12), len(t), 0.76, facecolor=colours[k % len(colours)],
                                   edgecolor='#555555', lw=0.6))
            ax.text(x + len(t) / 2, y + 0.5, shown, ha='center', va='center', family='monospace', fontsize=8)
            x += len(t)
        ax.text(width + 0.8, y + 0.5, f"{len(toks)} tokens", va='center', fontsize=8)
    ax.set_xlim(0, width + 8)
    ax.set_ylim(0, len(rows))
    ax.set_yticks([len(rows) - 0.5 - r for r in range(len(rows))])
    ax.set_yticklabels([name for name, _ in rows], fontsize=9)
    ax.set_xticks([])
    for s in ('top', 'right', 'bottom'):
        ax.spines[s].set_visible(False)
    ax.set_title(title or 'token boundaries (␣ = space)', fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)


def tokenizer_curves(curves, path, title='', show=False):
    """Val loss of each run in bits per byte against the bytes of text trained on (one chart, all runs).

    curves: {name: [(bytes seen, bits per byte), ...]}."""
    return line_chart(curves, path, 'text trained on (MB of UTF-8 bytes)', 'val loss (bits per byte)',
                      title or 'val loss per byte of text, by tokenizer', show, x_scale=1e6)


# ---- sweep: val loss against each setting, every run's curve ----

def _log_axis(key, xs):
    """Learning rates (and any positive setting spanning 20x or more) read best on a log axis."""
    nums = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if len(nums) != len(xs) or not nums or min(nums) <= 0:
        return False
    return 'lr' in key or 'learning_rate' in key or max(nums) / min(nums) >= 20


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sweep_values(rows, keys, path, listed=None, title='', show=False):
    """Best val loss against each swept setting: one panel per key, one line per combination of the other
    settings when those come from lists of values (a grid), points otherwise (values drawn from ranges).
    rows: dicts with 'settings' {key: value} and 'best_val_loss'; listed: the keys swept over a list of
    values (default all): their values are the ticks."""
    listed = set(keys if listed is None else listed)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.0, 4.6 * len(keys)), 4.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        xs = [r['settings'][key] for r in rows]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        cats = [] if numeric else sorted({fmt for fmt in map(repr, xs)})
        pos = (lambda x: x) if numeric else (lambda x: cats.index(repr(x)))
        others = [k for k in keys if k != key]
        groups = {}
        for r in rows:
            groups.setdefault(tuple(r['settings'][k] for k in others), []).append(r)
        lines = len(groups) <= 8 and set(others) <= listed and any(len(g) > 1 for g in groups.values())
        if lines:
            for g, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
                rs = sorted(rs, key=lambda r: pos(r['settings'][key]))
                label = ', '.join(f"{k}={_short(v)}" for k, v in zip(others, g)) or 'val loss'
                ax.plot([pos(r['settings'][key]) for r in rs], [r['best_val_loss'] for r in rs], 'o-', ms=5,
                        lw=1.5, label=label)
            if others:
                ax.legend(fontsize=8, loc='best')
        else:
            ax.plot([pos(x) for x in xs], [r['best_val_loss'] for r in rows], 'o', ms=6, alpha=0.8)
        if numeric and _log_axis(key, xs):
            ax.set_xscale('log')
        if numeric and key in listed and len(set(xs)) <= 8:  # tick the swept values themselves
            ax.set_xticks(sorted(set(xs)), [f"{x:.4g}" for x in sorted(set(xs))])
            ax.minorticks_off()
        if not numeric:
            ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(key + (' (log scale)' if numeric and _log_axis(key, xs) else ''))
        ax.set_ylabel('best val loss (nats per token)')
        ax.grid(alpha=0.3, which='both')
    fig.suptitle(title or 'sweep: best val loss', fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)


def sweep_curves(rows, path, title='', show=False, max_labels=12):
    """Every run's val loss against iteration on one chart, best run first in the legend (the best
    max_labels named; the rest drawn thin and grey). rows: dicts with 'name', 'curve' [(iter, val)],
    'best_val_loss', sorted best first."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5), layout='constrained')  # room for the legend below the frame
    for i, r in enumerate(rows):
        it = [c[0] for c in r['curve']]
        va = [c[1] for c in r['curve']]
        if i < max_labels:
            ax.plot(it, va, 'o-', ms=3, lw=1.4, label=f"{r['best_val_loss']:.3f}  {r['name']}", zorder=3)
        else:
            ax.plot(it, va, '-', color='0.7', lw=0.8, zorder=1)
    # the first eval (an untrained model) dwarfs the rest: start the axis at the later evals' top
    later = [c[1] for r in rows for c in r['curve'][1:]]
    if later:
        lo, hi = min(later), max(later)
        top = hi + 0.1 * (hi - lo + 1e-9)
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), top)
        above = [r['curve'][0] for r in rows if r['curve'] and r['curve'][0][1] > top]
        if above:  # say so, rather than let the lines leave the frame unexplained
            vs = [c[1] for c in above]
            # falling curves leave it empty
            ax.text(0.01, 0.02, f"above the top: the first evals (iteration {above[0][0]}, val loss "
                    f"{min(vs):.2f}{'' if max(vs) - min(vs) < 0.005 else f'-{max(vs):.2f}'})",
                    transform=ax.transAxes, va='bottom', fontsize=8, color='0.3')
    ax.set_xlabel('iteration')
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel('val loss (nats per token)')
    ax.grid(alpha=0.3)
    named = min(len(rows), max_labels)
    fig.legend(fontsize=7, loc='outside lower center', ncols=1 if named <= 4 else 2,
               title='best val loss, run', title_fontsize=8)
    more = f" (the best {max_labels} named)" if len(rows) > max_labels else ''
    ax.set_title((title or 'sweep: val loss of every run') + more, fontsize=10)
    return save(fig, path, show)
