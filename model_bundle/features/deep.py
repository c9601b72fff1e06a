"""Deep features: a ResNet18 on the largest coronal ROI slice of each hip.

The source paper fine-tunes a ResNet18 on, for each hip, the coronal slice with the
largest ROI area, cropped around the ROI, and uses the 512-d output of the global average
pool as deep features. This module holds everything between a preprocessed image (1 mm
isotropic, z-scored) with a hip's ROI and those 512 numbers, so that training and serving
compute them the same way:

* :func:`deep_crop` / :func:`deep_input` turn an image and an ROI into the network input;
* :func:`build_resnet18` builds the backbone (random, ImageNet or fine-tuned weights);
* :func:`deep_features` runs it; :func:`save_backbone` writes the weights for a bundle.

Conventions of the network input (a bundle trained with one must be served with it):

Orientation
    The crop is a coronal view in *radiological* orientation, the way a coronal series
    is normally displayed: superior at row 0 (up), the patient's right at column 0 (the
    viewer's left), the patient's left at the last column. Both hips use it; a left hip
    is *not* mirrored, so the femoral neck of a right hip points to the left of the crop
    and that of a left hip to the right. The axes are found from the image's direction
    matrix, never from the index order, so a permuted or flipped copy of the same image
    gives the same crop.
Intensity
    The crop holds z-scores. They are clipped to :data:`INTENSITY_WINDOW` (-2, 8), scaled
    linearly to [0, 1], copied into three channels and normalised per channel with the
    ImageNet mean and standard deviation (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`),
    because the backbone may start from ImageNet weights and expects that input
    distribution. The window comes from whole-image z-scores of T2-FS hip series: a
    large dark background puts air at about -1.1 to -1.5 and fluid (effusion, bladder)
    at 5 to 12, so -2 loses nothing dark and 8 saturates only the brightest fluid.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
import SimpleITK as sitk
import torch
import torchvision
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.functional import interpolate

from onfh_dlr.errors import SegmentationError, WeightsError

__all__ = [
    "DEEP_FEATURE_DIM",
    "DEEP_FEATURE_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTENSITY_WINDOW",
    "DeepCrop",
    "build_resnet18",
    "deep_crop",
    "deep_features",
    "deep_input",
    "save_backbone",
]

F32 = NDArray[np.float32]

#: Width of ResNet18's global-average-pool output.
DEEP_FEATURE_DIM: Final = 512
#: Names of the deep features, in the column order of :func:`deep_features`.
DEEP_FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f"deep_{i:03d}" for i in range(DEEP_FEATURE_DIM))
#: Z-score range mapped to [0, 1] before ImageNet normalisation (see the module docstring).
INTENSITY_WINDOW: Final[tuple[float, float]] = (-2.0, 8.0)
#: Per-channel (R, G, B) statistics the torchvision ImageNet weights were trained with.
IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)

#: Percentile of the chosen slice used as the "background" that pads a crop leaving the
#: image: a low percentile is the air/noise floor but, unlike the minimum, is not pulled
#: down by a few interpolation undershoots (B-spline resampling rings below zero).
_BACKGROUND_PERCENTILE: Final = 1.0
#: Metadata written into every backbone file and checked when one is read back.
_ARCHITECTURE: Final = "torchvision.models.resnet18"
_WEIGHT_SUFFIXES: Final = (".safetensors", ".pth", ".pt")
#: How many offending keys an error message lists before it says "and N more".
_LISTED_KEYS: Final = 5


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, eq=False)
class DeepCrop:
    """The network input of one hip, and where it came from in the image.

    Attributes
    ----------
    array
        Float32 ``(3, size, size)``: the network input (see the module docstring).
    crop
        Float32 ``(size, size)``: the same crop in z-scores before windowing, for
        display and quality control.
    coronal_axis, row_axis, column_axis
        SimpleITK index axes (0, 1, 2) most aligned with the patient's A-P, S-I and R-L
        axes: the slice was taken across ``coronal_axis``; crop rows run along
        ``row_axis`` and crop columns along ``column_axis``.
    slice_index
        Index of the chosen slice along ``coronal_axis`` (SimpleITK index order).
    roi_area
        ROI pixels in the chosen slice (the largest over all coronal slices).
    background
        The z-score used to pad the crop where it leaves the image.
    window
        ``(first_row, first_column, rows, columns)`` of the square crop (before
        resizing) in the slice oriented as the crop (superior and patient right first);
        it may start before 0 or end beyond the slice, which is where it was padded.
    row_flipped, column_flipped
        Whether crop rows (columns) run against increasing ``row_axis``
        (``column_axis``) indices.
    slice_shape
        ``(rows, columns)`` of the whole oriented slice.
    """

    array: F32
    crop: F32
    coronal_axis: int
    row_axis: int
    column_axis: int
    slice_index: int
    roi_area: int
    background: float
    window: tuple[int, int, int, int]
    row_flipped: bool
    column_flipped: bool
    slice_shape: tuple[int, int]

    @property
    def size(self) -> int:
        """Side of the (square) network input in pixels."""
        return int(self.crop.shape[0])

    def crop_to_index(self, row: float, column: float) -> tuple[float, float, float]:
        """Continuous image index (SimpleITK order) of a point of the crop.

        Parameters
        ----------
        row, column
            Position in the ``size x size`` crop; integers are pixel centres.

        Returns
        -------
        tuple of float
            ``(i, j, k)`` for :meth:`SimpleITK.Image.TransformContinuousIndexToPhysicalPoint`.
        """
        first_row, first_column, rows, columns = self.window
        # Resizing with align_corners=False maps pixel centres linearly with the pixel
        # edges (not the centres) of the two grids lined up.
        r = first_row + (row + 0.5) * rows / self.size - 0.5
        c = first_column + (column + 0.5) * columns / self.size - 0.5
        index = [0.0, 0.0, 0.0]
        index[self.coronal_axis] = float(self.slice_index)
        index[self.row_axis] = self.slice_shape[0] - 1 - r if self.row_flipped else r
        index[self.column_axis] = self.slice_shape[1] - 1 - c if self.column_flipped else c
        return (index[0], index[1], index[2])

    def index_to_crop(self, index: Sequence[float]) -> tuple[float, float]:
        """Position in the crop of an image index; the inverse of :meth:`crop_to_index`.

        Parameters
        ----------
        index
            ``(i, j, k)`` continuous image index in SimpleITK order; the component
            along ``coronal_axis`` is ignored (the point is projected onto the slice).

        Returns
        -------
        tuple of float
            ``(row, column)`` in the ``size x size`` crop; values outside
            ``[-0.5, size - 0.5]`` are outside the crop.
        """
        first_row, first_column, rows, columns = self.window
        r = float(index[self.row_axis])
        c = float(index[self.column_axis])
        if self.row_flipped:
            r = self.slice_shape[0] - 1 - r
        if self.column_flipped:
            c = self.slice_shape[1] - 1 - c
        return (
            (r - first_row + 0.5) * self.size / rows - 0.5,
            (c - first_column + 0.5) * self.size / columns - 0.5,
        )


def _check_same_grid(image: sitk.Image, mask: sitk.Image) -> None:
    if image.GetDimension() != 3 or mask.GetDimension() != 3:
        raise ValueError(
            f"image and mask must be 3-D, not {image.GetDimension()}-D and {mask.GetDimension()}-D"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("image must be scalar (one component per pixel)")
    # Same tolerances as ITK's own physical-space check: relative to the voxel size.
    tolerance = 1e-6 * max(image.GetSpacing())
    same = (
        image.GetSize() == mask.GetSize()
        and np.allclose(image.GetOrigin(), mask.GetOrigin(), rtol=0, atol=tolerance)
        and np.allclose(image.GetSpacing(), mask.GetSpacing(), rtol=0, atol=tolerance)
        and np.allclose(image.GetDirection(), mask.GetDirection(), rtol=0, atol=1e-6)
    )
    if not same:
        raise ValueError("mask and image must share one grid; resample the mask first")


def _patient_axes(direction: NDArray[np.float64]) -> tuple[int, int, int]:
    """Image axes most aligned with the patient's x (R-L), y (A-P) and z (I-S) axes.

    ``direction[a, k]`` is component ``a`` (LPS) of image axis ``k``. Of the six ways to
    give each patient axis its own image axis, the one with the largest summed alignment
    wins; unlike a per-axis argmax this can never give two patient axes the same image
    axis, even for a strongly oblique volume.
    """
    best = max(
        itertools.permutations(range(3)),
        key=lambda perm: sum(abs(float(direction[a, perm[a]])) for a in range(3)),
    )
    return (best[0], best[1], best[2])


def _choose_slice(areas: NDArray[np.int64]) -> int:
    """Index of the largest area; ties go to the one nearest the area-weighted centroid.

    Indices run anterior to posterior, so a remaining tie (two slices equally far from
    the centroid) goes to the anterior one, the same for any storage order.
    """
    largest = areas.max()
    candidates = np.flatnonzero(areas == largest)
    centroid = float(np.average(np.arange(areas.size), weights=areas))
    distances = np.abs(candidates - centroid)
    # argmin returns the first minimum: the most anterior candidate.
    return int(candidates[int(np.argmin(distances))])


def _to_channels(crop: F32, window: tuple[float, float]) -> F32:
    low, high = window
    unit = (np.clip(crop, low, high) - low) / (high - low)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return ((unit[None, :, :] - mean) / std).astype(np.float32)


def deep_crop(
    image: sitk.Image,
    mask: sitk.Image,
    *,
    margin: float = 0.15,
    size: int = 224,
    window: tuple[float, float] = INTENSITY_WINDOW,
) -> DeepCrop:
    """Crop the coronal slice with the largest ROI area into the network input.

    Steps: find the image axis most aligned with the patient's A-P axis from the
    direction matrix; count ROI pixels in every slice across it and take the slice with
    the most (ties: nearest the ROI's centroid, then the anterior one); orient that slice
    radiologically, superior up; take the ROI's bounding box in it, enlarge its longer
    side by ``margin`` on each side, make it square (in mm, so anisotropic pixels are
    fine) around the box's centre, and pad with the background where it leaves the
    image; resize to ``size x size`` with antialiased bilinear interpolation; map the
    z-scores to three ImageNet-normalised channels.

    Parameters
    ----------
    image
        The preprocessed image (1 mm isotropic, z-scored), 3-D.
    mask
        The hip's ROI on exactly ``image``'s grid; every non-zero voxel is inside.
    margin
        Fraction of the bounding box's longer side added on each side (0.15: the crop
        is 1.3 times the ROI's extent).
    size
        Side of the square output in pixels.
    window
        Z-scores mapped to [0, 1] before the ImageNet normalisation.

    Returns
    -------
    DeepCrop
        The network input and the geometry needed to map it back onto the image.

    Raises
    ------
    ValueError
        Bad parameters, a 2-D image, a mask on another grid, or non-finite intensities.
    onfh_dlr.errors.SegmentationError
        The mask is empty.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, not {margin!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")
    if not (math.isfinite(window[0]) and math.isfinite(window[1]) and window[0] < window[1]):
        raise ValueError(f"window must be two finite numbers, low < high, not {window!r}")
    _check_same_grid(image, mask)

    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    column_axis, coronal_axis, row_axis = _patient_axes(direction)
    # Canonical order: coronal index anterior -> posterior (+y in LPS), rows superior ->
    # inferior (-z), columns patient right -> left (+x). NumPy's axis for SimpleITK
    # axis k is 2 - k.
    coronal_flip = direction[1, coronal_axis] < 0
    row_flip = direction[2, row_axis] > 0
    column_flip = direction[0, column_axis] < 0
    order = (2 - coronal_axis, 2 - row_axis, 2 - column_axis)
    flips = tuple(a for a, f in enumerate((coronal_flip, row_flip, column_flip)) if f)

    inside = np.flip(np.transpose(sitk.GetArrayViewFromImage(mask) != 0, order), flips)
    areas = inside.sum(axis=(1, 2), dtype=np.int64)
    if not areas.any():
        raise SegmentationError("deep features: the ROI mask has no voxels")
    k = _choose_slice(areas)
    n_coronal = inside.shape[0]
    pixels = np.flip(np.transpose(sitk.GetArrayViewFromImage(image), order), flips)[k]
    plane = np.ascontiguousarray(pixels, dtype=np.float32)
    if not np.isfinite(plane).all():
        raise ValueError("deep features: the chosen slice has non-finite intensities")
    roi = inside[k]

    rows_in, columns_in = np.nonzero(roi)
    r0, r1 = int(rows_in.min()), int(rows_in.max())
    c0, c1 = int(columns_in.min()), int(columns_in.max())
    spacing = image.GetSpacing()
    row_mm, column_mm = float(spacing[row_axis]), float(spacing[column_axis])
    side_mm = max((r1 - r0 + 1) * row_mm, (c1 - c0 + 1) * column_mm) * (1 + 2 * margin)
    # round() can only shrink the window below the box when margin == 0, where the
    # box's own extent is an integer already; max() keeps the box inside regardless.
    n_rows = max(round(side_mm / row_mm), r1 - r0 + 1)
    n_columns = max(round(side_mm / column_mm), c1 - c0 + 1)
    first_row = r0 - (n_rows - (r1 - r0 + 1)) // 2
    first_column = c0 - (n_columns - (c1 - c0 + 1)) // 2

    background = float(np.percentile(plane, _BACKGROUND_PERCENTILE))
    window_pixels = np.full((n_rows, n_columns), background, dtype=np.float32)
    src_r = slice(max(first_row, 0), min(first_row + n_rows, plane.shape[0]))
    src_c = slice(max(first_column, 0), min(first_column + n_columns, plane.shape[1]))
    window_pixels[
        src_r.start - first_row : src_r.stop - first_row,
        src_c.start - first_column : src_c.stop - first_column,
    ] = plane[src_r, src_c]

    # Antialiasing matters when a large ROI or a fine grid is shrunk; for the usual
    # ~65 mm crop at 1 mm it is an upsampling and antialias=True changes nothing.
    resized = interpolate(
        torch.from_numpy(window_pixels)[None, None],
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0, 0].numpy()
    crop = np.ascontiguousarray(resized, dtype=np.float32)

    return DeepCrop(
        array=_to_channels(crop, window),
        crop=crop,
        coronal_axis=coronal_axis,
        row_axis=row_axis,
        column_axis=column_axis,
        slice_index=n_coronal - 1 - k if coronal_flip else k,
        roi_area=int(areas[k]),
        background=background,
        window=(first_row, first_column, n_rows, n_columns),
        row_flipped=bool(row_flip),
        column_flipped=bool(column_flip),
        slice_shape=(int(plane.shape[0]), int(plane.shape[1])),
    )


def deep_input(
    image: sitk.Image,
    mask: sitk.Image,
    *,
    margin: float = 0.15,
    size: int = 224,
    window: tuple[float, float] = INTENSITY_WINDOW,
) -> F32:
    """The network input of one hip: ``deep_crop(...).array``.

    Parameters
    ----------
    image, mask, margin, size, window
        As for :func:`deep_crop`.

    Returns
    -------
    numpy.ndarray
        Float32, shape ``(3, size, size)``.
    """
    return deep_crop(image, mask, margin=margin, size=size, window=window).array


# --------------------------------------------------------------------------- network


@cache
def _backbone_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of a ResNet18 without its ``fc`` head."""
    # On the meta device nothing is allocated and no random number is drawn.
    with torch.device("meta"):
        reference = torchvision.models.resnet18(weights=None)
    return {
        key: tuple(value.shape)
        for key, value in reference.state_dict().items()
        if not key.startswith("fc.")
    }


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read network weights {path}: {exc}") from exc
    architecture = metadata.get("architecture")
    if architecture is not None and architecture != _ARCHITECTURE:
        raise WeightsError(
            f"network weights {path} are for {architecture!r}, not {_ARCHITECTURE!r}"
        )
    return tensors


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: unpickling an arbitrary checkpoint could run code.
        loaded: object = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load surfaces whatever its zip reader or unpickler hits (RuntimeError,
    # UnpicklingError, EOFError, KeyError, ...): every one means "not a readable file".
    except Exception as exc:
        raise WeightsError(f"cannot read network weights {path}: {exc}") from exc
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise WeightsError(
            f"network weights {path} are not a state dict (a mapping of names to tensors); "
            "expected e.g. torchvision's resnet18 ImageNet checkpoint"
        )
    return dict(loaded)


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(sorted(keys)[:_LISTED_KEYS])
    more = len(keys) - _LISTED_KEYS
    return f"{shown} and {more} more" if more > 0 else shown


def _backbone_state(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Check ``state`` against ResNet18 and drop its classification head, if any."""
    head = state.get("fc.weight")
    if head is not None and (head.ndim != 2 or head.shape[1] != DEEP_FEATURE_DIM):
        raise WeightsError(
            f"network weights {path}: the fc head takes {tuple(head.shape)} weights, "
            f"not (n, {DEEP_FEATURE_DIM}); is this a ResNet18?"
        )
    # Any head (ImageNet's 1000 classes, a 1- or 2-output fine-tuning head) is dropped:
    # the features are the pooled 512 values before it.
    backbone = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = _backbone_shapes()
    # BatchNorm fills in a missing num_batches_tracked (older checkpoints, including
    # torchvision's ImageNet weights, do not have it); it does not affect eval mode.
    missing = [
        key for key in expected if key not in backbone and not key.endswith(".num_batches_tracked")
    ]
    unexpected = [key for key in backbone if key not in expected]
    wrong = [
        f"{key} {tuple(backbone[key].shape)} (expected {expected[key]})"
        for key in expected
        if key in backbone and tuple(backbone[key].shape) != expected[key]
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listed(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {_listed(wrong)}")
    if problems:
        raise WeightsError(
            f"network weights {path} do not fit torchvision's ResNet18: " + "; ".join(problems)
        )
    bad = [
        key
        for key, value in backbone.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise WeightsError(f"network weights {path} hold non-finite values in {_listed(bad)}")
    return backbone


def build_resnet18(weights: Path | None = None, *, seed: int = 0) -> nn.Module:
    """Build torchvision's ResNet18 as a 512-d feature extractor, in eval mode.

    Parameters
    ----------
    weights
        ``None``: random initialisation (torchvision's) drawn from ``seed``, the same
        every time. A ``.safetensors`` file: a backbone state dict, as bundles ship it
        and :func:`save_backbone` writes it. A ``.pth``/``.pt`` file: a plain state
        dict as :func:`torch.save` writes it, e.g. torchvision's ImageNet checkpoint a
        user downloaded; read with ``weights_only=True`` so no code can run. In both
        files an ``fc`` head of any width (1000, 2, 1 outputs) or none is accepted and
        ignored.
    seed
        Seed of the random initialisation. The global torch random state is saved and
        restored around it, so building a model changes no one else's random numbers.

    Returns
    -------
    torch.nn.Module
        ResNet18 with ``fc`` replaced by :class:`torch.nn.Identity`: its output is the
        ``(N, 512)`` global-average-pool vector.

    Raises
    ------
    onfh_dlr.errors.WeightsError
        The weights file is missing, unreadable, of an unknown format, not a ResNet18
        state dict, or holds non-finite values.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # weights=None: never the download path; bundles bring their own weights.
        model: nn.Module = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    if weights is not None:
        path = Path(weights)
        suffix = path.suffix.lower()
        if suffix not in _WEIGHT_SUFFIXES:
            raise WeightsError(
                f"network weights {path}: unknown format {suffix!r}, expected one of "
                f"{', '.join(_WEIGHT_SUFFIXES)}"
            )
        if not path.is_file():
            raise WeightsError(f"network weights {path} do not exist or are not a file")
        state = _read_safetensors(path) if suffix == ".safetensors" else _read_torch(path)
        try:
            model.load_state_dict(_backbone_state(state, path), strict=True)
        except RuntimeError as exc:  # pragma: no cover - _backbone_state checks first
            raise WeightsError(f"network weights {path} do not fit ResNet18: {exc}") from exc
    model.eval()
    return model


def save_backbone(model: nn.Module, path: Path, *, dtype: str = "float32") -> None:
    """Write a ResNet18 backbone's weights (without any ``fc`` head) as safetensors.

    The file is written next to ``path`` and renamed onto it, so a reader never sees a
    half-written file. :func:`build_resnet18` reads it back to a model that gives
    bit-identical features.

    Parameters
    ----------
    model
        A ResNet18 (as :func:`build_resnet18` returns it, possibly fine-tuned); an
        ``fc`` head, if any, is not saved.
    path
        The ``.safetensors`` file to write.
    dtype
        ``"float32"``, or ``"float16"`` for half-size files (bundles have a size budget);
        floating-point tensors are stored in it and read back as float32.

    Raises
    ------
    ValueError
        ``path`` does not end in ``.safetensors``, ``model`` is not a ResNet18, or
        ``dtype`` is neither.
    OSError
        The file cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"backbone weights must be a .safetensors file, not {path}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"weights dtype must be float32 or float16, not {dtype!r}")
    half = dtype == "float16"
    state = {
        key: (
            value.detach().to("cpu").half()
            if half and value.is_floating_point()
            else value.detach().to("cpu")
        ).contiguous()
        for key, value in model.state_dict().items()
        if not key.startswith("fc.")
    }
    expected = _backbone_shapes()
    if {key: tuple(value.shape) for key, value in state.items()} != expected:
        raise ValueError("model is not a torchvision ResNet18 backbone")
    metadata = {"format": "pt", "architecture": _ARCHITECTURE}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary_path = Path(temporary)
    try:
        os.close(handle)  # safetensors opens the file by name; only the name is needed.
        save_file(state, temporary_path, metadata=metadata)
        temporary_path.replace(path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- features


@contextlib.contextmanager
def _torch_settings(num_threads: int | None) -> Iterator[None]:
    """Deterministic algorithms (and optionally a thread count) for one block only.

    Both are process-wide torch settings, so they are put back as they were on exit.
    On CPU the ResNet18 inference ops are deterministic anyway; the flag makes torch
    refuse (rather than silently run) a non-deterministic kernel should a model be
    moved to a GPU.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        if num_threads is not None:
            torch.set_num_threads(threads)


def _as_batch(inputs: NDArray[np.floating] | Sequence[NDArray[np.floating]]) -> F32:
    if isinstance(inputs, np.ndarray):
        batch = inputs[None] if inputs.ndim == 3 else inputs
    elif len(inputs) == 0:
        return np.empty((0, 3, 0, 0), dtype=np.float32)
    else:
        shapes = {np.shape(item) for item in inputs}
        if len(shapes) != 1:
            raise ValueError(f"inputs have different shapes: {sorted(shapes)}")
        batch = np.stack([np.asarray(item) for item in inputs])
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(
            f"inputs must be (3, H, W) arrays or an (N, 3, H, W) array, not {batch.shape}"
        )
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not np.isfinite(batch).all():
        raise ValueError("inputs hold non-finite values")
    return batch


def deep_features(
    model: nn.Module,
    inputs: NDArray[np.floating] | Sequence[NDArray[np.floating]],
    *,
    batch_size: int = 16,
    num_threads: int | None = None,
) -> F32:
    """Run the backbone on network inputs and return the 512-d pooled features.

    Runs under :func:`torch.inference_mode` with deterministic algorithms switched on
    for the call only. The model is put in eval mode for the call and back into the
    mode it was in afterwards (a model being fine-tuned stays in training mode).

    Parameters
    ----------
    model
        From :func:`build_resnet18` (``fc`` is an identity).
    inputs
        One ``(3, H, W)`` array (as :func:`deep_input` returns), a sequence of them,
        or an ``(N, 3, H, W)`` array.
    batch_size
        Inputs per forward pass; bounds memory (about 25 MB of activations per input).
    num_threads
        If given, torch's intra-op thread count for this call only (it is process-wide,
        and restored afterwards); ``None`` leaves torch's setting alone.

    Returns
    -------
    numpy.ndarray
        Float32 ``(N, 512)``; columns are :data:`DEEP_FEATURE_NAMES`.

    Raises
    ------
    ValueError
        Inputs of the wrong shape or with non-finite values, bad ``batch_size`` or
        ``num_threads``, or a model whose output is not ``(N, 512)``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ValueError(f"num_threads must be a positive integer or None, not {num_threads!r}")
    batch = _as_batch(inputs)
    if batch.shape[0] == 0:
        return np.empty((0, DEEP_FEATURE_DIM), dtype=np.float32)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    outputs: list[F32] = []
    with _torch_settings(num_threads), torch.inference_mode():
        model.eval()
        try:
            for start in range(0, batch.shape[0], batch_size):
                chunk = torch.from_numpy(batch[start : start + batch_size]).to(device)
                out = model(chunk)
                if out.ndim != 2 or out.shape[1] != DEEP_FEATURE_DIM:
                    raise ValueError(
                        f"model output has shape {tuple(out.shape)}, not (N, "
                        f"{DEEP_FEATURE_DIM}); build it with build_resnet18"
                    )
                outputs.append(out.to("cpu", torch.float32).numpy())
        finally:
            model.train(was_training)
    return np.concatenate(outputs, axis=0)
