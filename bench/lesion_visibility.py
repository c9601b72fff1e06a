"""How visible is each phantom lesion inside its femoral head, on the acquired grid?

A model that reads the femoral head can only find a lesion that shows in the head's voxels.
For every ONFH hip of a phantom cohort (``onfh-dlr phantom``; its SEG holds a head and a
lesion segment per ONFH hip) this measures, on the series as acquired and in standard
deviations of the rest of the head (the head minus the lesion dilated by one voxel):

* **border excess**: mean absolute deviation from the rest's mean on the lesion's border
  voxels, minus the same for the rest's own voxels. The double-line band lies on the
  lesion's border, a bright line beside a dark one, so their signed means can cancel;
  absolute deviations do not. 0: the border looks like any other marrow.
* **interior shift**: the lesion interior's mean minus the rest's mean (oedema-like
  centres are bright, fat-like ones look like marrow).

A lesion with both below ``--floor`` (0.25 SD) has no signal of its own in the head: only
what travels with it (an effusion, oedema of the neck) can give it away. Per site and for
subtle and plain lesions it prints counts, medians and quartiles, and that share.

    python bench/lesion_visibility.py data/sites-160/cohort.csv --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage

from model_bundle.imaging import Side, lesion_rois_from_seg, load_series, rois_from_seg

#: Both measures below this many SD of the rest of the head: no in-head signal.
FLOOR = 0.25


@dataclass(frozen=True)
class Visibility:
    """One lesion's visibility in SD of the rest of its head."""

    border_excess: float
    interior_shift: float
    lesion_voxels: int
    border_voxels: int


def lesion_visibility(
    image: NDArray[np.floating], head: NDArray[np.bool_], lesion: NDArray[np.bool_]
) -> Visibility:
    """Border excess and interior shift of ``lesion`` inside ``head`` (same-shape arrays).

    Raises
    ------
    ValueError
        If the lesion has no voxel inside the head, or nothing of the head is left
        around it.
    """
    lesion = lesion & head
    if not lesion.any():
        raise ValueError("the lesion has no voxel inside the head")
    rest = head & ~ndimage.binary_dilation(lesion)
    if rest.sum() < 2:
        raise ValueError("no head is left around the lesion")
    values = image.astype(np.float64)
    mean, sd = values[rest].mean(), values[rest].std()
    if sd == 0:
        raise ValueError("the rest of the head is flat")
    border = lesion & ~ndimage.binary_erosion(lesion)
    interior = lesion & ~border

    def spread(where: NDArray[np.bool_]) -> float:
        return float(np.abs(values[where] - mean).mean() / sd)

    shift = (values[interior].mean() - mean) / sd if interior.any() else float("nan")
    return Visibility(
        border_excess=spread(border) - spread(rest),
        interior_shift=float(shift),
        lesion_voxels=int(lesion.sum()),
        border_voxels=int(border.sum()),
    )


@dataclass(frozen=True)
class LesionRow:
    """One ONFH hip of the cohort and its lesion's visibility."""

    patient: str
    side: str
    site: str
    subtle: bool
    visibility: Visibility


def _series(job: tuple[str, Path, Path, list[dict[str, str]]]) -> list[LesionRow]:
    patient, image, seg, hips = job
    series = load_series(image)
    array = sitk.GetArrayFromImage(series.image)
    heads = rois_from_seg(seg, series)
    lesions = lesion_rois_from_seg(seg, series)
    rows = []
    for hip in hips:
        side = Side.parse(hip["Side"])
        vis = lesion_visibility(
            array,
            sitk.GetArrayFromImage(heads[side].mask) > 0,
            sitk.GetArrayFromImage(lesions[side].mask) > 0,
        )
        rows.append(
            LesionRow(patient, hip["Side"], hip.get("Site") or "phantom", hip["Subtle"] == "1", vis)
        )
    return rows


def measure(cohort: Path, workers: int = 1) -> list[LesionRow]:
    """Every ONFH hip of ``cohort`` (a phantom cohort CSV) with its lesion's visibility."""
    with cohort.open(newline="") as handle:
        hips = [row for row in csv.DictReader(handle) if row["Label"] == "1"]
    jobs: dict[str, tuple[str, Path, Path, list[dict[str, str]]]] = {}
    for row in hips:
        image = (cohort.parent / row["Image"]).resolve()
        seg = (cohort.parent / row["Mask"]).resolve()
        jobs.setdefault(row["PatientID"], (row["PatientID"], image, seg, []))[3].append(row)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [r for rows in pool.map(_series, jobs.values()) for r in rows]


def _quartiles(values: Sequence[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "-"
    q1, q2, q3 = np.percentile(finite, [25, 50, 75])
    return f"{q2:+.2f} ({q1:+.2f} to {q3:+.2f})"


def table(rows: Sequence[LesionRow], floor: float = FLOOR) -> str:
    """Markdown table per site and lesion kind (plain / subtle)."""
    lines = [
        "| Site | Lesions | n | Border excess, median (IQR) | Interior shift, median (IQR) "
        f"| No in-head signal (both < {floor:g} SD) |",
        "|---|---|---|---|---|---|",
    ]
    for site in sorted({r.site for r in rows}):
        for subtle in (False, True):
            group = [r for r in rows if r.site == site and r.subtle == subtle]
            if not group:
                continue
            silent = sum(
                r.visibility.border_excess < floor and not abs(r.visibility.interior_shift) >= floor
                for r in group
            )
            lines.append(
                f"| {site} | {'subtle' if subtle else 'plain'} | {len(group)} "
                f"| {_quartiles([r.visibility.border_excess for r in group])} "
                f"| {_quartiles([r.visibility.interior_shift for r in group])} "
                f"| {silent}/{len(group)} ({silent / len(group):.0%}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cohort", type=Path, help="phantom cohort CSV (onfh-dlr phantom)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--floor", type=float, default=FLOOR)
    parser.add_argument("--json", type=Path, help="write every lesion's measures here")
    args = parser.parse_args()
    rows = measure(args.cohort.resolve(), args.workers)
    print(table(rows, args.floor))
    border = [r.visibility.border_excess for r in rows]
    print(f"\n{len(rows)} lesions; border excess median {statistics.median(border):+.2f} SD")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
