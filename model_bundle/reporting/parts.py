# ruff: noqa: RUF001
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""The parts the training and the evaluation report share: the page with its CSS, the header
with the bundle's identity and banners, and the metrics, DeLong and calibration tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from model_bundle.reporting.cohort import _ROI_SOURCE_NAMES
from model_bundle.reporting.html import (
    _figure,
    _Html,
    _join,
    _note,
    _section,
    _table,
    _tag,
    _with_counts,
)
from model_bundle.reporting.text import (
    _MAX_REASONS,
    _METRICS,
    SYNTHETIC_WARNING,
    _auc_text,
    _get,
    _name,
    _num,
    _p,
)

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
color:#1d232a;background:#fff;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:0 24px 48px}
header{background:#1d3557;color:#fff;padding:18px 24px}
header h1{margin:0 0 6px;font-size:1.5em}
header table{color:#fff;border:none;margin:0}
header td,header th{border:none;padding:1px 14px 1px 0;background:none;color:#fff}
.banner{background:#b00020;color:#fff;font-weight:700;padding:12px 24px;font-size:1.1em}
.banner .headline{text-transform:uppercase;letter-spacing:.04em}
.leak{border:4px solid #b00020;background:#fff0f0;padding:4px 18px;margin:18px 0}
h2{border-bottom:2px solid #1d3557;padding-bottom:3px;margin-top:36px}
h3{margin-top:24px}
nav ul{columns:3;padding-left:18px}
table{border-collapse:collapse;margin:10px 0 16px;font-size:.9em}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #c9d1d9;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}
tr.hl td{background:#fff7d6;font-weight:600}
td .n{color:#6a737d;font-size:.85em}
figure{margin:12px 0}
figure img{max-width:100%;height:auto;border:1px solid #e1e4e8}
figcaption,.note{color:#4a5560;font-size:.9em}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:10px;overflow-x:auto;font-size:.85em}
blockquote{border-left:4px solid #b00020;margin:8px 0;padding:2px 12px;background:#fff5f5}
.summary{background:#f3f7fb;border:1px solid #c9d8e8;padding:8px 18px}
.card{border:1px solid #c9d1d9;padding:0 18px}
footer{color:#6a737d;font-size:.85em;margin-top:40px}
"""


def _bundle_rows(summary: Mapping[str, Any], created: str = "Created") -> list[tuple[str, object]]:
    """The header rows that describe the bundle (:meth:`Bundle.summary` keys)."""
    return [
        ("Device UID", summary.get("device_uid", "n/a")),
        (created, summary.get("created", "n/a")),
        ("Deployed model", _name(str(summary.get("deployed_model", "n/a")))),
        ("Threshold", _num(summary.get("threshold"))),
    ]


def _header_block(
    summary: Mapping[str, Any], kind: str, rows: Sequence[tuple[str, object]]
) -> _Html:
    """``<header>``: "name version — kind" and a table of ``rows``."""
    name = str(summary.get("name", "onfh-dlr model"))
    version = str(summary.get("version", ""))
    return _tag(
        "header",
        _tag("h1", f"{name} {version} — {kind}".strip()),
        _tag("table", *(_tag("tr", _tag("th", k), _tag("td", v)) for k, v in rows)),
    )


def _banners(summary: Mapping[str, Any]) -> list[_Html]:
    """The synthetic or not-for-clinical-use banner, when the bundle says so."""
    banners: list[_Html] = []
    warning = str(summary.get("warning") or "").strip()
    if summary.get("synthetic"):
        banners.append(
            _tag(
                "div",
                "⚠ ",
                _tag("span", SYNTHETIC_WARNING, class_="headline"),
                f". {warning}" if warning and warning != SYNTHETIC_WARNING else "",
                class_="banner",
                role="alert",
            )
        )
    elif summary.get("not_for_clinical_use"):
        banners.append(
            _tag(
                "div",
                "⚠ ",
                _tag("span", "not for clinical use", class_="headline"),
                f". {warning}" if warning else "",
                class_="banner",
                role="alert",
            )
        )
    return banners


def _roi_source_table(sources: Mapping[str, int], column: str) -> _Html:
    return _table(
        ("ROI source", column), [(_ROI_SOURCE_NAMES.get(k, k), v) for k, v in sources.items()]
    )


def _reason_table(reasons: Sequence[tuple[str, int, int, int]], caption: str) -> _Html:
    """``(reason, hips, ONFH hips, healthy hips)`` rows, the first :data:`_MAX_REASONS`.

    Reasons are grouped, never listed per patient: a report must not carry patient IDs.
    """
    rows: list[tuple[str, int, int, int]] = list(reasons[:_MAX_REASONS])
    rest = reasons[_MAX_REASONS:]
    if rest:
        rows.append(
            (
                f"… {len(rest)} other reasons",
                sum(r[1] for r in rest),
                sum(r[2] for r in rest),
                sum(r[3] for r in rest),
            )
        )
    return _table(("Reason", "Hips", "ONFH", "healthy"), rows, caption=caption)


def _split_entry(split_metrics: object, key: str) -> Mapping[str, Any]:
    """One model's entry of one set of hips' metrics (empty when absent)."""
    entry = _get(split_metrics, "models", key)
    return entry if isinstance(entry, Mapping) else {}


def _model_metrics_table(
    split_metrics: object,
    keys: Sequence[str],
    deployed: str,
    *,
    title: str,
    thresholds: Mapping[str, float] | None = None,
) -> _Html:
    """The AUC and the threshold metrics of ``keys`` on one set of hips, one column each.

    ``thresholds`` are shown where an entry lacks its own ``threshold``.
    """
    fallback = thresholds or {}
    header = ["Metric", *(_name(k) + (" (deployed)" if k == deployed else "") for k in keys)]
    entries = [_split_entry(split_metrics, k) for k in keys]
    rows: list[list[object]] = [["AUC (95 % CI, DeLong)", *(_auc_text(e) for e in entries)]]
    for key, label in _METRICS:
        rows.append([label, *(_with_counts(_get(e, "metrics", key)) for e in entries)])
    rows.append(
        [
            "Threshold",
            *(
                _num(e.get("threshold", fallback.get(k)))
                for k, e in zip(keys, entries, strict=True)
            ),
        ]
    )
    n, n_pos = _get(split_metrics, "n"), _get(split_metrics, "n_positive")
    return _table(
        header,
        rows,
        caption=f"{title} (n = {_num(n, 0)}, {_num(n_pos, 0)} with ONFH)",
    )


_METRICS_NOTE: Final = (
    "Cells: estimate (95 % CI) and, in grey, the counts behind it. Proportions have "
    "Wilson intervals, F1 a stratified bootstrap interval, the AUC a DeLong interval. "
    "Precision = PPV and recall = sensitivity (the paper reports both names)."
)


def _delong_table(delong: object, where: str) -> _Html:
    """The DeLong tests of one set of hips (``where``, e.g. "test hips"), or why none."""
    delong_rows = []
    if isinstance(delong, list):
        for t in delong:
            if not isinstance(t, Mapping):
                continue
            delong_rows.append(
                (
                    f"{_name(str(t.get('a')))} vs {_name(str(t.get('b')))}",
                    _num(t.get("auc_a")),
                    _num(t.get("auc_b")),
                    _num(t.get("diff")),
                    _num(t.get("z"), 2),
                    _p(t.get("p_value")),
                    t.get("note") or "",
                )
            )
    if not delong_rows:
        return _note(f"No DeLong tests (the {where} need both classes).")
    return _table(
        ("Comparison", "AUC a", "AUC b", "Difference", "z", "p", "Note"),
        delong_rows,
        caption=f"DeLong tests between the models ({where}, paired, two-sided)",
    )


_CALIBRATION_HEADER: Final = ("Slope", "Intercept", "HL statistic", "HL dof", "HL p", "Note")


_CALIBRATION_NOTE: Final = (
    "Calibration slope (ideal 1; below 1: predictions too extreme) and intercept "
    "(ideal 0; above 0: risk under-predicted) by logistic recalibration. "
    "Hosmer–Lemeshow: a small p suggests miscalibration, a large p proves nothing "
    "with few hips."
)


def _calibration_cells(entry: Mapping[str, Any]) -> tuple[object, ...]:
    """One model's cells under :data:`_CALIBRATION_HEADER`."""
    hl = entry.get("hosmer_lemeshow")
    cal = entry.get("calibration")
    hl = hl if isinstance(hl, Mapping) else {}
    cal = cal if isinstance(cal, Mapping) else {}
    notes = "; ".join(str(n) for n in (hl.get("note"), cal.get("note")) if n)
    return (
        _num(cal.get("slope"), 2),
        _num(cal.get("intercept"), 2),
        _num(hl.get("statistic"), 2),
        hl.get("dof", "n/a"),
        _p(hl.get("p_value")),
        notes,
    )


def _calibration_plot(png: str | None, where: str) -> _Html:
    """The calibration figure of ``where`` (e.g. "test hips"), or why there is none."""
    if png is None:
        return _note(f"No calibration curve (the {where} need both classes).")
    return _figure(
        png,
        f"Calibration plot, {where}",
        f"Calibration on the {where}: observed fraction with ONFH against the mean "
        "predicted probability in quantile bins, with 95 % Wilson intervals.",
    )


def _decision_section(png: str | None, where: str = "test hips") -> _Html:
    if png is None:
        return _section(
            "decision-curve",
            "Decision curve",
            _note(f"No decision curve (the {where} need both classes)."),
        )
    return _section(
        "decision-curve",
        "Decision curve",
        _figure(
            png,
            f"Decision curves on the {where}",
            "Net benefit of acting on each model's probability, against treating every hip "
            "as ONFH (treat all) or none (treat none), by threshold probability. A model "
            "helps where its curve lies above both.",
        ),
    )


def _page(
    summary: Mapping[str, Any],
    kind: str,
    header: _Html,
    overview: _Html,
    sections: Sequence[tuple[str, str, _Html]],
) -> str:
    """The HTML document: header, overview, a table of contents, the sections, a footer."""
    # Internal anchors only (href="#..."): the file links nowhere else.
    nav = _tag(
        "nav",
        _tag(
            "ul",
            *(_tag("li", _tag("a", title, href=f"#{anchor}")) for anchor, title, _ in sections),
        ),
    )
    title = f"{summary.get('name', 'onfh-dlr model')} {summary.get('version', '')}"
    body = _join(
        [
            header,
            _tag(
                "main",
                overview,
                nav,
                *(content for _, _, content in sections),
                _tag(
                    "footer",
                    "Generated by onfh-dlr (model_bundle.reporting). Self-contained: no external "
                    "resources. Numbers: 3 decimals for AUC and proportions; n/a where a "
                    "value is undefined, with the reason where one is known.",
                ),
            ),
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        + _tag(
            "html",
            _tag(
                "head",
                _Html('<meta charset="utf-8">'),
                _Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
                _tag("title", f"{title.strip()} — {kind}"),
                _tag("style", _Html(_CSS)),
            ),
            _tag("body", body),
            lang="en",
        )
        + "\n"
    )
