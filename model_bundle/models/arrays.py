"""Reading numbers and arrays out of classifier JSON with every shape, type and range checked,
and the check that child indices form a binary tree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from onfh_dlr.errors import ClassifierError

I64 = NDArray[np.int64]


def _array(obj: Mapping[str, Any], key: str, ndim: int, *, integer: bool = False) -> Any:
    """A nested JSON list as a rectangular numeric array of ``ndim`` dimensions."""
    value = obj.get(key)
    if not isinstance(value, list):
        raise ClassifierError(f"{key!r} must be a JSON array")
    try:
        arr = np.array(value)
    except ValueError as exc:  # ragged nesting
        raise ClassifierError(f"{key!r} is not a rectangular array") from exc
    if arr.ndim != ndim and not (arr.size == 0 and ndim == 1):
        raise ClassifierError(f"{key!r} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64 if integer else np.float64).reshape((0,) * ndim)
    # numpy turns true/false among numbers into 1/0, and integers beyond int64 into
    # uint64 (which would wrap on conversion): both are rejected, not reinterpreted.
    if ndim == 1 and any(isinstance(v, bool) for v in value):
        raise ClassifierError(f"{key!r} must hold numbers, not booleans")
    kinds = "i" if integer else "if"
    if arr.dtype.kind not in kinds:
        what = "integers" if integer else "numbers"
        raise ClassifierError(f"{key!r} must hold only {what}")
    if integer:
        return arr.astype(np.int64)
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ClassifierError(f"{key!r} holds non-finite values")
    return out


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClassifierError(f"{key!r} must be a finite number")
    return float(value)


def _integer(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClassifierError(f"{key!r} must be an integer")
    return value


def _check_binary_tree(left: I64, right: I64, what: str) -> None:
    """Children in range, leaves marked -1 on both sides, every node reached exactly once."""
    n = left.shape[0]
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise ClassifierError(f"{what}: a node has exactly one child")
    internal = ~leaf
    for side in (left, right):
        if ((side[internal] < 1) | (side[internal] >= n)).any():
            raise ClassifierError(f"{what}: a child index is out of range")
    seen = np.zeros(n, dtype=bool)
    stack = [0]
    while stack:
        node = stack.pop()
        if seen[node]:
            raise ClassifierError(f"{what}: node {node} is reached twice (not a tree)")
        seen[node] = True
        if not leaf[node]:
            stack.extend((int(left[node]), int(right[node])))
    if not seen.all():
        raise ClassifierError(f"{what}: {int((~seen).sum())} nodes are unreachable")
