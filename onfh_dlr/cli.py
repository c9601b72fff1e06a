"""The ``onfh-dlr`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="onfh-dlr: early ONFH deep-learning radiomics service")


@app.callback()
def main() -> None:
    """onfh-dlr command line."""
