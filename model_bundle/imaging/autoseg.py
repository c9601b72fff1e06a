"""Auto-segmentation of each femoral head in a coronal T2-FS series.

Classical, model-based image analysis; no network and no weights. The femoral head is
close to a sphere (the literature fits spheres to it for this reason), and on T2-FS it
sits inside concentric spherical shells: its own cortex, the bright cartilage and joint
space, the dark acetabular bone. The method uses exactly that:

1. On a 1.5 mm isotropic copy of the image, strong edges (an even sample of a quarter
   of them) vote for sphere centres at 18-32 mm along their gradient, both ways (a
   spherical Hough transform that is blind to edge polarity, so heads with fatty and
   with oedematous marrow both vote). Concentric shells all vote for the same centre.
2. Per side of the body's midline, the best-supported candidates are checked with a
   radial profile: the median over directions of the intensity at each radius, ignoring
   the directions of the neck. The head surface is the steepest rise into the cartilage
   ring; the median makes it robust to a lesion, a cyst or an effusion that occupies a
   minority of directions. The rim's contrast is read only on the rays along which the
   acquisition resolves a few-mm ring: with thick slices (or a gap) rays that cross the
   slices see it smeared, and a median over all rays called healthy heads rimless.
3. The centre and radius are refined by a least-squares sphere fit to the surface
   points found direction by direction, with outliers rejected. On each ray the surface
   is where the profile first rises, from its darkest point near the surface (cortex or
   fatty marrow), through the cartilage ring's level read on the median profile: not
   the ray's steepest rise, which an effusion (a bright shell outside the cartilage,
   where the acetabulum does not cover the head) draws outward, and the fitted centre
   with it.
4. Each side is judged on its own. Plausibility checks (radius, ring contrast, a
   sphere that most rays agree with, dominance over other candidates) reject what is
   not a femoral head; the Hough votes
   only screen out what is no structure at all, since their count depends on the
   acquisition (slice thickness, gap, pixel size, coverage) more than on the head; a side with
   none gets a :class:`~onfh_dlr.errors.FemoralHeadNotFoundError` as its reason, never
   a guess, and the other side keeps its head. One exception to the rim check: an
   oedematous head with an effusion can lose most of its cartilage-rim contrast, so a
   side whose dominant candidate has a weak rim but many surface points is accepted
   when it mirrors the contralateral head in position and size
   (:attr:`Evidence.SPHERE_FIT_WITH_CONTRALATERAL`). And when two rimmed candidates of
   a side draw similar votes (a bowel loop of a head's size can), the one that mirrors
   the contralateral head is taken, if exactly one does
   (:attr:`Evidence.CARTILAGE_RIM_CHOSEN_BY_CONTRALATERAL`).
5. Left/right disagreement (unequal radii, odd placement) is a :class:`PairWarning`
   on the result, not a refusal: real pairs can differ more than healthy adults do.

:func:`find_hips` is the entry point of every caller (a :class:`HipSearch`);
:func:`auto_rois` is the all-or-nothing form kept for ``bench/phantom_speed.py``.

The ROI is the sphere cut at the head-neck junction, on the series' own grid, a voxel
counting as inside when at least half of it (through the slice thickness) is.

Why not a trained network: nothing may be downloaded, and a network trained only on our
phantom would learn the phantom's habits; a sphere fit with explicit checks fails loudly
on data it does not understand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage

from model_bundle.imaging.preprocess import resample_isotropic
from model_bundle.imaging.roi import HipROI, Side
from model_bundle.imaging.series import LoadedSeries
from onfh_dlr.errors import FemoralHeadNotFoundError

F64 = NDArray[np.float64]

WORK_SPACING = 1.5  # mm: coarse enough to be fast, fine enough for 1 mm accuracy after the fit
RADII = np.arange(18.0, 33.0, 1.5)  # mm, searched sphere radii (heads are 20-27.5 mm)
EDGE_PERCENTILE = 92.0  # of the gradient magnitude: an edge for the Hough votes
MAX_EDGES = 250_000  # strongest edge voxels considered for the Hough votes
VOTE_STRIDE = 4  # of those, every 4th (by strength) votes; see _hough
RADIUS_RANGE = (17.5, 31.0)  # mm, accepted head radii
LATERAL_RANGE = (55.0, 140.0)  # mm from the body midline to a head centre
NECK_RADIUS_RATIO = 0.62  # neck radius / head radius, for the head-neck junction plane
MIN_EDGE_CONTRAST = 0.1  # of the image's robust maximum, see _profile_fit
# The cartilage ring and joint space are about this thick: the rim is read only along
# rays on which the acquisition resolves that (see _resolved_rays).
RIM_RESOLUTION = 3.0  # mm
MIN_RESOLVED_FRACTION = 0.3  # of the rays, kept (the most in-plane) whatever the slices
# Hough votes at the centre over the median vote. Only a screen for "a structure at
# all" (pure noise scores ~5): the count depends on the acquisition (thick slices and
# gaps blur the shells the votes come from; coverage moves the median), so healthy heads
# of thick-slice or low-SNR series score as low as ~165, and anatomy that is no head
# scores up to ~250. What is a head is decided by the rim, the radius and dominance.
MIN_SUPPORT = 60.0
MIN_DOMINANCE = 2.5  # a head's votes over the next candidate's on its side (heads: > 4)
# Rays (of ~310 away from the neck) whose surface point agrees with the fitted sphere:
# heads have 150-310; a round structure seen only in part (a bowel loop's edge, the
# trochanter) can have a median rim and a head's votes with 15-30, and is no sphere.
MIN_SURFACE_POINTS = 60
MAX_RADIUS_ASYMMETRY = 4.0  # mm between left and right heads: beyond it, a warning
# The weak-rim fallback (see _fallback): oedema with effusion flattens the rim to a
# fraction of MIN_EDGE_CONTRAST; a missing head or soft tissue has no sphere at all.
MIN_WEAK_CONTRAST = 0.04
MIN_FALLBACK_POINTS = 120  # of the ~300 rays away from the neck
FALLBACK_MAX_OFFSET = 20.0  # mm, antero-posterior and cranio-caudal, from the other head


class Evidence(Enum):
    """What a head was accepted on."""

    #: Its own sharp rise into the cartilage ring (the usual case).
    CARTILAGE_RIM = "cartilage rim"
    #: A weak rim (oedema, effusion) but a well-supported sphere that mirrors the
    #: contralateral head: the symmetry prior stands in for the missing contrast.
    SPHERE_FIT_WITH_CONTRALATERAL = "sphere fit with contralateral prior"
    #: Its own cartilage rim, but another round, rimmed structure on its side drew
    #: similar votes: of the two, it is the one that mirrors the contralateral head.
    CARTILAGE_RIM_CHOSEN_BY_CONTRALATERAL = "cartilage rim, chosen by the contralateral head"


@dataclass(frozen=True)
class HeadFit:
    """A femoral head found in an image, in patient (LPS) coordinates."""

    side: Side
    centre: F64  # mm
    radius: float  # mm
    neck_direction: F64  # unit vector from the centre towards the neck
    edge_contrast: float  # rise into the cartilage ring, in units of the image's robust max
    support: float  # Hough votes at the centre over the median vote in the volume
    surface_points: int  # directions that agreed with the fitted sphere
    evidence: Evidence = Evidence.CARTILAGE_RIM


def neck_direction(side: Side) -> F64:
    """Typical direction from the head centre to the neck, in LPS.

    Infero-lateral at the neck-shaft angle of about 130 degrees, and a little posterior
    (the head is anteverted). Only used to cut the head at the head-neck junction and
    to ignore the neck when reading radial profiles.
    """
    lateral = 1.0 if side is Side.LEFT else -1.0
    v = np.array([0.66 * lateral, 0.22, -0.72])
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def _fibonacci_sphere(n: int) -> F64:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


_DIRECTIONS = _fibonacci_sphere(400)


@dataclass(frozen=True)
class _Work:
    """The working copy: intensities scaled to a robust max of 1, and its geometry."""

    array: NDArray[np.float32]  # (k, j, i), indexed like SimpleITK's GetArrayFromImage
    origin: F64
    direction: F64  # columns: image axes in LPS
    spacing: float
    midline_x: float
    # The acquisition's voxel, which the working copy's isotropic grid hides: the
    # source image's axes in LPS (columns) and its spacing along each (slice spacing,
    # gap included, along the slice axis).
    source_direction: F64 = field(default_factory=lambda: np.eye(3))
    source_spacing: F64 = field(default_factory=lambda: np.full(3, WORK_SPACING))

    def to_index(self, points: F64) -> F64:
        """LPS points (..., 3) to fractional (k, j, i) array indices."""
        ijk = (np.asarray(points) - self.origin) @ self.direction / self.spacing
        return np.asarray(ijk[..., ::-1], dtype=np.float64)

    def to_point(self, kji: F64) -> F64:
        """Fractional (k, j, i) indices (..., 3) to LPS points."""
        ijk = np.asarray(kji, dtype=np.float64)[..., ::-1]
        return np.asarray(self.origin + (ijk * self.spacing) @ self.direction.T, dtype=np.float64)

    def sample(self, points: F64) -> NDArray[np.float32]:
        """Trilinear intensities at LPS points (..., 3); 0 outside."""
        idx = self.to_index(points)
        flat = idx.reshape(-1, 3).T
        values = ndimage.map_coordinates(self.array, flat, order=1, mode="constant", cval=0.0)
        return values.reshape(idx.shape[:-1]).astype(np.float32)


def _working_copy(image: sitk.Image) -> _Work:
    work = resample_isotropic(image, WORK_SPACING, interpolator="linear")
    array = sitk.GetArrayFromImage(work).astype(np.float32)
    # Flat indices, not np.nonzero: the body is most of the volume, and three index
    # arrays of it cost more than the percentile and the subsampled midline need.
    body = np.flatnonzero(array > 0.1 * float(np.percentile(array, 99.5)))
    if len(body) < 1000:
        raise FemoralHeadNotFoundError(
            "the image is (nearly) empty: no body to search for femoral heads"
        )
    scale = float(np.percentile(array.ravel()[body], 99.0))
    array /= scale
    direction = np.array(work.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.array(work.GetOrigin(), dtype=np.float64)
    # The midline: where the body's mass balances left to right. Robust to the FOV
    # being off-centre, which patient coordinates alone are not.
    step = max(1, len(body) // 200_000)
    k, j, i = np.unravel_index(body[::step], array.shape)
    points = origin + (np.stack([i, j, k], axis=1) * WORK_SPACING) @ direction.T
    return _Work(
        array,
        origin,
        direction,
        WORK_SPACING,
        float(np.median(points[:, 0])),
        source_direction=np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        source_spacing=np.array(image.GetSpacing(), dtype=np.float64),
    )


def _hough(work: _Work) -> NDArray[np.float32]:
    """Votes for sphere centres from strong edges, both gradient directions, all radii."""
    smooth = ndimage.gaussian_filter(work.array, 1.0)
    grads = np.gradient(smooth)
    magnitude = np.sqrt(sum(g * g for g in grads))
    # The edges: above the 92nd percentile of the gradient magnitude, at most the
    # MAX_EDGES strongest. One partition gives both order statistics (the percentile
    # interpolated as np.percentile does), no sort of the edges.
    flat = magnitude.ravel()
    q = EDGE_PERCENTILE / 100.0 * (flat.size - 1)
    lo = int(q)
    hi = min(lo + 1, flat.size - 1)
    top = max(flat.size - MAX_EDGES, 0)
    part = np.partition(flat, sorted({lo, hi, top}))
    threshold = float(part[lo]) + (q - lo) * (float(part[hi]) - float(part[lo]))
    edges = flat > threshold
    if np.count_nonzero(edges) > MAX_EDGES:  # keep the strongest edges only
        edges &= flat >= part[top]
    # Every VOTE_STRIDE-th of them votes: a head's shells hold thousands of edge voxels,
    # so a quarter of them still puts its centre's peak on the same voxel or next to it,
    # and the votes, the costliest part of the search, take a quarter of the time.
    # Measured (bench/autoseg_accuracy.py, 12 cases x 5 site profiles): the same hips
    # found, per-site Dice medians within 0.0005, minima equal or higher, supports
    # within a few per cent.
    k, j, i = np.unravel_index(np.flatnonzero(edges)[::VOTE_STRIDE], magnitude.shape)
    m = magnitude[k, j, i]
    weight = np.sqrt(m)
    shape = work.array.shape
    # One contiguous float64 array per axis: the targets are rounded in float64 (as a
    # float32 unit vector times a float64 radius always was) and their flat index is
    # exact in float64, so no (n, 3) temporaries, casts or ravel_multi_index per radius.
    base = [a.astype(np.float64) for a in (k, j, i)]
    unit = [(g[k, j, i] / m).astype(np.float64) for g in grads]
    stride = (float(shape[1] * shape[2]), float(shape[2]))
    # Every vote of every radius and direction in one bincount: one volume-sized sum
    # instead of one per radius and sign.
    flats, weights = [], []
    for r in RADII / work.spacing:
        step = [r * u for u in unit]
        for sign in (1.0, -1.0):
            target = [
                np.rint(b + s if sign > 0 else b - s) for b, s in zip(base, step, strict=True)
            ]
            ok = np.ones(len(m), dtype=np.bool_)
            for t, size in zip(target, shape, strict=True):
                ok &= (t >= 0) & (t < size)
            flat = (target[0] * stride[0] + target[1] * stride[1] + target[2])[ok]
            flats.append(flat.astype(np.int64))
            weights.append(weight[ok])
    acc = np.bincount(
        np.concatenate(flats), weights=np.concatenate(weights), minlength=int(np.prod(shape))
    )
    return ndimage.gaussian_filter(acc.reshape(shape).astype(np.float32), 1.0)


_PEAK_SIZE = 7  # voxels: a local maximum is the largest vote in this cube around it


def _reference(acc: NDArray[np.float32]) -> float:
    """The median vote where there are votes: what a candidate's support is counted in."""
    return max(float(np.median(acc[acc > 0])), 1e-9)


