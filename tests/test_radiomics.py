"""Radiomics of one femoral head: the 1,197 features, selective extraction, bad input.

One phantom patient (right hip ONFH, left healthy), written to DICOM and loaded back as
the worker does; the full extractions are module-scoped because each takes seconds.
"""

from __future__ import annotations

import copy
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from radiomics import featureextractor

from model_bundle.features import (
    FEATURE_NAMES,
    bin_edges,
    extract_radiomics,
    feature_names,
    load_params,
    read_params_text,
)
from model_bundle.imaging import load_series, resample_isotropic, resample_labels
from onfh_dlr.errors import ConfigurationError, FeatureError, SegmentationError
from phantom.dicom_writer import write_series
from phantom.generator import generate_study

CLASS_COUNTS = {
    "firstorder": 234,
    "glcm": 286,
    "glrlm": 208,
    "glszm": 208,
    "gldm": 182,
    "ngtdm": 65,
    "shape": 14,
}
IMAGE_TYPES = (
    ["original"]
    + [f"wavelet-{d}" for d in ("LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH", "LLL")]
    + [f"log-sigma-{s}-0-mm-3D" for s in (2, 3, 4, 5)]
)


@dataclass(frozen=True)
class Case:
    image: sitk.Image
    onfh_head: sitk.Image  # right femoral head, ONFH
    healthy_head: sitk.Image  # left femoral head


@dataclass(frozen=True)
class Timed:
    values: dict[str, float]
    seconds: float


def _split(name: str) -> tuple[str, str, str]:
    image_type, feature_class, feature = name.split("_", 2)
    return image_type, feature_class, feature


def _timed(image: sitk.Image, mask: sitk.Image, features: Sequence[str] | None = None) -> Timed:
    start = time.perf_counter()
    values = extract_radiomics(image, mask, features=features)
    return Timed(values, time.perf_counter() - start)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    study = generate_study(5, 0, (True, False))
    directory = tmp_path_factory.mktemp("radiomics") / "series"
    write_series(study, directory)
    image = load_series(directory).image
    masks: dict[str, sitk.Image] = {}
    for segment in study.segments:
        mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
        mask.CopyInformation(image)
        masks[segment.label] = mask
    return Case(image, masks["Right femoral head"], masks["Left femoral head"])


@pytest.fixture(scope="module")
def full_onfh(case: Case) -> Timed:
    return _timed(case.image, case.onfh_head)


@pytest.fixture(scope="module")
def full_healthy(case: Case) -> Timed:
    return _timed(case.image, case.healthy_head)


# --- Parameter file and names -------------------------------------------------------------


def test_packaged_params_follow_the_paper() -> None:
    params = load_params()
    setting = params["setting"]
    assert setting["normalize"] is True
    assert setting["resampledPixelSpacing"] == [1.0, 1.0, 1.0]
    assert setting["interpolator"] == "sitkBSpline"
    assert list(params["imageType"]) == ["Original", "Wavelet", "LoG"]
    assert params["imageType"]["LoG"]["sigma"] == [2.0, 3.0, 4.0, 5.0]
    glcm = params["featureClass"]["glcm"]
    assert len(glcm) == 22
    assert "SumAverage" not in glcm
    assert "MCC" not in glcm
    # The verbatim text (for bundles) is the file load_params parses.
    assert "binWidth" in read_params_text()


def test_load_params_returns_an_independent_copy() -> None:
    params = load_params()
    params["setting"]["binWidth"] = 1
    assert load_params()["setting"]["binWidth"] != 1


def test_feature_names_count_classes_and_order() -> None:
    names = list(FEATURE_NAMES)
    assert len(names) == 1197
    assert len(set(names)) == len(names)
    assert Counter(_split(n)[1] for n in names) == CLASS_COUNTS
    # 13 image types x 91 + 14 shape, shape only on the original image, shape first.
    per_type = Counter(_split(n)[0] for n in names if _split(n)[1] != "shape")
    assert list(per_type) == IMAGE_TYPES
    assert set(per_type.values()) == {91}
    assert all(n.startswith("original_shape_") for n in names[:14])
    assert not [n for n in names if n.endswith(("_glcm_SumAverage", "_glcm_MCC"))]
    assert "wavelet-LLH_glcm_Contrast" in names
    assert "log-sigma-2-0-mm-3D_firstorder_Mean" in names
    # Stable: from the packaged file, from a loaded copy, and on a second call.
    assert feature_names() == names
    assert feature_names(load_params()) == names


def test_bad_parameter_files_are_configuration_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("setting: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml"):
        load_params(broken)
    with pytest.raises(ConfigurationError, match=r"missing\.yaml"):
        load_params(tmp_path / "missing.yaml")
    params = load_params()
    params["setting"]["binWidth"] = "wide"  # fails PyRadiomics' schema
    with pytest.raises(ConfigurationError):
        feature_names(params)
    params = load_params()
    params["imageType"]["Square"] = {}  # an image type we do not plan for
    with pytest.raises(ConfigurationError, match="Square"):
        feature_names(params)


