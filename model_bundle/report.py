# ruff: noqa: RUF001, RUF002
# The card and the report are read by clinicians: typographic dashes, signs and Greek
# letters are intended.
"""The training report (one HTML file) and the model card (Markdown) of a trained model,
and the report of an external evaluation (one HTML file).

:func:`model_card` writes ``MODEL_CARD.md``: intended use and users, the model, the data,
the ROI protocol, the test results, the limitations, and where the applicable TRIPOD+AI
and CLEAR items are answered. :func:`render_report` writes ``report.html``: everything a
radiologist and an ML engineer need to judge one training run (cohort, ROC curves, the
metrics with confidence intervals, calibration, decision curves, the feature selection
with the score formula, the fine-tuning and the PCA) and the model card itself.
:func:`render_evaluation_report` is the page of ``onfh-dlr evaluate``: a bundle scored
on an external cohort at its fixed thresholds, with the same figures and tables, from
the predictions rows and :func:`~model_bundle.external.cohort_metrics`.

Both read a :class:`~model_bundle.training.TrainingResult` and the metrics
``{"train": evaluate_split(...), "test": evaluate_split(...)}`` of
:func:`~model_bundle.evaluation.evaluate_split`; neither computes a metric that
``evaluate_split`` already reports, so the report, the card and the manifest agree.

The HTML file is self-contained, because it travels inside a bundle and is opened at
hospitals, possibly offline, where a document must not fetch anything from elsewhere: no
external resource, inline CSS, figures as base64 PNG drawn with matplotlib's Agg canvas
(no pyplot, so no process-wide backend state and no display needed). Every piece of text
is HTML-escaped (:class:`_Html` marks the only strings that are not: markup built here
from escaped parts), so a feature name, a failure reason or a manifest field can never
inject markup. The model card's Markdown is rendered by a small converter that handles
what :func:`model_card` writes (headings, paragraphs, lists, block quotes, tables, bold,
code) and escapes everything else.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray
from sklearn.linear_model import lasso_path
from sklearn.metrics import roc_auc_score, roc_curve

from model_bundle.classifiers import CLASSIFIERS, LogisticModel
from model_bundle.stats import TREAT_ALL, TREAT_NONE, roc_auc_delong
from model_bundle.training import MODEL_KEYS, ModelResult, TrainingResult
from onfh_dlr.errors import ConfigurationError

__all__ = [
    "NAMES",
    "ROI_PROTOCOLS",
    "SYNTHETIC_WARNING",
    "model_card",
    "render_evaluation_report",
    "render_report",
]

F64 = NDArray[np.float64]

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


# --------------------------------------------------------------------------- cohort


@dataclass(frozen=True)
class _Cohort:
    """Counts of the cohort table, shared by the card and the report.

    ``splits`` rows are ``(split, patients with ONFH, patients without, ONFH hips,
    healthy hips)`` over the usable hips; ``reasons`` rows are ``(reason, hips, ONFH
    hips, healthy hips)`` of the excluded hips, most frequent first.
    """

    splits: list[tuple[str, int, int, int, int]]
    n_patients: int
    n_hips: int
    n_usable: int
    patients_without_usable_hip: int
    reasons: list[tuple[str, int, int, int]]
    roi_sources: dict[str, int]


def _cohort(result: TrainingResult) -> _Cohort:
    rows: list[tuple[str, int, int, int, int]] = []
    for split, index in (("train", result.train_idx), ("test", result.test_idx)):
        hips = [result.usable[i] for i in index.tolist()]
        # A patient "has ONFH" when any usable hip of theirs does: the split is stratified
        # on exactly this (training.patient_split).
        onfh: dict[str, int] = {}
        for hip in hips:
            onfh[hip.patient_id] = max(onfh.get(hip.patient_id, 0), int(hip.label))
        positive = sum(int(hip.label) for hip in hips)
        rows.append(
            (
                split,
                sum(onfh.values()),
                len(onfh) - sum(onfh.values()),
                positive,
                len(hips) - positive,
            )
        )
    reasons = _by_reason(
        (s.reason, 1 if int(s.label) == 1 else 0) for s in result.samples if not s.ok
    )
    patients = {s.patient_id for s in result.samples}
    with_usable = {s.patient_id for s in result.usable}
    sources = Counter(s.roi_source or "unknown" for s in result.usable)
    return _Cohort(
        splits=rows,
        n_patients=len(patients),
        n_hips=len(result.samples),
        n_usable=len(result.usable),
        patients_without_usable_hip=len(patients - with_usable),
        reasons=reasons,
        roi_sources=dict(sorted(sources.items())),
    )


def _by_reason(hips: Iterable[tuple[str, int | None]]) -> list[tuple[str, int, int, int]]:
    """``(reason, label)`` of failed hips as ``(reason, hips, ONFH, healthy)`` rows.

    Most frequent first; a blank reason is "no reason recorded"; a label other than 0 or
    1 (``None``: unknown) counts in ``hips`` only.
    """
    counts: dict[str, list[int]] = {}
    for reason, label in hips:
        row = counts.setdefault(reason.strip() or "no reason recorded", [0, 0, 0])
        row[0] += 1
        if label in (0, 1):
            row[2 - int(label)] += 1
    return sorted(
        ((reason, c[0], c[1], c[2]) for reason, c in counts.items()),
        key=lambda row: (-row[1], row[0]),
    )


def _reason_category(reason: str) -> str:
    """The error class of a failure reason (``"HeadNotFoundError: ..."``), for grouping."""
    head, sep, _ = reason.partition(":")
    return head.strip() if sep and head.strip() and " " not in head.strip() else reason


_ROI_SOURCE_NAMES: Final[Mapping[str, str]] = {
    "auto": "auto-segmented",
    "seg": "from a DICOM-SEG",
}


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


# --------------------------------------------------------------------------- model card


def _md(text: object) -> str:
    """Plain text for Markdown: punctuation that Markdown or HTML would read is escaped.

    A failure reason or a feature name may hold ``<``, ``|`` or ``*``; in the card they
    must stay text for any Markdown renderer (which would pass raw HTML through).
    """
    out = str(text).replace("\r", " ").replace("\n", " ")
    return "".join("\\" + c if c in _MD_ESCAPABLE else c for c in out)


_MD_ESCAPABLE: Final = "\\`*_[]<>&|#"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table; cells are escaped with :func:`_md`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


_COHORT_HEADER: Final = (
    "Split",
    "Patients",
    "with ONFH",
    "without ONFH",
    "Hips",
    "ONFH hips",
    "healthy hips",
)


def _cohort_rows(cohort: _Cohort) -> list[tuple[str, int, int, int, int, int, int]]:
    """Rows of the cohort table (:data:`_COHORT_HEADER`), train, test and total."""
    rows = [
        (split, p_pos + p_neg, p_pos, p_neg, h_pos + h_neg, h_pos, h_neg)
        for split, p_pos, p_neg, h_pos, h_neg in cohort.splits
    ]
    # Patients are split, never shared, so the split counts simply add up.
    p_pos = sum(row[1] for row in cohort.splits)
    p_neg = sum(row[2] for row in cohort.splits)
    h_pos = sum(row[3] for row in cohort.splits)
    h_neg = sum(row[4] for row in cohort.splits)
    rows.append(("total", p_pos + p_neg, p_pos, p_neg, h_pos + h_neg, h_pos, h_neg))
    return rows


# (checklist, item, topic, where it is answered): only items this card and the report
# answer, or must say "not done"; items about a manuscript (title page, abstract, funding,
# ethics, registration) belong to the hospital's publication, not to a bundle.
_CHECKLIST: Final = (
    ("TRIPOD+AI", "1", "Development of a prediction model, population, outcome", "Card: title"),
    ("TRIPOD+AI", "3b", "Target population, intended purpose and users", "Card: Intended use"),
    ("TRIPOD+AI", "5a", "Sources of data", "Card: Data"),
    ("TRIPOD+AI", "6b", "Eligibility criteria", "Card: Data (usable hips, exclusions)"),
    ("TRIPOD+AI", "7", "Data pre-processing and quality checking", "Card: Model, ROI protocol"),
    ("TRIPOD+AI", "8a", "Outcome definition", "Card: Data"),
    ("TRIPOD+AI", "9a", "Choice of initial predictors", "Card: Model"),
    ("TRIPOD+AI", "9b", "Definition of predictors", "Card: Model; report: Feature selection"),
    ("TRIPOD+AI", "10", "Study size", "Card: Data"),
    ("TRIPOD+AI", "11", "Missing data", "Card: Data; report: Cohort"),
    ("TRIPOD+AI", "12a", "How the data were used (partitioning)", "Card: Data"),
    ("TRIPOD+AI", "12b", "Handling of predictors (standardisation)", "Card: Model"),
    (
        "TRIPOD+AI",
        "12c",
        "Model type, building steps, tuning, internal validation",
        "Card: Model; report: Classifier comparison",
    ),
    (
        "TRIPOD+AI",
        "12e",
        "Performance measures and plots",
        "Card: Evaluation; report: Discrimination, Calibration, Decision curve",
    ),
    ("TRIPOD+AI", "13", "Class imbalance methods", "Card: Model (none used)"),
    ("TRIPOD+AI", "14", "Fairness", "Card: Limitations (not assessed)"),
    ("TRIPOD+AI", "15", "Model output and threshold", "Card: Model"),
    (
        "TRIPOD+AI",
        "20a",
        "Flow of participants, with/without outcome",
        "Card: Data; report: Cohort",
    ),
    ("TRIPOD+AI", "21", "Participants and events per analysis", "Card: Data; report: Cohort"),
    (
        "TRIPOD+AI",
        "22",
        "Full model specification",
        "Report: Feature selection (score formula); bundle files",
    ),
    (
        "TRIPOD+AI",
        "23a",
        "Performance with confidence intervals",
        "Card: Evaluation; report: Discrimination",
    ),
    ("TRIPOD+AI", "26", "Limitations", "Card: Limitations"),
    ("TRIPOD+AI", "27a", "Poor quality or unavailable input data", "Card: Intended use"),
    ("TRIPOD+AI", "27b", "User interaction and expertise", "Card: Intended use"),
    ("CLEAR", "13", "Data source", "Card: Data"),
    ("CLEAR", "15", "Data split methodology", "Card: Data"),
    ("CLEAR", "16", "Imaging protocol", "Card: Intended use, Model"),
    ("CLEAR", "18", "Reference standard", "Card: Data"),
    ("CLEAR", "19", "Segmentation strategy", "Card: ROI protocol"),
    ("CLEAR", "21", "Image pre-processing", "Card: Model"),
    ("CLEAR", "22", "Resampling", "Card: Model"),
    ("CLEAR", "23", "Discretisation", "Card: Model (bundle radiomics_params.yaml)"),
    ("CLEAR", "24", "Image types", "Card: Model"),
    ("CLEAR", "25", "Feature extraction software and version", "Card: Model; manifest libraries"),
    ("CLEAR", "26", "Feature classes", "Card: Model"),
    ("CLEAR", "27", "Number of features", "Card: Model"),
    ("CLEAR", "29", "Missing data", "Card: Data"),
    ("CLEAR", "30", "Class imbalance", "Card: Data, Model"),
    ("CLEAR", "32", "Feature scaling", "Card: Model"),
    ("CLEAR", "33", "Dimension reduction", "Card: Model; report: Feature selection"),
    ("CLEAR", "34", "Algorithm details", "Card: Model"),
    ("CLEAR", "35", "Training and tuning", "Card: Model"),
    ("CLEAR", "37", "Model selection strategy", "Card: Model; report: Classifier comparison"),
    ("CLEAR", "38", "Testing technique", "Card: Evaluation"),
    ("CLEAR", "39", "Performance metrics", "Card: Evaluation"),
    ("CLEAR", "40", "Uncertainty (confidence intervals)", "Card: Evaluation"),
    ("CLEAR", "41", "Statistical comparison of models", "Report: Discrimination (DeLong tests)"),
    (
        "CLEAR",
        "42",
        "Comparison with non-radiomic and combined models",
        "Card: Evaluation (Rad, DL, DLR)",
    ),
    ("CLEAR", "46", "Feature statistics", "Report: Feature selection"),
    ("CLEAR", "47", "Model performance", "Card: Evaluation; report: Discrimination"),
    ("CLEAR", "52", "Strengths and limitations", "Card: Limitations"),
    ("CLEAR", "57", "Sharing final model files", "Card: Model (the bundle)"),
)


def model_card(
    result: TrainingResult,
    *,
    name: str,
    version: str,
    synthetic: bool,
    intended_use: str,
    metrics: Mapping[str, Any],
    roi_protocol: str = "head",
) -> str:
    """The model card of a trained model, as Markdown.

    Parameters
    ----------
    result
        The training run (:func:`~model_bundle.training.train_models`).
    name, version
        The bundle's name and version.
    synthetic
        Trained on synthetic data: the card then says, first and in bold, that it is a
        synthetic demonstration and not for clinical use.
    intended_use
        The intended use as the manifest states it (plain text).
    metrics
        ``{"train": evaluate_split(...), "test": evaluate_split(...)}``.
    roi_protocol
        ``"head"`` (whole femoral head of every hip) or ``"lesion"`` (the source paper's
        protocol, reproduction only; the card then warns that shape leaks the label).

    Returns
    -------
    str
        Markdown; every value that comes from data is escaped.

    Raises
    ------
    ConfigurationError
        If ``roi_protocol`` is unknown.
    """
    if roi_protocol not in ROI_PROTOCOLS:
        raise ConfigurationError(
            f"roi_protocol must be one of {ROI_PROTOCOLS}, not {roi_protocol!r}"
        )
    config = result.config
    cohort = _cohort(result)
    models = _models(result)
    deployed = config.deployed_model
    pca = result.pca
    n_pca = len(pca.components)
    lines: list[str] = [
        f"# {_md(name)} {_md(version)} — model card",
        "",
        "Development and internal test of a per-hip diagnostic prediction model for early "
        "osteonecrosis of the femoral head (ONFH, ARCO I–II) on coronal T2-weighted "
        "fat-suppressed hip MRI: deep-learning radiomics (DLR).",
        "",
    ]
    if synthetic:
        lines += [
            f"> **⚠ {SYNTHETIC_WARNING}.** This model was trained and tested on synthetic "
            "phantom images only. Its numbers describe the phantom, not patients.",
            "",
        ]
    if roi_protocol == "lesion":
        lines += [
            "> **⚠ Label leak: paper ROI protocol, reproduction only — not for deployment.** "
            "The ROI of ONFH hips was the necrotic area and that of healthy hips the whole "
            "head, so the ROI's shape encodes the label. No deployed system knows the label "
            "before it draws the ROI.",
            "",
        ]

    lines += ["## Intended use", "", _md(intended_use.strip()) or "(not stated)", ""]
    lines += [
        "- **Intended users:** radiologists reading coronal T2-FS hip MRI.",
        "- **Role:** second reader. For each femoral head (left and right separately) the "
        "service reports a probability of early ONFH and a positive/negative call at a fixed "
        "threshold, next to the images, after the radiologist's own read. It does not make "
        "a diagnosis and must not be used alone.",
        "- **Input:** one coronal T2-weighted fat-suppressed series showing both hips; the "
        "femoral heads are auto-segmented, or taken from a DICOM-SEG sent with the series.",
        "- **User interaction:** none to obtain a score; the radiologist should check the "
        "returned segmentation (DICOM-SEG), since a wrong ROI gives a meaningless score.",
        "- **Unusable input:** a hip whose head cannot be found or whose features cannot be "
        "computed gets no score; the report says why. Series that are not coronal T2-FS "
        "are not scored.",
        "- **Not intended for:** staging, advanced ONFH (ARCO III–IV), other hip diseases "
        "(transient bone-marrow oedema, fractures, tumours), other sequences or planes, "
        "children, or use without a radiologist.",
        "",
    ]

    lines += ["## Model", ""]
    lines += [
        "- **Radiomics:** 1,197 PyRadiomics features per hip ROI: 13 image types "
        "(original, 8 wavelet decompositions, LoG σ = 2, 3, 4, 5 mm) × 91 (18 first order, "
        "22 GLCM, 16 GLRLM, 16 GLSZM, 14 GLDM, 5 NGTDM) + 14 shape. PyRadiomics z-scores "
        "the image, resamples it to 1 × 1 × 1 mm (B-spline) and discretises with a fixed bin "
        "width; every setting is in the bundle's `radiomics_params.yaml`, the library "
        "versions in the manifest.",
        f"- **Deep features:** ResNet18 fine-tuned on the training hips (SGD, learning rate "
        f"{config.learning_rate:g}, batch {config.batch_size}, {len(result.finetune.losses)} "
        "epochs) on the coronal slice with the largest ROI area, cropped around the ROI; the "
        f"512-d pooled output is reduced by PCA (fitted on the training hips) to {n_pca} "
        f"components ({float(np.sum(pca.explained_variance_ratio)):.1%} of the variance).",
        "- **Three models:** Rad (radiomics), DL (deep PCA components), DLR (both). Each is "
        "fitted on the training hips only: z-score (training mean and SD), Mann–Whitney U "
        f"(p < {config.p_threshold:g}), Pearson de-duplication (|r| > "
        f"{config.correlation_threshold:g}), mRMR to at most {config.max_features}, LASSO "
        f"with {config.lasso_folds}-fold CV (α at minimum CV error).",
        f"- **Classifier:** the best of {len(CLASSIFIERS)} ({', '.join(CLASSIFIERS)}) by "
        f"{config.cv_folds}-fold CV AUC on the training hips (ties go to LR, the paper's "
        "choice), with fixed default hyperparameters (no tuning), refitted on all training "
        "hips. No class-imbalance correction (resampling or weighting) is used.",
        f"- **Deployed model:** {_name(deployed)}. Output: the probability of ONFH per hip; "
        "the hip is called positive when the probability reaches the threshold. The "
        "threshold is fixed on the training hips by Youden's index on out-of-fold "
        "probabilities and stored in the bundle; it is never re-picked on test data.",
        "- **Files:** the bundle holds every fitted part as JSON and the network weights as "
        "safetensors (no pickle), with a sha256 per file in the manifest.",
        "",
    ]
    rows: list[tuple[object, ...]] = []
    for m in models:
        cv_mean = m.cv_auc.get(m.classifier_name, (float("nan"), ()))[0]
        rows.append(
            (
                _name(m.key) + (" (deployed)" if m.key == deployed else ""),
                len(m.input_names),
                len(m.selector.selected_names),
                m.classifier_name,
                _num(cv_mean),
                _num(m.threshold),
            )
        )
    lines += _md_table(
        ("Model", "Input features", "Selected", "Classifier", "CV AUC", "Threshold"), rows
    )
    lines.append("")

    test_n, test_pos = _get(metrics, "test", "n"), _get(metrics, "test", "n_positive")
    lines += ["## Data", ""]
    lines += [
        f"- **Cohort:** {cohort.n_patients} patients, {cohort.n_hips} hips; "
        f"{cohort.n_usable} hips usable. The unit is one hip (left and right separately).",
        "- **Source:** "
        + (
            "synthetic phantom studies (`onfh-dlr phantom`) with known ground truth."
            if synthetic
            else "the cohort CSV of the training run (one row per hip, with its label)."
        ),
        "- **Outcome (label):** early ONFH (ARCO I–II) in that hip (1) or not (0), as "
        "recorded in the cohort file"
        + (" (phantom ground truth)." if synthetic else " by the hospital's reference standard."),
        f"- **Split:** patients split {1 - config.test_fraction:.0%} / "
        f"{config.test_fraction:.0%} into training and test, stratified by whether the "
        f"patient has ONFH (seed {config.seed}); both hips of a patient are in the same set.",
        "- **Study size:** all usable hips of the cohort; no sample size calculation.",
        f"- **Excluded hips:** {cohort.n_hips - cohort.n_usable} (features could not be "
        "computed); they are not imputed. "
        f"Patients with no usable hip: {cohort.patients_without_usable_hip}.",
    ]
    if cohort.roi_sources:
        sources = ", ".join(
            f"{count} {_ROI_SOURCE_NAMES.get(src, src)}"
            for src, count in cohort.roi_sources.items()
        )
        lines.append(f"- **ROIs of the usable hips:** {_md(sources)}.")
    lines += ["", *_md_table(_COHORT_HEADER, _cohort_rows(cohort)), ""]
    if cohort.reasons:
        categories: Counter[str] = Counter()
        for reason, hips, _, _ in cohort.reasons:
            categories[_reason_category(reason)] += hips
        lines += [
            "Excluded hips by reason (the report lists the full messages):",
            "",
            *_md_table(("Reason", "Hips"), categories.most_common()),
            "",
        ]

    lines += ["## ROI protocol", ""]
    if roi_protocol == "head":
        lines += [
            "The ROI is the **whole femoral head of every hip**, auto-segmented or read from "
            "a DICOM-SEG. This deliberately differs from the source paper, which drew the "
            "whole head (and proximal neck) for healthy hips but only the necrotic area for "
            "ONFH hips: there the ROI's shape leaks the label, and no deployed system knows "
            "the label before it draws the ROI. Our numbers are therefore not directly "
            "comparable with the paper's, and are expected to be lower.",
            "",
        ]
    else:
        lines += [
            "**Paper protocol (reproduction only):** whole head for healthy hips, necrotic "
            "area for ONFH hips. The ROI's shape (volume, diameters, sphericity) encodes the "
            "label, so these results overstate what a deployed model can do. Do not deploy "
            "this model; the deployable protocol is the whole femoral head of every hip.",
            "",
        ]

    lines += ["## Evaluation", ""]
    lines += [
        f"Internal hold-out test set: {_num(test_n, 0)} hips, {_num(test_pos, 0)} with ONFH "
        "(patients never seen in training or selection). No external validation. AUC with "
        "95 % DeLong CI; sensitivity and specificity at the training threshold with Wilson "
        "95 % CIs; calibration slope and intercept by logistic recalibration; "
        "Hosmer–Lemeshow; DeLong tests between the models and decision curves are in the "
        "report.",
        "",
    ]
    rows = []
    for m in models:
        test = _entry(metrics, "test", m.key)
        train = _entry(metrics, "train", m.key)
        rows.append(
            (
                _name(m.key) + (" (deployed)" if m.key == deployed else ""),
                _auc_text(test),
                _metric_text(_get(test, "metrics", "sensitivity")),
                _metric_text(_get(test, "metrics", "specificity")),
                _num(test.get("threshold", m.threshold)),
                _num(_get(test, "calibration", "slope"), 2),
                _auc_text(train),
                _PAPER_AUC.get(m.key, "n/a"),
            )
        )
    lines += _md_table(
        (
            "Model",
            "Test AUC (95 % CI)",
            "Sensitivity (95 % CI)",
            "Specificity (95 % CI)",
            "Threshold",
            "Calibration slope",
            "Training AUC",
            "Paper test AUC",
        ),
        rows,
    )
    lines += [
        "",
        "The paper's AUCs (45 test patients) used its lesion ROI for ONFH hips and are given "
        "for orientation only.",
        "",
    ]

    lines += ["## Limitations", ""]
    limitations = []
    if synthetic:
        limitations.append(
            "**Synthetic data.** Trained and tested on phantom images only: the performance "
            "says nothing about real patients, scanners or readers."
        )
    if roi_protocol == "lesion":
        limitations.append(
            "**Label leak.** The paper's ROI protocol leaks the label through the ROI's shape."
        )
    limitations += [
        "**Single sequence.** Coronal T2-weighted fat-suppressed MRI only.",
        "**Early ONFH only.** Trained to tell ARCO I–II ONFH from hips without ONFH; not "
        "for staging, advanced disease or other hip diseases it has not seen.",
        "**Not validated externally.** One internal hold-out split of one cohort; other "
        "hospitals, scanners and populations may perform worse. Validate locally first.",
        "**Calibration.** Probabilities come from a small cohort and may be miscalibrated "
        "(see the calibration slope); recalibrate locally before reading them as risks.",
        "**Small sample, correlated hips.** The confidence intervals treat the hips as "
        "independent, although both hips of a patient are correlated: they are too narrow.",
        "**Optimistic CV.** The classifier comparison uses features selected on all "
        "training hips, so its CV AUCs are optimistic; only the test set is unbiased.",
        "**Fairness not assessed.** The cohort carries no sociodemographic data.",
    ]
    lines += [f"- {item}" for item in limitations]
    lines.append("")

    lines += [
        "## Reporting checklists",
        "",
        "Items of TRIPOD+AI (Collins et al., BMJ 2024) and CLEAR (Kocak et al., Insights "
        "Imaging 2023) that a model bundle can answer, and where they are answered. Items "
        "about a publication (title page, abstract, ethics, funding, registration) are for "
        "the hospital's own report.",
        "",
        *_md_table(("Checklist", "Item", "Topic", "Where answered"), _CHECKLIST),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML building


class _Html(str):
    """Markup built here from escaped parts: :func:`_esc` leaves it unchanged."""

    __slots__ = ()


def _esc(value: object) -> _Html:
    """``value`` as HTML text: escaped, unless it already is :class:`_Html`."""
    if isinstance(value, _Html):
        return value
    return _Html(html.escape(str(value), quote=True))


def _tag(name: str, *content: object, **attrs: str) -> _Html:
    """``<name attrs>content</name>``; ``class_`` stands for ``class``."""
    attributes = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{html.escape(value, quote=True)}"'
        for key, value in attrs.items()
    )
    return _Html(f"<{name}{attributes}>{''.join(_esc(c) for c in content)}</{name}>")


def _join(parts: Iterable[object]) -> _Html:
    return _Html("".join(_esc(p) for p in parts))


def _table(
    header: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    caption: str | None = None,
    highlight: Iterable[int] = (),
) -> _Html:
    """A table; every cell is escaped unless it is :class:`_Html`."""
    marked = set(highlight)
    body = _join(
        _tag("tr", *(_tag("td", c) for c in row), **({"class_": "hl"} if i in marked else {}))
        for i, row in enumerate(rows)
    )
    return _tag(
        "table",
        _tag("caption", caption) if caption else "",
        _tag("thead", _tag("tr", *(_tag("th", h) for h in header))),
        _tag("tbody", body),
    )


def _section(anchor: str, title: str, *content: object) -> _Html:
    return _tag("section", _tag("h2", title), *content, id=anchor)


def _note(text: object) -> _Html:
    return _tag("p", text, class_="note")


def _figure(png: str, alt: str, caption: str) -> _Html:
    # The image is a data: URI, so the file needs nothing from anywhere else.
    img = _Html(f'<img src="data:image/png;base64,{png}" alt="{html.escape(alt, quote=True)}">')
    return _tag("figure", img, _tag("figcaption", caption))


def _with_counts(metric: object) -> _Html:
    """A metric cell: estimate (CI) and, in grey, its numerator/denominator."""
    text = _metric_text(metric)
    if isinstance(metric, Mapping) and metric.get("denominator"):
        counts = f"{metric.get('numerator')}/{metric.get('denominator')}"
        return _join([text, " ", _tag("span", counts, class_="n")])
    return _esc(text)


# --------------------------------------------------------------------------- Markdown


_INLINE: Final = re.compile(r"\\([" + re.escape(_MD_ESCAPABLE) + r"])|`([^`]*)`|\*\*(.+?)\*\*")


def _md_inline(text: str) -> _Html:
    """Inline Markdown (backslash escapes, code, bold) to escaped HTML."""
    parts: list[str] = []
    pos = 0
    for match in _INLINE.finditer(text):
        parts.append(html.escape(text[pos : match.start()]))
        if match.group(1) is not None:
            parts.append(html.escape(match.group(1)))
        elif match.group(2) is not None:
            parts.append(f"<code>{html.escape(match.group(2))}</code>")
        else:
            parts.append(f"<strong>{_md_inline(match.group(3))}</strong>")
        pos = match.end()
    parts.append(html.escape(text[pos:]))
    return _Html("".join(parts))


def _md_cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", body)]


def _markdown_html(markdown: str, *, shift: int = 2) -> _Html:
    """The subset of Markdown :func:`model_card` writes, as escaped HTML.

    Headings (shifted down by ``shift`` levels to nest in the report), paragraphs,
    ``-`` lists, ``>`` block quotes and pipe tables; anything else is a paragraph.
    """
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if not stripped:
            i += 1
        elif heading:
            level = min(6, len(heading.group(1)) + shift)
            out.append(f"<h{level}>{_md_inline(heading.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [_md_cells(b) for b in block if not re.fullmatch(r"\|?[\s:|-]+\|?", b.strip())]
            if rows:
                head = "".join(f"<th>{_md_inline(c)}</th>" for c in rows[0])
                body = "".join(
                    "<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in row) + "</tr>"
                    for row in rows[1:]
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif re.match(r"^[-*]\s+", stripped):
            items = []
            while i < len(lines) and re.match(r"^[-*]\s+", lines[i].strip()):
                items.append(re.sub(r"^[-*]\s+", "", lines[i].strip()))
                i += 1
                # Indented continuation lines belong to the item.
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                    items[-1] += " " + lines[i].strip()
                    i += 1
            out.append("<ul>" + "".join(f"<li>{_md_inline(t)}</li>" for t in items) + "</ul>")
        elif stripped.startswith(">"):
            quoted = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quoted.append(lines[i].strip()[1:].strip())
                i += 1
            out.append(f"<blockquote><p>{_md_inline(' '.join(quoted))}</p></blockquote>")
        else:
            paragraph = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not re.match(r"^(#{1,6}\s|\||[-*]\s|>)", lines[i].strip())
            ):
                paragraph.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_md_inline(' '.join(paragraph))}</p>")
    return _Html("\n".join(out))


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
    model: ModelResult, y: NDArray[np.int64], reported: object
) -> tuple[F64, str, F64, str]:
    """Which training probabilities the metrics describe, and the other kind.

    ``evaluate_split`` on the training hips may have been given the in-sample or the
    out-of-fold probabilities; the curve drawn with the metrics' AUC must be the same
    one, so it is recognised by its AUC (in-sample when both match).
    """
    in_sample, oof = model.train_prob, model.train_oof_prob
    target = _finite(reported)
    if target is not None and len(oof) == len(y):
        auc_in = float(roc_auc_score(y, in_sample))
        auc_oof = float(roc_auc_score(y, oof))
        if abs(auc_oof - target) < 1e-9 and abs(auc_in - target) >= 1e-9:
            return oof, "out-of-fold", in_sample, "in-sample"
    return in_sample, "in-sample", oof, "out-of-fold"


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
                prob, kind, other, other_kind = _train_probabilities(
                    m, y, _get(entry, "auc", "estimate")
                )
                kinds.add(kind)
            else:
                prob, other, other_kind = m.test_prob, np.zeros(0), ""
            _roc_line(ax, m.key, y, prob, entry, deployed)
            if split == "train" and len(other) == len(y):
                fpr, tpr, _ = roc_curve(y, other)
                auc = float(roc_auc_score(y, other))
                ax.plot(
                    fpr,
                    tpr,
                    color=_COLOURS.get(m.key),
                    lw=1,
                    ls="--",
                    alpha=0.7,
                    label=f"{_name(m.key)} {other_kind}: AUC {auc:.3f}",
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


def _classifier_figure(result: TrainingResult) -> tuple[str, dict[str, dict[str, str]]]:
    """Test ROC of all eight classifiers per model, and their test AUC texts."""
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
            auc = roc_auc_delong(y, prob)
            texts[m.key][name] = _ci(auc.auc, [auc.ci_low, auc.ci_high])
            fpr, tpr, _ = roc_curve(y, prob)
            chosen = name == m.classifier_name
            ax.plot(
                fpr,
                tpr,
                color="black" if chosen else colour,
                lw=2.6 if chosen else 1.1,
                zorder=3 if chosen else 2,  # on top of the others, which often coincide
                label=f"{name}{' (chosen)' if chosen else ''}: {auc.auc:.3f}",
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


# --------------------------------------------------------------------------- report parts


_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
color:#1d232a;background:#fff;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:0 24px 48px}
header{background:#1d3557;color:#fff;padding:18px 24px}
header h1{margin:0 0 6px;font-size:1.5em}
header table{color:#fff;border:none;margin:0}
header td,header th{border:none;padding:1px 14px 1px 0;background:none;color:#fff}
.banner{background:#b00020;color:#fff;font-weight:700;padding:12px 24px;font-size:1.1em}
.banner .headline{text-transform:uppercase;letter-spacing:.04em}
.leak{border:4px solid #b00020;background:#fff0f0;padding:4px 18px;margin:18px 0}
h2{border-bottom:2px solid #1d3557;padding-bottom:3px;margin-top:36px}
h3{margin-top:24px}
nav ul{columns:3;padding-left:18px}
table{border-collapse:collapse;margin:10px 0 16px;font-size:.9em}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #c9d1d9;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}
tr.hl td{background:#fff7d6;font-weight:600}
td .n{color:#6a737d;font-size:.85em}
figure{margin:12px 0}
figure img{max-width:100%;height:auto;border:1px solid #e1e4e8}
figcaption,.note{color:#4a5560;font-size:.9em}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:10px;overflow-x:auto;font-size:.85em}
blockquote{border-left:4px solid #b00020;margin:8px 0;padding:2px 12px;background:#fff5f5}
.summary{background:#f3f7fb;border:1px solid #c9d8e8;padding:8px 18px}
.card{border:1px solid #c9d1d9;padding:0 18px}
footer{color:#6a737d;font-size:.85em;margin-top:40px}
"""


