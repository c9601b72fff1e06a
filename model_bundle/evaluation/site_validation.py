"""A leave-one-site-out validation, as a bundle carries it (``site_validation.json``).

``bench/leave_one_site_out.py`` trains one bundle per held-out phantom site and scores
that site as ``evaluate --auto-roi`` does; ``onfh-dlr train --site-validation`` copies its
summary into the new bundle, whose model card and report then show the per-site table.
The bundle trained on every site is not the bundle any fold scored: the table says how
the *recipe* transfers to a site it never saw, which is the question a new site asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onfh_dlr.errors import ConfigurationError


@dataclass(frozen=True)
class SiteValidation:
    """A leave-one-site-out summary.

    Attributes
    ----------
    table : str
        The per-held-out-site table as Markdown.
    sites : tuple of str
        Every site of the cohort.
    all_targets_met : bool
        Whether every held-out site met every target.
    summary : dict
        The bench's whole JSON summary (per-site metrics, targets, cohort, wall time).
    """

    table: str
    sites: tuple[str, ...]
    all_targets_met: bool
    summary: dict[str, Any]


def read_site_validation(path: Path) -> SiteValidation:
    """Read ``leave_one_site_out.json`` as the bench writes it.

    Raises
    ------
    ConfigurationError
        The file is not such a summary.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: a site validation summary is a JSON object")
    table, sites, results = data.get("table"), data.get("sites"), data.get("results")
    if not isinstance(table, str) or not isinstance(sites, list) or not isinstance(results, list):
        raise ConfigurationError(
            f"{path}: not a leave-one-site-out summary (needs table, sites and results)"
        )
    if not results:
        raise ConfigurationError(f"{path}: the summary has no held-out site")
    met = all(
        isinstance(r, dict) and isinstance(r.get("meets"), dict) and all(r["meets"].values())
        for r in results
    )
    return SiteValidation(table, tuple(str(s) for s in sites), met, data)


__all__ = ["SiteValidation", "read_site_validation"]
