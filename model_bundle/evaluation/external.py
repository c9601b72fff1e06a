"""Scoring a labelled cohort with a bundle (`onfh-dlr evaluate`): the deployed path.

Each series is loaded, its hips' ROIs come from the cohort's Mask (a DICOM-SEG) or, when
the Mask is absent or empty, from auto-segmentation (:func:`model_bundle.features.per_hip`,
the loop ``features`` and training run), and the bundle scores them with its fixed
thresholds. Nothing is refitted. Each hip becomes a :class:`PredictionRow`; its
:meth:`~PredictionRow.as_csv` is the ``predictions.csv`` row that
:func:`cohort_metrics` and the evaluation report read.

Imported through :mod:`model_bundle.evaluation` (on first use: it loads serving, features
and torch) by ``onfh_dlr.cli``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.evaluation.split import evaluate_split
from model_bundle.features import SeriesJob, per_hip, run_cohort
from model_bundle.imaging import HipROI, LoadedSeries, Side
from model_bundle.serving import BundleModel, ModelName
from model_bundle.training import MODEL_KEYS


@dataclass(frozen=True)
class PredictionRow:
    """One hip of a scored cohort: its probabilities, or why it has none.

    ``label`` is the cohort's text (``"0"``, ``"1"`` or empty); ``probabilities`` and
    ``call`` are empty / ``None`` when the hip could not be scored, and ``reason`` then
    says why.
    """

    patient_id: str
    side: Side
    label: str
    probabilities: dict[ModelName, float] = field(default_factory=dict)
    call: int | None = None
    roi_source: str = ""
    reason: str = ""

    def as_csv(self) -> dict[str, str]:
        """The ``predictions.csv`` row: probabilities with six decimals, as always."""
        row = {"PatientID": self.patient_id, "Side": self.side.value, "Label": self.label}
        if self.call is None:
            return row | {"reason": self.reason}
        return (
            row
            | {f"prob_{k.value}": f"{v:.6f}" for k, v in self.probabilities.items()}
            | {"call": str(self.call), "roi_source": self.roi_source, "reason": self.reason}
        )

    @classmethod
    def from_csv(cls, row: dict[str, str]) -> PredictionRow:
        """A ``predictions.csv`` row read back (the inverse of :meth:`as_csv`)."""
        call = row.get("call") or ""
        return cls(
            patient_id=row["PatientID"],
            side=Side(row["Side"]),
            label=row.get("Label", ""),
            probabilities={
                m: float(row[f"prob_{m.value}"]) for m in ModelName if row.get(f"prob_{m.value}")
            },
            call=int(call) if call else None,
            roi_source=row.get("roi_source", ""),
            reason=row.get("reason", ""),
        )


def predict_job(model: BundleModel, job: SeriesJob) -> list[PredictionRow]:
    """One prediction row per hip of a series; a hip that cannot be scored keeps a reason."""

    def compute(series: LoadedSeries, roi: HipROI, row: dict[str, str]) -> PredictionRow:
        pred = model.predict_hip(series, roi)
        return PredictionRow(
            row.get("PatientID", ""),
            roi.side,
            row.get("Label", ""),
            pred.probabilities,
            pred.call,
            pred.roi_source,
        )

    def failed(row: dict[str, str], reason: str, source: str) -> PredictionRow:
        side = Side.parse(row.get("Side", ""))
        return PredictionRow(row.get("PatientID", ""), side, row.get("Label", ""), reason=reason)

    return per_hip(job, compute, failed)


_MODEL: BundleModel | None = None


def _load_model(bundle_dir: Path, threads: int | None) -> None:
    # Once per process (the pool's initializer): the backbone and parameters stay loaded.
    global _MODEL
    _MODEL = BundleModel.load(bundle_dir, threads=threads)


def _predict(job: SeriesJob) -> list[PredictionRow]:
    assert _MODEL is not None
    return predict_job(_MODEL, job)


def score_cohort(
    bundle_dir: Path,
    jobs: Sequence[SeriesJob],
    *,
    workers: int = 1,
    on_job: Callable[[list[PredictionRow]], None] | None = None,
) -> list[PredictionRow]:
    """Score every hip of every job with the bundle, ``workers`` processes."""
    # One torch thread per process: two OpenMP pools on two cores slow each other down.
    threads = None if workers <= 1 else 1
    rows: list[PredictionRow] = []
    for done in run_cohort(
        jobs,
        _predict,
        workers=workers,
        initializer=_load_model,
        initargs=(bundle_dir, threads),
        on_result=on_job,
    ):
        rows += done
    return rows


def cohort_metrics(rows: Sequence[dict[str, str]], thresholds: dict[str, float]) -> dict[str, Any]:
    """The paper's metrics on the scored hips (labelled rows with probabilities only).

    ``rows`` are ``predictions.csv`` rows (:meth:`PredictionRow.as_csv`): the metrics are
    those of the file a reader can check, six decimals included.
    """
    scored = [r for r in rows if r.get("prob_dlr") and r.get("Label") in ("0", "1")]
    not_scored = [
        {"PatientID": r["PatientID"], "Side": r["Side"], "reason": r.get("reason", "")}
        for r in rows
        if not r.get("prob_dlr")
    ]
    if not scored:  # nothing to measure; say so rather than fail
        return {
            "n": 0,
            "n_positive": 0,
            "models": {},
            "delong": [],
            "hips_total": len(rows),
            "hips_not_scored": not_scored,
        }
    y = np.array([int(r["Label"]) for r in scored], dtype=np.int64)
    probs: dict[str, NDArray[np.float64]] = {
        k: np.array([float(r[f"prob_{k}"]) for r in scored], dtype=np.float64)
        for k in MODEL_KEYS
        if k in thresholds
    }
    out = evaluate_split(y, probs, thresholds, external=True)
    out["hips_total"] = len(rows)
    out["hips_not_scored"] = not_scored
    return out


__all__ = ["PredictionRow", "cohort_metrics", "predict_job", "score_cohort"]