def _peaks(acc: NDArray[np.float32], reference: float) -> F64:
    """(k, j, i) indices of the votes' local maxima with at least ``MIN_SUPPORT``.

    Weaker maxima are never searched (:func:`_search_side` stops at the first), so only
    the voxels with that support (about 0.3 % of the volume) are tested against their
    cube of ``_PEAK_SIZE`` voxels, instead of a maximum filter over the volume: first the
    3-voxel cube, which leaves a few dozen, then the whole one. The border is padded
    with its own values, which a cube's maximum cannot tell from the filter's mirrored
    border, so the maxima are the same. Both sides share them.
    """
    flat = acc.ravel()
    # The support as _candidates computes it (float32 votes over a float), kept unless
    # _search_side would stop at it.
    strong = np.flatnonzero(~(flat / reference < MIN_SUPPORT) & (flat > 0))
    half = _PEAK_SIZE // 2
    padded = np.pad(acc, half, mode="edge")
    kji = np.stack(np.unravel_index(strong, acc.shape), axis=1) + half
    stride = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    at = kji @ stride
    for size in (3, _PEAK_SIZE):
        r = np.arange(size) - size // 2
        cube = (np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1) @ stride).ravel()
        local = padded.ravel()[at[:, None] + cube[None, :]].max(axis=1)
        keep = padded.ravel()[at] == local
        at, kji = at[keep], kji[keep]
    return (kji - half).astype(np.float64)


