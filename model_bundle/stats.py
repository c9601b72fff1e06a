"""Evaluation statistics: discrimination, calibration, threshold metrics and clinical utility.

Pure functions: label and score arrays in, numbers, frozen dataclasses or DataFrames out.
Nothing here fits the model or picks data; the caller decides which split each function
sees (in particular :func:`youden_threshold` must be given training data only).

Conventions shared by every function
------------------------------------
- Labels are 1 (ONFH, the positive class) and 0 (healthy); ``bool`` is accepted.
- Higher scores mean "more likely positive". Scores are never flipped: pROC's default
  ``direction="auto"`` silently turns a worse-than-chance model into a better-than-chance
  one, which would hide a broken model; here an AUC below 0.5 is reported as it is.
- A case is called positive when ``score >= threshold`` (dcurves uses the same rule).
- Confidence levels default to 95 %, two-sided.
- Where a quantity is undefined (a zero denominator, too few cases for a variance) the
  value is ``nan`` and a ``reason``/``note`` string says why; only malformed input (wrong
  shapes, non-binary labels, non-finite scores, a single class where two are needed)
  raises :class:`ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Below this a standard error or an AUC difference is treated as exactly zero: DeLong
#: components are averages of 0, 0.5 and 1, so genuine values are far above rounding noise.
_ZERO_TOL = 1e-12

#: Probabilities are clipped to [eps, 1 - eps] before taking logits, so that a saturated
#: classifier output of exactly 0 or 1 gives a large finite logit (about ±27.6), not inf.
_LOGIT_EPS = 1e-12


# --------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------


def _labels(y_true: ArrayLike) -> IntArray:
    """Return ``y_true`` as a 1-D int64 array of 0/1, or raise a ValueError saying why."""
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("y_true is empty")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"y_true must be 0/1 or bool, got dtype {arr.dtype}")
    bad = np.setdiff1d(np.unique(arr), [0, 1])
    if bad.size:
        raise ValueError(f"y_true must contain only 0 and 1; found {bad[:5].tolist()}")
    return arr.astype(np.int64)


def _scores(x: ArrayLike, n: int, name: str, *, probability: bool = False) -> FloatArray:
    """Return ``x`` as a finite 1-D float64 array of length ``n``; optionally in [0, 1]."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but y_true has {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if probability and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return arr


def _require_both_classes(y: IntArray, what: str) -> tuple[int, int]:
    """Return (n_pos, n_neg), raising a ValueError naming ``what`` if a class is absent."""
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{what} needs both classes, but y_true has {n_pos} positive and {n_neg} negative cases"
        )
    return n_pos, n_neg


