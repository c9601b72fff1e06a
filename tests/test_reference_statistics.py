"""Reference statistics in the bundle, and the per-study input check that reads them.

A tiny bundle is trained, through the real training run, on six phantom patients of one
site (Siemens 1.5 T). Its ``reference.json`` is listed and hashed in the manifest, read
back typed, and describes the training split: the series' headers (read here again with
pydicom), every selected feature and deep PCA component of the training hips, and the
deployed model's out-of-fold probabilities. A series from another site (Philips 3 T,
finer pixels) is flagged for its field strength and pixel spacing; a training series is
inside its own reference; a bundle without the file is still served and says so.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import special

from model_bundle.bundle import (
    REFERENCE_FILE,
    load_bundle,
    verify_bundle,
    write_bundle,
)
from model_bundle.calibration.site import write_calibrated
from model_bundle.evaluation import PredictionRow
from model_bundle.features import FEATURE_NAMES, SeriesJob, read_cohort, series_rois
from model_bundle.imaging import AcquisitionField, Side, load_series
from model_bundle.monitoring import InputKind, ReferenceStatus
from model_bundle.serving import BundleModel, ModelName
from model_bundle.training import TrainingResult, plan_training, read_train_config, run_training
from onfh_dlr.errors import BundleContentError, BundleFileModifiedError
from phantom.cohort import generate_cohort

# p_threshold 1: six patients give eight training hips, too few for a Mann-Whitney p < 0.05
# on four PCA components; the selection's other steps still run.
TRAIN_YAML = (
    "epochs: 2\nbatch_size: 8\nlasso_folds: 3\ncv_folds: 3\nthreads: 1\nseed: 3\np_threshold: 1.0\n"
)
_COMPUTED = ("created", "device_uid", "files", "format", "format_version", "libraries")


@dataclass(frozen=True)
class Trained:
    bundle: Path
    result: TrainingResult
    jobs: list[SeriesJob]
    philips: list[SeriesJob]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A bundle trained on 6 Siemens 1.5 T patients; one Philips 3 T patient besides."""
    root = tmp_path_factory.mktemp("reference")
    siemens = generate_cohort(
        root / "siemens", cases=6, seed=5, onfh_fraction=0.5, sites=["siemens-1.5t"]
    )
    philips = generate_cohort(root / "philips", cases=1, seed=7, sites=["philips-3t"])
    (root / "train.yaml").write_text(TRAIN_YAML, encoding="utf-8")
    config = read_train_config(root / "train.yaml")
    plan = plan_training(siemens, root / "bundle", config=config)
    run = run_training(plan, synthetic=True, workers=1)
    return Trained(
        run.bundle.directory, run.result, list(read_cohort(siemens)), list(read_cohort(philips))
    )


def _training_hips(trained: Trained) -> list[int]:
    return [int(i) for i in trained.result.train_idx]


def _training_images(trained: Trained) -> list[Path]:
    patients = {trained.result.usable[i].patient_id for i in _training_hips(trained)}
    return sorted({job.image for job in trained.jobs if job.hips[0].get("PatientID") in patients})


def test_training_writes_reference_statistics_the_manifest_names_and_hashes(
    trained: Trained,
) -> None:
    bundle = load_bundle(trained.bundle)
    assert bundle.manifest.reference_statistics == REFERENCE_FILE
    assert REFERENCE_FILE in bundle.manifest.files
    assert verify_bundle(trained.bundle).ok
    reference = bundle.reference()
    assert reference is not None
    assert reference.acquisition is not None and reference.output is not None


def test_the_model_card_states_the_training_acquisition_range(trained: Trained) -> None:
    card = (trained.bundle / "MODEL_CARD.md").read_text(encoding="utf-8")
    line = next(x for x in card.splitlines() if "**Acquisition range.**" in x)
    assert "field strength 1.5 T" in line and "slice thickness 4.5 mm" in line
    assert "SIEMENS" in line and "outside the model's training range" in line


def test_a_changed_reference_file_fails_verification(trained: Trained, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained.bundle, copy)
    data = json.loads((copy / REFERENCE_FILE).read_text())
    data["output"]["positive_rate"] = 0.0 if data["output"]["positive_rate"] else 1.0
    (copy / REFERENCE_FILE).write_text(json.dumps(data))
    report = verify_bundle(copy)
    assert not report.ok
    assert any(p.path == REFERENCE_FILE for p in report.problems)
    with pytest.raises(BundleFileModifiedError, match=r"reference\.json"):
        load_bundle(copy)


