# ruff: noqa: RUF001, RUF002
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""What the documents say about a fitted model: the LR score formula and the LASSO path,
both read from what training recorded."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.models import LogisticModel
from model_bundle.reporting.text import _signed
from model_bundle.training import ModelResult

F64 = NDArray[np.float64]


# --------------------------------------------------------------------------- model details


def _logistic(model: ModelResult) -> tuple[float, F64] | None:
    """Intercept and coefficients of an LR classifier (fitted or loaded), else ``None``."""
    if model.classifier_name != "LR":
        return None
    clf = model.classifier
    coef: Any
    intercept: Any
    if isinstance(clf, LogisticModel):
        coef, intercept = clf.coef, clf.intercept
    else:  # scikit-learn's LogisticRegression, as training fits it
        coef, intercept = getattr(clf, "coef_", None), getattr(clf, "intercept_", None)
    if coef is None or intercept is None:
        return None
    weights = np.asarray(coef, dtype=np.float64).reshape(-1)
    if len(weights) != len(model.selector.selected_names):
        return None
    return float(np.asarray(intercept, dtype=np.float64).reshape(-1)[0]), weights


def _score_formula(model: ModelResult) -> tuple[str, str]:
    """The score written out as in the paper, and a note on what it is.

    Returns
    -------
    formula, note
        ``score = b0 + b1 × z(feature1) + ...`` (one term per line) for LR; for other
        classifiers the LASSO linear score, since they have no closed formula.
    """
    names = model.selector.selected_names
    lr = _logistic(model)
    if lr is not None:
        intercept, weights = lr
        lines = [f"score = {intercept:.4f}"]
        lines += [
            f"        {_signed(float(w))} × z({n})" for n, w in zip(names, weights, strict=True)
        ]
        threshold = model.threshold
        lines.append("P(ONFH) = 1 / (1 + exp(-score))")
        if 0.0 < threshold < 1.0:
            logit = math.log(threshold / (1.0 - threshold))
            lines.append(f"called ONFH when P(ONFH) >= {threshold:.3f}, i.e. score >= {logit:.4f}")
        note = (
            "Logistic regression on the selected features, each z-scored with its training "
            "mean and SD: z(f) = (f - mean) / SD (values in the table)."
        )
        return "\n".join(lines), note
    lasso = model.selector.record.lasso
    lines = [f"lasso_score = {lasso.intercept:.4f}"]
    lines += [
        f"              {_signed(lasso.coefficients.get(n, 0.0))} × z({n})"
        for n in names
        if lasso.coefficients.get(n, 0.0) != 0.0
    ]
    note = (
        f"The chosen classifier ({model.classifier_name}) has no closed formula. Shown "
        "instead: the LASSO linear score of the selection step (least squares on the 0/1 "
        "label, so not a probability), on the z-scored features."
    )
    return "\n".join(lines), note


def _lasso_path(model: ModelResult) -> tuple[F64, F64] | None:
    """LASSO coefficient path as training recorded it: ``(alphas, coefs)``.

    ``coefs`` has one row per mRMR feature (mRMR order). ``None`` when the selector was
    recorded without its path (a selector read from an older bundle).
    """
    lasso = model.selector.record.lasso
    if lasso.path is None:
        return None
    coefs = [lasso.path[name] for name in model.selector.record.mrmr_order]
    return np.asarray(lasso.alphas, dtype=np.float64), np.asarray(coefs, dtype=np.float64)
