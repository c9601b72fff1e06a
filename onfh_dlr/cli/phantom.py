"""``onfh-dlr phantom``: synthetic hip MRI cohorts with ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onfh_dlr.cli.root import WorkersOption, app, console, err_console
from onfh_dlr.errors import OnfhError


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
    sites: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Phantom site profile(s), comma-separated (patients assigned round-robin); "
            "see --list-sites. Default: the original single-profile phantom.",
        ),
    ] = None,
    list_sites: Annotated[
        bool, typer.Option("--list-sites", help="List the site profiles and exit.")
    ] = False,
) -> None:
    """Generate synthetic coronal T2-FS hip MRI studies with ground truth and cohort.csv."""
    from phantom import SITES
    from phantom.cohort import generate_cohort

    if list_sites:
        for name, profile in SITES.items():
            console.print(f"{name}: {profile.summary}", soft_wrap=True)
        raise typer.Exit(0)
    site_names = [n.strip() for n in sites.split(",") if n.strip()] if sites else None
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
                sites=site_names,
            )
        except OnfhError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    elapsed = time.perf_counter() - start
    console.print(
        f"wrote {cases} cases to {out_dir} in {elapsed:.1f} s ({elapsed / cases:.2f} s per case)"
    )
    console.print(f"cohort: {csv_path}")
