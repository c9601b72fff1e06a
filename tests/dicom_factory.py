"""Small synthetic MR series for the imaging tests, built with pydicom alone.

A series is a stack of slices through a bright Gaussian blob at a known patient
coordinate. A radially symmetric blob sampled finely enough (sigma > slice spacing) has
an intensity-weighted centroid at its centre to far better than 0.01 mm, so a test can
check the loader's whole voxel-to-patient mapping by where the blob lands.

Also here: an Enhanced MR (multi-frame) builder, re-encoders for the transfer syntaxes
under test (including a minimal lossless JPEG encoder, because pydicom cannot write one),
and helpers to turn pydicom's bundled single-slice test files into 3-slice series.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

FloatArray = npt.NDArray[np.float64]

#: Coronal: rows run patient-left (+x), columns run feet-ward (-z); the normal is +y.
CORONAL: Final = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def rotation(axis: str, degrees: float) -> FloatArray:
    """Rotation matrix about patient axis ``"x"``, ``"y"`` or ``"z"``."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def rotate_orientation(
    orientation: Sequence[float], *turns: tuple[str, float]
) -> tuple[float, ...]:
    """``orientation`` (an IOP) with both cosines turned by ``turns`` in order."""
    m = np.eye(3)
    for axis, degrees in turns:
        m = rotation(axis, degrees) @ m
    row = m @ np.asarray(orientation[:3], dtype=np.float64)
    col = m @ np.asarray(orientation[3:], dtype=np.float64)
    return tuple(float(v) for v in (*row, *col))


def ds_values(values: Sequence[float] | FloatArray) -> list[str]:
    """Values formatted as DICOM DS strings (at most 16 characters each)."""
    return [format_number_as_ds(float(v)) for v in values]


def parsed(values: Sequence[float] | FloatArray) -> FloatArray:
    """The values a reader gets back after DS formatting: the ground truth."""
    return np.array([float(v) for v in ds_values(values)], dtype=np.float64)


@dataclass(frozen=True)
class SeriesSpec:
    """What to synthesise. Distances in mm, patient coordinates (LPS)."""

    n_slices: int = 10
    rows: int = 64
    cols: int = 64
    #: (between rows, between columns), in DICOM's Pixel Spacing order.
    pixel_spacing: tuple[float, float] = (0.8, 0.7)
    slice_spacing: float = 3.0
    #: Deliberately not the spacing: the loader must measure spacing from positions.
    slice_thickness: float = 2.0
    spacing_between_slices: float | None = None
    orientation: tuple[float, ...] = CORONAL
    centre: tuple[float, float, float] = (12.5, -30.25, 40.0)
    blob_offset: tuple[float, float, float] = (1.3, -0.7, 2.1)
    blob_sigma: float = 4.0
    background: int = 100
    amplitude: int = 1000
    bits_stored: int = 12
    slope: float = 1.0
    intercept: float = 0.0
    seed: int = 0

    @property
    def blob_centre(self) -> FloatArray:
        return np.add(self.centre, self.blob_offset)


@dataclass(frozen=True)
class SyntheticSeries:
    """A synthetic series and its ground truth."""

    spec: SeriesSpec
    #: Single-frame MR datasets in shuffled order, with shuffled Instance Numbers.
    datasets: list[Dataset]
    #: Stored values (rows, cols per slice), slices in position order along the normal.
    stored: npt.NDArray[np.uint16]
    #: Image Position (Patient) per slice, in position order, as a reader parses it.
    positions: FloatArray
    row_cosine: FloatArray
    col_cosine: FloatArray
    sop_uids_in_order: list[UID]
    study_uid: UID
    series_uid: UID
    frame_of_reference_uid: UID

    @property
    def normal(self) -> FloatArray:
        n = np.cross(self.row_cosine, self.col_cosine)
        return n / np.linalg.norm(n)

    @property
    def values(self) -> FloatArray:
        """Expected loaded values: stored values with the rescale applied."""
        return self.stored.astype(np.float64) * self.spec.slope + self.spec.intercept


