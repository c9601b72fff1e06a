# ruff: noqa: RUF001, RUF002
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""What the documents say about a fitted model: the LR score formula and the LASSO path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import lasso_path

from model_bundle.models import LogisticModel
from model_bundle.reporting.text import _signed
from model_bundle.training import ModelResult, TrainingResult

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


def _radiomics_training_matrix(result: TrainingResult, model: ModelResult) -> F64 | None:
    """The z-scored mRMR features of the training hips, if all are radiomics features.

    The :class:`TrainingResult` keeps each hip's radiomics vector but not its deep
    features, so the matrix exists only when mRMR chose radiomics features alone.
    """
    record = model.selector.record
    first = next((s.radiomics for s in result.usable if s.radiomics is not None), None)
    if first is None or model.key == "dl":
        return None
    n_rad = len(first)
    # Rad and DLR inputs start with the radiomics features, in the vector's order.
    column = {name: j for j, name in enumerate(model.input_names[:n_rad])}
    if not all(name in column for name in record.mrmr_order):
        return None
    rows = [result.usable[i].radiomics for i in result.train_idx.tolist()]
    X = np.stack([np.asarray(r, dtype=np.float64) for r in rows if r is not None])
    selector = model.selector
    position = {name: j for j, name in enumerate(selector.feature_names)}
    cols = [column[name] for name in record.mrmr_order]
    idx = [position[name] for name in record.mrmr_order]
    return np.asarray((X[:, cols] - selector.means[idx]) / selector.stds[idx], dtype=np.float64)


def _lasso_path(result: TrainingResult, model: ModelResult) -> tuple[F64, F64] | None:
    """LASSO coefficient path over the selector's alpha grid: ``(alphas, coefs)``.

    ``coefs`` has one row per mRMR feature (mRMR order). ``None`` when the training
    matrix cannot be rebuilt (deep features are not kept in the training result).
    """
    Z = _radiomics_training_matrix(result, model)
    if Z is None:
        return None
    y = result.y[result.train_idx].astype(np.float64)
    # LassoCV fits an intercept; lasso_path does not, so centre both as LassoCV does.
    alphas, coefs, _ = lasso_path(
        Z - Z.mean(axis=0),
        y - y.mean(),
        alphas=np.asarray(model.selector.record.lasso.alphas, dtype=np.float64),
        max_iter=model.selector.lasso_max_iter,
    )
    return np.asarray(alphas, dtype=np.float64), np.asarray(coefs, dtype=np.float64)
