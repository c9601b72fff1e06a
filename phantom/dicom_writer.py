"""Write a :class:`~phantom.case.PhantomStudy` as DICOM: an MR series and a SEG.

The MR series is one MR Image Storage instance per slice, uncompressed Explicit VR
Little Endian, with every module of the MR Image IOD filled the way a scanner
would fill it. The ground truth becomes a DICOM Segmentation (highdicom) on the
series' own grid. Both are deterministic: every UID is derived from the study's
own UIDs and every date and time from the study date and time, so the same study
always gives byte-identical files.
"""

from __future__ import annotations

import copy
import importlib.metadata
import zlib
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr.coding import CodedConcept
from numpy.typing import NDArray
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DA, TM, DSfloat, validate_value

from onfh_dlr.errors import PhantomError
from phantom.case import PhantomStudy, Segment

__all__ = ["write_segmentation", "write_series"]

# --- Codes for the segment descriptions --------------------------------------------
# Categories are from DICOM PS3.16 CID 7150 "Segmentation Property Categories" (code
# meanings as DICOM words them: SNOMED calls 123037004 "Body structure"; pydicom 3.0's
# bundled CID 7150 still lists the inactivated 91723000 for it). Head of femur is
# SNOMED 2812003 "Structure of head of femur" (pydicom's codes.SCT.HeadOfFemur, DICOM
# CID 7304; CID 1000/1001 call it "Femoral head"). Necrosis is 6574001 (CID 7151 via
# CID 7194). Left/Right are from CID 244 "Laterality" (also CID 2 "Anatomic Modifier").
_ANATOMICAL_STRUCTURE = ("123037004", "SCT", "Anatomical Structure")
_ABNORMAL_STRUCTURE = ("49755003", "SCT", "Morphologically Abnormal Structure")
_HEAD_OF_FEMUR = ("2812003", "SCT", "Head of femur")
_NECROSIS = ("6574001", "SCT", "Necrosis")
_LATERALITY = {
    "L": ("7771000", "SCT", "Left"),
    "R": ("24028007", "SCT", "Right"),
}
# CID 7162 "Surface Processing Algorithm Families" has nothing for "drawn by a
# simulator"; the truth masks are solid geometric shapes combined by set operations,
# which "Morphological Operations" describes best.
_ALGORITHM_FAMILY = ("123104", "DCM", "Morphological Operations")

# Recommended display colours (CIELab from sRGB) per (kind, side).
_DISPLAY_RGB: dict[tuple[str, str], tuple[int, int, int]] = {
    ("femoral_head", "L"): (80, 160, 255),
    ("femoral_head", "R"): (80, 220, 120),
    ("necrotic_lesion", "L"): (255, 60, 60),
    ("necrotic_lesion", "R"): (255, 160, 40),
}

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UI"})

_SEG_MANUFACTURER = "onfh-dlr phantom"
_SEG_MODEL_NAME = "onfh-dlr phantom generator"
_SEG_DEVICE_SERIAL = "ONFH-DLR-PHANTOM"
_SEG_SERIES_OFFSET = 1000


def _package_version() -> str:
    """Version of the installed onfh-dlr distribution, or ``"0+unknown"``."""
    try:
        return importlib.metadata.version("onfh-dlr")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _ds(value: float) -> DSfloat:
    """A DS value formatted to fit the 16-character limit."""
    return DSfloat(float(value), auto_format=True)


def _uid(study: PhantomStudy, *parts: str) -> UID:
    """A UID derived deterministically from the series UID and ``parts``."""
    return generate_uid(entropy_srcs=[study.patient.series_instance_uid, *parts])


def _device_serial_number(study: PhantomStudy) -> str:
    """A stable fake serial number for the scanner (same station, same number)."""
    s = study.scanner
    key = f"{s.manufacturer}|{s.model_name}|{s.station_name}".encode()
    return f"{zlib.crc32(key) % 100000:05d}"


def _check_stored(study: PhantomStudy) -> NDArray[np.uint16]:
    """Validate the stored pixel array against geometry and ``bits_stored``."""
    stored = np.asarray(study.stored)
    bits = study.scanner.bits_stored
    if not 1 <= bits <= 16:
        raise PhantomError(f"bits_stored must be in 1..16, got {bits}")
    if stored.dtype != np.uint16:
        raise PhantomError(f"stored pixels must be uint16, got {stored.dtype}")
    if stored.shape != study.geometry.shape:
        raise PhantomError(
            f"stored pixels have shape {stored.shape}, geometry says {study.geometry.shape}"
        )
    if stored.size and int(stored.max()) >= 1 << bits:
        raise PhantomError(f"stored value {int(stored.max())} does not fit in {bits} bits stored")
    return stored