def _bundle_rows(summary: Mapping[str, Any], created: str = "Created") -> list[tuple[str, object]]:
    """The header rows that describe the bundle (:meth:`Bundle.summary` keys)."""
    return [
        ("Device UID", summary.get("device_uid", "n/a")),
        (created, summary.get("created", "n/a")),
        ("Deployed model", _name(str(summary.get("deployed_model", "n/a")))),
        ("Threshold", _num(summary.get("threshold"))),
    ]


def _header_block(
    summary: Mapping[str, Any], kind: str, rows: Sequence[tuple[str, object]]
) -> _Html:
    """``<header>``: "name version — kind" and a table of ``rows``."""
    name = str(summary.get("name", "onfh-dlr model"))
    version = str(summary.get("version", ""))
    return _tag(
        "header",
        _tag("h1", f"{name} {version} — {kind}".strip()),
        _tag("table", *(_tag("tr", _tag("th", k), _tag("td", v)) for k, v in rows)),
    )


def _banners(summary: Mapping[str, Any]) -> list[_Html]:
    """The synthetic or not-for-clinical-use banner, when the bundle says so."""
    banners: list[_Html] = []
    warning = str(summary.get("warning") or "").strip()
    if summary.get("synthetic"):
        banners.append(
            _tag(
                "div",
                "⚠ ",
                _tag("span", SYNTHETIC_WARNING, class_="headline"),
                f". {warning}" if warning and warning != SYNTHETIC_WARNING else "",
                class_="banner",
                role="alert",
            )
        )
    elif summary.get("not_for_clinical_use"):
        banners.append(
            _tag(
                "div",
                "⚠ ",
                _tag("span", "not for clinical use", class_="headline"),
                f". {warning}" if warning else "",
                class_="banner",
                role="alert",
            )
        )
    return banners


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


