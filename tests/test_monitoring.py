"""The monitoring computations on synthetic data, each against an independent reference.

Distributions against NumPy's percentiles; PSI against a hand computation; the
Kolmogorov-Smirnov statistic against SciPy's two-sample ``ks_2samp`` on the raw samples
the reference was built from; the binomial test against the exact tail sum written out
with ``math.comb``. The input check's declared rules on small hand-made references; the
acquisition read from classic and Enhanced MR headers; the JSON form of the reference
read back, and refused when it is not what the schema says.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import SeriesSpec, make_enhanced, make_series, write_datasets
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from scipy import stats

from model_bundle.bundle import (
    QUANTILE_LEVELS,
    ReferenceFormatError,
    ReferenceStatistics,
)
from model_bundle.features import SeriesJob
from model_bundle.imaging import Acquisition, acquisition_from_dataset, acquisition_of, load_series
from model_bundle.monitoring import (
    FeatureRule,
    InputKind,
    OutOfRangeReason,
    acquisition_reference,
    check_acquisition,
    check_features,
    check_inputs,
    distribution_of,
    ks_against_reference,
    output_reference,
    outside_text,
    positive_rate_test,
    psi,
)
from model_bundle.training.dataset import _load

SIEMENS = Acquisition(1.5, 80.0, 4000.0, None, 4.5, 0.9, 0.9, 320.0, 320.0, "SIEMENS")


def _reference(features: dict[str, np.ndarray] | None = None) -> ReferenceStatistics:
    series = [
        SIEMENS,
        Acquisition(1.5, 90.0, 5000.0, None, 4.5, 1.1, 1.1, 384.0, 384.0, "SIEMENS"),
    ]
    return ReferenceStatistics(
        source="test",
        acquisition=acquisition_reference(series),
        features={k: distribution_of(v) for k, v in (features or {}).items()},
        output=output_reference("dlr", "test", [0.1, 0.2, 0.7, 0.9], 0.5),
    )


# ------------------------------------------------------------------ distributions


def test_distribution_quantiles_and_deciles_are_numpys() -> None:
    values = np.random.default_rng(1).gamma(2.0, 3.0, size=500)
    dist = distribution_of([*values, None, math.nan])
    assert (dist.count, dist.missing) == (500, 2)
    for level in (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5):
        assert dist.quantile(level) == pytest.approx(np.percentile(values, level), rel=1e-12)
    assert dist.decile_edges == pytest.approx(np.percentile(values, range(10, 100, 10)))
    counts = np.histogram(values, bins=[-np.inf, *dist.decile_edges, np.inf])[0]
    assert dist.decile_frequencies == pytest.approx(counts / 500, abs=1 / 500)
    assert (dist.minimum, dist.maximum) == (values.min(), values.max())


def test_a_distribution_without_values_has_no_quantiles() -> None:
    dist = distribution_of([None, None])
    assert (dist.count, dist.missing, dist.quantiles) == (0, 2, ())
    with pytest.raises(ValueError, match="no values"):
        psi(dist, [1.0])


def test_reference_statistics_survive_their_json_form() -> None:
    reference = _reference({"a": np.arange(40.0)})
    text = json.dumps(reference.to_json(), allow_nan=False)
    assert ReferenceStatistics.from_json(json.loads(text)) == reference


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema",), 2, "schema"),
        (("features", "a", "quantiles", 3, 1), -1e9, "must not decrease"),
        (("features", "a", "decile_frequencies", 0), 0.5, "sum to 1"),
        (("output", "positive_rate"), 1.5, r"\[0, 1\]"),
        (("features", "a", "count"), -1, "non-negative"),
    ],
)
def test_reference_json_that_breaks_the_schema_is_refused(
    path: tuple[str | int, ...], value: object, message: str
) -> None:
    raw = _reference({"a": np.arange(40.0)}).to_json()
    target: object = raw
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(ReferenceFormatError, match=message):
        ReferenceStatistics.from_json(raw)


# ------------------------------------------------------------------ drift statistics


def test_psi_is_the_hand_computed_index_over_the_reference_deciles() -> None:
    rng = np.random.default_rng(2)
    training = rng.normal(0.0, 1.0, 1000)
    window = rng.normal(0.6, 1.3, 50)
    reference = distribution_of(training)
    edges = sorted(np.percentile(training, [10, 20, 30, 40, 50, 60, 70, 80, 90]))
    expected, actual = [0] * 10, [0] * 10
    for sample, counts in ((training, expected), (window, actual)):
        for x in sample:
            counts[sum(1 for e in edges if x > e)] += 1
    by_hand = 0.0
    for e_count, a_count in zip(expected, actual, strict=True):
        e = max(e_count / len(training), 1e-4)
        a = max(a_count / len(window), 1e-4)
        by_hand += (a - e) * math.log(a / e)
    assert psi(reference, window) == pytest.approx(by_hand, rel=1e-9)
    assert psi(reference, window) > 0.25  # a major shift
    assert psi(reference, rng.normal(0.0, 1.0, 2000)) < 0.02  # none


@pytest.mark.parametrize(("shift", "size"), [(0.0, 60), (0.5, 60), (0.2, 300)])
def test_ks_against_the_stored_quantiles_agrees_with_scipys_two_sample_test(
    shift: float, size: int
) -> None:
    rng = np.random.default_rng(int(shift * 10) + size)
    training = rng.normal(0.0, 1.0, 2000)
    window = rng.normal(shift, 1.0, size)
    ours = ks_against_reference(distribution_of(training), window)
    scipy = stats.ks_2samp(training, window, method="asymp")
    # The reference CDF is drawn through 103 stored quantiles, not the 2,000 values:
    # the distance agrees to about the spacing of the stored levels.
    assert ours.statistic == pytest.approx(scipy.statistic, abs=0.01)
    assert ours.pvalue == pytest.approx(scipy.pvalue, abs=0.05, rel=0.3)
    assert (ours.n, ours.reference_n) == (size, 2000)


def test_ks_tells_a_shifted_window_from_an_unshifted_one() -> None:
    rng = np.random.default_rng(7)
    reference = distribution_of(rng.normal(0, 1, 500))
    assert ks_against_reference(reference, rng.normal(1.0, 1, 50)).pvalue < 1e-4
    assert ks_against_reference(reference, rng.normal(0.0, 1, 50)).pvalue > 0.01


def _binomial_two_sided(k: int, n: int, p: float) -> float:
    """The exact two-sided p-value: all outcomes no more likely than ``k``."""
    pmf = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7)))


@pytest.mark.parametrize(("rate", "expected"), [(0.30, 0.30), (0.60, 0.30), (0.05, 0.20)])
def test_positive_rate_test_is_the_exact_binomial_test(rate: float, expected: float) -> None:
    calls = np.random.default_rng(3).random(50) < rate
    positives = int(calls.sum())
    result = positive_rate_test(positives, 50, expected)
    assert result.pvalue == pytest.approx(_binomial_two_sided(positives, 50, expected), rel=1e-9)
    assert result.observed_rate == positives / 50
    with pytest.raises(ValueError):
        positive_rate_test(51, 50, expected)


def test_output_reference_counts_calls_at_the_threshold_as_serving_does() -> None:
    output = output_reference("dlr", "test", [0.2, 0.5, 0.5, 0.9], 0.5)
    assert output.positive_rate == 0.75  # p >= threshold is a positive call


# ------------------------------------------------------------------ the input check


def test_an_acquisition_inside_the_training_series_range_is_not_flagged() -> None:
    inside = Acquisition(1.5, 85.0, 4500.0, None, 4.5, 1.0, 1.0, 352.0, 352.0, "Siemens ")
    assert check_acquisition(_reference(), inside) == []
    rounded = Acquisition(1.494, 80.0, 4000.0, None, 4.5, 0.9, 0.9, 320.0, 320.0, "SIEMENS")
    assert check_acquisition(_reference(), rounded) == []


def test_an_acquisition_outside_the_training_series_is_flagged_with_why() -> None:
    study = Acquisition(3.0, 85.0, 4500.0, 200.0, 4.5, 0.6, 0.6, None, 352.0, "Philips")
    found = {o.name: o for o in check_acquisition(_reference(), study)}
    assert set(found) == {
        "field_strength",
        "inversion_time",
        "pixel_spacing_row",
        "pixel_spacing_column",
        "rows",
        "manufacturer",
    }
    assert found["field_strength"].reason is OutOfRangeReason.ABOVE
    assert (found["field_strength"].low, found["field_strength"].high) == (1.5, 1.5)
    assert found["pixel_spacing_row"].reason is OutOfRangeReason.BELOW
    assert found["inversion_time"].reason is OutOfRangeReason.UNEXPECTED
    assert found["rows"].reason is OutOfRangeReason.MISSING
    assert found["manufacturer"].reason is OutOfRangeReason.UNSEEN
    assert found["manufacturer"].seen == ("SIEMENS",)
    assert all(o.kind is InputKind.ACQUISITION for o in found.values())
    assert found["field_strength"].describe() == (
        "field strength 3 T: above the training range (training: 1.5 to 1.5 T)"
    )
    assert found["manufacturer"].describe() == (
        "manufacturer Philips: a value no training series had (training: SIEMENS)"
    )


def test_a_feature_is_flagged_beyond_the_central_99_percent_and_its_margin() -> None:
    values = np.linspace(0.0, 100.0, 201)
    reference = _reference({"f": values})
    rule = FeatureRule()
    low, high = rule.bounds(reference.features["f"])
    width = np.percentile(values, 99.5) - np.percentile(values, 0.5)
    assert high == pytest.approx(np.percentile(values, 99.5) + 0.1 * width)
    assert low == pytest.approx(np.percentile(values, 0.5) - 0.1 * width)
    assert check_features(reference, {"f": 100.0, "unknown": 1e9}) == []
    assert check_features(reference, {"f": high - 1e-6}) == []
    above = check_features(reference, {"f": high + 1e-6})
    assert [(o.name, o.reason, o.kind) for o in above] == [
        ("f", OutOfRangeReason.ABOVE, InputKind.FEATURE)
    ]
    # The range reported is the training hips' 0.5 % to 99.5 %, without the margin.
    assert (above[0].low, above[0].high) == pytest.approx((0.5, 99.5))
    below = check_features(reference, {"f": low - 1.0})
    assert [o.reason for o in below] == [OutOfRangeReason.BELOW]
    assert [o.reason for o in check_features(reference, {"f": math.nan})] == [
        OutOfRangeReason.NOT_FINITE
    ]
    strict = check_features(reference, {"f": 100.0}, FeatureRule(margin=0.0))
    assert [o.reason for o in strict] == [OutOfRangeReason.ABOVE]


def test_the_report_line_names_each_input_outside_once() -> None:
    reference = _reference({"f": np.arange(100.0)})
    study = Acquisition(3.0, 85.0, 4500.0, None, 4.5, 1.0, 1.0, 352.0, 352.0, "SIEMENS")
    right = check_inputs(reference, study, {"f": 500.0})
    left = check_inputs(reference, study, {"f": 50.0})
    assert outside_text(right + left) == (
        "outside the model's training range: field strength 3 T: above the training range "
        "(training: 1.5 to 1.5 T); f 500: above the training range (training: 0.495 to 98.5)"
    )
    assert outside_text([]) == ""


def test_check_inputs_reports_acquisition_then_features_and_skips_absent_headers() -> None:
    reference = _reference({"f": np.arange(100.0)})
    study = Acquisition(3.0, 85.0, 4500.0, None, 4.5, 1.0, 1.0, 352.0, 352.0, "SIEMENS")
    found = check_inputs(reference, study, {"f": 500.0})
    assert [(o.kind, o.name) for o in found] == [
        (InputKind.ACQUISITION, "field_strength"),
        (InputKind.FEATURE, "f"),
    ]
    assert [o.name for o in check_inputs(reference, None, {"f": 500.0})] == ["f"]


# ------------------------------------------------------------------ the acquisition


def _timed(ds: Dataset) -> Dataset:
    ds.MagneticFieldStrength = "3"
    ds.Manufacturer = "Philips Medical Systems"
    return ds


def test_the_acquisition_is_the_same_from_classic_and_enhanced_mr_headers() -> None:
    series = make_series(SeriesSpec(n_slices=4, pixel_spacing=(0.8, 0.7), slice_thickness=2.0))
    for ds in series.datasets:
        _timed(ds)
        ds.EchoTime, ds.RepetitionTime, ds.InversionTime = "80", "4200", "150"
    classic = acquisition_of(load_series(series.datasets))
    enhanced = _timed(make_enhanced(series))
    timing = Dataset()
    timing.RepetitionTime = 4200.0
    echo = Dataset()
    echo.EffectiveEchoTime = 80.0
    modifier = Dataset()
    modifier.InversionTimes = [150.0]
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    shared.MRTimingAndRelatedParametersSequence = DicomSequence([timing])
    shared.MRModifierSequence = DicomSequence([modifier])
    for frame in enhanced.PerFrameFunctionalGroupsSequence:
        frame.MREchoSequence = DicomSequence([echo])
    assert classic == Acquisition(
        3.0, 80.0, 4200.0, 150.0, 2.0, 0.8, 0.7, 64.0, 64.0, "Philips Medical Systems"
    )
    assert acquisition_of(load_series([enhanced])) == classic
    assert Acquisition.from_json(json.loads(json.dumps(classic.to_json()))) == classic


def test_a_cache_entry_from_before_acquisitions_is_completed_from_a_header(
    tmp_path: Path,
) -> None:
    series = make_series(SeriesSpec(n_slices=3))
    for ds in series.datasets:
        _timed(ds)
    directory = tmp_path / "series"
    write_datasets(series.datasets, directory)
    meta = [{"roi_source": "seg", "reason": "", "ok": True}]  # as older code wrote it
    entry = tmp_path / "entry.npz"
    np.savez(
        entry,
        radiomics_0=np.zeros(3),
        input_0=np.zeros((3, 2, 2), dtype=np.float32),
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )
    job = SeriesJob(directory, None, ({"PatientID": "P1", "Side": "R", "Label": "0"},))
    loaded = _load(entry, job)
    assert loaded is not None
    assert loaded[0].acquisition == acquisition_from_dataset(series.datasets[0])
    assert loaded[0].acquisition is not None and loaded[0].acquisition.field_strength == 3.0


def test_quantile_levels_include_the_input_checks_range() -> None:
    assert {0.0, 0.5, 99.5, 100.0} <= set(QUANTILE_LEVELS)