# --- Full extraction -------------------------------------------------------------------


def test_full_extraction_gives_the_1197_finite_features(
    full_onfh: Timed, full_healthy: Timed
) -> None:
    print(f"\nfull extraction: {full_onfh.seconds:.2f} s (ONFH), {full_healthy.seconds:.2f} s")
    for values in (full_onfh.values, full_healthy.values):
        assert list(values) == list(FEATURE_NAMES)  # same names, same order, both calls
        assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())


def test_full_extraction_equals_stock_pyradiomics(case: Case, full_onfh: Timed) -> None:
    # Our driver must compute exactly what `pyradiomics` does with the parameter file,
    # with PyRadiomics' own discretisation (ours only replaces its min/max: bin_edges).
    extractor = featureextractor.RadiomicsFeatureExtractor(load_params())
    bin_edges.uninstall()
    try:
        stock: dict[str, Any] = extractor.execute(case.image, case.onfh_head)
    finally:
        assert bin_edges.install()
    stock_values = {k: float(v) for k, v in stock.items() if not k.startswith("diagnostics_")}
    assert list(stock_values) == list(full_onfh.values)
    assert stock_values == full_onfh.values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_our_bin_edges_are_pyradiomics_own_on_roi_values_and_edge_cases(
    case: Case, dtype: type
) -> None:
    assert bin_edges.install(), "the installed PyRadiomics is one bin_edges was checked against"
    roi = sitk.GetArrayFromImage(case.image)[sitk.GetArrayFromImage(case.onfh_head) > 0]
    rng = np.random.default_rng(7)
    arrays = [
        roi,
        (roi - roi.mean()) / roi.std() * 100.0,  # z-scored x normalizeScale, as served
        rng.normal(-3.0, 40.0, 5000),
        np.full(10, 20.0),  # flat, on a bin edge: one bin of two edges
        np.full(10, 17.3),  # flat, inside a bin
        np.array([-0.0, 0.0, 1e-9]),
    ]
    for array in arrays:
        values: np.ndarray[Any, Any] = np.asarray(array, dtype=dtype)
        for kwargs in ({"binWidth": 10}, {"binWidth": 5}, {"binWidth": 0.7}, {"binCount": 16}, {}):
            ours = np.asarray(bin_edges.bin_edges(values.copy(), **kwargs))
            theirs = np.asarray(bin_edges.ORIGINAL(values.copy(), **kwargs))
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), kwargs


def test_bins_are_in_a_sensible_range(full_onfh: Timed, full_healthy: Timed) -> None:
    params = load_params()
    bin_width = params["setting"]["binWidth"]
    log_bin_width = params["imageType"]["LoG"]["binWidth"]
    for values in (full_onfh.values, full_healthy.values):
        assert 16 <= values["original_firstorder_Range"] / bin_width <= 128
        for sigma in (2, 3, 4, 5):
            value_range = values[f"log-sigma-{sigma}-0-mm-3D_firstorder_Range"]
            assert 16 <= value_range / log_bin_width <= 128
        # voxelArrayShift keeps every normalised original ROI value positive.
        assert values["original_firstorder_Minimum"] + params["setting"]["voxelArrayShift"] > 0


def test_onfh_and_healthy_heads_differ(full_onfh: Timed, full_healthy: Timed) -> None:
    onfh = np.array(list(full_onfh.values.values()))
    healthy = np.array(list(full_healthy.values.values()))
    scale = np.maximum(np.abs(onfh), np.abs(healthy))
    differ = np.abs(onfh - healthy) > 0.01 * scale
    # A sanity check, not a model: most features move, and the bright (oedematous) head
    # has a higher mean than the dark fat-suppressed marrow.
    assert differ.sum() > 0.8 * len(FEATURE_NAMES)
    assert (
        full_onfh.values["original_firstorder_Mean"]
        > full_healthy.values["original_firstorder_Mean"]
    )


# --- Selective extraction --------------------------------------------------------------


def _sample_across_everything(seed: int, size: int) -> list[str]:
    """``size`` names covering every image type and every class, in random order."""
    rng = random.Random(seed)
    names = list(FEATURE_NAMES)
    chosen: list[str] = []
    for image_type in IMAGE_TYPES:
        chosen.append(rng.choice([n for n in names if _split(n)[0] == image_type]))
    for feature_class in CLASS_COUNTS:
        pool = [n for n in names if _split(n)[1] == feature_class and n not in chosen]
        chosen.append(rng.choice(pool))
    chosen += rng.sample([n for n in names if n not in chosen], size - len(chosen))
    rng.shuffle(chosen)
    return chosen


