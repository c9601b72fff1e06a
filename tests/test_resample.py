"""B-spline ``resample_isotropic`` gives SimpleITK's ``sitkBSpline`` values, separably.

The reference in most tests is SimpleITK's ``ResampleImageFilter`` (identity transform,
``sitkBSpline``, float32 output) onto the grid the result declares; the result's grid is
checked separately against the centred isotropic grid ``resample_isotropic`` promises.
Small images are also checked against SciPy's mirror-boundary cubic spline
(``ndimage.map_coordinates``), the reference where ITK has none: on a 2-voxel axis ITK
reads a tap from outside its image buffer.
Images are phantom hip regions (several site profiles, native anisotropic and slightly
oblique series) and small images cut from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from model_bundle.features.hip import hip_region
from model_bundle.imaging import load_series, resample_isotropic
from model_bundle.imaging.bspline import axis_maps, resample_bspline_separable
from phantom.dicom_writer import write_series
from phantom.generator import generate_study

# The brief's bound: max |difference| <= 1e-4 x the image's intensity range. Measured:
# 0 to 1 float32 ulp, in a handful of voxels per hip region.
REL_TOL = 1e-4


def _reference(image: sitk.Image, like: sitk.Image, default_value: float = 0.0) -> sitk.Image:
    """SimpleITK's B-spline resample of ``image`` onto ``like``'s grid."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(like)
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampler.SetDefaultPixelValue(default_value)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    out: sitk.Image = resampler.Execute(image)
    return out


def _mirror_spline_reference(
    image: sitk.Image, like: sitk.Image, default_value: float = 0.0
) -> sitk.Image:
    """SciPy's cubic spline (whole-sample mirror) of ``image`` at ``like``'s voxel centres.

    Every output voxel's continuous input index comes from the two images' full affine
    maps (no separability assumed); outside ITK's buffer rule (``-0.5 <= x < n - 0.5`` on
    each axis) the value is ``default_value``.
    """
    values = sitk.GetArrayFromImage(image).astype(np.float64)  # (z, y, x)
    dim = image.GetDimension()
    grid = np.indices(like.GetSize()[::-1], dtype=np.float64).reshape(dim, -1)[::-1]  # x, y, z
    to_point = np.reshape(like.GetDirection(), (dim, dim)) @ np.diag(like.GetSpacing())
    points = to_point @ grid + np.reshape(like.GetOrigin(), (dim, 1))
    from_point = np.linalg.inv(
        np.reshape(image.GetDirection(), (dim, dim)) @ np.diag(image.GetSpacing())
    )
    index = from_point @ (points - np.reshape(image.GetOrigin(), (dim, 1)))  # x, y, z
    coefficients = ndimage.spline_filter(values, order=3, mode="mirror")
    out = ndimage.map_coordinates(
        coefficients, index[::-1], order=3, mode="mirror", prefilter=False
    )
    size = np.reshape(image.GetSize(), (dim, 1))
    outside = ((index < -0.5) | (index >= size - 0.5)).any(axis=0)
    out[outside] = default_value
    reference = sitk.GetImageFromArray(out.reshape(like.GetSize()[::-1]).astype(np.float32))
    reference.CopyInformation(like)
    return reference


def _max_relative_difference(image: sitk.Image, a: sitk.Image, b: sitk.Image) -> float:
    values = sitk.GetArrayViewFromImage(image)
    spread = float(values.max() - values.min()) or 1.0
    diff = np.abs(sitk.GetArrayViewFromImage(a).astype(np.float64) - sitk.GetArrayViewFromImage(b))
    return float(diff.max()) / spread


