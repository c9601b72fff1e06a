# ruff: noqa: RUF001
# The page uses typographic signs (en dash, ellipsis); the tests look for them.
"""The external-evaluation report (:func:`~model_bundle.reporting.render_evaluation_report`).

The predictions rows are built from seeded random labels and probabilities (Rad and DLR
informative, DL barely), with some hips not scored for reasons that carry markup; the
metrics are those of ``onfh-dlr evaluate``: :func:`~model_bundle.evaluation.external.cohort_metrics`
of the rows at fixed thresholds.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from html_checks import ParsedHtml, parse_html

from model_bundle.evaluation import cohort_metrics
from model_bundle.reporting import SYNTHETIC_WARNING, render_evaluation_report

THRESHOLDS: dict[str, float] = {"rad": 0.5, "dl": 0.45, "dlr": 0.55}
SCRIPT_REASON = 'HeadNotFoundError: <script>alert("x")</script> & co'
OTHER_HEAD_REASON = "HeadNotFoundError: no femoral head in the field of view"
SIDE_REASON = "no ROI for side 'R'"
# (reason, hips); the blank reason is shown as "no reason recorded".
FAILURES: tuple[tuple[str, int], ...] = (
    (SCRIPT_REASON, 3),
    (OTHER_HEAD_REASON, 2),
    (SIDE_REASON, 2),
    ("", 1),
)
N_PATIENTS = 60


def _rows(seed: int = 11, *, labels: str = "mixed") -> list[dict[str, str]]:
    """``N_PATIENTS`` x 2 hips; the first hips fail with :data:`FAILURES`' reasons.

    One scored hip has no label (scored, but not in the metrics). ``labels="healthy"``
    makes every label 0.
    """
    rng = np.random.default_rng(seed)
    reasons = [reason for reason, count in FAILURES for _ in range(count)]
    rows: list[dict[str, str]] = []
    for i in range(2 * N_PATIENTS):
        label = int(rng.random() < 0.4) if labels == "mixed" else 0
        row = {
            # "-" is not in the base64 alphabet: an ID found in the page is really there.
            "PatientID": f"PAT-{i // 2:04d}",
            "Side": "LR"[i % 2],
            "Label": str(label),
        }
        if i < len(reasons):
            rows.append(
                row
                | {"prob_rad": "", "prob_dl": "", "prob_dlr": "", "call": "", "roi_source": ""}
                | {"reason": reasons[i]}
            )
            continue
        sign = 2 * label - 1
        logits = {
            "rad": 1.4 * sign + rng.normal(),
            "dl": 0.3 * sign + rng.normal(),
            "dlr": 1.8 * sign + rng.normal(),
        }
        probs = {k: 1.0 / (1.0 + np.exp(-v)) for k, v in logits.items()}
        row |= {f"prob_{k}": f"{p:.6f}" for k, p in probs.items()}
        row |= {
            "call": str(int(probs["dlr"] >= THRESHOLDS["dlr"])),
            "roi_source": "seg" if i % 7 == 0 else "auto",
            "reason": "",
        }
        rows.append(row)
    rows[-1]["Label"] = ""  # scored, no label
    return rows


def _summary(*, synthetic: bool = True) -> dict[str, Any]:
    """What Bundle.summary() returns."""
    return {
        "name": "onfh-dlr-test",
        "version": "0.0.1",
        "device_uid": "2.25.123456789",
        "created": "2025-01-02T03:04:05Z",
        "deployed_model": "dlr",
        "threshold": THRESHOLDS["dlr"],
        "feature_counts": {"rad": 1197, "dl": 12, "dlr": 1209},
        "synthetic": synthetic,
        "not_for_clinical_use": synthetic,
        "warning": "Trained on phantom data." if synthetic else "",
        "format_version": 1,
        "files": 9,
        "directory": "/tmp/bundle",
    }


def _pngs(parsed: ParsedHtml) -> list[bytes]:
    sources = [v for t, n, v in parsed.attrs if t == "img" and n == "src"]
    return [
        base64.b64decode(s.removeprefix("data:image/png;base64,"), validate=True) for s in sources
    ]


def _ci(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['estimate']:.3f} ({low:.3f}–{high:.3f})"


def _render(
    rows: list[dict[str, str]], metrics: Mapping[str, Any], *, synthetic: bool = True
) -> str:
    return render_evaluation_report(
        rows, metrics, bundle_summary=_summary(synthetic=synthetic), cohort_name="Hospital <B>"
    )


@pytest.fixture(scope="module")
def evaluated() -> tuple[list[dict[str, str]], dict[str, Any], str]:
    rows = _rows()
    metrics = cohort_metrics(rows, THRESHOLDS)
    return rows, metrics, _render(rows, metrics)


def test_page_is_self_contained(
    evaluated: tuple[list[dict[str, str]], dict[str, Any], str],
) -> None:
    _, _, document = evaluated
    assert document.startswith("<!DOCTYPE html>")
    parsed = parse_html(document)
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    for tag, name, value in parsed.attrs:
        if name in ("src", "href"):
            assert not re.match(r"\s*(https?:)?//", value, re.I), (tag, name, value)
            assert value.startswith(("#", "data:image/png;base64,")), (tag, name, value)
    pngs = _pngs(parsed)
    assert len(pngs) >= 3  # ROC, calibration, decision curve
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    assert "url(" not in document
    # Every href is an anchor of the page itself.
    anchors = {v for _, n, v in parsed.attrs if n == "id"}
    for _, name, value in parsed.attrs:
        if name == "href":
            assert value.removeprefix("#") in anchors


def test_header_summary_and_metrics(
    evaluated: tuple[list[dict[str, str]], dict[str, Any], str],
) -> None:
    rows, metrics, document = evaluated
    parsed = parse_html(document)
    text = parsed.joined()
    for value in (
        "onfh-dlr-test",
        "0.0.1",
        "2.25.123456789",
        "Hospital <B>",
        "external evaluation",
    ):
        assert value in text
    assert "Hospital &lt;B&gt;" in document  # the cohort name is text, not markup
    scored = sum(1 for r in rows if r["prob_dlr"])
    assert f"{scored} of {len(rows)} hips scored" in text
    assert metrics["n"] == scored - 1  # the unlabelled hip is not in the metrics
    assert "1 hip scored without a 0/1 label is not in them" in text
    assert f"Deployed model: DLR, at its fixed threshold {THRESHOLDS['dlr']:.3f}" in text
    # Every model's numbers exactly as evaluate_split reported them.
    for key in THRESHOLDS:
        entry = metrics["models"][key]
        assert _ci(entry["auc"]) in text, key
        for name in ("sensitivity", "specificity", "f1"):
            assert _ci(entry["metrics"][name]) in text, (key, name)
    table = parsed.table("Scored hips")
    assert table[0] == ["Metric", "Rad", "DL", "DLR (deployed)"]
    labels = [row[0] for row in table[1:]]
    for label in ("Accuracy", "PPV", "NPV", "Precision", "Recall", "F1", "Threshold"):
        assert label in labels
    assert table[-1] == ["Threshold", *(f"{THRESHOLDS[k]:.3f}" for k in ("rad", "dl", "dlr"))]
    delong = parsed.table("DeLong tests")
    assert len(delong) == 1 + 3
    for comparison in metrics["delong"]:
        assert f"{comparison['auc_a']:.3f}" in text
    # Hosmer-Lemeshow on external data: dof = groups (10 deciles of risk here).
    calibration = parsed.table("Calibration and Hosmer–Lemeshow")
    assert calibration[0][:6] == ["Model", "Slope", "Intercept", "HL statistic", "HL dof", "HL p"]
    for row, key in zip(calibration[1:], ("rad", "dl", "dlr"), strict=True):
        entry = metrics["models"][key]
        assert row[4] == str(entry["hosmer_lemeshow"]["dof"]) == "10"
        assert row[1] == f"{entry['calibration']['slope']:.2f}"
    counts = {row[0]: row[1] for row in parsed.table("Hips of the cohort")[1:]}
    assert counts["Hips in the cohort"] == str(len(rows))
    assert counts["Not scored"] == str(sum(n for _, n in FAILURES))
    # No patient is named anywhere.
    assert not any(r["PatientID"] in document for r in rows)


def test_banner_only_when_the_bundle_says_so(
    evaluated: tuple[list[dict[str, str]], dict[str, Any], str],
) -> None:
    rows, metrics, document = evaluated
    assert 'class="banner"' in document
    assert SYNTHETIC_WARNING in parse_html(document).joined()
    plain = _render(rows, metrics, synthetic=False)
    assert 'class="banner"' not in plain
    assert SYNTHETIC_WARNING not in plain
    assert "not for clinical use" not in plain


def test_reasons_are_escaped_and_counted(
    evaluated: tuple[list[dict[str, str]], dict[str, Any], str],
) -> None:
    rows, _, document = evaluated
    parsed = parse_html(document)
    assert "<script" not in document
    assert "script" not in parsed.tags
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in document
    by_reason = {row[0]: row[1:] for row in parsed.table("Hips not scored, by reason")[1:]}
    for reason, count in FAILURES:
        hips = [r for r in rows if not r["prob_dlr"] and r["reason"] == reason]
        onfh = sum(1 for r in hips if r["Label"] == "1")
        expected = [str(count), str(onfh), str(count - onfh)]
        assert by_reason[reason or "no reason recorded"] == expected, reason
    by_class = {row[0]: row[1] for row in parsed.table("Hips not scored, by error class")[1:]}
    assert by_class["HeadNotFoundError"] == "5"
    assert by_class[SIDE_REASON] == "2"


def test_a_model_missing_from_the_thresholds() -> None:
    rows = _rows(seed=3)
    thresholds = {k: v for k, v in THRESHOLDS.items() if k != "dl"}
    metrics = cohort_metrics(rows, thresholds)
    assert set(metrics["models"]) == {"rad", "dlr"}
    parsed = parse_html(_render(rows, metrics))
    text = parsed.joined()
    for key in thresholds:
        assert _ci(metrics["models"][key]["auc"]) in text
    assert parsed.table("Scored hips")[0] == ["Metric", "Rad", "DLR (deployed)"]
    assert "Not evaluated: DL" in text
    assert len(parsed.table("DeLong tests")) == 1 + 1
    assert len(_pngs(parsed)) >= 3


def test_deployed_model_missing_and_one_class_only() -> None:
    rows = _rows(seed=5, labels="healthy")
    metrics = cohort_metrics(rows, {"rad": 0.5})
    parsed = parse_html(_render(rows, metrics))
    text = parsed.joined()
    assert "Deployed model: DLR, not evaluated here" in text
    assert "No ROC curve (the scored hips need both classes)." in text
    assert "No DeLong tests" in text and "No decision curve" in text
    assert _pngs(parsed) == []
    assert parsed.table("Scored hips")[1] == [
        "AUC (95 % CI, DeLong)",
        "n/a (both classes are needed for an AUC)",
    ]


def test_rows_that_do_not_match_the_metrics_are_flagged() -> None:
    metrics = cohort_metrics(_rows(seed=11), THRESHOLDS)
    text = parse_html(_render(_rows(seed=12), metrics)).joined()
    assert "do not come from the same run" in text


def test_nothing_scored() -> None:
    """cohort_metrics needs one scored hip; the page does not."""
    rows = [
        r | {"prob_rad": "", "prob_dl": "", "prob_dlr": "", "reason": SIDE_REASON}
        for r in _rows()[:6]
    ]
    metrics: dict[str, Any] = {"n": 0, "n_positive": 0, "models": {}, "delong": []}
    text = parse_html(_render(rows, metrics)).joined()
    assert "0 of 6 hips scored" in text
    assert "Not evaluated: Rad, DL, DLR" in text