SUBSETS = {
    "one-shape": ["original_shape_Sphericity"],
    "wavelet-LLH-glcm": ["wavelet-LLH_glcm_Contrast"],
    "log-sigma-3-firstorder": ["log-sigma-3-0-mm-3D_firstorder_Mean"],
    "sample-30": _sample_across_everything(seed=20240607, size=30),
}


def test_sample_covers_all_image_types_and_classes() -> None:
    sample = SUBSETS["sample-30"]
    assert len(set(sample)) == 30
    assert {_split(n)[0] for n in sample} == set(IMAGE_TYPES)
    assert {_split(n)[1] for n in sample} == set(CLASS_COUNTS)


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_selective_equals_full(case: Case, full_onfh: Timed, subset: str) -> None:
    names = SUBSETS[subset]
    selective = _timed(case.image, case.onfh_head, names)
    print(
        f"\n{subset}: selective {selective.seconds:.2f} s vs full {full_onfh.seconds:.2f} s "
        f"({full_onfh.seconds / selective.seconds:.1f}x)"
    )
    assert list(selective.values) == names  # exactly these, in the order asked
    for name in names:
        assert math.isclose(selective.values[name], full_onfh.values[name], rel_tol=1e-12), name


# --- Bad input ---------------------------------------------------------------------------


def _mask_like(image: sitk.Image, array: np.ndarray[Any, Any]) -> sitk.Image:
    mask = sitk.GetImageFromArray(array.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def test_empty_mask_is_a_segmentation_error(case: Case) -> None:
    empty = _mask_like(case.image, np.zeros(sitk.GetArrayViewFromImage(case.image).shape))
    with pytest.raises(SegmentationError, match="empty"):
        extract_radiomics(case.image, empty)


def test_single_voxel_and_flat_masks_are_segmentation_errors(case: Case) -> None:
    heads = sitk.GetArrayFromImage(case.onfh_head)
    single = np.zeros_like(heads)
    single[tuple(np.argwhere(heads)[0])] = 1
    with pytest.raises(SegmentationError, match="single voxel"):
        extract_radiomics(case.image, _mask_like(case.image, single))
    # One coronal slice of the head: a flat ROI, refused by minimumROIDimensions = 3.
    flat = np.zeros_like(heads)
    middle = int(np.argmax(heads.sum(axis=(1, 2))))
    flat[middle] = heads[middle]
    with pytest.raises(SegmentationError, match="dimensions"):
        extract_radiomics(case.image, _mask_like(case.image, flat), features=FEATURE_NAMES[:1])


def test_mask_on_another_grid_is_a_segmentation_error(case: Case) -> None:
    # The same head, resampled to the 1 mm grid: physically right, but not the image grid.
    grid = resample_isotropic(case.image, 1.0, interpolator="nearest")  # only its grid counts
    isotropic = resample_labels(case.onfh_head, grid)
    with pytest.raises(SegmentationError, match="not on the image grid"):
        extract_radiomics(case.image, isotropic)
    shifted = sitk.Image(case.onfh_head)
    shifted.SetOrigin([o + 2.0 for o in case.onfh_head.GetOrigin()])
    with pytest.raises(SegmentationError, match="not on the image grid"):
        extract_radiomics(case.image, shifted)


def test_unknown_feature_name_is_named_in_the_error(case: Case) -> None:
    unknown = "wavelet-LLH_glcm_SumAverage"  # excluded from the model
    with pytest.raises(FeatureError, match=re.escape(repr(unknown))):
        extract_radiomics(
            case.image, case.onfh_head, features=["original_shape_Sphericity", unknown]
        )
    with pytest.raises(FeatureError, match="more than once"):
        extract_radiomics(case.image, case.onfh_head, features=["original_shape_Sphericity"] * 2)
    with pytest.raises(TypeError):
        extract_radiomics(case.image, case.onfh_head, features="original_shape_Sphericity")


def test_new_parameters_met_by_four_threads_at_once_are_validated_without_error() -> None:
    # Two hips scored in two threads meet the hip profile's parameters first together;
    # PyRadiomics' validation (pykwalify, ruamel) then failed with ParserError and
    # ComposerError in most rounds, and the study with it.
    errors: list[str] = []
    for round_ in range(5):
        params = load_params()
        params["setting"]["binWidth"] = 10 + (round_ + 1) / 128  # new to the cache
        barrier = threading.Barrier(4)

        def first_use(own: dict[str, Any], barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                assert len(feature_names(own)) == len(FEATURE_NAMES)
            except Exception as exc:  # every failure is collected, not just the first
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [
            threading.Thread(target=first_use, args=(copy.deepcopy(params), barrier))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
