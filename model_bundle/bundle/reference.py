"""Reference statistics (``reference.json``): what the model saw in training, typed.

A bundle's reference statistics describe the inputs and the output of the model on the
hips it was fitted on, so that the service can tell when what it scores is unlike them:

``acquisition``
    per series of the training cohort, each numeric acquisition parameter (field
    strength, TE, TR, TI, slice thickness, pixel spacing, matrix) as a
    :class:`Distribution` and each categorical one (manufacturer) as :class:`Categories`;
``features``
    per input feature (every selected feature of every model, every deep PCA
    component), its :class:`Distribution` on the training hips;
``output``
    the deployed model's probabilities on the training hips (:class:`OutputReference`:
    their distribution and the positive-call rate at the bundle's threshold).

The file is listed and hashed in the manifest like every other file, and the manifest
names it (``reference_statistics``); bundles written before it existed have none and
:meth:`Bundle.reference <model_bundle.bundle.Bundle.reference>` returns ``None`` for them.
Standard library only (like the rest of :mod:`model_bundle.bundle`): the numbers are
computed by :mod:`model_bundle.monitoring`, which also compares studies against them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from model_bundle.bundle.format import JsonValue

#: Where training and calibration write the reference statistics.
REFERENCE_FILE: Final = "reference.json"
#: The schema of ``reference.json``; a reader refuses another.
REFERENCE_SCHEMA: Final = 1
#: The quantile levels stored per distribution, in percent: every percent, plus 0.5 and
#: 99.5 (the input check's range). Fine enough to draw the distribution's CDF for a
#: Kolmogorov-Smirnov statistic without storing any hip's value.
QUANTILE_LEVELS: Final[tuple[float, ...]] = tuple(
    sorted({float(p) for p in range(101)} | {0.5, 99.5})
)
#: The cut points of the ten PSI bins: the 10th to the 90th percentile.
DECILE_LEVELS: Final[tuple[float, ...]] = tuple(float(p) for p in range(10, 100, 10))


class ReferenceFormatError(ValueError):
    """``reference.json`` does not hold reference statistics of this schema."""


@dataclass(frozen=True)
class Distribution:
    """A numeric value's distribution on the reference hips (or series).

    Attributes
    ----------
    count
        How many values were present.
    missing
        How many were absent (e.g. no Inversion Time in a non-STIR series).
    quantiles
        ``(level in percent, value)`` at :data:`QUANTILE_LEVELS`, non-decreasing; empty
        when ``count`` is 0. Linear interpolation between order statistics (NumPy's
        default).
    decile_edges
        The nine cut points of the PSI bins (10th ... 90th percentile).
    decile_frequencies
        The fraction of the reference values in each of the ten bins ``(-inf, e1]``,
        ``(e1, e2]``, ..., ``(e9, inf)``; about 0.1 each, less where values tie.
    """

    count: int
    missing: int
    quantiles: tuple[tuple[float, float], ...]
    decile_edges: tuple[float, ...]
    decile_frequencies: tuple[float, ...]

    @property
    def minimum(self) -> float:
        """The smallest reference value."""
        return self.quantiles[0][1]

    @property
    def maximum(self) -> float:
        """The largest reference value."""
        return self.quantiles[-1][1]

    def quantile(self, level: float) -> float:
        """The value at ``level`` percent (interpolated linearly between stored levels)."""
        if not self.quantiles:
            raise ValueError("no values: the distribution has no quantiles")
        if not 0.0 <= level <= 100.0:
            raise ValueError(f"quantile level must be in [0, 100], not {level}")
        previous = self.quantiles[0]
        for current in self.quantiles:
            if current[0] >= level:
                if current[0] == previous[0]:
                    return current[1]
                t = (level - previous[0]) / (current[0] - previous[0])
                return previous[1] + t * (current[1] - previous[1])
            previous = current
        return self.quantiles[-1][1]  # pragma: no cover - the last level is 100

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON object ``reference.json`` stores."""
        return {
            "count": self.count,
            "missing": self.missing,
            "quantiles": [[level, value] for level, value in self.quantiles],
            "decile_edges": list(self.decile_edges),
            "decile_frequencies": list(self.decile_frequencies),
        }

    @classmethod
    def from_json(cls, value: object, where: str) -> Distribution:
        """Read :meth:`to_json`'s object, checking it (:class:`ReferenceFormatError`)."""
        keys = {"count", "missing", "quantiles", "decile_edges", "decile_frequencies"}
        raw = _object(value, where, keys)
        count = _count(raw["count"], f"{where}.count")
        missing = _count(raw["missing"], f"{where}.missing")
        pairs = _list(raw["quantiles"], f"{where}.quantiles")
        quantiles: list[tuple[float, float]] = []
        for i, pair in enumerate(pairs):
            items = _list(pair, f"{where}.quantiles[{i}]")
            if len(items) != 2:
                raise ReferenceFormatError(f"{where}.quantiles[{i}] must be [level, value]")
            level, number = (_number(item, f"{where}.quantiles[{i}]") for item in items)
            quantiles.append((level, number))
        edges = tuple(_numbers(raw["decile_edges"], f"{where}.decile_edges"))
        frequencies = tuple(_numbers(raw["decile_frequencies"], f"{where}.decile_frequencies"))
        if count == 0:
            if quantiles or edges or frequencies:
                raise ReferenceFormatError(f"{where}: no values, yet quantiles or deciles")
        else:
            if [level for level, _ in quantiles] != list(QUANTILE_LEVELS):
                raise ReferenceFormatError(f"{where}.quantiles: levels are not QUANTILE_LEVELS")
            values = [v for _, v in quantiles]
            if any(b < a for a, b in itertools.pairwise(values)):
                raise ReferenceFormatError(f"{where}.quantiles: values must not decrease")
            if len(edges) != len(DECILE_LEVELS) or len(frequencies) != len(DECILE_LEVELS) + 1:
                raise ReferenceFormatError(f"{where}: 9 decile edges and 10 frequencies needed")
            if any(f < 0 for f in frequencies) or abs(sum(frequencies) - 1.0) > 1e-6:
                raise ReferenceFormatError(f"{where}.decile_frequencies must sum to 1")
        return cls(count, missing, tuple(quantiles), edges, frequencies)


