"""The region of interest of one hip: what the feature code consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import SimpleITK as sitk

Side = Literal["L", "R"]


@dataclass(frozen=True, eq=False)
class HipROI:
    """A binary femoral-head mask of one hip on the grid of its series' image.

    Attributes
    ----------
    side
        ``"L"`` or ``"R"``: the patient's left or right hip.
    mask
        ``sitk.sitkUInt8`` image, 1 inside the ROI, on exactly the grid (size, origin,
        spacing, direction) of the :class:`~model_bundle.series.LoadedSeries` image.
    source
        ``"seg"`` when read from a DICOM-SEG, ``"auto"`` when auto-segmented.
    description
        Where it came from: the segment label and number, or the segmentation method.
    """

    side: Side
    mask: sitk.Image
    source: Literal["seg", "auto"]
    description: str


__all__ = ["HipROI", "Side"]
