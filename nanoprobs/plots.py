"""
Every chart of the project, drawn with matplotlib (imported here only, and only when a chart is drawn).

Charts are always saved as PNG files (`save`); when an interactive display exists and a script asks
for it, figures are also kept open and shown at the very end by `show_windows()`, so showing them
never holds up a run. Nothing here runs a model: scripts collect the numbers first
(generate()/score() details, eval results, training logs) and hand them over.
"""

import math
import os
import re
from dataclasses import dataclass

from nanoprobs.formatting import format_prob, format_ratio

# -----------------------------------------------------------------------------
# shared helpers


def _plt():
    """matplotlib.pyplot, with a headless backend unless a display is available."""
    import matplotlib
    if not os.environ.get('MPLBACKEND') and not interactive_display():
        matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def interactive_display():
    """True when windows can be shown (a desktop session, or macOS/Windows), False on ssh/CI."""
    import sys
    if os.environ.get('MPLBACKEND', '').lower() == 'agg':
        return False
    if sys.platform in ('darwin', 'win32'):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


# tokenizer.byte_text's <E2 80> and token_text's <id 50300>: labels whose spaces are not the token's
BYTE_LABEL = re.compile(r'(<(?:[0-9A-F]{2}(?: [0-9A-F]{2})*|id \d+)>)')


def token_label(text, max_len=14):
    """Make a token readable on an axis: spaces as '␣', newlines and tabs as \\n and \\t, long ones cut."""
    out = ''.join(part if i % 2 else part.replace(' ', '␣')
                  for i, part in enumerate(BYTE_LABEL.split(text)))
    out = out.replace('\n', '\\n').replace('\t', '\\t').replace('\r', '\\r')
    return out if len(out) <= max_len else out[:max_len - 1] + '…'


def short_models(text):
    """Text with every path in it (a word holding '/' or '\\', or ending in .pt) shown as model_label
    gives it: legends and titles name models, they do not spell out /tmp/.../out-children/ckpt.pt."""
    return re.sub(r'[^\s→:]*[/\\][^\s→]*|[^\s→:]+\.pt\b', lambda m: model_label(m.group(0)), text)


def fit_text(text, width_in, fontsize):
    """text wrapped so that each line fits width_in inches at fontsize (about 0.55 em per character)."""
    import textwrap
    n = max(20, int(width_in * 72 / (0.55 * fontsize)))
    return '\n'.join(textwrap.fill(line, n) for line in text.split('\n'))


def _savefig(fig, path, dpi=110):
    """fig.savefig into path (folders made), without matplotlib's 'Glyph ... missing from font'
    warnings: generated tokens may be in any script, and the PNG is still written."""
    import warnings
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Glyph .* missing from')
        fig.savefig(path, dpi=dpi)
    return path


def save(fig, path, show=False):
    """Save fig as a PNG at path. With show on a display, keep it open for show_windows() (which the
    script calls last); otherwise close it."""
    _savefig(fig, path)
    if not (show and interactive_display()):
        _plt().close(fig)
    return path


def show_windows():
    """Show the figures kept open by save(show=True) and wait until they are closed.
    Scripts call this last, when every file is written and every number printed."""
    plt = _plt()
    if plt.get_fignums() and interactive_display():
        plt.show()


# ---- eval: before/after per pair, tokens that gained or lost ----

