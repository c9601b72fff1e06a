"""The ``onfh-dlr`` command line.

The entry point is the one place that reads the process environment: it builds the
:class:`~onfh_dlr.settings.Settings` once and passes them on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onfh_dlr.errors import OnfhError
from onfh_dlr.settings import Settings, load_settings

app = typer.Typer(
    no_args_is_help=True,
    help="onfh-dlr: deep-learning radiomics for early osteonecrosis of the femoral head.",
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML settings file (else ONFH_CONFIG).",
        exists=True,
        dir_okay=False,
        resolve_path=True,  # `serve` hands it to children; nothing may depend on the cwd
    ),
]


WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="Processes to use.")]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config, dict(os.environ))
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.callback()
def main() -> None:
    """onfh-dlr command line."""


@app.command()
def phantom(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the cohort into.")],
    cases: Annotated[int, typer.Option("--cases", min=1, help="Number of patients.")] = 150,
    seed: Annotated[int, typer.Option("--seed", help="Cohort seed.")] = 0,
    onfh_fraction: Annotated[
        float,
        typer.Option(
            "--onfh-fraction", min=0.0, max=1.0, help="Fraction of patients with early ONFH."
        ),
    ] = 70 / 150,
    workers: WorkersOption = 1,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview", help="Also write <PatientID>/preview.png with the truth outlined."
        ),
    ] = False,
) -> None:
    """Generate synthetic coronal T2-FS hip MRI studies with ground truth and cohort.csv."""
    from phantom.cohort import generate_cohort

    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]phantom[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("cases", total=cases)
        try:
            csv_path = generate_cohort(
                out_dir,
                cases,
                seed,
                onfh_fraction,
                workers,
                on_case=lambda _: progress.advance(task),
                preview=preview,
            )
        except OnfhError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    elapsed = time.perf_counter() - start
    console.print(
        f"wrote {cases} cases to {out_dir} in {elapsed:.1f} s ({elapsed / cases:.2f} s per case)"
    )
    console.print(f"cohort: {csv_path}")


@app.command()
def demo(config: ConfigOption = None) -> None:
    """End to end: a phantom study pushed through `serve` to a stand-in PACS, SR read back."""
    from onfh_dlr.demo import run_demo

    settings = _settings(config)
    try:
        run_demo(settings, console, dict(os.environ))
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


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


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run listener and worker on this machine (embedded Redis and SQLite when no URLs)."""
    from onfh_dlr.logs import configure_logging
    from onfh_dlr.serve import serve as run_serve

    settings = _settings(config)
    configure_logging("serve", level=settings.log_level, as_json=settings.log_json)
    try:
        run_serve(settings, dict(os.environ), config)
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def listener(config: ConfigOption = None) -> None:
    """Run the DICOM listener (C-ECHO, C-STORE) that turns received series into jobs."""
    from listener.main import run_listener
    from onfh_dlr.logs import configure_logging

    settings = _settings(config)
    configure_logging("listener", level=settings.log_level, as_json=settings.log_json)
    try:
        run_listener(settings, _broker_url(settings))
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Run a Celery worker that scores jobs and delivers the SR and SEG."""
    import shutil
    import socket

    from onfh_dlr.logs import configure_logging

    settings = _settings(config)
    configure_logging("worker", level=settings.log_level, as_json=settings.log_json)
    # The pool processes' metrics go to files that the worker's /metrics aggregates;
    # prometheus-client reads this variable when it is first imported, i.e. below.
    metrics_dir = settings.data_dir / "metrics" / f"worker-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from worker.main import run_worker

    try:
        run_worker(
            settings, _broker_url(settings), loglevel=settings.log_level, metrics_dir=metrics_dir
        )
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def score(
    series: Annotated[Path, typer.Argument(help="Directory with the series' DICOM files.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the SR and SEG.")],
    seg: Annotated[
        Path | None, typer.Option("--seg", help="DICOM-SEG with the femoral heads (else auto).")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Model bundle (else ONFH_BUNDLE or the demo).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Score one series offline (no network): the service's pipeline, SR and SEG to --out."""
    from model_bundle.serving import BundleModel
    from worker.jobs import default_bundle_dir
    from worker.pipeline import score_series, write_outputs

    settings = _settings(config)
    bundle_dir = bundle or settings.bundle or default_bundle_dir()
    try:
        with console.status("loading the bundle"):
            model = BundleModel.load(bundle_dir)
        with console.status(f"scoring {series}"):
            scored = score_series(series, model, seg=seg)
        sr_path, seg_path = write_outputs(scored, out)
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    manifest = model.bundle.manifest
    _print_hips(
        {side: dataclasses.asdict(p) for side, p in scored.predictions.items()},
        title=f"{manifest.name} {manifest.version} ({manifest.deployed_model})",
    )
    if manifest.not_for_clinical_use:
        err_console.print(f"[yellow]warning:[/yellow] {manifest.warning}")
    console.print(f"SR:  {sr_path}\nSEG: {seg_path}")


