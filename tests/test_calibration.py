"""Site calibration: the recalibration fit, the calibrated bundle's lineage and integrity.

The fit is checked on synthetic scores with known calibration; the bundle tests
recalibrate the shipped demo bundle from synthetic prediction rows (no scoring), so they
run in seconds. The end-to-end run through the CLI is ``test_calibrate_cli.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import special

from model_bundle.bundle import load_bundle, verify_bundle
from model_bundle.calibration import (
    CALIBRATION_FILE,
    CalibrationError,
    ModelRecalibration,
    Recalibration,
    ThresholdRule,
    fit_recalibration,
    sensitivity_rule_note,
)
from model_bundle.calibration.fit import sensitivity_threshold
from model_bundle.calibration.recalibration import compose
from model_bundle.calibration.site import REPORT_FILE, write_calibrated
from model_bundle.evaluation import PredictionRow
from model_bundle.imaging import Side
from model_bundle.serving import BundleModel, ModelName
from onfh_dlr.errors import BundleError

DEMO = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"


def _synthetic(
    n: int, intercept: float, slope: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Scores whose true calibration is ``logit P(y=1) = intercept + slope * logit p``."""
    rng = np.random.default_rng(seed)
    logit_p = rng.normal(0.0, 2.0, n)
    truth = special.expit(intercept + slope * logit_p)
    y = (rng.random(n) < truth).astype(np.int64)
    return y, special.expit(logit_p)


def test_recalibration_parameters_are_recovered_from_synthetic_scores() -> None:
    y, p = _synthetic(4000, intercept=1.2, slope=0.6, seed=1)
    fitted = fit_recalibration(y, {"dlr": p}, patients=2000)
    model = fitted.models["dlr"]
    assert model.method == "intercept+slope"
    assert model.intercept == pytest.approx(1.2, abs=0.15)
    assert model.slope == pytest.approx(0.6, abs=0.06)


def test_recalibrated_probabilities_are_calibrated_and_rank_preserving() -> None:
    y, p = _synthetic(4000, intercept=-1.5, slope=1.8, seed=2)
    model = fit_recalibration(y, {"dlr": p}, patients=2000).models["dlr"]
    q = np.array([model.apply(float(v)) for v in p])
    assert abs(q.mean() - y.mean()) < 0.02
    assert (np.argsort(q, kind="stable") == np.argsort(p, kind="stable")).all()


def test_separated_scores_fall_back_to_intercept_only() -> None:
    y = np.array([0] * 10 + [1] * 10, dtype=np.int64)
    p = np.concatenate([np.linspace(0.5, 0.7, 10), np.linspace(0.8, 0.95, 10)])
    fitted = fit_recalibration(y, {"dlr": p}, patients=10)
    assert fitted.models["dlr"].method == "intercept"
    assert fitted.models["dlr"].slope == 1.0
    # Youden on the recalibrated scores separates the two groups.
    q = np.array([fitted.apply("dlr", float(v)) for v in p])
    assert ((q >= fitted.thresholds["dlr"]) == (y == 1)).all()


def test_sensitivity_rule_reaches_the_target_with_the_highest_threshold() -> None:
    y, p = _synthetic(400, intercept=0.0, slope=1.0, seed=3)
    fitted = fit_recalibration(
        y, {"dlr": p}, patients=200, rule=ThresholdRule.SENSITIVITY, target_sensitivity=0.9
    )
    q = np.array([fitted.apply("dlr", float(v)) for v in p])
    t = fitted.thresholds["dlr"]
    sens = float(np.mean(q[y == 1] >= t))
    assert sens >= 0.9
    # One positive fewer called and the target is missed: no higher threshold reaches it.
    assert np.sum(q[y == 1] >= t) - 1 < 0.9 * np.sum(y == 1)


def test_the_sensitivity_rule_says_when_it_must_keep_every_onfh_hip() -> None:
    # 0.9 of 9 rounds up to 9: all of them; of 10 it is 9, one may be left out.
    note = sensitivity_rule_note(9, 0.9)
    assert note is not None and "9 ONFH hips" in note and "at least 10" in note
    assert sensitivity_rule_note(10, 0.9) is None
    assert sensitivity_rule_note(3, 0.5) is None  # 0.5 of 3 needs 2
    assert sensitivity_rule_note(5, 1.0) is None  # asked for every one: nothing hidden
    # And the rule does what the note says: with 9 ONFH hips, the threshold is below all.
    rng = np.random.default_rng(3)
    y = rng.permutation(np.array([1] * 9 + [0] * 11, dtype=np.int64))
    p = rng.uniform(0.05, 0.95, 20)
    assert sensitivity_threshold(y, p, 0.9) <= p[y == 1].min()


def test_fewer_than_ten_patients_are_refused() -> None:
    y, p = _synthetic(18, intercept=0.0, slope=1.0, seed=4)
    with pytest.raises(CalibrationError, match="at least 10"):
        fit_recalibration(y, {"dlr": p}, patients=9)


def test_a_single_class_is_refused() -> None:
    p = np.linspace(0.1, 0.9, 20)
    with pytest.raises(CalibrationError, match="single class"):
        fit_recalibration(np.zeros(20, dtype=np.int64), {"dlr": p}, patients=10)


