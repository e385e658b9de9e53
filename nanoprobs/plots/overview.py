"""
One sample at a glance (sample.py's overview.png) and one step under several temperatures (temperatures.png).
"""

import math
from dataclasses import dataclass

from nanoprobs.formatting import plain, prob_text
from nanoprobs.plots.common import MODEL_COLOR, ProbabilityScale, pyplot, save


@dataclass
class SampleOverview:
    """One sample at a glance: its tokens shaded by probability, and the chosen-token probability per step."""
    prompt: str         # the prompt text (drawn grey, unshaded; long prompts keep their tail)
    tokens: list        # text of each generated (or forced) token
    logprobs: list      # model-distribution log-probability of each token
    sample_logprobs: list  # sampling-distribution log-probability of each token (-inf: cut by top-k/top-p)
    title: str
    sampling: str = ''  # the sampling settings, for the legend
    forced: bool = False
    pieces: list = None  # tokenizer.Tokenizer.pieces of the tokens: tokens that form one character drawn as one

    @property
    def probs(self):
        return [math.exp(x) for x in self.logprobs]

    def units(self):
        """[(text, probability)] of the text cells: one per piece (probability of all its tokens
        together, the product), or one per token without pieces."""
        if not self.pieces:
            return list(zip(self.tokens, self.probs))
        return [(text, math.exp(sum(self.logprobs[a:b]))) for a, b, text in self.pieces]


def _overview_cells(prompt, tokens, cols, max_prompt=300):
    """Lay text out on a grid of monospace cells: [(line, col, text, token index or -1 for the prompt)]."""
    cells, line, col = [], 0, 0
    if len(prompt) > max_prompt:
        prompt = '…' + prompt[-(max_prompt - 1):]
    for idx, text in [(-1, prompt)] + list(enumerate(tokens)):
        text = text.replace('\r', '').replace('\t', '⇥')
        parts = text.split('\n')
        for j, part in enumerate(parts):
            shown = part + ('⏎' if j < len(parts) - 1 else '')
            while shown:
                if col + len(shown) > cols and col > 0 and (idx >= 0 or col + 1 > cols):
                    line, col = line + 1, 0
                piece, shown = shown[:cols - col], shown[cols - col:]
                cells.append((line, col, piece, idx))
                col += len(piece)
            if j < len(parts) - 1:
                line, col = line + 1, 0
    return cells


