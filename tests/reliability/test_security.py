"""Security at service level: DICOM TLS, the address allow-list, no pickle, a tampered
bundle, and logs without secrets or patient data.

Real processes (Redis, listener, worker, a receiving PACS; see ``service_harness``) under
one module-wide service whose listener speaks only TLS and requires client certificates
from the test's own CA (generated with the ``openssl`` CLI); DCMTK ``storescu`` is the
modality. Tests that need other settings restart a process with them. Each test prints
how many cases it ran and how many studies were lost (none).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from service_harness import SERVICE_AE, CohortMaker, PhantomStudy, Service, wait_until

from onfh_dlr.broker import free_port
from onfh_dlr.queue import QUEUE, SCORE_TASK, make_celery, send

REPO = Path(__file__).resolve().parents[2]
CALLING_AE = "STORESCU"
FINISHED = {"done", "failed", "dead_letter"}
ADMIN_TOKEN = "adm-" + os.urandom(16).hex()
STATUS_TOKEN = "sta-" + os.urandom(16).hex()


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} ({package}) is required: run `make system-deps`")
    return path


# --- PKI ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from a CA the listener does not trust
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [tool("openssl", "openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def _make_ca(name: str, d: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_leaf(name: str, ca: str, usage: str, san: str, d: Path) -> None:
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\nsubjectAltName={san}\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("pki")
    _make_ca("ca", d)
    _make_ca("rogue-ca", d)
    _make_leaf("server", "ca", "serverAuth", "DNS:localhost,IP:127.0.0.1", d)
    _make_leaf("client", "ca", "clientAuth", "DNS:modality.example", d)
    _make_leaf("rogue", "rogue-ca", "clientAuth", "DNS:rogue.example", d)
    return Certs(
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "client.pem",
        d / "client.key",
        d / "rogue.pem",
        d / "rogue.key",
    )


# --- studies and the service --------------------------------------------------------------------


@pytest.fixture(scope="module")
def studies(phantom_cohort: CohortMaker) -> list[PhantomStudy]:
    return phantom_cohort(5, 5100).studies


@pytest.fixture(scope="module")
def service_settings(certs: Certs) -> dict[str, str]:
    return {
        "tls_cert": str(certs.server_cert),
        "tls_key": str(certs.server_key),
        "tls_ca": str(certs.ca),
        "allowed_calling_aes": CALLING_AE,
        "admin_token": ADMIN_TOKEN,
        "status_token": STATUS_TOKEN,
        "metrics_port": str(free_port()),
        "worker_metrics_port": str(free_port()),
        "series_timeout": "3",
    }


def storescu(
    svc: Service,
    files: list[Path],
    tls: list[str],
    calling_ae: str = CALLING_AE,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool("storescu", "dcmtk"),
            *("-aet", calling_ae, "-aec", SERVICE_AE, "-to", "10", *tls),
            *("127.0.0.1", str(svc.port), *map(str, files)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mutual_tls(certs: Certs) -> list[str]:
    return ["+tls", str(certs.client_key), str(certs.client_cert), "+cf", str(certs.ca)]


def in_spool(svc: Service, study: PhantomStudy) -> int:
    return len(list((svc.data_dir / "spool" / study.study_uid).rglob("*.dcm")))


# --- DICOM TLS --------------------------------------------------------------------------------


def test_tls_push_is_scored_and_plain_certless_and_foreign_clients_are_refused(
    service: Service, certs: Certs, studies: list[PhantomStudy]
) -> None:
    study, other = studies[0], studies[4]
    one = other.slices[:1]
    stored_before = in_spool(service, other)
    refused = {
        "plain TCP": storescu(service, one, []),
        "TLS without a client certificate": storescu(service, one, ["+tla", "+cf", str(certs.ca)]),
        "TLS with a certificate from another CA": storescu(
            service,
            one,
            ["+tls", str(certs.rogue_key), str(certs.rogue_cert), "+cf", str(certs.ca)],
        ),
        "TLS, calling AE not allowed": storescu(service, one, mutual_tls(certs), "INTRUDER"),
    }
    for case, run in refused.items():
        assert run.returncode != 0, f"{case} was accepted:\n{run.stdout}{run.stderr}"
    assert in_spool(service, other) == stored_before  # nothing of it reached the spool

    run = storescu(service, study.slices, mutual_tls(certs))
    assert run.returncode == 0, run.stdout + run.stderr
    job = service.wait_for_job(study.series_uid, FINISHED)
    assert job.state == "done", job.reason
    lost = 0 if service.srs_at_pacs(study.study_uid) == {job.sr_uid} else 1
    print(
        f"TLS: {len(refused) + 1} cases ({len(refused)} refused as they must be, 1 mutual-TLS "
        f"push of {len(study.slices)} instances scored), {lost} studies lost"
    )
    assert lost == 0
    assert "TLS on, client certificates required" in service.full_log("listener")


# --- address allow-list -------------------------------------------------------------------------


def test_the_address_allow_list_refuses_other_peers_and_accepts_listed_networks(
    service: Service, certs: Certs, studies: list[PhantomStudy]
) -> None:
    probe = studies[4].slices[:1]  # one slice: it closes into a job that fails, unused
    probe_name = pydicom.dcmread(probe[0], stop_before_pixels=True).SOPInstanceUID + ".dcm"
    try:
        service.restart_listener(allowed_hosts="10.255.255.1")
        refused = storescu(service, probe, mutual_tls(certs))
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert not list(service.data_dir.glob(f"spool/*/*/{probe_name}"))
        assert "refused connection from 127.0.0.1: not in allowed_hosts" in service.full_log(
            "listener"
        )
        service.restart_listener(allowed_hosts="192.0.2.0/24,127.0.0.0/8")
        accepted = storescu(service, probe, mutual_tls(certs))
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        assert len(list(service.data_dir.glob(f"spool/*/*/{probe_name}"))) == 1
        print("allowed_hosts: 2 cases (10.255.255.1 refused us, 127.0.0.0/8 accepted), 0 lost")
    finally:
        service.restart_listener(allowed_hosts=None)


# --- no pickle ----------------------------------------------------------------------------------


class _Mkdir:
    """Unpickling this runs ``os.mkdir(path)``: the proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.path,))


