"""Radiologists' verdicts on our results (IHE AIRA): read assessment SRs, record, summarise.

An *assessment SR* says, per hip, whether the radiologist accepted, rejected or modified
the result of one of our SRs, and what the radiologist's own call is. The listener stores
every SR it receives in the spool (as any instance), then hands it here instead of to the
series tracker: an assessment never opens a series and never triggers scoring.

Encoding (what :mod:`onfh_dlr.cli.feedback` writes and :func:`parse_assessment` reads)
------------------------------------------------------------------------------------
Comprehensive SR Storage (an assessment needs no spatial coordinates, so not the
Comprehensive 3D SR of our results; the listener accepts Basic Text, Enhanced,
Comprehensive and Comprehensive 3D SR, so an assessment in another SR IOD is read too),
in the study of the assessed SR, which it cites as evidence (Current Requested Procedure
Evidence Sequence, as highdicom writes it; Pertinent Other Evidence is read too)::

    CONTAINER  (99ONFH, AIRA-ASSESSMENT, "AI result assessment")        [document title]
      HAS OBS CONTEXT  CODE (DCM 121005 Observer Type) = (DCM 121006 Person)   [TID 1002]
      HAS OBS CONTEXT  PNAME (DCM 121008 Person Observer Name) = radiologist
      CONTAINS COMPOSITE (99ONFH, ASSESSED-RESULT, "Assessed AI result") -> our SR
      CONTAINS CONTAINER (DCM 125007 Measurement Group)        one per hip assessed
        CONTAINS
          UIDREF (DCM 112040 Tracking Unique Identifier)  the hip's group in our SR
          TEXT   (DCM 112039 Tracking Identifier)         "Right femoral head"
          CODE   (SCT 363698007 Finding Site) = (SCT 2812003 Head of femur)
            HAS CONCEPT MOD  CODE (SCT 272741003 Laterality) = SCT 24028007 Right
                                                               | SCT 7771000 Left
          CODE   (99ONFH, AIRA-VERDICT, "Assessment of AI result")
                   = (99ONFH, ACCEPTED | REJECTED | MODIFIED)
          CODE   (SCT 6574001 Necrosis) = SCT 52101004 Present | SCT 272519000 Absent
                   (the radiologist's call; optional for accept and reject)

Which codes are standard, and why the others are ours: the observer context (TID 1002),
the tracking identifiers, Finding Site, Laterality, Measurement Group and the call (the
same Necrosis / Present / Absent our SR uses, so a call reads the same in both) are
DICOM/SNOMED codes from PS3.16. IHE AIRA (AI Result Assessment, IHE Europe's AI
interest group, trial implementation 2025) records whether a radiologist accepted,
rejected or changed each AI result, but no DICOM code for
"accepted", "rejected" or "modified" an AI result, nor a title for such a document, was
found in PS3.16's tables available here (pydicom's code dictionary has none; the IHE
supplement's own code list could not be consulted), so those four concepts use the
private scheme ``99ONFH``. Swapping them for AIRA's codes once published is a change
of the constants below only (:class:`~onfh_dlr.state.Verdict` is what is stored).

Who may import this module: ``listener.tracker`` (routing), ``listener.status_page``
and ``onfh_dlr.cli.feedback``. pydicom only (the listener stays light).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import UID

from onfh_dlr.errors import StateDBError
from onfh_dlr.state import (
    Assessment,
    AssessmentState,
    HipVerdict,
    Job,
    ModelIdentity,
    RecordedVerdict,
    StateDB,
    Verdict,
)

log = logging.getLogger(__name__)

LOCAL_SCHEME: Final = "99ONFH"

#: SR storage SOP classes the listener accepts (an assessment may come in any of them).
COMPREHENSIVE_SR: Final = UID("1.2.840.10008.5.1.4.1.1.88.33")
SR_SOP_CLASSES: Final = frozenset(
    {
        UID("1.2.840.10008.5.1.4.1.1.88.11"),  # Basic Text SR
        UID("1.2.840.10008.5.1.4.1.1.88.22"),  # Enhanced SR
        COMPREHENSIVE_SR,
        UID("1.2.840.10008.5.1.4.1.1.88.34"),  # Comprehensive 3D SR
    }
)

# Our own codes (no standard one found; module docstring).
ASSESSMENT_TITLE: Final = Code("AIRA-ASSESSMENT", LOCAL_SCHEME, "AI result assessment")
ASSESSED_RESULT: Final = Code("ASSESSED-RESULT", LOCAL_SCHEME, "Assessed AI result")
ASSESSMENT: Final = Code("AIRA-VERDICT", LOCAL_SCHEME, "Assessment of AI result")
VERDICT_CODES: Final[dict[Verdict, Code]] = {
    Verdict.ACCEPT: Code("ACCEPTED", LOCAL_SCHEME, "AI result accepted"),
    Verdict.REJECT: Code("REJECTED", LOCAL_SCHEME, "AI result rejected"),
    Verdict.MODIFY: Code("MODIFIED", LOCAL_SCHEME, "AI result modified"),
}
# Standard codes (PS3.16), the same our SR uses (worker.sr_output, worker.seg_output).
MEASUREMENT_GROUP: Final = Code("125007", "DCM", "Measurement Group")
TRACKING_UID: Final = Code("112040", "DCM", "Tracking Unique Identifier")
TRACKING_ID: Final = Code("112039", "DCM", "Tracking Identifier")
FINDING_SITE: Final = Code("363698007", "SCT", "Finding Site")
HEAD_OF_FEMUR: Final = Code("2812003", "SCT", "Head of femur")
LATERALITY: Final = Code("272741003", "SCT", "Laterality")
SIDES: Final[dict[str, Code]] = {
    "L": Code("7771000", "SCT", "Left"),
    "R": Code("24028007", "SCT", "Right"),
}
SIDE_LABELS: Final = {"L": "Left femoral head", "R": "Right femoral head"}
NECROSIS: Final = Code("6574001", "SCT", "Necrosis")
PRESENT: Final = Code("52101004", "SCT", "Present")
ABSENT: Final = Code("272519000", "SCT", "Absent")
PERSON_OBSERVER_NAME: Final = Code("121008", "DCM", "Person Observer Name")


class AssessmentError(ValueError):
    """An SR that is not a usable assessment of one of our results (the reason)."""


@dataclass(frozen=True)
class HipAssessment:
    """One hip's verdict as the SR states it (before it is matched with our result)."""

    side: str  # "L" | "R"
    verdict: Verdict
    call: bool | None  # the radiologist's call, when stated
    tracking_uid: str = ""


