"""The rolling-window drift score: quiet on the reference's own distribution, high on a
shifted one or on a positive-call rate far from the expected, and no number below the
minimum window."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from model_bundle.bundle import AcquisitionReference, OutputReference, ReferenceStatistics
from model_bundle.monitoring import DriftState, InputKind, distribution_of, window_drift
from model_bundle.monitoring.window import outside_pvalue

NAMES = ("original_firstorder_Mean", "original_glcm_Contrast", "deep_pc_1", "deep_pc_2")


def _reference(positive_rate: float = 0.3) -> ReferenceStatistics:
    rng = np.random.default_rng(0)
    features = {name: distribution_of(rng.normal(0.0, 1.0, 400)) for name in NAMES}
    output = OutputReference(
        "dlr", "test", distribution_of(rng.uniform(0, 1, 400)), 0.5, positive_rate
    )
    return ReferenceStatistics("test: 400 hips", None, features, output)


def _window(seed: int, n: int, shift: float) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{name: float(rng.normal(shift, 1.0)) for name in NAMES} for _ in range(n)]


def _calls(n: int, rate: float) -> list[int]:
    return [int(i < round(rate * n)) for i in range(n)]


def test_a_window_like_the_reference_shows_no_drift() -> None:
    for seed in range(5):
        result = window_drift(_reference(), _window(seed, 50, 0.0), _calls(50, 0.3), min_hips=20)
        assert result.state is DriftState.NO_DRIFT, result
        assert result.score is not None and result.score < 0.25
        assert {i.name for i in result.inputs} == set(NAMES)


def test_shifted_inputs_raise_the_score_to_drift() -> None:
    result = window_drift(_reference(), _window(1, 50, 2.0), _calls(50, 0.3), min_hips=20)
    assert result.state is DriftState.DRIFT
    assert result.shifted_share() == 1.0
    assert all(i.psi > 0.25 and i.ks_pvalue < 0.01 for i in result.inputs)
    assert all(i.outside_pvalue < 0.01 for i in result.inputs)


def test_a_positive_call_rate_far_from_the_expected_is_drift_alone() -> None:
    result = window_drift(_reference(0.3), _window(2, 50, 0.0), _calls(50, 1.0), min_hips=20)
    assert result.shifted_share() == 0.0
    assert result.rate_pvalue is not None and result.rate_pvalue < 1e-6
    assert result.positive_rate == 1.0 and result.expected_rate == 0.3
    assert result.state is DriftState.DRIFT


def test_a_small_window_says_not_enough_data_and_gives_no_score() -> None:
    result = window_drift(_reference(), _window(3, 5, 3.0), _calls(5, 1.0), min_hips=20)
    assert result.state is DriftState.NOT_ENOUGH_DATA
    assert result.score is None and result.inputs == ()
    assert result.hips == 5


def test_a_new_scanner_shifts_the_acquisition_even_against_a_few_reference_series() -> None:
    # Four training series, all 1.5 T with 4.5 mm slices: too few for a KS test to be
    # significant, but six series outside their range cannot be chance (p = 0.4 ** 6).
    few = AcquisitionReference(
        4,
        {
            "field_strength": distribution_of([1.5] * 4),
            "slice_thickness": distribution_of([4.5, 4.5, 5.0, 4.5]),
            "repetition_time": distribution_of([3000.0, 3200.0, 3100.0, 3500.0]),
        },
        {},
    )
    reference = replace(_reference(), acquisition=few)
    same = [{"field_strength": 1.5, "slice_thickness": 4.5, "repetition_time": 3150.0}] * 6
    other = [{"field_strength": 3.0, "slice_thickness": 4.0, "repetition_time": 3150.0}] * 6
    window, calls = _window(4, 12, 0.0), _calls(12, 0.3)
    quiet = window_drift(reference, window, calls, min_hips=8, acquisitions=same)
    assert quiet.shifted_share(InputKind.ACQUISITION) == 0.0
    assert quiet.state is DriftState.NO_DRIFT
    moved = window_drift(reference, window, calls, min_hips=8, acquisitions=other)
    shifted = {i.name for i in moved.inputs if i.shifted}
    assert shifted == {"field_strength", "slice_thickness"}
    assert moved.shifted_share(InputKind.ACQUISITION) == 2 / 3
    assert moved.state is DriftState.DRIFT


def _outside_tail_by_enumeration(m: int, n: int, k: int) -> float:
    """P(at least k of n new values outside the range of m old ones), every order of the
    m + n exchangeable values counted one by one (no formula)."""
    hits = total = 0
    for old in itertools.combinations(range(m + n), m):
        positions = set(old)
        low, high = min(old), max(old)
        outside = sum(1 for p in range(m + n) if p not in positions and not low < p < high)
        hits += outside >= k
        total += 1
    return hits / total


@pytest.mark.parametrize(("m", "n"), [(2, 3), (3, 5), (5, 4), (6, 6), (9, 5)])
def test_outside_pvalue_is_the_exact_exchangeable_tail(m: int, n: int) -> None:
    rng = np.random.default_rng(m * 100 + n)
    reference = distribution_of(rng.normal(0.0, 1.0, m))
    lo, hi = reference.minimum, reference.maximum
    for k in range(n + 1):
        # k values outside the range (alternately below and above), the rest inside.
        values = [lo - 1.0 - i if i % 2 else hi + 1.0 + i for i in range(k)]
        values += [(lo + hi) / 2] * (n - k)
        assert outside_pvalue(reference, values) == pytest.approx(
            _outside_tail_by_enumeration(m, n, k), rel=1e-12
        )


def test_outside_pvalue_keeps_its_level_with_a_small_reference() -> None:
    # A binomial test at the one-value rate 2 / (m + 1) ignores that the window's values
    # share one reference range. With m = n = 12 at the level of five inputs (0.01) it
    # flagged 6 or more outside (exact probability 0.034 under no drift): a window of the
    # reference's own distribution three times too often. The exact test keeps its level.
    rng = np.random.default_rng(7)
    level, runs = 0.01, 4000
    rejected = 0
    for _ in range(runs):
        reference = distribution_of(rng.normal(0.0, 1.0, 12))
        window = rng.normal(0.0, 1.0, 12).tolist()
        rejected += outside_pvalue(reference, window) < level
    assert rejected / runs <= level
    reference = distribution_of(np.array([0.0]))
    assert outside_pvalue(reference, [1.0, 2.0]) == 1.0  # one value: no range to test
