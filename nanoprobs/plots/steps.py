"""
The per-step bar charts of sample.py (show_probs): what one step's chart shows, the reused figure that
draws it, the pool of processes that draws many, and the interactive window that pages through them.
"""

import math
import multiprocessing
import os
import time
from dataclasses import dataclass

from nanoprobs.formatting import format_prob, plain, token_label
from nanoprobs.plots.common import CHOSEN_COLOR, CHOSEN_LIGHT, MODEL_COLOR, MODEL_LIGHT, pyplot, savefig

W = 10  # characters per number column of the step chart's table: '5.076e-435' fits


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
        plt = pyplot()
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
        return savefig(self.fig, path, self.dpi)

    def close(self):
        self.plt.close(self.fig)


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


# -----------------------------------------------------------------------------
# many charts: one reused figure per process
# (the worker functions live at module level here, so that 'spawn' children can import them)

# fewer charts per extra process: draw them here (a process takes ~1 s of CPU to start)
MIN_CHARTS_PER_WORKER = 40
_chart = None  # a worker process's reused StepChart


def _init_chart_worker(k):
    """Set up a chart-drawing process: headless matplotlib, one reused figure."""
    global _chart
    os.environ['MPLBACKEND'] = 'Agg'  # files only: a worker never opens windows
    _chart = StepChart(k)


def _draw_chart_chunk(jobs):
    """Draw (StepBars, path) jobs with the worker's figure; returns how many."""
    for bars, path in jobs:
        _chart.draw(bars, path)
    return len(jobs)


def chart_workers_for(n_jobs, workers=0):
    """How many processes draw n_jobs charts: workers (0 = one per CPU core, at most 8), fewer when
    each would get under MIN_CHARTS_PER_WORKER charts (1 = in this process)."""
    if workers <= 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        workers = min(cores or 1, 8)
    return max(1, min(workers, n_jobs // MIN_CHARTS_PER_WORKER))


def draw_step_charts(jobs, k, workers=1):
    """Draw (StepBars, path) jobs into PNGs with one reused figure per process, with a progress bar.
    workers > 1 spreads them over that many 'spawn' processes (the caller has torch loaded: no fork).
    Returns seconds."""
    from tqdm import tqdm
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc='step charts', unit='chart', leave=False)
    try:
        if workers <= 1:
            chart = StepChart(k)
            try:
                for bars, path in jobs:
                    chart.draw(bars, path)
                    bar.update()
            finally:
                chart.close()
        else:
            chunks = [jobs[c:c + 10] for c in range(0, len(jobs), 10)]  # small chunks: the progress bar moves
            ctx = multiprocessing.get_context('spawn')
            with ctx.Pool(workers, initializer=_init_chart_worker, initargs=(k,)) as pool:
                for done in pool.imap_unordered(_draw_chart_chunk, chunks):
                    bar.update(done)
    finally:
        bar.close()
    return time.perf_counter() - t0