def _centred_grid_ok(image: sitk.Image, resampled: sitk.Image, spacing: float) -> None:
    dim = image.GetDimension()
    size = np.array(image.GetSize(), dtype=np.float64)
    expected_size = np.maximum(1, np.round(size * np.array(image.GetSpacing()) / spacing))
    assert resampled.GetSize() == tuple(int(n) for n in expected_size)
    assert resampled.GetSpacing() == (spacing,) * dim
    assert resampled.GetDirection() == image.GetDirection()
    centre_in = image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    centre_out = resampled.TransformContinuousIndexToPhysicalPoint(
        ((expected_size - 1) / 2).tolist()
    )
    np.testing.assert_allclose(centre_out, centre_in, rtol=0, atol=1e-9)
    assert resampled.GetPixelID() == sitk.sitkFloat32


@pytest.fixture(scope="module", params=["legacy", "ge-3t", "canon-stir-1.5t"])
def hip_regions(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[sitk.Image]:
    """Both hip regions (ROI box + 40 mm) of one phantom study of a site profile."""
    site = str(request.param)
    study = generate_study(5, 0, (True, False), site=site)
    out = tmp_path_factory.mktemp(f"resample-{site}")
    write_series(study, out)
    series = load_series(Path(out)).image
    regions = []
    for segment in study.segments[:2]:  # the two femoral heads
        mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
        mask.CopyInformation(series)
        regions.append(hip_region(series, mask)[0])
    return regions


def test_bspline_hip_region_equals_simpleitk_on_the_same_grid(
    hip_regions: list[sitk.Image],
) -> None:
    for region in hip_regions:
        resampled = resample_isotropic(region, 1.0, interpolator="bspline")

        _centred_grid_ok(region, resampled, 1.0)
        reference = _reference(region, resampled)
        assert _max_relative_difference(region, resampled, reference) <= REL_TOL
        # Bit-identical but for rare last-bit roundings: what keeps features unchanged.
        differ = np.count_nonzero(
            sitk.GetArrayViewFromImage(resampled) != sitk.GetArrayViewFromImage(reference)
        )
        assert differ <= 1e-4 * np.prod(resampled.GetSize())


@pytest.mark.parametrize("angle", [0.0, 0.3])
@pytest.mark.parametrize("spacing", [1.0, 0.7, 2.3])
def test_bspline_keeps_oblique_and_anisotropic_grids_exact(
    hip_regions: list[sitk.Image], angle: float, spacing: float
) -> None:
    region = sitk.Image(hip_regions[0])
    # Rotate the grid about the slice axis (a more oblique series), keep its voxels.
    direction = np.array(region.GetDirection()).reshape(3, 3)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    region.SetDirection((rotation @ direction).ravel().tolist())

    resampled = resample_isotropic(region, spacing)

    _centred_grid_ok(region, resampled, spacing)
    assert _max_relative_difference(region, resampled, _reference(region, resampled)) <= REL_TOL


@pytest.mark.parametrize(
    "size",
    [(1, 7, 6), (2, 7, 6), (3, 7, 6), (4, 5, 6), (7, 1, 3), (5, 4, 2), (19, 18, 17), (20, 21, 4)],
)
def test_bspline_small_and_odd_even_sizes_equal_scipys_spline_and_simpleitk_where_defined(
    hip_regions: list[sitk.Image], size: tuple[int, int, int]
) -> None:
    region = hip_regions[1]
    start = [(n - m) // 2 for n, m in zip(region.GetSize(), size, strict=True)]
    small = sitk.RegionOfInterest(region, list(size), start)

    resampled = resample_isotropic(small, 1.0)

    _centred_grid_ok(small, resampled, 1.0)
    scipy_reference = _mirror_spline_reference(small, resampled)
    assert _max_relative_difference(small, resampled, scipy_reference) <= REL_TOL
    if 2 not in size:  # on a 2-voxel axis ITK's last tap is read from outside its buffer
        assert _max_relative_difference(small, resampled, _reference(small, resampled)) <= REL_TOL


def test_bspline_on_a_two_voxel_axis_reads_nothing_outside_the_image() -> None:
    # Values far above the image's, laid out around a 2-slice image: a tap read from
    # outside the image would bring one in (ITK's single reflection reads index -1).
    rng = np.random.default_rng(7)
    values = rng.uniform(100.0, 200.0, size=(2, 6, 5)).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 0.9, 6.0))

    resampled = resample_isotropic(image, 1.0)

    out = sitk.GetArrayViewFromImage(resampled)
    assert resampled.GetSize()[2] == 12  # slice centres up to 1.42 voxels: base index 1
    assert float(np.abs(out).max()) < 250.0
    assert (
        _max_relative_difference(image, resampled, _mirror_spline_reference(image, resampled))
        <= REL_TOL
    )