def test_the_worker_refuses_pickled_task_messages(
    service: Service, studies: list[PhantomStudy], tmp_path: Path
) -> None:
    study = studies[2]
    # No listener meanwhile: its sweeper would send the pending job itself (as JSON).
    service.stop_process("listener")
    try:
        db = service.db
        db.series_received(
            series_uid=study.series_uid,
            study_uid=study.study_uid,
            instances=len(study.slices),
            at=time.time(),
            modality="MR",
        )
        job_id = db.admit_series(study.series_uid, study.slices[0].parent)
        marker = tmp_path / "unpickled"
        sender = make_celery(service.redis.url)
        sender.conf.accept_content = ["json", "pickle"]  # the *sending* side only
        messages = [[job_id], [job_id, _Mkdir(marker)]]
        for args in messages:
            sender.send_task(SCORE_TASK, args=args, queue=QUEUE, serializer="pickle")
        wait_until(
            lambda: service.full_log("worker").count("ContentDisallowed") >= len(messages),
            30,
            "the worker to refuse both pickled messages",
        )
        time.sleep(1.0)
        job = db.job(job_id)
        assert job is not None and job.state == "pending", job
        assert job.attempts == 0 and job.started_at is None
        assert not marker.exists(), "the worker unpickled a message"
        assert "application/x-python-serialize" in service.full_log("worker")
        assert service.processes["worker"].poll() is None

        # The same job sent as JSON, the only accepted content, runs (the worker was able to).
        send(make_celery(service.redis.url), SCORE_TASK, job_id)
        done = service.wait_for_job(study.series_uid, FINISHED)
        assert done.id == job_id and done.state == "done", done.reason
        assert done.attempts == 1
        print(f"pickle: {len(messages)} pickled messages refused, 1 JSON control run, 0 lost")
    finally:
        service.restart_listener()


PICKLE_PATTERNS = {
    "import pickle": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib)\b", re.M),
    "pickle.load": re.compile(r"\b(c?pickle|dill|cloudpickle|joblib)\.loads?\("),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load": re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"),
    "pickle serializer": re.compile(r"""["'](pickle|application/x-python-serialize)["']"""),
}


def test_no_source_file_can_load_a_pickle() -> None:
    files = sorted(
        p
        for package in ("listener", "worker", "model_bundle", "onfh_dlr", "phantom")
        for p in (REPO / package).rglob("*.py")
    )
    assert len(files) > 50
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for what, pattern in PICKLE_PATTERNS.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line}: {what}: {match.group(0)!r}")
    print(f"no pickle: {len(files)} files x {len(PICKLE_PATTERNS)} patterns, {len(found)} found")
    assert found == [], "\n".join(found)


