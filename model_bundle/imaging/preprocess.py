"""Preprocessing shared by training and serving: isotropic resampling and z-scoring.

The source paper resamples every series to 1 x 1 x 1 mm and z-score normalises it before
any feature is computed; both steps live here so training and serving run the same code.
B-spline resampling runs axis by axis (:mod:`model_bundle.imaging.bspline`, SimpleITK's
values at a fraction of its cost); linear, nearest and the few images that module leaves
alone go through SimpleITK's ``ResampleImageFilter``.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
import SimpleITK as sitk

from model_bundle.imaging.bspline import axis_maps, resample_bspline_separable
from onfh_dlr.errors import ConstantImageError, SegmentationError

__all__ = [
    "Interpolator",
    "resample_isotropic",
    "resample_labels",
    "zscore",
]

Interpolator = Literal["bspline", "linear", "nearest"]

_INTERPOLATORS: Final[dict[str, int]] = {
    "bspline": sitk.sitkBSpline,
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
}


def resample_isotropic(
    image: sitk.Image,
    spacing: float = 1.0,
    *,
    interpolator: Interpolator = "bspline",
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample ``image`` onto an isotropic grid with the same extent, centre and direction.

    The new grid has ``round(size * old_spacing / spacing)`` voxels along each axis and is
    centred on the old grid's centre, so the physical box covered by the voxels changes
    by at most half a new voxel per side and the centre not at all.

    Parameters
    ----------
    image
        The image to resample (any dimension).
    spacing
        The new voxel size in mm, the same along every axis.
    interpolator
        ``"bspline"`` (cubic B-spline, for intensities), ``"linear"``, or ``"nearest"``
        (for label maps; keeps the input pixel type).
    default_value
        Value for output voxels whose centre falls outside the input image.

    Returns
    -------
    SimpleITK.Image
        Float32 for ``"bspline"`` and ``"linear"``, the input pixel type for ``"nearest"``.

    Notes
    -----
    ``"bspline"`` equals SimpleITK's ``sitkBSpline`` resample to double rounding (the
    float32 output differs in at most a last bit, in about one voxel per million), computed
    separably: the grid keeps the image's direction, so each output axis reads one input
    axis. Images with vector pixels take SimpleITK's filter. On an axis of 2 voxels ITK
    reads outside its image buffer; the separable path folds the taps back in instead.
    """
    if not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be a positive number of mm, not {spacing!r}")
    if interpolator not in _INTERPOLATORS:
        raise ValueError(
            f"interpolator must be one of {sorted(_INTERPOLATORS)}, not {interpolator!r}"
        )
    dim = image.GetDimension()
    old_size = np.array(image.GetSize(), dtype=np.float64)
    old_spacing = np.array(image.GetSpacing(), dtype=np.float64)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dim, dim)

    new_size = np.maximum(1, np.round(old_size * old_spacing / spacing)).astype(int)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint((old_size - 1) / 2))
    new_origin = centre - direction @ ((new_size - 1) / 2 * spacing)

    if interpolator == "bspline":
        out_spacing = [float(spacing)] * dim
        out_origin = [float(v) for v in new_origin]
        maps = axis_maps(image, new_size.tolist(), out_spacing, out_origin, image.GetDirection())
        if maps is not None:
            fast = resample_bspline_separable(
                image, maps, out_spacing, out_origin, image.GetDirection(), default_value
            )
            if fast is not None:
                return fast

    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in new_size])
    resampler.SetOutputSpacing([float(spacing)] * dim)
    resampler.SetOutputOrigin([float(v) for v in new_origin])
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetInterpolator(_INTERPOLATORS[interpolator])
    resampler.SetDefaultPixelValue(default_value)
    resampler.SetOutputPixelType(
        image.GetPixelID() if interpolator == "nearest" else sitk.sitkFloat32
    )
    resampled: sitk.Image = resampler.Execute(image)
    return resampled


def resample_labels(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Resample a label map onto ``reference``'s grid by nearest neighbour.

    Nearest neighbour keeps label values exact (a binary mask stays binary); the pixel
    type of ``mask`` is kept and voxels outside it are 0 (background).

    Parameters
    ----------
    mask
        The label map, in the same patient coordinate system as ``reference``.
    reference
        The image whose grid (size, spacing, origin, direction) the output takes.

    Returns
    -------
    SimpleITK.Image
        The label map on ``reference``'s grid.
    """
    if mask.GetDimension() != reference.GetDimension():
        raise ValueError(
            f"mask is {mask.GetDimension()}-D but reference is {reference.GetDimension()}-D"
        )
    resampled: sitk.Image = sitk.Resample(
        mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID()
    )
    return resampled


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    # Tolerances as ITK's own physical-space check: relative to the voxel size.
    tolerance = 1e-6 * max(a.GetSpacing())
    return (
        np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tolerance)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-6)
    )


def zscore(image: sitk.Image, mask: sitk.Image | None = None) -> sitk.Image:
    """Z-score normalise ``image``: subtract the mean, divide by the standard deviation.

    Parameters
    ----------
    image
        The image to normalise.
    mask
        If given, the mean and (population, ddof=0) standard deviation are taken over
        its non-zero voxels only; the whole image is still normalised with them. It
        must share ``image``'s grid (use :func:`resample_labels` first).

    Returns
    -------
    SimpleITK.Image
        Float32, with ``image``'s geometry.

    Raises
    ------
    onfh_dlr.errors.ConstantImageError
        The intensities (inside the mask) have zero standard deviation.
    onfh_dlr.errors.SegmentationError
        The mask is empty.
    """
    values = sitk.GetArrayViewFromImage(image).astype(np.float64)
    if mask is None:
        selected = values.ravel()
        region = "the image"
    else:
        if not _same_grid(image, mask):
            raise ValueError("mask and image must share one grid; resample the mask first")
        inside = sitk.GetArrayViewFromImage(mask) != 0
        if not inside.any():
            raise SegmentationError("z-score: the mask has no voxels")
        selected = values[inside]
        region = f"the mask ({int(inside.sum())} voxels)"
    mean = float(selected.mean())
    std = float(selected.std())
    # Anything below float32 resolution at this intensity is rounding noise, not signal.
    if not math.isfinite(std) or std <= np.finfo(np.float32).eps * max(1.0, abs(mean)):
        raise ConstantImageError(
            f"z-score: intensities in {region} are constant (mean {mean:g}, std {std:g})"
        )
    out = sitk.GetImageFromArray(((values - mean) / std).astype(np.float32))
    out.CopyInformation(image)
    return out
