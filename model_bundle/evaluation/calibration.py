"""Calibration: the Hosmer-Lemeshow test, the calibration curve, and the calibration slope
and intercept (logistic recalibration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from model_bundle.evaluation.inputs import (
    _LOGIT_EPS,
    _labels,
    _require_both_classes,
    _scores,
    _z_crit,
)
from model_bundle.evaluation.threshold_metrics import wilson_interval

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


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
