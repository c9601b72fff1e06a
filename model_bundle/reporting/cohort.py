"""The cohort of a training run as the reports count it: hips per split and label, where
their ROIs came from, and the hips that could not be used, grouped by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from model_bundle.training import TrainingResult

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
