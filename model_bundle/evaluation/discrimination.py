"""Discrimination: the AUC with its DeLong confidence interval, and the DeLong test between
two models scored on the same hips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from model_bundle.evaluation.inputs import (
    _ZERO_TOL,
    _labels,
    _require_both_classes,
    _scores,
    _z_crit,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


# --------------------------------------------------------------------------------------
# AUC and DeLong
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AUCResult:
    """Empirical AUC with its DeLong standard error and confidence interval.

    Attributes
    ----------
    auc
        Mann-Whitney estimate of P(score of a positive > score of a negative), ties 1/2.
    se
        DeLong standard error (``nan`` if a class has fewer than two cases).
    ci_low, ci_high
        Confidence interval at ``level`` by ``ci_method``.
    n_pos, n_neg
        Number of positive and negative cases.
    level
        Confidence level of the interval.
    ci_method
        ``"normal"`` (Wald on the AUC scale, clipped to [0, 1]) or ``"logit"``.
    note
        Why ``se`` or the interval is ``nan`` or degenerate, else ``None``.
    """

    auc: float
    se: float
    ci_low: float
    ci_high: float
    n_pos: int
    n_neg: int
    level: float = 0.95
    ci_method: Literal["normal", "logit"] = "normal"
    note: str | None = None


@dataclass(frozen=True, slots=True)
class DeLongTest:
    """DeLong's paired test of two correlated AUCs (``diff = auc_a - auc_b``).

    Attributes
    ----------
    auc_a, auc_b
        The two empirical AUCs.
    diff
        ``auc_a - auc_b``.
    se
        DeLong standard error of ``diff``.
    z
        ``diff / se``.
    p_value
        Two-sided p-value from the standard normal.
    ci_low, ci_high
        Wald confidence interval of ``diff`` at ``level`` (not clipped).
    level
        Confidence level of the interval.
    note
        Set when a special case applied (identical rankings, zero or undefined variance).
    """

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    level: float = 0.95
    note: str | None = None


def _midranks(a: FloatArray) -> FloatArray:
    """Midranks along the last axis (tied values share the mean of their positions).

    Sun & Xu (2014), Algorithm 1, computes exactly this by a sort and a scan; scipy's
    ``rankdata(method="average")`` is the same O(N log N) computation, vectorised.
    """
    return np.asarray(stats.rankdata(a, method="average", axis=-1), dtype=np.float64)


def _placements(y: IntArray, scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """DeLong's structural components for each row of ``scores`` (k models x N cases).

    Returns ``(v10, v01)`` of shapes (k, n_pos) and (k, n_neg): ``v10[r, i]`` is the
    fraction of negatives ranked below positive ``i`` (ties count 1/2), ``v01[r, j]`` the
    fraction of positives ranked above negative ``j``. By Sun & Xu's Theorem 1 both come
    from midranks: a positive's midrank among all cases minus its midrank among positives
    counts the negatives below it (ties halved), which avoids DeLong's O(m n) pair loop.
    """
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    t_all = _midranks(np.concatenate([pos, neg], axis=1))
    v10 = (t_all[:, :m] - _midranks(pos)) / n
    v01 = 1.0 - (t_all[:, m:] - _midranks(neg)) / m
    return v10, v01


def delong_covariance(y_true: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """AUCs of k score vectors on the same cases and DeLong's covariance matrix.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive).
    scores : array_like, shape (k, N) or (N,)
        One row of scores per model, all on the same N cases.

    Returns
    -------
    aucs : ndarray, shape (k,)
        Empirical (Mann-Whitney) AUC of each row.
    cov : ndarray, shape (k, k)
        DeLong's estimate ``S10 / m + S01 / n`` of the covariance of the AUCs, where
        ``S10`` and ``S01`` are the sample covariances (denominator ``m - 1``, ``n - 1``)
        of the structural components over the m positives and n negatives. All ``nan``
        if a class has fewer than two cases (as pROC returns NA).

    Raises
    ------
    ValueError
        If the input is malformed or ``y_true`` holds a single class.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
       correlated receiver operating characteristic curves: a nonparametric approach.
       Biometrics. 1988;44(3):837-845.
    .. [2] Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas
       under correlated receiver operating characteristic curves. IEEE Signal Process
       Lett. 2014;21(11):1389-1393.
    """
    y = _labels(y_true)
    n_pos, n_neg = _require_both_classes(y, "DeLong AUC")
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D (models x cases), got shape {arr.shape}")
    for row in arr:
        _scores(row, y.size, "scores")
    v10, v01 = _placements(y, arr)
    aucs = v10.mean(axis=1)
    k = arr.shape[0]
    if n_pos < 2 or n_neg < 2:
        return aucs, np.full((k, k), np.nan)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / n_pos + s01 / n_neg


def roc_auc_delong(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    level: float = 0.95,
    ci_method: Literal["normal", "logit"] = "normal",
) -> AUCResult:
    """Empirical ROC AUC with DeLong's standard error and a confidence interval.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive). Both classes must be present.
    y_score : array_like, shape (N,)
        Scores, higher = more likely positive (never flipped).
    level : float
        Confidence level, default 0.95.
    ci_method : {"normal", "logit"}
        ``"normal"`` (default): ``auc ± z * se`` clipped to [0, 1]. This is pROC's
        ``ci.auc`` default (DeLong + plain normal interval), and it is the convention of
        the source paper (its DLR interval 0.909-1.000 is a clipped normal interval), so
        our numbers are comparable to both. ``"logit"``: the interval
        ``expit(logit(auc) ± z * se / (auc (1 - auc)))`` (delta method), which stays
        inside (0, 1) without clipping and covers better for high AUCs in small samples
        [4]_; it is undefined (``nan``, with a note) when the AUC is exactly 0 or 1.

    Returns
    -------
    AUCResult

    Raises
    ------
    ValueError
        If the input is malformed or ``y_true`` holds a single class.

    Notes
    -----
    The AUC equals the Mann-Whitney U statistic of the positives divided by
    ``n_pos * n_neg`` (ties count 1/2), i.e. sklearn's ``roc_auc_score``. With a single
    case in a class the DeLong variance is undefined: ``se`` and the interval are ``nan``.
    If every positive outscores every negative, ``se`` is 0 and the normal interval is
    [1, 1], as pROC reports.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
       correlated receiver operating characteristic curves: a nonparametric approach.
       Biometrics. 1988;44(3):837-845.
    .. [2] Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas
       under correlated receiver operating characteristic curves. IEEE Signal Process
       Lett. 2014;21(11):1389-1393.
    .. [3] Robin X, Turck N, Hainard A, et al. pROC: an open-source package for R and S+
       to analyze and compare ROC curves. BMC Bioinformatics. 2011;12:77.
    .. [4] Qin G, Hotilovac L. Comparison of non-parametric confidence intervals for the
       area under the ROC curve of a continuous-scale diagnostic test. Stat Methods Med
       Res. 2008;17(2):207-221.
    """
    z_crit = _z_crit(level)
    if ci_method not in ("normal", "logit"):
        raise ValueError(f"ci_method must be 'normal' or 'logit', got {ci_method!r}")
    y = _labels(y_true)
    score = _scores(y_score, y.size, "y_score")
    n_pos, n_neg = _require_both_classes(y, "roc_auc_delong")
    aucs, cov = delong_covariance(y, score)
    auc = float(aucs[0])
    var = float(cov[0, 0])

    def result(se: float, lo: float, hi: float, note: str | None = None) -> AUCResult:
        return AUCResult(auc, se, lo, hi, n_pos, n_neg, level, ci_method, note)

    if not math.isfinite(var):
        return result(
            math.nan,
            math.nan,
            math.nan,
            f"DeLong variance needs at least 2 cases per class (n_pos={n_pos}, n_neg={n_neg})",
        )
    se = math.sqrt(max(var, 0.0))
    if ci_method == "normal":
        return result(se, max(0.0, auc - z_crit * se), min(1.0, auc + z_crit * se))
    if auc <= 0.0 or auc >= 1.0:
        return result(
            se, math.nan, math.nan, "logit interval is undefined for an AUC of exactly 0 or 1"
        )
    centre = float(special.logit(auc))
    half = z_crit * se / (auc * (1.0 - auc))
    return result(se, float(special.expit(centre - half)), float(special.expit(centre + half)))


def delong_test(
    y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike, *, level: float = 0.95
) -> DeLongTest:
    """DeLong's two-sided test for two correlated (paired) ROC AUCs.

    Both score vectors must be for the same cases, in the same order (e.g. the Rad and
    DLR model on one test set).

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive). Both classes must be present.
    score_a, score_b : array_like, shape (N,)
        Scores of the two models on the same cases.
    level : float
        Confidence level of the interval for ``auc_a - auc_b``, default 0.95.

    Returns
    -------
    DeLongTest
        ``z = (auc_a - auc_b) / se`` with ``se**2 = var_a + var_b - 2 cov_ab`` from
        DeLong's covariance matrix; ``p_value = 2 * (1 - Phi(|z|))``.

    Raises
    ------
    ValueError
        If the input is malformed or ``y_true`` holds a single class.

    Notes
    -----
    Special cases, documented in ``note``:

    - The two scores rank the cases identically (the same scores, or one a monotone
      transform of the other): ``diff = 0`` and ``se = 0``; following pROC's
      ``roc.test`` we report ``z = 0`` and ``p_value = 1``.
    - ``se = 0`` but ``diff != 0`` (only with perfectly separating scores): the normal
      approximation says nothing, so ``z`` and ``p_value`` are ``nan`` (pROC would print
      an infinite z and p = 0).
    - A class with a single case: the variance is undefined, everything but the AUCs
      is ``nan``.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
       correlated receiver operating characteristic curves: a nonparametric approach.
       Biometrics. 1988;44(3):837-845.
    .. [2] Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas
       under correlated receiver operating characteristic curves. IEEE Signal Process
       Lett. 2014;21(11):1389-1393.
    .. [3] Robin X, Turck N, Hainard A, et al. pROC: an open-source package for R and S+
       to analyze and compare ROC curves. BMC Bioinformatics. 2011;12:77.
    """
    z_crit = _z_crit(level)
    y = _labels(y_true)
    a = _scores(score_a, y.size, "score_a")
    b = _scores(score_b, y.size, "score_b")
    _require_both_classes(y, "delong_test")
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    auc_a, auc_b = float(aucs[0]), float(aucs[1])
    diff = auc_a - auc_b
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    nan = math.nan
    if not math.isfinite(var):
        note = "DeLong variance needs at least 2 cases per class"
        return DeLongTest(auc_a, auc_b, diff, nan, nan, nan, nan, nan, level, note)
    # Rounding can leave a tiny negative variance for (nearly) identical rankings.
    se = math.sqrt(max(var, 0.0))
    if se < _ZERO_TOL:
        if abs(diff) < _ZERO_TOL:
            note = "identical rankings: diff 0 and se 0, reported as z = 0, p = 1 (as pROC)"
            return DeLongTest(auc_a, auc_b, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, level, note)
        note = "zero variance with a nonzero difference: the normal test is undefined"
        return DeLongTest(auc_a, auc_b, diff, 0.0, nan, nan, diff, diff, level, note)
    z = diff / se
    p_value = float(2.0 * special.ndtr(-abs(z)))
    return DeLongTest(
        auc_a, auc_b, diff, se, z, p_value, diff - z_crit * se, diff + z_crit * se, level
    )
