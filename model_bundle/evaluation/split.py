"""The numbers of a training or evaluation report, as plain JSON-able data.

Given labels and each model's probabilities on one set of hips, and each model's fixed
threshold, :func:`evaluate_split` computes what the paper reports: AUC with its DeLong
95 % CI, accuracy, sensitivity, specificity, PPV, NPV, precision, recall and F1 with
CIs at the threshold, Hosmer-Lemeshow, the calibration curve and slope, DeLong tests
between the models, and the decision curves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.evaluation.calibration import (
    calibration_curve,
    calibration_slope_intercept,
    hosmer_lemeshow,
)
from model_bundle.evaluation.decision_curves import decision_curve
from model_bundle.evaluation.discrimination import delong_test, roc_auc_delong
from model_bundle.evaluation.threshold_metrics import binary_metrics

F64 = NDArray[np.float64]


def _num(value: float) -> float | None:
    # JSON has no NaN: an undefined number is null, with its reason next to it.
    return None if value is None or not math.isfinite(float(value)) else float(value)


def auc_entry(y: NDArray[np.int64], prob: F64) -> dict[str, Any] | None:
    """AUC with its 95 % DeLong CI as JSON data, ``None`` without hips of both classes."""
    if not 0 < int(np.sum(y)) < len(y):
        return None
    auc = roc_auc_delong(y, prob)
    return {
        "estimate": _num(auc.auc),
        "ci95": [_num(auc.ci_low), _num(auc.ci_high)],
        "se": _num(auc.se),
    }


def evaluate_split(
    y: NDArray[np.int64],
    probs: Mapping[Any, F64],  # keyed by model key (str or a Literal of them)
    thresholds: Mapping[Any, float],
    *,
    external: bool = False,
) -> dict[str, Any]:
    """Metrics of every model on one set of hips.

    Parameters
    ----------
    y
        0/1 labels.
    probs
        Probability of ONFH per model key (``rad``, ``dl``, ``dlr``).
    thresholds
        Each model's threshold, fixed on training data.
    external
        Hosmer-Lemeshow with ``groups`` degrees of freedom (independent test data)
        instead of ``groups - 2``.
    """
    out: dict[str, Any] = {
        "n": len(y),
        "n_positive": int(np.sum(y)),
        "models": {},
        "delong": [],
    }
    two_classes = 0 < int(np.sum(y)) < len(y)
    for key, prob in probs.items():
        entry: dict[str, Any] = {"threshold": float(thresholds[key])}
        if two_classes:
            entry["auc"] = auc_entry(y, prob)
            hl = hosmer_lemeshow(y, prob, external=external)
            entry["hosmer_lemeshow"] = {
                "statistic": _num(hl.statistic),
                "dof": int(hl.dof),
                "p_value": _num(hl.p_value),
                "note": hl.note,
            }
            fit = calibration_slope_intercept(y, prob)
            entry["calibration"] = {
                "slope": _num(fit.slope),
                "intercept": _num(fit.intercept),
                "note": fit.note,
                "curve": [
                    {k: _num(v) if isinstance(v, float) else v for k, v in row.items()}
                    for row in calibration_curve(y, prob, bins=5, strategy="quantile").to_dict(
                        "records"
                    )
                ],
            }
        metrics = binary_metrics(y, prob, thresholds[key])
        entry["metrics"] = {
            name: {
                "estimate": _num(m.estimate),
                "ci95": [_num(m.ci_low), _num(m.ci_high)],
                "numerator": m.numerator,
                "denominator": m.denominator,
                "reason": m.reason,
            }
            for name, m in metrics.items()
        }
        out["models"][key] = entry
    if two_classes:
        for a, b in itertools.combinations(probs, 2):
            t = delong_test(y, probs[a], probs[b])
            out["delong"].append(
                {
                    "a": a,
                    "b": b,
                    "auc_a": _num(t.auc_a),
                    "auc_b": _num(t.auc_b),
                    "diff": _num(t.diff),
                    "z": _num(t.z),
                    "p_value": _num(t.p_value),
                    "note": t.note,
                }
            )
        dca = decision_curve(y, dict(probs), thresholds=np.round(np.arange(0.01, 1.0, 0.01), 2))
        out["decision_curve"] = [
            {
                "model": r["model"],
                "threshold": _num(r["threshold"]),
                "net_benefit": _num(r["net_benefit"]),
            }
            for r in dca.to_dict("records")
        ]
    return out