def eval_pairs(labels, series, path, title='', show=False):
    """Grouped bars, one group per prompt/response pair: each model's probability of the response,
    on a log scale. series: {legend: [log-prob in nats, one per pair]}, one model or two (before, after).

    Bars are drawn as log10 values with 10^k tick labels rather than on matplotlib's log axis, so a
    probability below float64's range (1e-308, common for long responses) still gets its bar. With two
    series each pair is marked with the ratio after/before, green when it rose, red when it fell."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    names, n = list(series), len(labels)
    l10 = {k: [lp / math.log(10) for lp in v] for k, v in series.items()}
    vmin, vmax = min(min(v) for v in l10.values()), max(max(v) for v in l10.values())
    span = max(vmax - vmin, 1.0)
    lo = math.floor(vmin - 0.08 * span)  # bars grow up from here to log10 p
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.42 * n + 3), 6.0))
    colors = ['#9aa5b1', '#1f77b4'] if len(names) == 2 else ['#1f77b4']
    for j, k in enumerate(names):
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(n)]
        ax.bar(xs, [v - lo for v in l10[k]], width, bottom=lo, label=k, color=colors[j % len(colors)])
    if len(names) == 2:  # the ratios in a row above the frame, where no bar can reach them
        from matplotlib.transforms import blended_transform_factory
        above = blended_transform_factory(ax.transData, ax.transAxes)
        for i, (b, a) in enumerate(zip(*l10.values())):
            d = a - b  # log10 of the ratio
            ax.text(i, 1.01, format_ratio(d * math.log(10)), transform=above, ha='center', va='bottom',
                    fontsize=7, rotation=90 if n > 8 else 0,
                    color='#2ca02c' if d > 0 else '#d62728' if d < 0 else 'black')
    ax.set_ylim(lo, max(0.0, vmax) + 0.12 * span)  # room above the bars for the legend
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda y, _: f"$10^{{{int(y)}}}$" if y < 0 else '1' if y == 0 else ''))
    ax.axhline(0, color='black', linewidth=0.6)
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels, rotation=60, ha='right', fontsize=8)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel('P(response | prompt), log scale')
    ratios = '\nabove each pair: the ratio after/before' if len(names) == 2 else ''
    ax.set_title(fit_text(short_models(title or 'probability of each response'), fig.get_figwidth() - 1.2, 11)
                 + ratios, fontsize=11, loc='left', pad=56 if len(names) == 2 and n > 8 else 16)
    ax.grid(axis='y', alpha=0.3)
    handles, keys = ax.get_legend_handles_labels()
    ax.legend(handles, [short_models(k) for k in keys], loc='upper left', ncol=len(names), fontsize=8,
              framealpha=0.9)
    fig.tight_layout()
    return save(fig, path, show)


def eval_token_changes(items, path, title='', show=False):
    """Horizontal bars of the response tokens whose log-probability changed the most between two
    models. items: [(token text, pair number, delta in nats = after - before)]; gains green, losses red."""
    plt = _plt()
    items = [(f"pair {i}: '{token_label(t, 20)}'", d) for t, i, d in sorted(items, key=lambda x: x[2])]
    fig, ax = plt.subplots(figsize=(8.0, max(3.0, 0.28 * len(items) + 1.4)))
    ys = range(len(items))
    ax.barh(ys, [d for _, d in items], color=['#2ca02c' if d > 0 else '#d62728' for _, d in items])
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


# ---- sample.py: step bar charts, the per-sample overview, the temperature comparison ----


W = 10  # characters per number column of the step chart's table: '5.076e-435' fits
# model distribution: dark bar; sampling distribution: light bar
MODEL_COLOR, MODEL_LIGHT = '#3a6ea5', '#a9c6e8'
CHOSEN_COLOR, CHOSEN_LIGHT = '#d1495b', '#f2b5bd'  # the chosen token, same two shades


def plain(text):
    """Text that matplotlib draws as it is: '$' would otherwise start mathtext."""
    return text.replace('$', r'\$')


def text_tail(text, n=60):
    """The last n characters of text on one line, newlines and tabs shown as \\n and \\t."""
    text = text.replace('\n', '\\n').replace('\t', '\\t').replace('\r', '\\r')
    return text if len(text) <= n else '…' + text[-(n - 1):]


def prob_text(p):
    """A probability for a bar label: 3 decimals, or 2 significant digits when smaller than 0.001."""
    if p == 0:
        return '0'
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def sampling_text(temperature, top_k=None, top_p=None):
    """'T=0.8, top-k 200, top-p 0.9' for titles and legends (off settings left out)."""
    parts = ['greedy (T=0)' if temperature == 0 else f"T={temperature:g}"]
    if top_k:
        parts.append(f"top-k {top_k}")
    if top_p is not None and top_p < 1:
        parts.append(f"top-p {top_p:g}")
    return ', '.join(parts)


@dataclass
class StepBars:
    """What one step's bar chart shows: the k tokens the model found most likely, most likely first,
    each with its probability under both distributions; if the chosen token is not among them, it is
    appended as one extra bar (extra=True) that carries its true rank."""
    ids: list           # token id of each bar
    labels: list        # token text, whitespace made visible
    ranks: list         # 1-based rank under the model distribution
    logprobs: list      # model distribution: log softmax(logits), T=1, no top-k/top-p
    sample_logprobs: list  # sampling distribution (temperature, top-k, top-p); -inf: excluded
    chosen: int         # index of the chosen token's bar (matched by token id)
    extra: bool         # the chosen token is outside the top k: its bar is the last one
    title: str
    sampling: str       # the sampling settings, for the legend
    forced: bool = False  # the token was forced by fixed_response, not sampled

    @property
    def probs(self):  # bar lengths
        return [math.exp(x) for x in self.logprobs]

    @property
    def sample_probs(self):
        return [math.exp(x) for x in self.sample_logprobs]


def step_bars(step, tok, title='', sampling='', forced=False):
    """StepBars from one decoding.Step (generate()/score() with details=k) and the tokenizer."""
    ids, lps, slps = list(step.top_ids), list(step.top_logprobs), list(step.top_sample_logprobs)
    ranks = list(range(1, len(ids) + 1))
    extra = step.chosen not in ids
    if extra:
        ids.append(step.chosen)
        lps.append(step.chosen_logprob)
        slps.append(step.chosen_sample_logprob)
        ranks.append(step.chosen_rank)
    chosen = ids.index(step.chosen)
    ranks[chosen] = step.chosen_rank  # equal unless tied probabilities
    labels = [token_label(tok.token_text(i)) for i in ids]
    return StepBars(ids, labels, ranks, lps, slps, chosen, extra, title, sampling, forced)


class StepChart:
    """Draws StepBars into one reused figure: cheap, as no figure, axes or bars are built per chart."""

    def __init__(self, k, figsize=(9.5, 5.0), dpi=90):
        plt = _plt()
        from matplotlib.patches import Patch
        self.plt, self.k, self.dpi = plt, k, dpi
        n = k + 1  # room for the chosen token when it is outside the top k
        self.fig, self.ax = plt.subplots(figsize=figsize)
        self.fig.subplots_adjust(left=0.19, right=0.64, top=0.79, bottom=0.11)
        ax = self.ax
        h, y = 0.4, list(range(n))
        self.model_bars = ax.barh([v - h / 2 for v in y], [0] * n, height=h, color=MODEL_COLOR)
        self.sample_bars = ax.barh([v + h / 2 for v in y], [0] * n, height=h, color=MODEL_LIGHT)
        # a column of numbers right of the axes: x in axes fraction, y in data (one row per bar)
        mono = dict(family='DejaVu Sans Mono', fontsize=8.5, va='center', ha='left', parse_math=False,
                    transform=ax.get_yaxis_transform(), clip_on=False)
        self.values = [ax.text(1.02, v, '', **mono) for v in y]
        self.header = ax.text(1.02, -0.9, f"{'model':>{W}} {'sampling':>{W}}", **{**mono, 'color': '0.35'})
        # the chosen token's place when its bars are too short to see (p below ~0.5% of the axis)
        self.mark, = ax.plot([], [], marker='>', ms=7, color=CHOSEN_COLOR, ls='none', clip_on=False, zorder=5)
        self.sep = ax.axhline(k - 0.5, color='0.5', lw=0.8, ls=(0, (4, 3)))
        # monospace token labels on grey chips (see render), so that '.' and ',' stay visible
        ax.tick_params(axis='y', length=0, pad=6, labelsize=10.5)
        ax.set_xlabel('probability')
        ax.grid(axis='x', color='0.9', lw=0.8)
        ax.set_axisbelow(True)
        for s in ('top', 'right'):
            ax.spines[s].set_visible(False)
        self.title = self.fig.suptitle('', x=0.02, y=0.985, ha='left', va='top', fontsize=10,
                                       parse_math=False)
        handles = [Patch(color=MODEL_COLOR), Patch(color=MODEL_LIGHT), Patch(color=CHOSEN_COLOR)]
        self.legend = self.fig.legend(handles, ['', '', ''], loc='upper right', bbox_to_anchor=(0.99, 0.995),
                                      fontsize=8, frameon=False)

    def render(self, bars):
        """Update the figure to show bars (StepBars)."""
        n = len(bars.ids)
        for i in range(self.k + 1):
            mb, sb, txt = self.model_bars[i], self.sample_bars[i], self.values[i]
            if i >= n:
                mb.set_width(0)
                sb.set_width(0)
                txt.set_text('')
                continue
            hit = i == bars.chosen
            mb.set_width(bars.probs[i])
            sb.set_width(bars.sample_probs[i])
            mb.set_facecolor(CHOSEN_COLOR if hit else MODEL_COLOR)
            sb.set_facecolor(CHOSEN_LIGHT if hit else MODEL_LIGHT)
            note = f" \u2190 {'forced' if bars.forced else 'chosen'}, rank {bars.ranks[i]}" if hit else ''
            txt.set_text(f"{format_prob(bars.logprobs[i], 3):>{W}} "
                         f"{format_prob(bars.sample_logprobs[i], 3):>{W}}{note}")
            txt.set_color(CHOSEN_COLOR if hit else '0.15')
            txt.set_fontweight('bold' if hit else 'normal')
        ax = self.ax
        labels = [plain(f"{lab} #{r}" if bars.extra and i == n - 1 else lab)
                  for i, (lab, r) in enumerate(zip(bars.labels, bars.ranks))]
        ax.set_yticks(range(n), labels)
        for i, t in enumerate(ax.get_yticklabels()):
            hit = i == bars.chosen
            t.set_family('DejaVu Sans Mono')
            t.set_color(CHOSEN_COLOR if hit else 'black')
            t.set_fontweight('bold' if hit else 'normal')
            # each token on a chip, so that '.', ',' and spaces read as tokens
            t.set_bbox(dict(boxstyle='round,pad=0.25', fc=CHOSEN_LIGHT if hit else '0.93', ec='none'))
        ax.set_ylim(n - 0.45, -0.55)
        self.sep.set_visible(bars.extra)
        self.sep.set_ydata([n - 1.5] * 2)
        top = max(max(bars.probs), max(bars.sample_probs))
        right = min(1.0, top * 1.08) + 1e-12
        ax.set_xlim(0, right)
        c = bars.chosen
        tiny = max(bars.probs[c], bars.sample_probs[c]) < 0.005 * right
        self.mark.set_data([0.0] if tiny else [], [c] if tiny else [])
        self.title.set_text(bars.title)
        chosen = 'forced token' if bars.forced else 'chosen token'
        for t, s in zip(self.legend.get_texts(), ['model distribution (T=1, no top-k/top-p)',
                                                  f"sampling distribution ({bars.sampling})",
                                                  f"{chosen} (dark: model, light: sampling)"]):
            t.set_text(s)

    def draw(self, bars, path):
        """Draw bars and save them as a PNG at path."""
        self.render(bars)
        return _savefig(self.fig, path, self.dpi)

    def close(self):
        self.plt.close(self.fig)


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
    plt = _plt()
    import numpy as np
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator
    cmap = ListedColormap(plt.get_cmap('YlOrRd')(np.linspace(0.85, 0.0, 256)))  # unlikely: red; likely: pale
    cmap = cmap.with_extremes(bad=cmap(0))
    norm = LogNorm(vmin=1e-4, vmax=1, clip=True)
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
        colors.append('0.93' if idx < 0 else cmap(norm(max(units[idx][1], 1e-300))))
        dark = idx >= 0 and units[idx][1] < 0.003  # the darkest reds: white text stays readable
        ax.text(col, line + 0.5, piece, family='DejaVu Sans Mono', fontsize=fs, va='center', ha='left',
                color='0.45' if idx < 0 else 'white' if dark else 'black', parse_math=False)
    ax.add_collection(PatchCollection(rects, facecolors=colors, edgecolors='white', linewidths=0.6))
    if cut:
        ax.text(cols, n_lines + 0.2, f"… text cut after {max_lines} lines", ha='right', va='top',
                fontsize=8, color='0.4')
    fig.suptitle(ov.title, x=margin_l / width, y=1 - 0.08 / H, ha='left', va='top', fontsize=10.5,
                 parse_math=False)
    cax = fig.add_axes(frac(title_h + text_h + 0.12, 0.14))
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation='horizontal')
    cb.set_ticks([1e-4, 1e-3, 1e-2, 1e-1, 1], labels=['≤0.0001', '0.001', '0.01', '0.1', '1'])
    cb.ax.tick_params(labelsize=8)
    what = 'forced' if ov.forced else 'generated'
    joined = (' (tokens that form one character: together)'
              if any(b - a > 1 for a, b, _ in ov.pieces or []) else '')
    cb.set_label(f"shading: model probability of each {what} token{joined} (grey: prompt)", fontsize=9)
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


def step_viewer(bars_list, k):
    """An interactive window that pages through step charts (keys: left/right, page up/down, home/end).
    Kept open for show_windows(); needs a display."""
    chart = StepChart(k)
    chart.fig.text(0.99, 0.01, 'keys: \u2190 \u2192 step, PgUp PgDn 10 steps, Home End', ha='right',
                   va='bottom', fontsize=8, color='0.4')
    at = [0]
    moves = {'right': 1, 'left': -1, 'pagedown': 10, 'pageup': -10,
             'end': len(bars_list), 'home': -len(bars_list)}

    def on_key(event):
        if event.key in moves:
            at[0] = min(max(at[0] + moves[event.key], 0), len(bars_list) - 1)
            chart.render(bars_list[at[0]])
            chart.fig.canvas.draw_idle()

    chart.fig.canvas.mpl_connect('key_press_event', on_key)
    chart.render(bars_list[0])
    return chart


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
    plt = _plt()
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


# ---- inspect: attention maps, logit lens, token embeddings ----

def attention_grid(att, path, layer_names=None, title='', show=False):
    """Every head's attention pattern in one picture: a layer x head grid of small heatmaps.
    att: (n_layer, n_head, T, T) weights, query rows, key columns. The colour scale is a square root
    (PowerNorm 0.5) so the faint weights a head spreads beside its main target stay visible."""
    plt = _plt()
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
    plt = _plt()
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
    plt = _plt()
    R, C = len(cells), len(cells[0])
    fig, ax = plt.subplots(figsize=(min(max(0.8 * C + 2.6, 7.0), 30.0), max(0.42 * R + 1.9, 3.4)))
    im = ax.imshow(probs, cmap='YlOrRd', vmin=0.0, vmax=1.0, aspect='auto', origin='lower')
    for r in range(R):
        for c in range(C):
            p = float(probs[r][c])
            ax.text(c, r, f"{token_label(cells[r][c], 9)}\n{prob_text(p)}", ha='center', va='center',
                    fontsize=6.5, color='white' if p > 0.65 else 'black', linespacing=1.0)
            if hits is not None and hits[r][c]:
                ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor='#1f77b4',
                                           linewidth=1.6))
    ax.set_xticks(range(C))
    ax.set_xticklabels([token_label(s, 10) for s in col_names], rotation=45, ha='right', fontsize=8)
    ax.set_yticks(range(R))
    ax.set_yticklabels(row_names, fontsize=8)
    ax.set_xlabel('input token (each column predicts the token after it)')
    ax.set_ylabel('residual stream after')
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.02).set_label('probability of the top token')
    ax.set_title(fit_text(title or 'logit lens: top next-token prediction of every layer '
                          '(blue box: the actual next token)', fig.get_figwidth() - 1.6, 10),
                 fontsize=10, loc='left')
    fig.tight_layout()
    return save(fig, path, show)


def embedding_scatter(xy, labels, path, xy_after=None, names=('before', 'after'), arrow_scale=1.0,
                      axis_labels=('PC1', 'PC2'), title='', show=False, moves=True):
    """Labelled scatter of 2-D points (N, 2). With xy_after, a second model's points in the same
    projection and an arrow from each word's first position to its second (scaled by arrow_scale
    when the moves are too small to see; the legend says so). moves=False: the two sets are separate
    maps (models of different widths), so each word's two points are only joined by a thin grey line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 7.5))
    x0, y0 = [float(p[0]) for p in xy], [float(p[1]) for p in xy]
    ax.scatter(x0, y0, s=14, color='#1f77b4', label=names[0], zorder=3)
    if xy_after is not None:
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
        ax.scatter(x1, y1, s=10, color='#d62728', label=names[1] + scaled, zorder=3)
    for a, b, s in zip(x0, y0, labels):
        ax.annotate(token_label(s, 16), (a, b), xytext=(3, 3), textcoords='offset points', fontsize=8)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    ax.set_title(title or 'token embeddings, first two principal components', fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)


