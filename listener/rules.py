"""Admission rules: which closed series are scored.

The model was built on coronal T2-weighted fat-suppressed (T2-FS) hip MRI, so by default
a series is admitted only when it is

- of an admitted modality (MR);
- coronal: the slice normal lies within ``coronal_max_angle`` degrees of the patient's
  anterior-posterior axis;
- T2-weighted: TE >= ``t2_min_echo_time`` and TR >= ``t2_min_repetition_time``, or STIR
  timing (an inversion time in ``stir_inversion_time`` with a long TR: STIR contrast is
  T2-like and is read as such for ONFH), or a series description matching one of
  ``t2_descriptions``;
- fat-suppressed: a ScanOptions value in ``fat_suppression_scan_options``, Enhanced MR
  Spectrally Selected Suppression FAT/FAT_AND_WATER, an inversion time in the STIR range,
  or a series description matching one of ``fat_suppression_descriptions``.

Every rule can be changed or switched off in a YAML file whose keys are the fields of
:class:`AdmissionRules`. A skipped series gets a reason that names the rule and the values
seen, e.g. ``not T2-weighted: TE 12 ms, TR 500 ms, description 'T1 COR'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from onfh_dlr.errors import AdmissionRulesError

_AP_AXIS = (0.0, 1.0, 0.0)  # DICOM patient coordinates (LPS): y runs anterior -> posterior

#: Series descriptions that name a T2-weighted (or STIR) sequence. ``T2*`` (gradient echo)
#: is not T2-weighted in the sense the model needs, and ``T2`` must not be part of a word.
DEFAULT_T2_DESCRIPTIONS = (
    r"(?<![a-z0-9])t2(?![0-9]|\s*\*)",
    r"stir",
    r"tirm",
)
#: Series descriptions that name fat suppression. ``FS`` must stand alone (not ``FSE``).
DEFAULT_FAT_SUPPRESSION_DESCRIPTIONS = (
    r"(?<![a-z])fs(?![a-z])",
    r"fat[\s_-]?sat",
    r"fat[\s_-]?supp?",
    r"stir",
    r"tirm",
    r"spair",
    r"(?<![a-z])spir(?![a-z])",
    r"dixon.*(?<![a-z])w(?:ater)?(?![a-z])",
)
#: ScanOptions (0018,0022) values that mean fat suppression, as vendors write them.
DEFAULT_FAT_SUPPRESSION_SCAN_OPTIONS = (
    "FS",
    "SFS",
    "FAT_SAT",
    "FATSAT",
    "FSAT",
    "SPAIR",
    "SPIR",
    "STIR",
)


@dataclass(frozen=True)
class Admission:
    """The decision on one series: admitted or not, and why."""

    admitted: bool
    reason: str


class AdmissionRules(BaseModel):
    """Rules a closed series must pass to be scored (defaults: coronal T2-FS MR).

    Times are in milliseconds, angles in degrees. Description patterns are Python regular
    expressions, matched case-insensitively anywhere in SeriesDescription.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: tuple[str, ...] = ("MR",)
    require_coronal: bool = True
    coronal_max_angle: float = Field(default=30.0, ge=0.0, le=90.0)
    require_t2: bool = True
    t2_min_echo_time: float = Field(default=60.0, ge=0.0)
    t2_min_repetition_time: float = Field(default=1500.0, ge=0.0)
    t2_descriptions: tuple[str, ...] = DEFAULT_T2_DESCRIPTIONS
    require_fat_suppression: bool = True
    fat_suppression_scan_options: tuple[str, ...] = DEFAULT_FAT_SUPPRESSION_SCAN_OPTIONS
    stir_inversion_time: tuple[float, float] = (100.0, 250.0)
    fat_suppression_descriptions: tuple[str, ...] = DEFAULT_FAT_SUPPRESSION_DESCRIPTIONS

    @field_validator("t2_descriptions", "fat_suppression_descriptions")
    @classmethod
    def _valid_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return value

    @field_validator("modalities", "fat_suppression_scan_options")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().upper() for v in value)

    @field_validator("stir_inversion_time")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"stir_inversion_time {value} must be (low, high)")
        return value

    @classmethod
    def load(cls, path: Path | None) -> AdmissionRules:
        """The rules in a YAML file, or the built-in defaults when ``path`` is None.

        Raises
        ------
        AdmissionRulesError
            If the file cannot be read, is not a mapping, or holds invalid rules.
        """
        if path is None:
            return cls()
        try:
            loaded: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise AdmissionRulesError(f"cannot read admission rules {path}: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise AdmissionRulesError(f"admission rules {path} must hold a mapping")
        try:
            return cls.model_validate(loaded)
        except ValidationError as exc:
            raise AdmissionRulesError(f"invalid admission rules in {path}: {exc}") from exc

    def evaluate(self, headers: Sequence[Dataset]) -> Admission:
        """Decide whether the series whose instance headers are given is scored."""
        images = [h for h in headers if str(h.get("SOPClassUID", "")) != SegmentationStorage]
        if not images:
            return Admission(False, "no image instances in the series")
        header = images[0]
        for h in images:
            modality = str(h.get("Modality", "") or "").upper()
            if modality not in self.modalities:
                allowed = "/".join(self.modalities)
                return Admission(False, f"not {allowed}: modality {modality or 'missing'}")
        accepted: list[str] = [f"modality {header.get('Modality', '')!s}"]
        for check, required in (
            (self._coronal, self.require_coronal),
            (self._t2, self.require_t2),
            (self._fat_suppressed, self.require_fat_suppression),
        ):
            if not required:
                continue
            passed, text = check(header)
            if not passed:
                return Admission(False, text)
            accepted.append(text)
        return Admission(True, "; ".join(accepted))

    # --- rules ------------------------------------------------------------------------

    def _coronal(self, header: Dataset) -> tuple[bool, str]:
        angle = slice_normal_angle(header, _AP_AXIS)
        if angle is None:
            return False, "not coronal: orientation unknown (no ImageOrientationPatient)"
        seen = f"slice normal {angle:.0f}° from anterior-posterior"
        if angle > self.coronal_max_angle:
            return False, f"not coronal: {seen}"
        return True, f"coronal: {seen}"

    def _t2(self, header: Dataset) -> tuple[bool, str]:
        te, tr, ti = echo_time(header), repetition_time(header), inversion_time(header)
        description = str(header.get("SeriesDescription", "") or "")
        seen = f"TE {_ms(te)}, TR {_ms(tr)}, description {description!r}"
        long_tr = tr is not None and tr >= self.t2_min_repetition_time
        if te is not None and te >= self.t2_min_echo_time and long_tr:
            return True, f"T2-weighted: {seen}"
        if long_tr and self._stir(ti):
            return True, f"T2-weighted (STIR): TI {_ms(ti)}, {seen}"
        if _matches(self.t2_descriptions, description):
            return True, f"T2-weighted by description: {seen}"
        return False, f"not T2-weighted: {seen}"

    def _fat_suppressed(self, header: Dataset) -> tuple[bool, str]:
        options = scan_options(header)
        ti = inversion_time(header)
        description = str(header.get("SeriesDescription", "") or "")
        suppression = str(_find(header, "SpectrallySelectedSuppression") or "").upper()
        seen = (
            f"scan options {'/'.join(options) or 'none'}, "
            f"inversion time {_ms(ti) if ti is not None else 'none'}, "
            f"description {description!r}"
        )
        if set(options) & set(self.fat_suppression_scan_options):
            return True, f"fat-suppressed: {seen}"
        if suppression in ("FAT", "FAT_AND_WATER"):
            return True, f"fat-suppressed: spectrally selected suppression {suppression}"
        if self._stir(ti):
            return True, f"fat-suppressed (STIR): {seen}"
        if _matches(self.fat_suppression_descriptions, description):
            return True, f"fat-suppressed by description: {seen}"
        return False, f"not fat-suppressed: {seen}"

    def _stir(self, ti: float | None) -> bool:
        low, high = self.stir_inversion_time
        return ti is not None and low <= ti <= high


# --- header access (classic and Enhanced MR) --------------------------------------------


def _find(header: Dataset, keyword: str) -> Any:
    """An attribute from the top level, else from the (shared, then first per-frame)
    functional groups, one or two sequence levels down, as Enhanced MR stores it."""
    if keyword in header:
        return header.get(keyword)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = header.get(groups)
        if not seq:
            continue
        found = _search(seq[0], keyword, depth=2)
        if found is not None:
            return found
    return None


def _search(ds: Dataset, keyword: str, depth: int) -> Any:
    if keyword in ds:
        return ds.get(keyword)
    if depth == 0:
        return None
    for elem in ds:
        if elem.VR == "SQ" and elem.value:
            found = _search(elem.value[0], keyword, depth - 1)
            if found is not None:
                return found
    return None


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) == 0:
            return None
        value = value[0]  # multi-valued (InversionTimes): the first
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def echo_time(header: Dataset) -> float | None:
    """Echo time in ms (EchoTime, or Enhanced MR EffectiveEchoTime)."""
    te = _float(header.get("EchoTime"))
    return te if te is not None else _float(_find(header, "EffectiveEchoTime"))