def _file_meta(sop_class: UID, sop_instance: UID, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    return meta


def _common(ds: Dataset, spec: SeriesSpec) -> None:
    ds.Modality = "MR"
    ds.PatientName = "Synthetic^Hip"
    ds.PatientID = "SYN0001"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 3
    ds.SeriesDescription = "COR T2 FS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = spec.rows, spec.cols
    ds.BitsAllocated = 8 if spec.bits_stored <= 8 else 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 0


def make_series(spec: SeriesSpec | None = None) -> SyntheticSeries:
    """Synthesise a single-frame MR series through a Gaussian blob."""
    spec = spec or SeriesSpec()
    rng = np.random.default_rng(spec.seed)
    iop = parsed(spec.orientation)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    row_sp, col_sp = spec.pixel_spacing
    origin = (
        np.asarray(spec.centre)
        - row * col_sp * (spec.cols - 1) / 2
        - col * row_sp * (spec.rows - 1) / 2
        - normal * spec.slice_spacing * (spec.n_slices - 1) / 2
    )
    positions = np.array(
        [parsed(origin + k * spec.slice_spacing * normal) for k in range(spec.n_slices)]
    )

    r_idx, c_idx = np.mgrid[0 : spec.rows, 0 : spec.cols]
    in_plane = c_idx[..., None] * col_sp * row + r_idx[..., None] * row_sp * col
    top = (1 << spec.bits_stored) - 1
    stored = np.empty((spec.n_slices, spec.rows, spec.cols), dtype=np.uint16)
    for k in range(spec.n_slices):
        d2 = np.sum((positions[k] + in_plane - spec.blob_centre) ** 2, axis=-1)
        blob = spec.background + spec.amplitude * np.exp(-d2 / (2 * spec.blob_sigma**2))
        stored[k] = np.clip(np.round(blob), 0, top)

    study, series_uid, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    sop_uids = [generate_uid() for _ in range(spec.n_slices)]
    instance_numbers = rng.permutation(spec.n_slices) + 1
    if np.all(instance_numbers == np.arange(1, spec.n_slices + 1)):
        instance_numbers = instance_numbers[::-1]  # never accidentally in position order

    datasets = []
    for k in range(spec.n_slices):
        ds = Dataset()
        ds.file_meta = _file_meta(MRImageStorage, sop_uids[k], ExplicitVRLittleEndian)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uids[k]
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_ref
        _common(ds, spec)
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImagePositionPatient = ds_values(positions[k])
        ds.ImageOrientationPatient = ds_values(iop)
        ds.PixelSpacing = ds_values(spec.pixel_spacing)
        ds.SliceThickness = format_number_as_ds(spec.slice_thickness)
        if spec.spacing_between_slices is not None:
            ds.SpacingBetweenSlices = format_number_as_ds(spec.spacing_between_slices)
        if spec.slope != 1.0 or spec.intercept != 0.0:
            ds.RescaleSlope = format_number_as_ds(spec.slope)
            ds.RescaleIntercept = format_number_as_ds(spec.intercept)
            ds.RescaleType = "US"
        ds.PixelData = _native_bytes(stored[k], spec)
        datasets.append(ds)

    shuffled = [datasets[int(i)] for i in rng.permutation(spec.n_slices)]
    return SyntheticSeries(
        spec=spec,
        datasets=shuffled,
        stored=stored,
        positions=positions,
        row_cosine=row,
        col_cosine=col,
        sop_uids_in_order=sop_uids,
        study_uid=study,
        series_uid=series_uid,
        frame_of_reference_uid=frame_of_ref,
    )


def _native_bytes(frames: npt.NDArray[Any], spec: SeriesSpec) -> bytes:
    dtype = np.uint8 if spec.bits_stored <= 8 else np.dtype("<u2")
    return bytes(frames.astype(dtype).tobytes())


def make_enhanced(
    series: SyntheticSeries,
    *,
    per_frame_orientation: bool = False,
    per_frame_rescale: bool = False,
    seed: int = 1,
) -> Dataset:
    """The same data as one Enhanced MR Image instance, frames in shuffled order.

    Position is always per frame; orientation and rescale (Pixel Value Transformation)
    are shared unless asked to be per frame; Pixel Measures are shared.
    """
    spec = series.spec
    order = np.random.default_rng(seed).permutation(spec.n_slices)
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(EnhancedMRImageStorage, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    _common(ds, spec)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = spec.n_slices

    def item(**elements: Any) -> Dataset:
        out = Dataset()
        for keyword, value in elements.items():
            setattr(out, keyword, value)
        return out

    orientation = item(
        ImageOrientationPatient=ds_values(np.r_[series.row_cosine, series.col_cosine])
    )
    transform = item(
        RescaleSlope=format_number_as_ds(spec.slope),
        RescaleIntercept=format_number_as_ds(spec.intercept),
        RescaleType="US",
    )
    shared = item(
        PixelMeasuresSequence=DicomSequence(
            [
                item(
                    PixelSpacing=ds_values(spec.pixel_spacing),
                    SliceThickness=format_number_as_ds(spec.slice_thickness),
                )
            ]
        )
    )
    if not per_frame_orientation:
        shared.PlaneOrientationSequence = DicomSequence([orientation])
    if not per_frame_rescale:
        shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    frames = []
    for k in order:
        frame = item(
            PlanePositionSequence=DicomSequence(
                [item(ImagePositionPatient=ds_values(series.positions[k]))]
            ),
            FrameContentSequence=DicomSequence([item(InStackPositionNumber=int(k) + 1)]),
        )
        if per_frame_orientation:
            frame.PlaneOrientationSequence = DicomSequence([copy.deepcopy(orientation)])
        if per_frame_rescale:
            frame.PixelValueTransformationSequence = DicomSequence([copy.deepcopy(transform)])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = _native_bytes(series.stored[order], spec)
    return ds


def write_datasets(datasets: Sequence[Dataset], directory: Path) -> list[Path]:
    """Write each dataset as a DICOM file (names in list order) and return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = directory / f"IM{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --- re-encoding -------------------------------------------------------------------------


def recode(datasets: Sequence[Dataset], transfer_syntax: UID, **kwargs: Any) -> list[Dataset]:
    """Copies of ``datasets`` in another transfer syntax, pydicom's encoders where it has
    them, the minimal encoders below for lossless and baseline JPEG."""
    out = []
    for original in datasets:
        ds = copy.deepcopy(original)
        if transfer_syntax in (DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian):
            # Native syntaxes: pydicom re-encodes (and deflates) when the file is written.
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        elif transfer_syntax in (JPEGLosslessSV1, JPEGLossless, JPEGBaseline8Bit):
            frame = _native_frame(ds)
            if transfer_syntax == JPEGBaseline8Bit:
                stream = encode_jpeg_baseline(frame.astype(np.uint8), **kwargs)
            else:
                stream = encode_jpeg_lossless(frame, precision=int(ds.BitsStored), **kwargs)
            ds.PixelData = encapsulate([stream])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        else:
            ds.compress(transfer_syntax, generate_instance_uid=False, **kwargs)
        out.append(ds)
    return out


def _native_frame(ds: Dataset) -> npt.NDArray[np.int64]:
    dtype = np.uint8 if ds.BitsAllocated == 8 else np.dtype("<u2")
    return np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns).astype(np.int64)


def encode_jpeg_lossless(
    frame: npt.NDArray[np.int64], *, precision: int, predictor: int = 1
) -> bytes:
    """A lossless JPEG (ITU T.81 process 14) stream of one greyscale frame.

    One Huffman table gives every difference category (SSSS 0..16) a 5-bit code, which
    is valid if not compact. ``predictor`` 1 is the SV1 syntax; 1-7 are all allowed by
    JPEG Lossless (process 14). Differences are taken modulo 2**16 (T.81 H.1.2.1).
    """
    rows, cols = frame.shape
    x = frame.astype(np.int64)
    out = bytearray()
    acc, nbits = 0, 0

    def put(value: int, length: int) -> None:
        nonlocal acc, nbits
        acc = (acc << length) | (value & ((1 << length) - 1))
        nbits += length
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        acc &= (1 << nbits) - 1

    for r in range(rows):
        for c in range(cols):
            a = int(x[r, c - 1]) if c else 0
            b = int(x[r - 1, c]) if r else 0
            cc = int(x[r - 1, c - 1]) if r and c else 0
            if r == 0 and c == 0:
                pred = 1 << (precision - 1)
            elif r == 0:
                pred = a
            elif c == 0:
                pred = b
            else:
                pred = {
                    1: a,
                    2: b,
                    3: cc,
                    4: a + b - cc,
                    5: a + ((b - cc) >> 1),
                    6: b + ((a - cc) >> 1),
                    7: (a + b) >> 1,
                }[predictor]
            diff = (int(x[r, c]) - pred) % 65536
            if diff >= 32768:
                diff -= 65536
            ssss = abs(diff).bit_length()
            put(ssss, 5)
            if 0 < ssss < 16:  # category 16 (diff 32768) has no extra bits
                put(diff if diff > 0 else diff - 1, ssss)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)  # pad the last byte with 1-bits

    bits = [0] * 16
    bits[4] = 17  # seventeen codes of length 5
    return b"".join(
        [
            b"\xff\xd8",  # SOI
            b"\xff\xc3",  # SOF3: lossless, Huffman
            (11).to_bytes(2, "big"),
            bytes([precision]),
            rows.to_bytes(2, "big"),
            cols.to_bytes(2, "big"),
            bytes([1, 1, 0x11, 0]),
            b"\xff\xc4",  # DHT
            (2 + 1 + 16 + 17).to_bytes(2, "big"),
            bytes([0x00, *bits, *range(17)]),
            b"\xff\xda",  # SOS: Ss = predictor, Se = 0, Ah/Al (point transform) = 0
            (8).to_bytes(2, "big"),
            bytes([1, 1, 0x00, predictor, 0, 0]),
            bytes(out),
            b"\xff\xd9",  # EOI
        ]
    )


def encode_jpeg_baseline(frame: npt.NDArray[np.uint8], *, quality: int = 90) -> bytes:
    """An 8-bit baseline JPEG (process 1) stream of one greyscale frame, via Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame, mode="L").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_with_pillow(stream: bytes) -> npt.NDArray[np.uint8]:
    """Pillow's own decoding of a baseline JPEG stream (an independent reference)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(stream)), dtype=np.uint8)


# --- pydicom's bundled single-slice files as series --------------------------------------


def stack_of(ds: Dataset, n_slices: int = 3, spacing: float = 2.0) -> list[Dataset]:
    """``n_slices`` copies of a single-slice MR dataset, stepped along its normal.

    The encoded pixel data are copied untouched, so each slice decodes like the source.
    """
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    series_uid = generate_uid()
    out = []
    for k in range(n_slices):
        copy_ = copy.deepcopy(ds)
        copy_.SeriesInstanceUID = series_uid
        copy_.SOPInstanceUID = generate_uid()
        copy_.file_meta.MediaStorageSOPInstanceUID = copy_.SOPInstanceUID
        copy_.InstanceNumber = k + 1
        copy_.ImagePositionPatient = ds_values(ipp + k * spacing * normal)
        out.append(copy_)
    return out


def mr_stack_with_pixels_of(source: Dataset, n_slices: int = 3) -> list[Dataset]:
    """A coronal MR series whose every slice carries ``source``'s encoded pixel data.

    For bundled files of a transfer syntax with no MR example (e.g. JPEG Extended): the
    codestream is copied byte for byte with its image pixel description.
    """
    spec = SeriesSpec(n_slices=n_slices, rows=int(source.Rows), cols=int(source.Columns))
    series = make_series(spec)
    out = []
    for ds in series.datasets:
        for keyword in (
            "BitsAllocated",
            "BitsStored",
            "HighBit",
            "PixelRepresentation",
            "PhotometricInterpretation",
            "SamplesPerPixel",
        ):
            setattr(ds, keyword, source[keyword].value)
        ds.PixelData = source.PixelData
        ds["PixelData"].VR = source["PixelData"].VR
        ds.file_meta.TransferSyntaxUID = UID(source.file_meta.TransferSyntaxUID)
        out.append(ds)
    return out
