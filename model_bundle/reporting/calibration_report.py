"""The documents of a site calibration: ``calibration_report.html`` and the model card section.

What ``onfh-dlr calibrate`` recorded (the local cohort's metrics at the parent's
thresholds and after recalibration, the fitted parameters, the lineage) rendered as a
self-contained HTML page with the calibration curves before and after, and as the
Markdown section appended to the parent's model card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model_bundle.bundle import CalibrationLineage
from model_bundle.reporting.figures import _calibration_figure
from model_bundle.reporting.html import _esc, _Html, _note, _section, _table, _tag, _with_counts
from model_bundle.reporting.parts import _calibration_plot, _page, _split_entry
from model_bundle.reporting.text import _auc_text, _name

_OPTIMISM: str = (
    "The recalibration and the threshold were fitted on this cohort and are measured on it: "
    "the 'after' numbers are optimistic. Evaluate the calibrated bundle on other local "
    "patients (onfh-dlr evaluate) before relying on it."
)


def _keys(metrics: Mapping[str, Any]) -> list[str]:
    models = metrics.get("models")
    return [k for k in ("rad", "dl", "dlr") if isinstance(models, Mapping) and k in models]


def _metrics_table(before: Mapping[str, Any], after: Mapping[str, Any]) -> _Html:
    rows: list[list[object]] = []
    for key in _keys(after):
        b, a = _split_entry(before, key), _split_entry(after, key)
        for when, entry in (("before", b), ("after", a)):
            rows.append(
                [
                    _name(key),
                    when,
                    _auc_text(entry),
                    _with_counts(entry.get("sensitivity")),
                    _with_counts(entry.get("specificity")),
                ]
            )
    return _table(
        ("Model", "", "AUC (95 % CI)", "Sensitivity", "Specificity"),
        rows,
        caption="Calibration cohort: at the parent's thresholds, and after recalibration",
    )


def render_calibration_report(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    summary: Mapping[str, Any],
    lineage: CalibrationLineage,
) -> str:
    """The calibrated bundle's ``calibration_report.html``.

    Parameters
    ----------
    before, after
        :func:`~model_bundle.evaluation.cohort_metrics` of the calibration cohort at the
        parent's thresholds, and of its recalibrated probabilities at the new thresholds.
    summary
        The manifest's ``site_calibration`` metrics (with ``recalibration``).
    lineage
        The new bundle's :class:`~model_bundle.bundle.CalibrationLineage`.
    """
    keys = _keys(after)
    params = summary.get("recalibration", {})
    models = params.get("models", {}) if isinstance(params, Mapping) else {}
    thresholds = params.get("thresholds", {}) if isinstance(params, Mapping) else {}
    overview = _table(
        ("", ""),
        [
            ("Parent Device UID", lineage.parent_device_uid),
            ("Parent manifest sha256", lineage.parent_manifest_sha256),
            (
                "Calibration cohort",
                f"{lineage.cohort_patients} patients, {lineage.cohort_hips} hips",
            ),
            ("Threshold rule", str(params.get("rule", ""))),
        ],
        caption="Lineage",
    )
    fitted = _table(
        ("Model", "Intercept", "Slope", "Fit", "New threshold"),
        [
            (
                _name(k),
                f"{models[k]['intercept']:.3f}",
                f"{models[k]['slope']:.3f}",
                models[k]["method"],
                f"{thresholds.get(k, float('nan')):.3f}",
            )
            for k in keys
            if k in models
        ],
        caption="logit p' = intercept + slope · logit p",
    )
    curves = [
        (
            f"curves-{when}",
            f"Calibration {when}",
            _calibration_plot(
                _calibration_figure(
                    [(k, _split_entry(metrics, k)) for k in keys], f"Calibration {when}"
                ),
                f"calibration cohort, {when} recalibration",
            ),
        )
        for when, metrics in (("before", before), ("after", after))
    ]
    sections: list[tuple[str, str, _Html]] = [
        ("recalibration", "Recalibration", _section("recalibration", "Recalibration", fitted)),
        *((a, t, _section(a, t, c)) for a, t, c in curves),
        (
            "metrics",
            "Threshold metrics",
            _section("metrics", "Threshold metrics", _metrics_table(before, after)),
        ),
    ]
    page_summary = {"name": "site calibration", "version": ""}
    header = _tag("header", _tag("h1", "Site calibration"), _note(_esc(_OPTIMISM)))
    return _page(page_summary, "site calibration", header, overview, sections)


def site_calibration_markdown(summary: Mapping[str, Any], lineage: CalibrationLineage) -> str:
    """The section ``calibrate`` appends to the parent's model card."""
    params = summary.get("recalibration", {})
    models = params.get("models", {})
    thresholds = params.get("thresholds", {})
    lines = [
        "",
        "## Site calibration",
        "",
        f"This bundle is bundle `{lineage.parent_device_uid}` (manifest sha256 "
        f"`{lineage.parent_manifest_sha256}`) recalibrated on a local cohort of "
        f"{lineage.cohort_patients} patients ({lineage.cohort_hips} scored hips): each "
        "model's probability p is replaced by p' with logit p' = intercept + slope · logit p, "
        f"and the thresholds were chosen on p' ({params.get('rule')}). The model, its "
        "features and its ranking of hips are the parent's. " + _OPTIMISM,
        "",
        "| Model | Intercept | Slope | Fit | Threshold |",
        "|---|---|---|---|---|",
    ]
    for key, m in models.items():
        lines.append(
            f"| {_name(key)} | {m['intercept']:.3f} | {m['slope']:.3f} | {m['method']} "
            f"| {thresholds.get(key, float('nan')):.3f} |"
        )
    lines += ["", "See `calibration_report.html` for the calibration curves before and after.", ""]
    return "\n".join(lines)
