"""A ``hip``-profile bundle's probabilities do not depend on the FOV or the scanner's scale.

The shipped demo bundle (profile ``hip``, the training default) scores phantom studies
changed in ways that say nothing about either femoral head: every pixel value
multiplied by a constant, an offset added (what a Rescale Intercept does), the field of
view cropped or extended away from the hips, a bright structure painted far from them.
Each hip's probability, scored on its reference SEG ROI (so only normalisation is under
test), moves by less than 0.02. A small bundle trained with the ``paper`` profile
(radiomics z-scored over the whole image) is not invariant to the bright structure: the
failure issue 13 measured, and the reason this test can fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from service_harness import CohortMaker

from model_bundle.bundle import load_bundle
from model_bundle.features import HIP_MARGIN, NormalisationProfile, read_cohort, series_rois
from model_bundle.imaging import HipROI, LoadedSeries, Side, load_series
from model_bundle.serving import BundleModel, ModelName
from model_bundle.training import plan_training, read_train_config, run_training

TRAIN_YAML = "epochs: 2\nbatch_size: 8\nlasso_folds: 3\ncv_folds: 3\nthreads: 1\nseed: 3\n"
DEMO = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"
TOLERANCE = 0.02

Study = tuple[LoadedSeries, dict[Side, HipROI]]
Change = Callable[[LoadedSeries, dict[Side, HipROI]], Study]


def test_training_defaults_to_the_hip_profile(tmp_path: Path) -> None:
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(TRAIN_YAML, encoding="utf-8")
    assert read_train_config(train_yaml).preprocessing_profile is NormalisationProfile.HIP


@pytest.fixture(scope="module")
def paper_bundle(tmp_path_factory: pytest.TempPathFactory, phantom_cohort: CohortMaker) -> Path:
    """A tiny bundle trained with the source paper's profile on 12 phantom patients."""
    root = tmp_path_factory.mktemp("invariance")
    train_yaml = root / "train.yaml"
    train_yaml.write_text(TRAIN_YAML + "preprocessing_profile: paper\n", encoding="utf-8")
    config = read_train_config(train_yaml)
    assert config.preprocessing_profile is NormalisationProfile.PAPER
    plan = plan_training(phantom_cohort(12, 61).csv, root / "bundle", config=config)
    return run_training(plan, synthetic=True, workers=2).bundle.directory


@pytest.fixture(scope="module")
def demo_model() -> BundleModel:
    """The shipped demo bundle, loaded once."""
    return BundleModel.load(DEMO)


@pytest.fixture(scope="module")
def studies(phantom_cohort: CohortMaker) -> list[Study]:
    """Two unseen phantom studies with their reference (SEG) ROIs."""
    out = []
    for job in read_cohort(phantom_cohort(2, 3).csv):
        series = load_series(job.image)
        out.append((series, series_rois(series, job.mask).rois))
    return out


def _rows_of_hips(series: LoadedSeries, rois: dict[Side, HipROI]) -> tuple[int, int]:
    """First and last image row (index 1) of the hip regions the features read."""
    grow = int(np.ceil(HIP_MARGIN / series.image.GetSpacing()[1]))
    lo, hi = series.image.GetSize()[1], 0
    for roi in rois.values():
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(roi.mask)
        _, y, _, _, sy, _ = stats.GetBoundingBox(1)
        lo, hi = min(lo, y - grow), max(hi, y + sy + grow)
    return max(lo, 0), min(hi, series.image.GetSize()[1])


def _with(series: LoadedSeries, rois: dict[Side, HipROI], f: Callable[..., sitk.Image]) -> Study:
    image = f(series.image)
    new_rois = {s: dataclasses.replace(r, mask=f(r.mask, mask=True)) for s, r in rois.items()}
    return dataclasses.replace(series, image=image), new_rois


def scaled(series: LoadedSeries, rois: dict[Side, HipROI]) -> Study:
    return dataclasses.replace(series, image=series.image * 3.7), rois


def offset(series: LoadedSeries, rois: dict[Side, HipROI]) -> Study:
    # What a Rescale Intercept of +1000 does to every loaded value.
    return dataclasses.replace(series, image=series.image + 1000.0), rois


def cropped(series: LoadedSeries, rois: dict[Side, HipROI]) -> Study:
    lo, hi = _rows_of_hips(series, rois)
    x, _, z = series.image.GetSize()
    lo, hi = max(0, lo - 5), min(series.image.GetSize()[1], hi + 5)
    assert (lo, hi) != (0, series.image.GetSize()[1]), "nothing to crop: the test is void"

    def crop(image: sitk.Image, mask: bool = False) -> sitk.Image:
        return sitk.RegionOfInterest(image, [x, hi - lo, z], [0, lo, 0])

    return _with(series, rois, crop)


def extended(series: LoadedSeries, rois: dict[Side, HipROI]) -> Study:
    floor = float(sitk.GetArrayViewFromImage(series.image).min())

    def pad(image: sitk.Image, mask: bool = False) -> sitk.Image:
        return sitk.ConstantPad(image, [0, 60, 0], [0, 60, 0], 0 if mask else floor)

    return _with(series, rois, pad)


def bright_structure(series: LoadedSeries, rois: dict[Side, HipROI]) -> Study:
    array = sitk.GetArrayFromImage(series.image)  # (slice, row, column)
    top = array.shape[1] // 10
    assert top < _rows_of_hips(series, rois)[0], "the block would reach a hip region"
    array[:, :top, :] = 3.0 * float(array.max())
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(series.image)
    return dataclasses.replace(series, image=image), rois


def _probabilities(model: BundleModel, study: Study) -> dict[tuple[Side, ModelName], float]:
    series, rois = study
    return {
        (side, name): p
        for side, prediction in model.predict(series, rois).items()
        for name, p in prediction.probabilities.items()
    }


@pytest.mark.parametrize("change", [scaled, offset, cropped, extended, bright_structure])
def test_a_change_away_from_the_hips_moves_no_hip_probability(
    demo_model: BundleModel, studies: list[Study], change: Change
) -> None:
    assert load_bundle(DEMO).preprocessing()["profile"] == "hip"
    for series, rois in studies:
        before = _probabilities(demo_model, (series, rois))
        after = _probabilities(demo_model, change(series, rois))
        moved = {k: abs(after[k] - before[k]) for k in before}
        assert max(moved.values()) < TOLERANCE, moved


def test_the_papers_whole_image_zscore_is_moved_by_a_bright_structure(
    paper_bundle: Path, studies: list[Study]
) -> None:
    model = BundleModel.load(paper_bundle)
    assert model.spec.preprocessing.profile is NormalisationProfile.PAPER
    moved = []
    for series, rois in studies:
        before = _probabilities(model, (series, rois))
        after = _probabilities(model, bright_structure(series, rois))
        moved += [abs(after[k] - before[k]) for k in before if k[1] is ModelName.RAD]
    assert max(moved) >= TOLERANCE, moved