@dataclass(frozen=True)
class ParsedAssessment:
    """An assessment SR read into typed values."""

    sop_instance_uid: str
    study_uid: str
    referenced_sr_uids: tuple[str, ...]
    observer: str
    hips: tuple[HipAssessment, ...]


def _code_of(item: Dataset, keyword: str = "ConceptNameCodeSequence") -> tuple[str, str] | None:
    seq = item.get(keyword)
    if not seq:
        return None
    first = seq[0]
    return (str(first.get("CodeValue", "")), str(first.get("CodingSchemeDesignator", "")))


def _is(code: Code) -> tuple[str, str]:
    return (str(code.value), str(code.scheme_designator))


def is_assessment(dataset: Dataset) -> bool:
    """Whether an SR's document title says it is one of our assessments."""
    return _code_of(dataset) == _is(ASSESSMENT_TITLE)


def _referenced_uids(dataset: Dataset) -> list[str]:
    uids: list[str] = []
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in dataset.get(keyword, []):
            for series in study.get("ReferencedSeriesSequence", []):
                for sop in series.get("ReferencedSOPSequence", []):
                    uids.append(str(sop.get("ReferencedSOPInstanceUID", "")))
    for item in dataset.get("ContentSequence", []):
        if item.get("ValueType") == "COMPOSITE" and _code_of(item) == _is(ASSESSED_RESULT):
            for sop in item.get("ReferencedSOPSequence", []):
                uids.append(str(sop.get("ReferencedSOPInstanceUID", "")))
    return list(dict.fromkeys(u for u in uids if u))


