"""``onfh-dlr demo``: the whole service on one machine, end to end.

A phantom study is generated, ``onfh-dlr serve`` is started (embedded Redis, SQLite), a
receiving Storage SCP plays the PACS, the study is pushed with C-STORE, and the SR that
comes back is read and printed per hip next to the phantom's truth. The SR and SEG stay
on disk under ``<data_dir>/demo/pacs``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pydicom
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from onfh_dlr.broker import free_port
from onfh_dlr.cli.receiver import Receiver
from onfh_dlr.cli.root import ConfigOption, app, console, err_console, load_cli_settings
from onfh_dlr.errors import DemoError, OnfhError
from onfh_dlr.settings import Settings
from worker.scu import STORED_STATUSES, store_files, wait_for_echo

DEMO_SEED = 2024  # one patient: early ONFH (ARCO I) on the right, a healthy left hip
SERVICE_AE = "ONFH_DLR"
PACS_AE = "DEMO_PACS"
MODALITY_AE = "DEMO_MR"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo left its files and how long the service took."""

    sr_path: Path
    seg_path: Path
    push_seconds: float
    result_seconds: float  # from the end of the push to the SR at the "PACS"


def service_environment(
    base: Mapping[str, str], data_dir: Path, port: int, pacs_port: int
) -> dict[str, str]:
    """The environment ``serve`` runs with in the demo (everything local, fast close)."""
    env = {k: v for k, v in base.items() if not k.startswith("ONFH_")}
    env.update(
        ONFH_DATA_DIR=str(data_dir),
        ONFH_HOST="127.0.0.1",
        ONFH_PORT=str(port),
        ONFH_AE_TITLE=SERVICE_AE,
        ONFH_ALLOWED_CALLING_AES=MODALITY_AE,
        ONFH_DESTINATIONS=f"{PACS_AE}@127.0.0.1:{pacs_port}",
        ONFH_SERIES_TIMEOUT="10",
    )
    if "ONFH_BUNDLE" in base:
        env["ONFH_BUNDLE"] = base["ONFH_BUNDLE"]
    return env


@contextlib.contextmanager
def running_service(
    env: Mapping[str, str],
    output: IO[bytes] | int,
    *,
    cwd: Path | None = None,
    grace: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m onfh_dlr serve`` with ``env``, its stdout and stderr to ``output``.

    Stopped on exit as an administrator stops it: SIGTERM, and a kill if it has not ended
    within ``grace`` seconds (the supervisor lets its workers finish their studies first).
    The demo, the service tests and the benches all start ``serve`` this way.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "onfh_dlr", "serve"],
        env=dict(env),
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@app.command()
def demo(config: ConfigOption = None) -> None:
    """End to end: a phantom study pushed through `serve` to a stand-in PACS, SR read back."""
    settings = load_cli_settings(config)
    try:
        run_demo(settings, console, dict(os.environ))
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def run_demo(settings: Settings, console: Console, environ: Mapping[str, str]) -> DemoResult:
    """Run the demo under ``settings.data_dir / "demo"`` (earlier demo output is replaced)."""
    from phantom.cohort import generate_cohort

    root = settings.data_dir / "demo"
    for part in ("service", "pacs", "phantom"):
        shutil.rmtree(root / part, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]onfh-dlr demo: a hip MRI study through the service")

    with console.status("generating a phantom coronal T2-FS hip study"):
        csv_path = generate_cohort(root / "phantom", cases=1, seed=DEMO_SEED, onfh_fraction=1.0)
    truth = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    files = sorted((csv_path.parent / truth[0]["Image"]).glob("*.dcm"))
    console.print(f"phantom study: {len(files)} slices in {files[0].parent}")

    pacs_port, port = free_port(), free_port()
    log_path = root / "service.log"
    env = service_environment(environ, root / "service", port, pacs_port)
    with Receiver(root / "pacs", pacs_port, ae_title=PACS_AE) as pacs, log_path.open("wb") as log:
        console.print(f'"PACS": {PACS_AE} on port {pacs_port}; service log: {log_path}')
        with running_service(env, log, grace=30) as service:
            return _drive(console, service, files, port, pacs, truth, log_path)