def _candidates(
    work: _Work, acc: NDArray[np.float32], kji: F64, reference: float, side: Side, n: int = 6
) -> list[tuple[F64, float]]:
    """The ``n`` strongest of the local maxima ``kji`` on one side of the midline."""
    points = work.to_point(kji)
    offset = (points[:, 0] - work.midline_x) * (1.0 if side is Side.LEFT else -1.0)
    keep = (offset > LATERAL_RANGE[0]) & (offset < LATERAL_RANGE[1])
    if not keep.any():
        return []
    votes = acc[tuple(kji[keep].astype(int).T)]
    order = np.argsort(votes)[::-1][:n]
    return [(points[keep][o], float(votes[o] / reference)) for o in order]


_PROFILE_RADII = np.arange(8.0, 40.0, 0.5)


def _profiles(work: _Work, centre: F64, side: Side) -> tuple[F64, NDArray[np.float32]]:
    """Intensity along rays from ``centre`` in directions away from the neck."""
    neck = neck_direction(side)
    dirs = _DIRECTIONS[_DIRECTIONS @ neck < np.cos(np.radians(55))]
    points = centre + dirs[:, None, :] * _PROFILE_RADII[None, :, None]
    return dirs, work.sample(points)


def _resolved_rays(work: _Work, dirs: F64) -> NDArray[np.bool_]:
    """The rays along which the acquisition resolves the cartilage ring.

    A ray crosses a source voxel over about ``sqrt(sum((spacing_a * cos_a) ** 2))`` mm,
    ``cos_a`` its cosine to image axis ``a``: for a coronal series
    ``hypot(slice * cos, pixel * sin)`` with theta the angle to the slice axis, whatever
    order the array's axes are in. With thick slices (or a gap) the few-mm ring is
    smeared along rays close to the slice axis, and a median over all rays reports a
    weak rim for a healthy head. At least ``MIN_RESOLVED_FRACTION`` of the rays (the
    best resolved) are kept.
    """
    extent = np.sqrt((((dirs @ work.source_direction) * work.source_spacing) ** 2).sum(axis=1))
    keep = extent <= RIM_RESOLUTION
    if keep.mean() < MIN_RESOLVED_FRACTION:
        keep = extent <= np.quantile(extent, MIN_RESOLVED_FRACTION)
    return np.asarray(keep, dtype=np.bool_)