def _print_hips(hips: dict[str, dict[str, Any]], *, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("hip", "probability", "score", "threshold", "finding", "ROI"):
        table.add_column(column)
    names = {"R": "right", "L": "left"}
    for side in sorted(hips, reverse=True):
        hip = hips[side]
        finding = "suspected early ONFH" if hip["call"] else "not suspected"
        table.add_row(
            names.get(side, side),
            f"{hip['probability']:.3f}",
            f"{hip['score']:+.2f}",
            f"{hip['threshold']:.3f}",
            finding,
            str(hip.get("roi_source", "")),
        )
    console.print(table)


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

    settings = _settings(config)
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

    settings = _settings(config)
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


@app.command()
def features(
    source: Annotated[
        Path, typer.Argument(help="A cohort CSV, or one DICOM series directory.", exists=True)
    ],
    out: Annotated[Path, typer.Option("--out", help="Feature table (CSV) to write.")],
    seg: Annotated[
        Path | None,
        typer.Option(
            "--seg", help="DICOM-SEG with the femoral heads (series input only).", exists=True
        ),
    ] = None,
    workers: WorkersOption = 1,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="ResNet18 weights: a bundle's .safetensors or a torchvision .pth.",
            exists=True,
        ),
    ] = None,
    deep: Annotated[
        bool, typer.Option("--deep/--no-deep", help="Compute the 512 deep features.")
    ] = True,
    feature_list: Annotated[
        Path | None,
        typer.Option(
            "--features",
            help="Text file of radiomics feature names (one per line): selective mode.",
            exists=True,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of a randomly initialised backbone.")
    ] = 0,
) -> None:
    """Compute per-hip radiomics and deep features (one row per hip; failures keep a reason)."""
    from model_bundle.features import (
        FeatureSpec,
        HipRow,
        cohort_features,
        read_cohort,
        series_job,
        write_feature_table,
    )
    from model_bundle.radiomics import FEATURE_NAMES

    names = None
    if feature_list is not None:
        names = tuple(
            line.strip()
            for line in feature_list.read_text(encoding="utf-8").splitlines()
            if line.strip()
        )
        unknown = [n for n in names if n not in FEATURE_NAMES]
        if unknown:
            err_console.print(
                f"[red]error:[/red] unknown radiomics feature(s): {', '.join(unknown)}"
            )
            raise typer.Exit(2)
    spec = FeatureSpec(radiomics=names, deep=deep, weights=weights, seed=seed)
    try:
        jobs = (
            read_cohort(source)
            if source.is_file()
            else [series_job(source, seg, patient_id=source.name)]
        )
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if deep and weights is None:
        err_console.print(
            "[yellow]warning:[/yellow] no --weights: deep features come from a randomly initialised"
            f" ResNet18 (seed {seed}); they are comparable only between runs with the same seed"
        )
    start = time.perf_counter()
    rows: list[HipRow] = []
    with Progress(
        TextColumn("[bold]features[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("series", total=len(jobs))
        for row in cohort_features(
            jobs, spec, workers=workers, on_rows=lambda _: progress.advance(task)
        ):
            rows.append(row)
    write_feature_table(out, rows, spec)
    failed = [r for r in rows if r.status != "ok"]
    elapsed = time.perf_counter() - start
    console.print(
        f"{len(rows) - len(failed)} of {len(rows)} hips done in {elapsed:.1f} s, "
        f"{len(spec.names)} features each -> {out}"
    )
    for row in failed:
        console.print(f"[red]failed[/red] {row.patient_id} {row.side}: {row.reason}")


bundle_app = typer.Typer(
    no_args_is_help=True, help="Model bundles: check what the service would load."
)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("verify")
def bundle_verify(
    directory: Annotated[Path, typer.Argument(help="The bundle directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify a model bundle (manifest, paths, sizes, sha256, no pickles); exit 1 on any problem."""
    from rich.markup import escape

    from model_bundle.bundle import verify_bundle

    report = verify_bundle(directory)
    if as_json:
        console.print_json(
            data={
                "ok": report.ok,
                "directory": str(report.directory),
                "problems": [p.as_dict() for p in report.problems],
                "summary": report.summary,
            }
        )
    elif report.summary is not None:
        for key, value in report.summary.items():
            console.print(f"{key}: {escape(str(value))}")
        if report.summary["not_for_clinical_use"]:
            err_console.print(f"[yellow]warning:[/yellow] {escape(str(report.summary['warning']))}")
    else:
        for problem in report.problems:
            err_console.print(f"[red]error:[/red] {escape(str(problem))}")
        err_console.print(
            f"{report.directory}: {len(report.problems)} problem(s); not a usable bundle"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def train(
    cohort: Annotated[
        Path, typer.Argument(help="Cohort CSV: PatientID, Side, Image, Mask, Label.", exists=True)
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Bundle directory to create (must not exist).")
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Training settings (YAML).", exists=True, dir_okay=False),
    ] = None,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained", help="Local torchvision ImageNet ResNet18 checkpoint.", exists=True
        ),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Feature cache directory (default: OUT.cache).")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Processes for feature extraction.")
    ] = 1,
    name: Annotated[str, typer.Option("--name", help="Bundle name.")] = "onfh-dlr",
    version: Annotated[str, typer.Option("--version", help="Bundle version (semver).")] = "1.0.0",
    synthetic: Annotated[
        bool,
        typer.Option(
            "--synthetic",
            help="Mark the bundle as a synthetic demonstration, not for clinical use.",
        ),
    ] = False,
    roi: Annotated[
        str,
        typer.Option(
            "--roi",
            help="head: the whole femoral head of every hip (default). lesion: the paper's "
            "protocol, a lesion ROI for ONFH hips; for reproduction only, as the ROI's "
            "shape then leaks the label.",
        ),
    ] = "head",
) -> None:
    """Train the Rad, DL and DLR models on a labelled cohort and write a verified bundle."""
    import yaml

    from model_bundle.dataset import build_dataset
    from model_bundle.features import read_cohort
    from model_bundle.publish import publish
    from model_bundle.training import TrainConfig, shape_leak, train_models

    if roi not in ("head", "lesion"):
        err_console.print(f"[red]error:[/red] --roi must be head or lesion, not {roi!r}")
        raise typer.Exit(2)

    try:
        settings = yaml.safe_load(config.read_text(encoding="utf-8")) if config is not None else {}
        if pretrained is not None:
            settings["pretrained"] = pretrained
        train_config = TrainConfig.model_validate(settings or {})
        jobs = read_cohort(cohort)
    except (OnfhError, ValueError, yaml.YAMLError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if out.exists() and any(out.iterdir()):
        err_console.print(f"[red]error:[/red] {out} exists and is not empty")
        raise typer.Exit(2)
    cache_dir = cache if cache is not None else out.with_name(out.name + ".cache")
    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            task = progress.add_task("features", total=len(jobs))
            samples = build_dataset(
                jobs,
                cache=cache_dir,
                workers=workers,
                on_job=lambda *_: progress.advance(task),
                roi_protocol=roi,
            )
            epochs = progress.add_task("fine-tuning", total=train_config.epochs)
            result = train_models(
                samples,
                train_config,
                log=console.print,
                on_epoch=lambda *_: progress.advance(epochs),
            )
        leak = shape_leak(result) if roi == "lesion" else None
        if leak is not None:
            console.print(
                "[yellow]label leak:[/yellow] shape features alone reach test AUC "
                f"{leak['test_auc']:.3f} with the lesion ROI protocol"
            )
        bundle = publish(
            result,
            out,
            name=name,
            version=version,
            synthetic=synthetic,
            roi_protocol=roi,
            shape_leak=leak,
        )
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    unusable = [s for s in samples if not s.ok]
    for s in unusable:
        console.print(f"[yellow]excluded[/yellow] {s.patient_id} {s.side}: {s.reason}")
    headline: Any = bundle.manifest.metrics  # JSON from the manifest, read defensively
    for key in ("rad", "dl", "dlr"):
        try:
            entry = headline["test"][key]
            low, high = entry["auc_ci95"]
            console.print(f"test AUC {key}: {entry['auc']:.3f} (95% CI {low:.3f}-{high:.3f})")
        except (KeyError, TypeError, ValueError):
            continue
    console.print(
        f"bundle {out} ({bundle.device_uid}), deployed {bundle.deployed_model} at threshold "
        f"{bundle.threshold:.3f}; {time.perf_counter() - start:.0f} s"
    )


@app.command()
def evaluate(
    bundle: Annotated[
        Path, typer.Argument(help="Model bundle directory.", exists=True, file_okay=False)
    ],
    cohort: Annotated[
        Path,
        typer.Argument(help="Cohort CSV (Mask may be absent: auto-segmentation).", exists=True),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for predictions.csv, metrics.json, report.")
    ],
    workers: WorkersOption = 1,
    auto_roi: Annotated[
        bool,
        typer.Option(
            "--auto-roi", help="Ignore the Mask column: auto-segment every hip (the deployed path)."
        ),
    ] = False,
) -> None:
    """Score a labelled cohort with a bundle at its fixed thresholds and report the metrics."""
    from model_bundle.bundle import load_bundle
    from model_bundle.external import cohort_metrics, score_cohort
    from model_bundle.features import read_cohort
    from model_bundle.publish import PREDICTION_COLUMNS, csv_bytes, dump_json
    from model_bundle.report import render_evaluation_report

    try:
        loaded = load_bundle(bundle)
        jobs = read_cohort(cohort)
        if auto_roi:
            jobs = [dataclasses.replace(job, mask=None) for job in jobs]
        recorded = loaded.json("metrics.json")
        raw = recorded.get("thresholds") if isinstance(recorded, dict) else None
        if not isinstance(raw, dict):
            raise KeyError("the bundle's metrics.json has no per-model thresholds")
        thresholds = {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}
    except (OnfhError, KeyError, TypeError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]evaluate[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("series", total=len(jobs))
        scored = score_cohort(
            bundle, jobs, workers=workers, on_job=lambda _: progress.advance(task)
        )
    rows = [row.as_csv() for row in scored]
    metrics = cohort_metrics(rows, thresholds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.csv").write_bytes(csv_bytes(rows, (*PREDICTION_COLUMNS, "roi_source")))
    (out / "metrics.json").write_text(dump_json(metrics), encoding="utf-8")
    report = render_evaluation_report(
        rows, metrics, bundle_summary=loaded.summary(), cohort_name=cohort.name
    )
    (out / "report.html").write_text(report, encoding="utf-8")
    for key, entry in metrics["models"].items():
        auc = entry.get("auc")
        if auc and auc["estimate"] is not None:
            low, high = auc["ci95"]
            # A tiny cohort (or one class) has no confidence interval.
            ci = f" (95% CI {low:.3f}-{high:.3f})" if low is not None and high is not None else ""
            console.print(f"AUC {key}: {auc['estimate']:.3f}{ci}")
    for miss in metrics["hips_not_scored"]:
        console.print(
            f"[yellow]not scored[/yellow] {miss['PatientID']} {miss['Side']}: {miss['reason']}"
        )
    console.print(f"{len(rows)} hips in {time.perf_counter() - start:.0f} s -> {out}")
