"""Fitting a recalibration on a labelled local cohort: maximum likelihood, then a threshold.

The fit is the evaluation statistics' own logistic recalibration
(:func:`model_bundle.evaluation.calibration_slope_intercept`, unpenalised binomial GLMs
in statsmodels) on the bundle's out-of-the-box probabilities; the threshold is Youden's
(:func:`model_bundle.evaluation.youden_threshold`) or the highest one that reaches a
target sensitivity, on the recalibrated probabilities of the same cohort.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from model_bundle.calibration.recalibration import ModelRecalibration, Recalibration, ThresholdRule
from model_bundle.evaluation import calibration_slope_intercept, youden_threshold
from onfh_dlr.errors import PermanentError

#: The smallest local cohort a bundle may be recalibrated on (patients, not hips).
MIN_PATIENTS = 10


class CalibrationError(PermanentError):
    """The local cohort cannot recalibrate the bundle (too small, one class, not monotone)."""


def fit_model_recalibration(y: NDArray[np.int64], p: NDArray[np.float64]) -> ModelRecalibration:
    """Logistic recalibration of one model's probabilities ``p`` on labels ``y``.

    Raises
    ------
    CalibrationError
        The fitted slope is not positive: the model ranks this site's hips the wrong way
        round, and no monotone recalibration can repair that.
    """
    fit = calibration_slope_intercept(y, p)
    if math.isnan(fit.slope):
        # Separated classes: the slope's likelihood has no maximum, the intercept's has.
        if not math.isfinite(fit.intercept):
            raise CalibrationError(f"recalibration intercept not estimable ({fit.note})")
        return ModelRecalibration(fit.intercept, 1.0, "intercept")
    if not fit.slope > 0:
        raise CalibrationError(
            f"fitted calibration slope {fit.slope:.3f} is not positive: the model ranks this "
            "cohort's hips the wrong way round; recalibration would not be monotone"
        )
    return ModelRecalibration(fit.recalibration_intercept, fit.slope, "intercept+slope")


def sensitivity_threshold(y: NDArray[np.int64], p: NDArray[np.float64], target: float) -> float:
    """The highest threshold whose sensitivity on ``(y, p)`` is at least ``target``.

    Placed midway between the lowest positive kept and the next lower score, as
    :func:`youden_threshold` places its cuts.
    """
    if not 0.0 < target <= 1.0:
        raise CalibrationError(f"target sensitivity must be in (0, 1], not {target}")
    positives = np.sort(p[y == 1])[::-1]
    needed = math.ceil(target * positives.size - 1e-9)
    lowest_kept = float(positives[needed - 1])
    below = p[p < lowest_kept]
    return lowest_kept if below.size == 0 else (lowest_kept + float(below.max())) / 2.0


def sensitivity_rule_note(positives: int, target: float) -> str | None:
    """What ``--sensitivity target`` means on a cohort with ``positives`` ONFH hips, when
    that is stricter than it reads: below 1 / (1 - target) of them (ten for 0.9) the
    rule can keep no fewer than all, and the threshold drops below the faintest one."""
    if positives <= 0 or target >= 1.0 or math.ceil(target * positives - 1e-9) < positives:
        return None
    return (
        f"the cohort has {positives} ONFH hips: a sensitivity of {target:g} keeps all of "
        f"them, so the threshold lies below the lowest-scored one; with at least "
        f"{math.ceil(1 / (1 - target) - 1e-9)} ONFH hips the rule can leave one out"
    )


def fit_recalibration(
    y: NDArray[np.int64],
    probabilities: Mapping[str, NDArray[np.float64]],
    *,
    patients: int,
    rule: ThresholdRule = ThresholdRule.YOUDEN,
    target_sensitivity: float | None = None,
) -> Recalibration:
    """Recalibrate every model on one labelled cohort and choose each model's threshold.

    Parameters
    ----------
    y
        Labels of the scored hips (1: ONFH).
    probabilities
        Per model key, the bundle's out-of-the-box probabilities of the same hips.
    patients
        How many patients those hips come from (the minimum is :data:`MIN_PATIENTS`).
    rule, target_sensitivity
        Youden's threshold, or the highest reaching ``target_sensitivity``.

    Raises
    ------
    CalibrationError
        Fewer than :data:`MIN_PATIENTS` patients, a single class, a non-positive slope.
    """
    if patients < MIN_PATIENTS:
        raise CalibrationError(
            f"the calibration cohort has {patients} scored patients; at least {MIN_PATIENTS} "
            "are needed"
        )
    n_pos = int(np.sum(y == 1))
    if n_pos == 0 or n_pos == y.size:
        raise CalibrationError(
            "the calibration cohort has a single class "
            f"({n_pos} ONFH of {y.size} hips); it needs both ONFH and healthy hips"
        )
    if rule is ThresholdRule.SENSITIVITY and target_sensitivity is None:
        raise CalibrationError("the sensitivity rule needs a target sensitivity")
    models: dict[str, ModelRecalibration] = {}
    thresholds: dict[str, float] = {}
    for key, p in probabilities.items():
        model = fit_model_recalibration(y, p)
        calibrated = np.array([model.apply(float(v)) for v in p], dtype=np.float64)
        models[key] = model
        if rule is ThresholdRule.YOUDEN:
            thresholds[key] = youden_threshold(y, calibrated)
        else:
            assert target_sensitivity is not None
            thresholds[key] = sensitivity_threshold(y, calibrated, target_sensitivity)
    return Recalibration(
        models,
        thresholds,
        rule,
        target_sensitivity if rule is ThresholdRule.SENSITIVITY else None,
    )
