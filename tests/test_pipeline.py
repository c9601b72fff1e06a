"""The offline scoring pipeline (worker.pipeline) with the committed demo bundle.

Scoring a phantom study takes a few seconds, so it happens twice in this module (once
auto-segmented, once with the phantom's ground-truth SEG as the ROI source) and the
tests share the results.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_checks import dciodvfy_errors
from dicom_factory import SeriesSpec, make_series

from model_bundle.imaging import HipROI, LoadedSeries, Side, load_series, rois_from_seg
from model_bundle.serving import BundleModel, HipPrediction
from onfh_dlr.errors import FemoralHeadNotFoundError, OutputValidationError
from onfh_dlr.settings import OutputKind
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study
from worker.pipeline import (
    DEFAULT_SERIES_NUMBER_BASE,
    ScoredStudy,
    WrittenOutputs,
    not_analysed_series,
    output_uids,
    score_series,
    validate_outputs,
    write_outputs,
)
from worker.seg_output import OutputDevice
from worker.sr_output import read_report

DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"
CONTENT_TIME = 1_750_000_000.0


@dataclass(frozen=True)
class Study:
    series_dir: Path
    seg_path: Path


@pytest.fixture(scope="module")
def model() -> BundleModel:
    return BundleModel.load(DEMO_BUNDLE)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    phantom = generate_study(23, 0, (True, False))
    directory = tmp_path_factory.mktemp("pipeline")
    datasets = write_series(phantom, directory / "series")
    write_segmentation(phantom, datasets, directory / "truth_seg.dcm")
    return Study(directory / "series", directory / "truth_seg.dcm")


def _seg(scored: ScoredStudy) -> hd.seg.Segmentation:
    """The SEG of a study whose hips were scored (only not-analysed studies lack one)."""
    assert scored.seg_dataset is not None
    return scored.seg_dataset


@pytest.fixture(scope="module")
def scored(study: Study, model: BundleModel) -> ScoredStudy:
    return score_series(study.series_dir, model, uid_seed="job-42", content_time=CONTENT_TIME)


@pytest.fixture(scope="module")
def written(scored: ScoredStudy, tmp_path_factory: pytest.TempPathFactory) -> WrittenOutputs:
    return write_outputs(scored, tmp_path_factory.mktemp("outputs"))


@pytest.fixture(scope="module")
def scored_with_seg(study: Study, model: BundleModel, written: WrittenOutputs) -> ScoredStudy:
    return score_series(
        study.series_dir, model, seg=study.seg_path, uid_seed="job-43", previous_sr=written.sr
    )


def test_auto_scoring_scores_both_hips_on_auto_rois(scored: ScoredStudy, study: Study) -> None:
    assert scored.roi_source == "auto"
    assert set(scored.predictions) == {"L", "R"}
    for prediction in scored.predictions.values():
        assert prediction.roi_source == "auto"
        assert 0.0 <= prediction.probability <= 1.0
    series = load_series(study.series_dir)
    assert scored.series_instance_uid == series.series_instance_uid
    assert scored.sr_dataset.StudyInstanceUID == series.study_instance_uid


def test_written_outputs_are_named_by_uid_and_pass_dciodvfy(
    scored: ScoredStudy, written: WrittenOutputs
) -> None:
    sr_path, seg_path, card_path, pdf_path = written.sr, written.seg, written.card, written.pdf
    assert seg_path is not None and pdf_path is not None
    assert sr_path.name == f"SR_{scored.sr_uid}.dcm"
    assert seg_path.name == f"SEG_{scored.seg_uid}.dcm"
    assert card_path.name == f"CARD_{scored.card_uid}.dcm"
    assert pdf_path.name == f"PDF_{scored.pdf_uid}.dcm"
    assert sorted(p.name for p in sr_path.parent.iterdir()) == sorted(
        [sr_path.name, seg_path.name, card_path.name, pdf_path.name]
    )  # no temporary file left behind
    assert dciodvfy_errors(sr_path) == []
    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(card_path) == []
    assert dciodvfy_errors(pdf_path) == []


def test_written_card_is_in_the_study_and_says_each_hips_call(
    scored: ScoredStudy, written: WrittenOutputs
) -> None:
    card = pydicom.dcmread(written.card)
    assert card.StudyInstanceUID == scored.study_instance_uid
    assert card.SeriesNumber == DEFAULT_SERIES_NUMBER_BASE + 3
    comments = str(card.ImageComments)
    for prediction in scored.predictions.values():
        assert f"p = {prediction.probability:.2f}" in comments


def test_written_report_says_what_the_model_said(
    scored: ScoredStudy, written: WrittenOutputs
) -> None:
    hips = read_report(pydicom.dcmread(written.sr))
    assert set(hips) == set(scored.predictions)
    for side, hip in hips.items():
        prediction = scored.predictions[side]
        assert hip.probability == pytest.approx(prediction.probability, rel=1e-12)
        assert hip.score == pytest.approx(prediction.score, rel=1e-12)
        assert hip.necrosis_present is bool(prediction.call)
        assert hip.segmentation_uid == scored.seg_uid


def test_rewriting_the_same_outputs_replaces_them(
    scored: ScoredStudy, written: WrittenOutputs
) -> None:
    before = [p.read_bytes() for p in written.by_kind().values()]
    again = write_outputs(scored, written.sr.parent)
    assert again == written
    assert [p.read_bytes() for p in again.by_kind().values()] == before
    assert len(list(written.sr.parent.iterdir())) == 4  # SEG, SR, card, PDF


def test_written_seg_sr_and_card_are_the_bytes_the_validation_read_back(
    scored: ScoredStudy, written: WrittenOutputs
) -> None:
    files = written.by_kind()
    assert set(scored.validated_bytes) == {OutputKind.SEG, OutputKind.SR, OutputKind.CARD}
    datasets = {
        OutputKind.SEG: scored.seg_dataset,
        OutputKind.SR: scored.sr_dataset,
        OutputKind.CARD: scored.card_dataset,
    }
    for kind, validated in scored.validated_bytes.items():
        assert files[kind].read_bytes() == validated
        fresh = io.BytesIO()  # and they are what pydicom writes for the dataset now
        dataset = datasets[kind]
        assert dataset is not None
        dataset.save_as(fresh, enforce_file_format=True)
        assert fresh.getvalue() == validated


def test_output_uids_are_derived_from_the_seed(scored: ScoredStudy) -> None:
    uids = output_uids("job-42", scored.series_instance_uid)
    assert uids == output_uids("job-42", scored.series_instance_uid)
    assert scored.seg_uid == uids.seg_instance
    assert scored.sr_uid == uids.sr_instance
    assert _seg(scored).SeriesInstanceUID == uids.seg_series
    assert scored.sr_dataset.SeriesInstanceUID == uids.sr_series
    assert len({uids.seg_series, uids.seg_instance, uids.sr_series, uids.sr_instance}) == 4
    assert output_uids("job-43", scored.series_instance_uid) != uids
    assert output_uids(None, scored.series_instance_uid) != output_uids(
        None, scored.series_instance_uid
    )


def test_content_time_fixes_the_creation_time(scored: ScoredStudy) -> None:
    for ds in (_seg(scored), scored.sr_dataset):
        assert ds.ContentDate == ds.InstanceCreationDate == ds.SeriesDate
        assert ds.ContentTime == ds.InstanceCreationTime
    assert scored.sr_dataset.ContentDate == _seg(scored).ContentDate


def test_linked_seg_is_the_roi_source(scored_with_seg: ScoredStudy, study: Study) -> None:
    assert scored_with_seg.roi_source == "seg"
    assert set(scored_with_seg.predictions) == {"L", "R"}
    assert all(p.roi_source == "seg" for p in scored_with_seg.predictions.values())
    truth = pydicom.dcmread(study.seg_path)
    assert all(truth.SOPInstanceUID in d for d in scored_with_seg.roi_descriptions.values())
    # The phantom's segments are AUTOMATIC: the type and algorithm are carried over.
    for item in _seg(scored_with_seg).SegmentSequence:
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert "received SEG" in item.SegmentDescription
        assert item.SegmentAlgorithmName == truth.SegmentSequence[0].SegmentAlgorithmName


def test_rescoring_lists_the_previous_report_as_predecessor(
    scored_with_seg: ScoredStudy, scored: ScoredStudy
) -> None:
    item = scored_with_seg.sr_dataset.PredecessorDocumentsSequence[0]
    referenced = item.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == scored.sr_uid


def test_series_without_femoral_heads_raises(model: BundleModel) -> None:
    blob = make_series(SeriesSpec(n_slices=12, rows=64, cols=64))
    with pytest.raises(FemoralHeadNotFoundError):
        score_series(blob.datasets, model)


def test_series_without_femoral_heads_gets_a_not_analysed_report_and_card(
    model: BundleModel, tmp_path: Path
) -> None:
    blob = make_series(SeriesSpec(n_slices=12, rows=64, cols=64))
    with pytest.raises(FemoralHeadNotFoundError) as caught:
        score_series(blob.datasets, model)
    reason = f"FemoralHeadNotFoundError: {caught.value}"
    reasons = {Side.RIGHT: reason, Side.LEFT: reason}
    result = not_analysed_series(blob.datasets, model, reasons, uid_seed="job-44")
    written = write_outputs(result, tmp_path)
    assert written.seg is None and result.predictions == {}
    assert dciodvfy_errors(written.sr) == []
    assert dciodvfy_errors(written.card) == []
    hips = read_report(pydicom.dcmread(written.sr))
    assert {side: hip.not_analysed for side, hip in hips.items()} == reasons
    assert all(hip.score is None and hip.necrosis_present is None for hip in hips.values())
    # dcmqi reads it: each hip's group with its reason as a qualitative evaluation.
    exe = shutil.which("tid1500reader", path=str(Path(sys.executable).parent))
    assert exe is not None, "dcmqi's tid1500reader is required: pip install -e '.[dev]'"
    out = tmp_path / "tid1500.json"
    subprocess.run(
        [exe, "--inputDICOM", str(written.sr), "--outputMetadata", str(out)],
        capture_output=True,
        check=True,
    )
    groups = json.loads(out.read_text())["Measurements"]
    assert {g["TrackingIdentifier"] for g in groups} == {"Left femoral head", "Right femoral head"}
    for group in groups:
        values = [str(e["conceptValue"]) for e in group["qualitativeEvaluations"]]
        assert f"could not analyse: {reason}" in values
        assert group["measurementItems"] == []
    card = pydicom.dcmread(written.card)
    assert card.StudyInstanceUID == blob.datasets[0].StudyInstanceUID
    assert str(card.ImageComments).count(f"could not analyse: {reason}") == 2
    assert output_uids("job-44", result.series_instance_uid).sr_instance == result.sr_uid


def _validation_inputs(
    scored: ScoredStudy, study: Study, model: BundleModel
) -> tuple[LoadedSeries, dict[Side, HipROI], OutputDevice]:
    """The series, ROIs (read back from the SEG) and device validate_outputs needs."""
    series = load_series(study.series_dir)
    rois = rois_from_seg(_seg(scored), series)
    return series, rois, OutputDevice.from_manifest(model.bundle.manifest)


def test_validation_rejects_a_seg_that_differs_from_the_roi(
    scored: ScoredStudy, study: Study, model: BundleModel
) -> None:
    series, rois, device = _validation_inputs(scored, study, model)
    validate_outputs(series, rois, scored.predictions, _seg(scored), scored.sr_dataset, device)
    array = sitk.GetArrayFromImage(rois[Side.LEFT].mask)
    array[np.unravel_index(int(np.argmax(array)), array.shape)] = 0
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(rois[Side.LEFT].mask)
    rois[Side.LEFT] = replace(rois[Side.LEFT], mask=changed)
    with pytest.raises(OutputValidationError, match="1 voxels differ"):
        validate_outputs(series, rois, scored.predictions, _seg(scored), scored.sr_dataset, device)


def test_validation_rejects_a_report_that_contradicts_the_call(
    scored: ScoredStudy, study: Study, model: BundleModel
) -> None:
    series, rois, device = _validation_inputs(scored, study, model)
    flipped = dict(scored.predictions)
    flipped[Side.LEFT] = replace(flipped[Side.LEFT], call=1 - flipped[Side.LEFT].call)
    with pytest.raises(OutputValidationError, match="does not match call"):
        validate_outputs(series, rois, flipped, _seg(scored), scored.sr_dataset, device)


class _TimedModel(BundleModel):
    """The demo bundle, noting which thread scored each hip and when (nothing replaced)."""

    spans: list[tuple[int, float, float]]

    def predict_hip(self, series: LoadedSeries, roi: HipROI) -> HipPrediction:
        start = time.perf_counter()
        try:
            return super().predict_hip(series, roi)
        finally:
            self.spans.append((threading.get_ident(), start, time.perf_counter()))


def test_hips_scored_in_two_threads_at_once_equal_those_scored_one_after_the_other(
    scored: ScoredStudy, study: Study, model: BundleModel
) -> None:
    series, rois, _ = _validation_inputs(scored, study, model)
    one_by_one = model.predict(series, rois)
    parallel = _TimedModel(model.bundle, threads=1, hip_workers=2)
    parallel.spans = []
    together = parallel.predict(series, rois)
    assert together == one_by_one  # every probability, input and note, bit for bit
    (a, a0, a1), (b, b0, b1) = parallel.spans
    assert a != b and threading.get_ident() not in {a, b}
    assert a0 < b1 and b0 < a1, "the two hips' scoring overlapped in time"
