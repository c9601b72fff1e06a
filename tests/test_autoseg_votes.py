"""The Hough search's shortcuts find what the plain computations they replace found."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from model_bundle.imaging.autoseg import MIN_SUPPORT, _peaks, _reference


def _accumulator() -> np.ndarray:
    """Blurred spikes of widely spread weights, some on the border, over faint noise."""
    rng = np.random.default_rng(7)
    shape = (30, 40, 50)
    acc = rng.random(shape).astype(np.float32) * 0.01
    spikes = np.stack([rng.integers(0, n, 300) for n in shape], axis=1)
    spikes[:20, 0] = 0  # on the first and last slices, where the cube leaves the array
    spikes[20:40, 0] = shape[0] - 1
    acc[tuple(spikes.T)] += (10.0 ** rng.uniform(0, 4, len(spikes))).astype(np.float32)
    return np.asarray(ndimage.gaussian_filter(acc, 1.0), dtype=np.float32)


def test_strong_local_maxima_are_those_of_a_maximum_filter() -> None:
    acc = _accumulator()
    reference = _reference(acc)
    # What the search did before the shortcut: a maximum filter over the volume, then
    # only the maxima with the support _search_side goes on to examine.
    filtered = (acc == ndimage.maximum_filter(acc, size=7)) & (acc > 0)
    expected = np.argwhere(filtered & ~(acc / reference < MIN_SUPPORT))
    found = _peaks(acc, reference)
    assert len(expected) >= 10  # the check compares something
    assert ((expected[:, 0] == 0) | (expected[:, 0] == acc.shape[0] - 1)).any()
    np.testing.assert_array_equal(found, expected.astype(np.float64))
