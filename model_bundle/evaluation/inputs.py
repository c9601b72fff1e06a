"""Input checks shared by the statistics: binary labels, finite scores or probabilities of
the right length, both classes present, and the normal critical value of a level.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


#: Below this a standard error or an AUC difference is treated as exactly zero: DeLong
#: components are averages of 0, 0.5 and 1, so genuine values are far above rounding noise.
_ZERO_TOL = 1e-12

#: Probabilities are clipped to [eps, 1 - eps] before taking logits, so that a saturated
#: classifier output of exactly 0 or 1 gives a large finite logit (about ±27.6), not inf.
_LOGIT_EPS = 1e-12


# --------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------


def _labels(y_true: ArrayLike) -> IntArray:
    """Return ``y_true`` as a 1-D int64 array of 0/1, or raise a ValueError saying why."""
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("y_true is empty")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"y_true must be 0/1 or bool, got dtype {arr.dtype}")
    bad = np.setdiff1d(np.unique(arr), [0, 1])
    if bad.size:
        raise ValueError(f"y_true must contain only 0 and 1; found {bad[:5].tolist()}")
    return arr.astype(np.int64)


def _scores(x: ArrayLike, n: int, name: str, *, probability: bool = False) -> FloatArray:
    """Return ``x`` as a finite 1-D float64 array of length ``n``; optionally in [0, 1]."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but y_true has {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if probability and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return arr


def _require_both_classes(y: IntArray, what: str) -> tuple[int, int]:
    """Return (n_pos, n_neg), raising a ValueError naming ``what`` if a class is absent."""
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{what} needs both classes, but y_true has {n_pos} positive and {n_neg} negative cases"
        )
    return n_pos, n_neg


def _z_crit(level: float) -> float:
    """Two-sided standard normal critical value for a confidence ``level`` in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(special.ndtri(1.0 - (1.0 - level) / 2.0))
