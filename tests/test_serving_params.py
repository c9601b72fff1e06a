"""Serving reads the radiomics parameters of the bundle it serves, not the package's.

A tiny bundle is trained, through the real training run, on features extracted with a
non-default parameter file (binWidth 20 instead of 10). The bundle carries that file;
served with it, the bundle's radiomics are the non-default ones and its probabilities
are the ones training recorded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from service_harness import CohortMaker

from model_bundle.bundle import MANIFEST_NAME, canonical_json, load_bundle
from model_bundle.features import (
    NormalisationProfile,
    Preprocessing,
    extract_radiomics,
    load_params,
    radiomics_input,
    read_cohort,
    read_params_text,
    series_rois,
)
from model_bundle.imaging import load_series
from model_bundle.serving import BundleModel, ModelName
from model_bundle.training import plan_training, read_train_config, run_training
from onfh_dlr.errors import ConfigurationError

TRAIN_YAML = "epochs: 2\nbatch_size: 8\nlasso_folds: 3\ncv_folds: 3\nthreads: 1\nseed: 3\n"


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, phantom_cohort: CohortMaker
) -> tuple[Path, Path, Path]:
    """(cohort CSV, bundle, parameter file) trained on binWidth-20 radiomics of 12 patients."""
    root = tmp_path_factory.mktemp("params")
    cohort = phantom_cohort(12, 61).csv  # the cohort test_training trains on
    text = read_params_text()
    assert text.count("\n  binWidth: 10\n") == 1
    custom = root / "binwidth20.yaml"
    custom.write_text(text.replace("\n  binWidth: 10\n", "\n  binWidth: 20\n"), encoding="utf-8")
    train_yaml = root / "train.yaml"
    train_yaml.write_text(TRAIN_YAML, encoding="utf-8")
    config = read_train_config(train_yaml, radiomics_params=custom)
    plan = plan_training(cohort, root / "bundle", config=config)
    run = run_training(plan, synthetic=True, workers=2)
    return cohort, run.bundle.directory, custom


def test_training_puts_the_parameter_file_it_used_into_the_bundle(
    trained: tuple[Path, Path, Path],
) -> None:
    _, path, custom = trained
    assert load_bundle(path).radiomics_params_path.read_bytes() == custom.read_bytes()


def test_serving_extracts_radiomics_with_the_bundles_parameter_file(
    trained: tuple[Path, Path, Path],
) -> None:
    cohort, path, _ = trained
    model = BundleModel.load(path)
    assert model.radiomics_names, "the tiny bundle selected no radiomics"
    bundle_params = load_params(load_bundle(path).radiomics_params_path)
    assert bundle_params["setting"]["binWidth"] == 20
    job = read_cohort(cohort)[0]
    series = load_series(job.image)
    differs = 0
    for roi in series_rois(series, job.mask).rois.values():
        served = model.features(series, roi)
        names = model.radiomics_names
        # The bundle's profile decides what PyRadiomics sees (hip region or whole image).
        pre = model.spec.preprocessing
        image, mask, own_params = radiomics_input(series, roi, bundle_params, pre)
        own = extract_radiomics(image, mask, own_params, features=names)
        image, mask, package_params = radiomics_input(series, roi, load_params(), pre)
        package = extract_radiomics(image, mask, package_params, features=names)
        assert {n: served[n] for n in names} == own
        differs += sum(own[n] != package[n] for n in names)
    assert differs > 0, "no selected feature depends on binWidth: the check cannot fail"


def test_serving_reproduces_training_with_a_non_default_parameter_file(
    trained: tuple[Path, Path, Path],
) -> None:
    cohort, path, _ = trained
    model = BundleModel.load(path)
    with (path / "predictions.csv").open(encoding="utf-8", newline="") as fh:
        recorded = {(r["PatientID"], r["Side"]): r for r in csv.DictReader(fh)}
    job = read_cohort(cohort)[0]
    series = load_series(job.image)
    for side, roi in series_rois(series, job.mask).rois.items():
        probabilities = model.predict_hip(series, roi).probabilities
        row = recorded[(job.hips[0]["PatientID"], side.value)]
        # Rad reads radiomics only: the same six decimals training wrote. (DL's and DLR's
        # deep part differs in the last digits: training used float32 weights, the
        # bundle holds float16.)
        assert f"{probabilities[ModelName.RAD]:.6f}" == row["prob_rad"]


def test_the_demo_bundles_preprocessing_is_what_training_uses() -> None:
    demo = load_bundle(Path(__file__).resolve().parents[1] / "model_bundle" / "demo")
    deep_input = demo.preprocessing()["deep_input"]
    assert isinstance(deep_input, dict)
    assert Preprocessing.from_json(deep_input) == Preprocessing()


def test_a_bundle_asking_for_other_preprocessing_is_refused_not_served_differently() -> None:
    with pytest.raises(ConfigurationError, match="interpolator"):
        Preprocessing.from_json({"interpolator": "linear"})
    with pytest.raises(ConfigurationError, match="not a number"):
        Preprocessing.from_json({"region_margin_mm": "40"})
    assert Preprocessing.from_json({"region_margin_mm": 30, "size": 112}) == Preprocessing(
        region_margin_mm=30.0, size=112
    )


def test_a_bundle_without_a_profile_is_served_with_the_papers_normalisation(
    tmp_path: Path,
) -> None:
    # A bundle written before profiles existed (the 1.x demo bundle): the demo bundle's
    # copy with the key removed from preprocessing.json and the manifest vouching for it.
    old = tmp_path / "bundle"
    shutil.copytree(Path(__file__).resolve().parents[1] / "model_bundle" / "demo", old)
    preprocessing = json.loads((old / "preprocessing.json").read_text(encoding="utf-8"))
    assert preprocessing.pop("profile") == "hip"
    data = json.dumps(preprocessing, indent=2).encode()
    (old / "preprocessing.json").write_bytes(data)
    manifest = json.loads((old / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["files"]["preprocessing.json"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    (old / MANIFEST_NAME).write_bytes(canonical_json(manifest))
    served = BundleModel.load(old)
    assert "profile" not in served.bundle.preprocessing()
    assert served.spec.preprocessing.profile is NormalisationProfile.PAPER


def test_a_bundle_asking_for_an_unknown_profile_is_refused() -> None:
    assert NormalisationProfile.from_json({"profile": "hip"}) is NormalisationProfile.HIP
    with pytest.raises(ConfigurationError, match="profile 'site'"):
        NormalisationProfile.from_json({"profile": "site"})
