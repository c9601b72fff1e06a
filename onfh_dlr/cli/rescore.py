"""``onfh-dlr rescore``: score spooled studies again with a given bundle (issue 15 item 5).

Without ``--deliver`` nothing leaves the service: per hip the old and the new probability
and call are printed and written on the job's timeline (``rescored``). With
``--deliver`` each series gets a new job (a new generation, as a re-opened series would),
scored with the bundle by the worker's own functions and delivered to the configured
destinations: its SR names the previous one in its Predecessor Documents Sequence.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from onfh_dlr.cli.root import ConfigOption, app, console, err_console, load_cli_settings
from onfh_dlr.errors import OnfhError

if TYPE_CHECKING:
    from model_bundle.serving import BundleModel
    from onfh_dlr.settings import Settings
    from onfh_dlr.state import Job, StateDB


class RescoreError(Exception):
    """A chosen series cannot be re-scored (unknown, refused, purged); the text says why."""


@dataclass
class Rescored:
    """One series re-scored: old and new per hip, and the new job when delivered."""

    series_uid: str
    job_id: str
    hips: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_job_id: str | None = None
    delivery: str | None = None  # the new job's state after delivery
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid,
            "job": self.job_id,
            "hips": self.hips,
            "new_job": self.new_job_id,
            "delivery": self.delivery,
            "error": self.error,
        }


def _targets(db: StateDB, *, series: str | None, study: str | None, last: int | None) -> list[Job]:
    """The newest job of each chosen series (``--last``: of each series of the last
    ``last`` studies), newest first."""
    jobs = db.jobs_of_series([series]) if series else db.jobs(limit=max(1000, (last or 0) * 10))
    newest: dict[str, Job] = {}
    for job in jobs:
        if study is not None and job.study_uid != study:
            continue
        if job.series_uid not in newest or job.generation > newest[job.series_uid].generation:
            newest[job.series_uid] = job
    ordered = sorted(newest.values(), key=lambda j: j.created_at, reverse=True)
    if last is None:
        return ordered
    # The last N studies: every series of the N studies scored most recently.
    studies = list(dict.fromkeys(j.study_uid for j in ordered))[:last]
    return [j for j in ordered if j.study_uid in studies]


def _check_spooled(db: StateDB, job: Job) -> None:
    row = db.series(job.series_uid)
    if row is None:
        raise RescoreError(f"series {job.series_uid} is unknown")
    if row.purged_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.purged_at))
        raise RescoreError(
            f"series {job.series_uid} was purged on {when} (retention, ONFH_RETENTION_DAYS): "
            "its images are gone and it cannot be re-scored; send it again"
        )
    if row.state != "admitted":
        raise RescoreError(f"series {job.series_uid} was not admitted ({row.state}: {row.reason})")
    if not job.series_dir.is_dir():
        raise RescoreError(f"series {job.series_uid}: spool directory {job.series_dir} is missing")


def _hips(old: dict[str, Any], new: dict[str, tuple[float, int]]) -> dict[str, dict[str, Any]]:
    hips = {}
    for side in sorted(set(old) | set(new)):
        before = old.get(side, {})
        p_new, call_new = new.get(side, (None, None))
        hips[side] = {
            "old_probability": before.get("probability"),
            "old_call": before.get("call"),
            "new_probability": p_new,
            "new_call": call_new,
        }
    return hips


def rescore_job(
    settings: Settings, db: StateDB, job: Job, model: BundleModel, *, deliver: bool
) -> Rescored:
    """Re-score one job's series with ``model``; deliver a superseding SR if asked.

    Raises
    ------
    RescoreError
        The series cannot be re-scored.
    onfh_dlr.errors.OnfhError
        Loading or scoring failed.
    """
    from worker.shadow import bundle_id, compare_text, score_hips

    _check_spooled(db, job)
    ident = bundle_id(model)
    old_hips: dict[str, Any] = dict(job.result.get("hips", {}))
    if not deliver:
        predictions = score_hips(job.series_dir, job.seg_path, model)
        db.add_event(job, "rescored", compare_text(ident, old_hips, predictions))
        new = {side.value: (p.probability, p.call) for side, p in predictions.items()}
        return Rescored(job.series_uid, job.id, _hips(old_hips, new))
    return _rescore_and_deliver(settings, db, job, model, old_hips)


def _rescore_and_deliver(
    settings: Settings, db: StateDB, job: Job, model: BundleModel, old_hips: dict[str, Any]
) -> Rescored:
    from worker.jobs import WorkerContext, deliver_job, score_job
    from worker.shadow import bundle_id

    ident = bundle_id(model)
    new_job = db.rescore_job(
        job.series_uid, f"rescored with {ident.name} {ident.version} (supersedes job {job.id})"
    )
    # The worker's own functions with this bundle and no shadows: one scoring path.
    ctx = WorkerContext(
        settings.model_copy(update={"bundle": model.bundle.directory, "shadow_bundles": []}),
        db,
        _model=model,
    )
    outcome = score_job(ctx, new_job.id)
    scored = db.job(new_job.id)
    assert scored is not None  # written above
    new_hips = scored.result.get("hips", {})
    new = {side: (h["probability"], h["call"]) for side, h in new_hips.items()}
    result = Rescored(job.series_uid, job.id, _hips(old_hips, new), new_job_id=new_job.id)
    if outcome != "scored":
        result.error = f"new job {new_job.id} {outcome}: {scored.reason}"
        return result
    db.add_event(scored, "rescored", f"result of {ident.name} {ident.version}: {_said(new)}")
    while True:
        round_ = deliver_job(ctx, new_job.id)
        if round_.retry_in is None:
            result.delivery = round_.state
            return result
        err_console.print(
            f"delivery to {', '.join(round_.pending)} failed; again in {round_.retry_in:.0f} s"
        )
        time.sleep(round_.retry_in)


def _said(new: dict[str, tuple[float, int]]) -> str:
    return "; ".join(
        f"{side}: p={p:.3f} {'positive' if call else 'negative'}"
        for side, (p, call) in sorted(new.items())
    )


def _fmt(p: Any, call: Any) -> tuple[str, str]:
    if not isinstance(p, float):
        return "-", "-"
    return f"{p:.3f}", "positive" if call else "negative"


@app.command()
def rescore(
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Bundle directory to score with (default: the deployed one).",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ] = None,
    series: Annotated[str | None, typer.Option("--series", help="Series Instance UID.")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study Instance UID.")] = None,
    last: Annotated[
        int | None, typer.Option("--last", min=1, help="The last N studies scored.")
    ] = None,
    deliver: Annotated[
        bool,
        typer.Option("--deliver", help="Deliver a new SR that supersedes the previous one."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Re-score a study, a series or the last N studies with a bundle, from the spool."""
    from rich.table import Table

    from model_bundle.serving import BundleModel
    from onfh_dlr.state import StateDB
    from worker.jobs import default_bundle_dir

    if sum(x is not None for x in (series, study, last)) != 1:
        err_console.print("[red]error:[/red] give exactly one of --series, --study, --last")
        raise typer.Exit(2)
    settings = load_cli_settings(config)
    results: list[Rescored] = []
    try:
        db = StateDB.for_settings(settings.database_url, settings.data_dir)
        targets = _targets(db, series=series, study=study, last=last)
        if not targets:
            err_console.print("[red]error:[/red] no scored series matches")
            raise typer.Exit(1)
        spooled = []
        for job in targets:  # before loading the bundle: a purged series fails at once
            try:
                _check_spooled(db, job)
                spooled.append(job)
            except RescoreError as exc:
                results.append(Rescored(job.series_uid, job.id, error=str(exc)))
        if not spooled:
            for r in results:
                err_console.print(f"[red]error:[/red] {r.error}")
            raise typer.Exit(1)
        model = BundleModel.load(
            bundle or settings.bundle or default_bundle_dir(), threads=1, deployed_only=True
        )
        for job in spooled:
            try:
                results.append(rescore_job(settings, db, job, model, deliver=deliver))
            except (RescoreError, OnfhError) as exc:
                results.append(Rescored(job.series_uid, job.id, error=str(exc)))
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    manifest = model.bundle.manifest
    if as_json:
        print(
            json.dumps(
                {
                    "bundle": {
                        "name": manifest.name,
                        "version": manifest.version,
                        "device_uid": manifest.device_uid,
                    },
                    "series": [r.as_json() for r in results],
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"Re-scored with {manifest.name} {manifest.version}")
        for column in ("Series", "Hip", "Old p", "Old call", "New p", "New call", "Delivery"):
            table.add_column(column)
        for r in results:
            for side, hip in r.hips.items():
                old = _fmt(hip["old_probability"], hip["old_call"])
                new = _fmt(hip["new_probability"], hip["new_call"])
                table.add_row(r.series_uid, side, *old, *new, r.delivery or "-")
        console.print(table)
    for r in results:
        if r.error:
            err_console.print(f"[red]error:[/red] {r.error}")
    if any(r.error for r in results):
        raise typer.Exit(1)


__all__ = ["RescoreError", "Rescored", "rescore", "rescore_job"]
