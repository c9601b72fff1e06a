"""Building reference statistics from the values of the reference hips and series.

Training calls these on its training hips (and their series), calibration on its
calibration cohort's outputs; the results are the typed values of
:mod:`model_bundle.bundle.reference`, which the bundle stores as ``reference.json``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model_bundle.bundle import (
    DECILE_LEVELS,
    QUANTILE_LEVELS,
    AcquisitionReference,
    Categories,
    Distribution,
    OutputReference,
)
from model_bundle.imaging import Acquisition, AcquisitionField

F64 = NDArray[np.float64]


def _present(values: Iterable[float | None] | ArrayLike) -> tuple[F64, int]:
    """The finite values as an array, and how many were absent or not finite."""
    items = [np.nan if v is None else float(v) for v in np.asarray(values, dtype=object).ravel()]
    array = np.asarray(items, dtype=np.float64)
    finite = array[np.isfinite(array)]
    return finite, int(array.size - finite.size)


def _bins(edges: Sequence[float] | F64, values: F64) -> F64:
    """Fractions of ``values`` in the bins ``(-inf, e1], (e1, e2], ..., (e_k, inf)``."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(np.float64)
    fractions: F64 = counts / max(values.size, 1)
    return fractions


def distribution_of(values: Iterable[float | None] | ArrayLike) -> Distribution:
    """The reference distribution of one value (absent and non-finite values counted apart).

    Parameters
    ----------
    values
        The value on each reference hip (or series); ``None`` or NaN where absent.

    Returns
    -------
    Distribution
        Quantiles at :data:`~model_bundle.bundle.QUANTILE_LEVELS` (linear interpolation,
        NumPy's default), the PSI bins' edges at the deciles and the fraction of values in
        each bin.
    """
    present, missing = _present(values)
    if present.size == 0:
        return Distribution(0, missing, (), (), ())
    levels = np.asarray(QUANTILE_LEVELS, dtype=np.float64)
    # Interpolation in floating point can make a quantile a rounding error smaller than
    # the one before it; quantiles never decrease.
    quantiles = np.maximum.accumulate(np.quantile(present, levels / 100.0))
    by_level = dict(zip(QUANTILE_LEVELS, quantiles.tolist(), strict=True))
    edges = tuple(float(by_level[level]) for level in DECILE_LEVELS)
    return Distribution(
        count=int(present.size),
        missing=missing,
        quantiles=tuple((level, float(by_level[level])) for level in QUANTILE_LEVELS),
        decile_edges=edges,
        decile_frequencies=tuple(float(f) for f in _bins(edges, present)),
    )


def categories_of(values: Iterable[str | None]) -> Categories:
    """How often each category was seen (absent and blank values counted apart)."""
    items = [v.strip() if isinstance(v, str) else None for v in values]
    seen = Counter(v for v in items if v)
    return Categories(dict(sorted(seen.items())), sum(1 for v in items if not v))


def acquisition_reference(acquisitions: Sequence[Acquisition]) -> AcquisitionReference:
    """The reference of the training series' acquisitions (one entry per series)."""
    numeric = {
        field.value: distribution_of([a.numeric()[field] for a in acquisitions])
        for field in AcquisitionField
        if not field.categorical
    }
    categorical = {
        field.value: categories_of([a.categorical()[field] for a in acquisitions])
        for field in AcquisitionField
        if field.categorical
    }
    return AcquisitionReference(len(acquisitions), numeric, categorical)


def output_reference(
    model: str, source: str, probabilities: ArrayLike, threshold: float
) -> OutputReference:
    """The deployed model's output reference: distribution and positive-call rate.

    Parameters
    ----------
    model
        The deployed model's key.
    source
        Which probabilities these are, in words.
    probabilities
        The model's probability for each reference hip.
    threshold
        The bundle's threshold; a hip is called positive at ``p >= threshold``, as
        serving calls it.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        raise ValueError("an output reference needs at least one probability")
    rate = float(np.mean(p >= threshold))
    return OutputReference(model, source, distribution_of(p), float(threshold), rate)
