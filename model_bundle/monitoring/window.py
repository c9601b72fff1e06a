"""Drift over a rolling window of scored hips, and the one score an alarm reads.

For the last N hips the deployed bundle scored (the service keeps them; this module only
computes), :func:`window_drift` compares

- each model input the reference describes (selected features, deep PCA components; one
  value per hip) and each numeric acquisition parameter (field strength, TE, TR, slice
  thickness, pixel spacing, matrix; one value per series, as the reference counts them)
  with its reference distribution: the population stability index
  (:func:`~model_bundle.monitoring.psi`), the Kolmogorov-Smirnov distance and p-value
  (:func:`~model_bundle.monitoring.ks_against_reference`), and how many values fall
  outside the reference's observed range;
- the share of positive calls with the reference's positive-call rate (exact binomial
  test, :func:`~model_bundle.monitoring.positive_rate_test`);

and combines them into one drift score in [0, 1]::

    score = max(share of model inputs shifted, share of acquisition parameters shifted,
                min(1, -log10(p_binomial) / 6))

An input is *shifted* when, at a Bonferroni-corrected level (0.05 / inputs of its group),

- its PSI exceeds 0.25 (the conventional "major shift") **and** its KS p-value is below
  the level: PSI alone is biased upward on a small window (under no drift its expectation
  is about ``9 (1/n + 1/m)`` for n window and m reference values: 0.75 at n = 12 and
  m = 1000), so a window of a dozen hips would show "major shift" by chance; or
- more of its values lie outside the reference's observed range than chance allows
  (:func:`outside_pvalue`: under no drift the window's n values and the reference's m are
  exchangeable, so how many of the n fall outside the m's range has an exact,
  distribution-free law). This is what sees a change of scanner when the reference is
  small (a training cohort of one field strength: every new value outside) where a KS
  test against a handful of reference series cannot reach significance.

Acquisition parameters are their own group, so that a change of scanner (most of them
shift together) counts as much as a change of the images' content. The rate term maps
the binomial p-value to the same scale: p = 0.03 gives 0.25, p = 0.001 gives 0.5,
p = 1e-6 gives 1.

Thresholds (:func:`drift_state`): below 0.25 *no drift*; 0.25 to 0.5 *watch* (a quarter of
the inputs shifted, or a positive-call rate with p < 0.03); 0.5 and above *drift* (half the
inputs shifted, or p < 0.001): the service's alert fires there. Fewer hips than the
minimum give *not enough data* and no score.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from model_bundle.bundle import Distribution, ReferenceStatistics
from model_bundle.monitoring.checks import InputKind
from model_bundle.monitoring.drift import ks_against_reference, positive_rate_test, psi

#: PSI above this is a major shift of one input.
PSI_SHIFT: Final = 0.25
#: The family-wise KS significance across the inputs (Bonferroni-divided).
KS_ALPHA: Final = 0.05
#: The binomial p-value that maps to a score of 1 (``-log10`` of it is the denominator).
RATE_LOG10_FULL: Final = 6.0
#: Scores at or above these are "watch" and "drift".
WATCH_AT: Final = 0.25
DRIFT_AT: Final = 0.5


class DriftState(enum.StrEnum):
    """What a window's drift score says."""

    NOT_ENOUGH_DATA = "not_enough_data"
    NO_DRIFT = "no_drift"
    WATCH = "watch"
    DRIFT = "drift"


@dataclass(frozen=True)
class InputDrift:
    """One input's comparison with its reference distribution.

    Attributes
    ----------
    name
        The feature's name (a radiomics feature or a deep PCA component), or the
        acquisition parameter's (an :class:`~model_bundle.imaging.AcquisitionField` value).
    kind
        A model input (FEATURE, one value per hip) or an acquisition parameter
        (ACQUISITION, one value per series).
    n
        The window's hips (or series) that had a finite value of it.
    psi
        Population stability index against the reference's deciles.
    ks_statistic, ks_pvalue
        Kolmogorov-Smirnov distance and its two-sample p-value.
    outside_pvalue
        One-sided binomial p-value of the values outside the reference's range.
    shifted
        ``psi > PSI_SHIFT and ks_pvalue < level`` or ``outside_pvalue < level``, with
        ``level = KS_ALPHA / inputs of its kind``.
    """

    name: str
    kind: InputKind
    n: int
    psi: float
    ks_statistic: float
    ks_pvalue: float
    outside_pvalue: float
    shifted: bool


@dataclass(frozen=True)
class WindowDrift:
    """A window's drift: per input, the positive-call rate, and the combined score.

    Attributes
    ----------
    hips
        Hips in the window.
    state
        :class:`DriftState`; ``NOT_ENOUGH_DATA`` when ``hips`` is below the minimum.
    score
        The combined drift score (module docstring); ``None`` without enough data.
    inputs
        Per compared input (empty without enough data).
    positive_rate, expected_rate
        The window's share of positive calls and the reference's (``None`` when unknown).
    rate_pvalue
        The binomial test's two-sided p-value (``None`` when not tested).
    """

    hips: int
    state: DriftState
    score: float | None
    inputs: tuple[InputDrift, ...]
    positive_rate: float | None
    expected_rate: float | None
    rate_pvalue: float | None

    def shifted_share(self, kind: InputKind = InputKind.FEATURE) -> float | None:
        """The share of compared inputs of ``kind`` that are shifted."""
        mine = [i for i in self.inputs if i.kind is kind]
        if not mine:
            return None
        return sum(i.shifted for i in mine) / len(mine)


