"""Each femoral head is found and judged on its own: one head's failure spares the other."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from model_bundle.features import SeriesJob, per_hip
from model_bundle.imaging import (
    Evidence,
    HipROI,
    LoadedSeries,
    PairWarningKind,
    Side,
    find_femoral_heads,
    find_hips,
    load_series,
)
from model_bundle.serving import BundleModel
from phantom.case import PhantomStudy
from phantom.dicom_writer import write_series
from phantom.generator import generate_study, plan_case, render_case
from phantom.sites import site_profile
from worker.pipeline import _encode, score_series
from worker.sr_output import read_report


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _truth(study: PhantomStudy, side: Side) -> np.ndarray:
    return next(s.mask for s in study.segments if s.kind == "femoral_head" and s.side == side)


def _load(study: PhantomStudy, folder: Path) -> LoadedSeries:
    write_series(study, folder)
    return load_series(folder)


@pytest.mark.parametrize("site", ["siemens-1.5t", "canon-stir-1.5t"])
def test_an_oedematous_head_with_a_weak_rim_is_found_beside_its_partner(
    site: str, tmp_path: Path
) -> None:
    # Seed 99 case 6: the right head (ONFH, large oedema-like lesion, subchondral cysts)
    # has too little rim contrast on these sites; it used to drop both hips.
    study = generate_study(99, 6, (True, False), site)
    search = find_hips(_load(study, tmp_path))
    assert search.failures == {}
    assert search.warnings == ()
    for side in (Side.LEFT, Side.RIGHT):
        mask = sitk.GetArrayFromImage(search.rois[side].mask).astype(bool)
        assert _dice(mask, _truth(study, side)) >= 0.90, side
    assert "contralateral" in search.rois[Side.RIGHT].description


def test_the_weak_rim_fallback_needs_the_contralateral_head(tmp_path: Path) -> None:
    study = generate_study(99, 6, (True, False), "siemens-1.5t")
    series = _load(study, tmp_path)
    full = find_femoral_heads(series.image)
    assert full.fits[Side.RIGHT].evidence is Evidence.SPHERE_FIT_WITH_CONTRALATERAL
    # Without the left head there is no prior: the weak right head is reported, not guessed.
    array = sitk.GetArrayFromImage(series.image)
    left = _truth(study, Side.LEFT)
    spacing = np.array(series.image.GetSpacing())[::-1]
    near_left = ndimage.distance_transform_edt(~left, sampling=spacing) < 20.0
    image = sitk.GetImageFromArray(np.where(near_left, array.min(), array).astype(np.float32))
    image.CopyInformation(series.image)
    alone = find_femoral_heads(image)
    assert alone.fits == {}
    assert "no cartilage rim" in str(alone.failures[Side.RIGHT])


def test_an_unequal_pair_is_kept_with_a_warning(tmp_path: Path) -> None:
    plan = plan_case(31, 1, (False, False), site_profile("siemens-1.5t"))
    right, left = plan.anatomy.hips
    hips = (replace(right, head_radius=20.0), replace(left, head_radius=25.5))
    study = render_case(replace(plan, anatomy=replace(plan.anatomy, hips=hips)))
    search = find_hips(_load(study, tmp_path))
    assert set(search.rois) == {Side.LEFT, Side.RIGHT}
    assert [w.kind for w in search.warnings] == [PairWarningKind.RADIUS_ASYMMETRY]
    for side in (Side.LEFT, Side.RIGHT):
        mask = sitk.GetArrayFromImage(search.rois[side].mask).astype(bool)
        assert _dice(mask, _truth(study, side)) >= 0.90, side


def _without_right_hip(study: PhantomStudy) -> PhantomStudy:
    """The study with everything within 25 mm of the right head blanked (out of view)."""
    head = _truth(study, Side.RIGHT)
    g = study.geometry
    sampling = (g.slice_spacing, g.pixel_spacing[0], g.pixel_spacing[1])
    near = ndimage.distance_transform_edt(~head, sampling=sampling) < 25.0
    return replace(study, stored=np.where(near, study.stored.min(), study.stored))


def test_a_hip_out_of_view_gives_one_roi_and_the_other_hips_reason(tmp_path: Path) -> None:
    study = _without_right_hip(generate_study(31, 2, (True, False)))
    search = find_hips(_load(study, tmp_path))
    assert set(search.rois) == {Side.LEFT}
    assert set(search.failures) == {Side.RIGHT}
    assert "right femoral head" in str(search.failures[Side.RIGHT])
    mask = sitk.GetArrayFromImage(search.rois[Side.LEFT].mask).astype(bool)
    assert _dice(mask, _truth(study, Side.LEFT)) >= 0.90


def test_per_hip_scores_the_found_hip_and_fails_the_other_with_its_reason(
    tmp_path: Path,
) -> None:
    study = _without_right_hip(generate_study(31, 2, (True, False)))
    write_series(study, tmp_path)
    rows = ({"PatientID": "p", "Side": "L"}, {"PatientID": "p", "Side": "R"})

    def compute(series: LoadedSeries, roi: HipROI, row: dict[str, str]) -> tuple[str, str]:
        return row["Side"], f"scored from {roi.source}"

    def failed(row: dict[str, str], reason: str, source: str) -> tuple[str, str]:
        return row["Side"], f"failed: {reason}"

    out = dict(per_hip(SeriesJob(tmp_path, None, rows), compute, failed))
    assert out["L"] == "scored from auto"
    assert out["R"].startswith("failed: FemoralHeadNotFoundError: no right femoral head")


def test_the_worker_scores_the_found_hip_and_reports_the_other_as_not_analysed(
    tmp_path: Path,
) -> None:
    study = _without_right_hip(generate_study(31, 2, (True, False)))
    write_series(study, tmp_path / "series")
    demo = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"
    scored = score_series(
        tmp_path / "series", BundleModel.load(demo), uid_seed="one-hip", content_time=1.75e9
    )
    assert set(scored.predictions) == {Side.LEFT}
    assert scored.roi_source == "auto"
    # The study gets both hips: the left scored, the right "could not analyse" and why,
    # in the SR (read back from its bytes) and on the card.
    (reason,) = scored.not_analysed.values()
    assert set(scored.not_analysed) == {Side.RIGHT}
    assert reason.startswith("FemoralHeadNotFoundError: no right femoral head")
    hips = read_report(hd.sr.srread(io.BytesIO(_encode(scored.sr_dataset))))
    assert hips[Side.RIGHT].not_analysed == reason and hips[Side.RIGHT].probability is None
    assert hips[Side.LEFT].not_analysed is None and hips[Side.LEFT].probability is not None
    assert "could not analyse" in str(scored.card_dataset.ImageComments)
