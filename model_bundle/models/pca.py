"""The PCA of the deep features as a bundle stores it: fitted on the training hips, applied
to every hip, and read back from plain JSON with its shapes and values checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from onfh_dlr.errors import ConfigurationError

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class PCAParams:
    """PCA of the deep features, fitted on the training hips."""

    mean: F64
    components: F64  # (k, 512)
    explained_variance_ratio: F64

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"deep_pca_{i:03d}" for i in range(len(self.components)))

    def transform(self, deep: F64) -> F64:
        return np.asarray((deep - self.mean) @ self.components.T, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "onfh-dlr/pca",
            "version": 1,
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PCAParams:
        if data.get("format") != "onfh-dlr/pca" or data.get("version") != 1:
            raise ConfigurationError("not an onfh-dlr PCA parameter file (format/version)")
        mean = np.asarray(data["mean"], dtype=np.float64)
        components = np.asarray(data["components"], dtype=np.float64)
        ratio = np.asarray(data["explained_variance_ratio"], dtype=np.float64)
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != len(mean):
            raise ConfigurationError("PCA parameters have inconsistent shapes")
        if not (np.isfinite(mean).all() and np.isfinite(components).all()):
            raise ConfigurationError("PCA parameters are not finite")
        return cls(mean, components, ratio)