def repetition_time(header: Dataset) -> float | None:
    """Repetition time in ms (top level, or Enhanced MR MR Timing and Related Parameters)."""
    return _float(_find(header, "RepetitionTime"))


def inversion_time(header: Dataset) -> float | None:
    """Inversion time in ms (InversionTime, or Enhanced MR InversionTimes)."""
    ti = _float(header.get("InversionTime"))
    return ti if ti is not None else _float(_find(header, "InversionTimes"))


def scan_options(header: Dataset) -> tuple[str, ...]:
    """ScanOptions values, upper case."""
    value = header.get("ScanOptions")
    if value is None or value == "":
        return ()
    values: Iterable[Any] = [value] if isinstance(value, str) else value
    return tuple(str(v).strip().upper() for v in values if str(v).strip())


def image_orientation(header: Dataset) -> tuple[float, ...] | None:
    """ImageOrientationPatient (six direction cosines), classic or Enhanced MR."""
    value = _find(header, "ImageOrientationPatient")
    if value is None:
        return None
    try:
        cosines = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return cosines if len(cosines) == 6 and all(map(math.isfinite, cosines)) else None


def slice_normal(header: Dataset) -> tuple[float, float, float] | None:
    """Unit slice normal (row x column direction), or None if the orientation is unusable."""
    iop = image_orientation(header)
    if iop is None:
        return None
    r, c = iop[:3], iop[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in n))
    if norm < 1e-6:
        return None
    return (n[0] / norm, n[1] / norm, n[2] / norm)


def slice_normal_angle(header: Dataset, axis: tuple[float, float, float]) -> float | None:
    """Angle in degrees (0-90) between the slice normal and a patient axis."""
    n = slice_normal(header)
    if n is None:
        return None
    dot = abs(sum(a * b for a, b in zip(n, axis, strict=True)))
    return math.degrees(math.acos(min(1.0, dot)))


def _matches(patterns: Iterable[str], text: str) -> bool:
    return bool(text) and any(re.search(p, text, re.IGNORECASE) for p in patterns)


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:g} ms"


__all__ = [
    "Admission",
    "AdmissionRules",
    "echo_time",
    "image_orientation",
    "inversion_time",
    "repetition_time",
    "scan_options",
    "slice_normal",
    "slice_normal_angle",
]