def _hip(group: Dataset) -> HipAssessment:
    side: str | None = None
    verdict: Verdict | None = None
    call: bool | None = None
    tracking = ""
    by_code = {v: k for k, v in ((k, _is(c)) for k, c in VERDICT_CODES.items())}
    for item in group.get("ContentSequence", []):
        name = _code_of(item)
        if name == _is(FINDING_SITE):
            for modifier in item.get("ContentSequence", []):
                if _code_of(modifier) == _is(LATERALITY):
                    value = _code_of(modifier, "ConceptCodeSequence")
                    side = next((s for s, c in SIDES.items() if _is(c) == value), None)
        elif name == _is(ASSESSMENT):
            value = _code_of(item, "ConceptCodeSequence")
            verdict = by_code.get(value) if value is not None else None
            if verdict is None:
                raise AssessmentError(f"unknown assessment value {value}")
        elif name == _is(NECROSIS):
            value = _code_of(item, "ConceptCodeSequence")
            if value not in (_is(PRESENT), _is(ABSENT)):
                raise AssessmentError(f"the radiologist's call {value} is not Present or Absent")
            call = value == _is(PRESENT)
        elif name == _is(TRACKING_UID):
            tracking = str(item.get("UID", ""))
    if side is None:
        raise AssessmentError("a hip's group has no Finding Site with laterality Left or Right")
    if verdict is None:
        raise AssessmentError(f"the {SIDE_LABELS[side].lower()} has no assessment")
    if verdict is Verdict.MODIFY and call is None:
        raise AssessmentError(f"the {SIDE_LABELS[side].lower()} is modified without a call")
    return HipAssessment(side, verdict, call, tracking)


def _observer(dataset: Dataset) -> str:
    for item in dataset.get("ContentSequence", []):
        if _code_of(item) == _is(PERSON_OBSERVER_NAME):
            return str(item.get("PersonName", ""))[:64]
    return ""


def parse_assessment(dataset: Dataset) -> ParsedAssessment:
    """Read an assessment SR into typed values.

    Raises
    ------
    AssessmentError
        If the SR is not an assessment, cites no SR, or a hip's group is incomplete.
    """
    if str(dataset.get("SOPClassUID", "")) not in SR_SOP_CLASSES:
        raise AssessmentError("not a structured report")
    if not is_assessment(dataset):
        raise AssessmentError(
            f"not an assessment: document title {_code_of(dataset)} is not "
            f"({ASSESSMENT_TITLE.value}, {ASSESSMENT_TITLE.scheme_designator})"
        )
    referenced = _referenced_uids(dataset)
    if not referenced:
        raise AssessmentError("the assessment cites no SR (no evidence, no composite reference)")
    hips = [
        _hip(item)
        for item in dataset.get("ContentSequence", [])
        if item.get("ValueType") == "CONTAINER" and _code_of(item) == _is(MEASUREMENT_GROUP)
    ]
    if not hips:
        raise AssessmentError("the assessment judges no hip")
    sides = [h.side for h in hips]
    if len(set(sides)) != len(sides):
        raise AssessmentError("a hip is assessed twice in one SR")
    return ParsedAssessment(
        sop_instance_uid=str(dataset.SOPInstanceUID),
        study_uid=str(dataset.get("StudyInstanceUID", "")),
        referenced_sr_uids=tuple(referenced),
        observer=_observer(dataset),
        hips=tuple(hips),
    )