def test_a_reversed_ranking_is_refused_as_not_monotone() -> None:
    y, p = _synthetic(400, intercept=0.0, slope=-1.0, seed=5)
    with pytest.raises(CalibrationError, match="not positive"):
        fit_recalibration(y, {"dlr": p}, patients=200)


def test_a_non_positive_slope_cannot_be_stored() -> None:
    with pytest.raises(ValueError, match="monotone"):
        ModelRecalibration(0.0, 0.0, "intercept+slope")


def test_composed_recalibrations_equal_applying_both() -> None:
    first, then = ModelRecalibration(0.5, 0.8, "a"), ModelRecalibration(-1.0, 1.5, "b")
    both = compose(first, then)
    for p in (0.01, 0.3, 0.7, 0.99):
        assert both.apply(p) == pytest.approx(then.apply(first.apply(p)), abs=1e-12)


def _rows(patients: int, seed: int) -> list[PredictionRow]:
    """Prediction rows as the demo bundle gives another site: ranked well, shifted up."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(patients):
        for side in (Side.RIGHT, Side.LEFT):
            label = int(rng.random() < 0.4)
            z = (1.5 if label else -0.5) + rng.normal(0, 1.0)
            p = float(special.expit(z + 1.0))
            rows.append(
                PredictionRow(
                    f"P{i:03d}",
                    side,
                    str(label),
                    {ModelName.RAD: p, ModelName.DL: float(special.expit(z)), ModelName.DLR: p},
                    call=int(p >= 0.35),
                    roi_source="auto",
                )
            )
    rows.append(PredictionRow("P999", Side.LEFT, "1", reason="no femoral head"))
    return rows


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    write_calibrated(load_bundle(DEMO), _rows(12, seed=6), out)
    return out


def test_calibrated_bundle_records_its_parent_and_cohort(calibrated: Path) -> None:
    parent, child = load_bundle(DEMO), load_bundle(calibrated)
    lineage = child.manifest.calibration
    assert lineage is not None
    assert child.device_uid != parent.device_uid
    assert lineage.parent_device_uid == parent.device_uid
    digest = hashlib.sha256((DEMO / "manifest.json").read_bytes()).hexdigest()
    assert lineage.parent_manifest_sha256 == digest
    assert (lineage.cohort_patients, lineage.cohort_hips) == (12, 24)
    assert lineage.parameters == CALIBRATION_FILE
    assert child.manifest.version.startswith(parent.manifest.version + "+calibrated.")
    site = child.manifest.metrics["site_calibration"]
    assert isinstance(site, dict)
    after = site["after"]
    assert isinstance(after, dict) and set(after) == {"rad", "dl", "dlr"}
    # The cohort's metrics before and after, at the thresholds, not AUC alone.
    for when in ("before", "after"):
        by_model = site[when]
        assert isinstance(by_model, dict)
        for model in by_model.values():
            assert isinstance(model, dict), by_model
            assert set(model) == {"auc", "sensitivity", "specificity"}, by_model
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in model.values())
    params = Recalibration.from_json(json.loads((calibrated / CALIBRATION_FILE).read_text()))
    assert child.threshold == params.thresholds["dlr"]
    metrics = json.loads((calibrated / "metrics.json").read_text())
    assert metrics["thresholds"] == dict(params.thresholds)
    assert "## Site calibration" in (calibrated / "MODEL_CARD.md").read_text()
    report = (calibrated / REPORT_FILE).read_text()
    assert "Calibration before" in report and "Calibration after" in report


def test_calibrated_bundle_passes_verify_and_keeps_the_parents_model(calibrated: Path) -> None:
    assert verify_bundle(calibrated).ok
    parent = load_bundle(DEMO).manifest.files
    child = load_bundle(calibrated).manifest.files
    for path in ("resnet18.safetensors", "models/dlr/classifier.json", "preprocessing.json"):
        assert child[path] == parent[path]


def test_tampered_recalibration_is_detected(calibrated: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(calibrated, copy)
    params = json.loads((copy / CALIBRATION_FILE).read_text())
    params["models"]["dlr"]["intercept"] -= 3.0
    (copy / CALIBRATION_FILE).write_text(json.dumps(params))
    assert not verify_bundle(copy).ok
    with pytest.raises(BundleError, match=r"calibration\.json"):
        load_bundle(copy)


def test_tampered_lineage_is_detected(calibrated: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(calibrated, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["calibration"]["parent_device_uid"] = "not a uid"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="parent_device_uid"):
        load_bundle(copy)


def test_serving_applies_the_recalibration(calibrated: Path) -> None:
    parent = BundleModel(load_bundle(DEMO))
    child = BundleModel(load_bundle(calibrated))
    params = child.recalibration
    assert params is not None and parent.recalibration is None
    values = {n: 0.0 for n in parent.radiomics_names}
    # Feature values of a hip: any finite values give each model's raw probability.
    from model_bundle.features import DEEP_FEATURE_NAMES

    values |= {n: 0.0 for n in DEEP_FEATURE_NAMES}
    raw = parent.probabilities(values)
    served = child.probabilities(values)
    for key, p in raw.items():
        assert served[key] == pytest.approx(params.apply(key.value, p), abs=1e-12)
        assert not math.isclose(served[key], p)
