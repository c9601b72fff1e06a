# ruff: noqa: RUF001
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""The training report (``report.html``): everything a radiologist and an ML engineer need
to judge one training run (cohort, ROC curves, the metrics with confidence intervals,
calibration, decision curves, the feature selection with the score formula, the
fine-tuning and the PCA) and the model card itself, in one self-contained HTML file.

It reads a :class:`~model_bundle.training.TrainingResult` and the metrics
``{"train": evaluate_split(...), "test": evaluate_split(...)}`` of
:func:`~model_bundle.evaluation.evaluate_split`; it computes no metric that
``evaluate_split`` already reports, so the report, the card and the manifest agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.models import CLASSIFIERS
from model_bundle.reporting.cohort import _Cohort, _cohort
from model_bundle.reporting.figures import (
    _calibration_figure,
    _classifier_figure,
    _decision_figure,
    _finetune_figure,
    _lasso_cv_figure,
    _lasso_path_figure,
    _pca_figure,
    _roc_figure,
)
from model_bundle.reporting.html import (
    _figure,
    _Html,
    _join,
    _note,
    _section,
    _table,
    _tag,
)
from model_bundle.reporting.markdown import _markdown_html
from model_bundle.reporting.model_card import _COHORT_HEADER, _cohort_rows
from model_bundle.reporting.model_details import _lasso_path, _logistic, _score_formula
from model_bundle.reporting.parts import (
    _CALIBRATION_HEADER,
    _CALIBRATION_NOTE,
    _METRICS_NOTE,
    _banners,
    _bundle_rows,
    _calibration_cells,
    _calibration_plot,
    _decision_section,
    _delong_table,
    _header_block,
    _model_metrics_table,
    _page,
    _reason_table,
    _roi_source_table,
)
from model_bundle.reporting.text import (
    ROI_PROTOCOLS,
    _auc_text,
    _entry,
    _finite,
    _get,
    _metric_text,
    _models,
    _name,
    _num,
    _p,
    _sig,
)
from model_bundle.training import ModelResult, TrainingResult
from onfh_dlr.errors import ConfigurationError

F64 = NDArray[np.float64]


# --------------------------------------------------------------------------- report parts


def _header(summary: Mapping[str, Any], roi_protocol: str) -> _Html:
    rows = [
        *_bundle_rows(summary),
        ("ROI protocol", "whole femoral head" if roi_protocol == "head" else "lesion (paper)"),
    ]
    banners = _banners(summary)
    if roi_protocol == "lesion":
        banners.append(
            _tag(
                "div",
                "⚠ ",
                _tag("span", "label leak: paper ROI protocol", class_="headline"),
                " — reproduction only, not for deployment (see “Label leak”).",
                class_="banner",
                role="alert",
            )
        )
    return _join([_header_block(summary, "training report", rows), *banners])


def _summary_section(result: TrainingResult, metrics: Mapping[str, Any]) -> _Html:
    deployed = result.config.deployed_model
    test = _entry(metrics, "test", deployed)
    model = result.models.get(deployed)
    classifier = model.classifier_name if model is not None else "n/a"
    n, n_pos = _num(_get(metrics, "test", "n"), 0), _num(_get(metrics, "test", "n_positive"), 0)
    text = (
        f"Deployed model: {_name(deployed)} ({classifier}). On the {n} test hips ({n_pos} "
        f"with ONFH) its AUC is {_auc_text(test)}; at the threshold "
        f"{_num(test.get('threshold', model.threshold if model else None))}, fixed on the training "
        f"hips, sensitivity is {_metric_text(_get(test, 'metrics', 'sensitivity'))} and "
        f"specificity {_metric_text(_get(test, 'metrics', 'specificity'))} (95 % CIs)."
    )
    return _tag(
        "div",
        _tag("p", text),
        _tag(
            "p",
            "Read the test numbers, not the training numbers: the training hips chose the "
            "features, the classifier and the threshold.",
            class_="note",
        ),
        class_="summary",
    )


