"""``onfh-dlr calibrate``: recalibrate a bundle on a labelled local cohort, write a new bundle.

The cohort is scored with the parent bundle exactly as ``evaluate`` scores it
(:func:`model_bundle.evaluation.score_cohort`: the cohort's Mask, or auto-segmentation),
each model is recalibrated on those out-of-the-box probabilities
(:func:`~model_bundle.calibration.fit.fit_recalibration`), and the new bundle is the
parent's files plus ``calibration.json``, with a new Device UID, the parent's Device UID
and manifest hash, the cohort's size and metrics, a model card section and a report with
the calibration curves before and after. Serving applies ``calibration.json``
(:class:`model_bundle.serving.BundleModel`); nothing else of the model changes.

The child's reference statistics (``reference.json``, :func:`calibrated_reference`) take
the output part from the calibration cohort (its recalibrated probabilities and the
positive-call rate at the new threshold: what the calibrated model says at this site)
and keep the parent's input part (acquisition and features of the training hips):
calibration changes no input of the model, and a calibration cohort (ten patients or
more) is too small to describe an input range of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model_bundle.bundle import (
    MANIFEST_NAME,
    REFERENCE_FILE,
    Bundle,
    CalibrationLineage,
    ReferenceStatistics,
    canonical_json,
    load_bundle,
    write_bundle,
)
from model_bundle.calibration.fit import MIN_PATIENTS, CalibrationError, fit_recalibration
from model_bundle.calibration.recalibration import (
    CALIBRATION_FILE,
    Recalibration,
    ThresholdRule,
    compose,
)
from model_bundle.evaluation import PredictionRow, cohort_metrics, score_cohort
from model_bundle.features import SeriesJob
from model_bundle.monitoring import output_reference
from model_bundle.serving import ModelName
from model_bundle.training import dump_json

#: The calibrated bundle's report (calibration curves before and after).
REPORT_FILE = "calibration_report.html"
_COMPUTED = ("created", "device_uid", "files", "format", "format_version", "libraries")


@dataclass(frozen=True)
class CalibrationResult:
    """What ``calibrate`` made: the new bundle, its parameters, the cohort's metrics.

    ``before`` are the cohort's metrics at the parent's thresholds, ``after`` those of
    the recalibrated probabilities at the new thresholds (both as ``evaluate`` reports
    them; fitted and measured on the same cohort, so ``after`` is optimistic).
    """

    bundle: Bundle
    recalibration: Recalibration
    before: dict[str, Any]
    after: dict[str, Any]
    patients: int
    hips: int


def calibrate_bundle(
    parent_dir: Path,
    jobs: Sequence[SeriesJob],
    out: Path,
    *,
    rule: ThresholdRule = ThresholdRule.YOUDEN,
    target_sensitivity: float | None = None,
    workers: int = 1,
    on_job: Callable[[list[PredictionRow]], None] | None = None,
) -> CalibrationResult:
    """Score ``jobs`` with the bundle in ``parent_dir``; write its calibrated child to ``out``."""
    parent = load_bundle(parent_dir)
    # Refuse a cohort that is too small before spending minutes scoring it.
    listed = len({hip.get("PatientID", "") for job in jobs for hip in job.hips})
    if listed < MIN_PATIENTS:
        raise CalibrationError(
            f"the calibration cohort lists {listed} patients; at least {MIN_PATIENTS} are needed"
        )
    rows = score_cohort(parent_dir, jobs, workers=workers, on_job=on_job)
    return write_calibrated(parent, rows, out, rule=rule, target_sensitivity=target_sensitivity)


def write_calibrated(
    parent: Bundle,
    rows: Sequence[PredictionRow],
    out: Path,
    *,
    rule: ThresholdRule = ThresholdRule.YOUDEN,
    target_sensitivity: float | None = None,
) -> CalibrationResult:
    """Fit the recalibration on the parent's scored ``rows`` and write the new bundle.

    Raises
    ------
    CalibrationError
        The cohort is too small, has one class, or a model's slope is not positive.
    """
    keys = [ModelName(k) for k in parent.manifest.models]
    fitted, patients, hips = fit_rows(rows, keys, rule=rule, target_sensitivity=target_sensitivity)
    before = cohort_metrics([r.as_csv() for r in rows], parent.thresholds())
    deployed = ModelName(parent.deployed_model)
    recalibrated = [recalibrated_row(r, fitted, deployed) for r in rows]
    after = cohort_metrics([r.as_csv() for r in recalibrated], dict(fitted.thresholds))
    # A calibrated parent's outputs were already recalibrated: the child's parameters
    # map the raw model output, so the two compose into one.
    stored = fitted
    earlier_params = parent.recalibration()
    if earlier_params is not None:
        earlier = Recalibration.from_json(earlier_params)
        stored = replace(
            fitted,
            models={
                k: compose(earlier.models[k], m) if k in earlier.models else m
                for k, m in fitted.models.items()
            },
        )
    lineage = CalibrationLineage(
        parent_device_uid=parent.device_uid,
        parent_manifest_sha256=hashlib.sha256(
            (parent.directory / MANIFEST_NAME).read_bytes()
        ).hexdigest(),
        parameters=CALIBRATION_FILE,
        cohort_patients=patients,
        cohort_hips=hips,
    )
    summary = _summary(before, after, stored, lineage)
    files = _child_files(parent, stored, summary, before, after, lineage)
    reference = calibrated_reference(
        parent, recalibrated, deployed, stored.thresholds[deployed.value], lineage
    )
    files[REFERENCE_FILE] = canonical_json(reference.to_json())
    manifest = {k: v for k, v in parent.manifest.as_dict().items() if k not in _COMPUTED}
    manifest |= {
        "calibration": lineage.as_dict(),
        "metrics": dict(parent.manifest.metrics) | {"site_calibration": summary},
        "threshold": stored.thresholds[deployed.value],
        "version": _child_version(parent.manifest.version),
        "reference_statistics": REFERENCE_FILE,
    }
    bundle = write_bundle(out, manifest, files)
    return CalibrationResult(bundle, stored, before, after, patients, hips)


def fit_rows(
    rows: Sequence[PredictionRow],
    keys: Sequence[ModelName],
    *,
    rule: ThresholdRule = ThresholdRule.YOUDEN,
    target_sensitivity: float | None = None,
) -> tuple[Recalibration, int, int]:
    """Fit every model in ``keys`` on the scored, labelled ``rows`` of a local cohort.

    Returns the recalibration, and how many patients and hips it was fitted on.

    Raises
    ------
    CalibrationError
        See :func:`~model_bundle.calibration.fit.fit_recalibration`.
    """
    scored = [r for r in rows if r.call is not None and r.label in ("0", "1")]
    patients = len({r.patient_id for r in scored})
    y = np.array([int(r.label) for r in scored], dtype=np.int64)
    probs = {
        k.value: np.array([r.probabilities[k] for r in scored], dtype=np.float64) for k in keys
    }
    fitted = fit_recalibration(
        y, probs, patients=patients, rule=rule, target_sensitivity=target_sensitivity
    )
    return fitted, patients, len(scored)


def calibrated_reference(
    parent: Bundle,
    recalibrated: Sequence[PredictionRow],
    deployed: ModelName,
    threshold: float,
    lineage: CalibrationLineage,
) -> ReferenceStatistics:
    """The calibrated bundle's reference statistics (see the module docstring).

    Parameters
    ----------
    parent
        The parent bundle (its inputs' reference is kept, if it has one).
    recalibrated
        The calibration cohort's rows with recalibrated probabilities.
    deployed, threshold
        The deployed model and its calibrated threshold.
    lineage
        The cohort's size, for the description.
    """
    scored = [r.probabilities[deployed] for r in recalibrated if r.call is not None]
    output = output_reference(
        deployed.value,
        f"recalibrated probabilities of the site calibration cohort ({len(scored)} hips of "
        f"{lineage.cohort_patients} patients), at the calibrated threshold",
        scored,
        threshold,
    )
    inherited = parent.reference()
    note = (
        "site calibration: the output statistics are the calibration cohort's; the input "
        "statistics are the parent's training hips' (calibration changes no input, and a "
        "calibration cohort is too small to describe an input range)"
    )
    if inherited is None:
        return ReferenceStatistics(
            source="the parent bundle has no reference statistics of its inputs",
            acquisition=None,
            features={},
            output=output,
            notes=(note,),
        )
    notes = inherited.notes if note in inherited.notes else (*inherited.notes, note)
    return replace(inherited, output=output, notes=notes)


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CalibrationError(f"{CALIBRATION_FILE} is not a JSON object")
    return value


def recalibrated_row(
    row: PredictionRow, fitted: Recalibration, deployed: ModelName
) -> PredictionRow:
    """``row`` as the calibrated bundle scores it: probabilities recalibrated, the
    deployed model's call at its new threshold (an unscored row unchanged)."""
    if row.call is None:
        return row
    probs = {k: fitted.apply(k.value, p) for k, p in row.probabilities.items()}
    call = int(probs[deployed] >= fitted.thresholds[deployed.value])
    return replace(row, probabilities=probs, call=call)


def _child_version(version: str) -> str:
    """The parent's version with build metadata ``calibrated.<UTC time>`` (semver ignores
    build metadata in precedence: the model is the parent's, recalibrated)."""
    core = re.split(r"\+", version, maxsplit=1)[0]
    return f"{core}+calibrated.{datetime.now(UTC):%Y%m%d%H%M%S}"


def _summary(
    before: dict[str, Any],
    after: dict[str, Any],
    fitted: Recalibration,
    lineage: CalibrationLineage,
) -> dict[str, Any]:
    """The manifest's ``site_calibration`` metrics: small, the full ones are in metrics.json."""

    def at_threshold(metrics: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, entry in metrics.get("models", {}).items():
            # AUC is the model's own; the threshold metrics sit under "metrics".
            found = {"auc": entry.get("auc")} | {
                name: (entry.get("metrics") or {}).get(name)
                for name in ("sensitivity", "specificity")
            }
            out[key] = {
                name: value.get("estimate")
                for name, value in found.items()
                if isinstance(value, dict)
            }
        return out

    value = {
        "cohort_hips": lineage.cohort_hips,
        "cohort_patients": lineage.cohort_patients,
        "recalibration": fitted.to_json(),
        "before": at_threshold(before),
        "after": at_threshold(after),
    }
    loaded: dict[str, Any] = json.loads(dump_json(value))
    return loaded


def _child_files(
    parent: Bundle,
    fitted: Recalibration,
    summary: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    lineage: CalibrationLineage,
) -> dict[str, bytes | Path]:
    from model_bundle.reporting import render_calibration_report, site_calibration_markdown

    card = parent.manifest.references["model_card"]
    files: dict[str, bytes | Path] = {
        path: parent.path(path)
        for path in parent.manifest.files
        if path not in ("metrics.json", card, CALIBRATION_FILE, REPORT_FILE, REFERENCE_FILE)
    }
    metrics = _object(parent.json("metrics.json"))
    metrics = metrics | {
        "thresholds": dict(fitted.thresholds),
        "site_calibration": json.loads(dump_json({"before": before, "after": after} | summary)),
    }
    files["metrics.json"] = canonical_json(metrics)
    files[CALIBRATION_FILE] = canonical_json(fitted.to_json())
    files[card] = parent.read_bytes(card) + site_calibration_markdown(summary, lineage).encode()
    files[REPORT_FILE] = render_calibration_report(before, after, summary, lineage).encode()
    return files
