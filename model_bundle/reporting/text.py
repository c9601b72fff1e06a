# ruff: noqa: RUF001, RUF002
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""Shared wording and number formatting of the model card and the reports: display names,
the synthetic-data warning, numbers, confidence intervals and p-values as text, and
safe look-ups into the metrics dicts of :func:`~model_bundle.evaluation.evaluate_split`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from model_bundle.training import MODEL_KEYS, ModelResult, TrainingResult

#: The warning every document of a model trained on synthetic data carries.
SYNTHETIC_WARNING: Final = "synthetic demonstration — not for clinical use"
#: ``"head"``: the whole femoral head of every hip (deployable); ``"lesion"``: the source
#: paper's protocol (necrotic area for ONFH hips), for reproduction only.
ROI_PROTOCOLS: Final = ("head", "lesion")
#: Display names of the three models.
NAMES: Final[Mapping[str, str]] = {"rad": "Rad", "dl": "DL", "dlr": "DLR"}
#: The source paper's test AUCs, for context (45 patients, its own ROI protocol).
_PAPER_AUC: Final[Mapping[str, str]] = {"rad": "0.944", "dl": "0.930", "dlr": "0.968"}
#: Threshold metrics in table order, with their display names.
_METRICS: Final = (
    ("accuracy", "Accuracy"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("f1", "F1"),
)
_COLOURS: Final[Mapping[str, str]] = {"rad": "#1f77b4", "dl": "#2ca02c", "dlr": "#d62728"}
_CLASSIFIER_COLOURS: Final = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
)
_DPI: Final = 100
#: At most this many distinct failure reasons are listed; the rest are summed up.
_MAX_REASONS: Final = 25


# --------------------------------------------------------------------------- formatting


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (None, NaN, inf, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _num(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or ``"n/a"``."""
    number = _finite(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def _ci(estimate: object, ci: object, digits: int = 3) -> str:
    """``"0.912 (0.850–0.975)"``; ``"n/a"`` without an estimate."""
    est = _num(estimate, digits)
    if est == "n/a":
        return est
    bounds = list(ci) if isinstance(ci, list | tuple) and len(ci) == 2 else [None, None]
    low, high = _num(bounds[0], digits), _num(bounds[1], digits)
    if "n/a" in (low, high):
        return f"{est} (CI n/a)"
    return f"{est} ({low}–{high})"


def _p(value: object) -> str:
    """A p-value: three decimals, ``"<0.001"`` below that, or ``"n/a"``."""
    number = _finite(value)
    if number is None:
        return "n/a"
    return "<0.001" if number < 0.001 else f"{number:.3f}"


def _signed(value: float, digits: int = 4) -> str:
    """``"+ 1.2340"`` / ``"- 1.2340"``: a term of a written-out formula."""
    return f"{'-' if value < 0 else '+'} {abs(value):.{digits}f}"


def _sig(value: float, scale: float = 0.0) -> str:
    """Six significant digits; rounding noise (below 1e-12 of ``scale``) shown as 0."""
    return "0" if abs(value) <= 1e-12 * max(abs(scale), 1e-300) else f"{value:.6g}"


def _get(data: object, *path: str) -> Any:
    """``data[path[0]][path[1]]...``, or ``None`` where a key or a mapping is missing."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _entry(metrics: Mapping[str, Any], split: str, key: str) -> Mapping[str, Any]:
    """One model's entry of one split of the metrics (empty when absent)."""
    entry = _get(metrics, split, "models", key)
    return entry if isinstance(entry, Mapping) else {}


def _auc_text(entry: Mapping[str, Any]) -> str:
    """AUC with its DeLong CI, or why there is none."""
    auc = entry.get("auc")
    if not isinstance(auc, Mapping):
        return "n/a (both classes are needed for an AUC)"
    return _ci(auc.get("estimate"), auc.get("ci95"))


def _metric_text(metric: object) -> str:
    """A threshold metric with its CI, or ``"n/a (reason)"``."""
    if not isinstance(metric, Mapping):
        return "n/a"
    text = _ci(metric.get("estimate"), metric.get("ci95"))
    reason = metric.get("reason")
    if ("n/a" in text) and reason:
        text += f" ({reason})" if text == "n/a" else f"; {reason}"
    return text


def _models(result: TrainingResult) -> list[ModelResult]:
    """The trained models in the order Rad, DL, DLR."""
    return [result.models[key] for key in MODEL_KEYS if key in result.models]


def _name(key: str) -> str:
    return NAMES.get(key, key)
