"""PyRadiomics' fixed-bin-width edges, computed with NumPy's min and max.

PyRadiomics 3.1.4 (``radiomics.imageoperations.getBinEdges``) takes the ROI's minimum and
maximum grey level with Python's built-in ``min``/``max``, which walk a NumPy array one
element at a time: about 0.1 s per hip for the bundle's 15 discretisations, a tenth of
its radiomics time, all of it holding the GIL (so it also stalls the other hip's
thread). :func:`install` puts :func:`bin_edges` in its place: the same arithmetic, with
``numpy.min``/``numpy.max``, which return the same element (so the same edges and the same
features, bit for bit; ``tests/test_radiomics.py`` compares both on ROI values and edge
cases). Installed only for the PyRadiomics versions it was checked against; any other
version keeps its own function.

Imported by :mod:`model_bundle.features.radiomics` only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import radiomics
from numpy.typing import NDArray
from radiomics import imageoperations

#: PyRadiomics releases whose ``getBinEdges`` :func:`bin_edges` reproduces.
CHECKED_VERSIONS: Final = frozenset({"v3.1.4", "3.1.4"})  # it reports "v3.1.4"

#: PyRadiomics' own function, kept for comparison and for :func:`uninstall`.
ORIGINAL: Final[Callable[..., Any]] = imageoperations.getBinEdges

_LOGGER = logging.getLogger("radiomics.imageoperations")


def bin_edges(parameterValues: NDArray[Any], **kwargs: Any) -> Any:
    """``radiomics.imageoperations.getBinEdges`` with NumPy reductions (same result)."""
    bin_width = kwargs.get("binWidth", 25)
    bin_count = kwargs.get("binCount")
    if bin_count is not None:
        edges = np.histogram(parameterValues, bin_count)[1]
        edges[-1] += 1  # as PyRadiomics: the maximum falls in the top bin under digitize
        return edges
    values = np.asarray(parameterValues)
    minimum = values.min()
    maximum = values.max()
    low = minimum - (minimum % bin_width)
    high = maximum + 2 * bin_width
    result: Any = np.arange(low, high, bin_width)
    if len(result) == 1:  # a flat region: one bin needs two edges
        result = [result[0] - 0.5, result[0] + 0.5]
    _LOGGER.debug("Calculated %d bins for bin width %g", len(result) - 1, bin_width)
    return result


def install() -> bool:
    """Use :func:`bin_edges` for PyRadiomics' discretisation; whether it was installed."""
    if radiomics.__version__ not in CHECKED_VERSIONS:
        return False
    imageoperations.getBinEdges = bin_edges
    return True


def uninstall() -> None:
    """Give PyRadiomics its own function back."""
    imageoperations.getBinEdges = ORIGINAL
