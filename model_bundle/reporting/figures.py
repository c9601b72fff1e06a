# ruff: noqa: RUF001
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""The figures of the reports, as base64 PNG drawn with matplotlib's Agg canvas (no pyplot,
so no process-wide backend state and no display needed): ROC curves, the classifier
comparison, calibration, decision curves, the LASSO CV curve and path, the fine-tuning
loss and the PCA variance.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray
from sklearn.metrics import roc_curve

from model_bundle.evaluation import TREAT_ALL, TREAT_NONE
from model_bundle.reporting.text import (
    _CLASSIFIER_COLOURS,
    _COLOURS,
    _DPI,
    _auc_text,
    _ci,
    _entry,
    _finite,
    _get,
    _models,
    _name,
    _num,
)
from model_bundle.training import ModelResult, TrainingResult, TrainProbabilities

F64 = NDArray[np.float64]


# --------------------------------------------------------------------------- figures


def _png(fig: Figure) -> str:
    """The figure as base64 PNG; reproducible bytes (no software version stamped)."""
    FigureCanvasAgg(fig)  # an Agg canvas of its own: no pyplot, no global backend
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _axes_row(fig: Figure, n: int) -> list[Axes]:
    return list(np.atleast_1d(fig.subplots(1, n, squeeze=False)[0]))


def _roc_axes(ax: Axes, title: str) -> None:
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)


def _both_classes(y: NDArray[np.int64]) -> bool:
    return 0 < int(np.sum(y)) < len(y)


def _roc_line(
    ax: Axes, key: str, y: NDArray[np.int64], prob: F64, entry: Mapping[str, Any], deployed: str
) -> None:
    """One model's ROC curve, labelled with the AUC (95 % CI) its metrics entry reports.

    The deployed model is drawn thicker. The curve is drawn from ``prob``; the label is
    the metrics', so the caller must pass the probabilities the metrics were computed on.
    """
    fpr, tpr, _ = roc_curve(y, prob)
    width = 2.6 if key == deployed else 1.6
    label = f"{_name(key)}: AUC {_auc_text(entry)}"
    ax.plot(fpr, tpr, color=_COLOURS.get(key), lw=width, label=label)


def _operating_point(ax: Axes, key: str, entry: Mapping[str, Any]) -> None:
    """A dot at the sensitivity and specificity the metrics report at the fixed threshold."""
    sens = _finite(_get(entry, "metrics", "sensitivity", "estimate"))
    spec = _finite(_get(entry, "metrics", "specificity", "estimate"))
    if sens is not None and spec is not None:
        ax.plot([1 - spec], [sens], "o", color=_COLOURS.get(key), ms=6, mec="black")


def _train_probabilities(
    model: ModelResult, metrics: Mapping[str, Any]
) -> tuple[F64, str, F64, str]:
    """The training probabilities the metrics describe, and the other kind.

    The curve drawn with the metrics' AUC must be the same one; which kind that is, the
    metrics record (``train_probabilities``, in-sample when absent).
    """
    recorded = TrainProbabilities(metrics.get("train_probabilities", "in-sample"))
    other = (
        TrainProbabilities.IN_SAMPLE
        if recorded is TrainProbabilities.OUT_OF_FOLD
        else TrainProbabilities.OUT_OF_FOLD
    )
    return (
        model.train_probabilities(recorded),
        recorded.value,
        model.train_probabilities(other),
        other.value,
    )