def _leak_section(shape_leak: Mapping[str, Any] | None) -> _Html:
    intro = _tag(
        "p",
        "This model was trained with the source paper's ROI protocol: the whole femoral head "
        "for healthy hips, only the necrotic area for ONFH hips. The ROI's shape then "
        "encodes the label, so the performance below is not achievable by a deployed system, "
        "which cannot know the label before it draws the ROI. Use it to reproduce the paper, "
        "never to score patients.",
    )
    if not shape_leak:
        body: _Html = _note("No shape-leak analysis was given.")
    else:
        body = _table(("Quantity", "Value"), _flatten(shape_leak), caption="Shape-feature leak")
    return _tag(
        "section",
        _tag("h2", "⚠ Label leak"),
        intro,
        body,
        id="label-leak",
        class_="leak",
    )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested mapping as ``(dotted key, formatted value)`` rows."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        label = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _flatten(value, label + ".")
        elif isinstance(value, list | tuple):
            numbers = [_finite(v) for v in value]
            if value and all(n is not None for n in numbers):
                rows.append((label, ", ".join(f"{n:.3f}" for n in numbers if n is not None)))
            else:
                rows.append((label, ", ".join("n/a" if v is None else str(v) for v in value)))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            rows.append((label, "n/a" if value is None else str(value)))
        elif isinstance(value, int):
            rows.append((label, str(value)))
        else:
            rows.append((label, _num(value)))
    return rows


def _cohort_section(cohort: _Cohort) -> _Html:
    rows = _cohort_rows(cohort)
    table = _table(
        _COHORT_HEADER,
        rows,
        caption="Usable hips by split and label (split by patient)",
        highlight=[len(rows) - 1],
    )
    parts: list[object] = [
        _tag(
            "p",
            f"The cohort has {cohort.n_patients} patients and {cohort.n_hips} hips; "
            f"{cohort.n_usable} hips are usable and {cohort.n_hips - cohort.n_usable} were "
            "excluded because their features could not be computed (patients with no "
            f"usable hip: {cohort.patients_without_usable_hip}). "
            "A patient counts as “with ONFH” when any usable hip has ONFH.",
        ),
        table,
    ]
    if cohort.roi_sources:
        parts.append(_roi_source_table(cohort.roi_sources, "Usable hips"))
    if cohort.reasons:
        parts.append(_reason_table(cohort.reasons, "Excluded (unusable) hips and why"))
    else:
        parts.append(_note("No hip was excluded."))
    return _section("cohort", "Cohort", *parts)


def _metrics_table(result: TrainingResult, metrics: Mapping[str, Any], split: str) -> _Html:
    models = _models(result)
    return _model_metrics_table(
        _get(metrics, split),
        [m.key for m in models],
        result.config.deployed_model,
        title="Training hips" if split == "train" else "Test hips",
        thresholds={m.key: m.threshold for m in models},
    )


def _discrimination_section(
    result: TrainingResult, metrics: Mapping[str, Any], roc_png: str, roc_caption: str
) -> _Html:
    return _section(
        "discrimination",
        "Discrimination and threshold metrics",
        _figure(roc_png, "ROC curves of Rad, DL and DLR", roc_caption),
        _note(_METRICS_NOTE),
        _metrics_table(result, metrics, "test"),
        _metrics_table(result, metrics, "train"),
        _delong_table(_get(metrics, "test", "delong"), "test hips"),
    )


def _classifier_section(
    result: TrainingResult, png: str, test_auc: Mapping[str, Mapping[str, str]]
) -> _Html:
    parts: list[object] = [
        _note(
            "Each model's classifier is the first in the table's order (LR first) whose mean "
            "cross-validated AUC on the training hips is within one standard error of the best "
            "(the one-standard-error rule). The test AUCs are shown for transparency only; "
            "they played no part in the choice. The CV AUCs are optimistic: the features "
            "were selected on all training hips."
        )
    ]
    for m in _models(result):
        folds = max((len(v[1]) for v in m.cv_auc.values()), default=0)
        header = ["Classifier", "CV AUC (mean)", *(f"fold {i + 1}" for i in range(folds))]
        header += ["Test AUC (95 % CI)", "Chosen"]
        rows = []
        chosen_row = []
        for i, name in enumerate(CLASSIFIERS):
            mean, per_fold = m.cv_auc.get(name, (float("nan"), ()))
            fold_cells = [_num(v) for v in per_fold] + ["n/a"] * (folds - len(per_fold))
            chosen = name == m.classifier_name
            if chosen:
                chosen_row.append(i)
            rows.append(
                [
                    name,
                    _num(mean),
                    *fold_cells,
                    test_auc.get(m.key, {}).get(name, "n/a"),
                    "✔ chosen" if chosen else "",
                ]
            )
        parts.append(
            _table(
                header, rows, caption=f"{_name(m.key)}: classifier comparison", highlight=chosen_row
            )
        )
    parts.append(
        _figure(
            png,
            "Test ROC curves of the eight classifiers per model",
            "Test ROC curves of all eight classifiers, each fitted on the training hips with "
            "the model's selected features; the chosen one in black (test AUC in the legend).",
        )
    )
    return _section("classifiers", "Classifier comparison", *parts)