@dataclass(frozen=True)
class Categories:
    """A categorical value's distribution: how often each value was seen.

    Attributes
    ----------
    counts
        Each value seen and how many times.
    missing
        How many had no value.
    """

    counts: Mapping[str, int]
    missing: int

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON object ``reference.json`` stores."""
        return {"counts": dict(sorted(self.counts.items())), "missing": self.missing}

    @classmethod
    def from_json(cls, value: object, where: str) -> Categories:
        """Read :meth:`to_json`'s object, checking it (:class:`ReferenceFormatError`)."""
        raw = _object(value, where, {"counts", "missing"})
        counts = _object(raw["counts"], f"{where}.counts", None)
        return cls(
            {str(k): _count(v, f"{where}.counts[{k!r}]") for k, v in counts.items()},
            _count(raw["missing"], f"{where}.missing"),
        )


@dataclass(frozen=True)
class AcquisitionReference:
    """The training series' acquisition parameters.

    Attributes
    ----------
    series
        How many series they describe.
    numeric
        Per numeric parameter (:class:`~model_bundle.imaging.AcquisitionField` value),
        its distribution over the series.
    categorical
        Per categorical parameter, the values seen.
    """

    series: int
    numeric: Mapping[str, Distribution]
    categorical: Mapping[str, Categories]

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON object ``reference.json`` stores."""
        return {
            "series": self.series,
            "numeric": {k: v.to_json() for k, v in sorted(self.numeric.items())},
            "categorical": {k: v.to_json() for k, v in sorted(self.categorical.items())},
        }

    @classmethod
    def from_json(cls, value: object, where: str) -> AcquisitionReference:
        """Read :meth:`to_json`'s object, checking it (:class:`ReferenceFormatError`)."""
        raw = _object(value, where, {"series", "numeric", "categorical"})
        numeric = _object(raw["numeric"], f"{where}.numeric", None)
        categorical = _object(raw["categorical"], f"{where}.categorical", None)
        return cls(
            _count(raw["series"], f"{where}.series"),
            {k: Distribution.from_json(v, f"{where}.numeric.{k}") for k, v in numeric.items()},
            {
                k: Categories.from_json(v, f"{where}.categorical.{k}")
                for k, v in categorical.items()
            },
        )


