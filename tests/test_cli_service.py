"""The service commands as an administrator runs them: demo (through serve), score, listener."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
from service_harness import CohortMaker

from model_bundle.imaging import Side
from worker.sr_output import read_report


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONFH_")}
    env["ONFH_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"
    return env


def test_the_demo_pushes_a_study_through_serve_and_prints_the_sr_per_hip(tmp_path: Path) -> None:
    # As `make demo` runs it on a fresh clone: a relative data directory (the default is
    # `data`), here seen from a working directory of its own.
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "demo"],
        env=_env(Path("../data")),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    data = tmp_path / "data"
    log = data / "demo" / "service.log"
    assert run.returncode == 0, run.stdout + run.stderr + (log.read_text() if log.exists() else "")
    assert "SR read back: right hip p = " in run.stdout and "suspected early ONFH" in run.stdout
    assert "SR read back: left hip p = " in run.stdout and "not suspected" in run.stdout
    assert "NOT FOR CLINICAL USE" in run.stdout
    assert list(work.iterdir()) == []  # nothing written relative to the working directory
    received = sorted((data / "demo" / "pacs").glob("*.dcm"))
    modalities = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in received)
    assert modalities == ["OT", "SEG", "SR"]  # OT: the result card
    sr = next(pydicom.dcmread(p) for p in received if pydicom.dcmread(p).Modality == "SR")
    hips = read_report(sr)
    # The demo patient: early ONFH on the right, a healthy left hip.
    assert hips[Side.RIGHT].necrosis_present and not hips[Side.LEFT].necrosis_present
    # serve stopped everything it started: no embedded broker URL left behind.
    assert not (data / "demo" / "service" / "broker" / "url").exists()


def test_serve_with_a_relative_data_directory_scores_a_study_from_another_directory(
    tmp_path: Path, phantom_cohort: CohortMaker
) -> None:
    from onfh_dlr.broker import free_port
    from onfh_dlr.cli.demo import MODALITY_AE, SERVICE_AE, running_service, service_environment
    from onfh_dlr.cli.receiver import Receiver
    from worker.scu import STORED_STATUSES, store_files, wait_for_echo

    (study,) = phantom_cohort(1, 11, onfh_fraction=0.0).studies
    files = study.slices
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    port, pacs_port = free_port(), free_port()
    # serve's children, its embedded Redis (which changes into its own directory) and the
    # paths recorded in the state DB must all name tmp_path/service, not work/../service.
    env = service_environment(_env(Path("unused")), Path("../service"), port, pacs_port)
    log_path = tmp_path / "serve.log"
    with (
        Receiver(tmp_path / "pacs", pacs_port, ae_title="DEMO_PACS") as pacs,
        log_path.open("wb") as serve_log,
        running_service(env, serve_log, cwd=work),
    ):
        assert wait_for_echo("127.0.0.1", port, SERVICE_AE, timeout=60, calling_ae=MODALITY_AE)
        statuses = store_files(
            files, host="127.0.0.1", port=port, called_ae=SERVICE_AE, calling_ae=MODALITY_AE
        )
        assert all(s in STORED_STATUSES for s in statuses)
        (sr,) = pacs.wait_for("SR", timeout=240)
        # `status` from a third directory, the data directory again given relatively.
        status = subprocess.run(
            [sys.executable, "-m", "onfh_dlr", "status", "--json"],
            env={**_env(Path("../service"))},
            cwd=other,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    log = log_path.read_text(errors="replace")
    assert status.returncode == 0, status.stdout + status.stderr + log
    summary = json.loads(status.stdout)
    assert summary["jobs"]["done"] == 1 and summary["queue_depth"] == 0, log
    hips = read_report(pydicom.dcmread(sr.path))
    assert set(hips) == {"L", "R"} and not any(h.necrosis_present for h in hips.values())
    service_dir = tmp_path / "service"
    assert (service_dir / "state.db").is_file() and (service_dir / "broker" / "redis.log").is_file()
    assert len(list((service_dir / "spool").rglob("*.dcm"))) == len(files)
    assert list(work.iterdir()) == [] and list(other.iterdir()) == []


def test_score_writes_the_sr_seg_card_and_pdf_of_a_series_without_any_service(
    tmp_path: Path, phantom_cohort: CohortMaker
) -> None:
    (study,) = phantom_cohort(1, 5, onfh_fraction=1.0).studies
    series = study.slices[0].parent
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "score", str(series), "--out", str(out)],
        env=_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    written = {p.name.split("_")[0] for p in out.glob("*.dcm")}
    assert written == {"SR", "SEG", "CARD", "PDF"}
    assert "left" in run.stdout and "right" in run.stdout
    truth = {side: label == 1 for side, label in study.labels.items()}
    (sr_path,) = out.glob("SR_*.dcm")
    hips = read_report(pydicom.dcmread(sr_path))
    assert {side: hip.necrosis_present for side, hip in hips.items()} == truth


def test_score_reports_a_series_it_cannot_read_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "onfh_dlr",
            "score",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path),
        ],
        env=_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 1
    assert "error:" in run.stderr and "Traceback" not in run.stderr


def test_serve_makes_a_status_token_in_the_data_directory_and_the_page_requires_it(
    tmp_path: Path,
) -> None:
    import stat
    import urllib.error
    import urllib.request

    from service_harness import wait_until

    from onfh_dlr.broker import free_port
    from onfh_dlr.cli.demo import running_service, service_environment

    port, http_port = free_port(), free_port()
    env = service_environment(_env(Path("unused")), tmp_path / "service", port, free_port())
    env["ONFH_METRICS_PORT"] = str(http_port)
    env.pop("ONFH_WORKER_METRICS_PORT", None)

    def get(path: str, token: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as serve_log, running_service(env, serve_log):
        wait_until(lambda: get("/healthz") == 200, 60, "the listener's HTTP server")
        token_file = tmp_path / "service" / "status-token"
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert get("/") == 401
        assert get("/", "wrong-token-wrong-token") == 401
        assert get("/", token) == 200
    log = log_path.read_text(errors="replace")
    assert f"(sign in with the token in {token_file})" in log, log
    assert token not in log  # where the token is, never the token


def test_serve_keeps_a_status_token_it_made_and_makes_none_when_one_is_configured(
    tmp_path: Path,
) -> None:
    from onfh_dlr.cli.service import ensure_status_token
    from onfh_dlr.settings import load_settings

    environ = {"ONFH_DATA_DIR": str(tmp_path), "ONFH_METRICS_PORT": "9480"}
    settings = load_settings(environ=environ)
    first: dict[str, str] = {}
    made = ensure_status_token(settings, first)
    assert made is not None and first["ONFH_STATUS_TOKEN_FILE"] == str(made)
    token = made.read_text()
    again: dict[str, str] = {}
    assert ensure_status_token(settings, again) == made and made.read_text() == token
    configured = load_settings(environ={**environ, "ONFH_STATUS_TOKEN": "x" * 20})
    untouched: dict[str, str] = {}
    assert ensure_status_token(configured, untouched) is None and untouched == {}
    no_http = load_settings(environ={"ONFH_DATA_DIR": str(tmp_path / "other")})
    assert ensure_status_token(no_http, {}) is None
    assert not (tmp_path / "other").exists()