def overview_figure(ov, width=12.0, cols=110, max_lines=60):
    """The figure of one sample (see SampleOverview); returns the matplotlib figure."""
    plt = pyplot()
    import numpy as np
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator
    scale = ProbabilityScale()  # the page's: the same buckets and colours for the same probability
    units = ov.units()
    cells = _overview_cells(ov.prompt, [text for text, _ in units], cols)
    n_lines = (cells[-1][0] + 1) if cells else 1
    cut = n_lines > max_lines
    if cut:
        cells = [c for c in cells if c[0] < max_lines]
        n_lines = max_lines
    # geometry in inches, so that one monospace character fills exactly one cell
    margin_l, margin_r = 0.3, 0.3
    cell_w = (width - margin_l - margin_r) / cols  # inches
    fs = cell_w * 72 / 0.6021  # DejaVu Sans Mono advances 0.6021 em per character
    line_h = fs * 1.55 / 72
    title_h, text_h, cbar_h, plot_h = 0.75, n_lines * line_h + 0.1, 0.55, 2.6
    H = title_h + text_h + cbar_h + plot_h + 0.2
    fig = plt.figure(figsize=(width, H))
    frac = lambda y, h: [margin_l / width, 1 - (y + h) / H,  # noqa: E731
                         1 - (margin_l + margin_r) / width, h / H]
    ax = fig.add_axes(frac(title_h, text_h))
    ax.set_xlim(0, cols)
    ax.set_ylim(n_lines, 0)
    ax.axis('off')
    rects, colors = [], []
    for line, col, piece, idx in cells:
        rects.append(Rectangle((col, line + 0.06), len(piece), 0.88))
        colors.append('0.93' if idx < 0 else scale.color(units[idx][1]))
        ax.text(col, line + 0.5, piece, family='DejaVu Sans Mono', fontsize=fs, va='center', ha='left',
                color='0.45' if idx < 0 else scale.ink(units[idx][1]), parse_math=False)
    ax.add_collection(PatchCollection(rects, facecolors=colors, edgecolors='white', linewidths=0.6))
    if cut:
        ax.text(cols, n_lines + 0.2, f"… text cut after {max_lines} lines", ha='right', va='top',
                fontsize=8, color='0.4')
    fig.suptitle(ov.title, x=margin_l / width, y=1 - 0.08 / H, ha='left', va='top', fontsize=10.5,
                 parse_math=False)
    cax = fig.add_axes(frac(title_h + text_h + 0.12, 0.14))
    cb = scale.colorbar(fig, cax=cax)
    what = 'forced' if ov.forced else 'generated'
    joined = (' (tokens that form one character: together)'
              if any(b - a > 1 for a, b, _ in ov.pieces or []) else '')
    cb.set_label(f"shading: model probability of each {what} token{joined}, the HTML report's scale (grey: prompt)", fontsize=9)
    # chosen-token probability per step, both distributions, log scale
    pax = fig.add_axes([0.06, 0.45 / H, 0.92, (plot_h - 0.85) / H])
    steps = np.arange(1, len(ov.probs) + 1)
    slp = np.array(ov.sample_logprobs, dtype=float)
    sp = np.exp(slp).clip(min=1e-300)  # below float64's range: drawn at the bottom, not dropped
    sp[np.isneginf(slp)] = np.nan  # excluded by top-k/top-p: nothing to draw on a log scale
    mk = dict(marker='o', ms=3) if len(steps) <= 120 else {}
    pax.plot(steps, np.exp(ov.logprobs).clip(min=1e-300), color=MODEL_COLOR, lw=1.2,
             label='model distribution (T=1, no top-k/top-p)', **mk)
    pax.plot(steps, sp, color='#e08a3c', lw=1.0, alpha=0.9,
             label=f"sampling distribution ({ov.sampling})", **mk)
    pax.set_yscale('log')
    lo = min([p for p in list(ov.probs) + list(sp[~np.isnan(sp)]) if p > 0] + [1e-3])
    pax.set_ylim(max(lo / 2, 1e-30), 1.5)
    pax.set_xlim(0.5, max(len(steps), 1) + 0.5)
    pax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers: no 2.5
    pax.set_xlabel('step (new token)')
    pax.set_ylabel(f"p({what} token)")
    pax.grid(color='0.9', lw=0.8)
    pax.legend(fontsize=8, loc='lower left', bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    for s in ('top', 'right'):
        pax.spines[s].set_visible(False)
    return fig


def draw_overview(ov, path, show=False):
    """Save the overview figure of one sample as a PNG; with show, keep it open for show_windows()."""
    return save(overview_figure(ov), path, show)



@dataclass
class TemperatureComparison:
    """One next-token distribution under several temperatures (the settings' top-k/top-p applied)."""
    labels: list        # the model's k most likely tokens, most likely first (temperature keeps this order)
    temperatures: list
    probs: list         # probs[j][i]: probability of token i at temperatures[j]
    entropies: list     # entropy (nats) of the whole distribution at each temperature
    title: str
    sampling: str = ''  # the top-k/top-p applied at every temperature ('' if none)


def temperature_figure(cmp):
    """Side-by-side panels, one per temperature, of the same k tokens; returns the figure."""
    plt = pyplot()
    n, k = len(cmp.temperatures), len(cmp.labels)
    fig, axes = plt.subplots(1, n, figsize=(1.2 + 2.6 * n, 1.6 + 0.32 * k), sharey=True, squeeze=False)
    axes = axes[0]
    cmap = plt.get_cmap('coolwarm')  # cold to hot; its pale middle gets a dark edge
    lo, hi = min(cmp.temperatures), max(cmp.temperatures)
    top = max(max(p) for p in cmp.probs)
    for ax, t, probs, ent in zip(axes, cmp.temperatures, cmp.probs, cmp.entropies):
        color = cmap(0.5 if hi == lo else 0.1 + 0.8 * (t - lo) / (hi - lo))
        ax.barh(range(k), probs, color=color, height=0.7, edgecolor='0.35', linewidth=0.6)
        for i, p in enumerate(probs):
            ax.text(p, i, ' ' + prob_text(p), va='center', ha='left', fontsize=7.5, color='0.2')
        name = 'greedy (T=0)' if t == 0 else f"T = {t:g}"
        ax.set_title(f"{name}\nentropy {ent:.2f} nats\nthese {k} tokens: {sum(probs):.3f}", fontsize=9.5)
        ax.set_xlim(0, min(1.0, top * 1.35) + 1e-12)
        ax.grid(axis='x', color='0.9', lw=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(axis='x', labelsize=8)
        for s in ('top', 'right'):
            ax.spines[s].set_visible(False)
    axes[0].set_yticks(range(k), [plain(lab) for lab in cmp.labels])
    axes[0].invert_yaxis()
    axes[0].tick_params(axis='y', length=0, pad=6, labelsize=10)
    for t in axes[0].get_yticklabels():  # token chips, as in the step charts
        t.set_family('DejaVu Sans Mono')
        t.set_bbox(dict(boxstyle='round,pad=0.25', fc='0.93', ec='none'))
    fig.supxlabel('probability' + (f" (sampling distribution: temperature, then {cmp.sampling})"
                                    if cmp.sampling else ' (softmax(logits / T))'), fontsize=9)
    fig.suptitle(cmp.title, fontsize=10.5, parse_math=False)
    fig.tight_layout()
    return fig


def draw_temperature_comparison(cmp, path, show=False):
    """Save the temperature comparison as a PNG; with show, keep it open for show_windows()."""
    return save(temperature_figure(cmp), path, show)
