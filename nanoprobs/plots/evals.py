"""
eval.py's charts: each pair's response probability before/after, and the tokens that gained or lost.
"""

import math

from nanoprobs.formatting import format_ratio, short_models, token_label
from nanoprobs.plots.common import fit_text, pyplot, save

LABELLED_PAIRS = 150  # up to this many pairs each has a labelled column; more are dots in a fixed-size frame
RISE, FALL = '#2ca02c', '#d62728'  # a probability that rose / fell between two models


def eval_pairs(labels, series, path, title='', show=False):
    """Each pair's response probability as a dot on a log scale, one column per prompt/response pair.
    series: {legend: [log-prob in nats, one per pair]}, one model or two (before, after).

    Dots, not bars: on a log scale a bar's length would only measure the distance to wherever the axis
    starts. Positions are log10 values with 10^k tick labels rather than matplotlib's log axis, so a
    probability below float64's range (1e-308, common for long responses) is still drawn. With two series
    a line joins each pair's before (ring) and after (dot), green when it rose, red when it fell: its length
    is the change in log-probability; the ratio after/before is written above the frame. Past
    LABELLED_PAIRS pairs the frame keeps its size and the x axis is the pair's number (labels may be [])."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    names, n = list(series), len(next(iter(series.values())))
    l10 = {k: [lp / math.log(10) for lp in v] for k, v in series.items()}
    vmin, vmax = min(min(v) for v in l10.values()), max(max(v) for v in l10.values())
    span = max(vmax - vmin, 1.0)
    dense = n > LABELLED_PAIRS  # too many for a column each: a fixed-size frame, x = the pair's number
    fig, ax = plt.subplots(figsize=(14.0 if dense else max(8.0, 0.42 * n + 3), 6.0))
    xs = range(1, n + 1) if dense else list(range(n))
    if dense:
        if len(names) == 2:
            from matplotlib.collections import LineCollection
            before, after = l10[names[0]], l10[names[1]]
            ax.add_collection(LineCollection([((x, b), (x, a)) for x, b, a in zip(xs, before, after)],
                                             colors=[RISE if a > b else FALL if a < b else '0.5'
                                                     for b, a in zip(before, after)], linewidths=0.8))
        dot = max(1.0, min(12.0, 4000 / n))
        for k, name in enumerate(names):
            ax.scatter(xs, l10[name], s=dot, color='0.45' if k < len(names) - 1 else '#1f77b4', label=name,
                       zorder=3 + k, linewidths=0)
        ax.set_xlim(0, n + 1)
        ax.set_xlabel(f"pair (1 to {n:,}; labels and ratios are shown up to {LABELLED_PAIRS} pairs)")
    elif len(names) == 2:
        before, after = l10[names[0]], l10[names[1]]
        for i, (b, a) in enumerate(zip(before, after)):
            ax.plot([i, i], [b, a], color=RISE if a > b else FALL if a < b else '0.5', lw=1.8, zorder=2)
        ax.scatter(xs, before, s=70, facecolors='white', edgecolors='0.45', linewidths=1.4, label=names[0],
                   zorder=3)  # a ring, larger than the after dot: still seen when the two coincide
        ax.scatter(xs, after, s=26, color='#1f77b4', label=names[1], zorder=4)
        from matplotlib.transforms import blended_transform_factory  # the ratios, above the frame
        above = blended_transform_factory(ax.transData, ax.transAxes)
        for i, (b, a) in enumerate(zip(before, after)):
            d = a - b  # log10 of the ratio
            ax.text(i, 1.01, format_ratio(d * math.log(10)), transform=above, ha='center', va='bottom',
                    fontsize=7, rotation=90 if n > 8 else 0,
                    color=RISE if d > 0 else FALL if d < 0 else 'black')
    else:
        name, = names
        ax.scatter(xs, l10[name], s=30, color='#1f77b4', label=name, zorder=3)
    ax.set_ylim(vmin - 0.08 * span, vmax + 0.15 * span)  # room above the dots for the legend
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda y, _: f"$10^{{{int(y)}}}$" if y < 0 else '1' if y == 0 else ''))
    if vmax + 0.15 * span >= 0:
        ax.axhline(0, color='black', linewidth=0.6)  # probability 1, the top of any scale
    if not dense:
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=60, ha='right', fontsize=8)
        ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel('P(response | prompt), log scale')
    ratios = '\nabove each pair: the ratio after/before' if len(names) == 2 and not dense else ''
    ax.set_title(fit_text(short_models(title or 'probability of each response'), fig.get_figwidth() - 1.2, 11)
                 + ratios, fontsize=11, loc='left', pad=56 if ratios and n > 8 else 16)
    ax.grid(alpha=0.3)
    handles, keys = ax.get_legend_handles_labels()
    ax.legend(handles, [short_models(k) for k in keys], loc='upper left', ncol=len(names), fontsize=8,
              framealpha=0.9)
    fig.tight_layout()
    return save(fig, path, show)


def eval_token_changes(items, path, title='', show=False):
    """Horizontal bars of the response tokens whose log-probability changed the most between two
    models. items: [(token text, pair number, delta in nats = after - before)]; gains green, losses red."""
    plt = pyplot()
    items = [(f"pair {i}: '{token_label(t, 20)}'", d) for t, i, d in sorted(items, key=lambda x: x[2])]
    fig, ax = plt.subplots(figsize=(8.0, max(3.0, 0.28 * len(items) + 1.4)))
    ys = range(len(items))
    ax.barh(ys, [d for _, d in items], color=[RISE if d > 0 else FALL for _, d in items])
    ax.set_yticks(list(ys))
    ax.set_yticklabels([lbl for lbl, _ in items], fontsize=8)
    for y, (_, d) in zip(ys, items):
        ax.annotate(format_ratio(d), (d, y), xytext=(3 if d > 0 else -3, 0), textcoords='offset points',
                    ha='left' if d > 0 else 'right', va='center', fontsize=7)
    ax.axvline(0, color='black', linewidth=0.6)
    lim = max([abs(d) for _, d in items] + [1e-9]) * 1.3
    # the side with no bars only when some bar is there: every token gained (or lost) -> a one-sided axis
    ax.set_xlim(-lim if any(d < 0 for _, d in items) else 0, lim if any(d > 0 for _, d in items) else 0)
    ax.set_xlabel('change in log-probability, nats (after − before); label = factor')
    ax.set_title(fit_text(short_models(title or 'tokens that gained and lost probability'), 7.4, 10),
                 fontsize=10)
    ax.grid(axis='x', alpha=0.3)
    fig.tight_layout()
    return save(fig, path, show)