_Rays = tuple[F64, NDArray[np.float32]]  # directions and their profiles, from _profiles


def _median_profile(prof: NDArray[np.float32]) -> F64:
    """The rays' median profile, smoothed (1 sample): what the radius and level are read on."""
    return ndimage.gaussian_filter1d(np.median(prof, axis=0).astype(np.float64), 1.0)


def _rise(median: F64) -> tuple[float, float]:
    """The foot of the rise into the cartilage ring of a smoothed median profile.

    Returns the radius where the profile first reaches 40 % of the way from the level
    inside the rise to the ring's peak, and that level (in image units).
    """
    r = _PROFILE_RADII
    slope = np.gradient(median, r)
    window = (RADIUS_RANGE[0] <= r) & (RADIUS_RANGE[1] >= r)
    steepest = float(r[int(np.argmax(np.where(window, slope, -np.inf)))])
    inner = np.nonzero((r >= steepest - 4.0) & (r <= steepest))[0]
    outer = np.nonzero((r >= steepest) & (r <= steepest + 5.0))[0]
    i_in = int(inner[np.argmin(median[inner])])
    i_pk = int(outer[np.argmax(median[outer])])
    level = float(median[i_in] + 0.4 * (median[i_pk] - median[i_in]))
    rising = median[i_in : i_pk + 1]
    k = int(np.argmax(rising >= level))
    if k == 0:
        return float(r[i_in]), level
    a, b = rising[k - 1], rising[k]  # interpolate between the samples either side
    return float(r[i_in + k - 1] + (level - a) / max(b - a, 1e-9) * (r[1] - r[0])), level