def test_a_worker_with_a_tampered_bundle_refuses_to_start(service: Service, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "model_bundle" / "demo", bundle)
    target = bundle / "preprocessing.json"
    text = target.read_text()
    digit = re.search(r"[1-8]", text)
    assert digit is not None
    # One digit changed: still valid JSON of the same size, only its sha256 differs.
    target.write_text(text[: digit.start()] + str(int(digit.group()) + 1) + text[digit.end() :])
    env = dict(service.env, ONFH_BUNDLE=str(bundle), ONFH_DATA_DIR=str(tmp_path / "data"))
    env.pop("ONFH_WORKER_METRICS_PORT", None)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = " ".join((run.stdout + run.stderr).split())  # the console wraps lines
    assert run.returncode != 0, output
    assert "failed verification" in output and "preprocessing.json" in output, output
    assert "sha256" in output, output
    assert "ready." not in output  # it never consumed from the queue
    print(
        f"tampered bundle: 1 case, worker exited {run.returncode} after "
        f"{time.monotonic() - started:.1f} s"
    )


# --- logs ---------------------------------------------------------------------------------------


def test_logs_of_full_runs_hold_no_token_and_no_patient_data(
    service: Service, certs: Certs, studies: list[PhantomStudy]
) -> None:
    plain, as_json = studies[3], studies[1]
    scored = 0
    # A full run with plain-text logs, then one with JSON logs (both processes restarted).
    for study, log_json in ((plain, "false"), (as_json, "true")):
        if log_json == "true":
            service.restart_worker(log_json="true")
            service.restart_listener(log_json="true")
        marks = {role: len(service.full_log(role)) for role in ("listener", "worker")}
        run = storescu(service, study.slices, mutual_tls(certs))
        assert run.returncode == 0, run.stdout + run.stderr
        job = service.wait_for_job(study.series_uid, FINISHED)
        assert job.state == "done", job.reason
        scored += service.srs_at_pacs(study.study_uid) == {job.sr_uid}
        # The status page's retry action (over HTTPS with the DICOM port's certificate,
        # signed in with the status token) with the admin token (the job is not
        # dead-lettered, so it is only redirected), once with a wrong admin token, and
        # once with a wrong status token.
        port = service.env["ONFH_METRICS_PORT"]
        https = ssl.create_default_context(cafile=str(certs.ca))
        for status_token, token, expected in (
            (STATUS_TOKEN, ADMIN_TOKEN, 200),
            (STATUS_TOKEN, "wrong-" + ADMIN_TOKEN[::-1], 403),
            (STATUS_TOKEN[::-1], ADMIN_TOKEN, 401),
        ):
            request = urllib.request.Request(
                f"https://localhost:{port}/jobs/{job.id}/retry",
                data=urllib.parse.urlencode({"token": token}).encode(),
                headers={"Authorization": f"Bearer {status_token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10, context=https) as answer:
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == expected
        if log_json == "true":
            for role in ("listener", "worker"):
                new = service.full_log(role)[marks[role] :]
                records = [json.loads(line) for line in new.splitlines() if line.startswith("{")]
                assert records and all(r["role"] == role for r in records), role
    assert service.redis.password  # the harness runs Redis with AUTH, as `serve` does
    secrets = {
        "admin token": ADMIN_TOKEN,
        "wrong token": ADMIN_TOKEN[::-1],
        "status token": STATUS_TOKEN,
        "wrong status token": STATUS_TOKEN[::-1],
        "broker password": service.redis.password,
    }
    for study in studies:
        secrets[f"PatientID {study.patient_id}"] = study.patient_id
        secrets[f"PatientName {study.patient_name}"] = study.patient_name
        for part in re.split(r"[\^ ]+", study.patient_name):
            if len(part) >= 4:
                secrets[f"PatientName part {part}"] = part
    leaks = [
        f"{role}: {what}"
        for role in ("listener", "worker")
        for what, value in secrets.items()
        if value.lower() in service.full_log(role).lower()
    ]
    print(
        f"logs: 2 full runs (plain, JSON), {len(secrets)} secrets x 2 logs searched, "
        f"{len(leaks)} found, {2 - scored} studies lost"
    )
    assert scored == 2
    assert leaks == [], leaks
