"""The status page's /drift section: behind the token, inline SVG plots of the drift
score and positive-call rate over time, "not enough data" where the window is short."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from html_checks import ParsedHtml
from test_status_auth import Site, bearer, serve

from onfh_dlr.drift_store import DriftLevel, DriftSnapshot, InputStats, record_snapshot


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from serve(tmp_path, "s" * 32)


def test_drift_page_needs_the_token(site: Site) -> None:
    assert site.request("GET", "/drift").status == 401


def test_drift_page_says_nothing_to_compare_before_any_snapshot(site: Site) -> None:
    answer = site.request("GET", "/drift", headers=bearer("s" * 32))
    assert answer.status == 200
    assert "nothing to compare" in answer.body and "<svg" not in answer.body


def test_drift_page_plots_score_and_rate_over_time_and_lists_the_inputs(site: Site) -> None:
    record_snapshot(
        site.db, DriftSnapshot(1.0, "2.25.1", 3, DriftLevel.NOT_ENOUGH_DATA, None, 0.3, 0.3, None)
    )
    for i, score in enumerate((0.0, 0.1, 0.6, 0.9)):
        record_snapshot(
            site.db,
            DriftSnapshot(
                2.0 + i,
                "2.25.1",
                12,
                DriftLevel.DRIFT if score >= 0.5 else DriftLevel.NO_DRIFT,
                score,
                0.3 + score / 2,
                0.3,
                0.5,
                {"original_glcm_Contrast": InputStats(0.1 + score, score, 0.01, score > 0.5)},
            ),
        )
    answer = site.request("GET", "/drift", headers=bearer("s" * 32))
    assert answer.status == 200
    parsed = ParsedHtml()
    parsed.feed(answer.body)
    assert parsed.errors == []
    assert parsed.tags.count("svg") == 2
    assert "<script" not in answer.body and "http" not in answer.body.replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert "drift score 0.90" in answer.body and "<strong>drift</strong>" in answer.body
    # The short window at the start breaks the score's line (no point), not a zero.
    assert parsed.tags.count("polyline") == 3  # score after the gap, window rate, expected
    assert "original_glcm_Contrast" in answer.body and "shifted" in answer.body
    assert ("a", "href", "/drift") in parsed.attrs
