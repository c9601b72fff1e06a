"""Auto-segmentation of the femoral heads against phantom truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from model_bundle import LoadedSeries, auto_rois, find_femoral_heads, head_mask, load_series
from model_bundle.imaging import Side
from model_bundle.imaging.autoseg import _DIRECTIONS, _resolved_rays, _Work
from onfh_dlr.errors import FemoralHeadNotFoundError
from phantom.case import PhantomStudy
from phantom.dicom_writer import write_series
from phantom.generator import generate_study

# Seed 31: case 0 is bilateral ONFH, case 1 healthy; chosen only for variety of signs.
CASES = [(31, 0, (True, True)), (31, 1, (False, False)), (31, 2, (True, False))]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[PhantomStudy, LoadedSeries]]:
    out = []
    for seed, index, onfh in CASES:
        study = generate_study(seed, index, onfh)
        folder = tmp_path_factory.mktemp(f"case{index}")
        write_series(study, folder)
        out.append((study, load_series(folder)))
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_auto_rois_match_the_truth_on_both_sides(
    studies: list[tuple[PhantomStudy, LoadedSeries]],
) -> None:
    for study, series in studies:
        rois = auto_rois(series)
        assert set(rois) == {"L", "R"}
        for seg in study.segments:
            if seg.kind != "femoral_head":
                continue
            roi = rois[Side(seg.side)]
            assert roi.source == "auto" and roi.side == seg.side
            mask = sitk.GetArrayFromImage(roi.mask).astype(bool)
            assert mask.shape == seg.mask.shape
            assert _dice(mask, seg.mask) >= 0.90, (study.patient.patient_id, seg.side)


def test_fitted_centres_are_within_2_mm_and_on_the_right_side(
    studies: list[tuple[PhantomStudy, LoadedSeries]],
) -> None:
    for study, series in studies:
        fits = find_femoral_heads(series.image).fits
        for hip in study.hips:
            fit = fits[Side(hip.side)]
            assert np.linalg.norm(fit.centre - np.array(hip.head_centre)) <= 2.0
            assert abs(fit.radius - hip.head_radius) <= 2.0
        # LPS: patient left is +x.
        assert fits[Side.LEFT].centre[0] > fits[Side.RIGHT].centre[0]


def test_heads_are_found_whatever_the_array_axis_order(
    studies: list[tuple[PhantomStudy, LoadedSeries]],
) -> None:
    _, series = studies[1]
    original = find_femoral_heads(series.image).fits
    # Same anatomy in patient space, array stored in another axis order and direction.
    reoriented = sitk.DICOMOrient(series.image, "RAI")
    fits = find_femoral_heads(reoriented).fits
    for side in (Side.LEFT, Side.RIGHT):
        assert np.linalg.norm(fits[side].centre - original[side].centre) < 1.0


def test_a_missing_head_is_reported_instead_of_guessed_and_the_other_is_kept(
    studies: list[tuple[PhantomStudy, LoadedSeries]],
) -> None:
    study, series = studies[1]
    array = sitk.GetArrayFromImage(series.image)
    right = next(h for h in study.hips if h.side == "R")
    # Blank everything within 45 mm of the right head centre.
    index = np.array(series.image.TransformPhysicalPointToContinuousIndex(right.head_centre))
    k, j, i = np.meshgrid(*(np.arange(n) for n in array.shape), indexing="ij")
    spacing = np.array(series.image.GetSpacing())
    dist = np.sqrt(
        ((i - index[0]) * spacing[0]) ** 2
        + ((j - index[1]) * spacing[1]) ** 2
        + ((k - index[2]) * spacing[2]) ** 2
    )
    blanked = np.where(dist < 45, np.float32(array.min()), array).astype(np.float32)
    image = sitk.GetImageFromArray(blanked)
    image.CopyInformation(series.image)
    search = find_femoral_heads(image)
    assert set(search.fits) == {Side.LEFT}
    assert "right femoral head" in str(search.failures[Side.RIGHT])
    with pytest.raises(FemoralHeadNotFoundError, match="right femoral head"):
        auto_rois(replace(series, image=image))  # the all-or-nothing form still refuses


def test_an_image_without_hips_finds_neither_head(
    studies: list[tuple[PhantomStudy, LoadedSeries]],
) -> None:
    _, series = studies[0]
    rng = np.random.default_rng(0)
    noise = rng.rayleigh(100.0, size=sitk.GetArrayFromImage(series.image).shape).astype(np.float32)
    image = sitk.GetImageFromArray(noise)
    image.CopyInformation(series.image)
    search = find_femoral_heads(image)
    assert search.fits == {}
    assert set(search.failures) == {Side.LEFT, Side.RIGHT}
    empty = sitk.Image(series.image.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(series.image)
    with pytest.raises(FemoralHeadNotFoundError, match="empty"):
        find_femoral_heads(empty)


def test_head_mask_is_the_sphere_cut_at_the_neck(
    studies: list[tuple[PhantomStudy, LoadedSeries]],
) -> None:
    _, series = studies[1]
    fit = find_femoral_heads(series.image).fits[Side.LEFT]
    mask = head_mask(fit, series.image, slice_thickness=None)
    voxel = float(np.prod(series.image.GetSpacing()))
    volume = float(sitk.GetArrayFromImage(mask).sum()) * voxel
    sphere = 4 / 3 * np.pi * fit.radius**3
    # The cap beyond the head-neck plane is a few per cent of the sphere.
    assert 0.9 * sphere < volume < 0.99 * sphere
    # Nothing lies beyond the plane on the neck side.
    arr = sitk.GetArrayFromImage(mask)
    k, j, i = np.nonzero(arr)
    points = np.array(
        [
            series.image.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))
            for c, b, a in zip(k, j, i, strict=True)
        ]
    )
    along = (points - fit.centre) @ fit.neck_direction
    assert along.max() <= fit.radius * np.sqrt(1 - 0.62**2) + 1.0


def test_the_rim_is_read_only_along_rays_the_slices_resolve() -> None:
    # A coronal series: columns left-right, rows down, slices antero-posterior (LPS y),
    # 1.2 mm pixels and 6 mm between slices.
    axes = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    work = _Work(
        np.zeros((2, 2, 2), dtype=np.float32),
        np.zeros(3),
        np.eye(3),
        1.5,
        0.0,
        source_direction=axes,
        source_spacing=np.array([1.2, 1.2, 6.0]),
    )
    across = np.abs(_DIRECTIONS[:, 1])
    keep = _resolved_rays(work, _DIRECTIONS)
    assert keep[across < 0.3].all()
    assert not keep[across > 0.6].any()
    # The same voxels with the array's axes in another order: the same rays.
    order = [2, 0, 1]
    reordered = replace(
        work, source_direction=axes[:, order], source_spacing=work.source_spacing[order]
    )
    assert np.array_equal(_resolved_rays(reordered, _DIRECTIONS), keep)
    # Isotropic 1 mm voxels resolve the ring along every ray.
    iso = replace(work, source_spacing=np.ones(3))
    assert _resolved_rays(iso, _DIRECTIONS).all()
    # Very thick slices still leave the most in-plane rays to read.
    thick = _resolved_rays(replace(work, source_spacing=np.array([1.2, 1.2, 12.0])), _DIRECTIONS)
    assert thick.mean() >= 0.29
    assert thick[across < 0.2].all()