def model_of(sr_path: Path | None) -> ModelIdentity:
    """The bundle named in our SR's header (model name, software version, Device UID).

    Our SRs carry the bundle as Manufacturer's Model Name, Software Versions and, in
    Contributing Equipment, its Device UID. A purged SR gives an "unknown" identity.
    """
    if sr_path is None or not sr_path.is_file():
        return ModelIdentity("unknown", "unknown", "")
    header = pydicom.dcmread(sr_path, stop_before_pixels=True)
    device_uid = str(header.get("DeviceSerialNumber", ""))
    for equipment in header.get("ContributingEquipmentSequence", []):
        if "DeviceUID" in equipment:
            device_uid = str(equipment.DeviceUID)
    return ModelIdentity(
        name=str(header.get("ManufacturerModelName", "")),
        version=str(header.get("SoftwareVersions", "")),
        device_uid=device_uid,
    )


def judge(job: Job, hips: Sequence[HipAssessment]) -> list[HipVerdict]:
    """Match each assessed hip with the model's call in ``job``.

    Raises
    ------
    AssessmentError
        If a hip assessed has no call in our result (not analysed, or not scored).
    """
    results = job.result.get("hips", {})
    verdicts = []
    for hip in hips:
        result = results.get(hip.side)
        if not isinstance(result, dict) or result.get("call") is None:
            raise AssessmentError(f"our result has no call for the {SIDE_LABELS[hip.side].lower()}")
        model_call = bool(result["call"])
        if hip.call is not None:
            call = hip.call
        else:  # accept: the model's call stands; reject: a binary call flips
            call = model_call if hip.verdict is Verdict.ACCEPT else not model_call
        verdicts.append(HipVerdict(hip.side, hip.verdict, call, model_call))
    return verdicts


def record(
    db: StateDB,
    dataset: Dataset,
    *,
    path: Path,
    calling_ae: str = "",
    received_at: float | None = None,
) -> Assessment:
    """Record a received SR as an assessment, or as not recorded with the reason.

    Never raises for the content of the SR (it is stored in the spool either way); a
    :class:`StateDBError` propagates (the caller logs it; the spool keeps the file).
    """
    at = time.time() if received_at is None else received_at
    uid = str(dataset.get("SOPInstanceUID", ""))
    earlier = db.assessment(uid)
    if earlier is not None:  # re-sent, or read again from the spool at start-up
        at = earlier.received_at
        calling_ae = calling_ae or earlier.calling_ae
    study = str(dataset.get("StudyInstanceUID", ""))
    base = Assessment(
        uid, study, path, calling_ae, "", None, AssessmentState.NOT_RECORDED, "", "", at
    )
    try:
        parsed = parse_assessment(dataset)
    except AssessmentError as exc:
        return _not_recorded(db, base, str(exc))
    job = None
    for sr_uid in parsed.referenced_sr_uids:
        job = db.job_for_sr(sr_uid)
        if job is not None:
            break
    if job is None or job.sr_uid is None:
        cited = ", ".join(parsed.referenced_sr_uids)
        return _not_recorded(
            db, base, f"references no SR this service produced ({cited})", observer=parsed.observer
        )
    base = Assessment(
        uid,
        study,
        path,
        calling_ae,
        job.sr_uid,
        job.id,
        AssessmentState.NOT_RECORDED,
        "",
        parsed.observer,
        at,
    )
    try:
        verdicts = judge(job, parsed.hips)
    except AssessmentError as exc:
        return _not_recorded(db, base, str(exc))
    recorded = Assessment(
        uid,
        study,
        path,
        calling_ae,
        job.sr_uid,
        job.id,
        AssessmentState.RECORDED,
        "",
        parsed.observer,
        at,
    )
    db.record_assessment(recorded, verdicts, model=model_of(job.sr_path), sr_uid=job.sr_uid)
    log.info(
        "assessment %s of job %s recorded: %s",
        uid,
        job.id,
        ", ".join(f"{v.side} {v.verdict.value}" for v in verdicts),
    )
    return recorded


