"""Signed distance functions (mm; negative inside) and partial-volume occupancy.

All functions take coordinate arrays ``x, y, z`` of one shape (any shape) and return
an array of that shape; they are pure numpy and allocate no more than needed, because
the renderer calls them on millions of points.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F = NDArray[np.float32]


def _floats(v: NDArray[np.float64]) -> tuple[float, float, float]:
    # Python floats keep float32 arrays float32 (NumPy 2 promotes with float64 scalars).
    a, b, c = (float(e) for e in v)
    return a, b, c


def _segment_parameter(
    x: F, y: F, z: F, a: NDArray[np.float64], b: NDArray[np.float64]
) -> tuple[F, F, F, F, tuple[float, float, float]]:
    """Clamped position along segment a-b of the nearest point, and p - a."""
    ab = np.asarray(b, dtype=np.float64) - a
    ux, uy, uz = _floats(ab)
    denom = ux * ux + uy * uy + uz * uz
    ax, ay, az = _floats(a)
    px, py, pz = x - ax, y - ay, z - az
    t = np.clip((px * ux + py * uy + pz * uz) * (1.0 / denom), 0.0, 1.0)
    return t, px, py, pz, (ux, uy, uz)


def sphere(x: F, y: F, z: F, centre: NDArray[np.float64], radius: float) -> F:
    """Exact distance to a sphere."""
    cx, cy, cz = _floats(centre)
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - float(radius)


def ellipsoid(
    x: F,
    y: F,
    z: F,
    centre: NDArray[np.float64],
    radii: NDArray[np.float64],
    rotation: NDArray[np.float64] | None = None,
) -> F:
    """Approximate distance to an ellipsoid (exact on the axes, good enough near it).

    ``rotation`` maps the ellipsoid's own axes to the frame of ``x, y, z``: its columns
    are the ellipsoid axes.
    """
    cx, cy, cz = _floats(centre)
    dx, dy, dz = x - cx, y - cy, z - cz
    if rotation is not None:
        r = rotation.tolist()
        dx, dy, dz = (
            r[0][0] * dx + r[1][0] * dy + r[2][0] * dz,
            r[0][1] * dx + r[1][1] * dy + r[2][1] * dz,
            r[0][2] * dx + r[1][2] * dy + r[2][2] * dz,
        )
    ax, ay, az = _floats(radii)
    k = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2 + (dz / az) ** 2)
    return (k - 1.0) * min(ax, ay, az)


def capsule(x: F, y: F, z: F, a: NDArray[np.float64], b: NDArray[np.float64], radius: float) -> F:
    """Exact distance to a capsule (segment ``a``-``b`` swept by a sphere)."""
    t, px, py, pz, (ux, uy, uz) = _segment_parameter(x, y, z, a, b)
    return np.sqrt((px - t * ux) ** 2 + (py - t * uy) ** 2 + (pz - t * uz) ** 2) - float(radius)


def tapered_capsule(
    x: F,
    y: F,
    z: F,
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    radius_a: float,
    radius_b: float,
) -> F:
    """Approximate distance to a capsule whose radius changes linearly from a to b."""
    t, px, py, pz, (ux, uy, uz) = _segment_parameter(x, y, z, a, b)
    d = np.sqrt((px - t * ux) ** 2 + (py - t * uy) ** 2 + (pz - t * uz) ** 2)
    return d - (float(radius_a) + t * float(radius_b - radius_a))


def smooth_union(d1: F, d2: F, k: float) -> F:
    """Polynomial smooth minimum: a union whose joins are rounded over ``k`` mm."""
    m = np.minimum(d1, d2)
    if k <= 0:
        return m
    # min(a, b) - max(k - |a - b|, 0)^2 / 4k: the same quadratic blend as the usual
    # clamp form, in fewer passes over the arrays.
    corr = np.maximum(k - np.abs(d1 - d2), 0.0)
    corr *= corr
    corr *= 0.25 / k
    m -= corr
    return m


def occupancy(d: F, width: float) -> F:
    """Fraction of a voxel of ``width`` mm inside a surface at signed distance ``d``.

    A linear ramp over one voxel: the analytic partial-volume of a locally flat surface
    under a box point-spread function.
    """
    return np.clip(0.5 - d / width, 0.0, 1.0).astype(np.float32, copy=False)


def waves(
    x: F,
    y: F,
    z: F,
    vectors: NDArray[np.float64],
    phases: NDArray[np.float64],
    amplitudes: NDArray[np.float64],
) -> F:
    """A smooth random field: a sum of plane waves (``vectors`` in rad/mm, shape (n, 3))."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
    for v, p, a in zip(vectors.tolist(), phases.tolist(), amplitudes.tolist(), strict=True):
        out += np.float32(a) * np.sin(x * v[0] + y * v[1] + z * v[2] + p)
    return out


__all__ = [
    "capsule",
    "ellipsoid",
    "occupancy",
    "smooth_union",
    "sphere",
    "tapered_capsule",
    "waves",
]