def _profile_fit(
    work: _Work, centre: F64, side: Side, rays: _Rays | None = None
) -> tuple[float, float]:
    """Radius of the head surface from the median radial profile, and the edge contrast.

    The surface is where the profile leaves the (dark) cortex for the bright cartilage
    ring. That ring is only a few mm thick, so after blurring (thick slices) its half
    maximum lies outside the surface; the foot of the rise, 40 % of the way from the
    level inside to the ring's peak, marks the surface better (:func:`_rise`).

    The contrast is read on the rays the acquisition resolves (:func:`_resolved_rays`),
    the radius on all of them (the foot of the rise already allows for the blur).
    ``rays``: the profiles at ``centre`` when the caller has them already.
    """
    dirs, prof = rays if rays is not None else _profiles(work, centre, side)
    r = _PROFILE_RADII
    median = _median_profile(prof)
    radius, _ = _rise(median)
    # Contrast around the surface, whatever its polarity: fatty marrow rises into the
    # cartilage ring, oedematous marrow falls into the cortex first.
    near = (r >= radius - 4.0) & (r <= radius + 4.0)
    resolved = prof[_resolved_rays(work, dirs)]
    sharp = ndimage.gaussian_filter1d(np.median(resolved, axis=0).astype(np.float64), 1.0)
    return radius, float(np.ptp(sharp[near]))


def _surface_points(smooth: F64, radius: float, level: float) -> tuple[F64, NDArray[np.bool_]]:
    """Per ray, where it first rises through ``level`` from its darkest point near the surface.

    ``smooth``: the rays' smoothed profiles (rays x ``_PROFILE_RADII``). The search starts
    at each ray's minimum within 4 mm inside to 1 mm outside ``radius`` (the cortex, or
    the dark marrow) and goes outward to 4 mm outside. The level is the median profile's
    (cartilage-ring) level, the same on every ray: an effusion outside the cartilage
    makes its ray's edge larger and its steepest point further out, but not the place
    where it first reaches the cartilage's level. Returns the radii and which rays have
    such a crossing.
    """
    r = _PROFILE_RADII
    step = float(r[1] - r[0])
    lo = int(np.searchsorted(r, radius - 4.0))
    hi = int(np.searchsorted(r, radius + 4.0, side="right"))
    start_hi = int(np.searchsorted(r, radius + 1.0, side="right"))
    seg = smooth[:, lo:hi]
    start = np.argmin(seg[:, : max(start_hi - lo, 1)], axis=1)
    after = np.arange(seg.shape[1])[None, :] > start[:, None]
    above = (seg >= level) & after
    ok = above.any(axis=1) & (seg[np.arange(len(seg)), start] < level)
    k = np.argmax(above, axis=1)
    k = np.maximum(k, 1)
    rows = np.arange(len(seg))
    a, b = seg[rows, k - 1], seg[rows, k]
    frac = np.clip((level - a) / np.maximum(b - a, 1e-9), 0.0, 1.0)
    radii = r[lo] + (k - 1 + frac) * step
    return np.asarray(radii, dtype=np.float64), np.asarray(ok, dtype=np.bool_)


