"""Deep features (model_bundle.features.deep): the network input, the ResNet18 and its weights."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk
import torch
import torchvision
from safetensors.torch import save_file

import onfh_dlr
from model_bundle.features import (
    DEEP_FEATURE_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTENSITY_WINDOW,
    DeepCrop,
    build_resnet18,
    deep_crop,
    deep_features,
    deep_input,
    save_backbone,
)
from model_bundle.imaging import load_series, resample_isotropic, resample_labels, zscore
from onfh_dlr.errors import PermanentError, SegmentationError, WeightsError
from phantom.case import PhantomStudy
from phantom.dicom_writer import write_series
from phantom.generator import generate_study

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# One phantom patient, drawn twice: both hips with early ONFH, and the same patient
# (same anatomy, scanner, acquisition and noise) with a healthy right hip.
COHORT_SEED = 11
INDEX = 0
SIZE = 224
# Forward passes run on one thread: with two OpenMP threads on two shared cores (tests
# running in parallel) a ResNet18 pass slows ~10x; deep_features restores the setting.
THREADS = 1


@dataclass(frozen=True)
class Case:
    """A phantom study preprocessed as the model does, with its masks on that grid."""

    study: PhantomStudy
    image: sitk.Image  # 1 mm isotropic, z-scored
    heads: dict[str, sitk.Image]  # side -> femoral head mask
    lesions: dict[str, sitk.Image]  # side -> necrotic lesion mask


def _prepare(onfh: tuple[bool, bool], out: Path) -> Case:
    study = generate_study(COHORT_SEED, INDEX, onfh)
    write_series(study, out)
    series = load_series(out).image
    # Only the region around both hips is resampled: B-spline resampling of the whole
    # field of view takes ~5-9 s per study on two cores, the region ~1 s.
    union = np.zeros(study.segments[0].mask.shape, dtype=bool)
    for segment in study.segments:
        union |= segment.mask
    _, rows, columns = np.nonzero(union)
    pad = 24
    region = series[
        max(int(columns.min()) - pad, 0) : int(columns.max()) + pad + 1,
        max(int(rows.min()) - pad, 0) : int(rows.max()) + pad + 1,
        :,
    ]
    image = zscore(resample_isotropic(region, 1.0))

    def on_grid(mask: npt.NDArray[np.bool_]) -> sitk.Image:
        native = sitk.GetImageFromArray(mask.astype(np.uint8))
        native.CopyInformation(series)
        return resample_labels(native, image)

    heads = {str(s.side): on_grid(s.mask) for s in study.segments if s.kind == "femoral_head"}
    lesions = {str(s.side): on_grid(s.mask) for s in study.segments if s.kind == "necrotic_lesion"}
    return Case(study, image, heads, lesions)


@pytest.fixture(scope="module")
def onfh_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    case = _prepare((True, True), tmp_path_factory.mktemp("onfh"))
    assert [h.label for h in case.study.hips] == [1, 1], "phantom changed: need two ONFH hips"
    return case


@pytest.fixture(scope="module")
def healthy_right_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    case = _prepare((False, True), tmp_path_factory.mktemp("healthy_right"))
    assert case.study.hips[0].label == 0
    return case


@pytest.fixture(scope="module")
def inputs(onfh_case: Case) -> list[F32]:
    """Network inputs of the right and the left hip."""
    return [deep_input(onfh_case.image, onfh_case.heads[side]) for side in "RL"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_resnet18(seed=0)


def _as_float(mask: sitk.Image) -> sitk.Image:
    return sitk.Cast(mask, sitk.sitkFloat32)


def _permuted(image: sitk.Image) -> sitk.Image:
    """The same image in physical space, stored in another axis order and direction."""
    return sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])


def _coordinate_image(reference: sitk.Image, axis: int, scale: float = 50.0) -> sitk.Image:
    """An image on ``reference``'s grid whose value is patient coordinate ``axis`` / scale."""
    size = reference.GetSize()
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size], indexing="ij")
    index = np.stack(grids, axis=-1) * np.asarray(reference.GetSpacing())
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    physical = np.asarray(reference.GetOrigin()) + index @ direction.T  # (i, j, k, 3)
    values = (physical[..., axis] / scale).transpose(2, 1, 0).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(reference)
    return image


