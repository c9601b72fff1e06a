"""The ``onfh-dlr`` command line.

The entry point is the one place that reads the process environment: it builds the
:class:`~onfh_dlr.settings.Settings` once and passes them on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

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
        "--config", help="YAML settings file (else ONFH_CONFIG).", exists=True, dir_okay=False
    ),
]


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
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes to use.")] = 1,
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
    """Generate one phantom study, read it back, and show what it holds."""
    from phantom.demo import run_demo

    settings = _settings(config)
    try:
        run_demo(settings, console)
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


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
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes to use.")] = 1,
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