def _refine(
    work: _Work, centre: F64, radius: float, side: Side, rays: _Rays | None = None
) -> tuple[F64, float, int]:
    """Least-squares sphere through the per-direction surface points near ``radius``.

    ``rays``: the profiles at ``centre`` when the caller has them already.
    """
    for _ in range(3):
        dirs, prof = rays if rays is not None else _profiles(work, centre, side)
        rays = None
        smooth = ndimage.gaussian_filter1d(prof.astype(np.float64), 1.0, axis=1)
        _, level = _rise(_median_profile(prof))
        r_dir, strong = _surface_points(smooth, radius, level)
        pts = centre + dirs * r_dir[:, None]
        pts = pts[strong]
        if len(pts) < 30:
            break
        for _ in range(3):  # algebraic sphere fit with outlier rejection
            a = np.hstack([2 * pts, np.ones((len(pts), 1))])
            b = (pts**2).sum(axis=1)
            sol, *_ = np.linalg.lstsq(a, b, rcond=None)
            c = sol[:3]
            r = float(np.sqrt(sol[3] + c @ c))
            resid = np.abs(np.linalg.norm(pts - c, axis=1) - r)
            keep = resid < max(1.5, 2.5 * float(np.median(resid)))
            if keep.all() or keep.sum() < 30:
                break
            pts = pts[keep]
        if np.linalg.norm(c - centre) > 6.0 or not RADIUS_RANGE[0] <= r <= RADIUS_RANGE[1]:
            break  # the fit ran off: keep the profile estimate
        centre, radius = np.asarray(c, dtype=np.float64), r
    return centre, radius, len(pts)


class PairWarningKind(Enum):
    """How the two heads found disagree; recorded, never a refusal."""

    RADIUS_ASYMMETRY = "radius asymmetry"
    PLACEMENT = "placement"


@dataclass(frozen=True)
class PairWarning:
    """A left/right comparison that failed: both heads are kept, a reader should look."""

    kind: PairWarningKind
    message: str


@dataclass(frozen=True)
class HeadSearch:
    """Both sides searched independently: a fit or the reason, per side, and warnings."""

    fits: dict[Side, HeadFit]
    failures: dict[Side, FemoralHeadNotFoundError]
    warnings: tuple[PairWarning, ...] = ()


