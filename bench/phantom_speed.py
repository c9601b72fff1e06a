"""How long one phantom case takes, stage by stage and per site profile, on this machine.

Run: ``.venv/bin/python bench/phantom_speed.py [--cases N] [--sites NAME,...] [--autoseg]``.
Prints per-case times of rendering (``generate_study``) and of writing the DICOM series
and SEG, for the default generator and for each named site profile (``all``: every
profile in :data:`phantom.sites.SITES`). With ``--autoseg``, also reloads each series
and runs the service's auto-segmenter (``model_bundle.imaging.autoseg.auto_rois``): hips found
per site, with Dice against the truth of the heads it found.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from model_bundle.imaging import Side
from phantom.cohort import assign_hips
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study
from phantom.sites import SITES, site_profile


@dataclass
class SiteRun:
    """Timings and auto-segmentation results of one site (``None``: the default)."""

    name: str
    render: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)
    hips: int = 0
    found: int = 0
    dice: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _autoseg(run: SiteRun, folder: Path, study_segments: dict[Side, NDArray[np.bool_]]) -> None:
    # Imported here: the speed bench must run without the model package's extras.
    from model_bundle.imaging import auto_rois, load_series
    from onfh_dlr.errors import FemoralHeadNotFoundError

    run.hips += 2
    try:
        rois = auto_rois(load_series(folder))
    except FemoralHeadNotFoundError as exc:
        run.failures.append(f"{folder.parent.name}: {exc}")
        return
    for side, roi in rois.items():
        mask = sitk.GetArrayFromImage(roi.mask).astype(bool)
        truth = study_segments[side]
        run.found += 1
        run.dice.append(float(2 * (mask & truth).sum() / max(mask.sum() + truth.sum(), 1)))


def bench_site(name: str | None, cases: int, seed: int, autoseg: bool, root: Path) -> SiteRun:
    """Generate ``cases`` cases of site ``name`` and time them."""
    run = SiteRun(name or "default")
    profile = None if name is None else site_profile(name)
    for i, onfh in enumerate(assign_hips(cases, 70 / 150, seed)):
        t0 = time.perf_counter()
        study = generate_study(seed, i, onfh, profile)
        t1 = time.perf_counter()
        folder = root / run.name / f"c{i}" / "series"
        datasets = write_series(study, folder)
        write_segmentation(study, datasets, folder.parent / "seg.dcm")
        t2 = time.perf_counter()
        run.render.append(t1 - t0)
        run.write.append(t2 - t1)
        if autoseg:
            heads = {Side(s.side): s.mask for s in study.segments if s.kind == "femoral_head"}
            _autoseg(run, folder, heads)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument(
        "--sites", default="", help="comma-separated site profiles, or 'all' (default: none)"
    )
    parser.add_argument("--autoseg", action="store_true", help="also run the auto-segmenter")
    args = parser.parse_args()
    names: list[str | None] = [None]
    if args.sites:
        names += list(SITES) if args.sites == "all" else args.sites.split(",")
    print(f"cases per site: {args.cases}, seed {args.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            run = bench_site(name, args.cases, args.seed, args.autoseg, Path(tmp))
            total = [r + w for r, w in zip(run.render, run.write, strict=True)]
            print(f"[{run.name}]")
            for label, values in (
                ("render", run.render),
                ("write DICOM+SEG", run.write),
                ("total", total),
            ):
                print(
                    f"{label:>16}: median {statistics.median(values):.3f} s, "
                    f"max {max(values):.3f} s, mean {statistics.mean(values):.3f} s"
                )
            if args.autoseg:
                dice = f"median Dice {statistics.median(run.dice):.3f}" if run.dice else ""
                print(f"{'autoseg':>16}: {run.found}/{run.hips} hips found {dice}")
                for failure in run.failures:
                    print(f"{'':>18}{failure}")


if __name__ == "__main__":
    main()
