"""Radiologists' verdicts end to end: real listener, worker, Redis, PACS and CLI processes.

The service scores phantom studies and delivers their SRs to the receiving PACS; from
those SRs ``onfh-dlr feedback send`` (a subprocess, as a site runs it) pushes one verdict
per hip by C-STORE to the listener, and ``onfh-dlr feedback export --json`` shows them.
The issue's full size is 10 verdicts (``RELIABILITY_SCALE=full``); reduced, 2 (one study).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from conftest import Scale
from pydicom.uid import generate_uid
from service_harness import SERVICE_AE, CohortMaker, PhantomStudy, Service

from onfh_dlr.state import AssessmentState

FULL_VERDICTS = 10
REDUCED_VERDICTS = 2
# The verdicts given in turn; modify needs a call (the radiologist's own).
VERDICT_ARGS = (["--accept"], ["--reject"], ["--modify", "--call", "present"])


@pytest.fixture(scope="module")
def verdict_count(scale: Scale) -> int:
    return FULL_VERDICTS if scale.full else REDUCED_VERDICTS


def cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onfh_dlr", *args],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def send(service: Service, sr: Path, *args: str) -> subprocess.CompletedProcess[str]:
    to = f"127.0.0.1:{service.port}"
    return cli(service, "feedback", "send", str(sr), *args, "--to", to, "--ae", SERVICE_AE)


def scored_sr(service: Service, study: PhantomStudy) -> Path:
    """Push a study, wait until it is done, and return our SR as the PACS received it."""
    assert set(service.push(study.slices)) == {0}
    job = service.wait_for_job(study.series_uid, {"done"}, timeout=300)
    [sr] = [
        r.path for r in service.srs_received(study.study_uid) if r.sop_instance_uid == job.sr_uid
    ]
    return sr


def test_verdicts_pushed_by_c_store_show_up_in_feedback_export(
    service: Service, phantom_cohort: CohortMaker, verdict_count: int
) -> None:
    studies = phantom_cohort((verdict_count + 1) // 2, 1501).studies
    srs = [scored_sr(service, study) for study in studies]
    jobs_before = {j.id: j.state for j in service.db.jobs(limit=1000)}
    hips = list(itertools.product(srs, ("left", "right")))[:verdict_count]
    given = []
    for (sr, hip), args in zip(hips, itertools.cycle(VERDICT_ARGS), strict=False):
        run = send(service, sr, "--hip", hip, *args, "--observer", "Doe^Jane")
        assert run.returncode == 0, run.stdout + run.stderr
        given.append(args[0].removeprefix("--"))

    run = cli(service, "feedback", "export", "--json")
    assert run.returncode == 0, run.stderr
    exported = json.loads(run.stdout)
    assert len(exported["verdicts"]) == verdict_count
    assert sorted(v["verdict"] for v in exported["verdicts"]) == sorted(given)
    [summary] = exported["summary"]  # one bundle scored every study
    assert summary["hips"] == verdict_count
    assert summary["counts"] == {k: given.count(k) for k in ("accept", "reject", "modify")}
    assert summary["device_uid"]
    calls = exported["verdicts"]
    assert summary["ppv"]["total"] == sum(v["model_call"] == "present" for v in calls)
    assert summary["agreement"]["successes"] == sum(v["agrees"] for v in calls)
    # A verdict scores nothing: no new job, no job changed, no series opened for the SRs.
    assert {j.id: j.state for j in service.db.jobs(limit=1000)} == jobs_before
    assert service.db.series_counts().get("receiving", 0) == 0


def test_an_sr_that_is_not_ours_or_not_an_assessment_is_stored_and_shown_not_recorded(
    service: Service, phantom_cohort: CohortMaker, tmp_path: Path
) -> None:
    [study] = phantom_cohort(1, 1502).studies
    ours = scored_sr(service, study)
    # An assessment of an SR this service never produced (another UID, same study).
    foreign = pydicom.dcmread(ours)
    foreign.SOPInstanceUID = foreign.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    foreign_path = tmp_path / "foreign.dcm"
    foreign.save_as(foreign_path, enforce_file_format=True)
    run = send(service, foreign_path, "--hip", "right", "--accept")
    assert run.returncode == 0, run.stdout + run.stderr  # Success: the SR is kept
    # Our own report sent back to us: a valid SR, but not an assessment.
    assert set(service.push([ours])) == {0}

    kept = {a.referenced_sr_uid or a.sop_instance_uid: a for a in service.db.assessments()}
    not_ours = [a for a in kept.values() if "references no SR this service produced" in a.reason]
    assert len(not_ours) == 1 and not_ours[0].state is AssessmentState.NOT_RECORDED
    assert str(foreign.SOPInstanceUID) in not_ours[0].reason
    echoed = kept[str(pydicom.dcmread(ours).SOPInstanceUID)]
    assert echoed.state is AssessmentState.NOT_RECORDED and "not an assessment" in echoed.reason
    for a in (not_ours[0], echoed):
        assert a.path.is_file()  # stored in the spool, nothing lost
    log = service.full_log("listener")
    assert "stored but not recorded as a verdict" in log
