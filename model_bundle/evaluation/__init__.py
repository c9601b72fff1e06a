"""How good a model is: the statistics of the source paper and the metrics of one set of hips.

Lives here: discrimination (AUC with its DeLong CI, the DeLong test), calibration
(Hosmer-Lemeshow, the calibration curve, slope and intercept), metrics at a fixed
threshold (with Wilson and bootstrap CIs, the Youden threshold), decision curves, and
:func:`evaluate_split`, which gathers them for one split as plain JSON-able data.

Pure functions: label and score arrays in, numbers, frozen dataclasses or DataFrames
out. Nothing here fits the model or picks data; the caller decides which split each
function sees (in particular :func:`youden_threshold` must be given training data only).

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

Also here: a leave-one-site-out summary as a bundle carries it
(``site_validation``: :class:`SiteValidation`, :func:`read_site_validation`).

Also here: external evaluation (``external``: scoring a labelled cohort at a bundle's
fixed thresholds, :func:`score_cohort`, and its metrics, :func:`cohort_metrics`), what
``onfh-dlr evaluate`` runs.

Who may import it: training, reporting, the CLI and tests. The statistics import no
other part of ``model_bundle``; ``external`` imports serving, features, imaging and
training, so its names are imported on first use (PEP 562): training imports the
statistics from here without a cycle, and without loading torch. Import the public
names from this package, not from its modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from model_bundle.evaluation.calibration import (
    CalibrationFit,
    HLResult,
    calibration_curve,
    calibration_slope_intercept,
    hosmer_lemeshow,
)
from model_bundle.evaluation.decision_curves import TREAT_ALL, TREAT_NONE, decision_curve
from model_bundle.evaluation.discrimination import (
    AUCResult,
    DeLongTest,
    delong_covariance,
    delong_test,
    roc_auc_delong,
)
from model_bundle.evaluation.site_validation import SiteValidation, read_site_validation
from model_bundle.evaluation.split import auc_entry, evaluate_split
from model_bundle.evaluation.threshold_metrics import (
    ConfusionCounts,
    MetricEstimate,
    binary_metrics,
    confusion_counts,
    wilson_interval,
    youden_threshold,
)

if TYPE_CHECKING:
    from model_bundle.evaluation.external import (
        PredictionRow,
        cohort_metrics,
        predict_job,
        score_cohort,
    )

# Names of ``external``, loaded on first access.
_EXTERNAL = frozenset({"PredictionRow", "cohort_metrics", "predict_job", "score_cohort"})

__all__ = [
    "TREAT_ALL",
    "TREAT_NONE",
    "AUCResult",
    "CalibrationFit",
    "ConfusionCounts",
    "DeLongTest",
    "HLResult",
    "MetricEstimate",
    "PredictionRow",
    "SiteValidation",
    "auc_entry",
    "binary_metrics",
    "calibration_curve",
    "calibration_slope_intercept",
    "cohort_metrics",
    "confusion_counts",
    "decision_curve",
    "delong_covariance",
    "delong_test",
    "evaluate_split",
    "hosmer_lemeshow",
    "predict_job",
    "read_site_validation",
    "roc_auc_delong",
    "score_cohort",
    "wilson_interval",
    "youden_threshold",
]


def __getattr__(name: str) -> Any:
    if name not in _EXTERNAL:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("model_bundle.evaluation.external"), name)
    globals()[name] = value  # later look-ups skip this function
    return value
