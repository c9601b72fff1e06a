"""How long radiomics take for one study: all 1,197 features vs a bundle's few.

Run: ``.venv/bin/python bench/radiomics_speed.py [--seed S] [--index I] [--repeats N]``.
Writes one phantom study (right hip ONFH) to a temporary directory, then times, from
the series on disk, ``load_series`` followed by the features of both femoral heads:
the full 1,197 (training) and a selective run of a typical 15-feature bundle list
(serving). Prints the median of ``--repeats`` runs of each and the speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from model_bundle.features import FEATURE_NAMES, extract_radiomics
from model_bundle.imaging import load_series
from phantom.case import PhantomStudy
from phantom.dicom_writer import write_series
from phantom.generator import generate_study

# Like the paper's Rad model after selection: a handful of features spread over shape,
# the original image, five wavelet decompositions and all four LoG sigmas.
BUNDLE_FEATURES: tuple[str, ...] = (
    "original_shape_Sphericity",
    "original_shape_SurfaceVolumeRatio",
    "original_firstorder_90Percentile",
    "original_glszm_SmallAreaLowGrayLevelEmphasis",
    "original_gldm_DependenceNonUniformityNormalized",
    "wavelet-LLH_glcm_Imc1",
    "wavelet-LHL_firstorder_Skewness",
    "wavelet-HLL_glrlm_RunEntropy",
    "wavelet-HHH_glszm_ZoneEntropy",
    "wavelet-LLL_firstorder_Median",
    "wavelet-LLL_glcm_ClusterShade",
    "log-sigma-2-0-mm-3D_glcm_Correlation",
    "log-sigma-3-0-mm-3D_firstorder_Kurtosis",
    "log-sigma-4-0-mm-3D_gldm_LargeDependenceLowGrayLevelEmphasis",
    "log-sigma-5-0-mm-3D_ngtdm_Busyness",
)


def head_masks(study: PhantomStudy) -> dict[str, NDArray[np.bool_]]:
    """The whole-femoral-head masks of the study, by side ("R", "L")."""
    return {s.side: s.mask for s in study.segments if s.kind == "femoral_head"}


def score_study(
    series_dir: Path, masks: dict[str, NDArray[np.bool_]], features: Sequence[str] | None
) -> dict[str, dict[str, float]]:
    """Load the series and compute the features of every head, as a worker would."""
    image = load_series(series_dir).image
    results = {}
    for side, array in masks.items():
        mask = sitk.GetImageFromArray(array.astype(np.uint8))
        mask.CopyInformation(image)
        results[side] = extract_radiomics(image, mask, features=features)
    return results


def timed(
    series_dir: Path,
    masks: dict[str, NDArray[np.bool_]],
    features: Sequence[str] | None,
    repeats: int,
) -> tuple[float, dict[str, dict[str, float]]]:
    """Median wall time of ``repeats`` runs, and the last run's features."""
    seconds: list[float] = []
    results: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        results = score_study(series_dir, masks, features)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=5, help="phantom cohort seed")
    parser.add_argument("--index", type=int, default=0, help="phantom case index")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median)")
    args = parser.parse_args()
    assert set(BUNDLE_FEATURES) <= set(FEATURE_NAMES)

    study = generate_study(args.seed, args.index, (True, False))
    masks = head_masks(study)
    with tempfile.TemporaryDirectory() as tmp:
        series_dir = Path(tmp) / "series"
        write_series(study, series_dir)
        # One untimed run: first calls pay for imports and caches, a worker does not.
        score_study(series_dir, masks, BUNDLE_FEATURES)
        full_s, full = timed(series_dir, masks, None, args.repeats)
        selective_s, selective = timed(series_dir, masks, BUNDLE_FEATURES, args.repeats)

    for side in masks:
        assert all(selective[side][n] == full[side][n] for n in BUNDLE_FEATURES), side
    n_hips = len(masks)
    print(
        f"phantom study seed {args.seed} index {args.index}: {n_hips} hips, median of "
        f"{args.repeats} runs, load_series included"
    )
    print(
        f"full      ({len(FEATURE_NAMES)} features/hip): {full_s:6.2f} s "
        f"({full_s / n_hips:.2f} s/hip)"
    )
    print(
        f"selective ({len(BUNDLE_FEATURES)} features/hip):   {selective_s:6.2f} s "
        f"({selective_s / n_hips:.2f} s/hip)"
    )
    print(f"speed-up: {full_s / selective_s:.1f}x (selective values identical to full)")


if __name__ == "__main__":
    main()
