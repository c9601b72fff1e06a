"""Metrics, health, the status page and the logs, against a live service.

The service runs as in production (listener and worker processes, real Redis, a receiving
PACS) with its HTTP servers on; the status page is loaded in headless Chromium, signed in
through its form. Without the status token no route of the page shows anything of a study
the service has seen, and /metrics, /healthz and /readyz (open) name none.
"""

from __future__ import annotations

import csv
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_harness import CohortMaker, Service, wait_until
from viewer_harness import Chromium

from onfh_dlr.broker import free_port

TOKEN = "test-admin-token"
STATUS_TOKEN = "test-status-token-" + "5f1d2c9a7e"
FINISHED = {"done", "failed", "dead_letter"}


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    return {
        "metrics_port": str(free_port()),
        "worker_metrics_port": str(free_port()),
        "admin_token": TOKEN,
        "status_token": STATUS_TOKEN,
        "log_json": "true",
        "delivery_retries": "1",
    }


@pytest.fixture(scope="module", autouse=True)
def worker_ready(service: Service) -> None:
    """The worker's readiness probe answers before any test reads it."""
    wait_until(lambda: get(service, "worker", "/readyz")[0] == 200, 60, "the worker's readiness")


@pytest.fixture(scope="module")
def phantom(phantom_cohort: CohortMaker) -> Path:
    return phantom_cohort(3, 41, onfh_fraction=70 / 150).csv


def study(cohort: Path, index: int) -> tuple[list[Path], pydicom.Dataset]:
    rows = list(csv.DictReader(cohort.open(encoding="utf-8")))
    images = sorted({row["Image"] for row in rows})
    files = sorted((cohort.parent / images[index]).glob("*.dcm"))
    return files, pydicom.dcmread(files[0], stop_before_pixels=True)


def port_of(service: Service, role: str) -> int:
    key = "ONFH_METRICS_PORT" if role == "listener" else "ONFH_WORKER_METRICS_PORT"
    return int(service.env[key])