def _roi_source_table(sources: Mapping[str, int], column: str) -> _Html:
    return _table(
        ("ROI source", column), [(_ROI_SOURCE_NAMES.get(k, k), v) for k, v in sources.items()]
    )


def _reason_table(reasons: Sequence[tuple[str, int, int, int]], caption: str) -> _Html:
    """``(reason, hips, ONFH hips, healthy hips)`` rows, the first :data:`_MAX_REASONS`.

    Reasons are grouped, never listed per patient: a report must not carry patient IDs.
    """
    rows: list[tuple[str, int, int, int]] = list(reasons[:_MAX_REASONS])
    rest = reasons[_MAX_REASONS:]
    if rest:
        rows.append(
            (
                f"… {len(rest)} other reasons",
                sum(r[1] for r in rest),
                sum(r[2] for r in rest),
                sum(r[3] for r in rest),
            )
        )
    return _table(("Reason", "Hips", "ONFH", "healthy"), rows, caption=caption)


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


def _split_entry(split_metrics: object, key: str) -> Mapping[str, Any]:
    """One model's entry of one set of hips' metrics (empty when absent)."""
    entry = _get(split_metrics, "models", key)
    return entry if isinstance(entry, Mapping) else {}


def _model_metrics_table(
    split_metrics: object,
    keys: Sequence[str],
    deployed: str,
    *,
    title: str,
    thresholds: Mapping[str, float] | None = None,
) -> _Html:
    """The AUC and the threshold metrics of ``keys`` on one set of hips, one column each.

    ``thresholds`` are shown where an entry lacks its own ``threshold``.
    """
    fallback = thresholds or {}
    header = ["Metric", *(_name(k) + (" (deployed)" if k == deployed else "") for k in keys)]
    entries = [_split_entry(split_metrics, k) for k in keys]
    rows: list[list[object]] = [["AUC (95 % CI, DeLong)", *(_auc_text(e) for e in entries)]]
    for key, label in _METRICS:
        rows.append([label, *(_with_counts(_get(e, "metrics", key)) for e in entries)])
    rows.append(
        [
            "Threshold",
            *(
                _num(e.get("threshold", fallback.get(k)))
                for k, e in zip(keys, entries, strict=True)
            ),
        ]
    )
    n, n_pos = _get(split_metrics, "n"), _get(split_metrics, "n_positive")
    return _table(
        header,
        rows,
        caption=f"{title} (n = {_num(n, 0)}, {_num(n_pos, 0)} with ONFH)",
    )


