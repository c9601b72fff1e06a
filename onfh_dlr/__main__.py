"""``python -m onfh_dlr``: the command line (what ``serve`` starts its children with)."""

from onfh_dlr.cli import app

app(prog_name="onfh-dlr")