def drift_state(score: float | None) -> DriftState:
    """The state a combined score falls in (``None``: not enough data)."""
    if score is None:
        return DriftState.NOT_ENOUGH_DATA
    if score >= DRIFT_AT:
        return DriftState.DRIFT
    if score >= WATCH_AT:
        return DriftState.WATCH
    return DriftState.NO_DRIFT


def rate_score(pvalue: float) -> float:
    """The binomial p-value on the drift score's scale: ``min(1, -log10(p) / 6)``."""
    if pvalue <= 0.0:
        return 1.0
    return min(1.0, max(0.0, -math.log10(pvalue) / RATE_LOG10_FULL))


def outside_pvalue(reference: Distribution, values: Sequence[float]) -> float:
    """Exact one-sided p-value of as many of ``values`` outside the reference's range.

    Under no drift the ``n`` window values and the ``m`` reference values are exchangeable:
    every order of the m + n values is equally likely. ``K`` window values outside the
    reference's range means ``j`` of them before the lowest reference value and ``K - j``
    after the highest, the other ``n - K`` among the ``m - 2`` inner reference values::

        P(K = k) = (k + 1) C(n - k + m - 2, m - 2) / C(m + n, m)        (m >= 2)

    A binomial test at the one-value rate ``2 / (m + 1)`` would treat the n values as
    independent, but they share the one reference range: a narrow range puts many of them
    outside together. It understates the p-value, the more so the smaller the reference
    (m = 12, n = 10, 5 outside: 0.011 against the exact 0.043), and raised false alarms.
    With ``m < 2`` the range is a point, which continuous values all miss: p = 1.
    """
    n = len(values)
    m = reference.count
    outside = sum(v < reference.minimum or v > reference.maximum for v in values)
    if m < 2 or outside == 0:
        return 1.0
    tail = sum((k + 1) * math.comb(n - k + m - 2, m - 2) for k in range(outside, n + 1))
    return tail / math.comb(m + n, m)


def _compare(
    kind: InputKind, references: Mapping[str, Distribution], rows: Sequence[Mapping[str, float]]
) -> list[InputDrift]:
    compared: list[tuple[str, int, float, float, float, float]] = []
    for name in sorted(references):
        dist = references[name]
        values = [row[name] for row in rows if name in row and math.isfinite(row[name])]
        if dist.count == 0 or not values:
            continue
        ks = ks_against_reference(dist, values)
        compared.append(
            (
                name,
                len(values),
                psi(dist, values),
                ks.statistic,
                ks.pvalue,
                outside_pvalue(dist, values),
            )
        )
    level = KS_ALPHA / max(len(compared), 1)
    return [
        InputDrift(
            name,
            kind,
            n,
            stability,
            d,
            p,
            outside,
            (stability > PSI_SHIFT and p < level) or outside < level,
        )
        for name, n, stability, d, p, outside in compared
    ]


def window_drift(
    reference: ReferenceStatistics,
    inputs: Sequence[Mapping[str, float]],
    calls: Sequence[int],
    *,
    min_hips: int,
    acquisitions: Sequence[Mapping[str, float]] = (),
) -> WindowDrift:
    """Drift of a window of scored hips from the bundle's reference.

    Parameters
    ----------
    reference
        The deployed bundle's reference statistics.
    inputs
        Per hip in the window, its model inputs by name (features the reference does not
        describe are ignored; a missing or non-finite value leaves that hip out of that
        input's comparison).
    calls
        Per hip, its call (1 positive, 0 negative), in the same order.
    min_hips
        Fewer hips than this give :attr:`DriftState.NOT_ENOUGH_DATA`.
    acquisitions
        Per series in the window, its numeric acquisition parameters by
        :class:`~model_bundle.imaging.AcquisitionField` value (none: not compared).

    Raises
    ------
    ValueError
        ``inputs`` and ``calls`` differ in length, or ``min_hips`` is below 1.
    """
    if len(inputs) != len(calls):
        raise ValueError(f"{len(inputs)} hips' inputs but {len(calls)} calls")
    if min_hips < 1:
        raise ValueError(f"min_hips must be at least 1, not {min_hips}")
    n = len(calls)
    expected = None if reference.output is None else reference.output.positive_rate
    observed = sum(calls) / n if n else None
    if n < min_hips:
        return WindowDrift(n, DriftState.NOT_ENOUGH_DATA, None, (), observed, expected, None)
    per_input = _compare(InputKind.FEATURE, reference.features, inputs)
    if reference.acquisition is not None and acquisitions:
        per_input += _compare(InputKind.ACQUISITION, reference.acquisition.numeric, acquisitions)
    pvalue = None
    if expected is not None:
        pvalue = positive_rate_test(sum(calls), n, expected).pvalue
    shares = [sum(i.shifted for i in group) / len(group) for group in _groups(per_input) if group]
    score = max([*shares, 0.0 if pvalue is None else rate_score(pvalue)])
    return WindowDrift(n, drift_state(score), score, tuple(per_input), observed, expected, pvalue)


def _groups(per_input: Sequence[InputDrift]) -> list[list[InputDrift]]:
    return [[i for i in per_input if i.kind is kind] for kind in InputKind]


__all__ = [
    "DRIFT_AT",
    "KS_ALPHA",
    "PSI_SHIFT",
    "RATE_LOG10_FULL",
    "WATCH_AT",
    "DriftState",
    "InputDrift",
    "WindowDrift",
    "drift_state",
    "outside_pvalue",
    "rate_score",
    "window_drift",
]
