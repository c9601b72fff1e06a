"""The stack as compose wires it, minus containers: Orthanc routes a study to the service.

Orthanc (Debian package) runs with ``deploy/orthanc/orthanc.json``, its paths, ports and
the listener's address adjusted for localhost. A phantom study is uploaded to Orthanc's
REST API and sent to the listener as a PACS routes it (Orthanc's C-STORE SCU, calling AE
ORTHANC); the service's SR and SEG come back to Orthanc's C-STORE SCP and are read
through its REST API.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_harness import CohortMaker, Service, wait_until

from onfh_dlr.broker import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def orthanc_binary() -> str:
    found = shutil.which("Orthanc")
    if found is None:
        raise RuntimeError("Orthanc (Debian package orthanc) is required: make system-deps")
    return found


class Orthanc:
    """An Orthanc process configured from the deploy file."""

    def __init__(self, root: Path, listener_port: int) -> None:
        config = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text())
        self.http_port, self.dicom_port = free_port(), free_port()
        config.update(
            StorageDirectory=str(root / "db"),
            IndexDirectory=str(root / "db"),
            HttpPort=self.http_port,
            DicomPort=self.dicom_port,
            RemoteAccessAllowed=False,
            Plugins=[],
        )
        ae, _host, _port = config["DicomModalities"]["ONFH"]
        config["DicomModalities"]["ONFH"] = [ae, "127.0.0.1", listener_port]
        self.user, self.password = next(iter(config["RegisteredUsers"].items()))
        root.mkdir(parents=True, exist_ok=True)
        (root / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log = (root / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [orthanc_binary(), str(root / "orthanc.json")], stdout=self.log, stderr=self.log
        )
        wait_until(self._up, 60, "Orthanc's REST API")

    def _up(self) -> bool:
        try:
            self.get("/system")
        except OSError:
            return False
        return True

    def _request(self, path: str, data: bytes | None = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str) -> Any:
        return self._request(path)

    def post(self, path: str, body: bytes) -> Any:
        return self._request(path, body)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def listener_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, listener_port: int) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), listener_port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service_settings(orthanc: Orthanc, listener_port: int) -> dict[str, str]:
    # Listener and Orthanc know each other as in deploy/compose.yaml: the listener
    # accepts only ORTHANC and sends its results to ORTHANC.
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "ONFH_ALLOWED_CALLING_AES" in compose and "ORTHANC@orthanc:4242" in compose
    return {
        "port": str(listener_port),
        "allowed_calling_aes": "ORTHANC,TEST_MR",
        "destinations": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
    }


def test_orthanc_routes_a_study_to_the_listener_and_receives_the_sr_and_seg(
    service: Service, orthanc: Orthanc, phantom_cohort: CohortMaker
) -> None:
    (study,) = phantom_cohort(1, 2024, onfh_fraction=1.0).studies
    for path in study.slices:
        orthanc.post("/instances", path.read_bytes())
    (study_id,) = orthanc.get("/studies")
    answer = orthanc.post("/modalities/ONFH/store", json.dumps([study_id]).encode())
    assert answer.get("FailedInstancesCount", 0) == 0, answer

    def modalities() -> list[str]:
        series = orthanc.get(f"/studies/{study_id}/series")
        return sorted(s["MainDicomTags"].get("Modality", "") for s in series)

    # OT: the result card, delivered with the SR and SEG by default.
    wait_until(lambda: modalities() == ["MR", "OT", "SEG", "SR"], 120, "the SR, SEG and card")
    (job,) = service.db.jobs(limit=10)
    # Orthanc may show the SR a moment before the worker records the delivery.
    job = service.wait_for_job(job.series_uid, {"done", "failed", "dead_letter"})
    assert job.state == "done" and job.result["hips"]["R"]["call"] == 1
    sr_series = next(
        s
        for s in orthanc.get(f"/studies/{study_id}/series")
        if s["MainDicomTags"]["Modality"] == "SR"
    )
    (instance,) = sr_series["Instances"]
    tags = orthanc.get(f"/instances/{instance}/simplified-tags")
    assert tags["SOPInstanceUID"] == job.sr_uid
    assert "NOT FOR CLINICAL USE" in tags["SeriesDescription"]
