"""Shadow bundles and re-scoring without a running service: settings, the state DB's
shadow table and re-scoring job, the status page's summary, and ``rescore``'s refusals."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from listener.status_page import shadow_summary
from onfh_dlr.errors import StateDBError
from onfh_dlr.settings import load_settings
from onfh_dlr.state import Job, ShadowBundleId, ShadowResult, StateDB
from worker.shadow import load_shadow_bundles

SHADOW = ShadowBundleId("demo", "1.0.0+cal1", "1.2.3.4")


def test_shadow_bundles_are_a_comma_list_made_absolute(tmp_path: Path) -> None:
    settings = load_settings(None, {"ONFH_SHADOW_BUNDLES": "cand, /opt/bundles/other"})
    assert settings.shadow_bundles == [Path.cwd() / "cand", Path("/opt/bundles/other")]
    config = tmp_path / "onfh.yaml"
    config.write_text("shadow_bundles: [bundles/a]\n")
    assert load_settings(config, {}).shadow_bundles == [tmp_path / "bundles" / "a"]
    assert load_settings(None, {}).shadow_bundles == []


def _result(side: str, shadow: int | None, deployed: int, p: float, dp: float) -> ShadowResult:
    return ShadowResult(
        job_id="j",
        series_uid="1.2",
        side=side,
        bundle=SHADOW,
        probability=None if shadow is None else p,
        call=shadow,
        deployed_probability=dp,
        deployed_call=deployed,
        error="" if shadow is not None else "boom",
    )


def test_shadow_summary_counts_agreement_kappa_and_mean_abs_delta() -> None:
    results = [
        _result("R", 1, 1, 0.8, 0.7),
        _result("L", 0, 0, 0.2, 0.2),
        _result("R", 1, 0, 0.6, 0.4),
        _result("L", 0, 0, 0.1, 0.3),
        _result("R", None, 1, 0.0, 0.9),  # the shadow failed: counted apart
    ]
    summary = shadow_summary(SHADOW, results)
    assert (summary.hips, summary.agree, summary.failed) == (4, 3, 1)
    # Observed 3/4; by chance 1/2 * 1/4 + 1/2 * 3/4 = 1/2; kappa = (3/4 - 1/2) / (1/2).
    assert summary.kappa == pytest.approx(0.5)
    assert summary.mean_abs_delta == pytest.approx((0.1 + 0.0 + 0.2 + 0.2) / 4)
    same = shadow_summary(SHADOW, [_result("R", 0, 0, 0.1, 0.2)])
    assert same.kappa is None and same.agree == 1  # kappa is 0/0 when all calls are one


def test_a_shadow_bundle_that_does_not_load_is_left_out_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert load_shadow_bundles([tmp_path / "missing"]) == []
    assert "shadow bundle" in caplog.text and "missing" in caplog.text


def _scored_job(db: StateDB, tmp_path: Path, series_uid: str = "1.2.3") -> Job:
    now = time.time()
    db.series_received(series_uid=series_uid, study_uid="1.2", instances=3, at=now)
    job_id = db.admit_series(series_uid, tmp_path / "spool" / series_uid)
    db.start_job(job_id)
    sr = tmp_path / "SR_1.dcm"
    db.job_scored(
        job_id,
        sr_path=sr,
        seg_path=None,
        sr_uid="9.9.1",
        result={"hips": {"R": {"probability": 0.4, "call": 0}}},
        destinations=[],
    )
    job = db.job(job_id)
    assert job is not None
    return job


def test_shadow_results_are_stored_per_job_bundle_and_hip_and_replaced_by_a_rerun(
    tmp_path: Path,
) -> None:
    db = StateDB.for_settings(None, tmp_path)
    job = _scored_job(db, tmp_path)
    first = ShadowResult(job.id, job.series_uid, "R", SHADOW, 0.7, 1, 0.4, 0, scored_at=1.0)
    db.record_shadow([first], event="shadow demo: R disagree")
    db.record_shadow([replace(first, probability=0.3, call=0)])
    [stored] = db.shadow_results()
    assert (stored.probability, stored.call, stored.agrees) == (0.3, 0, True)
    assert db.shadow_bundles() == [SHADOW]
    assert [e.stage for e in db.events(job.series_uid)].count("shadow") == 1
    assert db.job(job.id) == job  # the job itself is untouched


def test_a_rescore_job_is_the_next_generation_and_its_sr_supersedes(tmp_path: Path) -> None:
    db = StateDB.for_settings(None, tmp_path)
    job = _scored_job(db, tmp_path)
    new = db.rescore_job(job.series_uid, "rescored with demo 2")
    assert (new.state, new.generation, new.supersedes) == ("running", job.generation + 1, job.id)
    assert new.series_dir == job.series_dir
    assert db.previous_sr(new) == job.sr_path
    assert db.job(job.id).state == "superseded"  # type: ignore[union-attr]
    assert "rescored" in [e.stage for e in db.events(job.series_uid)]
    with pytest.raises(StateDBError):
        db.rescore_job("no.such.series", "x")


def test_rescore_of_a_purged_series_says_it_was_purged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = StateDB.for_settings(None, data)
    job = _scored_job(db, tmp_path)
    db.mark_purged(job.series_uid, "retention")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONFH_")}
    env["ONFH_DATA_DIR"] = str(data)
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "rescore", "--series", job.series_uid],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1
    assert "purged" in run.stderr and "cannot be re-scored" in run.stderr
    both = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "rescore", "--series", "x", "--last", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_rescore_last_n_chooses_every_series_of_the_n_newest_studies(tmp_path: Path) -> None:
    from onfh_dlr.cli.rescore import _targets

    db = StateDB.for_settings(None, tmp_path)
    for series_uid, study_uid in (("1.1", "9.1"), ("2.1", "9.2"), ("2.2", "9.2")):
        db.series_received(series_uid=series_uid, study_uid=study_uid, instances=1, at=time.time())
        db.admit_series(series_uid, tmp_path / series_uid)
        time.sleep(0.01)  # distinct creation times
    assert {j.series_uid for j in _targets(db, series=None, study=None, last=1)} == {"2.1", "2.2"}
    assert len(_targets(db, series=None, study=None, last=2)) == 3
    assert [j.series_uid for j in _targets(db, series=None, study="9.1", last=None)] == ["1.1"]
    assert [j.series_uid for j in _targets(db, series="2.2", study=None, last=None)] == ["2.2"]