def test_bspline_outside_voxels_get_the_default_value_where_simpleitk_puts_it(
    hip_regions: list[sitk.Image],
) -> None:
    region = sitk.RegionOfInterest(hip_regions[0], [30, 25, 9], [40, 40, 3])
    # A grid overshooting the region by a few mm on every side, one axis shifted so that
    # output voxel centres fall just inside and just outside the half-voxel border.
    spacing = [1.0, 1.0, 1.0]
    size = [40, 37, 56]
    origin = region.TransformContinuousIndexToPhysicalPoint([-4.3, -5.0, -0.9])
    maps = axis_maps(region, size, spacing, origin, region.GetDirection())
    assert maps is not None

    resampled = resample_bspline_separable(
        region, maps, spacing, origin, region.GetDirection(), default_value=-7.0
    )

    assert resampled is not None
    reference = _reference(region, resampled, default_value=-7.0)
    ours = sitk.GetArrayViewFromImage(resampled)
    theirs = sitk.GetArrayViewFromImage(reference)
    np.testing.assert_array_equal(ours == -7.0, theirs == -7.0)
    assert 0 < np.count_nonzero(theirs == -7.0) < theirs.size
    assert _max_relative_difference(region, resampled, reference) <= REL_TOL


def test_axis_maps_refuses_a_grid_whose_axes_mix(hip_regions: list[sitk.Image]) -> None:
    region = hip_regions[0]
    direction = np.array(region.GetDirection()).reshape(3, 3)
    c, s = np.cos(0.2), np.sin(0.2)
    turned = direction @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    maps = axis_maps(region, [10, 10, 10], [1.0] * 3, region.GetOrigin(), turned.ravel())

    assert maps is None


def test_bspline_float64_output_equals_simpleitk_to_double_rounding(
    hip_regions: list[sitk.Image],
) -> None:
    region = sitk.Cast(hip_regions[0], sitk.sitkFloat64)
    like = resample_isotropic(region, 1.0)
    grid = (like.GetSize(), like.GetSpacing(), like.GetOrigin(), like.GetDirection())
    maps = axis_maps(region, *grid)
    assert maps is not None

    resampled = resample_bspline_separable(
        region,
        maps,
        like.GetSpacing(),
        like.GetOrigin(),
        like.GetDirection(),
        default_value=0.0,
        pixel_type=sitk.sitkFloat64,
    )

    assert resampled is not None and resampled.GetPixelID() == sitk.sitkFloat64
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(like)
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampler.SetOutputPixelType(sitk.sitkFloat64)
    reference = resampler.Execute(region)
    # Only the order of the 64 products differs from ITK's sum.
    assert _max_relative_difference(region, resampled, reference) <= 1e-12


def test_bspline_leaves_integer_outputs_to_simpleitk(hip_regions: list[sitk.Image]) -> None:
    region = hip_regions[0]
    maps = axis_maps(region, [5, 5, 5], [1.0] * 3, region.GetOrigin(), region.GetDirection())
    assert maps is not None

    resampled = resample_bspline_separable(
        region,
        maps,
        [1.0] * 3,
        region.GetOrigin(),
        region.GetDirection(),
        default_value=0.0,
        pixel_type=sitk.sitkInt16,
    )

    assert resampled is None
