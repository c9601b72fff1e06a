"""Femoral-head ROIs of both hips from a DICOM Segmentation (SEG) of the series.

A SEG linked to a series (drawn by a radiologist, or sent by another algorithm) replaces
auto-segmentation. This module finds the left and right femoral-head segments in it and
puts each on the series image grid, as :class:`~model_bundle.imaging.HipROI` masks.

Which segment is which hip
--------------------------
Segments are matched per side in three steps; a segment taken by an earlier step is not
considered by a later one, and a side found by an earlier step is not looked for again.

1. **coded** — Segmented Property Type *Head of femur* (SCT 2812003, or its retired
   SNOMED RT form T-12711 under SRT / SNM3) with the side from a laterality modifier
   (SCT 7771000 Left / 24028007 Right, or SRT G-A101 / G-A100) in the type's Segmented
   Property Type Modifier Code Sequence, in an Anatomic Region's Anatomic Region Modifier
   Sequence, or in a Primary Anatomic Structure's modifier sequence. The label is
   ignored. Contradicting modifiers (Left and Right, or Bilateral) give no side here.
2. **label** — the Segment Label names a femoral head (``femoral head``, ``femur head``,
   ``head of (the) femur``, ``fem head``, ``caput femoris``, ``FH``; also fused ``LFH``,
   ``RFH``, ``FHL``, ``FHR``) and exactly one side (``left``/``right``, ``lt``/``rt``,
   ``l``/``r`` as separate words), case-insensitive, with ``_ - , . / ( ) :`` treated
   as spaces: "Left femoral head", "L femoral head", "femoral head left",
   "Head of femur, left", "FH_L", "femoral_head_r", "RFH".
3. **position** — the remaining *head-like* segments (property type Head of femur with
   no usable side, a label naming a femoral head without a side, or a generic property
   type (Tissue, Bone, Anatomical/Body structure) with a generic label such as
   "Segment 1", "ROI 2", "Label_3" or none) are placed on the series grid and their
   centroid is taken in patient coordinates (LPS: +x is the patient's left). Dropped
   first: segments mostly (≥ 50 %) inside a larger one (a lesion inside a head),
   segments reaching across the midline, and segments whose modifiers or label name
   both sides (one segment for both heads). With both sides missing, two candidates
   are assigned by comparing centroid x (larger x = left); one candidate goes to the
   side of the midline its centroid lies on. With one side missing, the candidate must
   lie on that side of the midline. The midline is the x coordinate of the centre of
   the series' field of view (a hip protocol centres the field of view on the pelvis;
   patient x = 0 is the table centre, not the patient's).

A segment is never a femoral head when its category is Morphologically Abnormal
Structure (SCT 49755003), its type is a finding (Necrosis 6574001, Lesion 52988006,
Mass 4147007, Neoplasm 108369006, Edema 79654002, Cyst 367643001, or their SRT forms),
or its label contains a lesion word (lesion, necrosis/necrotic, osteonecrosis, ONFH,
AVN, infarct, edema/oedema, BME, tumo(u)r, cyst, fracture, collapse, sclerosis).

Placing a segment on the series grid
------------------------------------
* **references** — when every frame of the segment references a slice of the series
  (Derivation Image / Source Image Sequence) with Spatial Locations Preserved YES, the
  frame matrix equals the series matrix and the SEG's pixel measures do not declare
  another grid, the frames are read with highdicom's
  :meth:`~highdicom.seg.Segmentation.get_pixels_by_source_instance` (single-frame
  series) or :meth:`~highdicom.seg.Segmentation.get_pixels_by_source_frame` (one
  multi-frame instance). Frame positions, when present, must agree with the
  referenced slices, or the SEG is refused as inconsistent.
* **geometry** — otherwise, in the series' frame of reference, the SEG is read as a
  volume (:meth:`~highdicom.seg.Segmentation.get_volume`) and resampled onto the series
  grid with nearest neighbour (SimpleITK). A SEG on the series' own grid comes back
  unchanged; one on another grid (every other slice, cropped, resampled, another
  orientation) is resampled.

FRACTIONAL segments are binarised at half the Maximum Fractional Value (highdicom's
rescaled value ≥ 0.5). LABELMAP SEGs are read per segment number.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from model_bundle.imaging.roi import HipROI, Side
from model_bundle.imaging.seg_grid import (
    BoolVolume,
    _Context,
    _first,
    _mask_of,
    _parse_frames,
)
from model_bundle.imaging.series import LoadedSeries
from onfh_dlr.errors import (
    AmbiguousSegmentError,
    FemoralHeadNotFoundError,
    NotASegmentationError,
    SegmentationReferenceError,
)

__all__ = [
    "ABNORMAL_CATEGORY_CODES",
    "ABNORMAL_TYPE_CODES",
    "HEAD_OF_FEMUR_CODES",
    "LEFT_CODES",
    "RIGHT_CODES",
    "SEGMENTATION_SOP_CLASSES",
    "lesion_rois_from_seg",
    "rois_from_seg",
]

LOGGER = logging.getLogger(__name__)

Code = tuple[str, str]  # (coding scheme designator, code value)
MatchMethod = Literal["coded", "label", "position"]
_SIDES: Final[tuple[Side, Side]] = (Side.LEFT, Side.RIGHT)

#: Segmentation Storage and Label Map Segmentation Storage.
SEGMENTATION_SOP_CLASSES: Final[frozenset[str]] = frozenset(
    {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}
)

# Codes are compared as (scheme, value); code meanings vary between writers and are
# never trusted. SNOMED RT (SRT, SNM3) forms are the retired codes older SEG writers
# (DCMTK dcmqi, early 3D Slicer) still emit; their SCT equivalents come from DICOM's
# SNOMED mapping (pydicom.sr._snomed_dict).
#: Segmented Property Type codes meaning "head of femur". SCT 68367000 is *Thigh*, not
#: the femoral head, and whole-femur codes (SCT 71341001) are deliberately not heads.
HEAD_OF_FEMUR_CODES: Final[frozenset[Code]] = frozenset(
    {("SCT", "2812003"), ("SRT", "T-12711"), ("SNM3", "T-12711")}
)
#: Laterality modifiers (DICOM CID 244).
LEFT_CODES: Final[frozenset[Code]] = frozenset(
    {("SCT", "7771000"), ("SRT", "G-A101"), ("SNM3", "G-A101")}
)
RIGHT_CODES: Final[frozenset[Code]] = frozenset(
    {("SCT", "24028007"), ("SRT", "G-A100"), ("SNM3", "G-A100")}
)
#: Segmented Property Category meaning "this is a finding, not an organ".
ABNORMAL_CATEGORY_CODES: Final[frozenset[Code]] = frozenset(
    {("SCT", "49755003"), ("SRT", "M-01000"), ("SNM3", "M-01000")}
)
#: Segmented Property Types of findings (CID 7151 / 7194) that may sit in a femoral head.
ABNORMAL_TYPE_CODES: Final[frozenset[Code]] = frozenset(
    {
        ("SCT", "6574001"),  # Necrosis
        ("SRT", "M-54000"),
        ("SCT", "52988006"),  # Lesion
        ("SRT", "M-01100"),
        ("SCT", "4147007"),  # Mass
        ("SRT", "M-03000"),
        ("SCT", "108369006"),  # Neoplasm
        ("SRT", "M-8FFFF"),
        ("SCT", "79654002"),  # Edema
        ("SRT", "M-36300"),
        ("SCT", "367643001"),  # Cyst
    }
)
#: Property types that say nothing about which structure was drawn (3D Slicer's
#: default "Tissue", "Bone", "Anatomical structure", "Body structure").
_GENERIC_TYPE_CODES: Final[frozenset[Code]] = frozenset(
    {
        ("SCT", "85756007"),  # Tissue
        ("SRT", "T-D0050"),
        ("SCT", "272673000"),  # Bone
        ("SRT", "T-D016E"),
        ("SCT", "91723000"),  # Anatomical structure (inactive)
        ("SRT", "T-D0005"),
        ("SCT", "123037004"),  # Anatomical structure / Body structure
        ("SRT", "T-D000A"),
    }
)

_SEPARATORS: Final = re.compile(r"[_\-,./():;]+")
_HEAD_PHRASE: Final = re.compile(
    r"\b(?:femoral heads?|femur heads?|heads? of (?:the )?femurs?|fem heads?|caput femoris|fh)\b"
)
_FUSED_HEAD: Final = re.compile(r"^(?:(?P<pre>[lr])fh|fh(?P<post>[lr]))$")
_LEFT_WORD: Final = re.compile(r"\b(?:left|lt|l)\b")
_RIGHT_WORD: Final = re.compile(r"\b(?:right|rt|r)\b")
_ABNORMAL_WORD: Final = re.compile(
    r"lesion|necros|necrot|onfh|\bavn\b|infarct|o?edema|\bbme\b|tumou?r|cyst|fractur"
    r"|collapse|scleros"
)
_GENERIC_LABEL: Final = re.compile(
    r"^(?:(?:segment|seg|roi|label|mask|region|structure|object|tissue|bone)\s*)?\d*$"
)

#: A candidate with this fraction of its voxels inside a larger one is a sub-structure.
_CONTAINED_FRACTION: Final = 0.5


@dataclass(frozen=True)
class _Segment:
    """What the Segment Sequence says about one segment."""

    number: int
    label: str
    category: Code | None
    type_code: Code | None
    type_meaning: str
    coded_side: Side | None
    side_detail: str
    abnormal: bool
    label_side: Side | None
    label_names_head: bool
    generic: bool
    bilateral: bool  # modifiers or label name both sides: one segment for both heads

    @property
    def head_coded(self) -> bool:
        return self.type_code in HEAD_OF_FEMUR_CODES

    @property
    def head_like(self) -> bool:
        """Whether the position step may take it as a femoral head."""
        return not (self.abnormal or self.bilateral) and (
            self.head_coded or self.label_names_head or self.generic
        )


@dataclass(frozen=True)
class _Choice:
    segment: _Segment
    method: MatchMethod
    detail: str


def rois_from_seg(
    seg: Path | str | Dataset | hd.seg.Segmentation, series: LoadedSeries
) -> dict[Side, HipROI]:
    """Femoral-head ROIs of the left and right hip from a DICOM-SEG of ``series``.

    Parameters
    ----------
    seg
        A SEG file, or a SEG already read (pydicom dataset, not modified; or a
        :class:`highdicom.seg.Segmentation`).
    series
        The series the SEG was drawn on, from :func:`model_bundle.imaging.series.load_series`.

    Returns
    -------
    dict of Side to HipROI
        ``{Side.LEFT: ..., Side.RIGHT: ...}``; a side whose femoral head is not in
        the SEG (or whose segment is empty on the series grid) is absent. Masks are
        ``sitk.sitkUInt8`` (0/1) with the geometry of ``series.image``; ``source`` is
        ``"seg"``, ``segment_number`` the segment's number in the SEG, and
        ``description`` names the SEG, the segment number and label, how the segment
        was matched (``coded``, ``label`` or ``position``) and how it was placed.

    Raises
    ------
    onfh_dlr.errors.NotASegmentationError
        ``seg`` is not readable DICOM, or not a Segmentation.
    onfh_dlr.errors.SegmentationReferenceError
        The SEG references another series, or lies in another frame of reference.
    onfh_dlr.errors.SegmentationGeometryError
        A chosen segment's frames cannot be placed on the series grid.
    onfh_dlr.errors.AmbiguousSegmentError
        More than one segment qualifies for one side at the same matching step.
    onfh_dlr.errors.FemoralHeadNotFoundError
        No femoral head of either side was found.

    Notes
    -----
    The matching rules, accepted codes and label patterns are described in the module
    docstring.
    """
    segmentation = _read_segmentation(seg)
    name = f"SEG {segmentation.SOPInstanceUID}"
    _check_references(segmentation, series, name)
    ctx = _Context(
        seg=segmentation,
        series=series,
        name=name,
        frames=_parse_frames(segmentation),
        masks={},
    )
    present = set(segmentation.segment_numbers)  # without a LABELMAP's background
    segments = [_describe(desc) for desc in segmentation.SegmentSequence]
    segments = [s for s in segments if s.number in present]
    choices = _match(ctx, segments)

    rois: dict[Side, HipROI] = {}
    for side, choice in choices.items():
        mask, placement = _mask_of(ctx, choice.segment.number)
        if not mask.any():
            LOGGER.warning(
                "%s: segment %d %r (%s femoral head) is empty on the series grid; "
                "that side is not taken from the SEG",
                name,
                choice.segment.number,
                choice.segment.label,
                side,
            )
            continue
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(series.image)
        rois[side] = HipROI(
            side=side,
            mask=image,
            source="seg",
            description=(
                f"{name} segment {choice.segment.number} {choice.segment.label!r}: matched "
                f"by {choice.method} ({choice.detail}); {placement}"
            ),
            segment_number=choice.segment.number,
        )
    if not rois:
        found = ", ".join(f"{s.number} {s.label!r}" for s in segments) or "none"
        raise FemoralHeadNotFoundError(
            f"{name}: no non-empty femoral-head segment of either side (segments: {found})"
        )
    return rois


def lesion_rois_from_seg(
    seg: Path | str | Dataset | hd.seg.Segmentation, series: LoadedSeries
) -> dict[Side, HipROI]:
    """Necrotic-lesion ROIs per side from a DICOM-SEG of ``series`` (the paper's protocol).

    Only for reproducing the source paper, which drew the lesion rather than the head
    for ONFH hips: a segment counts when it is coded as abnormal (category or type, e.g.
    Necrosis) or its label names a lesion, and its side comes from a laterality code or
    the label. A side with no lesion segment is absent from the result.

    Raises
    ------
    onfh_dlr.errors.AmbiguousSegmentError
        Two lesion segments for one side.
    """
    segmentation = _read_segmentation(seg)
    name = f"SEG {segmentation.SOPInstanceUID}"
    _check_references(segmentation, series, name)
    ctx = _Context(
        seg=segmentation, series=series, name=name, frames=_parse_frames(segmentation), masks={}
    )
    present = set(segmentation.segment_numbers)
    rois: dict[Side, HipROI] = {}
    for desc in segmentation.SegmentSequence:
        segment = _describe(desc)
        if segment.number not in present or not segment.abnormal:
            continue
        side = segment.coded_side or segment.label_side
        if side is None:
            continue
        if side in rois:
            raise AmbiguousSegmentError(
                f"{name}: more than one necrotic-lesion segment for side {side}"
            )
        mask, placement = _mask_of(ctx, segment.number)
        if not mask.any():
            continue
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(series.image)
        rois[side] = HipROI(
            side=side,
            mask=image,
            source="seg",
            description=(
                f"{name} segment {segment.number} {segment.label!r}: necrotic lesion; {placement}"
            ),
            segment_number=segment.number,
        )
    return rois


# --- reading and reference checks --------------------------------------------------------


def _read_segmentation(seg: Path | str | Dataset | hd.seg.Segmentation) -> hd.seg.Segmentation:
    if isinstance(seg, hd.seg.Segmentation):
        return seg
    if isinstance(seg, Dataset):
        ds, where, copy = seg, f"dataset {seg.get('SOPInstanceUID', '(no SOP Instance UID)')}", True
    else:
        path = Path(seg)
        where = str(path)
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, FileNotFoundError, IsADirectoryError) as exc:
            raise NotASegmentationError(f"{where}: not a readable DICOM file ({exc})") from exc
        except Exception as exc:  # pydicom raises many types on damaged files
            raise NotASegmentationError(f"{where}: cannot be read as DICOM ({exc})") from exc
        copy = False  # read here: nobody else holds it
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if sop_class not in SEGMENTATION_SOP_CLASSES:
        raise NotASegmentationError(
            f"{where}: is {sop_class.name or 'of no SOP class'}, not a DICOM Segmentation"
        )
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=copy)
    except Exception as exc:  # highdicom raises many types on non-conformant objects
        raise NotASegmentationError(f"{where}: not a usable Segmentation ({exc})") from exc


def _referenced_series(seg: Dataset) -> set[str]:
    """Series UIDs in the Common Instance Reference module (this and other studies)."""
    uids = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    for study in seg.get("StudiesContainingOtherReferencedInstancesSequence", []):
        uids |= {str(item.SeriesInstanceUID) for item in study.get("ReferencedSeriesSequence", [])}
    return uids


def _check_references(seg: hd.seg.Segmentation, series: LoadedSeries, name: str) -> None:
    seg_for = seg.get("FrameOfReferenceUID")
    if seg_for and str(seg_for) != series.frame_of_reference_uid:
        raise SegmentationReferenceError(
            f"{name}: frame of reference {seg_for} is not the series' "
            f"({series.frame_of_reference_uid}); its positions mean something else"
        )
    referenced = _referenced_series(seg)
    if referenced:
        if series.series_instance_uid not in referenced:
            raise SegmentationReferenceError(
                f"{name}: references series {', '.join(sorted(referenced))}, not series "
                f"{series.series_instance_uid}"
            )
        return
    # No series-level references (non-conformant, but seen): per-frame ones must point
    # into the series, or the frame of reference must tie the SEG to it.
    frame_refs = {
        str(src.ReferencedSOPInstanceUID)
        for item in seg.get("PerFrameFunctionalGroupsSequence", [])
        for derivation in item.get("DerivationImageSequence", [])
        for src in derivation.get("SourceImageSequence", [])
    }
    if frame_refs and not frame_refs & set(series.sop_instance_uids):
        raise SegmentationReferenceError(
            f"{name}: its frames are derived from {len(frame_refs)} instance(s), none of "
            f"series {series.series_instance_uid}"
        )
    if not frame_refs and not seg_for:
        raise SegmentationReferenceError(
            f"{name}: references no series, no source instance and no frame of reference, "
            f"so nothing ties it to series {series.series_instance_uid}"
        )


# --- segment descriptions ---------------------------------------------------------------


def _code(item: Dataset | None) -> Code | None:
    if item is None or "CodeValue" not in item or "CodingSchemeDesignator" not in item:
        return None
    return (str(item.CodingSchemeDesignator).upper(), str(item.CodeValue))


def _sides_of(items: Iterable[Dataset]) -> set[Side]:
    sides: set[Side] = set()
    for item in items:
        code = _code(item)
        if code in LEFT_CODES:
            sides.add(Side.LEFT)
        elif code in RIGHT_CODES:
            sides.add(Side.RIGHT)
        elif code is not None and code[1] in ("51440002", "G-A102"):  # Bilateral
            sides |= {Side.LEFT, Side.RIGHT}
    return sides


def _coded_side(desc: Dataset) -> tuple[Side | None, str, bool]:
    """Laterality from modifiers, where it was found, and whether both sides are named."""
    found: list[tuple[Side, str]] = []
    type_item = _first(desc.get("SegmentedPropertyTypeCodeSequence"))
    if type_item is not None:
        for side in _sides_of(type_item.get("SegmentedPropertyTypeModifierCodeSequence", [])):
            found.append((side, "property type modifier"))
    for region in desc.get("AnatomicRegionSequence", []):
        for side in _sides_of(region.get("AnatomicRegionModifierSequence", [])):
            found.append((side, "anatomic region modifier"))
    for structure in desc.get("PrimaryAnatomicStructureSequence", []):
        modifiers = structure.get("PrimaryAnatomicStructureModifierSequence", [])
        for side in _sides_of(modifiers):
            found.append((side, "primary anatomic structure modifier"))
    sides = {side for side, _ in found}
    if len(sides) != 1:
        return (
            None,
            ("both sides in laterality modifiers" if sides else "no laterality"),
            bool(sides),
        )
    side = sides.pop()
    where = sorted({w for s, w in found if s == side})
    code = "SCT 7771000 Left" if side is Side.LEFT else "SCT 24028007 Right"
    return side, f"laterality {code} in the {' and '.join(where)}", False


def _normalise_label(label: str) -> str:
    return " ".join(_SEPARATORS.sub(" ", label.lower()).split())


def _label_side(text: str) -> tuple[Side | None, bool]:
    """(side, names a femoral head) from a normalised label."""
    fused = _FUSED_HEAD.match(text.replace(" ", ""))
    if fused:
        letter = fused.group("pre") or fused.group("post")
        return (Side.LEFT if letter == "l" else Side.RIGHT), True
    if not _HEAD_PHRASE.search(text):
        return None, False
    left, right = bool(_LEFT_WORD.search(text)), bool(_RIGHT_WORD.search(text))
    if left == right:  # neither, or both ("left and right femoral heads")
        return None, True
    return (Side.LEFT if left else Side.RIGHT), True


def _describe(desc: hd.seg.SegmentDescription) -> _Segment:
    label = str(desc.get("SegmentLabel", "") or "")
    text = _normalise_label(label)
    type_item = _first(desc.get("SegmentedPropertyTypeCodeSequence"))
    category = _code(_first(desc.get("SegmentedPropertyCategoryCodeSequence")))
    type_code = _code(type_item)
    coded_side, side_detail, coded_both = _coded_side(desc)
    label_side, names_head = _label_side(text)
    label_both = bool(_LEFT_WORD.search(text) and _RIGHT_WORD.search(text))
    abnormal = (
        category in ABNORMAL_CATEGORY_CODES
        or type_code in ABNORMAL_TYPE_CODES
        or bool(_ABNORMAL_WORD.search(text))
    )
    generic = type_code in _GENERIC_TYPE_CODES and bool(_GENERIC_LABEL.match(text))
    return _Segment(
        number=int(desc.SegmentNumber),
        label=label,
        category=category,
        type_code=type_code,
        type_meaning=str(type_item.get("CodeMeaning", "")) if type_item is not None else "",
        coded_side=coded_side,
        side_detail=side_detail,
        abnormal=abnormal,
        label_side=label_side,
        label_names_head=names_head,
        generic=generic,
        bilateral=coded_both or (names_head and label_both),
    )


# --- matching ----------------------------------------------------------------------------


def _pick(
    ctx: _Context,
    side: Side,
    candidates: list[_Segment],
    method: MatchMethod,
    detail: Callable[[_Segment], str],
) -> _Choice | None:
    if len(candidates) > 1:
        listed = ", ".join(f"{s.number} {s.label!r}" for s in candidates)
        raise AmbiguousSegmentError(
            f"{ctx.name}: {len(candidates)} segments qualify as the "
            f"{'left' if side == 'L' else 'right'} femoral head by {method}: {listed}"
        )
    return _Choice(candidates[0], method, detail(candidates[0])) if candidates else None


def _coded_detail(s: _Segment) -> str:
    code = f"{s.type_code[0]} {s.type_code[1]} " if s.type_code is not None else ""
    return f"{code}{s.type_meaning!r}, {s.side_detail}"


def _match(ctx: _Context, segments: list[_Segment]) -> dict[Side, _Choice]:
    chosen: dict[Side, _Choice] = {}

    def free() -> list[_Segment]:
        used = {c.segment.number for c in chosen.values()}
        return [s for s in segments if s.number not in used and not s.abnormal]

    for side in _SIDES:
        coded = [s for s in free() if s.head_coded and s.coded_side == side]
        choice = _pick(ctx, side, coded, "coded", _coded_detail)
        if choice is not None:
            chosen[side] = choice
    for side in _SIDES:
        if side in chosen:
            continue
        labelled = [s for s in free() if s.label_names_head and s.label_side == side]
        choice = _pick(ctx, side, labelled, "label", lambda s: f"label {s.label!r}")
        if choice is not None:
            chosen[side] = choice
    missing = [side for side in _SIDES if side not in chosen]
    if missing:
        chosen.update(_match_by_position(ctx, [s for s in free() if s.head_like], chosen, missing))
    return chosen


def _centroid_x(ctx: _Context, mask: BoolVolume) -> float:
    k, r, c = (float(v) for v in np.argwhere(mask).mean(axis=0))
    return float(ctx.series.image.TransformContinuousIndexToPhysicalPoint((c, r, k))[0])


def _x_range(ctx: _Context, mask: BoolVolume) -> tuple[float, float]:
    """Smallest and largest patient x of the voxel centres of ``mask``."""
    image = ctx.series.image
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    # x = origin_x + sum_j direction[0, j] * spacing[j] * index_j, index in ITK order.
    step = direction[0] * np.asarray(image.GetSpacing(), dtype=np.float64)
    xs = np.argwhere(mask)[:, ::-1] @ step + image.GetOrigin()[0]
    return float(xs.min()), float(xs.max())


def _match_by_position(
    ctx: _Context, candidates: list[_Segment], chosen: dict[Side, _Choice], missing: list[Side]
) -> dict[Side, _Choice]:
    if not candidates:
        return {}
    masks = {s.number: _mask_of(ctx, s.number)[0] for s in candidates}
    sizes = {n: int(m.sum()) for n, m in masks.items()}
    containers = [(n, m) for n, m in masks.items()] + [
        (c.segment.number, _mask_of(ctx, c.segment.number)[0]) for c in chosen.values()
    ]
    size = ctx.series.image.GetSize()
    centre = [(n - 1) / 2.0 for n in size]
    midline = float(ctx.series.image.TransformContinuousIndexToPhysicalPoint(centre)[0])
    kept: list[_Segment] = []
    for s in candidates:
        if sizes[s.number] == 0:
            continue
        low, high = _x_range(ctx, masks[s.number])
        if low < midline < high:
            # A femoral head lies well lateral of the midline; a segment across it is
            # something else (both heads in one segment, the pelvis, ...).
            LOGGER.info("%s: segment %d crosses the midline: not a head", ctx.name, s.number)
            continue
        inside = any(
            n != s.number
            and int(m.sum()) > sizes[s.number]
            and int((m & masks[s.number]).sum()) >= _CONTAINED_FRACTION * sizes[s.number]
            for n, m in containers
        )
        if not inside:
            kept.append(s)
    x = {s.number: _centroid_x(ctx, masks[s.number]) for s in kept}

    def detail(s: _Segment, how: str) -> str:
        return f"centroid x = {x[s.number]:.1f} mm, {how}; midline x = {midline:.1f} mm"

    result: dict[Side, _Choice] = {}
    if len(missing) == 2 and len(kept) == 2:
        right, left = sorted(kept, key=lambda s: x[s.number])
        if abs(x[left.number] - x[right.number]) < 20.0:
            LOGGER.warning(
                "%s: the two unlabelled segments' centroids are only %.1f mm apart in x",
                ctx.name,
                x[left.number] - x[right.number],
            )
        result[Side.LEFT] = _Choice(left, "position", detail(left, "the larger x of two"))
        result[Side.RIGHT] = _Choice(right, "position", detail(right, "the smaller x of two"))
        return result
    if len(missing) == 2 and len(kept) > 2:
        listed = ", ".join(f"{s.number} {s.label!r}" for s in kept)
        raise AmbiguousSegmentError(
            f"{ctx.name}: no femoral head identified by code or label, and {len(kept)} "
            f"unlabelled segments could be one: {listed}"
        )
    for side in missing:
        on_side = [s for s in kept if (x[s.number] > midline) == (side is Side.LEFT)]
        how = "left of the midline" if side is Side.LEFT else "right of the midline"
        choice = _pick(ctx, side, on_side, "position", functools.partial(detail, how=how))
        if choice is not None:
            result[side] = choice
    return result
