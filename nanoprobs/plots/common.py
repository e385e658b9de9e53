"""
The figure plumbing every chart shares: pyplot with the right backend, saving PNGs, windows shown
last, text wrapped to a figure's width, the step charts' colours. matplotlib is imported inside the
functions only, so importing a plots module (as the scripts and the chart processes do) costs nothing.

Charts are always saved as PNG files (`save`); when an interactive display exists and a script asks
for it, figures are also kept open and shown at the very end by `show_windows()`, so showing them
never holds up a run.
"""

import os

from nanoprobs import atomic

# model distribution: dark bar; sampling distribution: light bar (the step charts and the overview)
MODEL_COLOR, MODEL_LIGHT = '#3a6ea5', '#a9c6e8'
CHOSEN_COLOR, CHOSEN_LIGHT = '#d1495b', '#f2b5bd'  # the chosen token, same two shades


class ProbabilityScale:
    """The probability scale of the HTML pages (web/scale.json, via html_report.probability_scale), for
    charts: a probability's bucket, its colour and text ink, and a colour bar with the buckets' edges."""

    def __init__(self):
        from nanoprobs.html_report import probability_scale
        s = probability_scale()
        self.edges, self.colors, self.inks = s['edges'], s['colors'], s['ink']

    def bucket(self, p):
        """i such that edges[i-1] <= p < edges[i] (page.js: bucket)."""
        return sum(p >= e for e in self.edges)

    def color(self, p):
        return self.colors[self.bucket(p)]

    def ink(self, p):
        return self.inks[self.bucket(p)]

    def cmap_norm(self):
        """(colormap, norm) for matplotlib (imshow, ScalarMappable): probability -> its bucket's colour."""
        from matplotlib.colors import BoundaryNorm, ListedColormap
        return ListedColormap(self.colors), BoundaryNorm([0.0] + list(self.edges) + [1.0], len(self.colors))

    def colorbar(self, fig, orientation='horizontal', **where):
        """The buckets as a colour bar (where: cax=... or ax=..., as fig.colorbar), equal widths, labelled
        with their edges."""
        plt = pyplot()
        cmap, norm = self.cmap_norm()
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), orientation=orientation,
                          spacing='uniform', **where)
        cb.set_ticks(norm.boundaries, labels=[f"{b:g}" for b in norm.boundaries])
        cb.ax.tick_params(labelsize=8)
        return cb


def pyplot():
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


def fit_text(text, width_in, fontsize):
    """text wrapped so that each line fits width_in inches at fontsize (about 0.55 em per character)."""
    import textwrap
    n = max(20, int(width_in * 72 / (0.55 * fontsize)))
    return '\n'.join(textwrap.fill(line, n) for line in text.split('\n'))


def savefig(fig, path, dpi=110):
    """fig.savefig into path (folders made), without matplotlib's 'Glyph ... missing from font'
    warnings: generated tokens may be in any script, and the PNG is still written."""
    import warnings
    fmt = os.path.splitext(path)[1][1:] or 'png'
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Glyph .* missing from')
        # whole or not at all: a full disk leaves the earlier picture, not half a PNG
        atomic.write_all({path: lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt)})
    return path


def save(fig, path, show=False):
    """Save fig as a PNG at path. With show on a display, keep it open for show_windows() (which the
    script calls last); otherwise close it."""
    savefig(fig, path)
    if not (show and interactive_display()):
        pyplot().close(fig)
    return path


def show_windows():
    """Show the figures kept open by save(show=True) and wait until they are closed.
    Scripts call this last, when every file is written and every number printed."""
    plt = pyplot()
    if plt.get_fignums() and interactive_display():
        plt.show()
