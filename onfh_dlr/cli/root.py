"""The root ``onfh-dlr`` Typer app and what every command module shares.

The entry point is the one place that reads the process environment: each command builds
the :class:`~onfh_dlr.settings.Settings` once (:func:`load_cli_settings`) and passes them on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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


def load_cli_settings(config: Path | None) -> Settings:
    """The settings from ``config`` and the environment; a bad setting exits with code 2."""
    try:
        return load_settings(config, dict(os.environ))
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.callback()
def main() -> None:
    """onfh-dlr command line."""
