"""The service commands as an administrator runs them: demo (through serve), score, listener."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pydicom

from phantom.cohort import generate_cohort
from worker.sr_output import read_report


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONFH_")}
    env["ONFH_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"
    return env


def test_the_demo_pushes_a_study_through_serve_and_prints_the_sr_per_hip(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "demo"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = tmp_path / "demo" / "service.log"
    assert run.returncode == 0, run.stdout + run.stderr + (log.read_text() if log.exists() else "")
    assert "suspected early ONFH" in run.stdout and "not suspected" in run.stdout
    assert "NOT FOR CLINICAL USE" in run.stdout
    received = sorted((tmp_path / "demo" / "pacs").glob("*.dcm"))
    modalities = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in received)
    assert modalities == ["SEG", "SR"]
    sr = next(pydicom.dcmread(p) for p in received if pydicom.dcmread(p).Modality == "SR")
    hips = read_report(sr)
    # The demo patient: early ONFH on the right, a healthy left hip.
    assert hips["R"].necrosis_present and not hips["L"].necrosis_present
    # serve stopped everything it started: no embedded broker URL left behind.
    assert not (tmp_path / "demo" / "service" / "broker" / "url").exists()


def test_score_writes_the_sr_and_seg_of_a_series_without_any_service(tmp_path: Path) -> None:
    cohort = generate_cohort(tmp_path / "phantom", cases=1, seed=5, onfh_fraction=1.0)
    rows = list(csv.DictReader(cohort.open(encoding="utf-8")))
    series = cohort.parent / rows[0]["Image"]
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
    assert written == {"SR", "SEG"}
    assert "left" in run.stdout and "right" in run.stdout
    truth = {row["Side"]: row["Label"] == "1" for row in rows}
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


def test_the_listener_process_loads_no_model_code() -> None:
    code = (
        "import sys, listener.main, onfh_dlr.queue, onfh_dlr.state\n"
        "heavy = {'torch', 'highdicom', 'SimpleITK', 'radiomics', 'model_bundle', 'worker'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert run.stdout.strip() == "[]"
