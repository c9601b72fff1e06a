"""DICOMweb with real peers: Orthanc's DICOMweb plugin pushes a study to the service by
STOW-RS and receives the SR and SEG back by STOW-RS; dicomweb-client as a second sender.

The service (listener + worker processes, ``service`` fixture) serves STOW-RS with a bearer
token and has one destination, ``stow+http://<orthanc>/dicom-web``. Orthanc (Debian
``orthanc`` + ``orthanc-dicomweb``, no DICOM port at all) knows the service as DICOMweb
server ``ONFH`` and sends through its ``/dicom-web/servers/ONFH/stow`` route. With
Orthanc down, the STOW-RS destination is retried, dead-lettered and delivered by an
operator's retry, as a C-STORE destination is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from service_harness import CohortMaker, Service, wait_until
from test_dicomweb import Endpoint
from viewer_harness import DicomWebOrthanc, dicomweb_plugin

from onfh_dlr.broker import free_port

TOKEN = "orthanc-to-onfh-token"
DEPLOY_ORTHANC = Path(__file__).resolve().parents[1] / "deploy" / "orthanc"
FINISHED = {"done", "failed", "dead_letter"}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomWebOrthanc]:
    server = DicomWebOrthanc(tmp_path_factory.mktemp("orthanc-dicomweb"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stow_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def service_settings(orthanc: DicomWebOrthanc, stow_port: int) -> dict[str, str]:
    return {
        "dicomweb_port": str(stow_port),
        "dicomweb_token": TOKEN,
        "destinations": f"stow+{orthanc.url}/dicom-web",
    }


def rest(orthanc: DicomWebOrthanc, method: str, path: str, body: Any = None) -> Any:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(f"{orthanc.url}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=120) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


def modalities(orthanc: DicomWebOrthanc, study_id: str) -> list[str]:
    series = rest(orthanc, "GET", f"/studies/{study_id}/series")
    return sorted(s["MainDicomTags"].get("Modality", "") for s in series)


def orthanc_study_id(orthanc: DicomWebOrthanc, study_uid: str) -> str:
    (found,) = rest(orthanc, "POST", "/tools/lookup", study_uid.encode())
    return str(found["ID"])


def test_orthanc_pushes_a_study_by_stow_rs_and_receives_the_sr_and_seg_by_stow_rs(
    service: Service, orthanc: DicomWebOrthanc, stow_port: int, phantom_cohort: CohortMaker
) -> None:
    (study,) = phantom_cohort(1, 2024, onfh_fraction=1.0).studies
    for path in study.slices:
        orthanc.upload(path)
    study_id = orthanc_study_id(orthanc, study.study_uid)
    rest(
        orthanc,
        "PUT",
        "/dicom-web/servers/ONFH",
        {
            "Url": f"http://127.0.0.1:{stow_port}/",
            "HttpHeaders": {"Authorization": f"Bearer {TOKEN}"},
        },
    )
    rest(orthanc, "POST", "/dicom-web/servers/ONFH/stow", {"Resources": [study_id]})

    job = service.wait_for_job(study.series_uid, FINISHED, timeout=240)
    assert job.state == "done", job.reason
    assert job.result["hips"]["R"]["call"] == 1
    wait_until(
        lambda: modalities(orthanc, study_id) == ["MR", "OT", "SEG", "SR"],  # OT: the card
        60,
        "the SR, SEG and card in Orthanc's study",
    )
    sr_series = next(
        s
        for s in rest(orthanc, "GET", f"/studies/{study_id}/series")
        if s["MainDicomTags"]["Modality"] == "SR"
    )
    (instance,) = sr_series["Instances"]
    tags = rest(orthanc, "GET", f"/instances/{instance}/simplified-tags")
    assert tags["SOPInstanceUID"] == job.sr_uid
    assert tags["StudyInstanceUID"] == study.study_uid
    # The listener counted the instances under the STOW-RS transport.
    log = service.full_log("listener")
    assert f"STOW-RS from 127.0.0.1: {len(study.slices)} of {len(study.slices)}" in log


def test_orthanc_with_the_wrong_token_is_refused_and_nothing_is_stored(
    service: Service, orthanc: DicomWebOrthanc, stow_port: int, phantom_cohort: CohortMaker
) -> None:
    (study,) = phantom_cohort(1, 77, onfh_fraction=0.0).studies
    for path in study.slices[:3]:
        orthanc.upload(path)
    study_id = orthanc_study_id(orthanc, study.study_uid)
    rest(
        orthanc,
        "PUT",
        "/dicom-web/servers/WRONG",
        {
            "Url": f"http://127.0.0.1:{stow_port}/",
            "HttpHeaders": {"Authorization": "Bearer not-the-token"},
        },
    )
    with pytest.raises(urllib.error.HTTPError):
        rest(orthanc, "POST", "/dicom-web/servers/WRONG/stow", {"Resources": [study_id]})
    assert not (service.data_dir / "spool" / study.study_uid).exists()


def test_dicomweb_client_as_second_sender_gets_its_study_scored(
    service: Service, orthanc: DicomWebOrthanc, stow_port: int, phantom_cohort: CohortMaker
) -> None:
    (study,) = phantom_cohort(1, 31, onfh_fraction=0.0).studies
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    client = DICOMwebClient(url=f"http://127.0.0.1:{stow_port}", session=session)
    answer = client.store_instances(
        [pydicom.dcmread(p) for p in study.slices], study_instance_uid=study.study_uid
    )
    assert len(answer.ReferencedSOPSequence) == len(study.slices)
    assert "FailedSOPSequence" not in answer
    job = service.wait_for_job(study.series_uid, FINISHED, timeout=240)
    assert job.state == "done", job.reason
    spooled = sorted(Path(service.data_dir / "spool" / study.study_uid).rglob("*.dcm"))
    assert len(spooled) == len(study.slices)


def restart(orthanc: DicomWebOrthanc) -> None:
    """Start Orthanc again on the same configuration, ports and storage."""
    root = orthanc.log_path.parent
    orthanc._log = orthanc.log_path.open("ab")
    orthanc.process = subprocess.Popen(
        [str(shutil.which("Orthanc")), str(root / "orthanc.json")],
        stdout=orthanc._log,
        stderr=orthanc._log,
    )
    wait_until(orthanc._up, 60, "Orthanc back up")


def test_a_stow_destination_down_is_retried_dead_lettered_and_an_operator_retry_delivers(
    service: Service, orthanc: DicomWebOrthanc, stow_port: int, phantom_cohort: CohortMaker
) -> None:
    (study,) = phantom_cohort(1, 41, onfh_fraction=1.0).studies
    orthanc.stop()
    try:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        client = DICOMwebClient(url=f"http://127.0.0.1:{stow_port}", session=session)
        client.store_instances([pydicom.dcmread(p) for p in study.slices])
        job = service.wait_for_job(study.series_uid, FINISHED, timeout=240)
        assert job.state == "dead_letter", job.reason
        (delivery,) = service.db.deliveries(job.id)
        retries = int(service.env.get("ONFH_DELIVERY_RETRIES", "10"))
        assert delivery.state == "dead_letter" and delivery.attempts == 1 + retries
        assert delivery.destination == f"stow+{orthanc.url}/dicom-web"
        assert "ConnectionError" in delivery.last_error
    finally:
        restart(orthanc)
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "retry", job.id],
        env=service.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    job = service.wait_for_job(study.series_uid, {"done"})
    study_id = orthanc_study_id(orthanc, study.study_uid)
    assert modalities(orthanc, study_id) == ["OT", "SEG", "SR"]  # OT: the result card


# --- the deploy files' Orthanc -------------------------------------------------------------


def test_the_deploy_orthanc_dicomweb_server_sends_with_the_token_from_its_environment(
    tmp_path: Path, phantom_cohort: CohortMaker
) -> None:
    """deploy/orthanc/orthanc.json's DicomWeb server ``ONFH``, as compose runs it: the
    bearer token is ``${ONFH_DICOMWEB_TOKEN}``, which Orthanc fills from its environment."""
    (study,) = phantom_cohort(1, 2024, onfh_fraction=1.0).studies
    token = "deploy-" + os.urandom(8).hex()
    endpoint = Endpoint(tmp_path / "onfh", dicomweb_token=token)
    endpoint.server.start()
    deploy = json.loads((DEPLOY_ORTHANC / "orthanc.json").read_text())
    dicomweb = deploy["DicomWeb"]
    # The compose service name "listener" is this machine here; the rest is as shipped.
    assert dicomweb["Servers"]["ONFH"]["Url"].startswith("http://listener:")
    dicomweb["Servers"]["ONFH"]["Url"] = f"http://127.0.0.1:{endpoint.port}/"
    http_port = free_port()
    config = {
        "StorageDirectory": str(tmp_path / "db"),
        "IndexDirectory": str(tmp_path / "db"),
        "HttpPort": http_port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(dicomweb_plugin())],
        "DicomWeb": dicomweb,
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    with (tmp_path / "orthanc.log").open("wb") as log:
        process = subprocess.Popen(
            [shutil.which("Orthanc") or "Orthanc", str(tmp_path / "orthanc.json")],
            stdout=log,
            stderr=log,
            env={**os.environ, "ONFH_DICOMWEB_TOKEN": token},
        )
        try:
            url = f"http://127.0.0.1:{http_port}"
            wait_until(lambda: _answers(f"{url}/system"), 60, "Orthanc's REST API")
            for path in study.slices:
                urllib.request.urlopen(
                    urllib.request.Request(f"{url}/instances", data=path.read_bytes()), timeout=60
                ).close()
            (found,) = json.loads(
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"{url}/tools/lookup", data=study.study_uid.encode(), method="POST"
                    ),
                    timeout=60,
                ).read()
            )
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{url}/dicom-web/servers/ONFH/stow",
                    data=json.dumps({"Resources": [found["ID"]]}).encode(),
                    method="POST",
                ),
                timeout=120,
            ).close()
        finally:
            process.terminate()
            process.wait(30)
            endpoint.server.stop()
    assert len(endpoint.stored_files()) == len(study.slices)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except OSError:
        return False
    return True
