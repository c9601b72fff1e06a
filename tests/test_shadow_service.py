"""Shadow bundles and ``onfh-dlr rescore``, with real listener, worker, Redis and PACS.

The shadow is the demo bundle recalibrated (``write_calibrated``) on a small made-up
calibration cohort of predictions (no scoring needed: the recalibration only sees the
parent's probabilities), so its threshold and probabilities differ from the deployed
bundle's. One phantom study is pushed: exactly the deployed bundle's outputs reach the
PACS, the shadow's per-hip results are recorded beside the deployed ones and shown on
``/shadow`` (with the status token) and in the worker's ``/metrics``. Then ``rescore``
prints old against new, and ``rescore --deliver`` sends a new SR whose Predecessor
Documents Sequence names the first.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_harness import CohortMaker, PhantomStudy, Service, wait_until

from model_bundle.bundle import load_bundle
from model_bundle.calibration.site import write_calibrated
from model_bundle.evaluation.external import PredictionRow
from model_bundle.imaging import Side
from model_bundle.serving import ModelName
from onfh_dlr.broker import free_port
from onfh_dlr.state import Job

DEMO = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"
STATUS_TOKEN = "test-status-token-" + "8c41e0b7aa"


@pytest.fixture(scope="module")
def shadow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo bundle recalibrated on 12 made-up patients (24 hips)."""
    parent = load_bundle(DEMO)
    rows = []
    for i in range(24):
        p = 0.04 + 0.9 * i / 23
        # Mostly positive above the middle, with two swaps so that neither class is pure.
        label = int(i >= 12) ^ int(i in (5, 17))
        rows.append(
            PredictionRow(
                patient_id=f"P{i // 2:02d}",
                side=Side.RIGHT if i % 2 else Side.LEFT,
                label=str(label),
                probabilities={ModelName(k): p for k in parent.manifest.models},
                call=int(p >= 0.5),
                roi_source="auto",
            )
        )
    out = tmp_path_factory.mktemp("shadow") / "shadow-bundle"
    write_calibrated(parent, rows, out)
    return out


@pytest.fixture(scope="module")
def service_settings(shadow_bundle: Path) -> dict[str, str]:
    return {
        "shadow_bundles": str(shadow_bundle),
        "metrics_port": str(free_port()),
        "worker_metrics_port": str(free_port()),
        "status_token": STATUS_TOKEN,
    }


@pytest.fixture(scope="module")
def scored(service: Service, phantom_cohort: CohortMaker) -> tuple[PhantomStudy, Job]:
    """One phantom study pushed and done."""
    study = phantom_cohort(1, 73).studies[0]
    assert set(service.push(study.slices)) == {0}
    job = service.wait_for_job(study.series_uid, {"done"}, timeout=300)
    return study, job


def get(service: Service, role: str, path: str, token: str | None = None) -> tuple[int, str]:
    key = "ONFH_METRICS_PORT" if role == "listener" else "ONFH_WORKER_METRICS_PORT"
    url = f"http://127.0.0.1:{service.env[key]}{path}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onfh_dlr", *args],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def device_uids(path: Path) -> set[str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        str(i.DeviceUID) for i in ds.get("ContributingEquipmentSequence", []) if "DeviceUID" in i
    }


def test_a_shadow_bundle_scores_silently_and_its_calls_are_recorded_beside_the_deployed(
    service: Service, scored: tuple[PhantomStudy, Job], shadow_bundle: Path
) -> None:
    study, job = scored
    shadow_uid = load_bundle(shadow_bundle).manifest.device_uid
    deployed_uid = load_bundle(DEMO).manifest.device_uid
    # Exactly the deployed SR arrives, and nothing the PACS holds comes from the shadow.
    assert service.srs_at_pacs(study.study_uid) == {job.sr_uid}
    received = [r for r in service.pacs.received if r.study_uid == study.study_uid]
    assert received
    for obj in received:
        assert shadow_uid not in device_uids(obj.path)
        assert deployed_uid in device_uids(obj.path)
    # Per hip, the shadow's probability and call beside the deployed ones.
    wait_until(lambda: len(service.db.shadow_results()) == 2, 60, "the shadow results")
    results = {r.side: r for r in service.db.shadow_results()}
    assert set(results) == {"R", "L"}
    for side, r in results.items():
        hip = job.result["hips"][side]
        assert r.job_id == job.id and r.bundle.device_uid == shadow_uid
        assert r.error == "" and r.probability is not None and r.call is not None
        assert r.deployed_probability == pytest.approx(hip["probability"])
        assert r.deployed_call == hip["call"]
        assert r.call == int(r.probability >= load_bundle(shadow_bundle).manifest.threshold)
    # The recalibration moved the probabilities.
    assert any(
        not math.isclose(r.probability or 0, r.deployed_probability or 0) for r in results.values()
    )


