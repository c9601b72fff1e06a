"""The per-study input check: is this series and this hip like what the model was trained on?

A series is still scored when the check finds something; the check says what is outside
the reference, for the SR, the result card, the status page and the job record to say
"outside the model's training range: <what>".

The rules, declared here so that every reader applies the same:

Acquisition (:func:`check_acquisition`)
    A numeric parameter outside the range the training series spanned (their minimum and
    maximum), widened by :data:`ACQUISITION_TOLERANCE` of the value for header rounding
    (1.494 T is 1.5 T); a manufacturer no training series had (compared without case or
    surrounding blanks); a parameter the study lacks though every training series had it,
    or has though none had it (an inversion time on a model trained without STIR). A
    parameter that some training series had and others lacked is not flagged when absent.
Features (:func:`check_features`)
    A feature outside the training hips' central 99 % (their 0.5 % and 99.5 % quantiles),
    widened on each side by :attr:`FeatureRule.margin` of that range's width. The margin
    is there because a bundle is trained on about a hundred hips: its 0.5 % and 99.5 %
    quantiles are then the most extreme training hips, themselves noisy, and a hip just
    beyond them is not unlike the training data; a hip a tenth of the range's width
    beyond them is. A non-finite value is reported as such. Features the reference does
    not describe are not the reference's to judge and are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from model_bundle.bundle import Categories, Distribution, ReferenceStatistics
from model_bundle.imaging import Acquisition, AcquisitionField

#: Relative tolerance on the acquisition range, for values rounded differently in headers.
ACQUISITION_TOLERANCE: Final = 0.01


class ReferenceStatus(StrEnum):
    """Whether a hip's inputs could be checked against reference statistics."""

    #: The bundle has reference statistics; the check ran.
    CHECKED = "checked"
    #: The bundle has none (written before they existed): nothing was checked.
    NO_REFERENCE = "no reference"


class InputKind(StrEnum):
    """What kind of input is outside the reference."""

    ACQUISITION = "acquisition"
    FEATURE = "feature"


class OutOfRangeReason(StrEnum):
    """Why an input is outside the reference (value: how a person reads it)."""

    BELOW = "below the training range"
    ABOVE = "above the training range"
    UNSEEN = "a value no training series had"
    MISSING = "absent, though every training series had it"
    UNEXPECTED = "present, though no training series had it"
    NOT_FINITE = "not a finite number"


@dataclass(frozen=True)
class OutOfRange:
    """One input outside the reference.

    Attributes
    ----------
    kind
        Acquisition parameter or model feature.
    name
        The acquisition field's key (:class:`~model_bundle.imaging.AcquisitionField`
        value, e.g. ``field_strength``) or the feature's name (e.g.
        ``wavelet-LHL_firstorder_Skewness``, ``deep_pca_003``).
    value
        The study's value (``None``: absent).
    low, high
        The training range it is outside (``None`` for categories and absent ranges):
        for an acquisition parameter the training series' minimum and maximum, for a
        feature the rule's quantiles (0.5 % and 99.5 %); the tolerance or margin the
        check allows beyond them is not included.
    seen
        For a category, the values the training series had.
    reason
        Why it is outside.
    """

    kind: InputKind
    name: str
    value: float | str | None
    low: float | None
    high: float | None
    seen: tuple[str, ...]
    reason: OutOfRangeReason

    @property
    def label(self) -> str:
        """The input as a person names it ("field strength", or the feature's name)."""
        if self.kind is InputKind.ACQUISITION:
            return AcquisitionField(self.name).label
        return self.name

    def describe(self) -> str:
        """One line for a report: ``field strength 3 T: above the training range (1.5-1.5 T)``."""
        unit = AcquisitionField(self.name).unit if self.kind is InputKind.ACQUISITION else ""
        suffix = f" {unit}" if unit else ""
        value = "absent" if self.value is None else f"{_short(self.value)}{suffix}"
        if self.seen:
            where = f"training: {', '.join(self.seen)}"
        elif self.low is not None and self.high is not None:
            where = f"training: {_short(self.low)} to {_short(self.high)}{suffix}"
        else:
            where = ""
        return f"{self.label} {value}: {self.reason.value}" + (f" ({where})" if where else "")


