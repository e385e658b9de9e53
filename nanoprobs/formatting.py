"""
Text for people to read, the one place for it (terminal lines, chart labels and the HTML page alike):
probabilities and ratios from their logs without float64 underflow (never a silent 0), tokens with
their whitespace made visible, sampling settings, model names and file sizes.
"""

import math
import os
import re


def format_prob(logprob, digits=4):
    """A probability given by its natural log, as text, without float64 underflow.

    format_prob(-2.3) -> '0.1003'; format_prob(-1000) -> '5.076e-435' (exp(-1000) is 0.0 in float64)."""
    if logprob == float('-inf'):
        return '0'
    if math.isnan(logprob):
        return 'nan'
    if logprob > -6.9:  # p > ~0.001: plain decimal
        return f"{math.exp(logprob):.{digits}f}"
    return _sci(logprob / math.log(10), digits)


def format_ratio(logratio, digits=3):
    """exp(logratio) as a factor, for any logratio in nats:
    '×27.6', '×0.0821', '×3.20e-05', '×1.05e+20'."""
    if math.isnan(logratio):
        return '×nan'
    if abs(logratio) < 4 * math.log(10):
        return f"×{math.exp(logratio):.{digits}g}"
    return '×' + _sci(logratio / math.log(10), digits)


def _sci(log10, digits):
    """10**log10 in scientific notation with `digits` significant digits, for any log10 (no overflow)."""
    exp10 = math.floor(log10)
    mant = 10 ** (log10 - exp10)
    if round(mant, digits - 1) >= 10:  # 9.9996 rounds up to 10.000: carry into the exponent
        mant, exp10 = mant / 10, exp10 + 1
    return f"{mant:.{digits - 1}f}e{exp10:+03d}"


# -----------------------------------------------------------------------------
# tokens, settings and models as labels

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


def file_size(nbytes):
    """A size in bytes as people read it: 812 B, 4.7 MB, 1.49 GB (powers of 1000, as file managers show)."""
    for unit, scale in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


# -----------------------------------------------------------------------------
# perplexity, and GLTR's rank buckets (the probability scale is web/scale.json: html_report.probability_scale)

def format_ppl(x, spec='.3f'):
    """A perplexity as text that keeps table columns: `spec` up to a million, then 4 significant digits
    (a random model's 1.235e+24, not a 28-digit number; 3 from 1e100 on, so at most 9 characters)."""
    return f"{x:{spec}}" if x < 1e6 else f"{x:.4g}" if x < 1e100 else f"{x:.3g}"  # inf -> 'inf'


def perplexity(mean_logprob):
    """exp(-mean log-prob per token); inf rather than an OverflowError for absurdly unlikely text."""
    return math.exp(-mean_logprob) if mean_logprob > -700 else float('inf')


# rank buckets (GLTR's): top 10, top 100, top 1000, beyond
RANK_EDGES = (10, 100, 1000)
RANK_NAMES = ('top 10', 'top 100', 'top 1000', 'beyond')