def _window(study: PhantomStudy, stored: NDArray[np.uint16]) -> tuple[DSfloat, DSfloat]:
    """Window centre and width from robust percentiles, in output (rescaled) units."""
    # Exact lower percentiles (1 %, 99.5 %) from a histogram of the integer values:
    # much faster than sorting the whole series with np.percentile.
    counts = np.bincount(stored.ravel(), minlength=1)
    cdf = np.cumsum(counts)
    lo, hi = (float(np.searchsorted(cdf, q * cdf[-1])) for q in (0.01, 0.995))
    if study.scanner.rescale is not None:
        slope, intercept = study.scanner.rescale
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    # Rounded to whole numbers as scanners write them; width at least 1 (PS3.3 C.11.2).
    centre = round((lo + hi) / 2.0)
    width = max(round(hi - lo), 1)
    return _ds(centre), _ds(width)


def _check_values(ds: Dataset) -> None:
    """Raise if any value breaks its VR (length, characters), as dciodvfy would report.

    pydicom only warns on assignment; a profile with, say, a 17-character SH value
    would give files a PACS may reject, so the writer refuses them instead.
    """
    for elem in ds:
        # Numbers are formatted here (DS via auto_format), only text comes from outside.
        if elem.VR not in _TEXT_VRS:
            continue
        values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
        for value in values:
            try:
                validate_value(elem.VR, str(value), config.RAISE)
            except ValueError as exc:
                raise PhantomError(f"{elem.keyword} = {value!r}: {exc}") from exc