def _metrics_table(result: TrainingResult, metrics: Mapping[str, Any], split: str) -> _Html:
    models = _models(result)
    return _model_metrics_table(
        _get(metrics, split),
        [m.key for m in models],
        result.config.deployed_model,
        title="Training hips" if split == "train" else "Test hips",
        thresholds={m.key: m.threshold for m in models},
    )


_METRICS_NOTE: Final = (
    "Cells: estimate (95 % CI) and, in grey, the counts behind it. Proportions have "
    "Wilson intervals, F1 a stratified bootstrap interval, the AUC a DeLong interval. "
    "Precision = PPV and recall = sensitivity (the paper reports both names)."
)


def _delong_table(delong: object, where: str) -> _Html:
    """The DeLong tests of one set of hips (``where``, e.g. "test hips"), or why none."""
    delong_rows = []
    if isinstance(delong, list):
        for t in delong:
            if not isinstance(t, Mapping):
                continue
            delong_rows.append(
                (
                    f"{_name(str(t.get('a')))} vs {_name(str(t.get('b')))}",
                    _num(t.get("auc_a")),
                    _num(t.get("auc_b")),
                    _num(t.get("diff")),
                    _num(t.get("z"), 2),
                    _p(t.get("p_value")),
                    t.get("note") or "",
                )
            )
    if not delong_rows:
        return _note(f"No DeLong tests (the {where} need both classes).")
    return _table(
        ("Comparison", "AUC a", "AUC b", "Difference", "z", "p", "Note"),
        delong_rows,
        caption=f"DeLong tests between the models ({where}, paired, two-sided)",
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
            "Each model's classifier is the one with the best mean cross-validated AUC on the "
            "training hips (ties go to LR). The test AUCs are shown for transparency only; "
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


_CALIBRATION_HEADER: Final = ("Slope", "Intercept", "HL statistic", "HL dof", "HL p", "Note")
_CALIBRATION_NOTE: Final = (
    "Calibration slope (ideal 1; below 1: predictions too extreme) and intercept "
    "(ideal 0; above 0: risk under-predicted) by logistic recalibration. "
    "Hosmer–Lemeshow: a small p suggests miscalibration, a large p proves nothing "
    "with few hips."
)


def _calibration_cells(entry: Mapping[str, Any]) -> tuple[object, ...]:
    """One model's cells under :data:`_CALIBRATION_HEADER`."""
    hl = entry.get("hosmer_lemeshow")
    cal = entry.get("calibration")
    hl = hl if isinstance(hl, Mapping) else {}
    cal = cal if isinstance(cal, Mapping) else {}
    notes = "; ".join(str(n) for n in (hl.get("note"), cal.get("note")) if n)
    return (
        _num(cal.get("slope"), 2),
        _num(cal.get("intercept"), 2),
        _num(hl.get("statistic"), 2),
        hl.get("dof", "n/a"),
        _p(hl.get("p_value")),
        notes,
    )


def _calibration_plot(png: str | None, where: str) -> _Html:
    """The calibration figure of ``where`` (e.g. "test hips"), or why there is none."""
    if png is None:
        return _note(f"No calibration curve (the {where} need both classes).")
    return _figure(
        png,
        f"Calibration plot, {where}",
        f"Calibration on the {where}: observed fraction with ONFH against the mean "
        "predicted probability in quantile bins, with 95 % Wilson intervals.",
    )


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


def _decision_section(png: str | None, where: str = "test hips") -> _Html:
    if png is None:
        return _section(
            "decision-curve",
            "Decision curve",
            _note(f"No decision curve (the {where} need both classes)."),
        )
    return _section(
        "decision-curve",
        "Decision curve",
        _figure(
            png,
            f"Decision curves on the {where}",
            "Net benefit of acting on each model's probability, against treating every hip "
            "as ONFH (treat all) or none (treat none), by threshold probability. A model "
            "helps where its curve lies above both.",
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
                "No LASSO coefficient path: some mRMR features are deep (PCA) features, and "
                "the training result does not keep the deep features of the hips."
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
    classifier_png, test_auc = _classifier_figure(result)
    paths: dict[str, tuple[F64, F64, ModelResult]] = {}
    for m in _models(result):
        path = _lasso_path(result, m)
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


def _page(
    summary: Mapping[str, Any],
    kind: str,
    header: _Html,
    overview: _Html,
    sections: Sequence[tuple[str, str, _Html]],
) -> str:
    """The HTML document: header, overview, a table of contents, the sections, a footer."""
    # Internal anchors only (href="#..."): the file links nowhere else.
    nav = _tag(
        "nav",
        _tag(
            "ul",
            *(_tag("li", _tag("a", title, href=f"#{anchor}")) for anchor, title, _ in sections),
        ),
    )
    title = f"{summary.get('name', 'onfh-dlr model')} {summary.get('version', '')}"
    body = _join(
        [
            header,
            _tag(
                "main",
                overview,
                nav,
                *(content for _, _, content in sections),
                _tag(
                    "footer",
                    "Generated by onfh-dlr (model_bundle.report). Self-contained: no external "
                    "resources. Numbers: 3 decimals for AUC and proportions; n/a where a "
                    "value is undefined, with the reason where one is known.",
                ),
            ),
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        + _tag(
            "html",
            _tag(
                "head",
                _Html('<meta charset="utf-8">'),
                _Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
                _tag("title", f"{title.strip()} — {kind}"),
                _tag("style", _Html(_CSS)),
            ),
            _tag("body", body),
            lang="en",
        )
        + "\n"
    )


# --------------------------------------------------------------------------- evaluation report


def _label(row: Mapping[str, str]) -> int | None:
    """The row's 0/1 label, or ``None`` (blank or anything else)."""
    value = row.get("Label")
    return int(value) if value in ("0", "1") else None


def _is_scored(row: Mapping[str, str]) -> bool:
    """Scored as :func:`~model_bundle.external.cohort_metrics` decides: a DLR probability."""
    return bool(row.get("prob_dlr"))


@dataclass(frozen=True)
class _Evaluated:
    """What the predictions rows of an evaluation hold, counted for the page.

    ``curves`` are, per model key, the labels and probabilities of the scored hips with
    a 0/1 label (the hips the metrics describe) that have that model's probability.
    ``reasons`` and ``categories`` are ``(reason, hips, ONFH, healthy)`` rows of the hips
    not scored: full messages and error classes.
    """

    total: int
    scored: int
    labelled: int
    positive: int
    curves: dict[str, tuple[NDArray[np.int64], F64]]
    roi_sources: dict[str, int]
    reasons: list[tuple[str, int, int, int]]
    categories: list[tuple[str, int, int, int]]
    not_scored_unlabelled: int


def _evaluated(rows: Sequence[Mapping[str, str]], keys: Sequence[str]) -> _Evaluated:
    scored = [r for r in rows if _is_scored(r)]
    labelled = [(r, label) for r in scored if (label := _label(r)) is not None]
    curves: dict[str, tuple[NDArray[np.int64], F64]] = {}
    for key in keys:
        pairs = [(label, _finite(r.get(f"prob_{key}"))) for r, label in labelled]
        kept = [(label, prob) for label, prob in pairs if prob is not None]
        curves[key] = (
            np.array([label for label, _ in kept], dtype=np.int64),
            np.array([prob for _, prob in kept], dtype=np.float64),
        )
    failed = [(str(r.get("reason") or ""), _label(r)) for r in rows if not _is_scored(r)]
    reasons = _by_reason(failed)
    categories = _by_reason(
        (_reason_category(reason.strip()) if reason.strip() else "", label)
        for reason, label in failed
    )
    sources = Counter(str(r.get("roi_source") or "unknown") for r in scored)
    return _Evaluated(
        total=len(rows),
        scored=len(scored),
        labelled=len(labelled),
        positive=sum(label for _, label in labelled),
        curves=curves,
        roi_sources=dict(sorted(sources.items())),
        reasons=reasons,
        categories=categories,
        not_scored_unlabelled=sum(1 for _, label in failed if label is None),
    )


def _hips(n: int) -> str:
    return f"{n} hip" if n == 1 else f"{n} hips"


def _evaluated_keys(metrics: Mapping[str, Any]) -> list[str]:
    """The evaluated models: Rad, DL, DLR as far as the metrics have them, then others."""
    models = metrics.get("models")
    if not isinstance(models, Mapping):
        return []
    return [k for k in MODEL_KEYS if k in models] + sorted(
        str(k) for k in models if k not in MODEL_KEYS
    )


#: Rows and metrics agree on an AUC when they differ by less than this (the rows'
#: probabilities are the strings the metrics were computed from).
_AUC_TOLERANCE: Final = 1e-6


def _evaluation_roc_figure(
    ev: _Evaluated, metrics: Mapping[str, Any], keys: Sequence[str], deployed: str
) -> tuple[str | None, list[str]]:
    """ROC curves of the models on the cohort, drawn from the predictions rows.

    Returns
    -------
    png, mismatched
        The figure (``None`` when no model has hips of both classes), and the models
        whose curve's AUC differs from the AUC in ``metrics`` (rows and metrics of
        different runs).
    """
    fig = Figure(figsize=(6.2, 5.8))
    ax = fig.subplots()
    drawn = False
    mismatched: list[str] = []
    for key in keys:
        y, prob = ev.curves.get(key, (np.zeros(0, dtype=np.int64), np.zeros(0)))
        entry = _split_entry(metrics, key)
        reported = _finite(_get(entry, "auc", "estimate"))
        if not _both_classes(y):
            if reported is not None:
                mismatched.append(key)
            continue
        _roc_line(ax, key, y, prob, entry, deployed)
        _operating_point(ax, key, entry)
        drawn = True
        if reported is None or abs(float(roc_auc_score(y, prob)) - reported) > _AUC_TOLERANCE:
            mismatched.append(key)
    if not drawn:
        return None, mismatched
    _roc_axes(ax, f"Scored hips (n = {ev.labelled}, {ev.positive} ONFH)")
    return _png(fig), mismatched


def _evaluation_header(summary: Mapping[str, Any], cohort_name: str) -> _Html:
    rows = [*_bundle_rows(summary, "Bundle created"), ("Cohort", cohort_name)]
    return _join([_header_block(summary, "external evaluation", rows), *_banners(summary)])


def _evaluation_overview(
    ev: _Evaluated, metrics: Mapping[str, Any], summary: Mapping[str, Any], keys: Sequence[str]
) -> _Html:
    deployed = str(summary.get("deployed_model", ""))
    not_scored = ev.total - ev.scored
    counts = (
        f"{ev.scored} of {ev.total} hips scored; {not_scored} not scored"
        + (" (see “Hips not scored”)" if not_scored else "")
        + f". The metrics describe {_num(metrics.get('n'), 0)} scored hips with a label "
        f"({_num(metrics.get('n_positive'), 0)} with ONFH)"
        + (
            f"; {_hips(ev.scored - ev.labelled)} scored without a 0/1 label "
            f"{'is' if ev.scored - ev.labelled == 1 else 'are'} not in them."
            if ev.scored > ev.labelled
            else "."
        )
    )
    notes: list[_Html] = []
    if deployed in keys:
        entry = _split_entry(metrics, deployed)
        threshold = entry.get("threshold", summary.get("threshold"))
        model = (
            f"Deployed model: {_name(deployed)}, at its fixed threshold {_num(threshold)} "
            "(chosen on the training hips, not re-picked on this cohort): AUC "
            f"{_auc_text(entry)}, sensitivity {_metric_text(_get(entry, 'metrics', 'sensitivity'))}"
            f", specificity {_metric_text(_get(entry, 'metrics', 'specificity'))} (95 % CIs)."
        )
        recorded, used = _finite(summary.get("threshold")), _finite(entry.get("threshold"))
        if recorded is not None and used is not None and abs(recorded - used) > 1e-9:
            notes.append(
                _note(
                    f"The bundle's manifest gives the threshold {recorded:.3f}, the metrics "
                    f"used {used:.3f}: check that they belong to the same bundle."
                )
            )
    else:
        model = (
            f"Deployed model: {_name(deployed or 'n/a')}, not evaluated here (the bundle's "
            "metrics give no threshold for it)."
        )
    if _finite(metrics.get("n")) != float(ev.labelled):
        notes.append(
            _note(
                f"The predictions hold {ev.labelled} scored hips with a label, the metrics "
                f"{_num(metrics.get('n'), 0)}: they do not come from the same run."
            )
        )
    return _tag(
        "div",
        _tag("p", counts),
        _tag("p", model),
        *notes,
        _note(
            "External evaluation: the bundle's models and thresholds are applied unchanged; "
            "nothing was refitted or re-tuned on this cohort. The confidence intervals treat "
            "the hips as independent, although both hips of a patient are correlated: they "
            "are too narrow."
        ),
        class_="summary",
    )


def _evaluation_hips_section(ev: _Evaluated) -> _Html:
    negative = ev.labelled - ev.positive
    rows: list[tuple[str, int]] = [
        ("Hips in the cohort", ev.total),
        ("Scored", ev.scored),
        ("… with a 0/1 label (in the metrics)", ev.labelled),
        ("… … with ONFH", ev.positive),
        ("… … without ONFH", negative),
        ("… without a 0/1 label", ev.scored - ev.labelled),
        ("Not scored", ev.total - ev.scored),
    ]
    parts: list[object] = [_table(("Hips", "Count"), rows, caption="Hips of the cohort")]
    if ev.roi_sources:
        parts.append(_roi_source_table(ev.roi_sources, "Scored hips"))
    return _section("cohort", "Cohort", *parts)


def _not_scored_section(ev: _Evaluated) -> _Html:
    not_scored = ev.total - ev.scored
    if not not_scored:
        return _section("not-scored", "Hips not scored", _note("Every hip was scored."))
    parts: list[object] = [
        _tag(
            "p",
            f"{not_scored} of {ev.total} hips could not be scored: they have no probability "
            "and no call, and are not in the metrics. They are counted by reason (ONFH and "
            "healthy by the cohort's label); no patient is listed.",
        )
    ]
    if ev.not_scored_unlabelled:
        parts.append(_note(f"{ev.not_scored_unlabelled} of them have no 0/1 label."))
    if len(ev.categories) < len(ev.reasons):
        parts.append(_reason_table(ev.categories, "Hips not scored, by error class"))
    parts.append(_reason_table(ev.reasons, "Hips not scored, by reason"))
    return _section("not-scored", "Hips not scored", *parts)


def _evaluation_discrimination(
    ev: _Evaluated, metrics: Mapping[str, Any], keys: Sequence[str], deployed: str
) -> _Html:
    png, mismatched = _evaluation_roc_figure(ev, metrics, keys, deployed)
    parts: list[object] = []
    if png is None:
        parts.append(_note("No ROC curve (the scored hips need both classes)."))
    else:
        parts.append(
            _figure(
                png,
                "ROC curves of Rad, DL and DLR on this cohort",
                "ROC curves on the scored hips with a label, drawn from the predictions, "
                "with AUC (95 % DeLong CI). Dots: the operating point at each model's fixed "
                "threshold. The deployed model is drawn thicker.",
            )
        )
    if mismatched:
        parts.append(
            _note(
                "The predictions do not reproduce the metrics' AUC of "
                f"{', '.join(_name(k) for k in mismatched)}: the rows and the metrics do not "
                "come from the same run, and the curves may not match the table."
            )
        )
    missing = [k for k in MODEL_KEYS if k not in keys]
    if missing:
        parts.append(
            _note(
                f"Not evaluated: {', '.join(_name(k) for k in missing)} (the bundle's "
                f"metrics give no threshold for {'it' if len(missing) == 1 else 'them'})."
            )
        )
    parts += [
        _note(_METRICS_NOTE),
        _model_metrics_table(metrics, keys, deployed, title="Scored hips"),
        _delong_table(metrics.get("delong"), "scored hips"),
    ]
    return _section("discrimination", "Discrimination and threshold metrics", *parts)


def _evaluation_calibration(metrics: Mapping[str, Any], keys: Sequence[str]) -> _Html:
    entries = [(k, _split_entry(metrics, k)) for k in keys]
    png = _calibration_figure(entries, "Calibration, scored hips")
    return _section(
        "calibration",
        "Calibration",
        _calibration_plot(png, "scored hips"),
        _note(
            _CALIBRATION_NOTE + " On these external hips, from which nothing was estimated, "
            "the Hosmer–Lemeshow statistic is referred to χ² with as many degrees of freedom "
            "as risk groups (dof = groups, not groups − 2 as on training data)."
        ),
        _table(
            ("Model", *_CALIBRATION_HEADER),
            [(_name(k), *_calibration_cells(e)) for k, e in entries],
            caption="Calibration and Hosmer–Lemeshow (external: dof = groups)",
        ),
    )


def render_evaluation_report(
    rows: Sequence[Mapping[str, str]],
    metrics: Mapping[str, Any],
    *,
    bundle_summary: Mapping[str, Any],
    cohort_name: str,
) -> str:
    """The report of a bundle scored on an external cohort: one self-contained HTML file.

    Parameters
    ----------
    rows
        The predictions rows of :func:`~model_bundle.external.score_cohort` (``PatientID``,
        ``Side``, ``Label``, ``prob_rad``, ``prob_dl``, ``prob_dlr``, ``call``,
        ``roi_source``, ``reason``); a hip that could not be scored has no probabilities
        and a reason. The ROC curves are drawn from them.
    metrics
        :func:`~model_bundle.external.cohort_metrics` of the same rows and the bundle's
        thresholds (an :func:`~model_bundle.evaluation.evaluate_split` dict with
        ``external=True``); a model missing from it is reported as not evaluated.
    bundle_summary
        :meth:`~model_bundle.bundle.Bundle.summary` of the bundle; missing keys show as
        "n/a". With ``synthetic`` (or ``not_for_clinical_use``) the page carries the
        banner.
    cohort_name
        The cohort's name as shown in the header (e.g. the CSV's file name).

    Returns
    -------
    str
        An HTML5 document with inline CSS and base64 PNG figures; no external resource,
        no patient ID (hips not scored are counted by reason).
    """
    keys = _evaluated_keys(metrics)
    deployed = str(bundle_summary.get("deployed_model", ""))
    ev = _evaluated(rows, keys)
    decision = _decision_figure(metrics.get("decision_curve"), "Decision curves, scored hips")
    sections: list[tuple[str, str, _Html]] = [
        ("cohort", "Cohort", _evaluation_hips_section(ev)),
        (
            "discrimination",
            "Discrimination",
            _evaluation_discrimination(ev, metrics, keys, deployed),
        ),
        ("calibration", "Calibration", _evaluation_calibration(metrics, keys)),
        ("decision-curve", "Decision curve", _decision_section(decision, "scored hips")),
        ("not-scored", "Hips not scored", _not_scored_section(ev)),
    ]
    return _page(
        bundle_summary,
        f"external evaluation on {cohort_name}",
        _evaluation_header(bundle_summary, cohort_name),
        _evaluation_overview(ev, metrics, bundle_summary, keys),
        sections,
    )
