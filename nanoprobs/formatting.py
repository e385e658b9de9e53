"""
Probabilities and ratios as text, from their logs, without float64 underflow (never a silent 0).
"""

import math


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