def _not_recorded(db: StateDB, base: Assessment, reason: str, *, observer: str = "") -> Assessment:
    log.warning("SR %s stored but not recorded as a verdict: %s", base.sop_instance_uid, reason)
    kept = Assessment(
        base.sop_instance_uid,
        base.study_uid,
        base.path,
        base.calling_ae,
        base.referenced_sr_uid,
        base.job_id,
        AssessmentState.NOT_RECORDED,
        reason,
        observer or base.observer,
        base.received_at,
    )
    db.record_assessment(kept)
    return kept


def record_stored(db: StateDB, path: Path, header: Dataset, *, calling_ae: str, at: float) -> None:
    """The tracker's hook: record an SR the SCP stored; database trouble is only logged."""
    try:
        record(db, header, path=path, calling_ae=calling_ae, received_at=at)
    except StateDBError as exc:
        # The SR is in the spool; re-sending it records it (assessments are idempotent).
        log.warning("SR %s stored, verdict not recorded (state DB): %s", path.name, exc)


# --- agreement, PPV and NPV per model version -------------------------------------------


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``total``, with its Wilson 95 % interval (None when total is 0)."""

    successes: int
    total: int

    @property
    def value(self) -> float | None:
        return self.successes / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.successes, self.total) if self.total else None

    def text(self) -> str:
        if not self.total:
            return "-"
        low, high = self.interval or (0.0, 0.0)
        return f"{self.successes}/{self.total} = {self.value:.2f} ({low:.2f}-{high:.2f})"


def wilson_interval(
    successes: int, total: int, z: float = 1.959963984540054
) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default).

    Written out rather than imported: the listener may not load the model core
    (``model_bundle.evaluation`` has one) nor statsmodels' import chain (SciPy); the
    tests check it against ``statsmodels.stats.proportion.proportion_confint``.
    """
    if total <= 0:
        raise ValueError("an interval needs at least one observation")
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class ModelSummary:
    """The verdicts on one model version's results (the latest verdict per hip)."""

    model: ModelIdentity
    counts: dict[Verdict, int]
    agreement: Proportion
    ppv: Proportion  # radiologist positive among hips the model called positive
    npv: Proportion  # radiologist negative among hips the model called negative

    @property
    def hips(self) -> int:
        return sum(self.counts.values())


def latest_per_hip(verdicts: Iterable[RecordedVerdict]) -> list[RecordedVerdict]:
    """The newest verdict of each hip of each SR (a radiologist may change their mind)."""
    newest: dict[tuple[str, str], RecordedVerdict] = {}
    for v in verdicts:
        key = (v.sr_uid, v.hip.side)
        if key not in newest or v.assessed_at >= newest[key].assessed_at:
            newest[key] = v
    return list(newest.values())


def summarise(verdicts: Iterable[RecordedVerdict]) -> list[ModelSummary]:
    """Counts, agreement, real-world PPV and NPV per model version, newest verdicts only."""
    by_model: dict[ModelIdentity, list[RecordedVerdict]] = {}
    for v in latest_per_hip(verdicts):
        by_model.setdefault(v.model, []).append(v)
    out = []
    for model, mine in sorted(by_model.items(), key=lambda kv: (kv[0].name, kv[0].version)):
        hips = [v.hip for v in mine]
        positive = [h for h in hips if h.model_call]
        negative = [h for h in hips if not h.model_call]
        out.append(
            ModelSummary(
                model=model,
                counts={k: sum(h.verdict is k for h in hips) for k in Verdict},
                agreement=Proportion(sum(h.agrees for h in hips), len(hips)),
                ppv=Proportion(sum(h.radiologist_call for h in positive), len(positive)),
                npv=Proportion(sum(not h.radiologist_call for h in negative), len(negative)),
            )
        )
    return out


__all__ = [
    "ASSESSMENT_TITLE",
    "SR_SOP_CLASSES",
    "VERDICT_CODES",
    "AssessmentError",
    "HipAssessment",
    "ModelSummary",
    "ParsedAssessment",
    "Proportion",
    "judge",
    "latest_per_hip",
    "model_of",
    "parse_assessment",
    "record",
    "record_stored",
    "summarise",
    "wilson_interval",
]
