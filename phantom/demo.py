"""The demo: one phantom study written to disk, read back and summarised."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from rich.console import Console
from rich.table import Table

from onfh_dlr.settings import Settings
from phantom.cohort import generate_cohort

DEMO_SEED = 2024


def segment_centroids(
    seg: hd.seg.Segmentation, series: list[pydicom.Dataset]
) -> dict[str, tuple[float, ...]]:
    """Centroid (patient mm) and volume (ml) of each segment of ``seg`` on ``series``' grid."""
    series = sorted(series, key=lambda ds: int(ds.InstanceNumber))
    uids = [ds.SOPInstanceUID for ds in series]
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=list(seg.segment_numbers),
        assert_missing_frames_are_empty=True,
    )
    first = series[0]
    row_dir = np.array(first.ImageOrientationPatient[:3], dtype=float)
    col_dir = np.array(first.ImageOrientationPatient[3:], dtype=float)
    dr, dc = (float(v) for v in first.PixelSpacing)
    out: dict[str, tuple[float, ...]] = {}
    for i, number in enumerate(seg.segment_numbers):
        k, r, c = np.nonzero(masks[..., i])
        if len(k) == 0:
            continue
        origins = np.array([series[j].ImagePositionPatient for j in k], dtype=float)
        points = origins + r[:, None] * dr * col_dir + c[:, None] * dc * row_dir
        spacing = float(first.SpacingBetweenSlices)
        label = seg.get_segment_description(number).segment_label
        out[label] = (*points.mean(axis=0), len(k) * dr * dc * spacing / 1000.0)
    return out


def run_demo(settings: Settings, console: Console) -> Path:
    """Generate a phantom study under ``settings.data_dir/demo``, read it back, print it."""
    out = settings.data_dir / "demo" / "phantom"
    console.rule("[bold]onfh-dlr demo: a synthetic coronal T2-FS hip study")
    start = time.perf_counter()
    csv_path = generate_cohort(out, cases=1, seed=DEMO_SEED, onfh_fraction=1.0)
    console.print(f"generated in {time.perf_counter() - start:.2f} s -> {out}")
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    series_dir = out / rows[0]["Image"]
    files = sorted(series_dir.glob("*.dcm"))
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(f) for f in files]
    first = datasets[0]
    seg = hd.seg.segread(out / rows[0]["Mask"])

    table = Table(title="Series", title_justify="left", show_header=False)
    for key, value in [
        ("Patient", f"{first.PatientID} ({first.PatientSex}, {first.PatientAge})"),
        ("Manufacturer / model", f"{first.Manufacturer} {first.ManufacturerModelName}"),
        ("SeriesDescription", str(first.SeriesDescription)),
        ("ScanOptions", "\\".join(first.get("ScanOptions", [])) or "-"),
        ("TR / TE", f"{first.RepetitionTime} / {first.EchoTime} ms"),
        ("Field strength", f"{first.MagneticFieldStrength} T"),
        ("Slices", f"{len(files)} x {first.Rows} x {first.Columns}"),
        ("Pixel spacing", f"{float(first.PixelSpacing[0]):.3f} mm"),
        ("Slice thickness / spacing", f"{first.SliceThickness} / {first.SpacingBetweenSlices} mm"),
        ("Orientation", " ".join(f"{float(v):.3f}" for v in first.ImageOrientationPatient)),
        (
            "Rescale",
            f"{first.RescaleSlope} x + {first.RescaleIntercept}"
            if "RescaleSlope" in first
            else "none",
        ),
    ]:
        table.add_row(key, value)
    console.print(table)

    centroids = segment_centroids(seg, datasets)
    hips = Table(title="Hips: ground truth, and the SEG read back", title_justify="left")
    for col in (
        "Side",
        "Label",
        "Stage",
        "Lesion",
        "Oedema",
        "Effusion",
        "Head centre (truth)",
        "SEG centroid",
        "Head ml",
    ):
        hips.add_column(col)
    for row in rows:
        name = "Left" if row["Side"] == "L" else "Right"
        cx, cy, cz, ml = centroids[f"{name} femoral head"]
        lesion = (
            "-"
            if row["Label"] == "0"
            else f"{row['LesionSizeClass']} {float(row['LesionFraction']):.0%}, "
            f"{row['LesionCentre']}"
        )
        hips.add_row(
            row["Side"],
            row["Label"],
            row["Stage"],
            lesion,
            "yes" if row["MarrowOedema"] == "1" else "no",
            "yes" if row["Effusion"] == "1" else "no",
            "({:.1f}, {:.1f}, {:.1f})".format(*(float(row[f"HeadCentre{a}"]) for a in "XYZ")),
            f"({cx:.1f}, {cy:.1f}, {cz:.1f})",
            f"{ml:.1f}",
        )
    console.print(hips)
    labels = ", ".join(seg.get_segment_description(n).segment_label for n in seg.segment_numbers)
    console.print(f"SEG segments: {labels}")
    console.print(
        f"files: {series_dir} ({len(files)} instances), {out / rows[0]['Mask']}, {csv_path}"
    )
    return out


__all__ = ["run_demo", "segment_centroids"]