def _brute_force_areas(mask: sitk.Image) -> tuple[int, npt.NDArray[np.int64]]:
    """ROI pixels per slice across the image axis closest to A-P (plain argmax)."""
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[1, :])))
    array = sitk.GetArrayFromImage(mask) != 0  # (k, j, i)
    other = tuple(a for a in range(3) if a != 2 - axis)
    return axis, array.sum(axis=other).astype(np.int64)


def _inside_image(crop: DeepCrop, image: sitk.Image, row: int, column: int, pad: float) -> bool:
    index = crop.crop_to_index(row, column)
    return all(-pad <= v <= n - 1 + pad for v, n in zip(index, image.GetSize(), strict=True))


def _centroid(values: F32) -> F64:
    return np.argwhere(values > 0.5).mean(axis=0).astype(np.float64)


# ------------------------------------------------------------------ network input


def test_input_is_three_channel_float32_with_the_documented_intensity_mapping(
    onfh_case: Case,
) -> None:
    crop = deep_crop(onfh_case.image, onfh_case.heads["R"])
    assert crop.array.shape == (3, SIZE, SIZE) and crop.array.dtype == np.float32
    assert crop.crop.shape == (SIZE, SIZE) and crop.crop.dtype == np.float32
    low, high = INTENSITY_WINDOW
    unit = (np.clip(crop.crop, low, high) - low) / (high - low)
    for channel in range(3):
        expected = (unit - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        np.testing.assert_allclose(crop.array[channel], expected, rtol=0, atol=1e-5)
    assert np.array_equal(deep_input(onfh_case.image, onfh_case.heads["R"]), crop.array)
    small = deep_input(onfh_case.image, onfh_case.heads["R"], size=64)
    assert small.shape == (3, 64, 64)


@pytest.mark.parametrize("side", ["R", "L"])
def test_chosen_slice_has_the_largest_roi_area(onfh_case: Case, side: str) -> None:
    mask = onfh_case.heads[side]
    crop = deep_crop(onfh_case.image, mask)
    axis, areas = _brute_force_areas(mask)
    assert crop.coronal_axis == axis == 2  # a coronal series keeps its slice axis
    assert crop.roi_area == areas.max() > 0
    assert areas[crop.slice_index] == areas.max()


@pytest.mark.parametrize("side", ["R", "L"])
def test_crop_contains_the_whole_roi_with_the_margin(onfh_case: Case, side: str) -> None:
    mask = onfh_case.heads[side]
    crop = deep_crop(onfh_case.image, mask)
    array = sitk.GetArrayFromImage(mask)  # (k, j, i)
    voxels = np.argwhere(array != 0)[:, ::-1]  # SimpleITK (i, j, k) order
    in_slice = voxels[voxels[:, crop.coronal_axis] == crop.slice_index]
    assert len(in_slice) == crop.roi_area
    positions = np.array([crop.index_to_crop(v.tolist()) for v in in_slice])
    # Voxel centres; their edges reach half a voxel (SIZE/extent pixels) further.
    extent = positions.max(axis=0) - positions.min(axis=0)
    voxel = SIZE / crop.window[2]
    longer = float(extent.max()) + voxel
    assert longer == pytest.approx(SIZE / 1.3, abs=2 * voxel)
    assert positions.min() >= 0.15 * SIZE / 1.3 - 2 * voxel
    assert positions.max() <= SIZE - 1 - (0.15 * SIZE / 1.3 - 2 * voxel)
    # The crop's own pixels agree: the mask cropped like the image lies inside it, not
    # touching the border, and covers the ROI area scaled to the crop.
    mask_crop = deep_crop(_as_float(mask), mask).crop > 0.5
    assert not (mask_crop[0].any() or mask_crop[-1].any())
    assert not (mask_crop[:, 0].any() or mask_crop[:, -1].any())
    scale = (SIZE / crop.window[2]) * (SIZE / crop.window[3])
    assert mask_crop.sum() == pytest.approx(crop.roi_area * scale, rel=0.05)


def test_crop_to_index_and_index_to_crop_are_inverse(onfh_case: Case) -> None:
    crop = deep_crop(_permuted(onfh_case.image), _permuted(onfh_case.heads["L"]))
    for row, column in [(0.0, 0.0), (17.0, 200.5), (223.0, 5.0), (111.5, 111.5)]:
        back = crop.index_to_crop(crop.crop_to_index(row, column))
        assert back == pytest.approx((row, column), abs=1e-9)


@pytest.mark.parametrize("side", ["R", "L"])
def test_crop_is_radiological_with_superior_up(onfh_case: Case, side: str) -> None:
    image, mask = onfh_case.image, onfh_case.heads[side]
    crop = deep_crop(image, mask)
    lr = deep_crop(_coordinate_image(image, 0), mask).crop  # LPS x: + towards patient left
    si = deep_crop(_coordinate_image(image, 2), mask).crop  # LPS z: + towards superior
    middle = SIZE // 2
    assert si[0, middle] > si[-1, middle]  # superior at the top
    assert lr[middle, -1] > lr[middle, 0]  # patient's left on the viewer's right
    # Pixel by pixel, the crop holds what the mapping back onto the image says.
    for row in range(8, SIZE - 8, 24):
        for column in range(8, SIZE - 8, 24):
            if not _inside_image(crop, image, row, column, pad=-1.0):
                continue
            point = image.TransformContinuousIndexToPhysicalPoint(crop.crop_to_index(row, column))
            assert lr[row, column] == pytest.approx(point[0] / 50.0, abs=1e-4)
            assert si[row, column] == pytest.approx(point[2] / 50.0, abs=1e-4)


@pytest.mark.parametrize("side", ["R", "L"])
def test_necrotic_dome_appears_superolateral_in_both_hips(onfh_case: Case, side: str) -> None:
    # Anatomy, not geometry: the phantom puts early ONFH in the supero-lateral
    # weight-bearing dome. Superior is up in both crops; lateral is the viewer's left
    # for a right hip and the viewer's right for a left hip (radiological orientation).
    head = onfh_case.heads[side]
    head_crop = deep_crop(_as_float(head), head).crop
    lesion_crop = deep_crop(_as_float(onfh_case.lesions[side]), head).crop
    assert (lesion_crop > 0.5).sum() > 200, "phantom changed: lesion not in the chosen slice"
    head_row, head_column = _centroid(head_crop)
    lesion_row, lesion_column = _centroid(lesion_crop)
    assert lesion_row < head_row - 10
    if side == "R":
        assert lesion_column < head_column - 5
    else:
        assert lesion_column > head_column + 5


def test_permuted_and_flipped_storage_gives_the_same_crop(onfh_case: Case) -> None:
    image, mask = onfh_case.image, onfh_case.heads["R"]
    permuted, permuted_mask = _permuted(image), _permuted(mask)
    assert permuted.GetSize() != image.GetSize()
    original = deep_crop(image, mask)
    moved = deep_crop(permuted, permuted_mask)
    assert moved.coronal_axis == 0 and moved.row_flipped
    assert np.array_equal(moved.array, original.array)
    for row, column in [(0, 0), (100, 150)]:
        assert permuted.TransformContinuousIndexToPhysicalPoint(
            moved.crop_to_index(row, column)
        ) == pytest.approx(
            image.TransformContinuousIndexToPhysicalPoint(original.crop_to_index(row, column))
        )


def test_oblique_anisotropic_grid_gives_a_square_crop_in_mm() -> None:
    # Stored as (S->I, R->L, P->A) with a 10 degree tilt and 0.8 x 1.3 mm pixels.
    angle = np.radians(10.0)
    tilt = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    axes = tilt @ np.array([[0.0, 1, 0], [0, 0, -1], [-1, 0, 0]])
    image = sitk.Image([70, 60, 40], sitk.sitkFloat32)
    image.SetSpacing([0.8, 1.3, 1.1])
    image.SetDirection(axes.ravel().tolist())
    image.SetOrigin([10.0, -20.0, 30.0])
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([35.0, 30.0, 20.0]))
    coordinates = np.stack(
        [sitk.GetArrayFromImage(_coordinate_image(image, axis, 1.0)) for axis in range(3)],
        axis=-1,
    )  # (k, j, i, 3): LPS mm of every voxel
    radii = np.array([12.0, 9.0, 7.0])  # an ellipsoid, wider R-L than S-I
    inside = (((coordinates - centre) / radii) ** 2).sum(axis=-1) <= 1
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    value = _coordinate_image(image, 2, 10.0)
    crop = deep_crop(value, mask)
    assert (crop.coronal_axis, crop.row_axis, crop.column_axis) == (2, 0, 1)
    corners = [
        np.array(image.TransformContinuousIndexToPhysicalPoint(crop.crop_to_index(r, c)))
        for r, c in [(0, 0), (0, SIZE - 1), (SIZE - 1, 0)]
    ]
    width = float(np.linalg.norm(corners[1] - corners[0]))
    height = float(np.linalg.norm(corners[2] - corners[0]))
    assert width == pytest.approx(height, abs=1.3)
    assert width == pytest.approx(2 * 12 * 1.3, abs=3.0)
    assert crop.crop[0, SIZE // 2] > crop.crop[-1, SIZE // 2]  # superior up


def test_crop_leaving_the_image_is_padded_with_the_background(onfh_case: Case) -> None:
    mask = onfh_case.heads["L"]
    bbox = sitk.LabelShapeStatisticsImageFilter()
    bbox.Execute(mask)
    i0, j0, _, ni, nj, _ = bbox.GetBoundingBox(1)
    # Cut the image to the ROI's bounding box in-plane: all the margin is outside.
    image = onfh_case.image[i0 : i0 + ni, j0 : j0 + nj, :]
    cut_mask = mask[i0 : i0 + ni, j0 : j0 + nj, :]
    crop = deep_crop(image, cut_mask)
    plane = sitk.GetArrayFromImage(image)[crop.slice_index]
    assert crop.background == pytest.approx(float(np.percentile(plane, 1.0)), rel=1e-6)
    outside = [
        (r, c)
        for r in range(0, SIZE, 7)
        for c in range(0, SIZE, 7)
        if not _inside_image(crop, image, r, c, pad=1.0)
    ]
    assert len(outside) > 100
    values = np.array([crop.crop[r, c] for r, c in outside])
    np.testing.assert_allclose(values, crop.background, rtol=0, atol=1e-5)


def test_tied_largest_slices_go_to_the_one_nearest_the_centroid() -> None:
    image = sitk.Image([12, 16, 12], sitk.sitkFloat32)
    image = sitk.Add(image, 1.0)

    def mask_with(areas: dict[int, int], flip: bool) -> tuple[sitk.Image, sitk.Image]:
        array = np.zeros((12, 16, 12), dtype=np.uint8)  # (k, j, i); j is A-P
        for j, area in areas.items():
            array[4, j, 4 : 4 + area] = 1
        mask = sitk.GetImageFromArray(array)
        if flip:
            return sitk.Flip(image, [False, True, False]), sitk.Flip(mask, [False, True, False])
        return image, mask

    # Centroid 7.0: slices 5 and 9 are equally near it; the anterior one (5) wins.
    for flip in (False, True):
        img, mask = mask_with({5: 6, 6: 1, 7: 1, 8: 1, 9: 6}, flip)
        crop = deep_crop(img, mask)
        point = img.TransformIndexToPhysicalPoint([0, crop.slice_index, 0])
        assert point[1] == pytest.approx(5.0)
    # Centroid nearer slice 9.
    img, mask = mask_with({5: 6, 8: 5, 9: 6}, False)
    assert deep_crop(img, mask).slice_index == 9


def test_bad_arguments_are_refused(onfh_case: Case) -> None:
    image, mask = onfh_case.image, onfh_case.heads["R"]
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    with pytest.raises(SegmentationError, match="no voxels"):
        deep_crop(image, empty)
    with pytest.raises(ValueError, match="grid"):
        deep_crop(image, mask[1:, :, :])
    with pytest.raises(ValueError, match="margin"):
        deep_crop(image, mask, margin=-0.1)
    with pytest.raises(ValueError, match="size"):
        deep_crop(image, mask, size=0)
    with pytest.raises(ValueError, match="window"):
        deep_crop(image, mask, window=(3.0, 1.0))
    with pytest.raises(ValueError, match="3-D"):
        deep_crop(image[:, :, 0], mask[:, :, 0])


# ------------------------------------------------------------------ network and features


def test_feature_names() -> None:
    assert len(DEEP_FEATURE_NAMES) == 512
    assert DEEP_FEATURE_NAMES[0] == "deep_000" and DEEP_FEATURE_NAMES[-1] == "deep_511"


def test_features_are_finite_and_deterministic(model: torch.nn.Module, inputs: list[F32]) -> None:
    default = deep_features(model, inputs)  # torch's own thread count
    assert default.shape == (2, 512) and default.dtype == np.float32
    assert np.isfinite(default).all()
    first = deep_features(model, inputs, num_threads=THREADS)
    # Thread counts may change float rounding on some CPUs, nothing more.
    np.testing.assert_allclose(first, default, rtol=1e-5, atol=1e-6)
    assert np.array_equal(first, deep_features(model, inputs, num_threads=THREADS))
    again = deep_features(build_resnet18(seed=0), np.stack(inputs), num_threads=THREADS)
    assert np.array_equal(first, again)
    # Batching does not change a hip's features beyond float rounding.
    single = deep_features(model, inputs[1], batch_size=1, num_threads=THREADS)
    np.testing.assert_allclose(single[0], first[1], rtol=1e-5, atol=1e-6)
    other_seed = deep_features(build_resnet18(seed=1), inputs, num_threads=THREADS)
    assert not np.allclose(other_seed, first, rtol=1e-2)


def test_features_leave_torch_settings_and_model_mode_alone(
    model: torch.nn.Module, inputs: list[F32]
) -> None:
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    build_resnet18(seed=3)
    assert torch.equal(rng, torch.get_rng_state())
    model.train()
    try:
        deep_features(model, inputs[:1], num_threads=THREADS)
        assert model.training
    finally:
        model.eval()
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert deep_features(model, []).shape == (0, 512)
    with pytest.raises(ValueError, match="non-finite"):
        deep_features(model, np.full((3, 32, 32), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        deep_features(model, np.zeros((1, 32, 32), dtype=np.float32))
    head = _reference_resnet(0).eval()  # fc still there: 1000 outputs
    with pytest.raises(ValueError, match="512"):
        deep_features(head, inputs[:1])


def test_safetensors_round_trip_gives_identical_features(
    model: torch.nn.Module, inputs: list[F32], tmp_path: Path
) -> None:
    path = tmp_path / "backbone.safetensors"
    save_backbone(model, path)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    loaded = build_resnet18(path, seed=99)  # the seed is irrelevant once weights load
    assert np.array_equal(
        deep_features(loaded, inputs, num_threads=THREADS),
        deep_features(model, inputs, num_threads=THREADS),
    )
    with pytest.raises(ValueError, match="safetensors"):
        save_backbone(model, tmp_path / "backbone.pth")


def _reference_resnet(seed: int) -> torch.nn.Module:
    """A torchvision ResNet18 with its ImageNet-sized head, drawn without global effects."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet18(weights=None)


def _features_of(reference: torch.nn.Module, inputs: list[F32]) -> F32:
    backbone = _reference_resnet(0)
    backbone.load_state_dict(reference.state_dict())
    backbone.fc = torch.nn.Identity()
    return deep_features(backbone.eval(), inputs, num_threads=THREADS)


def test_torchvision_checkpoints_load(inputs: list[F32], tmp_path: Path) -> None:
    one = inputs[:1]  # each forward pass costs; one hip shows the weights loaded
    reference = _reference_resnet(7)
    expected = _features_of(reference, one)
    # A state dict as torch.save writes it, with the 1000-class ImageNet head.
    pth = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), pth)
    assert np.array_equal(deep_features(build_resnet18(pth), one, num_threads=THREADS), expected)
    # Like torchvision's published ImageNet checkpoint: no num_batches_tracked buffers.
    old = tmp_path / "resnet18-imagenet.pth"
    state = {k: v for k, v in reference.state_dict().items() if "num_batches" not in k}
    torch.save(state, old)
    assert np.array_equal(deep_features(build_resnet18(old), one, num_threads=THREADS), expected)
    # A fine-tuned backbone with a 2-output head, as safetensors.
    tuned = tmp_path / "tuned.safetensors"
    state = dict(reference.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(2, 512), torch.zeros(2)
    save_file({k: v.contiguous() for k, v in state.items()}, tuned)
    assert np.array_equal(deep_features(build_resnet18(tuned), one, num_threads=THREADS), expected)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.safetensors", lambda p: p, "do not exist"),
        ("weights.bin", lambda p: _write(p, b"x"), "unknown format"),
        ("garbage.safetensors", lambda p: _write(p, bytes(range(256)) * 8), "cannot read"),
        ("empty.pth", lambda p: _write(p, b""), "cannot read"),
        ("garbage.pth", lambda p: _write(p, b"\x80\x02not a pickle" * 50), "cannot read"),
    ],
)
def test_unreadable_weights_raise_weights_error(
    tmp_path: Path, name: str, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path / name)
    with pytest.raises(WeightsError, match=message):
        build_resnet18(path)


def _light_state(model: torch.nn.Module, fill: float = 0.0) -> dict[str, torch.Tensor]:
    """``model``'s state dict shapes, each a stride-0 view of one value.

    torch.save stores the one-element storage, so a mismatched "checkpoint" costs
    kilobytes on disk instead of 45 MB; shapes are all the checks look at first.
    """
    return {
        key: torch.full((), fill, dtype=value.dtype).expand(value.shape)
        for key, value in model.state_dict().items()
    }


def test_truncated_and_mismatched_weights_raise_weights_error(tmp_path: Path) -> None:
    assert issubclass(WeightsError, PermanentError) and onfh_dlr.WeightsError is WeightsError
    good = _light_state(_reference_resnet(0))
    pth = tmp_path / "good.pth"
    torch.save(good, pth)
    truncated = _write(tmp_path / "truncated.pth", pth.read_bytes()[: pth.stat().st_size // 2])
    with pytest.raises(WeightsError, match="cannot read"):
        build_resnet18(truncated)
    sft = tmp_path / "small.safetensors"
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, sft)
    cut = _write(tmp_path / "cut.safetensors", sft.read_bytes()[:-1000])
    with pytest.raises(WeightsError, match="cannot read"):
        build_resnet18(cut)

    def refused(state: dict[str, torch.Tensor], message: str) -> None:
        path = tmp_path / "state.pth"
        torch.save(state, path)
        with pytest.raises(WeightsError, match=message):
            build_resnet18(path)

    with torch.device("meta"):
        resnet34 = torchvision.models.resnet34(weights=None)
    refused(_light_state(resnet34), "unexpected")
    renamed = {("stem." + k if k.startswith("conv1") else k): v for k, v in good.items()}
    refused(renamed, re.escape("missing 1: conv1.weight"))
    refused(dict(good, **{"conv1.weight": torch.zeros(64, 1, 7, 7)}), "wrong shape")
    refused(dict(good, **{"fc.weight": torch.zeros(1000, 2048)}), "ResNet18")
    nan = torch.full((), float("nan")).expand(64, 64, 3, 3)
    refused(dict(good, **{"layer1.0.conv1.weight": nan}), "non-finite")
    torch.save({"epoch": 3, "lr": [0.001]}, tmp_path / "checkpoint.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        build_resnet18(tmp_path / "checkpoint.pth")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, other, metadata={"architecture": "timm.vit"})
    with pytest.raises(WeightsError, match=re.escape("timm.vit")):
        build_resnet18(other)


def test_onfh_and_healthy_head_of_one_patient_differ(
    model: torch.nn.Module, onfh_case: Case, healthy_right_case: Case
) -> None:
    # Same patient, anatomy, scanner, acquisition and noise: only the right hip's
    # pathology differs between the two studies.
    diseased = deep_input(onfh_case.image, onfh_case.heads["R"])
    healthy = deep_input(healthy_right_case.image, healthy_right_case.heads["R"])
    features = deep_features(model, [diseased, healthy], num_threads=THREADS)
    difference = np.linalg.norm(features[0] - features[1]) / np.linalg.norm(features[1])
    assert difference > 0.02