def _series_dataset(study: PhantomStudy, stored: NDArray[np.uint16]) -> Dataset:
    """Attributes shared by every slice of the series."""
    p, s, g = study.patient, study.scanner, study.geometry
    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = p.study_date
    ds.InstanceCreationTime = p.study_time
    ds.SOPClassUID = MRImageStorage
    # General Study
    ds.StudyDate = p.study_date
    ds.StudyTime = p.study_time
    ds.AccessionNumber = p.accession_number
    # Modality
    ds.Modality = "MR"
    # General Equipment
    ds.Manufacturer = s.manufacturer
    ds.InstitutionName = s.institution_name
    ds.ReferringPhysicianName = ""
    ds.StationName = s.station_name
    ds.StudyDescription = p.study_description
    ds.SeriesDescription = s.series_description
    ds.ManufacturerModelName = s.model_name
    # Patient
    ds.PatientName = p.patient_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = f"{p.age_years:03d}Y"
    ds.PatientWeight = _ds(p.weight_kg)
    # MR Image (acquisition parameters)
    ds.ScanningSequence = list(s.scanning_sequence)
    ds.SequenceVariant = list(s.sequence_variant)
    ds.ScanOptions = list(s.scan_options)
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = s.sequence_name
    ds.BodyPartExamined = "HIP"
    ds.SliceThickness = _ds(g.slice_thickness)
    ds.RepetitionTime = _ds(s.repetition_time)
    ds.EchoTime = _ds(s.echo_time)
    if s.inversion_time is not None:
        ds.InversionTime = _ds(s.inversion_time)
    ds.NumberOfAverages = _ds(s.number_of_averages)
    ds.ImagingFrequency = _ds(s.imaging_frequency)
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = 1
    ds.MagneticFieldStrength = _ds(s.magnetic_field_strength)
    ds.SpacingBetweenSlices = _ds(g.slice_spacing)
    ds.EchoTrainLength = s.echo_train_length
    ds.DeviceSerialNumber = _device_serial_number(study)
    ds.SoftwareVersions = s.software_versions.split("\\")  # LO, VM 1-n
    ds.ProtocolName = s.protocol_name
    ds.ReceiveCoilName = s.receive_coil_name
    ds.PixelBandwidth = _ds(s.pixel_bandwidth)
    ds.FlipAngle = _ds(s.flip_angle)
    ds.PatientPosition = "HFS"
    # General Series / Study / Frame of Reference
    ds.StudyInstanceUID = p.study_instance_uid
    ds.SeriesInstanceUID = p.series_instance_uid
    ds.StudyID = p.study_id
    ds.SeriesNumber = p.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [_ds(v) for v in g.image_orientation()]
    ds.FrameOfReferenceUID = p.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = g.rows
    ds.Columns = g.columns
    ds.PixelSpacing = [_ds(v) for v in g.pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = s.bits_stored
    ds.HighBit = s.bits_stored - 1
    ds.PixelRepresentation = 0
    # VOI LUT
    ds.WindowCenter, ds.WindowWidth = _window(study, stored)
    if s.rescale is not None:
        # Philips writes these into MR images although the MR Image IOD has no Modality
        # LUT module. They are standard attributes outside the IOD, so dciodvfy warns
        # (no error) "not present in standard DICOM IOD ... Standard Extended SOP Class"
        # and, for a slope other than 1, "Non-identity Modality LUT ... may cause
        # windowing problems". That is exactly the vendor behaviour the phantom mimics;
        # the window above is in rescaled units, as PS3.3 C.11.2.1.2 requires.
        ds.RescaleIntercept = _ds(s.rescale[1])
        ds.RescaleSlope = _ds(s.rescale[0])
        ds.RescaleType = "US"
    for tag in s.private_tags:
        # Vendors' private blocks (Siemens CSA, GEMS_*, Philips MR Imaging DD, Toshiba):
        # readers must cope with them, and they must not break the standard attributes.
        block = ds.private_block(tag.group, tag.creator, create=True)
        block.add_new(tag.offset, tag.vr, tag.value)
    _check_values(ds)
    return ds


def _slice_dataset(
    study: PhantomStudy, shared: Dataset, stored: NDArray[np.uint16], k: int
) -> Dataset:
    """The dataset of slice ``k`` (0-based)."""
    p, g = study.patient, study.geometry
    # A fresh element per attribute (cheaper than deepcopy; values are immutable
    # strings and numbers, multi-values are copied) so slices share nothing mutable.
    ds = Dataset()
    for elem in shared:
        ds.add(DataElement(elem.tag, elem.VR, copy.copy(elem.value)))
    sop_instance_uid = _uid(study, str(k))
    ds.SOPInstanceUID = sop_instance_uid
    # General Image: an original image straight off the scanner. Value 3 is "OTHER" as
    # GE writes it: PS3.3 C.8.3.1.1.1 has no term for a plain magnitude image, and the
    # Siemens/Philips "M"/"M_SE" draw a dciodvfy warning (unrecognised defined term).
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SeriesDate = p.study_date
    ds.AcquisitionDate = p.study_date
    ds.ContentDate = p.study_date
    ds.SeriesTime = p.study_time
    ds.AcquisitionTime = p.study_time
    ds.ContentTime = p.study_time
    ds.InstanceNumber = k + 1
    position = g.slice_position(k)
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(float(position @ g.normal))
    # HIP is a paired structure, so General Series Laterality (R or L only) would be
    # required unless Image Laterality is sent: both hips are in every image, "B".
    ds.ImageLaterality = "B"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(stored[k], dtype="<u2").tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_series(study: PhantomStudy, out_dir: Path) -> list[Dataset]:
    """Write the MR series of ``study`` as one file per slice.

    Parameters
    ----------
    study
        The rendered study; ``study.stored`` holds the stored pixel values.
    out_dir
        Directory to write ``IM0001.dcm``, ``IM0002.dcm``, ... into (created).

    Returns
    -------
    list of pydicom.Dataset
        The written datasets, in slice order.

    Raises
    ------
    PhantomError
        If the pixels do not match the geometry or do not fit in ``bits_stored``.
    """
    stored = _check_stored(study)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shared = _series_dataset(study, stored)
    datasets: list[Dataset] = []
    for k in range(study.geometry.n_slices):
        ds = _slice_dataset(study, shared, stored, k)
        pydicom.dcmwrite(out_dir / f"IM{k + 1:04d}.dcm", ds, enforce_file_format=True)
        datasets.append(ds)
    return datasets


def _concept(code: tuple[str, str, str]) -> CodedConcept:
    """A fresh coded concept (never shared between sequences, so safe to extend)."""
    return CodedConcept(*code)


def _segment_description(
    number: int, segment: Segment, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    """The Segment Description macro of one truth segment, with laterality."""
    if segment.kind == "femoral_head":
        category, prop_type = _ANATOMICAL_STRUCTURE, _HEAD_OF_FEMUR
        regions = None
    elif segment.kind == "necrotic_lesion":
        category, prop_type = _ABNORMAL_STRUCTURE, _NECROSIS
        regions = [_concept(_HEAD_OF_FEMUR)]
    else:
        raise PhantomError(f"unknown segment kind {segment.kind!r}")
    rgb = _DISPLAY_RGB[(segment.kind, segment.side)]
    desc = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label,
        segmented_property_category=_concept(category),
        segmented_property_type=_concept(prop_type),
        # A generator, not a reader, drew these masks: MANUAL would claim a human drew
        # them, so they are AUTOMATIC with the generator named as the algorithm.
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=regions,
        display_color=hd.color.CIELabColor.from_rgb(*rgb),
    )
    # highdicom has no parameters for laterality. A femoral head's side qualifies the
    # segmented property type (Segmented Property Type Modifier Code Sequence, nested
    # in the type's item); a lesion's side qualifies its anatomic region, the head of
    # femur (Anatomic Region Modifier Sequence, nested in the region's item).
    side = [_concept(_LATERALITY[segment.side])]
    if regions is None:
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = side
    else:
        desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = side
    return desc


def write_segmentation(
    study: PhantomStudy, source_images: Sequence[Dataset], path: Path
) -> hd.seg.Segmentation:
    """Write the ground truth of ``study`` as a BINARY DICOM Segmentation.

    Parameters
    ----------
    study
        The rendered study; one segment per ``study.segments`` entry, in order.
    source_images
        The MR datasets returned by :func:`write_series`, in slice order.
    path
        File to write (parent directories are created).

    Returns
    -------
    highdicom.seg.Segmentation
        The written segmentation.

    Raises
    ------
    PhantomError
        If there are no segments, or the source images or a mask do not match the
        series.
    """
    g, p = study.geometry, study.patient
    if not study.segments:
        raise PhantomError("the study has no ground-truth segments")
    if len(source_images) != g.n_slices:
        raise PhantomError(f"{len(source_images)} source images for {g.n_slices} slices")
    if any(ds.SeriesInstanceUID != p.series_instance_uid for ds in source_images):
        raise PhantomError("source images do not belong to the study's series")
    for seg in study.segments:
        if seg.mask.shape != g.shape:
            raise PhantomError(
                f"mask {seg.label!r} has shape {seg.mask.shape}, series is {g.shape}"
            )
    masks = [np.asarray(s.mask, dtype=bool) for s in study.segments]
    # Only slices with some truth become frames (omit_empty_frames would drop the rest
    # anyway). Cropping first keeps highdicom's per-pixel checks (its overlap test sums
    # the whole 4-D array) off the empty slices, about halving the time; the empty
    # slices are still referenced as further source images, so the SEG lists the whole
    # series.
    occupied = [k for k in range(g.n_slices) if any(m[k].any() for m in masks)]
    if not occupied:  # all segments empty: let highdicom handle it on the full grid
        occupied = list(range(g.n_slices))
    empty = sorted(set(range(g.n_slices)) - set(occupied))
    pixels = np.stack([m[occupied] for m in masks], axis=-1)

    version = _package_version()
    algorithm = hd.AlgorithmIdentificationSequence(
        name=_SEG_MANUFACTURER,
        family=_concept(_ALGORITHM_FAMILY),
        version=version,
        source="onfh-dlr",
    )
    descriptions = [
        _segment_description(i, seg, algorithm) for i, seg in enumerate(study.segments, 1)
    ]
    seg_ds = hd.seg.Segmentation(
        source_images=[source_images[k] for k in occupied],
        further_source_images=[source_images[k] for k in empty] or None,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=_uid(study, "seg", "series"),
        series_number=p.series_number + _SEG_SERIES_OFFSET,
        sop_instance_uid=_uid(study, "seg", "instance"),
        instance_number=1,
        manufacturer=_SEG_MANUFACTURER,
        manufacturer_model_name=_SEG_MODEL_NAME,
        software_versions=version,
        device_serial_number=_SEG_DEVICE_SERIAL,
        omit_empty_frames=True,
        content_label="GROUND_TRUTH",
        content_description="Synthetic ground truth of the onfh-dlr hip phantom",
        series_description="Phantom ground truth",
        content_date=p.study_date,
        content_time=p.study_time,
        series_date=p.study_date,
        series_time=p.study_time,
    )
    # highdicom stamps the wall clock (instance creation, its own contributing-equipment
    # item) and a random dimension organisation UID; replace them so the same study
    # gives the same bytes.
    seg_ds.InstanceCreationDate = DA(p.study_date)
    seg_ds.InstanceCreationTime = TM(p.study_time)
    for item in seg_ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = p.study_date + p.study_time
    dim_uid = _uid(study, "seg", "dimension-organization")
    for item in seg_ds.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = dim_uid
    for item in seg_ds.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = dim_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg_ds.save_as(path, enforce_file_format=True)
    return seg_ds