def _calibration_section(
    result: TrainingResult, metrics: Mapping[str, Any], png: str | None
) -> _Html:
    rows = [
        (split, _name(m.key), *_calibration_cells(_entry(metrics, split, m.key)))
        for split in ("test", "train")
        for m in _models(result)
    ]
    return _section(
        "calibration",
        "Calibration",
        _calibration_plot(png, "test hips"),
        _note(_CALIBRATION_NOTE),
        _table(
            ("Split", "Model", *_CALIBRATION_HEADER),
            rows,
            caption="Calibration and Hosmer–Lemeshow",
        ),
    )


def _selection_part(result: TrainingResult, m: ModelResult, path_available: bool) -> _Html:
    record = m.selector.record
    lasso = record.lasso
    stages = _table(
        ("Step", "Features left"),
        record.stage_counts(),
        caption=f"{_name(m.key)}: feature selection on {record.n_samples} training hips "
        f"({record.n_positive} with ONFH)",
    )
    lr = _logistic(m)
    position = {n: j for j, n in enumerate(m.selector.feature_names)}
    header = ["#", "Feature", "Mann–Whitney p"]
    if lr is not None:
        header.append("LR coefficient")
    header += ["LASSO coefficient", "Training mean", "Training SD"]
    rows = []
    for i, name in enumerate(record.selected):
        j = position.get(name)
        row: list[object] = [i + 1, name, _p(record.mwu_p.get(name))]
        if lr is not None:
            row.append(f"{lr[1][i]:.4f}")
        row += [
            f"{lasso.coefficients.get(name, 0.0):.4f}",
            "n/a" if j is None else _sig(m.selector.means[j], m.selector.stds[j]),
            "n/a" if j is None else _sig(m.selector.stds[j]),
        ]
        rows.append(row)
    features = _table(header, rows, caption=f"{_name(m.key)}: selected features (mRMR order)")
    formula, formula_note = _score_formula(m)
    parts: list[object] = [
        _tag("h3", f"{_name(m.key)} ({m.classifier_name})"),
        stages,
        _tag(
            "p",
            f"LASSO: {lasso.n_folds}-fold CV, chosen α = {lasso.alpha:.4g} "
            f"(minimum mean CV error), intercept {lasso.intercept:.4f}. "
            f"{len(record.constant)} constant features dropped; "
            f"{len(record.correlation_dropped)} dropped as duplicates (|r| > "
            f"{m.selector.correlation_threshold:g}).",
        ),
    ]
    if lasso.fallback:
        parts.append(_note(f"LASSO fallback: {lasso.fallback}"))
    if not path_available:
        parts.append(
            _note(
                "No LASSO coefficient path: this selector was recorded without it (a "
                "selector from an older bundle)."
            )
        )
    parts += [
        features,
        _tag("p", _tag("strong", "Score formula. "), formula_note),
        _tag("pre", formula),
    ]
    return _join(parts)


def _selection_section(
    result: TrainingResult, cv_png: str, path_png: str | None, with_path: set[str]
) -> _Html:
    parts: list[object] = [
        _note(
            "Per model, fitted on the training hips only: z-score, Mann–Whitney U, Pearson "
            "de-duplication, mRMR, then LASSO with cross-validation; the classifier sees the "
            "LASSO-selected features, z-scored with the training mean and SD."
        ),
        _figure(
            cv_png,
            "LASSO cross-validation error against log alpha",
            "LASSO: mean cross-validated squared error (± SD over folds) against log(α); "
            "dashed: the chosen α (minimum mean error).",
        ),
    ]
    if path_png is not None:
        parts.append(
            _figure(
                path_png,
                "LASSO coefficient paths",
                "LASSO coefficient paths of the mRMR features over the same α grid, "
                "recomputed from the training hips; dashed: the chosen α.",
            )
        )
    parts += [_selection_part(result, m, m.key in with_path) for m in _models(result)]
    return _section("selection", "Feature selection and score formulas", *parts)


def _deep_section(result: TrainingResult, ft_png: str | None, pca_png: str | None) -> _Html:
    ft = result.finetune
    parts: list[object] = []
    if ft_png is not None:
        parts.append(
            _figure(
                ft_png,
                "Fine-tuning loss and accuracy per epoch",
                "Loss and accuracy on the training hips after each epoch (with random "
                "left-right flips); a temporary two-class head is dropped afterwards.",
            )
        )
        parts.append(
            _table(
                ("Epoch", "Loss", "Accuracy"),
                [
                    (i + 1, _num(loss, 4), _num(acc))
                    for i, (loss, acc) in enumerate(zip(ft.losses, ft.accuracies, strict=False))
                ],
                caption="Fine-tuning per epoch",
            )
        )
    else:
        parts.append(_note("No fine-tuning epochs were recorded."))
    ratio = np.asarray(result.pca.explained_variance_ratio, dtype=np.float64)
    parts.append(
        _tag(
            "p",
            f"PCA of the 512 deep features, fitted on the training hips: {ratio.size} "
            f"components kept, explaining {float(ratio.sum()):.1%} of the variance (target "
            f"{result.config.pca_variance:.0%}, at most {result.config.pca_max_components}).",
        )
    )
    if pca_png is not None:
        parts.append(
            _figure(
                pca_png,
                "PCA explained variance",
                "Explained variance ratio per PCA component and cumulative.",
            )
        )
    return _section("deep", "Deep features: fine-tuning and PCA", *parts)


