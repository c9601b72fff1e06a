"""The status page's ``/drift`` section: the drift window's score and positive-call rate
over time as small inline SVG plots, and the latest window's inputs.

Rendered on the server from the snapshots the worker records
(:func:`onfh_dlr.drift_store.snapshots`): no script, no external fetch. The snapshots hold
feature names and numbers only, no identifiers; the route still sits behind the status
page's token like every other. Imported by :mod:`listener.status_page` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Final

from onfh_dlr.drift_store import DriftLevel, DriftSnapshot

#: The drift score's thresholds (model_bundle.monitoring.window: WATCH_AT, DRIFT_AT);
#: repeated because the listener may not import the model core.
WATCH_AT: Final = 0.25
DRIFT_AT: Final = 0.5
_W: Final = 560
_H: Final = 140
_PAD: Final = 28

_WORDS: Final = {
    DriftLevel.NOT_ENOUGH_DATA: "not enough data",
    DriftLevel.NO_DRIFT: "no drift",
    DriftLevel.WATCH: "watch",
    DriftLevel.DRIFT: "drift",
}


def _x(i: int, n: int) -> float:
    return _PAD + (_W - 2 * _PAD) * (i / max(n - 1, 1))


def _y(value: float) -> float:
    return _H - _PAD + (2 * _PAD - _H) * min(max(value, 0.0), 1.0)


def svg_plot(
    title: str,
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    lines: Sequence[tuple[float, str]] = (),
) -> str:
    """A 0-1 line plot over the snapshots: each ``(label, colour, values)`` one polyline
    (a ``None`` breaks it), each ``(value, colour)`` of ``lines`` a dashed threshold."""
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' "
        f"role='img' aria-label='{escape(title)}'>",
        f"<rect x='0' y='0' width='{_W}' height='{_H}' fill='#fbfcfd' stroke='#dde3ea'/>",
        f"<text x='{_PAD}' y='16' font-size='12'>{escape(title)}</text>",
    ]
    for value in (0.0, 1.0):
        parts.append(
            f"<text x='4' y='{_y(value) + 4:.1f}' font-size='10'>{value:g}</text>"
            f"<line x1='{_PAD}' x2='{_W - _PAD}' y1='{_y(value):.1f}' y2='{_y(value):.1f}' "
            "stroke='#dde3ea'/>"
        )
    for value, colour in lines:
        parts.append(
            f"<line x1='{_PAD}' x2='{_W - _PAD}' y1='{_y(value):.1f}' y2='{_y(value):.1f}' "
            f"stroke='{colour}' stroke-dasharray='4 3'/>"
        )
    for k, (label, colour, values) in enumerate(series):
        runs: list[list[str]] = [[]]
        for i, point in enumerate(values):
            if point is None:
                runs.append([])
            else:
                runs[-1].append(f"{_x(i, len(values)):.1f},{_y(point):.1f}")
        for run in runs:
            if len(run) == 1:
                x, y = run[0].split(",")
                parts.append(f"<circle cx='{x}' cy='{y}' r='2' fill='{colour}'/>")
            elif run:
                parts.append(
                    f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' "
                    f"points='{' '.join(run)}'/>"
                )
        parts.append(
            f"<text x='{_W - _PAD - 150}' y='{16 + 12 * k}' font-size='10' "
            f"fill='{colour}'>{escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def drift_body(history: Sequence[DriftSnapshot]) -> str:
    """The ``/drift`` page's body for ``history`` (oldest first)."""
    if not history:
        return (
            "<p>No scored hips yet, or the deployed bundle has no reference statistics: "
            "nothing to compare.</p>"
        )
    latest = history[-1]
    state = _WORDS[latest.level]
    headline = (
        f"<p>Now: <strong>{escape(state)}</strong> over the last {latest.hips} scored hips"
        + ("" if latest.score is None else f", drift score {latest.score:.2f}")
        + (
            ""
            if latest.positive_rate is None or latest.expected_rate is None
            else f"; positive calls {latest.positive_rate:.0%} "
            f"(expected {latest.expected_rate:.0%}"
            + ("" if latest.rate_pvalue is None else f", binomial p = {latest.rate_pvalue:.2g}")
            + ")"
        )
        + ".</p>"
    )
    explain = (
        "<p>Score = max(share of the model's inputs shifted, share of the acquisition "
        "parameters shifted, min(1, -log10(binomial p of the positive calls) / 6)). An input "
        "is shifted when, at 0.05 / inputs of its group, its PSI &gt; 0.25 with a significant "
        "Kolmogorov-Smirnov test, or more of its values fall outside the training range "
        f"than chance allows. Below {WATCH_AT} no drift, from {WATCH_AT} watch, from "
        f"{DRIFT_AT} drift (the OnfhInputDrift alert). Fewer hips than ONFH_DRIFT_MIN_HIPS: "
        "not enough data.</p>"
    )
    score_plot = svg_plot(
        f"Drift score, last {len(history)} scored jobs",
        [("drift score", "#b3261e", [s.score for s in history])],
        [(WATCH_AT, "#f0a020"), (DRIFT_AT, "#b3261e")],
    )
    rate_plot = svg_plot(
        "Positive-call rate in the window",
        [
            ("window", "#1a4f9c", [s.positive_rate for s in history]),
            ("expected", "#17683a", [s.expected_rate for s in history]),
        ],
    )
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td>{i.psi:.3f}</td><td>{i.ks:.3f}</td>"
        f"<td>{i.ks_p:.2g}</td><td>{'shifted' if i.shifted else ''}</td></tr>"
        for name, i in sorted(latest.inputs.items(), key=lambda item: -item[1].psi)
    )
    table = (
        "<h2>Inputs in the latest window</h2><table><thead><tr><th>Input</th><th>PSI</th>"
        f"<th>KS</th><th>KS p</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return headline + explain + score_plot + "<br>" + rate_plot + table


__all__ = ["DRIFT_AT", "WATCH_AT", "drift_body", "svg_plot"]