def _z_crit(level: float) -> float:
    """Two-sided standard normal critical value for a confidence ``level`` in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(special.ndtri(1.0 - (1.0 - level) / 2.0))


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


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HLResult:
    """Hosmer-Lemeshow goodness-of-fit test.

    Attributes
    ----------
    statistic
        The C-hat statistic, ``sum_g (O1 - E1)^2 / E1 + (O0 - E0)^2 / E0``.
    dof
        Degrees of freedom: non-empty groups - 2 (or non-empty groups, if ``external``).
    p_value
        Upper tail of chi-square(``dof``).
    table
        One row per non-empty group: ``group, n, prob_min, prob_max, mean_prob,
        observed, expected, observed_neg, expected_neg, contribution``.
    groups
        Number of non-empty groups actually used.
    note
        Why fewer groups than requested were used, or why the statistic is ``nan``.
    """

    statistic: float
    dof: int
    p_value: float
    table: pd.DataFrame
    groups: int
    note: str | None = None


def _bin_ids(prob: FloatArray, edges: FloatArray) -> IntArray:
    """Bin index of each probability for bins ``(e[k], e[k+1]]``, the first one closed.

    ``searchsorted(..., side="left")`` on the inner edges puts a value equal to an edge in
    the lower bin: R's ``cut(..., include.lowest=TRUE)`` and sklearn's
    ``calibration_curve`` both bin this way.
    """
    return np.searchsorted(edges[1:-1], prob, side="left").astype(np.int64)


def hosmer_lemeshow(
    y_true: ArrayLike, prob: ArrayLike, groups: int = 10, *, external: bool = False
) -> HLResult:
    """Hosmer-Lemeshow test over groups of equal size by predicted risk ("deciles of risk").

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive).
    prob : array_like, shape (N,)
        Predicted probabilities in [0, 1].
    groups : int
        Number of risk groups requested, at least 3 (default 10: deciles).
    external : bool
        ``False`` (default): ``dof = groups - 2``, the reference distribution for the data
        the model was fitted on [1]_. ``True``: ``dof = groups``, the usual choice when
        the model is assessed on independent data, from which no parameter was
        estimated [2]_.

    Returns
    -------
    HLResult

    Raises
    ------
    ValueError
        If the input is malformed or ``groups < 3``.

    Notes
    -----
    Grouping rule (that of R's ``ResourceSelection::hoslem.test``): the cut points are
    the ``k / groups`` quantiles of ``prob`` (linear interpolation, R's type 7 = numpy's
    default), and group ``k`` holds the probabilities in ``(q_{k-1}, q_k]``, the first
    group also holding the minimum. Tied probabilities therefore always share a group, so
    group sizes can differ. When ties make cut points coincide, the empty groups are
    dropped and ``dof`` uses the number of non-empty groups (as DescTools'
    ``HosmerLemeshowTest``; ``hoslem.test`` would stop with an error); ``note`` says so.
    If a group's expected count of events or non-events is 0 (all its probabilities are
    exactly 0 or 1) the statistic is undefined and returned as ``nan``.

    The test has low power in small samples and flags trivial miscalibration in large
    ones: report it with the calibration curve and slope, not instead of them.

    References
    ----------
    .. [1] Hosmer DW, Lemeshow S. Goodness of fit tests for the multiple logistic
       regression model. Commun Stat Theory Methods. 1980;9(10):1043-1069.
    .. [2] Hosmer DW, Lemeshow S, Sturdivant RX. Applied Logistic Regression. 3rd ed.
       Hoboken (NJ): Wiley; 2013. Chapter 5.
    """
    if groups < 3:
        raise ValueError(f"groups must be at least 3 (dof = groups - 2), got {groups}")
    y = _labels(y_true)
    p = _scores(prob, y.size, "prob", probability=True)
    edges = np.quantile(p, np.linspace(0.0, 1.0, groups + 1))
    ids = _bin_ids(p, edges)
    used = np.unique(ids)
    rows = []
    for rank, g in enumerate(used, start=1):
        in_g = ids == g
        n_g = int(in_g.sum())
        obs = float(y[in_g].sum())
        exp = float(p[in_g].sum())
        rows.append(
            {
                "group": rank,
                "n": n_g,
                "prob_min": float(p[in_g].min()),
                "prob_max": float(p[in_g].max()),
                "mean_prob": exp / n_g,
                "observed": obs,
                "expected": exp,
                "observed_neg": n_g - obs,
                "expected_neg": n_g - exp,
            }
        )
    table = pd.DataFrame(rows)
    k = len(used)
    dof = k if external else k - 2
    notes = []
    if k < groups:
        notes.append(
            f"tied probabilities left only {k} non-empty groups of {groups} requested; dof = {dof}"
        )
    expected = table["expected"].to_numpy(dtype=np.float64)
    expected_neg = table["expected_neg"].to_numpy(dtype=np.float64)
    if np.any(expected <= 0.0) or np.any(expected_neg <= 0.0):
        notes.append("a group has zero expected events or non-events (probabilities of 0/1)")
        table["contribution"] = np.nan
        return HLResult(math.nan, dof, math.nan, table, k, "; ".join(notes))
    resid = table["observed"].to_numpy(dtype=np.float64) - expected
    # (O0 - E0) = -(O1 - E1), so both cells of a group contribute resid**2 over their E.
    contribution = resid**2 / expected + resid**2 / expected_neg
    table["contribution"] = contribution
    statistic = float(contribution.sum())
    if dof < 1:
        notes.append("fewer than 3 non-empty groups: no degrees of freedom left")
        return HLResult(statistic, dof, math.nan, table, k, "; ".join(notes))
    p_value = float(stats.chi2.sf(statistic, dof))
    return HLResult(statistic, dof, p_value, table, k, "; ".join(notes) or None)


def calibration_curve(
    y_true: ArrayLike,
    prob: ArrayLike,
    bins: int = 10,
    *,
    strategy: Literal["uniform", "quantile"] = "uniform",
    level: float = 0.95,
) -> pd.DataFrame:
    """Observed event rate against mean predicted probability per bin, with Wilson CIs.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive).
    prob : array_like, shape (N,)
        Predicted probabilities in [0, 1].
    bins : int
        Number of bins (default 10).
    strategy : {"uniform", "quantile"}
        Equal-width bins on [0, 1], or bins at the quantiles of ``prob``.
    level : float
        Confidence level of the Wilson interval of each observed rate.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``bin`` (0-based index), ``bin_low``, ``bin_high``,
        ``n``, ``mean_predicted``, ``observed`` (event fraction), ``ci_low``, ``ci_high``.

    Notes
    -----
    Bins are ``(e_k, e_{k+1}]`` with the first closed, and empty bins are dropped, exactly
    as sklearn's ``sklearn.calibration.calibration_curve``, whose two outputs equal the
    ``observed`` and ``mean_predicted`` columns.

    References
    ----------
    .. [1] Van Calster B, Nieboer D, Vergouwe Y, et al. A calibration hierarchy for risk
       models was defined: from utopia to empirical data. J Clin Epidemiol.
       2016;74:167-176.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    _z_crit(level)
    y = _labels(y_true)
    p = _scores(prob, y.size, "prob", probability=True)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    else:
        edges = np.quantile(p, np.linspace(0.0, 1.0, bins + 1))
    ids = _bin_ids(p, edges)
    rows = []
    for b in np.unique(ids):
        in_b = ids == b
        n_b = int(in_b.sum())
        events = int(y[in_b].sum())
        lo, hi = wilson_interval(events, n_b, level)
        rows.append(
            {
                "bin": int(b),
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "n": n_b,
                "mean_predicted": float(p[in_b].mean()),
                "observed": events / n_b,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True, slots=True)
class CalibrationFit:
    """Logistic recalibration of predicted probabilities (Cox 1958).

    Attributes
    ----------
    intercept, intercept_ci_low, intercept_ci_high
        Calibration intercept ("calibration-in-the-large"): ``a`` in
        ``logit P(y=1) = a + logit(p)``, the slope fixed at 1. Ideal 0; > 0 means the
        model under-predicts risk on average.
    slope, slope_ci_low, slope_ci_high
        Calibration slope: ``b`` in ``logit P(y=1) = a' + b logit(p)``. Ideal 1; < 1 means
        predictions too extreme (typical of overfitting), > 1 too moderate.
    recalibration_intercept
        ``a'`` of that two-parameter model (needed to recalibrate, not a summary).
    level
        Confidence level of the Wald intervals.
    n
        Number of cases.
    note
        Why a value is ``nan`` (separation, non-convergence), else ``None``.
    """

    intercept: float
    intercept_ci_low: float
    intercept_ci_high: float
    slope: float
    slope_ci_low: float
    slope_ci_high: float
    recalibration_intercept: float
    level: float
    n: int
    note: str | None = None


def calibration_slope_intercept(
    y_true: ArrayLike, prob: ArrayLike, *, level: float = 0.95
) -> CalibrationFit:
    """Calibration intercept and slope by unpenalised logistic recalibration.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive). Both classes must be present.
    prob : array_like, shape (N,)
        Predicted probabilities in [0, 1]; clipped to ``[1e-12, 1 - 1e-12]`` before the
        logit so that saturated outputs stay finite.
    level : float
        Confidence level of the Wald intervals (default 0.95).

    Returns
    -------
    CalibrationFit

    Raises
    ------
    ValueError
        If the input is malformed or ``y_true`` holds a single class.

    Notes
    -----
    Two maximum-likelihood binomial GLMs (statsmodels, no penalty): the intercept with
    ``logit(p)`` as an offset, and intercept + slope on ``logit(p)``. If the logits of the
    two classes do not overlap (quasi-)complete separation makes the slope infinite: it is
    returned as ``nan`` with a note (the intercept is still estimable).

    References
    ----------
    .. [1] Cox DR. Two further applications of a model for binary regression.
       Biometrika. 1958;45(3-4):562-565.
    .. [2] Van Calster B, Nieboer D, Vergouwe Y, et al. A calibration hierarchy for risk
       models was defined: from utopia to empirical data. J Clin Epidemiol.
       2016;74:167-176.
    .. [3] Steyerberg EW. Clinical Prediction Models. 2nd ed. Cham: Springer; 2019.
    """
    # statsmodels takes ~2 s to import; only evaluation needs it, so not the serving path.
    import statsmodels.api as sm

    alpha = 1.0 - level
    _z_crit(level)
    y = _labels(y_true)
    p = _scores(prob, y.size, "prob", probability=True)
    _require_both_classes(y, "calibration_slope_intercept")
    lp = special.logit(np.clip(p, _LOGIT_EPS, 1.0 - _LOGIT_EPS))
    yf = y.astype(np.float64)
    notes: list[str] = []

    # Logits of clipped 0/1 probabilities overflow exp() inside statsmodels' link; the
    # result (a fitted probability of 0 or 1) is right, so the warning is only noise.
    with np.errstate(over="ignore"):
        fit_int = sm.GLM(yf, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit()
    intercept = float(fit_int.params[0])
    int_lo, int_hi = (float(v) for v in fit_int.conf_int(alpha=alpha)[0])
    if not fit_int.converged:
        notes.append("calibration-in-the-large fit did not converge")

    nan = math.nan
    neg, pos = lp[y == 0], lp[y == 1]
    if neg.max() <= pos.min() or pos.max() <= neg.min():
        notes.append("(quasi-)complete separation or constant predictions: slope not estimable")
        slope = slope_lo = slope_hi = a_prime = nan
    else:
        design = np.column_stack([np.ones(y.size), lp])
        with np.errstate(over="ignore"):
            fit_slope = sm.GLM(yf, design, family=sm.families.Binomial()).fit()
        a_prime, slope = (float(v) for v in fit_slope.params)
        slope_lo, slope_hi = (float(v) for v in fit_slope.conf_int(alpha=alpha)[1])
        if not fit_slope.converged:
            notes.append("calibration slope fit did not converge")
    return CalibrationFit(
        intercept,
        int_lo,
        int_hi,
        slope,
        slope_lo,
        slope_hi,
        a_prime,
        level,
        int(y.size),
        "; ".join(notes) or None,
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


# --------------------------------------------------------------------------------------
# Decision curve analysis
# --------------------------------------------------------------------------------------

TREAT_ALL = "treat_all"
TREAT_NONE = "treat_none"


def decision_curve(
    y_true: ArrayLike,
    prob_by_model: Mapping[str, ArrayLike],
    thresholds: ArrayLike | None = None,
) -> pd.DataFrame:
    """Net benefit of each model and of treat-all / treat-none, by threshold probability.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive). Both classes must be present.
    prob_by_model : Mapping[str, array_like]
        Model name -> predicted probabilities on the same N cases. Names must differ from
        ``"treat_all"`` and ``"treat_none"``.
    thresholds : array_like, optional
        Threshold probabilities in [0, 1); default 0.01, 0.02, ..., 0.99.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (model, threshold), models in the given order then
        ``treat_all`` and ``treat_none``. Columns: ``model, threshold, net_benefit,
        tp_rate, fp_rate, test_pos_rate, net_intervention_avoided, prevalence, n``.
        ``tp_rate`` and ``fp_rate`` are TP/n and FP/n, so ``net_benefit = tp_rate -
        fp_rate * pt / (1 - pt)``; ``net_intervention_avoided`` is per case and ``nan``
        at ``pt = 0``.

    Raises
    ------
    ValueError
        If the input is malformed, a class is missing, a model name is reserved, or a
        threshold is outside [0, 1).

    Notes
    -----
    Computed by the ``dcurves`` package (the Python port of MSKCC's ``dca``) on a
    DataFrame built here, with internal column names so that user model names can never
    clash with its reserved ``all``/``none`` columns. dcurves calls a case positive when
    ``prob >= pt``, and nudges probabilities of exactly 0 below every threshold and of
    exactly 1 above, so a prediction of 0 is never treated, even at ``pt = 0``.

    References
    ----------
    .. [1] Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating
       prediction models. Med Decis Making. 2006;26(6):565-574.
    .. [2] Vickers AJ, van Calster B, Steyerberg EW. A simple, step-by-step guide to
       interpreting decision curve analysis. Diagn Progn Res. 2019;3:18.
    """
    # dcurves pulls in statsmodels and lifelines (~4 s): import only when asked for.
    import dcurves

    y = _labels(y_true)
    _require_both_classes(y, "decision_curve")
    if not prob_by_model:
        raise ValueError("prob_by_model is empty")
    names = list(prob_by_model)
    reserved = {TREAT_ALL, TREAT_NONE} & set(names)
    if reserved:
        raise ValueError(f"model names {sorted(reserved)} are reserved for the reference lines")
    if thresholds is None:
        pts = np.round(np.arange(1, 100) / 100.0, 2)
    else:
        pts = np.asarray(thresholds, dtype=np.float64)
        if pts.ndim != 1 or pts.size == 0:
            raise ValueError("thresholds must be a non-empty 1-D array")
        if not np.all(np.isfinite(pts)) or pts.min() < 0.0 or pts.max() >= 1.0:
            raise ValueError("thresholds must lie in [0, 1)")

    columns = {f"m{i}": name for i, name in enumerate(names)}
    data = pd.DataFrame(
        {
            key: _scores(prob_by_model[name], y.size, f"prob_by_model[{name!r}]", probability=True)
            for key, name in columns.items()
        }
    )
    # dcurves selects the positive rows with isin([True]): give it a real bool column.
    data["outcome"] = y.astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = dcurves.dca(
            data=data, outcome="outcome", modelnames=list(columns), thresholds=list(pts)
        )
    labels = {**columns, "all": TREAT_ALL, "none": TREAT_NONE}
    out = pd.DataFrame(
        {
            "model": raw["model"].map(labels),
            "threshold": raw["threshold"].astype(np.float64),
            "net_benefit": raw["net_benefit"].astype(np.float64),
            "tp_rate": raw["tp_rate"].astype(np.float64),
            "fp_rate": raw["fp_rate"].astype(np.float64),
            "test_pos_rate": raw["test_pos_rate"].astype(np.float64),
            "net_intervention_avoided": raw["net_intervention_avoided"].astype(np.float64),
            "prevalence": raw["prevalence"].astype(np.float64),
            "n": raw["n"].astype(np.int64),
        }
    )
    # Interventions avoided divide by pt / (1 - pt), which is 0 at pt = 0: undefined there.
    out.loc[out["threshold"] == 0.0, "net_intervention_avoided"] = np.nan
    order = {name: i for i, name in enumerate([*names, TREAT_ALL, TREAT_NONE])}
    out = out.sort_values(
        ["model", "threshold"], key=lambda col: col.map(order) if col.name == "model" else col
    )
    return out.reset_index(drop=True)


__all__ = [
    "TREAT_ALL",
    "TREAT_NONE",
    "AUCResult",
    "CalibrationFit",
    "ConfusionCounts",
    "DeLongTest",
    "HLResult",
    "MetricEstimate",
    "binary_metrics",
    "calibration_curve",
    "calibration_slope_intercept",
    "confusion_counts",
    "decision_curve",
    "delong_covariance",
    "delong_test",
    "hosmer_lemeshow",
    "roc_auc_delong",
    "wilson_interval",
    "youden_threshold",
]