def model_label(source):
    """A short name for a loaded model (load.Loaded.source) in titles and legends:
    'out-children/ckpt.pt' -> 'out-children', '/models/gpt2-local' -> 'gpt2-local', 'gpt2' -> 'gpt2'."""
    s = str(source).rstrip('/\\')
    head, tail = os.path.split(s)
    if tail.endswith('.pt') and head:
        return os.path.basename(head) + ('' if tail == 'ckpt.pt' else '/' + tail)
    return tail or s


def file_tag(*sources):
    """The models of a run as part of a file name, so that runs on other models do not overwrite it:
    ('gpt2',) -> 'gpt2'; ('gpt2', 'out-children/ckpt.pt') -> 'gpt2_vs_out-children'."""
    return '_vs_'.join(re.sub(r'[^A-Za-z0-9._-]+', '-', model_label(s)).strip('-') or 'model'
                       for s in sources if s)


# ---- train: loss curve ----

def plot_loss(steps, evals, path, title='', show=False):
    """Training progress: train and val loss vs iteration.

    steps: [(iter, loss)] per logged iteration (the loss of that iteration's batches: noisy, drawn thin,
    with a moving average on top); evals: [(iter, train, val)] from each eval (eval_iters batches per
    split). The best val loss is marked: that is the model ckpt.pt keeps when always_save_checkpoint=False."""
    plt = _plt()
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


# ---- compare_tokenizers: how a sentence is cut, loss against bytes of text seen ----

def token_boxes(rows, path, title='', show=False):
    """One row per tokenizer: the sentence's tokens as coloured boxes, each as wide as its characters.

    rows: [(name, [token text, ...])]; the texts of a row join to the sentence (a byte-level token that
    holds part of a character shows as '�'). Boxes alternate colours so neighbours are told apart."""
    plt = _plt()
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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, pts in curves.items():
        if pts:
            x, y = zip(*pts)
            ax.plot([v / 1e6 for v in x], y, 'o-', ms=3, lw=1.6, label=f"{name} (last {y[-1]:.3f})")
    ax.set_xlabel('text trained on (MB of UTF-8 bytes)')
    ax.set_ylabel('val loss (bits per byte)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='upper right')
    ax.set_title(title or 'val loss per byte of text, by tokenizer', fontsize=10)
    fig.tight_layout()
    return save(fig, path, show)


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
    plt = _plt()
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
    plt = _plt()
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