def _roc_figure(result: TrainingResult, metrics: Mapping[str, Any]) -> tuple[str, str]:
    """ROC curves of Rad, DL and DLR on the training and the test hips."""
    fig = Figure(figsize=(11, 5.2))
    deployed = result.config.deployed_model
    kinds: set[str] = set()
    for ax, split in zip(_axes_row(fig, 2), ("train", "test"), strict=True):
        index = result.train_idx if split == "train" else result.test_idx
        y = result.y[index]
        if not _both_classes(y):
            ax.text(0.5, 0.5, "one class only: no ROC curve", ha="center")
            continue
        for m in _models(result):
            entry = _entry(metrics, split, m.key)
            if split == "train":
                prob, kind, other, other_kind = _train_probabilities(m, metrics)
                kinds.add(kind)
            else:
                prob, other, other_kind = m.test_prob, np.zeros(0), ""
            _roc_line(ax, m.key, y, prob, entry, deployed)
            if split == "train" and len(other) == len(y):
                fpr, tpr, _ = roc_curve(y, other)
                auc = _num(_get(metrics, "train_auc", m.key, other_kind, "estimate"))
                ax.plot(
                    fpr,
                    tpr,
                    color=_COLOURS.get(m.key),
                    lw=1,
                    ls="--",
                    alpha=0.7,
                    label=f"{_name(m.key)} {other_kind}: AUC {auc}",
                )
            _operating_point(ax, m.key, entry)
        title = "Training hips" if split == "train" else "Test hips"
        _roc_axes(ax, f"{title} (n = {len(y)}, {int(np.sum(y))} ONFH)")
    caption = (
        "ROC curves with AUC (95 % DeLong CI). Dots: the operating point at each model's "
        "training threshold. The deployed model is drawn thicker. Training curves (solid) use "
        f"the {' and '.join(sorted(kinds)) or 'in-sample'} probabilities the training metrics "
        "were computed on; dashed: the other kind, for the optimism it shows."
    )
    return _png(fig), caption


def _classifier_figure(
    result: TrainingResult, metrics: Mapping[str, Any]
) -> tuple[str, dict[str, dict[str, str]]]:
    """Test ROC of all eight classifiers per model, and their test AUC texts.

    The AUCs are the ones training recorded (``test_auc_by_classifier`` of the metrics).
    """
    models = _models(result)
    fig = Figure(figsize=(5.0 * max(1, len(models)), 5.2))
    y = result.y[result.test_idx]
    texts: dict[str, dict[str, str]] = {}
    for ax, m in zip(_axes_row(fig, max(1, len(models))), models, strict=False):
        texts[m.key] = {}
        if not _both_classes(y):
            ax.text(0.5, 0.5, "one class only: no ROC curve", ha="center")
            continue
        for colour, (name, prob) in zip(
            _CLASSIFIER_COLOURS * 2, m.test_prob_by_classifier.items(), strict=False
        ):
            recorded = _get(metrics, "test_auc_by_classifier", m.key, name)
            estimate = _num(_get(recorded, "estimate"))
            texts[m.key][name] = _ci(_get(recorded, "estimate"), _get(recorded, "ci95"))
            fpr, tpr, _ = roc_curve(y, prob)
            chosen = name == m.classifier_name
            ax.plot(
                fpr,
                tpr,
                color="black" if chosen else colour,
                lw=2.6 if chosen else 1.1,
                zorder=3 if chosen else 2,  # on top of the others, which often coincide
                label=f"{name}{' (chosen)' if chosen else ''}: {estimate}",
            )
        _roc_axes(ax, f"{_name(m.key)}: all classifiers, test hips")
    return _png(fig), texts


