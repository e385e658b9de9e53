"""
Every chart of the project, drawn with matplotlib (imported here only, and only when a chart is drawn).

Charts are always saved as PNG files; when an interactive display exists they can also be shown
without blocking (see `finish`). Nothing here runs a model: scripts collect the numbers first
(generate()/score() details, eval results, training logs) and hand them over.
"""

import os

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


def token_label(text, max_len=14):
    """Make a token readable on an axis: spaces as '␣', newlines and tabs as \\n and \\t, long ones cut."""
    out = text.replace(' ', '␣').replace('\n', '\\n').replace('\t', '\\t').replace('\r', '\\r')
    return out if len(out) <= max_len else out[:max_len - 1] + '…'


def save(fig, path, show=False):
    """Save fig as PNG at path (folders created), optionally show it without blocking, then close it."""
    plt = _plt()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    if show and interactive_display():
        plt.show(block=False)
        plt.pause(0.001)
    plt.close(fig)
    return path
