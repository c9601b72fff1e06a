"""The region of interest of one hip: what the feature code consumes.

Holds :class:`Side` and :class:`HipROI`; imported by everything that handles a hip
(segmentation, features, serving, the worker's SEG and SR writers).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import SimpleITK as sitk


class Side(enum.StrEnum):
    """The patient's left or right hip; its value is the cohort CSV's ``L`` / ``R``."""

    LEFT = "L"
    RIGHT = "R"

    @classmethod
    def parse(cls, text: str) -> Side:
        """The side written as ``text`` (``"L"`` or ``"R"``); ValueError otherwise."""
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"not a side: {text!r} (L or R)") from None

    @property
    def word(self) -> str:
        """``"left"`` or ``"right"``."""
        return "left" if self is Side.LEFT else "right"


@dataclass(frozen=True, eq=False)
class HipROI:
    """A binary femoral-head mask of one hip on the grid of its series' image.

    Attributes
    ----------
    side
        The patient's left or right hip.
    mask
        ``sitk.sitkUInt8`` image, 1 inside the ROI, on exactly the grid (size, origin,
        spacing, direction) of the :class:`~model_bundle.imaging.series.LoadedSeries` image.
    source
        ``"seg"`` when read from a DICOM-SEG, ``"auto"`` when auto-segmented.
    description
        Where it came from, for people: the segment label and number, or the method.
    segment_number
        The Segment Number in the DICOM-SEG it was read from; ``None`` when
        auto-segmented.
    """

    side: Side
    mask: sitk.Image
    source: Literal["seg", "auto"]
    description: str
    segment_number: int | None = None


__all__ = ["HipROI", "Side"]