def _calibration_figure(entries: Iterable[tuple[str, Mapping[str, Any]]], title: str) -> str | None:
    """Observed event rate against mean predicted probability, per model.

    ``entries`` are ``(model key, metrics entry)`` pairs of one set of hips, in drawing
    order; ``None`` when no entry has a calibration curve.
    """
    fig = Figure(figsize=(6.2, 6.0))
    ax = fig.subplots()
    drawn = False
    for key, entry in entries:
        curve = _get(entry, "calibration", "curve")
        if not isinstance(curve, list) or not curve:
            continue
        points = [
            (_finite(r.get("mean_predicted")), _finite(r.get("observed")), r)
            for r in curve
            if isinstance(r, Mapping)
        ]
        points = [(x, y, r) for x, y, r in points if x is not None and y is not None]
        if not points:
            continue
        xs = np.array([p[0] for p in points])
        ys = np.array([p[1] for p in points])
        low = np.array([_finite(p[2].get("ci_low")) or p[1] for p in points])
        high = np.array([_finite(p[2].get("ci_high")) or p[1] for p in points])
        slope = _num(_get(entry, "calibration", "slope"), 2)
        intercept = _num(_get(entry, "calibration", "intercept"), 2)
        ax.errorbar(
            xs,
            ys,
            yerr=np.vstack([np.maximum(ys - low, 0), np.maximum(high - ys, 0)]),
            marker="o",
            capsize=3,
            color=_COLOURS.get(key),
            label=f"{_name(key)}: slope {slope}, intercept {intercept}",
        )
        drawn = True
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("mean predicted probability (quantile bins)")
    ax.set_ylabel("observed fraction with ONFH (95 % Wilson CI)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _decision_figure(rows: object, title: str) -> str | None:
    """Net benefit against threshold probability: models and the reference lines.

    ``rows`` is the ``decision_curve`` list of one set of hips' metrics; ``None`` when
    it holds no point.
    """
    if not isinstance(rows, list) or not rows:
        return None
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        t, nb = _finite(row.get("threshold")), _finite(row.get("net_benefit"))
        if t is not None and nb is not None:
            curves.setdefault(str(row.get("model")), []).append((t, nb))
    if not curves:
        return None
    fig = Figure(figsize=(8.0, 5.0))
    ax = fig.subplots()
    styles = {TREAT_ALL: ("treat all", "grey", "--"), TREAT_NONE: ("treat none", "black", ":")}
    top = 0.0
    for model, points in curves.items():
        points.sort()
        label, colour, style = styles.get(model, (_name(model), _COLOURS.get(model, "C0"), "-"))
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, ls=style, color=colour, lw=1.8, label=label)
        top = max(top, max(ys))
    # Treat-all falls steeply below zero; the interesting part is just above it.
    ax.set_ylim(-0.05 - 0.1 * top, top * 1.1 + 0.02)
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def _lasso_cv_figure(result: TrainingResult) -> str:
    """LASSO CV error against log(alpha), per model, with the chosen alpha."""
    models = _models(result)
    fig = Figure(figsize=(5.0 * max(1, len(models)), 4.2))
    for ax, m in zip(_axes_row(fig, max(1, len(models))), models, strict=False):
        lasso = m.selector.record.lasso
        log_a = np.log(np.asarray(lasso.alphas))
        ax.errorbar(
            log_a,
            lasso.cv_mse_mean,
            yerr=lasso.cv_mse_std,
            fmt="o",
            ms=3,
            color="#d62728",
            ecolor="#bbbbbb",
            capsize=1,
        )
        ax.axvline(math.log(lasso.alpha), ls="--", color="black", lw=1)
        ax.set_xlabel("log(α)")
        ax.set_ylabel(f"CV mean squared error ({lasso.n_folds} folds, ± SD)")
        ax.set_title(f"{_name(m.key)}: LASSO, chosen α = {lasso.alpha:.4g}")
    return _png(fig)


def _lasso_path_figure(paths: Mapping[str, tuple[F64, F64, ModelResult]]) -> str:
    fig = Figure(figsize=(5.0 * len(paths), 4.2))
    for ax, (key, (alphas, coefs, m)) in zip(
        _axes_row(fig, len(paths)), paths.items(), strict=True
    ):
        log_a = np.log(alphas)
        for row in coefs:
            ax.plot(log_a, row, lw=1)
        lasso = m.selector.record.lasso
        ax.axvline(math.log(lasso.alpha), ls="--", color="black", lw=1)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("log(α)")
        ax.set_ylabel("coefficient (z-scored feature)")
        kept = sum(1 for v in lasso.coefficients.values() if v != 0.0)
        ax.set_title(f"{_name(key)}: LASSO path, {kept}/{len(coefs)} non-zero at chosen α")
    return _png(fig)


def _finetune_figure(result: TrainingResult) -> str | None:
    losses, accuracies = result.finetune.losses, result.finetune.accuracies
    if not losses:
        return None
    epochs = np.arange(1, len(losses) + 1)
    fig = Figure(figsize=(10, 3.8))
    left, right = _axes_row(fig, 2)
    left.plot(epochs, losses, marker="o", ms=3)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (cross-entropy)")
    right.plot(epochs, accuracies, marker="o", ms=3, color="#2ca02c")
    right.set_xlabel("epoch")
    right.set_ylabel("training accuracy")
    right.set_ylim(0, 1.02)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("ResNet18 fine-tuning on the training hips")
    return _png(fig)


def _pca_figure(result: TrainingResult) -> str | None:
    ratio = np.asarray(result.pca.explained_variance_ratio, dtype=np.float64)
    if ratio.size == 0:
        return None
    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    index = np.arange(1, ratio.size + 1)
    ax.bar(index, ratio, color="#1f77b4", label="per component")
    ax.plot(index, np.cumsum(ratio), color="#d62728", marker=".", label="cumulative")
    ax.axhline(result.config.pca_variance, ls=":", color="grey", label="target")
    ax.set_xlabel("PCA component of the 512 deep features")
    ax.set_ylabel("explained variance ratio")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return _png(fig)
