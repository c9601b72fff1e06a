# ruff: noqa: RUF001
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""The report of ``onfh-dlr evaluate``: a bundle scored on an external cohort at its fixed
thresholds, with the same figures and tables as the training report, from the
predictions rows and :func:`~model_bundle.evaluation.cohort_metrics`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from model_bundle.reporting.cohort import _by_reason, _reason_category
from model_bundle.reporting.figures import (
    _both_classes,
    _calibration_figure,
    _decision_figure,
    _operating_point,
    _png,
    _roc_axes,
    _roc_line,
)
from model_bundle.reporting.html import _figure, _Html, _join, _note, _section, _table, _tag
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
    _split_entry,
)
from model_bundle.reporting.text import _auc_text, _finite, _get, _metric_text, _name, _num
from model_bundle.training import MODEL_KEYS

F64 = NDArray[np.float64]


# --------------------------------------------------------------------------- evaluation report


def _label(row: Mapping[str, str]) -> int | None:
    """The row's 0/1 label, or ``None`` (blank or anything else)."""
    value = row.get("Label")
    return int(value) if value in ("0", "1") else None


def _is_scored(row: Mapping[str, str]) -> bool:
    """Scored as :func:`~model_bundle.evaluation.cohort_metrics` decides: a DLR probability."""
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
        The predictions rows of :func:`~model_bundle.evaluation.score_cohort` (``PatientID``,
        ``Side``, ``Label``, ``prob_rad``, ``prob_dl``, ``prob_dlr``, ``call``,
        ``roi_source``, ``reason``); a hip that could not be scored has no probabilities
        and a reason. The ROC curves are drawn from them.
    metrics
        :func:`~model_bundle.evaluation.cohort_metrics` of the same rows and the bundle's
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
