"""Model commands: ``features``, ``score``, ``train``, ``evaluate``, ``calibrate``, ``bundle
verify``.

The command bodies were moved here verbatim from the former ``onfh_dlr/cli.py``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from onfh_dlr.cli.root import ConfigOption, WorkersOption, app, console, err_console
from onfh_dlr.cli.root import load_cli_settings as _settings  # the name the bodies use
from onfh_dlr.errors import OnfhError


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
    """Score one series offline (no network): the service's pipeline, SR, SEG and card to --out."""
    from model_bundle.serving import BundleModel
    from worker.jobs import default_bundle_dir
    from worker.pipeline import score_series, write_outputs

    settings = _settings(config)
    bundle_dir = bundle or settings.bundle or default_bundle_dir()
    try:
        with console.status("loading the bundle"):
            model = BundleModel.load(bundle_dir, deployed_only=True)
        with console.status(f"scoring {series}"):
            scored = score_series(series, model, seg=seg)
        written = write_outputs(scored, out)
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
    console.print(
        f"SR:   {written.sr}\nSEG:  {written.seg}\nCard: {written.card}\nPDF:  {written.pdf}"
    )


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
        FEATURE_NAMES,
        FeatureSpec,
        HipRow,
        cohort_features,
        read_cohort,
        series_job,
        write_feature_table,
    )

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
        list[Path],
        typer.Argument(
            help="Cohort CSV(s): PatientID, Side, Image, Mask, Label; several are trained on "
            "together.",
            exists=True,
        ),
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
    radiomics_params: Annotated[
        Path | None,
        typer.Option(
            "--radiomics-params",
            help="PyRadiomics parameter file for the features (default: the packaged one); "
            "the bundle carries it.",
            exists=True,
            dir_okay=False,
            resolve_path=True,
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
    site_validation: Annotated[
        Path | None,
        typer.Option(
            "--site-validation",
            help="leave_one_site_out.json from bench/leave_one_site_out.py (the same recipe "
            "per held-out site): carried by the bundle and shown in its model card and report.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
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
    from model_bundle.training import (
        RoiProtocol,
        TrainingRun,
        plan_training,
        read_train_config,
        run_training,
    )

    if roi not in ("head", "lesion"):
        err_console.print(f"[red]error:[/red] --roi must be head or lesion, not {roi!r}")
        raise typer.Exit(2)

    from model_bundle.evaluation import read_site_validation

    try:
        validation = None if site_validation is None else read_site_validation(site_validation)
        plan = plan_training(
            cohort,
            out,
            config=read_train_config(config, pretrained, radiomics_params),
            cache=cache,
            roi_protocol=RoiProtocol(roi),
        )
    except (OnfhError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    features = progress.add_task("features", total=len(plan.jobs))
    epochs: list[TaskID] = []  # the fine-tuning bar appears when fine-tuning starts

    def on_epoch(*_: object) -> None:
        if not epochs:
            epochs.append(progress.add_task("fine-tuning", total=plan.config.epochs))
        progress.advance(epochs[0])

    try:
        with progress:
            run: TrainingRun = run_training(
                plan,
                name=name,
                version=version,
                synthetic=synthetic,
                workers=workers,
                log=console.print,
                on_hip=lambda: progress.advance(features),
                on_epoch=on_epoch,
                site_validation=validation,
            )
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if run.shape_leak is not None:
        console.print(
            "[yellow]label leak:[/yellow] shape features alone reach test AUC "
            f"{run.shape_leak['test_auc']:.3f} with the lesion ROI protocol"
        )
    for s in run.excluded:
        console.print(f"[yellow]excluded[/yellow] {s.patient_id} {s.side}: {s.reason}")
    bundle = run.bundle
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
    from model_bundle.evaluation import cohort_metrics, score_cohort
    from model_bundle.features import read_cohort
    from model_bundle.reporting import render_evaluation_report
    from model_bundle.training import PREDICTION_COLUMNS, csv_bytes, dump_json

    try:
        loaded = load_bundle(bundle)
        jobs = read_cohort(cohort)
        if auto_roi:
            jobs = [dataclasses.replace(job, mask=None) for job in jobs]
        thresholds = loaded.thresholds()
    except OnfhError as exc:
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


@app.command()
def calibrate(
    bundle: Annotated[
        Path, typer.Argument(help="Model bundle to recalibrate.", exists=True, file_okay=False)
    ],
    cohort: Annotated[
        Path,
        typer.Argument(
            help="Labelled local cohort CSV, as for evaluate (Mask may be absent).", exists=True
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory of the new, calibrated bundle.")],
    sensitivity: Annotated[
        float | None,
        typer.Option(
            "--sensitivity",
            help="Threshold: the highest reaching this sensitivity (default: Youden's).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    workers: WorkersOption = 1,
    auto_roi: Annotated[
        bool,
        typer.Option("--auto-roi", help="Ignore the Mask column: auto-segment every hip."),
    ] = False,
) -> None:
    """Recalibrate a bundle on a labelled local cohort (>= 10 patients) into a new bundle."""
    from model_bundle.calibration import ThresholdRule, calibrate_bundle, sensitivity_rule_note
    from model_bundle.features import read_cohort

    rule = ThresholdRule.YOUDEN if sensitivity is None else ThresholdRule.SENSITIVITY
    start = time.perf_counter()
    try:
        jobs = read_cohort(cohort)
        if auto_roi:
            jobs = [dataclasses.replace(job, mask=None) for job in jobs]
        with Progress(
            TextColumn("[bold]calibrate[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("series", total=len(jobs))
            result = calibrate_bundle(
                bundle,
                jobs,
                out,
                rule=rule,
                target_sensitivity=sensitivity,
                workers=workers,
                on_job=lambda _: progress.advance(task),
            )
    except (OnfhError, FileExistsError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    new = result.bundle
    if sensitivity is not None:
        note = sensitivity_rule_note(int(result.before.get("n_positive", 0)), sensitivity)
        if note is not None:
            console.print(f"[yellow]note:[/yellow] {note}")
    lineage = new.manifest.calibration
    parent_uid = lineage.parent_device_uid if lineage is not None else ""
    for key, model in result.recalibration.models.items():
        console.print(
            f"{key}: logit p' = {model.intercept:.3f} + {model.slope:.3f} logit p "
            f"({model.method}); threshold {result.recalibration.thresholds[key]:.3f}"
        )
    console.print(
        f"calibrated on {result.patients} patients / {result.hips} hips in "
        f"{time.perf_counter() - start:.0f} s -> {new.directory}\n"
        f"Device UID {new.device_uid} (parent {parent_uid}), version {new.manifest.version}"
    )
