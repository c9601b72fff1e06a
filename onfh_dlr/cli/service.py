"""Service commands: ``serve``, ``listener``, ``worker``, ``status`` and ``retry``."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from onfh_dlr.cli.root import ConfigOption, app, console, err_console, load_cli_settings
from onfh_dlr.errors import OnfhError
from onfh_dlr.settings import Settings


def _known_broker_url(settings: Settings) -> str | None:
    if settings.broker_url is not None:
        return settings.broker_url
    # A running `serve` writes its embedded broker's URL here.
    embedded = settings.data_dir / "broker" / "url"
    return embedded.read_text(encoding="utf-8").strip() if embedded.is_file() else None


def _broker_url(settings: Settings) -> str:
    url = _known_broker_url(settings)
    if url is not None:
        return url
    err_console.print(
        "[red]error:[/red] ONFH_BROKER_URL is not set and no `onfh-dlr serve` runs on "
        f"{settings.data_dir}"
    )
    raise typer.Exit(2)


STATUS_TOKEN_FILE = "status-token"  # under the data directory, made by `serve`


def ensure_status_token(settings: Settings, environ: dict[str, str]) -> Path | None:
    """With the status page on and no token configured, the one `serve` makes itself.

    Kept in ``<data_dir>/status-token`` (mode 0600, reused across restarts so that a
    signed-in browser stays signed in) and handed to the listener as
    ``ONFH_STATUS_TOKEN_FILE`` in ``environ``. Returns the file, or None when nothing was
    needed (no HTTP server, or a token is configured).
    """
    if settings.metrics_port is None:
        return None
    if settings.status_token is not None or settings.status_token_file is not None:
        return None
    path = settings.data_dir / STATUS_TOKEN_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made by an earlier start: keep it
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    environ["ONFH_STATUS_TOKEN_FILE"] = str(path)
    return path


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run listener and worker on this machine (embedded Redis and SQLite when no URLs)."""
    from onfh_dlr.cli.supervisor import serve as run_serve
    from onfh_dlr.logs import configure_logging

    settings = load_cli_settings(config)
    configure_logging("serve", level=settings.log_level, as_json=settings.log_json)
    environ = dict(os.environ)
    token_file = ensure_status_token(settings, environ)
    if token_file is not None:
        scheme = "https" if settings.tls_cert is not None else "http"
        host = "localhost" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
        # The path, never the token: this line ends up in logs.
        err_console.print(
            f"status page: {scheme}://{host}:{settings.metrics_port}/ "
            f"(sign in with the token in {token_file})",
            soft_wrap=True,
        )
    try:
        run_serve(settings, environ, config)
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def listener(config: ConfigOption = None) -> None:
    """Run the DICOM listener (C-ECHO, C-STORE) that turns received series into jobs."""
    from listener.main import run_listener
    from onfh_dlr.logs import configure_logging

    settings = load_cli_settings(config)
    configure_logging("listener", level=settings.log_level, as_json=settings.log_json)
    try:
        run_listener(settings, _broker_url(settings))
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def worker(
    config: ConfigOption = None,
    delivery_only: Annotated[
        bool,
        typer.Option(
            "--delivery-only",
            help="Only deliver results (no bundle, a few threads); `serve` runs one.",
        ),
    ] = False,
) -> None:
    """Run a Celery worker that scores jobs and delivers the SR and SEG."""
    import shutil
    import socket

    from onfh_dlr.logs import configure_logging

    role = "delivery" if delivery_only else "worker"
    settings = load_cli_settings(config)
    configure_logging(role, level=settings.log_level, as_json=settings.log_json)
    # The pool processes' metrics go to files that the worker's /metrics aggregates;
    # prometheus-client reads this variable when it is first imported, i.e. below.
    metrics_dir = settings.data_dir / "metrics" / f"{role}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from worker.main import WorkerRole, run_worker

    try:
        run_worker(
            settings,
            _broker_url(settings),
            loglevel=settings.log_level,
            metrics_dir=metrics_dir,
            role=WorkerRole(role),
        )
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def status(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Recent failures to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Jobs by state, queue depth and recent failures with their reasons."""
    from rich.table import Table

    from onfh_dlr.errors import BrokerError
    from onfh_dlr.queue import queue_depth
    from onfh_dlr.state import JOB_STATES, StateDB

    settings = load_cli_settings(config)
    try:
        db = StateDB.for_settings(settings.database_url, settings.data_dir)
        counts = db.job_counts()
        series_counts = db.series_counts()
        failures = db.jobs(states=["failed", "dead_letter"], limit=limit)
        skipped = db.recent_series(states=["skipped"], limit=limit)
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    url = _known_broker_url(settings)
    depth: int | None = None
    broker_problem = "no ONFH_BROKER_URL and no running `serve`" if url is None else ""
    if url is not None:
        try:
            depth = queue_depth(url)
        except BrokerError as exc:
            broker_problem = str(exc)
    if as_json:
        summary = {
            "jobs": {state: counts.get(state, 0) for state in JOB_STATES},
            "series": series_counts,
            "queue_depth": depth,
            "broker_problem": broker_problem or None,
            "failures": [
                {"job": j.id, "series": j.series_uid, "state": j.state, "reason": j.reason}
                for j in failures
            ],
            "skipped": [
                {"series": r.series_uid, "description": r.description, "reason": r.reason}
                for r in skipped
            ],
        }
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title="jobs")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state in JOB_STATES:
        table.add_row(state, str(counts.get(state, 0)))
    console.print(table)
    console.print(
        "series: " + (", ".join(f"{k} {v}" for k, v in sorted(series_counts.items())) or "none")
    )
    if depth is not None:
        console.print(f"queue depth: {depth}")
    else:
        console.print(f"[red]queue depth unknown:[/red] {broker_problem}")
    if failures:
        table = Table(title="recent failures")
        for column in ("job", "series", "state", "reason"):
            table.add_column(column)
        for job in failures:
            table.add_row(job.id, job.series_uid, job.state, job.reason)
        console.print(table)
    if skipped:
        table = Table(title="recently skipped series")
        for column in ("series", "description", "reason"):
            table.add_column(column)
        for row in skipped:
            table.add_row(row.series_uid, row.description, row.reason)
        console.print(table)


@app.command()
def retry(
    job_id: Annotated[str, typer.Argument(help="The dead-lettered job to deliver again.")],
    config: ConfigOption = None,
) -> None:
    """Deliver a dead-lettered job's results again (after the destination is back)."""
    from onfh_dlr.queue import DELIVER_TASK, make_celery, send
    from onfh_dlr.state import StateDB

    settings = load_cli_settings(config)
    try:
        db = StateDB.for_settings(settings.database_url, settings.data_dir)
        if not db.retry_dead_letter(job_id):
            err_console.print(f"[red]error:[/red] job {job_id} is not in the dead-letter state")
            raise typer.Exit(1)
        send(make_celery(_broker_url(settings)), DELIVER_TASK, job_id)
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"job {job_id}: deliveries queued again")
