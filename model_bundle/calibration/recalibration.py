"""A calibrated bundle's recalibration parameters (``calibration.json``) and their use.

Logistic recalibration (Cox 1958): ``logit p' = intercept + slope * logit p`` for each
model's output ``p``. The slope is positive (a monotone map), so a hip's rank among
others never changes, only its probability and which side of the threshold it falls.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The bundle-relative path of the recalibration parameters in a calibrated bundle.
CALIBRATION_FILE = "calibration.json"

# The same clipping as the calibration statistics, so saturated outputs stay finite.
_EPS = 1e-12


class ThresholdRule(enum.StrEnum):
    """How the calibrated bundle's threshold was chosen on the local cohort."""

    YOUDEN = "youden"
    SENSITIVITY = "sensitivity"  # the highest threshold reaching a target sensitivity


@dataclass(frozen=True)
class ModelRecalibration:
    """One model's recalibration: ``logit p' = intercept + slope * logit p``.

    ``method`` says how it was fitted: ``"intercept+slope"`` (both by maximum
    likelihood) or ``"intercept"`` (slope fixed at 1, when the classes' scores are
    separated and the slope is not estimable).
    """

    intercept: float
    slope: float
    method: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.intercept) and math.isfinite(self.slope)):
            raise ValueError("recalibration intercept and slope must be finite")
        if self.slope <= 0:
            raise ValueError(f"recalibration slope must be > 0 (monotone), not {self.slope}")

    def apply(self, p: float) -> float:
        """The recalibrated probability of ``p``."""
        clipped = min(max(p, _EPS), 1.0 - _EPS)
        z = self.intercept + self.slope * math.log(clipped / (1.0 - clipped))
        # The two branches keep exp() from overflowing for large |z|.
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def to_json(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "method": self.method, "slope": self.slope}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ModelRecalibration:
        return cls(float(value["intercept"]), float(value["slope"]), str(value["method"]))


@dataclass(frozen=True)
class Recalibration:
    """Every model's recalibration and the calibrated thresholds.

    Attributes
    ----------
    models
        Per model key (``rad``, ``dl``, ``dlr``), its :class:`ModelRecalibration`.
    thresholds
        Per model key, the threshold on its *recalibrated* probability.
    rule
        How the thresholds were chosen; ``target_sensitivity`` is set for
        :attr:`ThresholdRule.SENSITIVITY`.
    """

    models: Mapping[str, ModelRecalibration]
    thresholds: Mapping[str, float]
    rule: ThresholdRule
    target_sensitivity: float | None = None

    def apply(self, key: str, p: float) -> float:
        """Model ``key``'s recalibrated probability of ``p`` (unchanged if not fitted)."""
        model = self.models.get(key)
        return p if model is None else model.apply(p)

    def to_json(self) -> dict[str, Any]:
        return {
            "models": {k: m.to_json() for k, m in sorted(self.models.items())},
            "rule": self.rule.value,
            "target_sensitivity": self.target_sensitivity,
            "thresholds": dict(sorted(self.thresholds.items())),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Recalibration:
        """Read ``calibration.json`` (already parsed as strict JSON by the bundle loader)."""
        target = value.get("target_sensitivity")
        return cls(
            models={str(k): ModelRecalibration.from_json(v) for k, v in value["models"].items()},
            thresholds={str(k): float(v) for k, v in value["thresholds"].items()},
            rule=ThresholdRule(value["rule"]),
            target_sensitivity=None if target is None else float(target),
        )


def compose(first: ModelRecalibration, then: ModelRecalibration) -> ModelRecalibration:
    """``then`` applied after ``first``, as one recalibration (both are linear in logit)."""
    return ModelRecalibration(
        then.intercept + then.slope * first.intercept,
        then.slope * first.slope,
        f"{first.method}, then {then.method}",
    )
