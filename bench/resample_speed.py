"""The hip region at 1 mm: SimpleITK's B-spline resample vs ``resample_isotropic``.

Run: ``.venv/bin/python bench/resample_speed.py [--sites legacy ge-3t ...] [--repeats 5]``.
For one phantom study per site profile, crops both hip regions (ROI box + 40 mm, as
``model_bundle.features.hip.preprocessed`` does, from the phantom's reference head masks)
and times, back to back in each repeat, SimpleITK's ``ResampleImageFilter``
(``sitkBSpline``, float32: the path ``resample_isotropic`` took before) with its default
threads and with one, then ``resample_isotropic`` (separable). Prints per hip the medians,
the speed-ups, the largest difference (absolute and relative to the region's intensity
range) and how many float32 voxels differ at all.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model_bundle.features.hip import hip_region
from model_bundle.imaging import load_series, resample_isotropic
from phantom.dicom_writer import write_series
from phantom.generator import generate_study

SITES = ("legacy", "siemens-1.5t", "ge-3t", "philips-3t", "canon-stir-1.5t")


def _simpleitk(image: sitk.Image, like: sitk.Image) -> sitk.Image:
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(like)
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    out: sitk.Image = resampler.Execute(image)
    return out


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _medians(region: sitk.Image, ours: sitk.Image, threads: int, repeats: int) -> dict[str, float]:
    """Median seconds of each way, run back to back in every repeat."""
    times: dict[str, list[float]] = {f"sitk {threads} thr": [], "sitk 1 thr": [], "ours": []}
    for _ in range(repeats):
        times[f"sitk {threads} thr"].append(_seconds(lambda: _simpleitk(region, ours)))
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        times["sitk 1 thr"].append(_seconds(lambda: _simpleitk(region, ours)))
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        times["ours"].append(_seconds(lambda: resample_isotropic(region, 1.0)))
    return {name: statistics.median(t) for name, t in times.items()}


def _regions(site: str, out: Path) -> list[sitk.Image]:
    study = generate_study(3, 1, (True, False), site=site)
    write_series(study, out)
    series = load_series(out).image
    regions = []
    for segment in study.segments[:2]:  # the two femoral heads
        mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
        mask.CopyInformation(series)
        regions.append(hip_region(series, mask)[0])
    return regions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", nargs="+", default=list(SITES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    speedups: list[float] = []
    for site in args.sites:
        with tempfile.TemporaryDirectory() as tmp:
            regions = _regions(site, Path(tmp))
        for region in regions:
            ours = resample_isotropic(region, 1.0)
            reference = _simpleitk(region, ours)
            a = sitk.GetArrayViewFromImage(reference).astype(np.float64)
            b = sitk.GetArrayViewFromImage(ours)
            values = sitk.GetArrayViewFromImage(region)
            spread = float(values.max() - values.min())
            diff = float(np.abs(a - b).max())
            median = _medians(region, ours, threads, args.repeats)
            speedups.append(median[f"sitk {threads} thr"] / median["ours"])
            print(
                f"{site:16s} {region.GetSize()} -> {ours.GetSize()}: "
                + ", ".join(f"{name} {1000 * s:.0f} ms" for name, s in median.items())
                + f"; {speedups[-1]:.1f}x; max |diff| {diff:.3g} "
                f"({diff / spread:.1e} of range), {int(np.count_nonzero(a != b))} of "
                f"{a.size} voxels differ",
                flush=True,
            )
    print(f"median speed-up over SimpleITK ({threads} threads): {statistics.median(speedups):.1f}x")


if __name__ == "__main__":
    main()