def _drive(
    console: Console,
    service: subprocess.Popen[bytes],
    files: list[Path],
    port: int,
    pacs: Receiver,
    truth: list[dict[str, str]],
    log_path: Path,
) -> DemoResult:
    start = time.perf_counter()
    with console.status("starting `onfh-dlr serve` (embedded Redis, SQLite, listener, worker)"):
        if not wait_for_echo("127.0.0.1", port, SERVICE_AE, timeout=60, calling_ae=MODALITY_AE):
            raise DemoError(f"the service did not answer C-ECHO within 60 s; see {log_path}")
    console.print(f"service up: {SERVICE_AE} on port {port} ({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]C-STORE[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("push", total=len(files))
        statuses = store_files(
            files,
            host="127.0.0.1",
            port=port,
            called_ae=SERVICE_AE,
            calling_ae=MODALITY_AE,
            on_file=lambda _p, _s: progress.advance(task),
        )
    push_seconds = time.perf_counter() - start
    refused = [s for s in statuses if s not in STORED_STATUSES]
    if refused:
        raise DemoError(f"{len(refused)} instances refused (status 0x{refused[0]:04X})")
    console.print(f"pushed {len(files)} instances in {push_seconds:.1f} s")

    start = time.perf_counter()
    with console.status("waiting for the SR at the PACS (segment, score, report, deliver)"):
        while time.perf_counter() - start < 240:
            if pacs.wait_for("SR", timeout=1.0):
                break
            if service.poll() is not None:
                raise DemoError(f"the service exited ({service.returncode}); see {log_path}")
        else:
            raise DemoError(f"no SR within 240 s; see {log_path} and `onfh-dlr status`")
        segs = pacs.wait_for("SEG", timeout=30.0)
    result_seconds = time.perf_counter() - start
    # The card follows the SR in the same association (modality OT).
    cards = pacs.wait_for("OT", timeout=30.0)
    sr_item = pacs.wait_for("SR")[0]
    console.print(f"SR and SEG received by the PACS {result_seconds:.1f} s after the push")
    _print_report(console, pydicom.dcmread(sr_item.path), truth)
    seg_path = segs[0].path if segs else Path()
    card_path = cards[0].path if cards else "not received"
    console.print(f"SR:   {sr_item.path}\nSEG:  {seg_path}\nCard: {card_path}")
    return DemoResult(sr_item.path, seg_path, push_seconds, result_seconds)


def _print_report(console: Console, sr: pydicom.Dataset, truth: list[dict[str, str]]) -> None:
    from worker.sr_output import read_report

    hips = read_report(sr)
    by_side = {row["Side"]: row for row in truth}
    table = Table(title=f"{sr.SeriesDescription}", title_justify="left")
    for column in ("hip", "DLR probability", "score", "finding (SR)", "phantom truth", "ROI ml"):
        table.add_column(column)
    for side, name in (("R", "right"), ("L", "left")):
        hip = hips.get(side)  # type: ignore[call-overload]
        row = by_side.get(side, {})
        fact = (
            f"early ONFH, {row.get('Stage')}, {row.get('LesionSizeClass')} lesion"
            if row.get("Label") == "1"
            else "healthy"
        )
        if hip is None:
            table.add_row(name, "-", "-", "not scored", fact, "-")
            continue
        finding = "[red]suspected early ONFH[/red]" if hip.necrosis_present else "not suspected"
        volume = f"{hip.volume_ml:.1f}" if hip.volume_ml is not None else "-"
        table.add_row(name, f"{hip.probability:.3f}", f"{hip.score:+.2f}", finding, fact, volume)
    console.print(table)
    # One plain line per hip as well: what a script (CI, a smoke test) can check, whatever
    # the terminal's width does to the table.
    for side, name in (("R", "right"), ("L", "left")):
        hip = hips.get(side)  # type: ignore[call-overload]
        if hip is None:
            console.print(f"SR read back: {name} hip not scored", soft_wrap=True)
            continue
        if hip.not_analysed is not None or hip.probability is None:
            console.print(
                f"SR read back: {name} hip could not be analysed: {hip.not_analysed}",
                soft_wrap=True,
            )
            continue
        finding = "suspected early ONFH" if hip.necrosis_present else "not suspected"
        console.print(
            f"SR read back: {name} hip p = {hip.probability:.3f}, {finding}", soft_wrap=True
        )
    for item in sr.get("ContributingEquipmentSequence", []):
        if "DeviceUID" in item:  # the model (IHE AIR), not the scanner or the library
            console.print(
                f"algorithm: {item.get('ManufacturerModelName', '')} "
                f"{item.get('SoftwareVersions', '')} (Device UID {item.DeviceUID})"
            )


__all__ = [
    "DEMO_SEED",
    "DemoError",
    "DemoResult",
    "demo",
    "run_demo",
    "running_service",
    "service_environment",
]