def _config_section(result: TrainingResult) -> _Html:
    rows = [
        (key, "default" if value is None else value)
        for key, value in result.config.model_dump().items()
    ]
    return _section(
        "config",
        "Training configuration",
        _table(("Setting", "Value"), rows),
    )


# --------------------------------------------------------------------------- report


def render_report(
    result: TrainingResult,
    metrics: Mapping[str, Any],
    *,
    manifest_summary: Mapping[str, Any],
    model_card_md: str,
    roi_protocol: str = "head",
    shape_leak: Mapping[str, Any] | None = None,
) -> str:
    """The training report: one self-contained HTML file.

    Parameters
    ----------
    result
        The training run (:func:`~model_bundle.training.train_models`).
    metrics
        ``{"train": evaluate_split(...), "test": evaluate_split(...)}`` with the models'
        probabilities and thresholds (training: in-sample or out-of-fold; the report
        recognises which).
    manifest_summary
        :meth:`~model_bundle.bundle.Bundle.summary` of the bundle (``name``, ``version``,
        ``device_uid``, ``created``, ``deployed_model``, ``threshold``, ``synthetic``,
        ``not_for_clinical_use``, ``warning``); missing keys show as "n/a".
    model_card_md
        The model card (:func:`model_card`), rendered at the end.
    roi_protocol
        ``"head"`` or ``"lesion"``; with ``"lesion"`` a prominent "Label leak" section
        reports ``shape_leak``.
    shape_leak
        What the caller measured about the leak (e.g. the AUC of the shape features
        alone), rendered as given: a mapping, nested mappings flattened.

    Returns
    -------
    str
        An HTML5 document with inline CSS and base64 PNG figures; no external resource.

    Raises
    ------
    ConfigurationError
        If ``roi_protocol`` is unknown.
    """
    if roi_protocol not in ROI_PROTOCOLS:
        raise ConfigurationError(
            f"roi_protocol must be one of {ROI_PROTOCOLS}, not {roi_protocol!r}"
        )
    cohort = _cohort(result)
    roc_png, roc_caption = _roc_figure(result, metrics)
    classifier_png, test_auc = _classifier_figure(result, metrics)
    paths: dict[str, tuple[F64, F64, ModelResult]] = {}
    for m in _models(result):
        path = _lasso_path(m)
        if path is not None:
            paths[m.key] = (path[0], path[1], m)
    path_png = _lasso_path_figure(paths) if paths else None

    sections: list[tuple[str, str, _Html]] = []
    if roi_protocol == "lesion":
        sections.append(("label-leak", "Label leak", _leak_section(shape_leak)))
    sections += [
        ("cohort", "Cohort", _cohort_section(cohort)),
        (
            "discrimination",
            "Discrimination",
            _discrimination_section(result, metrics, roc_png, roc_caption),
        ),
        (
            "classifiers",
            "Classifier comparison",
            _classifier_section(result, classifier_png, test_auc),
        ),
        (
            "calibration",
            "Calibration",
            _calibration_section(
                result,
                metrics,
                _calibration_figure(
                    ((m.key, _entry(metrics, "test", m.key)) for m in _models(result)),
                    "Calibration, test hips",
                ),
            ),
        ),
        (
            "decision-curve",
            "Decision curve",
            _decision_section(
                _decision_figure(
                    _get(metrics, "test", "decision_curve"), "Decision curves, test hips"
                )
            ),
        ),
        (
            "selection",
            "Feature selection",
            _selection_section(result, _lasso_cv_figure(result), path_png, set(paths)),
        ),
        (
            "deep",
            "Deep features",
            _deep_section(result, _finetune_figure(result), _pca_figure(result)),
        ),
        (
            "model-card",
            "Model card",
            _section(
                "model-card",
                "Model card",
                _tag("div", _markdown_html(model_card_md), class_="card"),
            ),
        ),
        ("config", "Training configuration", _config_section(result)),
    ]
    return _page(
        manifest_summary,
        "training report",
        _header(manifest_summary, roi_protocol),
        _summary_section(result, metrics),
        sections,
    )
