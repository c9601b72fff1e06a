"""Writing a trained model out: the bundle, its report, metrics and per-hip predictions.

The bundle directory holds everything the service loads (verified on every load) and
the evidence for it: ``report.html``, ``metrics.json`` and ``predictions.csv`` are
listed in the manifest like every other file, so they cannot drift from the model.
``reference.json`` holds the reference statistics of the training hips' inputs and the
deployed model's output (:func:`training_reference`), which the service checks each
study against and measures drift from.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.bundle import (
    REFERENCE_FILE,
    Bundle,
    Distribution,
    ReferenceStatistics,
    canonical_json,
    write_bundle,
)
from model_bundle.evaluation import SiteValidation, auc_entry, evaluate_split
from model_bundle.features import (
    FEATURE_NAMES,
    HIP_MARGIN,
    NormalisationProfile,
    read_params_text,
    save_backbone,
)
from model_bundle.imaging import Acquisition
from model_bundle.models import to_json
from model_bundle.monitoring import acquisition_reference, distribution_of, output_reference
from model_bundle.training.fit import MODEL_KEYS, TrainingResult, TrainProbabilities

F64 = NDArray[np.float64]
SYNTHETIC_WARNING = "synthetic demonstration — not for clinical use"
DEFAULT_INTENDED_USE = (
    "Second reader for early osteonecrosis of the femoral head (ARCO I-II) on a coronal "
    "T2-weighted fat-suppressed hip MRI series of adults: a per-hip probability and a "
    "suspected / not suspected call for the radiologist, who makes the diagnosis."
)
PREDICTION_COLUMNS = (
    "PatientID",
    "Side",
    "Label",
    "split",
    "prob_rad",
    "prob_dl",
    "prob_dlr",
    "call",
    "reason",
)


def training_metrics(result: TrainingResult) -> dict[str, Any]:
    """Train and test metrics of Rad, DL and DLR at their training-fixed thresholds."""
    y = result.y
    thresholds: dict[str, float] = {k: m.threshold for k, m in result.models.items()}
    out: dict[str, Any] = {}
    # The training metrics describe the in-sample probabilities, and say so: the report
    # draws the curve of the kind recorded here.
    kind = TrainProbabilities.IN_SAMPLE
    train = {k: m.train_probabilities(kind) for k, m in result.models.items()}
    out["train"] = evaluate_split(y[result.train_idx], train, thresholds)
    out["train_probabilities"] = kind.value
    test = {k: m.test_prob for k, m in result.models.items()}
    out["test"] = evaluate_split(y[result.test_idx], test, thresholds)
    # What the report's figures label besides the metrics: the training AUC of both kinds
    # of probabilities, and the test AUC of every classifier compared.
    out["train_auc"] = {
        k: {
            each.value: auc_entry(y[result.train_idx], m.train_probabilities(each))
            for each in TrainProbabilities
        }
        for k, m in result.models.items()
    }
    out["test_auc_by_classifier"] = {
        k: {name: auc_entry(y[result.test_idx], p) for name, p in m.test_prob_by_classifier.items()}
        for k, m in result.models.items()
    }
    out["cv_auc"] = {
        k: {name: {"mean": auc, "folds": list(folds)} for name, (auc, folds) in m.cv_auc.items()}
        for k, m in result.models.items()
    }
    out["chosen_classifier"] = {k: m.classifier_name for k, m in result.models.items()}
    out["skipped_classifiers"] = {k: m.skipped_classifiers for k, m in result.models.items()}
    # Every model's training-fixed threshold: `evaluate` applies them to other cohorts.
    out["thresholds"] = thresholds
    return out


def prediction_rows(result: TrainingResult, deployed: str) -> list[dict[str, str]]:
    """One row per hip of the cohort, usable or not (``predictions.csv``)."""
    rows: list[dict[str, str]] = []
    position = {id(s): i for i, s in enumerate(result.usable)}
    train = {int(i): n for n, i in enumerate(result.train_idx)}
    test = {int(i): n for n, i in enumerate(result.test_idx)}
    for sample in result.samples:
        row = {"PatientID": sample.patient_id, "Side": sample.side, "Label": str(sample.label)}
        i = position.get(id(sample))
        if i is None:
            rows.append(
                row
                | {
                    "split": "",
                    "prob_rad": "",
                    "prob_dl": "",
                    "prob_dlr": "",
                    "call": "",
                    "reason": sample.reason,
                }
            )
            continue
        split, n, attr = (
            ("train", train[i], "train_prob") if i in train else ("test", test[i], "test_prob")
        )
        probs = {k: float(getattr(m, attr)[n]) for k, m in result.models.items()}
        call = int(probs[deployed] >= result.models[deployed].threshold)  # type: ignore[index]
        rows.append(
            row
            | {"split": split, "call": str(call), "reason": ""}
            | {f"prob_{k}": f"{probs[k]:.6f}" for k in MODEL_KEYS}
        )
    return rows


def csv_bytes(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> bytes:
    """Rows as CSV bytes (``\\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def training_reference(result: TrainingResult) -> ReferenceStatistics:
    """The reference statistics of a training run, on its training hips only.

    - acquisition: one entry per training series (both hips of a series share it);
    - features: every selected feature of every model and every deep PCA component, on
      the training hips, unscaled (what serving reports as the model's inputs);
    - output: the deployed model's out-of-fold probabilities of the training hips and the
      positive-call rate at its threshold. Out-of-fold, not in-sample: each comes from a
      fit that did not see that hip, as the service's hips are unseen, and they are what
      the threshold was fixed on.
    """
    train = [int(i) for i in result.train_idx]
    hips = [result.usable[i] for i in train]
    by_series: dict[str, Acquisition] = {}
    for sample in hips:
        if sample.acquisition is not None:
            series = sample.row.get("Image") or f"{sample.patient_id}"
            by_series.setdefault(series, sample.acquisition)
    acquisition = acquisition_reference(list(by_series.values())) if by_series else None
    radiomics = np.stack([s.radiomics for s in hips])  # type: ignore[misc]
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    pca_column = {name: i for i, name in enumerate(result.pca.names)}
    deep = result.pca_features[train] if result.pca_features is not None else None
    wanted = {n for m in result.models.values() for n in m.selector.selected_names}
    wanted |= set(result.pca.names) if deep is not None else set()
    features: dict[str, Distribution] = {}
    for name in sorted(wanted):
        if name in column:
            features[name] = distribution_of(radiomics[:, column[name]])
        elif deep is not None and name in pca_column:
            features[name] = distribution_of(deep[:, pca_column[name]])
    deployed = result.config.deployed_model
    model = result.models[deployed]
    output = output_reference(
        deployed,
        f"out-of-fold probabilities of the {len(hips)} training hips (cross-validated, "
        "as the threshold was fixed)",
        model.train_oof_prob,
        model.threshold,
    )
    patients = len({s.patient_id for s in hips})
    return ReferenceStatistics(
        source=(
            f"training: {len(hips)} hips of {patients} patients, {len(by_series)} series "
            "(the training split; test hips are not included)"
        ),
        acquisition=acquisition,
        features=features,
        output=output,
    )


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    # The manifest carries the headline numbers; metrics.json has everything.
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        out[split] = {}
        for key, entry in metrics[split]["models"].items():
            m = entry.get("metrics", {})
            out[split][key] = {
                "auc": entry.get("auc", {}).get("estimate"),
                "auc_ci95": entry.get("auc", {}).get("ci95"),
                "sensitivity": m.get("sensitivity", {}).get("estimate"),
                "specificity": m.get("specificity", {}).get("estimate"),
            }
    return out


def publish(
    result: TrainingResult,
    out_dir: Path,
    *,
    name: str = "onfh-dlr",
    version: str = "1.0.0",
    synthetic: bool = False,
    intended_use: str = DEFAULT_INTENDED_USE,
    roi_protocol: str = "head",
    shape_leak: dict[str, Any] | None = None,
    site_validation: SiteValidation | None = None,
) -> Bundle:
    """Write ``result`` as a bundle at ``out_dir`` with its report, metrics and predictions.

    ``site_validation`` (a leave-one-site-out run of the same recipe) is carried as
    ``site_validation.json`` and shown in the model card and the report.
    """
    from pydicom.uid import generate_uid

    from model_bundle.reporting import model_card, render_report

    config = result.config
    deployed = config.deployed_model
    metrics = training_metrics(result)
    device_uid = str(generate_uid())
    # The parameter file the features were computed with, byte for byte: serving reads
    # its parameters from the bundle, so it computes the features training used.
    params = (
        config.radiomics_params.read_bytes()
        if config.radiomics_params is not None
        else read_params_text().encode("utf-8")
    )
    files: dict[str, bytes | Path] = {"radiomics_params.yaml": params}
    files["preprocessing.json"] = canonical_json(
        {
            "roi": "whole femoral head of every hip (DICOM-SEG, else auto-segmentation)",
            "roi_protocol": roi_protocol,
            "profile": config.preprocessing_profile.value,
            "radiomics": _RADIOMICS_INPUT[config.preprocessing_profile],
            "deep_input": {
                "region_margin_mm": HIP_MARGIN,
                "resample_mm": 1.0,
                "interpolator": "bspline",
                "normalisation": "z-score over the hip region",
                "slice": "coronal slice with the largest ROI area",
                "crop_margin": 0.15,
                "size": 224,
            },
            "weights_dtype": config.weights_dtype,
        }
    )
    models: dict[str, dict[str, str]] = {}
    feature_names: dict[str, list[str]] = {}
    for key, m in result.models.items():
        refs = {
            "selector": f"models/{key}/selector.json",
            "classifier": f"models/{key}/classifier.json",
        }
        files[refs["selector"]] = canonical_json(m.selector.to_json())
        files[refs["classifier"]] = canonical_json(to_json(m.classifier))
        if key != "rad":
            refs["pca"] = f"models/{key}/pca.json"
            files[refs["pca"]] = canonical_json(result.pca.to_json())
        models[key] = refs
        feature_names[key] = list(m.selector.selected_names)
    warning = SYNTHETIC_WARNING if synthetic else ""
    summary = {
        "name": name,
        "version": version,
        "device_uid": device_uid,
        "deployed_model": deployed,
        "threshold": result.models[deployed].threshold,
        "synthetic": synthetic,
        "warning": warning,
    }
    reference = training_reference(result)
    card = model_card(
        result,
        name=name,
        version=version,
        synthetic=synthetic,
        intended_use=intended_use,
        metrics=metrics,
        roi_protocol=roi_protocol,
        site_validation=site_validation,
        reference=reference,
    )
    if site_validation is not None:
        files["site_validation.json"] = canonical_json(site_validation.summary)
    files["MODEL_CARD.md"] = card.encode("utf-8")
    files["report.html"] = render_report(
        result,
        metrics,
        manifest_summary=summary,
        model_card_md=card,
        roi_protocol=roi_protocol,
        shape_leak=shape_leak,
    ).encode("utf-8")
    files["metrics.json"] = canonical_json(metrics)
    files["predictions.csv"] = csv_bytes(prediction_rows(result, deployed), PREDICTION_COLUMNS)
    files[REFERENCE_FILE] = canonical_json(reference.to_json())
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "resnet18.safetensors"
        save_backbone(result.backbone, weights, dtype=config.weights_dtype)
        files["resnet18.safetensors"] = weights.read_bytes()
    manifest = {
        "name": name,
        "version": version,
        "feature_names": feature_names,
        "models": models,
        "deployed_model": deployed,
        "threshold": result.models[deployed].threshold,
        "metrics": _headline(metrics),
        "intended_use": intended_use,
        "synthetic": synthetic,
        "not_for_clinical_use": synthetic,
        "warning": warning,
        "reference_statistics": REFERENCE_FILE,
    }
    return write_bundle(out_dir, manifest, files, device_uid=device_uid)


#: What ``preprocessing.json`` says of the radiomics input under each profile.
_RADIOMICS_INPUT: dict[NormalisationProfile, str] = {
    NormalisationProfile.HIP: (
        "PyRadiomics on the hip region (ROI box + region_margin_mm, as deep_input), "
        "z-scored over that region times normalizeScale, normalize off; resampling to "
        "1 mm as radiomics_params.yaml says"
    ),
    NormalisationProfile.PAPER: (
        "PyRadiomics from the series image; resampling to 1 mm and normalisation "
        "as radiomics_params.yaml says"
    ),
}


def dump_json(value: Any) -> str:
    """JSON for humans (sorted, indented), refusing NaN like the bundle does."""
    return json.dumps(value, sort_keys=True, indent=2, allow_nan=False, default=_default) + "\n"


def _default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")
