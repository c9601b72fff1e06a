"""Two-sample drift statistics: a window of scored hips against the bundle's reference.

The reference keeps no hip's value, only quantiles and decile bins
(:class:`~model_bundle.bundle.Distribution`), so each statistic is computed against those:

- :func:`psi`, the population stability index over the reference's ten decile bins;
- :func:`ks_against_reference`, the Kolmogorov-Smirnov distance between the window's
  empirical CDF and the reference CDF drawn through its stored quantiles, with the
  two-sample p-value (the reference is itself a sample of ``count`` hips);
- :func:`positive_rate_test`, an exact binomial test of the window's positive calls
  against the reference's positive-call rate (SciPy's ``binomtest``).

Pure functions of their arguments; the rolling window itself is the service's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from model_bundle.bundle import Distribution

F64 = NDArray[np.float64]

#: The smallest bin fraction PSI uses: an empty bin (in the window or the reference) would
#: make ``ln(a / e)`` infinite, and a window of 50 hips leaves bins empty by chance.
PSI_FLOOR: Final = 1e-4


def _finite(values: ArrayLike) -> F64:
    array = np.asarray(values, dtype=np.float64).ravel()
    finite: F64 = array[np.isfinite(array)]
    return finite


def _usable(reference: Distribution) -> None:
    if reference.count == 0:
        raise ValueError("the reference distribution has no values")


def bin_fractions(reference: Distribution, values: ArrayLike) -> F64:
    """Fractions of ``values`` in the reference's ten bins ``(-inf, e1], ..., (e9, inf)``."""
    _usable(reference)
    data = _finite(values)
    if data.size == 0:
        raise ValueError("no finite values to bin")
    index = np.searchsorted(np.asarray(reference.decile_edges), data, side="left")
    counts = np.bincount(index, minlength=len(reference.decile_edges) + 1).astype(np.float64)
    fractions: F64 = counts / data.size
    return fractions


def psi(reference: Distribution, values: ArrayLike) -> float:
    """Population stability index of ``values`` against the reference's decile bins.

    ``PSI = sum_i (a_i - e_i) ln(a_i / e_i)`` over the ten bins, with ``e_i`` the
    reference's fraction in bin ``i``, ``a_i`` the window's, both floored at
    :data:`PSI_FLOOR`. Conventionally below 0.1 is stable, 0.1-0.25 a moderate shift, above
    0.25 a major one.

    Raises
    ------
    ValueError
        The reference has no values, or ``values`` no finite value.
    """
    actual = np.maximum(bin_fractions(reference, values), PSI_FLOOR)
    expected = np.maximum(np.asarray(reference.decile_frequencies, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def reference_cdf(reference: Distribution, x: ArrayLike) -> F64:
    """The reference CDF at ``x``: linear between the stored quantiles, 0 below, 1 above.

    Where quantiles tie (a value many reference hips share) the CDF jumps there, and at the
    tied value it is the highest level that has it, as an empirical CDF is.
    """
    _usable(reference)
    levels = np.array([level for level, _ in reference.quantiles]) / 100.0
    values = np.array([value for _, value in reference.quantiles])
    points = np.asarray(x, dtype=np.float64)
    # The last level at or below each point, and the next one: interpolate in between.
    right = np.searchsorted(values, points, side="right")
    out = np.empty(points.shape, dtype=np.float64)
    below = right == 0
    above = right >= values.size
    inside = ~(below | above)
    out[below] = 0.0
    out[above] = 1.0
    i = right[inside]
    lo_v, hi_v = values[i - 1], values[i]
    lo_p, hi_p = levels[i - 1], levels[i]
    t = (points[inside] - lo_v) / (hi_v - lo_v)  # hi_v > lo_v: searchsorted(side="right")
    out[inside] = lo_p + t * (hi_p - lo_p)
    return out


@dataclass(frozen=True)
class KSResult:
    """A Kolmogorov-Smirnov comparison of a window with the reference.

    Attributes
    ----------
    statistic
        The largest distance between the two CDFs.
    pvalue
        Two-sided, two-sample (asymptotic Kolmogorov distribution at the effective
        sample size ``n m / (n + m)``, as SciPy's ``ks_2samp(method="asymp")``).
    n
        The window's number of finite values.
    reference_n
        The reference's.
    """

    statistic: float
    pvalue: float
    n: int
    reference_n: int


def ks_against_reference(reference: Distribution, values: ArrayLike) -> KSResult:
    """Kolmogorov-Smirnov distance of ``values`` from the reference, and its p-value.

    Raises
    ------
    ValueError
        The reference has no values, or ``values`` no finite value.
    """
    _usable(reference)
    data = np.sort(_finite(values))
    m = data.size
    if m == 0:
        raise ValueError("no finite values to compare")
    cdf = reference_cdf(reference, data)
    # The window's CDF is a step function and the reference's continuous between its
    # quantiles, so the largest gap is at a step: just after it (i / m) or just before.
    steps = np.arange(1, m + 1, dtype=np.float64) / m
    # Tied window values are one step: take the CDF after the last of them.
    last_of_tie = np.r_[data[1:] != data[:-1], True]
    d_plus = float(np.max((steps - cdf)[last_of_tie]))
    first_of_tie = np.r_[True, data[1:] != data[:-1]]
    d_minus = float(np.max((cdf - (steps - 1.0 / m))[first_of_tie]))
    statistic = max(d_plus, d_minus, 0.0)
    n = reference.count
    effective = n * m / (n + m)
    pvalue = float(stats.kstwo.sf(statistic, max(round(effective), 1)))
    return KSResult(statistic, min(max(pvalue, 0.0), 1.0), m, n)


@dataclass(frozen=True)
class BinomialResult:
    """A binomial test of the positive-call rate.

    Attributes
    ----------
    positives, n
        Positive calls in the window, and the window's hips.
    expected_rate
        The reference's positive-call rate.
    observed_rate
        ``positives / n``.
    pvalue
        Two-sided exact binomial p-value (SciPy's ``binomtest``).
    """

    positives: int
    n: int
    expected_rate: float
    observed_rate: float
    pvalue: float


def positive_rate_test(positives: int, n: int, expected_rate: float) -> BinomialResult:
    """Test whether ``positives`` of ``n`` calls fit the expected positive-call rate.

    Raises
    ------
    ValueError
        ``n`` is not positive, ``positives`` not in ``[0, n]``, or the rate not in [0, 1].
    """
    if n <= 0 or not 0 <= positives <= n:
        raise ValueError(f"need 0 <= positives <= n and n > 0, not {positives} of {n}")
    if not (math.isfinite(expected_rate) and 0.0 <= expected_rate <= 1.0):
        raise ValueError(f"expected rate must be in [0, 1], not {expected_rate}")
    result = stats.binomtest(positives, n, expected_rate, alternative="two-sided")
    return BinomialResult(positives, n, expected_rate, positives / n, float(result.pvalue))
