"""Metrics at a fixed threshold: confusion counts, accuracy, sensitivity, specificity, PPV,
NPV, precision, recall and F1 with confidence intervals, and the Youden threshold that
training fixes on training data only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from model_bundle.evaluation.inputs import (
    _ZERO_TOL,
    _labels,
    _require_both_classes,
    _scores,
    _z_crit,
)

# --------------------------------------------------------------------------------------
# Threshold metrics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfusionCounts:
    """Confusion-matrix counts at one threshold (positive call: ``score >= threshold``)."""

    tp: int
    fp: int
    tn: int
    fn: int


@dataclass(frozen=True, slots=True)
class MetricEstimate:
    """One threshold metric with its confidence interval.

    Attributes
    ----------
    estimate
        Point estimate, ``numerator / denominator`` (``nan`` if the denominator is 0).
    ci_low, ci_high
        Confidence interval (``nan`` when not estimable).
    numerator, denominator
        The counts behind ``estimate`` (for F1: ``2 TP`` and ``2 TP + FP + FN``).
    method
        How the interval was computed.
    reason
        Why ``estimate`` or the interval is ``nan``, else ``None``.
    """

    estimate: float
    ci_low: float
    ci_high: float
    numerator: int
    denominator: int
    method: str
    reason: str | None = None


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    successes, trials : int
        Counts, ``0 <= successes <= trials``.
    level : float
        Confidence level (default 0.95).

    Returns
    -------
    (float, float)
        The interval; ``(nan, nan)`` when ``trials == 0``.

    Notes
    -----
    Chosen over the Wald interval because it keeps close to nominal coverage for the
    small counts and proportions near 0 or 1 of a 45-patient test set, and never leaves
    [0, 1] [2]_.

    References
    ----------
    .. [1] Wilson EB. Probable inference, the law of succession, and statistical
       inference. J Am Stat Assoc. 1927;22(158):209-212.
    .. [2] Newcombe RG. Two-sided confidence intervals for the single proportion:
       comparison of seven methods. Stat Med. 1998;17(8):857-872.
    """
    z = _z_crit(level)
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return math.nan, math.nan
    phat = successes / trials
    z2 = z * z
    centre = (phat + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(phat * (1 - phat) / trials + z2 / (4 * trials**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion_counts(y_true: ArrayLike, prob: ArrayLike, threshold: float) -> ConfusionCounts:
    """Confusion-matrix counts, calling a case positive when ``prob >= threshold``.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive).
    prob : array_like, shape (N,)
        Predicted probabilities or scores on the threshold's scale.
    threshold : float
        The decision threshold (fitted on training data).

    Returns
    -------
    ConfusionCounts
    """
    y = _labels(y_true)
    s = _scores(prob, y.size, "prob")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    called = s >= threshold
    tp = int(np.sum(called & (y == 1)))
    fp = int(np.sum(called & (y == 0)))
    fn = int(np.sum(~called & (y == 1)))
    tn = int(np.sum(~called & (y == 0)))
    return ConfusionCounts(tp=tp, fp=fp, tn=tn, fn=fn)


def _proportion(num: int, den: int, level: float, empty_reason: str, method: str) -> MetricEstimate:
    if den == 0:
        return MetricEstimate(math.nan, math.nan, math.nan, num, den, method, empty_reason)
    lo, hi = wilson_interval(num, den, level)
    return MetricEstimate(num / den, lo, hi, num, den, method)


def binary_metrics(
    y_true: ArrayLike,
    prob: ArrayLike,
    threshold: float,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, MetricEstimate]:
    """Accuracy, sensitivity, specificity, PPV, NPV and F1 at a fixed threshold, with CIs.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive).
    prob : array_like, shape (N,)
        Predicted probabilities (or scores on the threshold's scale).
    threshold : float
        Decision threshold; a case is called positive when ``prob >= threshold``. Fix it
        on training data (e.g. :func:`youden_threshold`), never on the data evaluated.
    level : float
        Confidence level (default 0.95).
    n_boot : int
        Bootstrap resamples for the F1 interval (default 2,000, as pROC's ``boot.n``).
    seed : int
        Seed of the bootstrap generator; the same inputs and seed give the same interval.

    Returns
    -------
    dict[str, MetricEstimate]
        Keys ``accuracy, sensitivity, specificity, ppv, npv, f1``, plus the aliases
        ``recall`` (the same object as ``sensitivity``) and ``precision`` (= ``ppv``),
        since the source paper reports both names.

    Notes
    -----
    Proportions (accuracy, sensitivity, specificity, PPV, NPV) get Wilson score intervals.
    F1 = 2 TP / (2 TP + FP + FN) is not a binomial proportion; its interval is the
    percentile interval of a stratified bootstrap: positives and negatives are resampled
    separately with replacement, so every resample keeps the observed class counts (as
    pROC's ``boot.stratified=TRUE``), which also keeps F1 defined in every resample when
    there is at least one positive. F1 depends on a resample only through its TP and FP,
    and those are exactly Binomial(n_pos, TP / n_pos) and Binomial(n_neg, FP / n_neg)
    under this resampling, so they are drawn directly: the same bootstrap distribution
    as resampling case indices, at a tiny fraction of the cost.

    A zero denominator (no positives, no negatives, no positive or no negative calls)
    makes that metric ``nan`` with a ``reason``; it never raises.

    References
    ----------
    .. [1] Wilson EB. Probable inference, the law of succession, and statistical
       inference. J Am Stat Assoc. 1927;22(158):209-212.
    .. [2] Newcombe RG. Two-sided confidence intervals for the single proportion:
       comparison of seven methods. Stat Med. 1998;17(8):857-872.
    .. [3] Efron B, Tibshirani RJ. An Introduction to the Bootstrap. New York: Chapman &
       Hall; 1993.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    _z_crit(level)
    c = confusion_counts(y_true, prob, threshold)
    n_pos, n_neg = c.tp + c.fn, c.tn + c.fp
    n = n_pos + n_neg
    wilson = "wilson"
    out: dict[str, MetricEstimate] = {
        "accuracy": _proportion(c.tp + c.tn, n, level, "no cases", wilson),
        "sensitivity": _proportion(c.tp, n_pos, level, "no positive cases (TP + FN = 0)", wilson),
        "specificity": _proportion(c.tn, n_neg, level, "no negative cases (TN + FP = 0)", wilson),
        "ppv": _proportion(
            c.tp, c.tp + c.fp, level, "no positive calls at this threshold (TP + FP = 0)", wilson
        ),
        "npv": _proportion(
            c.tn, c.tn + c.fn, level, "no negative calls at this threshold (TN + FN = 0)", wilson
        ),
    }
    out["f1"] = _f1_estimate(c, level, n_boot, seed)
    out["recall"] = out["sensitivity"]
    out["precision"] = out["ppv"]
    return out


def _f1_estimate(c: ConfusionCounts, level: float, n_boot: int, seed: int) -> MetricEstimate:
    """F1 with a stratified-bootstrap percentile interval (see :func:`binary_metrics`)."""
    n_pos, n_neg = c.tp + c.fn, c.tn + c.fp
    num, den = 2 * c.tp, 2 * c.tp + c.fp + c.fn
    method = f"stratified bootstrap percentile (n_boot={n_boot}, seed={seed})"
    if den == 0:
        reason = "no positive cases and no positive calls (2 TP + FP + FN = 0)"
        return MetricEstimate(math.nan, math.nan, math.nan, num, den, method, reason)
    estimate = num / den
    if n_pos == 0:
        reason = "no positive cases: F1 is 0 by construction and its interval is not estimable"
        return MetricEstimate(estimate, math.nan, math.nan, num, den, method, reason)
    rng = np.random.default_rng(seed)
    tp = rng.binomial(n_pos, c.tp / n_pos, size=n_boot)
    fp = rng.binomial(n_neg, c.fp / n_neg, size=n_boot) if n_neg else np.zeros(n_boot)
    f1 = 2.0 * tp / (2.0 * tp + fp + (n_pos - tp))
    alpha = 1.0 - level
    lo, hi = np.quantile(f1, [alpha / 2.0, 1.0 - alpha / 2.0])
    return MetricEstimate(estimate, float(lo), float(hi), num, den, method)


def youden_threshold(
    y_true: ArrayLike,
    prob: ArrayLike,
    *,
    prefer: Literal["sensitivity", "specificity"] = "sensitivity",
) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels of the *training* data. Both classes must be present.
    prob : array_like, shape (N,)
        Training-data probabilities (or scores).
    prefer : {"sensitivity", "specificity"}
        Tie rule when several cut points reach the same maximal J (within 1e-12): the
        lowest of them (most sensitive, the default: a missed early ONFH costs more than
        an extra look) or the highest (most specific).

    Returns
    -------
    float
        A threshold strictly between two observed scores: the midpoint of the two
        adjacent distinct scores that the best cut falls between (as pROC places its
        thresholds), so that a case is called positive when ``prob >= threshold`` and the
        training sensitivity/specificity are reproduced exactly, while new scores that
        fall in the gap are split evenly.

    Raises
    ------
    ValueError
        If the input is malformed, a class is missing, or all scores are equal.

    Notes
    -----
    Only cuts between observed scores are candidates; "call all" and "call none" (J = 0)
    are excluded, since a threshold outside the data is not a useful operating point.

    References
    ----------
    .. [1] Youden WJ. Index for rating diagnostic tests. Cancer. 1950;3(1):32-35.
    """
    if prefer not in ("sensitivity", "specificity"):
        raise ValueError(f"prefer must be 'sensitivity' or 'specificity', got {prefer!r}")
    y = _labels(y_true)
    s = _scores(prob, y.size, "prob")
    n_pos, n_neg = _require_both_classes(y, "youden_threshold")
    values, inverse = np.unique(s, return_inverse=True)
    if values.size < 2:
        raise ValueError("youden_threshold needs at least two distinct scores")
    pos_at = np.bincount(inverse, weights=y, minlength=values.size)
    neg_at = np.bincount(inverse, weights=1 - y, minlength=values.size)
    # Cut k lies between values[k] and values[k + 1]: positives at or above values[k + 1]
    # are caught, negatives at or below values[k] are cleared.
    sens = 1.0 - np.cumsum(pos_at)[:-1] / n_pos
    spec = np.cumsum(neg_at)[:-1] / n_neg
    j = sens + spec - 1.0
    best = np.flatnonzero(j >= j.max() - _ZERO_TOL)
    k = int(best[0] if prefer == "sensitivity" else best[-1])
    return float((values[k] + values[k + 1]) / 2.0)