@dataclass(frozen=True)
class OutputReference:
    """The deployed model's output on the reference hips.

    Attributes
    ----------
    model
        The model key (``"dlr"``).
    source
        Which probabilities these are, in words (e.g. out-of-fold probabilities of the
        training hips, or recalibrated probabilities of a site's calibration cohort).
    probability
        Their distribution.
    threshold
        The bundle's threshold the positive calls were counted at.
    positive_rate
        The fraction of hips called positive (probability >= threshold): the rate a
        binomial test compares the service's calls with.
    """

    model: str
    source: str
    probability: Distribution
    threshold: float
    positive_rate: float

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON object ``reference.json`` stores."""
        return {
            "model": self.model,
            "source": self.source,
            "probability": self.probability.to_json(),
            "threshold": self.threshold,
            "positive_rate": self.positive_rate,
        }

    @classmethod
    def from_json(cls, value: object, where: str) -> OutputReference:
        """Read :meth:`to_json`'s object, checking it (:class:`ReferenceFormatError`)."""
        keys = {"model", "source", "probability", "threshold", "positive_rate"}
        raw = _object(value, where, keys)
        rate = _number(raw["positive_rate"], f"{where}.positive_rate")
        threshold = _number(raw["threshold"], f"{where}.threshold")
        if not (0.0 <= rate <= 1.0 and 0.0 <= threshold <= 1.0):
            raise ReferenceFormatError(f"{where}: threshold and positive_rate must be in [0, 1]")
        return cls(
            _text(raw["model"], f"{where}.model"),
            _text(raw["source"], f"{where}.source"),
            Distribution.from_json(raw["probability"], f"{where}.probability"),
            threshold,
            rate,
        )


@dataclass(frozen=True)
class ReferenceStatistics:
    """A bundle's reference statistics (``reference.json``).

    Attributes
    ----------
    source
        Where the inputs' statistics come from, in words (e.g. "training: 84 hips of
        42 patients").
    acquisition
        The training series' acquisition; ``None`` when unknown (e.g. a calibrated
        bundle whose parent had no reference statistics).
    features
        Per input feature name, its distribution on the training hips.
    output
        The deployed model's output; ``None`` when unknown.
    notes
        Anything a reader should know (e.g. that a calibrated bundle keeps its parent's
        input statistics).
    """

    source: str
    acquisition: AcquisitionReference | None
    features: Mapping[str, Distribution]
    output: OutputReference | None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON object ``reference.json`` stores."""
        return {
            "schema": REFERENCE_SCHEMA,
            "source": self.source,
            "acquisition": None if self.acquisition is None else self.acquisition.to_json(),
            "features": {k: v.to_json() for k, v in sorted(self.features.items())},
            "output": None if self.output is None else self.output.to_json(),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, value: object) -> ReferenceStatistics:
        """Read ``reference.json``'s object, checking it.

        Raises
        ------
        ReferenceFormatError
            Another schema, or a value that is not what this schema says.
        """
        keys = {"schema", "source", "acquisition", "features", "output", "notes"}
        raw = _object(value, REFERENCE_FILE, keys)
        if raw["schema"] != REFERENCE_SCHEMA:
            raise ReferenceFormatError(
                f"{REFERENCE_FILE}: schema {raw['schema']!r} is not {REFERENCE_SCHEMA}"
            )
        features = _object(raw["features"], "features", None)
        acquisition = raw["acquisition"]
        output = raw["output"]
        return cls(
            source=_text(raw["source"], "source"),
            acquisition=None
            if acquisition is None
            else AcquisitionReference.from_json(acquisition, "acquisition"),
            features={k: Distribution.from_json(v, f"features.{k}") for k, v in features.items()},
            output=None if output is None else OutputReference.from_json(output, "output"),
            notes=tuple(_text(n, "notes[]") for n in _list(raw["notes"], "notes")),
        )


# --------------------------------------------------------------------------- checking


def _object(value: object, where: str, keys: set[str] | None) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ReferenceFormatError(f"{where} must be an object")
    if keys is not None and set(value) != keys:
        raise ReferenceFormatError(f"{where} must have exactly the keys {sorted(keys)}")
    return value


def _list(value: object, where: str) -> Sequence[object]:
    if not isinstance(value, list):
        raise ReferenceFormatError(f"{where} must be a list")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReferenceFormatError(f"{where} must be a finite number, not {value!r}")
    return float(value)


def _numbers(value: object, where: str) -> list[float]:
    return [_number(v, where) for v in _list(value, where)]


def _count(value: object, where: str) -> int:
    if type(value) is not int or value < 0:
        raise ReferenceFormatError(f"{where} must be a non-negative integer, not {value!r}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ReferenceFormatError(f"{where} must be a string, not {value!r}")
    return value