def test_the_shadow_page_and_metrics_show_agreement_per_bundle(
    service: Service, scored: tuple[PhantomStudy, Job], shadow_bundle: Path
) -> None:
    manifest = load_bundle(shadow_bundle).manifest
    wait_until(lambda: len(service.db.shadow_results()) == 2, 60, "the shadow results")
    results = service.db.shadow_results()
    agree = sum(bool(r.agrees) for r in results)
    assert get(service, "listener", "/shadow")[0] == 401
    status, page = get(service, "listener", "/shadow", token=STATUS_TOKEN)
    assert status == 200, page
    assert manifest.version in page and f"{agree}/2" in page
    for r in results:
        if not r.agrees:
            assert f"/series/{r.series_uid}" in page
    status, text = get(service, "worker", "/metrics")
    assert status == 200
    bundle = {"name": manifest.name, "version": manifest.version, "device_uid": manifest.device_uid}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def sample(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted((bundle | labels).items()))))

    assert sample("onfh_shadow_agreement") == pytest.approx(agree / 2)
    assert (sample("onfh_shadow_hips_total", outcome="agree") or 0.0) == agree
    assert (sample("onfh_shadow_hips_total", outcome="disagree") or 0.0) == 2 - agree


def test_rescore_prints_old_and_new_and_delivers_a_superseding_sr_only_when_asked(
    service: Service, scored: tuple[PhantomStudy, Job], shadow_bundle: Path
) -> None:
    study, job = scored
    wait_until(lambda: len(service.db.shadow_results()) == 2, 60, "the shadow results")
    shadow = {r.side: r for r in service.db.shadow_results()}
    bundle = ("--bundle", str(shadow_bundle))
    done = cli(service, "rescore", "--series", study.series_uid, *bundle, "--json")
    assert done.returncode == 0, done.stderr
    [series] = json.loads(done.stdout)["series"]
    assert series["job"] == job.id and series["new_job"] is None
    for side, hip in series["hips"].items():
        assert hip["old_probability"] == pytest.approx(job.result["hips"][side]["probability"])
        # The same ROIs as the shadow run: the same numbers.
        assert hip["new_probability"] == pytest.approx(shadow[side].probability)
        assert hip["new_call"] == shadow[side].call
    assert service.srs_at_pacs(study.study_uid) == {job.sr_uid}  # nothing delivered
    assert any(e.stage == "rescored" for e in service.db.events(study.series_uid))
    table = cli(service, "rescore", "--series", study.series_uid, *bundle)
    assert table.returncode == 0 and "Old p" in table.stdout, table.stderr

    sent = cli(service, "rescore", "--series", study.series_uid, *bundle, "--deliver", "--json")
    assert sent.returncode == 0, sent.stderr
    [series] = json.loads(sent.stdout)["series"]
    assert series["delivery"] == "done"
    new_job = service.db.job(series["new_job"])
    assert new_job is not None and new_job.state == "done"
    assert new_job.supersedes == job.id and new_job.generation == job.generation + 1
    assert service.srs_at_pacs(study.study_uid) == {job.sr_uid, new_job.sr_uid}
    [path] = [
        r.path
        for r in service.srs_received(study.study_uid)
        if r.sop_instance_uid == new_job.sr_uid
    ]
    sr = hd.sr.srread(path)
    predecessors = {
        str(instance.ReferencedSOPInstanceUID)
        for study_item in sr.PredecessorDocumentsSequence
        for series_item in study_item.ReferencedSeriesSequence
        for instance in series_item.ReferencedSOPSequence
    }
    assert predecessors == {job.sr_uid}
    assert load_bundle(shadow_bundle).manifest.device_uid in device_uids(path)
