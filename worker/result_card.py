"""The result card: one Secondary Capture image of the result, for viewers without SR.

What it shows, top to bottom::

    NOT FOR CLINICAL USE banner (red) with the bundle's warning, when the bundle says so
    the coronal MR slice through both femoral heads, each ROI outlined in the colour of
    its call (orange: suspected, cyan: not suspected) and marked R / L
    per hip: "Right femoral head: early ONFH suspected, p = 0.84 (threshold 0.35)"
    the model: name, version, deployed model; "automated result, not verified"

A hip that could not be analysed gets the line "Right femoral head: could not analyse:
<reason>" and no outline; when no hip was analysed the card shows the series' middle
slice with those lines.

The slice is the one where the smaller of the two ROIs is largest (the slice "through
both heads"); with one hip, where that ROI is largest. The MR is windowed from its
0.5th to 99.5th percentile inside the body and scaled up to at least
:data:`MIN_IMAGE_WIDTH` pixels so the text stays readable next to it. Everything on the
card is burned in (Burned In Annotation YES); the card's lines are also in Image
Comments, so a machine (and the tests) can read what the card says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import highdicom as hd
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from pydicom.uid import generate_uid

from model_bundle.imaging import HipROI, LoadedSeries, Side
from model_bundle.serving import HipPrediction
from onfh_dlr.errors import OutputError
from worker.seg_output import (
    NOT_FOR_CLINICAL_USE,
    SEGMENT_LABELS,
    OutputDevice,
    complete_headers,
    contributing_equipment,
    plain_text,
    stamp_datetime,
)
from worker.sr_output import NOT_ANALYSED_PREFIX

__all__ = [
    "MIN_IMAGE_WIDTH",
    "NOT_ANALYSED_RGB",
    "CardText",
    "build_result_card",
    "card_slice",
    "card_text",
]

MIN_IMAGE_WIDTH: Final = 640
SUSPECTED_RGB: Final = (255, 140, 0)
NOT_SUSPECTED_RGB: Final = (0, 200, 255)
BANNER_RGB: Final = (190, 0, 0)
NOT_ANALYSED_RGB: Final = (255, 220, 0)
_TEXT_RGB: Final = (235, 235, 235)
_FONT_PX: Final = 18
_MARGIN: Final = 10
_SIDE_ORDER: Final[tuple[Side, Side]] = (Side.RIGHT, Side.LEFT)
_IMAGE_COMMENTS_MAX: Final = 10_240  # LT


@dataclass(frozen=True)
class CardText:
    """The card's text: the banner (empty when none), one line per hip, notes for the
    reader (e.g. a left/right check that failed), the model lines."""

    banner: str
    hips: tuple[str, ...]
    model: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return [*([self.banner] if self.banner else []), *self.hips, *self.notes, *self.model]


def card_text(
    predictions: Mapping[Side, HipPrediction],
    device: OutputDevice,
    not_analysed: Mapping[Side, str] | None = None,
    notes: Sequence[str] = (),
) -> CardText:
    """What the card says, right hip first (as the radiologist reads the image)."""
    hips = []
    failed = not_analysed or {}
    for side in _SIDE_ORDER:
        if side in failed and side not in predictions:
            hips.append(f"{SEGMENT_LABELS[side]}: {NOT_ANALYSED_PREFIX}: {failed[side]}")
            continue
        if side not in predictions:
            continue
        p = predictions[side]
        verdict = "suspected" if p.call else "not suspected"
        hips.append(
            f"{SEGMENT_LABELS[side]}: early ONFH {verdict}, "
            f"p = {p.probability:.2f} (threshold {p.threshold:.2f})"
        )
    banner = f"{NOT_FOR_CLINICAL_USE}: {device.warning}" if device.not_for_clinical_use else ""
    model = (
        f"Model: {device.name} {device.version} ({device.deployed_model})",
        "Automated result, not verified by a person; the radiologist makes the diagnosis.",
    )
    return CardText(
        plain_text(banner),
        tuple(map(plain_text, hips)),
        tuple(map(plain_text, model)),
        tuple(map(plain_text, notes)),
    )


def _masks(rois: Mapping[Side, HipROI]) -> dict[Side, npt.NDArray[np.bool_]]:
    return {
        side: np.asarray(sitk.GetArrayViewFromImage(roi.mask)) > 0 for side, roi in rois.items()
    }


def card_slice(rois: Mapping[Side, HipROI]) -> int:
    """Index of the slice through both heads: where the smaller ROI area is largest.

    Raises
    ------
    onfh_dlr.errors.OutputError
        No ROI, or no slice where every ROI has pixels.
    """
    if not rois:
        raise OutputError("no ROI to show on the result card")
    areas = np.stack([m.sum(axis=(1, 2)) for m in _masks(rois).values()])
    smallest = areas.min(axis=0)
    index = int(np.argmax(smallest))
    if smallest[index] == 0:
        raise OutputError("the ROIs share no slice to show on the result card")
    return index


def _windowed(plane: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    # Percentiles over the body (above the lowest decile), so air does not set the window.
    body = plane[plane > np.percentile(plane, 10)]
    low, high = np.percentile(body if body.size else plane, [0.5, 99.5])
    scaled = np.clip((plane - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def _outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    inner = mask.copy()
    inner[1:-1, 1:-1] = (
        mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    )
    return mask & ~inner


def _render(
    plane: npt.NDArray[np.floating],
    masks: Mapping[Side, npt.NDArray[np.bool_]],
    predictions: Mapping[Side, HipPrediction],
    text: CardText,
    not_analysed: Mapping[Side, str],
) -> tuple[npt.NDArray[np.uint8], int]:
    """The card's RGB pixels and the integer zoom of the MR slice."""
    zoom = max(1, -(-MIN_IMAGE_WIDTH // plane.shape[1]))
    gray = np.kron(_windowed(plane), np.ones((zoom, zoom), dtype=np.uint8))
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    font = ImageFont.load_default(size=_FONT_PX)
    marks: list[tuple[tuple[int, int], Side, tuple[int, int, int]]] = []
    for side, mask in masks.items():
        colour = SUSPECTED_RGB if predictions[side].call else NOT_SUSPECTED_RGB
        big = np.kron(mask, np.ones((zoom, zoom), dtype=bool))
        edge = _outline(big)
        # Two pixels wide, so the outline survives a viewer's down-sampling.
        edge[1:, :] |= edge[:-1, :]
        edge[:, 1:] |= edge[:, :-1]
        rgb[edge] = colour
        rows, columns = np.nonzero(big)
        marks.append(((int(columns.max()) + 4, int(rows.min())), side, colour))
    line_px = _FONT_PX + 6
    width = rgb.shape[1]

    def wrap(line: str) -> list[str]:
        # Greedy word wrap to the card's width: no line is cut off at the edge.
        out = [""]
        for word in line.split(" "):
            candidate = f"{out[-1]} {word}".strip()
            if out[-1] and font.getlength(candidate) > width - 2 * _MARGIN:
                out.append(word)
            else:
                out[-1] = candidate
        return out

    banner = wrap(text.banner) if text.banner else []
    hip_sides = [s for s in _SIDE_ORDER if s in predictions or s in not_analysed]
    hips = [
        (side, part) for side, line in zip(hip_sides, text.hips, strict=True) for part in wrap(line)
    ]
    notes = [part for line in text.notes for part in wrap(line)]
    model = [part for line in text.model for part in wrap(line)]
    banner_px = len(banner) * line_px + 2 * _MARGIN if banner else 0
    footer_px = (len(hips) + len(notes) + len(model)) * line_px + 3 * _MARGIN
    card = Image.new("RGB", (width, banner_px + rgb.shape[0] + footer_px), (0, 0, 0))
    card.paste(Image.fromarray(rgb), (0, banner_px))
    draw = ImageDraw.Draw(card)
    if banner:
        draw.rectangle((0, 0, width, banner_px - 1), fill=BANNER_RGB)
        for row, part in enumerate(banner):
            draw.text((_MARGIN, _MARGIN + row * line_px), part, fill=(255, 255, 255), font=font)
    for (x, y), side, colour in marks:
        draw.text((x, banner_px + y), side, fill=colour, font=font)
    y = banner_px + rgb.shape[0] + _MARGIN
    for side, part in hips:
        if side not in predictions:
            colour = NOT_ANALYSED_RGB
        else:
            colour = SUSPECTED_RGB if predictions[side].call else NOT_SUSPECTED_RGB
        draw.text((_MARGIN, y), part, fill=colour, font=font)
        y += line_px
    for part in notes:
        draw.text((_MARGIN, y), part, fill=NOT_ANALYSED_RGB, font=font)
        y += line_px
    y += _MARGIN
    for part in model:
        draw.text((_MARGIN, y), part, fill=_TEXT_RGB, font=font)
        y += line_px
    return np.asarray(card, dtype=np.uint8).copy(), zoom


_AXIS_LETTERS: Final = (("L", "R"), ("P", "A"), ("H", "F"))  # LPS: +x left, +y posterior


def _orientation_letters(vector: npt.NDArray[np.float64]) -> str:
    """Patient Orientation letters of a direction (LPS), main axis first (e.g. "FL")."""
    letters = []
    for axis in np.argsort(-np.abs(vector)):
        if abs(vector[axis]) < 0.25:  # an axis the direction barely moves along
            break
        positive, negative = _AXIS_LETTERS[axis]
        letters.append(positive if vector[axis] > 0 else negative)
    return "".join(letters)


def build_result_card(
    series: LoadedSeries,
    rois: Mapping[Side, HipROI],
    predictions: Mapping[Side, HipPrediction],
    device: OutputDevice,
    *,
    series_number: int,
    instance_number: int = 1,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
    not_analysed: Mapping[Side, str] | None = None,
    notes: Sequence[str] = (),
) -> hd.sc.SCImage:
    """The result card of one scored series as a Secondary Capture in its study.

    Parameters
    ----------
    series
        The scored series (pixels, patient and study).
    rois
        The ROI per side, on the series grid; every predicted side needs one.
    predictions
        The model's result per side.
    device
        The model (:meth:`worker.seg_output.OutputDevice.from_manifest`).
    series_number, instance_number, series_instance_uid, sop_instance_uid
        Of the card (UIDs random when omitted).
    content_datetime
        Content and series date/time; the wall clock when omitted.
    not_analysed
        Per side that could not be analysed, the reason (said on the card, no outline).
    notes
        What the reader should know beside the calls (e.g. a left/right check that
        failed), a line each under the hips.

    Raises
    ------
    onfh_dlr.errors.OutputError
        No prediction, a predicted side without its ROI, or ROIs with no common slice.
    """
    failed = not_analysed or {}
    sides = [side for side in _SIDE_ORDER if side in predictions]
    if not sides and not failed:
        raise OutputError(f"series {series.series_instance_uid}: no prediction for a card")
    missing = [SEGMENT_LABELS[s] for s in sides if s not in rois]
    if missing:
        raise OutputError(f"no ROI for {', '.join(missing)} to draw on the result card")
    shown = {side: rois[side] for side in sides}
    volume = sitk.GetArrayViewFromImage(series.image)  # (slice, row, column)
    # Nothing to outline: the middle slice still shows which series was not analysed.
    index = card_slice(shown) if shown else volume.shape[0] // 2
    plane = np.asarray(volume[index], dtype=np.float64)
    masks = {side: m[index] for side, m in _masks(shown).items()}
    text = card_text(predictions, device, failed, notes)
    pixels, zoom = _render(plane, masks, predictions, text, failed)

    source = complete_headers(series.datasets)[min(index, len(series.datasets) - 1)]
    direction = np.asarray(series.image.GetDirection(), dtype=np.float64).reshape(3, 3)
    # Rows run along the image's column direction and vice versa (DICOM convention).
    orientation = (_orientation_letters(direction[:, 0]), _orientation_letters(direction[:, 1]))
    column_mm, row_mm = series.image.GetSpacing()[:2]
    card = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=device.manufacturer,
        pixel_spacing=(row_mm / zoom, column_mm / zoom),
        patient_orientation=orientation,
        contributing_equipment=[contributing_equipment(device)],
    )
    card.SeriesDescription = device.series_description("DLR result card")
    card.BurnedInAnnotation = "YES"
    card.ConversionType = "WSD"  # made by software on a workstation, not digitised
    card.ImageLaterality = "B"  # both hips are on the card
    card.ImageComments = "\n".join(text.lines())[:_IMAGE_COMMENTS_MAX]
    card.ManufacturerModelName = plain_text(device.name)[:64]
    card.SoftwareVersions = plain_text(device.version)[:64]
    if content_datetime is not None:
        stamp_datetime(card, content_datetime)
    return card