@dataclass(frozen=True)
class HipSearch:
    """Per-hip ROIs of a series: an ROI or the reason it failed, per side, and warnings.

    Every side is in exactly one of ``rois`` and ``failures`` (for auto-segmentation;
    an ROI source such as a SEG may simply not cover a side).
    """

    rois: dict[Side, HipROI]
    failures: dict[Side, FemoralHeadNotFoundError] = field(default_factory=dict)
    warnings: tuple[PairWarning, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    fit: HeadFit
    where: str
    radius_ok: bool


def _search_side(
    work: _Work, acc: NDArray[np.float32], peaks: F64, reference: float, side: Side
) -> list[_Candidate]:
    out = []
    for point, support in _candidates(work, acc, peaks, reference, side):
        if support < MIN_SUPPORT:
            break  # candidates come strongest first
        # The sphere fit places the centre (its radial bias is the same in every
        # direction); the median profile at that centre gives the radius.
        rays = _profiles(work, point, side)  # read once for both
        radius, _ = _profile_fit(work, point, side, rays)
        centre, _, n_points = _refine(work, point, radius, side, rays)
        radius, contrast = _profile_fit(work, centre, side)
        where = f"({centre[0]:.0f}, {centre[1]:.0f}, {centre[2]:.0f})"
        fit = HeadFit(side, centre, radius, neck_direction(side), contrast, support, n_points)
        out.append(_Candidate(fit, where, RADIUS_RANGE[0] <= radius <= RADIUS_RANGE[1]))
    return out


def _pick(candidates: list[_Candidate]) -> tuple[HeadFit | None, list[str]]:
    """The head among one side's candidates on its own evidence, or why none is."""
    rejected: list[str] = []
    heads: list[HeadFit] = []
    for c in candidates:
        if c.fit.edge_contrast < MIN_EDGE_CONTRAST:
            rejected.append(f"no cartilage rim at {c.where} (contrast {c.fit.edge_contrast:.2f})")
        elif not c.radius_ok:
            rejected.append(f"radius {c.fit.radius:.1f} mm at {c.where}")
        elif c.fit.surface_points < MIN_SURFACE_POINTS:
            rejected.append(f"no sphere at {c.where} ({c.fit.surface_points} surface points)")
        else:
            heads.append(c.fit)
    best = heads[0] if heads else None
    if best is not None and len(heads) > 1 and best.support < MIN_DOMINANCE * heads[1].support:
        # Concentric shells make a head stand out from anything else round with a
        # rim; two similar candidates mean we cannot tell which is the head.
        rejected.append(
            f"two similar candidates (votes {best.support:.0f} and {heads[1].support:.0f})"
        )
        best = None
    return best, rejected


def _mirrors(fit: HeadFit, other: HeadFit) -> bool:
    """Whether ``fit`` sits where the contralateral head predicts, at its size."""
    if abs(fit.radius - other.radius) > MAX_RADIUS_ASYMMETRY:
        return False
    dx = abs(fit.centre[0] - other.centre[0])
    dy, dz = np.abs(fit.centre[1:] - other.centre[1:])
    return bool(120.0 < dx < 260.0 and dy <= FALLBACK_MAX_OFFSET and dz <= FALLBACK_MAX_OFFSET)


def _tie_break(candidates: list[_Candidate], other: HeadFit) -> HeadFit | None:
    """Of similar rimmed candidates on one side, the one that mirrors the other head.

    Votes tell a head from anything else round only when it dominates; a bowel loop of
    about a head's size above the acetabulum can draw as many and has a rim of its own.
    The contralateral head then says which is the head: only candidates with a rim and a
    plausible radius whose votes are within ``MIN_DOMINANCE`` of the strongest are
    considered (never a weaker one because it fits the prior), and exactly one of them
    must mirror the other head.
    """
    heads = [
        c.fit
        for c in candidates
        if c.fit.edge_contrast >= MIN_EDGE_CONTRAST
        and c.radius_ok
        and c.fit.surface_points >= MIN_SURFACE_POINTS
    ]
    similar = [h for h in heads if MIN_DOMINANCE * h.support >= heads[0].support] if heads else []
    mirrored = [h for h in similar if _mirrors(h, other)]
    if len(similar) < 2 or len(mirrored) != 1:
        return None
    return replace(mirrored[0], evidence=Evidence.CARTILAGE_RIM_CHOSEN_BY_CONTRALATERAL)


def _fallback(candidates: list[_Candidate], other: HeadFit) -> HeadFit | None:
    """A weak-rim head accepted on its sphere fit and the contralateral head.

    An oedematous head with an effusion loses the dark-to-bright rise the rim check
    reads, but its marrow boundary still votes for a sphere and still fits one. Only the
    strongest candidate with a plausible radius is considered (never a weaker one
    chosen because it fits the prior), and it must keep some contrast, many surface
    points, and mirror the other head in position and size.
    """
    plausible = [c for c in candidates if c.radius_ok]
    if not plausible:
        return None
    fit = plausible[0].fit
    if len(plausible) > 1 and fit.support < MIN_DOMINANCE * plausible[1].fit.support:
        return None
    if (
        fit.edge_contrast < MIN_WEAK_CONTRAST
        or fit.surface_points < MIN_FALLBACK_POINTS
        or not _mirrors(fit, other)
    ):
        return None
    return replace(fit, evidence=Evidence.SPHERE_FIT_WITH_CONTRALATERAL)


def find_femoral_heads(image: sitk.Image) -> HeadSearch:
    """Find each femoral head of a coronal T2-FS image on its own.

    Parameters
    ----------
    image
        The series image (any spacing and orientation; LPS geometry).

    Returns
    -------
    HeadSearch
        Per side a :class:`HeadFit` or the :class:`FemoralHeadNotFoundError` saying why
        none was found; left/right disagreements as warnings.

    Raises
    ------
    FemoralHeadNotFoundError
        Only when the image itself cannot be searched (empty).
    """
    work = _working_copy(image)
    acc = _hough(work)
    reference = _reference(acc)
    peaks = _peaks(acc, reference)
    sides: tuple[Side, Side] = (Side.LEFT, Side.RIGHT)
    candidates = {side: _search_side(work, acc, peaks, reference, side) for side in sides}
    picked = {side: _pick(candidates[side]) for side in sides}
    fits: dict[Side, HeadFit] = {}
    failures: dict[Side, FemoralHeadNotFoundError] = {}
    for side in sides:
        best, rejected = picked[side]
        other = picked[Side.RIGHT if side is Side.LEFT else Side.LEFT][0]
        if best is None and other is not None:
            best = _tie_break(candidates[side], other) or _fallback(candidates[side], other)
        if best is not None:
            fits[side] = best
            continue
        name = side.word
        why = "; ".join(rejected) if rejected else "no sphere-like structure"
        failures[side] = FemoralHeadNotFoundError(
            f"no {name} femoral head {LATERAL_RANGE[0]:.0f}-{LATERAL_RANGE[1]:.0f} mm "
            f"{name} of the midline: {why}"
        )
    warnings: tuple[PairWarning, ...] = ()
    if len(fits) == 2:
        warnings = _compare_pair(fits[Side.LEFT], fits[Side.RIGHT])
    return HeadSearch(fits, failures, warnings)


def _compare_pair(left: HeadFit, right: HeadFit) -> tuple[PairWarning, ...]:
    out = []
    if abs(left.radius - right.radius) > MAX_RADIUS_ASYMMETRY:
        out.append(
            PairWarning(
                PairWarningKind.RADIUS_ASYMMETRY,
                f"femoral heads of {left.radius:.1f} (left) and {right.radius:.1f} (right) mm "
                "radius are more unequal than a healthy pair",
            )
        )
    dx = left.centre[0] - right.centre[0]
    dy, dz = np.abs(left.centre[1:] - right.centre[1:])
    if not 120.0 < dx < 260.0 or dy > 35.0 or dz > 35.0:
        out.append(
            PairWarning(
                PairWarningKind.PLACEMENT,
                f"the two femoral heads are not placed like a pair (left-right {dx:.0f} mm, "
                f"antero-posterior {dy:.0f} mm, cranio-caudal {dz:.0f} mm apart)",
            )
        )
    return tuple(out)


def head_mask(
    fit: HeadFit, reference: sitk.Image, slice_thickness: float | None = None
) -> sitk.Image:
    """The head of ``fit`` as a uint8 mask on the grid of ``reference``.

    The head is the sphere cut by the head-neck junction plane (where a neck of
    ``NECK_RADIUS_RATIO`` times the head radius meets the sphere). When
    ``slice_thickness`` is given, each voxel is sampled through that thickness and counts
    as inside when at least half of it is (what a reader outlining thick slices does).
    """
    size = np.array(reference.GetSize())
    spacing = np.array(reference.GetSpacing(), dtype=np.float64)
    direction = np.array(reference.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.array(reference.GetOrigin(), dtype=np.float64)
    # Only the bounding box of the sphere needs evaluating.
    inv = np.linalg.inv(direction * spacing)
    corners = fit.centre + fit.radius * np.array(
        [[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]
    )
    idx = (corners - origin) @ inv.T
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int) - 1, 0, size - 1)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 2, 0, size)
    mask = np.zeros(size[::-1], dtype=np.uint8)
    if np.any(hi <= lo):
        out = sitk.GetImageFromArray(mask)
        out.CopyInformation(reference)
        return out
    i = np.arange(lo[0], hi[0], dtype=np.float64)
    j = np.arange(lo[1], hi[1], dtype=np.float64)
    thickness = slice_thickness if slice_thickness is not None else 0.0
    n_sub = max(1, int(np.ceil(thickness / 0.5))) if thickness > 0 else 1
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * thickness / spacing[2]
    plane = fit.radius * np.sqrt(1.0 - NECK_RADIUS_RATIO**2)
    frac = np.zeros((hi[2] - lo[2], len(j), len(i)), dtype=np.float32)
    for off in offsets:
        k = np.arange(lo[2], hi[2], dtype=np.float64) + off
        grid = np.stack(np.meshgrid(k, j, i, indexing="ij")[::-1], axis=-1)  # (k, j, i, [i j k])
        pts = origin + (grid * spacing) @ direction.T
        d = pts - fit.centre
        inside = (np.einsum("...c,...c->...", d, d) <= fit.radius**2) & (
            d @ fit.neck_direction <= plane
        )
        frac += inside.astype(np.float32) / n_sub
    mask[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = frac >= 0.5
    out = sitk.GetImageFromArray(mask)
    out.CopyInformation(reference)
    return out


def find_hips(series: LoadedSeries) -> HipSearch:
    """Auto-segment each femoral head of a loaded series on its own.

    One head's failure is that hip's reason in :attr:`HipSearch.failures`; the other
    hip keeps its ROI. Left/right disagreements are :attr:`HipSearch.warnings`.

    Raises
    ------
    FemoralHeadNotFoundError
        Only when the image cannot be searched at all (empty).
    """
    search = find_femoral_heads(series.image)
    thickness = _slice_thickness(series)
    rois: dict[Side, HipROI] = {}
    for side, fit in search.fits.items():
        x, y, z = fit.centre
        desc = (
            f"auto: sphere fit, centre ({x:.1f}, {y:.1f}, {z:.1f}) mm, radius {fit.radius:.1f} mm"
        )
        if fit.evidence is not Evidence.CARTILAGE_RIM:
            desc += f" ({fit.evidence.value})"
        rois[side] = HipROI(side, head_mask(fit, series.image, thickness), "auto", desc)
    return HipSearch(rois, dict(search.failures), search.warnings)


def auto_rois(series: LoadedSeries) -> dict[Side, HipROI]:
    """Both hips' ROIs or nothing: :func:`find_hips` for callers that need a pair.

    Kept for ``bench/phantom_speed.py``, which counts studies with both heads; the
    service's callers use :func:`find_hips`.

    Raises
    ------
    FemoralHeadNotFoundError
        When either head cannot be found with confidence (the first side's reason).
    """
    search = find_hips(series)
    for failure in search.failures.values():
        raise failure
    return search.rois


def _slice_thickness(series: LoadedSeries) -> float | None:
    header = series.datasets[0] if series.datasets else None
    value = getattr(header, "SliceThickness", None) if header is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


__all__ = [
    "Evidence",
    "HeadFit",
    "HeadSearch",
    "HipSearch",
    "PairWarning",
    "PairWarningKind",
    "auto_rois",
    "find_femoral_heads",
    "find_hips",
    "head_mask",
    "neck_direction",
]