def test_a_manifest_naming_an_unlisted_reference_file_is_refused(
    trained: Trained, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained.bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["reference_statistics"] = "elsewhere.json"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = verify_bundle(copy)
    assert any("reference_statistics" in p.message for p in report.problems)


def test_a_reference_file_of_another_schema_is_refused_when_read(
    trained: Trained, tmp_path: Path
) -> None:
    parent = load_bundle(trained.bundle)
    manifest = {k: v for k, v in parent.manifest.as_dict().items() if k not in _COMPUTED}
    files: dict[str, bytes | Path] = {p: parent.path(p) for p in parent.manifest.files}
    raw = json.loads(parent.read_bytes(REFERENCE_FILE))
    raw["schema"] = 99
    files[REFERENCE_FILE] = json.dumps(raw).encode()
    other = write_bundle(tmp_path / "other", manifest, files)
    with pytest.raises(BundleContentError, match="schema 99"):
        other.reference()


def test_the_acquisition_reference_is_what_the_training_series_headers_say(
    trained: Trained,
) -> None:
    reference = load_bundle(trained.bundle).reference()
    assert reference is not None and reference.acquisition is not None
    acquisition = reference.acquisition
    images = _training_images(trained)
    assert acquisition.series == len(images)
    headers = [
        pydicom.dcmread(sorted(image.iterdir())[0], stop_before_pixels=True) for image in images
    ]
    expected = {
        AcquisitionField.FIELD_STRENGTH: [float(h.MagneticFieldStrength) for h in headers],
        AcquisitionField.ECHO_TIME: [float(h.EchoTime) for h in headers],
        AcquisitionField.REPETITION_TIME: [float(h.RepetitionTime) for h in headers],
        AcquisitionField.SLICE_THICKNESS: [float(h.SliceThickness) for h in headers],
        AcquisitionField.PIXEL_SPACING_ROW: [float(h.PixelSpacing[0]) for h in headers],
        AcquisitionField.PIXEL_SPACING_COLUMN: [float(h.PixelSpacing[1]) for h in headers],
        AcquisitionField.ROWS: [float(h.Rows) for h in headers],
        AcquisitionField.COLUMNS: [float(h.Columns) for h in headers],
    }
    for field, values in expected.items():
        dist = acquisition.numeric[field.value]
        assert (dist.count, dist.missing) == (len(images), 0), field
        assert (dist.minimum, dist.maximum) == (min(values), max(values)), field
        assert dist.quantile(50) == pytest.approx(float(np.median(values))), field
    # Siemens' TSE FS has no inversion time: every series lacks it.
    ti = acquisition.numeric[AcquisitionField.INVERSION_TIME.value]
    assert (ti.count, ti.missing) == (0, len(images))
    makers = acquisition.categorical[AcquisitionField.MANUFACTURER.value]
    assert dict(makers.counts) == {str(headers[0].Manufacturer): len(images)}


def test_the_features_reference_covers_every_model_input_on_the_training_hips(
    trained: Trained,
) -> None:
    bundle = load_bundle(trained.bundle)
    reference = bundle.reference()
    assert reference is not None
    result = trained.result
    train = _training_hips(trained)
    selected = {n for key in bundle.manifest.feature_names for n in bundle.feature_names(key)}
    assert selected | set(result.pca.names) == set(reference.features)
    for name in selected - set(result.pca.names):
        values = [result.usable[i].radiomics[FEATURE_NAMES.index(name)] for i in train]  # type: ignore[index]
        dist = reference.features[name]
        assert dist.count == len(train)
        assert dist.quantile(5) == pytest.approx(np.percentile(values, 5), rel=1e-12, abs=1e-12)
        assert dist.maximum == pytest.approx(max(values), rel=1e-12, abs=1e-12)
        assert sum(dist.decile_frequencies) == pytest.approx(1.0)
    assert result.pca_features is not None
    for k, name in enumerate(result.pca.names):
        dist = reference.features[name]
        assert dist.quantile(50) == pytest.approx(float(np.median(result.pca_features[train, k])))


def test_the_output_reference_is_the_deployed_models_out_of_fold_probabilities(
    trained: Trained,
) -> None:
    bundle = load_bundle(trained.bundle)
    reference = bundle.reference()
    assert reference is not None and reference.output is not None
    output = reference.output
    model = trained.result.models["dlr"]
    assert output.model == bundle.deployed_model == "dlr"
    assert output.threshold == bundle.threshold
    oof = model.train_oof_prob
    assert output.probability.count == len(oof) == len(_training_hips(trained))
    assert output.probability.quantile(25) == pytest.approx(np.percentile(oof, 25))
    assert output.positive_rate == pytest.approx(np.mean(oof >= bundle.threshold))


def test_a_series_from_another_site_is_flagged_for_field_strength_and_pixel_spacing(
    trained: Trained,
) -> None:
    model = BundleModel.load(trained.bundle, threads=1)
    job = trained.philips[0]
    series = load_series(job.image)
    flagged = model.check_acquisition(series)
    assert flagged is not None
    names = {o.name for o in flagged}
    assert {"field_strength", "pixel_spacing_row", "pixel_spacing_column"} <= names
    assert "manufacturer" in names
    strength = next(o for o in flagged if o.name == "field_strength")
    assert (strength.value, strength.low, strength.high) == (3.0, 1.5, 1.5)
    assert strength.describe().startswith("field strength 3 T: above the training range")
    roi = next(iter(series_rois(series, job.mask).rois.values()))
    prediction = model.predict_hip(series, roi)
    assert prediction.reference_status is ReferenceStatus.CHECKED
    acquisition = {o.name for o in prediction.out_of_range if o.kind is InputKind.ACQUISITION}
    assert acquisition == names


def test_a_training_series_is_inside_its_own_reference(trained: Trained) -> None:
    model = BundleModel.load(trained.bundle, threads=1)
    image = _training_images(trained)[0]
    job = next(j for j in trained.jobs if j.image == image)
    series = load_series(job.image)
    assert model.check_acquisition(series) == []
    for roi in series_rois(series, job.mask).rois.values():
        prediction = model.predict_hip(series, roi)
        assert prediction.reference_status is ReferenceStatus.CHECKED
        assert prediction.out_of_range == ()


def test_a_bundle_without_reference_statistics_is_served_and_says_so(
    trained: Trained, tmp_path: Path
) -> None:
    parent = load_bundle(trained.bundle)
    manifest = {
        k: v
        for k, v in parent.manifest.as_dict().items()
        if k not in (*_COMPUTED, "reference_statistics")
    }
    files: dict[str, bytes | Path] = {
        p: parent.path(p) for p in parent.manifest.files if p != REFERENCE_FILE
    }
    older = write_bundle(tmp_path / "older", manifest, files)
    assert older.reference() is None
    model = BundleModel(older, threads=1)
    job = trained.philips[0]
    series = load_series(job.image)
    assert model.check_acquisition(series) is None
    roi = next(iter(series_rois(series, job.mask).rois.values()))
    prediction = model.predict_hip(series, roi)
    assert prediction.reference_status is ReferenceStatus.NO_REFERENCE
    assert prediction.out_of_range == ()


def _calibration_rows(patients: int, seed: int) -> list[PredictionRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(patients):
        for side in (Side.RIGHT, Side.LEFT):
            label = int(rng.random() < 0.4)
            z = (1.5 if label else -0.5) + rng.normal(0, 1.0)
            p = float(special.expit(z + 1.0))
            probabilities = {ModelName.RAD: p, ModelName.DL: p, ModelName.DLR: p}
            rows.append(PredictionRow(f"P{i:03d}", side, str(label), probabilities, int(p >= 0.5)))
    return rows


def test_calibration_keeps_the_inputs_reference_and_takes_the_output_from_its_cohort(
    trained: Trained, tmp_path: Path
) -> None:
    parent = load_bundle(trained.bundle)
    rows = _calibration_rows(12, seed=4)
    made = write_calibrated(parent, rows, tmp_path / "calibrated")
    child = made.bundle
    before, after = parent.reference(), child.reference()
    assert before is not None and after is not None and after.output is not None
    assert after.acquisition == before.acquisition
    assert after.features == before.features
    assert "calibration cohort" in after.output.source
    recalibrated = np.array(
        [made.recalibration.apply("dlr", r.probabilities[ModelName.DLR]) for r in rows]
    )
    assert after.output.threshold == child.threshold
    assert after.output.probability.count == len(rows)
    assert after.output.probability.quantile(50) == pytest.approx(np.median(recalibrated))
    assert after.output.positive_rate == pytest.approx(np.mean(recalibrated >= child.threshold))
    assert verify_bundle(child.directory).ok


def test_predictions_csv_and_reference_agree_on_the_training_split(trained: Trained) -> None:
    with (trained.bundle / "predictions.csv").open(newline="") as handle:
        train_rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    reference = load_bundle(trained.bundle).reference()
    assert reference is not None and reference.output is not None
    assert reference.output.probability.count == len(train_rows)


def test_the_sr_and_card_of_a_study_from_another_site_say_it_is_outside_the_training_range(
    trained: Trained,
) -> None:
    from worker.pipeline import score_series

    model = BundleModel.load(trained.bundle, threads=1)
    job = trained.philips[0]
    scored = score_series(job.image, model, seg=job.mask, uid_seed="outside-range")
    study_note = next(n for n in scored.notes if n.startswith("This series is outside"))
    assert "field strength 3 T: above the training range" in study_note
    comments = [
        item.TextValue
        for container in scored.sr_dataset.ContentSequence
        if container.ValueType == "CONTAINER"
        and container.ConceptNameCodeSequence[0].CodeValue == "C0034375"
        for item in container.ContentSequence
    ]
    assert study_note in comments
    assert study_note in scored.card_dataset.ImageComments
    # The training series of the same bundle: nothing to say.
    image = _training_images(trained)[0]
    inside = next(j for j in trained.jobs if j.image == image)
    assert score_series(inside.image, model, seg=inside.mask, uid_seed="inside").notes == ()