def get(
    service: Service, role: str, path: str, *, token: str | None = None, accept: str = "*/*"
) -> tuple[int, str]:
    """GET ``path``; with ``token`` as the bearer token."""
    url = f"http://127.0.0.1:{port_of(service, role)}{path}"
    headers = {"Accept": accept} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def post(
    service: Service, path: str, form: dict[str, str], *, token: str | None = STATUS_TOKEN
) -> tuple[int, str]:
    """POST a form to the listener (with the status token unless ``token=None``)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    data = urllib.parse.urlencode(form).encode()
    url = f"http://127.0.0.1:{port_of(service, 'listener')}{path}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with opener.open(urllib.request.Request(url, data, headers), timeout=10) as response:
            return response.status, response.headers.get("Location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "") or exc.read().decode()


def samples(service: Service, role: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(service, role, "/metrics")
    assert status == 200, text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_of_listener_and_worker_move_with_a_study(service: Service, phantom: Path) -> None:
    files, header = study(phantom, 0)
    before_l, before_w = samples(service, "listener"), samples(service, "worker")
    assert set(service.push(files)) == {0}
    job = service.wait_for_job(str(header.SeriesInstanceUID), FINISHED)
    assert job.state == "done", job.reason
    after_l, after_w = samples(service, "listener"), samples(service, "worker")

    def moved(before: dict, after: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(
        before_l, after_l, "onfh_instances_received_total", transport="dimse", outcome="stored"
    ) == len(files)
    assert (
        moved(before_l, after_l, "onfh_associations_total", transport="dimse", outcome="accepted")
        >= 1
    )
    assert moved(before_l, after_l, "onfh_series_closed_total", trigger="release") == 1
    assert moved(before_l, after_l, "onfh_series_admitted_total") == 1
    assert moved(before_l, after_l, "onfh_stage_seconds_count", stage="receive") == 1
    assert moved(before_l, after_l, "onfh_jobs", state="done") == 1
    assert value(after_l, "onfh_queue_depth") == 0
    for stage in ("queue", "score", "deliver", "total"):
        assert moved(before_w, after_w, "onfh_stage_seconds_count", stage=stage) == 1, stage
    destination = service.env["ONFH_DESTINATIONS"]
    assert (
        moved(
            before_w, after_w, "onfh_deliveries_total", destination=destination, outcome="delivered"
        )
        == 1
    )
    assert moved(before_w, after_w, "onfh_jobs_finished_total", state="done") == 1
    bundles = [k for k in after_w if k[0] == "onfh_bundle_info"]
    assert len(bundles) == 1 and dict(bundles[0][1])["name"] == "onfh-dlr-demo"


def test_worker_readiness_fails_while_the_broker_is_stopped(service: Service) -> None:
    assert get(service, "worker", "/readyz")[0] == 200
    service.redis.stop()
    try:
        status, body = get(service, "worker", "/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["broker"].startswith("failed")
        assert get(service, "worker", "/healthz")[0] == 200  # alive, just not ready
    finally:
        service.redis.start()
    wait_until(lambda: get(service, "worker", "/readyz")[0] == 200, 30, "readiness to return")


def test_listener_readiness_fails_while_its_spool_cannot_be_written(service: Service) -> None:
    assert get(service, "listener", "/readyz")[0] == 200
    tmp_dir = service.data_dir / "spool" / ".tmp"
    moved = tmp_dir.with_name(".tmp-away")
    tmp_dir.rename(moved)
    tmp_dir.write_text("not a directory")  # as a full or read-only volume would fail
    try:
        status, body = get(service, "listener", "/readyz")
        assert status == 503
        checks = json.loads(body)["checks"]
        assert checks["spool_writable"].startswith("failed") and checks["database"] == "ok"
    finally:
        tmp_dir.unlink()
        moved.rename(tmp_dir)
    assert get(service, "listener", "/readyz")[0] == 200


def test_a_dead_letter_is_retried_from_the_status_page_with_the_admin_token(
    service: Service, phantom: Path
) -> None:
    files, header = study(phantom, 1)
    service.pacs.stop()
    try:
        service.push(files)
        job = service.wait_for_job(str(header.SeriesInstanceUID), FINISHED)
        assert job.state == "dead_letter"
    finally:
        service.pacs.start()
    status, page = get(service, "listener", "/dead-letters", token=STATUS_TOKEN)
    assert status == 200 and job.id in page
    assert post(service, f"/jobs/{job.id}/retry", {"token": TOKEN}, token=None)[0] == 401
    assert post(service, f"/jobs/{job.id}/retry", {"token": "wrong"})[0] == 403
    status, location = post(service, f"/jobs/{job.id}/retry", {"token": TOKEN})
    assert status == 303 and "queued" in location
    assert service.wait_for_job(str(header.SeriesInstanceUID), {"done"}).state == "done"


def test_the_status_page_renders_in_headless_chromium_after_signing_in_without_patient_names(
    service: Service, phantom: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{port_of(service, 'listener')}/"
    _, first = study(phantom, 0)
    browser = Chromium(tmp_path / "profile")
    try:
        # Not signed in: the sign-in form, and nothing of any study.
        browser.navigate(url)
        browser.wait_for("!!document.querySelector('input[name=token]')", 30, "the sign-in form")
        dom = browser.evaluate("document.documentElement.outerHTML")
        assert str(first.SeriesInstanceUID) not in dom and "Recent studies" not in dom
        # Sign in as a user does: type the token, submit; the session cookie does the rest.
        browser.evaluate(
            f"document.querySelector('input[name=token]').value = {json.dumps(STATUS_TOKEN)};"
            "document.querySelector('form').submit(); true"
        )
        browser.wait_for(
            "document.querySelector('h1') && document.querySelector('h1').textContent"
            " === 'Recent studies'",
            30,
            "the status page after signing in",
        )
        assert browser.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
        dom = browser.evaluate("document.documentElement.outerHTML")
        screenshot = browser.screenshot(tmp_path / "status.png")
        assert screenshot.stat().st_size > 10_000
        assert str(first.SeriesInstanceUID) in dom  # in the link to its timeline
        assert str(first.AccessionNumber) in dom
        assert re.search(r"class=\"s-done\"", dom)
        for index in range(2):
            _, header = study(phantom, index)
            assert str(header.PatientName) not in dom and str(header.PatientID) not in dom
        browser.navigate(f"{url}series/{first.SeriesInstanceUID}")
        browser.wait_for("document.body.textContent.includes('Timeline')", 30, "the timeline")
        timeline = browser.evaluate("document.body.textContent")
        for stage in ("first instance", "closed", "started", "scored", "delivered", "done"):
            assert stage in timeline, stage
        # Signing out drops the cookie: the page asks for the token again.
        browser.evaluate("document.querySelector('nav form').submit(); true")
        browser.wait_for("!!document.querySelector('input[name=token]')", 30, "the sign-in form")
        browser.navigate(f"{url}?after=sign-out")
        browser.wait_for(
            "location.search === '?after=sign-out'"
            " && !!document.querySelector('input[name=token]')",
            30,
            "the sign-in form after signing out",
        )
        assert str(first.SeriesInstanceUID) not in browser.evaluate(
            "document.documentElement.outerHTML"
        )
        assert not [e for e in browser.console if e.level == "exception"], browser.console
    finally:
        browser.stop()


@pytest.fixture(scope="module")
def seen(service: Service, phantom: Path) -> tuple[dict[str, str], str]:
    """A study the service has processed: what identifies it (never to be shown without
    the token), and its job id."""
    files, header = study(phantom, 2)
    assert set(service.push(files)) == {0}
    job = service.wait_for_job(str(header.SeriesInstanceUID), FINISHED)
    identifiers = {
        "AccessionNumber": str(header.AccessionNumber),
        "PatientID": str(header.PatientID),
        "PatientName": str(header.PatientName),
        "StudyInstanceUID": str(header.StudyInstanceUID),
        "SeriesInstanceUID": str(header.SeriesInstanceUID),
        "SOPInstanceUID": str(header.SOPInstanceUID),
        "job": job.id,
    }
    if job.sr_uid:
        identifiers["SR"] = job.sr_uid
    return identifiers, job.id


def leaks(text: str, identifiers: dict[str, str]) -> list[str]:
    return [name for name, value in identifiers.items() if value and value in text]


def test_no_status_page_route_answers_without_the_token_nor_shows_the_study(
    service: Service, seen: tuple[dict[str, str], str]
) -> None:
    identifiers, job_id = seen
    series = identifiers["SeriesInstanceUID"]
    paths = ("/", f"/series/{series}", "/dead-letters", "/sign-in", "/nothing-here")
    checked = 0
    for path in paths:
        for accept in ("text/html", "*/*"):
            for token in (None, "wrong-" + STATUS_TOKEN, STATUS_TOKEN[:-1]):
                status, body = get(service, "listener", path, token=token, accept=accept)
                assert status == (200 if path == "/sign-in" else 401), (path, token)
                assert leaks(body, identifiers) == [], (path, accept, token)
                checked += 1
    status, body = post(service, f"/jobs/{job_id}/retry", {"token": TOKEN}, token=None)
    assert status == 401 and leaks(body, identifiers) == []
    # With the token: the page and its identifiers.
    status, body = get(service, "listener", "/", token=STATUS_TOKEN)
    assert status == 200 and identifiers["AccessionNumber"] in body and series in body
    status, body = get(service, "listener", f"/series/{series}", token=STATUS_TOKEN)
    assert status == 200 and identifiers["StudyInstanceUID"] in body
    print(f"status page: {checked} requests without a valid token, no identifier shown")


@pytest.mark.parametrize("role", ["listener", "worker"])
@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_metrics_and_probes_answer_without_credentials_and_name_no_study(
    service: Service, seen: tuple[dict[str, str], str], role: str, path: str
) -> None:
    identifiers, _ = seen
    status, body = get(service, role, path)
    assert status == 200, body
    assert leaks(body, identifiers) == []
    if path == "/metrics":  # the scrape is real: the processed study is counted
        assert "onfh_stage_seconds_count" in body


def test_logs_are_json_lines_with_uids_and_no_patient_names(
    service: Service, phantom: Path
) -> None:
    names = []
    for index in range(2):
        _, header = study(phantom, index)
        names += [str(header.PatientName), str(header.PatientID)]
    for role in ("listener", "worker"):
        text = (service.root / f"{role}.log").read_text(errors="replace")
        for name in names:
            assert name not in text, f"{role} log holds {name!r}"
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert records and all({"time", "level", "role", "message"} <= set(r) for r in records)
    listener_log = (service.root / "listener.log").read_text()
    _, header = study(phantom, 0)
    assert str(header.SeriesInstanceUID) in listener_log