def _short(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"


@dataclass(frozen=True)
class FeatureRule:
    """When a feature value is outside the training range (see the module's rules).

    Attributes
    ----------
    low_level, high_level
        The quantile levels (percent) that bound the range.
    margin
        How far beyond them a value may lie, as a fraction of the range's width.
    """

    low_level: float = 0.5
    high_level: float = 99.5
    margin: float = 0.1

    def bounds(self, reference: Distribution) -> tuple[float, float]:
        """The accepted range ``[low, high]`` of one feature."""
        low = reference.quantile(self.low_level)
        high = reference.quantile(self.high_level)
        pad = self.margin * (high - low)
        return low - pad, high + pad


def _numeric(
    name: str,
    kind: InputKind,
    value: float | None,
    reference: Distribution,
    low: float,
    high: float,
) -> OutOfRange | None:
    def out(reason: OutOfRangeReason, lo: float | None, hi: float | None) -> OutOfRange:
        return OutOfRange(kind, name, value, lo, hi, (), reason)

    if value is None:
        if reference.count > 0 and reference.missing == 0:
            return out(OutOfRangeReason.MISSING, reference.minimum, reference.maximum)
        return None
    if reference.count == 0:
        return out(OutOfRangeReason.UNEXPECTED, None, None)
    if not math.isfinite(value):
        return out(OutOfRangeReason.NOT_FINITE, low, high)
    if value < low:
        return out(OutOfRangeReason.BELOW, low, high)
    if value > high:
        return out(OutOfRangeReason.ABOVE, low, high)
    return None


def _category(name: str, value: str | None, reference: Categories) -> OutOfRange | None:
    seen = tuple(sorted(reference.counts))

    def out(reason: OutOfRangeReason) -> OutOfRange:
        return OutOfRange(InputKind.ACQUISITION, name, value, None, None, seen, reason)

    text = value.strip() if value is not None else ""
    if not text:
        return out(OutOfRangeReason.MISSING) if seen and reference.missing == 0 else None
    if not seen:
        return out(OutOfRangeReason.UNEXPECTED)
    if text.casefold() not in {s.casefold() for s in seen}:
        return out(OutOfRangeReason.UNSEEN)
    return None


def check_acquisition(reference: ReferenceStatistics, acquisition: Acquisition) -> list[OutOfRange]:
    """The acquisition parameters outside the training series' (rules: module docstring).

    Returns an empty list when the reference has no acquisition statistics.
    """
    ref = reference.acquisition
    if ref is None:
        return []
    found: list[OutOfRange] = []
    for field, value in acquisition.numeric().items():
        dist = ref.numeric.get(field.value)
        if dist is None:
            continue
        low = high = math.nan
        if dist.count > 0:
            low = dist.minimum - ACQUISITION_TOLERANCE * abs(dist.minimum)
            high = dist.maximum + ACQUISITION_TOLERANCE * abs(dist.maximum)
        hit = _numeric(field.value, InputKind.ACQUISITION, value, dist, low, high)
        if hit is not None:
            # Report the range the training series spanned, not the widened one.
            if hit.low is not None and dist.count > 0:
                hit = OutOfRange(
                    hit.kind, hit.name, hit.value, dist.minimum, dist.maximum, (), hit.reason
                )
            found.append(hit)
    for field, text in acquisition.categorical().items():
        cats = ref.categorical.get(field.value)
        hit_cat = None if cats is None else _category(field.value, text, cats)
        if hit_cat is not None:
            found.append(hit_cat)
    return found


def check_features(
    reference: ReferenceStatistics,
    features: Mapping[str, float],
    rule: FeatureRule = FeatureRule(),
) -> list[OutOfRange]:
    """The features outside the training hips' range (rules: module docstring).

    Features the reference does not describe are skipped.
    """
    found: list[OutOfRange] = []
    for name, value in features.items():
        dist = reference.features.get(name)
        if dist is None or dist.count == 0:
            continue
        low, high = rule.bounds(dist)
        hit = _numeric(name, InputKind.FEATURE, float(value), dist, low, high)
        if hit is not None:
            # Report the training hips' range, not the widened one.
            reported = (dist.quantile(rule.low_level), dist.quantile(rule.high_level))
            found.append(OutOfRange(hit.kind, hit.name, hit.value, *reported, hit.seen, hit.reason))
    return found


#: How a report introduces what is outside the reference (issue 15's wording).
OUTSIDE_PREFIX: Final = "outside the model's training range"


def outside_text(found: Sequence[OutOfRange]) -> str:
    """One line for an SR, a result card or a status page; empty when nothing is outside.

    ``outside the model's training range: field strength 3 T: above the training range
    (training: 1.5 to 1.5 T); manufacturer Philips: ...``. The same item (a series'
    acquisition parameter listed for both hips) is said once.
    """
    lines = list(dict.fromkeys(o.describe() for o in found))
    return f"{OUTSIDE_PREFIX}: {'; '.join(lines)}" if lines else ""


def check_inputs(
    reference: ReferenceStatistics,
    acquisition: Acquisition | None,
    features: Mapping[str, float],
    rule: FeatureRule = FeatureRule(),
) -> list[OutOfRange]:
    """Every input of one hip outside the reference: acquisition first, then features.

    Parameters
    ----------
    reference
        The bundle's reference statistics (:meth:`~model_bundle.bundle.Bundle.reference`).
    acquisition
        The series' acquisition (:func:`~model_bundle.imaging.acquisition_of`); ``None``
        skips the acquisition check (e.g. a NIfTI image without headers).
    features
        The hip's model inputs by name, unscaled (what
        :meth:`~model_bundle.serving.BundleModel.model_inputs` returns).
    rule
        When a feature is outside (default: the module's declared rule).

    Returns
    -------
    list of OutOfRange
        Empty when everything is inside.
    """
    found = [] if acquisition is None else check_acquisition(reference, acquisition)
    return found + check_features(reference, features, rule)
