"""The lesion-visibility measure of bench/lesion_visibility.py, against normal-theory values."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from lesion_visibility import LesionRow, Visibility, lesion_visibility, table


def _head_and_lesion(shape: int = 60) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[:shape, :shape, :shape] - (shape - 1) / 2
    head = x**2 + y**2 + z**2 <= (shape / 2 - 1) ** 2
    lesion = head & (z > shape / 6)  # the dome
    return head, lesion


def _mean_abs_normal(mu: float) -> float:
    """E|X| for X ~ N(mu, 1)."""
    return float(mu * (1 - 2 * stats.norm.cdf(-mu)) + 2 * stats.norm.pdf(mu))


def test_a_lesion_drawn_like_the_rest_of_the_head_is_not_visible() -> None:
    head, lesion = _head_and_lesion()
    image = np.random.default_rng(0).normal(100.0, 15.0, head.shape)
    vis = lesion_visibility(image, head, lesion)
    assert abs(vis.border_excess) < 0.05
    assert abs(vis.interior_shift) < 0.05


@pytest.mark.parametrize(
    ("band", "contrast"),
    [
        ("bright", 2.0),  # a band 2 SD brighter than marrow: E|N(2,1)| - E|N(0,1)| = 1.22
        ("double line", 1.5),  # bright and dark halves: the signed means cancel
    ],
)
def test_a_border_band_shows_as_the_normal_theory_excess(band: str, contrast: float) -> None:
    head, lesion = _head_and_lesion()
    rng = np.random.default_rng(1)
    image = rng.normal(0.0, 1.0, head.shape)
    border = lesion & ~ndimage.binary_erosion(lesion)
    halves = np.where(rng.random(head.shape) < 0.5, 1.0, -1.0)
    sign = halves if band == "double line" else np.ones(head.shape)
    image[border] += contrast * sign[border]
    vis = lesion_visibility(image, head, lesion)
    if band == "double line":
        assert abs(image[border].mean() - image[head & ~lesion].mean()) < 0.1
    expected = _mean_abs_normal(contrast) - _mean_abs_normal(0.0)
    assert vis.border_excess == pytest.approx(expected, abs=0.06)
    assert abs(vis.interior_shift) < 0.05


def test_an_oedema_like_interior_shows_as_its_shift() -> None:
    head, lesion = _head_and_lesion()
    image = np.random.default_rng(3).normal(0.0, 1.0, head.shape)
    image[lesion] += 3.0
    assert lesion_visibility(image, head, lesion).interior_shift == pytest.approx(3.0, abs=0.05)


def test_a_lesion_outside_the_head_is_refused() -> None:
    head, lesion = _head_and_lesion()
    with pytest.raises(ValueError, match="no voxel inside the head"):
        lesion_visibility(np.ones(head.shape), head, lesion & ~head)


def test_the_table_counts_lesions_with_no_in_head_signal() -> None:
    rows = [
        LesionRow("P1", "L", "a", True, Visibility(0.1, 0.0, 100, 40)),
        LesionRow("P2", "L", "a", True, Visibility(0.9, 0.0, 100, 40)),
        LesionRow("P3", "R", "a", False, Visibility(0.0, 2.0, 100, 40)),
    ]
    text = table(rows)
    assert "| a | subtle | 2 |" in text and "1/2 (50%)" in text
    assert "| a | plain | 1 |" in text and "0/1 (0%)" in text
