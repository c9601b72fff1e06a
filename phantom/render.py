"""Render an :class:`~phantom.anatomy.Anatomy` into a coronal T2-FS slice stack.

Tissues are painted back to front onto a sample grid in patient coordinates; every
surface is a signed distance function, so each sample gets the partial-volume fraction
of its voxel (``occupancy``). Each thick slice is sampled by several thin sub-planes
that are averaged with a slice profile (through-plane partial volume). Soft tissue,
which changes slowly from slice to slice, is rendered once per slice; bone and joint,
where through-plane partial volume matters, on every sub-plane.

Pure computation: arrays in, arrays out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from numpy.typing import NDArray

from phantom.anatomy import Anatomy, Hip, Lesion, MarrowVariation, Waves
from phantom.sdf import capsule, ellipsoid, occupancy, smooth_union, sphere, tapered_capsule, waves

F32 = NDArray[np.float32]
Vec = NDArray[np.float64]
Block = tuple[tuple[slice, slice, slice], F32, F32, F32]


@dataclass(frozen=True)
class SampleGrid:
    """Sample points: planes x rows x columns, with a map to the pelvis frame.

    Plane ``i`` lies ``plane_offsets[i]`` mm along the slice normal from ``origin``;
    row ``r`` and column ``c`` at ``r * spacing`` and ``c * spacing`` along the column
    and row directions. ``pelvis_rotation`` (columns = pelvis axes in patient
    coordinates) and ``pelvis_origin`` place the anatomy.
    """

    origin: Vec
    row_direction: Vec
    column_direction: Vec
    normal: Vec
    plane_offsets: Vec
    rows: int
    columns: int
    spacing: float
    pelvis_rotation: Vec
    pelvis_origin: Vec

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.plane_offsets), self.rows, self.columns)

    def _local_axes(self) -> tuple[Vec, Vec, Vec, Vec]:
        rt = self.pelvis_rotation.T
        a = rt @ (self.origin - self.pelvis_origin)
        return a, rt @ self.normal, rt @ self.column_direction, rt @ self.row_direction

    def index_range(
        self, lo: Vec, hi: Vec, plane_multiple: int = 1
    ) -> tuple[slice, slice, slice] | None:
        """Index slices of the grid points that may fall in the pelvis-frame box [lo, hi]."""
        corners = np.array(
            [
                [(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]]
                for i in (0, 1)
                for j in (0, 1)
                for k in (0, 1)
            ]
        )
        patient = corners @ self.pelvis_rotation.T + self.pelvis_origin
        d = patient - self.origin
        t = d @ self.normal
        r = d @ self.column_direction / self.spacing
        c = d @ self.row_direction / self.spacing
        p0 = int(np.searchsorted(self.plane_offsets, t.min(), side="left"))
        p1 = int(np.searchsorted(self.plane_offsets, t.max(), side="right"))
        p0 = (p0 // plane_multiple) * plane_multiple
        p1 = min(-(-p1 // plane_multiple) * plane_multiple, len(self.plane_offsets))
        r0, r1 = max(int(np.floor(r.min())), 0), min(int(np.ceil(r.max())) + 1, self.rows)
        c0, c1 = max(int(np.floor(c.min())), 0), min(int(np.ceil(c.max())) + 1, self.columns)
        if p1 <= p0 or r1 <= r0 or c1 <= c0:
            return None
        return slice(p0, p1), slice(r0, r1), slice(c0, c1)

    def block(self, lo: Vec, hi: Vec, plane_multiple: int = 1) -> Block | None:
        """The grid points whose pelvis-frame coordinates may fall in the box [lo, hi].

        Returns the index slices and the pelvis-frame ``x, y, z`` of those points, or
        ``None`` when the box misses the grid. ``plane_multiple`` widens the plane range
        to whole groups of that many planes (the sub-planes of one slice).
        """
        where = self.index_range(lo, hi, plane_multiple)
        if where is None:
            return None
        (p0, p1), (r0, r1), (c0, c1) = ((w.start, w.stop) for w in where)
        a, n, cd, rd = self._local_axes()
        t_ax = self.plane_offsets[p0:p1].astype(np.float32)[:, None, None]
        r_ax = (np.arange(r0, r1, dtype=np.float32) * np.float32(self.spacing))[None, :, None]
        c_ax = (np.arange(c0, c1, dtype=np.float32) * np.float32(self.spacing))[None, None, :]
        x, y, z = (
            (
                np.float32(a[i])
                + t_ax * np.float32(n[i])
                + r_ax * np.float32(cd[i])
                + c_ax * np.float32(rd[i])
            )
            for i in range(3)
        )
        return where, x, y, z

    def full(self) -> Block:
        """All grid points."""
        big = np.full(3, 1e5)
        block = self.block(-big, big)
        assert block is not None
        return block


def paint(canvas: F32, where: tuple[slice, slice, slice], amount: F32, value: float | F32) -> None:
    """Composite ``value`` over ``canvas[where]`` with per-sample opacity ``amount``."""
    view = canvas[where]
    view += amount * (value - view)


def _field(x: F32, y: F32, z: F32, w: Waves) -> F32:
    return waves(x, y, z, w.vectors, w.phases, w.amplitudes)


def _sl(hip: Hip, x: F32) -> F32:
    """Pelvis-frame x to side-local x (lateral positive)."""
    return x if hip.side == "L" else -x


def _box(hip: Hip, lo: list[float], hi: list[float]) -> tuple[Vec, Vec]:
    """A side-local box to a pelvis-frame box."""
    a, b = (
        hip.to_local(np.asarray(lo, dtype=np.float64)),
        hip.to_local(np.asarray(hi, dtype=np.float64)),
    )
    return np.minimum(a, b), np.maximum(a, b)


# ----------------------------------------------------------------------------- soft tissue


def _muscles(anat: Anatomy, hip: Hip) -> list[tuple[str, Vec, Vec, float, float]]:
    """Side-local capsules (a, b, radius_a, radius_b) of the muscles around one hip."""
    c, R, J = hip.head_centre, hip.head_radius, hip.junction
    lt = hip.lesser_trochanter[0]
    s = hip.shaft_axis
    v = np.array
    return [
        ("gluteus medius", c + v([30, 10, R + 30]), c + v([22, 18, R + 110]), 30.0, 34.0),
        ("gluteus maximus", c + v([25, 70, 40]), c + v([-10, 80, -120]), 30.0, 26.0),
        ("iliopsoas", v([c[0] - 55, 5, 150.0]), c + v([-22, -(R + 12), 5]), 24.0, 17.0),
        ("iliopsoas tendon", c + v([-22, -(R + 12), 5]), lt + v([-2, -4, 0]), 17.0, 8.0),
        (
            "obturator internus",
            c + v([-(R + 22), -10, 20]),
            c + v([-(R + 22), 25, -25]),
            11.0,
            11.0,
        ),
        ("obturator externus", c + v([-(R + 12), 5, -(R + 12)]), J + v([-4, 12, -2]), 9.0, 7.0),
        ("adductors", c + v([-40, 0, -45]), c + v([-30, 5, -260]), 30.0, 40.0),
        ("quadriceps", J + s * 30 + v([6, -14, 0]), J + s * 320 + v([10, -10, 0]), 40.0, 50.0),
        ("hamstrings", c + v([-15, 50, -70]), c + v([-5, 45, -260]), 22.0, 32.0),
        ("tensor fasciae latae", c + v([48, -30, 25]), c + v([55, -25, -80]), 11.0, 9.0),
        ("quadratus femoris", c + v([-25, 30, -30]), J + v([0, 22, -10]), 9.0, 9.0),
        ("gluteus minimus", c + v([18, 5, R + 12]), c + v([10, 12, R + 60]), 14.0, 18.0),
    ]


def paint_soft_tissue(grid: SampleGrid, canvas: F32, anat: Anatomy, fs_field: F32) -> F32:
    """Body outline, fat, skin, muscles, viscera and vessels. Returns the body SDF."""
    sig = anat.signals
    where, x, y, z = grid.full()
    ell = np.sqrt(
        (x / anat.body_half_width) ** 2 + ((y - anat.body_centre_y) / anat.body_half_depth) ** 2
    )
    d_pelvis = np.maximum((ell - 1.0) * anat.body_half_depth, anat.crotch_z - z)
    yt = y - 0.5 * anat.body_centre_y
    r_thigh = anat.thigh_radius + 0.08 * np.minimum(z - anat.crotch_z, 0.0)
    d_thighs = np.minimum(
        np.sqrt((x - anat.thigh_offset) ** 2 + yt**2), np.sqrt((x + anat.thigh_offset) ** 2 + yt**2)
    ) - np.maximum(r_thigh, 40.0)
    d_body = smooth_union(d_pelvis, d_thighs, 30.0)
    w = grid.spacing
    fat = sig.fat + (sig.fat_unsuppressed - sig.fat) * fs_field
    paint(canvas, where, occupancy(d_body, w), fat)
    paint(canvas, where, occupancy(np.abs(d_body + 0.8) - 0.8, w), sig.skin)
    texture = 1.0 + _field(x, y, z, anat.muscle_texture)
    inner_limit = d_body + anat.subcutaneous_fat  # muscles stay under the subcutaneous fat

    # Pelvic floor across the midline, then the muscles of each side.
    muscles: list[tuple[Vec, Vec, float, float]] = [
        (np.array([-50.0, 15, -45]), np.array([50.0, 15, -45]), 8.0, 8.0),
    ]
    for hip in anat.hips:
        for _name, a, b, ra, rb in _muscles(anat, hip):
            muscles.append((hip.to_local(a), hip.to_local(b), ra, rb))
    for a, b, ra, rb in muscles:
        r = max(ra, rb) + 3
        blk = grid.block(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if blk is None:
            continue
        bw, bx, by, bz = blk
        # Full-grid arrays (which start at index 0) are indexed with the block's slices.
        d = np.maximum(tapered_capsule(bx, by, bz, a, b, ra, rb), inner_limit[bw])
        # A thin fat plane around each muscle keeps neighbours apart, as fascia does.
        paint(canvas, bw, occupancy(np.abs(d - 0.6) - 0.6, w), fat[bw])
        paint(canvas, bw, occupancy(d, w), sig.muscle * texture[bw])

    # Viscera in the midline.
    sex_organ = (
        (np.array([0.0, 12, 62]), np.array([28.0, 22, 40]), 0.45)
        if anat.sex == "F"
        else (np.array([0.0, -12, -38]), np.array([18.0, 14, 16]), 0.4)
    )
    organs = [
        (np.array([0.0, 48, -5]), np.array([16.0, 14, 35]), 0.35),  # rectum
        sex_organ,
        *anat.bowel,
        (anat.bladder_centre, anat.bladder_radii + 2.5, sig.muscle),  # bladder wall
        (anat.bladder_centre, anat.bladder_radii, sig.bladder),
    ]
    for centre, radii, value in organs:
        blk = grid.block(centre - radii - 3, centre + radii + 3)
        if blk is None:
            continue
        bw, bx, by, bz = blk
        d = np.maximum(ellipsoid(bx, by, bz, centre, radii), inner_limit[bw])
        paint(canvas, bw, occupancy(d, w), value * texture[bw])

    # Femoral vessels (artery: flow void; vein: slow flow, bright), then pelvic bones.
    for hip in anat.hips:
        c, R = hip.head_centre, hip.head_radius
        path = [
            np.array([c[0] - 50, 0.0, 150]),
            c + np.array([-30, -(R + 14), 10]),
            c + np.array([-25, -(R + 8), -260]),
        ]
        for offset, radius, value in (
            (np.zeros(3), 3.5, sig.vessel_artery),
            (np.array([-9.0, 2, 0]), 5.0, sig.vessel_vein),
        ):
            for a, b in itertools.pairwise(path):
                al, bl = hip.to_local(a + offset), hip.to_local(b + offset)
                blk = grid.block(np.minimum(al, bl) - radius - 2, np.maximum(al, bl) + radius + 2)
                if blk is None:
                    continue
                bw, bx, by, bz = blk
                paint(canvas, bw, occupancy(capsule(bx, by, bz, al, bl, radius), w), value)
    for hip in anat.hips:
        _paint_pelvic_bone(grid, canvas, anat, hip)
        _paint_femur(grid, canvas, anat, hip, z_max=hip.head_centre[2] - 90.0, fs=fs_field)
    return d_body


Part = tuple[Vec, Vec, Callable[[F32, F32, F32], F32]]


def union_field(
    grid: SampleGrid,
    where: tuple[slice, slice, slice],
    coords: tuple[F32, F32, F32],
    parts: list[Part],
    k: float,
) -> F32:
    """Smooth union of SDF parts, each evaluated only on its own box within the block.

    Each part is ``(lo, hi, sdf)`` with a pelvis-frame box that must hold the part plus
    ``k``; outside it the part cannot lower the union near any surface.
    """
    x, y, z = coords
    out = np.full(x.shape, 1e3, dtype=np.float32)
    for lo, hi, fn in parts:
        sub = grid.index_range(lo, hi)
        if sub is None:
            continue
        rel = _within(where, sub)
        if any(r.stop <= r.start for r in rel):
            continue
        out[rel] = smooth_union(out[rel], fn(x[rel], y[rel], z[rel]), k)
    return out


def _paint_pelvic_bone(grid: SampleGrid, canvas: F32, anat: Anatomy, hip: Hip) -> None:
    sig = anat.signals
    c, R = hip.head_centre, hip.head_radius
    v = np.array
    symphysis_top = v([5.0, c[1] - 48, c[2] - 22])
    tuberosity = c + v([-32, 28, -62])
    caps = [
        (c + v([-2, 8, R + 4]), c + v([-32, 16, R + 80]), 21.0),  # supra-acetabular ilium
        (c + v([6, 18, R + 55]), c + v([28, 22, R + 150]), 10.0),  # iliac wing
        (c + v([-(R + 9), 4, 14]), c + v([-(R + 11), 10, -16]), 5.0),  # quadrilateral plate
        (c + v([-R * 0.5, -R * 0.6, -R * 0.35]), symphysis_top, 9.5),  # superior pubic ramus
        (c + v([-6, R * 0.55, -R * 0.5]), tuberosity, 14.0),  # ischium
        (tuberosity, v([6.0, c[1] - 40, c[2] - 45]), 7.0),  # inferior ramus
    ]
    caps_local = [(hip.to_local(a), hip.to_local(b), r) for a, b, r in caps]
    lo = np.min([np.minimum(a, b) - r for a, b, r in caps_local], axis=0) - 2
    hi = np.max([np.maximum(a, b) + r for a, b, r in caps_local], axis=0) + 2
    blk = grid.block(lo, hi)
    if blk is None:
        return
    bw, x, y, z = blk
    parts: list[Part] = [
        (np.minimum(a, b) - r - 10, np.maximum(a, b) + r + 10, partial(capsule, a=a, b=b, radius=r))
        for a, b, r in caps_local
    ]
    outer = union_field(grid, bw, (x, y, z), parts, 8.0)
    paint(canvas, bw, occupancy(outer, grid.spacing), sig.cortex)
    paint(canvas, bw, occupancy(outer + 1.6, grid.spacing), sig.pelvic_marrow)


# ----------------------------------------------------------------------------- hip joint


def _along(x: F32, y: F32, z: F32, origin: Vec, direction: Vec) -> F32:
    """Signed distance along ``direction`` from ``origin`` (float32 stays float32)."""
    ox, oy, oz = (float(v) for v in origin)
    ux, uy, uz = (float(v) for v in direction)
    return (x - ox) * ux + (y - oy) * uy + (z - oz) * uz


def _lesion_g(lesion: Lesion, hip: Hip, xs: F32, y: F32, z: F32) -> F32:
    """Signed depth into the lesion (> 0 inside), across a serpiginous boundary."""
    centre = hip.head_centre + lesion.dome_distance * lesion.axis
    return lesion.radius - sphere(xs, y, z, centre, 0.0) + _field(xs, y, z, lesion.boundary)


@dataclass(frozen=True)
class FemurSDF:
    """Signed distances of the proximal femur on one block."""

    femur: F32
    marrow: F32
    head_neck_marrow: F32


def femur_sdfs(
    grid: SampleGrid, where: tuple[slice, slice, slice], hip: Hip, xs: F32, y: F32, z: F32
) -> FemurSDF:
    """Bone surface and marrow of the proximal femur on one block (side-local ``xs``)."""
    c, J, R = hip.head_centre, hip.junction, hip.head_radius
    s = hip.shaft_axis
    it_radii = np.array([19.0, 16.0, 24.0])
    gt, gt_radii = hip.greater_trochanter
    lt, lt_radii = hip.lesser_trochanter
    shaft_a, shaft_b = J - 10 * s, J + 400 * s
    m = 8.0  # box margin: the blend width plus a little
    boxes = [
        _box(hip, list(c - R - m), list(c + R + m)),
        _box(
            hip,
            list(np.minimum(c, J) - hip.neck_radius - m),
            list(np.maximum(c, J) + hip.neck_radius + m),
        ),
        _box(hip, list(J - it_radii - m), list(J + it_radii + m)),
        _box(hip, list(gt - gt_radii - m), list(gt + gt_radii + m)),
        _box(hip, list(lt - lt_radii - m), list(lt + lt_radii + m)),
        _box(
            hip,
            list(np.minimum(shaft_a, shaft_b) - hip.shaft_radius - m),
            list(np.maximum(shaft_a, shaft_b) + hip.shaft_radius + m),
        ),
    ]

    def part_sdfs(offsets: list[float]) -> list[Callable[[F32, F32, F32], F32]]:
        o_head, o_neck, o_it, o_gt, o_lt, o_shaft = offsets
        return [
            lambda x_, y_, z_: sphere(x_, y_, z_, c, R - o_head),
            lambda x_, y_, z_: capsule(x_, y_, z_, c, J, hip.neck_radius - o_neck),
            lambda x_, y_, z_: ellipsoid(x_, y_, z_, J, it_radii) + o_it,
            lambda x_, y_, z_: ellipsoid(x_, y_, z_, gt, gt_radii) + o_gt,
            lambda x_, y_, z_: ellipsoid(x_, y_, z_, lt, lt_radii) + o_lt,
            lambda x_, y_, z_: capsule(x_, y_, z_, shaft_a, shaft_b, hip.shaft_radius - o_shaft),
        ]

    coords = (xs, y, z)
    # Side-local boxes were mapped to pelvis-frame ones; the SDFs take side-local xs.
    outer_parts = part_sdfs([0.0] * 6)
    marrow_parts = part_sdfs([hip.head_cortex, hip.neck_cortex, 1.5, 1.5, 1.5, hip.shaft_cortex])

    def parts(fns: list[Callable[[F32, F32, F32], F32]]) -> list[Part]:
        return [(lo, hi, fn) for (lo, hi), fn in zip(boxes, fns, strict=False)]

    femur = union_field(grid, where, coords, parts(outer_parts), 6.0)
    marrow = union_field(grid, where, coords, parts(marrow_parts), 6.0)
    head_neck = union_field(grid, where, coords, parts(marrow_parts[:2]), 4.0)
    return FemurSDF(femur, marrow, head_neck)


def head_sdfs(hip: Hip, xs: F32, y: F32, z: F32) -> tuple[F32, F32 | None, F32 | None]:
    """Truth SDFs of the femoral head and its lesion, and the lesion depth ``g``.

    The head ends at the head-neck junction plane and excludes the fovea notch; the
    lesion is the part of the head's marrow beyond the outer (dark) line of its band.
    """
    c, R = hip.head_centre, hip.head_radius
    d_head = sphere(xs, y, z, c, R)
    along = _along(xs, y, z, c, hip.neck_axis)
    d_fovea = sphere(xs, y, z, c + hip.fovea_direction * R, hip.fovea_radius)
    head = np.maximum(np.maximum(d_head, along - hip.head_neck_plane), -d_fovea)
    if hip.lesion is None:
        return head, None, None
    g = _lesion_g(hip.lesion, hip, xs, y, z)
    inside_head = np.maximum(d_head + hip.head_cortex, along - hip.head_neck_plane)
    return head, np.maximum(-g - hip.lesion.sclerosis_width, inside_head), g


def hip_block_box(hip: Hip) -> tuple[Vec, Vec]:
    """Pelvis-frame box holding the head, acetabulum, neck and trochanters."""
    c, R = hip.head_centre, hip.head_radius
    J = hip.junction
    top = c[2] + R + hip.acetabular_thickness + 8
    bottom = c[2] - 95  # below: the shaft, painted with the soft tissue
    return _box(hip, [c[0] - R - 22, c[1] - R - 26, bottom], [J[0] + 45, c[1] + R + 30, top])


def _paint_femur(
    grid: SampleGrid,
    canvas: F32,
    anat: Anatomy,
    hip: Hip,
    z_max: float,
    fs: F32,
) -> None:
    """The femoral shaft below ``z_max`` (soft-tissue pass; the hip pass does the rest)."""
    sig = anat.signals
    J, s = hip.junction, hip.shaft_axis
    r = hip.shaft_radius + 2
    lo, hi = _box(hip, [J[0] - 60, J[1] - r, -1e4], [J[0] + 60, J[1] + r, z_max])
    blk = grid.block(lo, hi)
    if blk is None:
        return
    bw, x, y, z = blk
    xs = _sl(hip, x)
    d = capsule(xs, y, z, J - 10 * s, J + 400 * s, hip.shaft_radius)
    marrow = sig.marrow + (sig.fat_unsuppressed - sig.marrow) * fs[bw]
    paint(canvas, bw, occupancy(d, grid.spacing), sig.cortex)
    paint(canvas, bw, occupancy(d + hip.shaft_cortex, grid.spacing), marrow)


def _head_box(hip: Hip, margin: float) -> tuple[Vec, Vec]:
    c = hip.head_centre
    r = hip.head_radius + margin
    return _box(hip, [c[0] - r, c[1] - r, c[2] - r], [c[0] + r, c[1] + r, c[2] + r])


def _within(
    outer: tuple[slice, slice, slice], inner: tuple[slice, slice, slice]
) -> tuple[slice, slice, slice]:
    """``inner`` (absolute, clipped to ``outer``) relative to the start of ``outer``."""
    return tuple(
        slice(max(i.start, o.start) - o.start, min(i.stop, o.stop) - o.start)
        for i, o in zip(inner, outer, strict=True)
    )  # type: ignore[return-value]


def _shift(
    rel: tuple[slice, slice, slice], outer: tuple[slice, slice, slice]
) -> tuple[slice, slice, slice]:
    """Relative slices ``rel`` inside ``outer`` back to absolute ones."""
    a, b, c = (slice(o.start + r.start, o.start + r.stop) for r, o in zip(rel, outer, strict=True))
    return a, b, c


def _varied_marrow(
    mv: MarrowVariation,
    marrow: F32,
    inside: NDArray[np.bool_],
    xs: F32,
    y: F32,
    z: F32,
) -> F32:
    """Marrow signal with physiological variation: scale, red-marrow patches, texture."""
    px, py, pz = xs[inside], y[inside], z[inside]
    patch = np.clip(0.5 + (_field(px, py, pz, mv.patches) - mv.patch_threshold) / 0.08, 0, 1)
    fine = _field(px, py, pz, mv.texture)
    varied = marrow * np.float32(mv.signal_scale) * (1.0 + fine)
    return np.asarray(varied + np.float32(mv.patch_signal) * patch, dtype=np.float32)


def paint_hip(grid: SampleGrid, canvas: F32, anat: Anatomy, hip: Hip) -> None:
    """Joint, acetabulum, femur and pathology of one hip, on the fine grid."""
    sig = anat.signals
    blk = grid.block(*hip_block_box(hip))
    if blk is None:
        return
    bw, x, y, z = blk
    w = grid.spacing
    xs = _sl(hip, x)
    c, R = hip.head_centre, hip.head_radius
    n = hip.neck_axis

    # Joint capsule and fluid: a trace along the neck in every hip, distended by an effusion.
    e = hip.effusion_thickness
    env = capsule(xs, y, z, c, c + 0.8 * hip.neck_length * n, hip.neck_radius + e)
    if hip.effusion:
        env = smooth_union(
            env, sphere(xs, y, z, c, R + hip.head_cartilage + hip.joint_space + 0.5 * e), 4.0
        )
    paint(canvas, bw, occupancy(np.abs(env - 0.9) - 0.9, w), sig.ligament)
    paint(canvas, bw, occupancy(env, w), sig.fluid)

    # Acetabulum (bony socket, fossa with fat, horseshoe of cartilage), joint space and
    # head cartilage: all within the head's neighbourhood.
    hb = grid.block(*_head_box(hip, hip.acetabular_cartilage + hip.acetabular_thickness + 6))
    assert hb is not None  # inside the hip block by construction
    h = _within(bw, hb[0])
    hw = _shift(h, bw)
    hxs, hy, hz = xs[h], y[h], z[h]
    r = sphere(hxs, hy, hz, c, 0.0)
    cos_t = np.clip(_along(hxs, hy, hz, c, hip.acetabular_axis) / np.maximum(r, 1e-3), -1.0, 1.0)
    angle = np.degrees(np.arccos(cos_t))
    arc = r * np.float32(np.pi / 180)
    cone = (angle - hip.acetabular_coverage) * arc
    r_in = R + hip.head_cartilage + hip.joint_space + hip.acetabular_cartilage
    r_out = r_in + hip.acetabular_thickness
    paint(canvas, hw, occupancy(np.maximum(np.maximum(r - r_out, r_in - r), cone), w), sig.cortex)
    paint(
        canvas,
        hw,
        occupancy(np.maximum(np.maximum(r - r_out + 1.0, r_in + 1.8 - r), cone + 1.5), w),
        sig.pelvic_marrow,
    )
    fossa = (angle - hip.fossa_angle) * arc
    paint(canvas, hw, occupancy(np.maximum(r - r_in - 2.5, fossa), w), sig.fat)
    paint(canvas, hw, occupancy(np.maximum(np.maximum(r - r_in, cone), -fossa), w), sig.cartilage)
    joint = r - (R + hip.head_cartilage + hip.joint_space)
    paint(canvas, hw, occupancy(joint, w), sig.cartilage + 0.25 * (sig.fluid - sig.cartilage))
    paint(canvas, hw, occupancy(r - (R + hip.head_cartilage), w), sig.cartilage)

    # Proximal femur: cortex, then marrow (fatty head, redder neck and trochanters).
    sdf = femur_sdfs(grid, bw, hip, xs, y, z)
    paint(canvas, bw, occupancy(sdf.femur, w), sig.cortex)
    m_all = occupancy(sdf.marrow, w)
    inside = m_all > 0
    t = np.clip(_along(xs[inside], y[inside], z[inside], c, n) / hip.neck_length, 0.0, 1.6)
    texture = _field(xs[inside], y[inside], z[inside], hip.marrow_texture)
    marrow = sig.marrow * (1.0 + 4.0 * texture) + sig.red_marrow_boost * np.exp(
        -(((t - 1.0) / 0.45) ** 2)
    )
    if hip.marrow_variation is not None:
        marrow = _varied_marrow(hip.marrow_variation, marrow, inside, xs, y, z)
    view = canvas[bw]
    view[inside] += m_all[inside] * (marrow - view[inside])

    # Head: fovea, oedema, benign findings, the lesion.
    g = _lesion_g(hip.lesion, hip, hxs, hy, hz) if hip.lesion is not None else None
    fovea = np.maximum(
        sphere(hxs, hy, hz, c + hip.fovea_direction * R, hip.fovea_radius),
        r - (R + hip.head_cartilage),
    )
    paint(canvas, hw, occupancy(fovea, w), sig.ligament)
    m_head = occupancy(sdf.head_neck_marrow[h], w) * m_all[h]
    along = _along(hxs, hy, hz, c, n)
    if hip.oedema:
        reach = np.exp(-np.maximum(along + 0.3 * R, 0.0) / hip.oedema_decay)
        patchy = 0.8 + 0.2 * np.sin(hxs * 0.21 + hy * 0.17 - hz * 0.13)
        paint(canvas, hw, m_head * reach * patchy, hip.oedema_signal)
    for f in hip.findings:
        d_f = sphere(hxs, hy, hz, f.centre, f.radius)
        if f.kind == "red marrow island":
            paint(canvas, hw, occupancy(d_f, 4.0) * m_all[h], f.signal)
            continue
        if f.rim_signal is not None:
            paint(canvas, hw, occupancy(d_f - 0.8, w), f.rim_signal)
        paint(canvas, hw, occupancy(d_f, w), f.signal)
    lesion = hip.lesion
    if lesion is not None and g is not None:
        in_head = occupancy(np.maximum(sdf.head_neck_marrow[h], along - hip.head_neck_plane), w)
        gw, sw = lesion.granulation_width, lesion.sclerosis_width
        paint(canvas, hw, occupancy(gw - g, w) * in_head, lesion.centre_signal)
        if lesion.band_gaps is not None:
            # A partly missing band: drawn only where the gap field clears the threshold.
            gaps = _field(hxs, hy, hz, lesion.band_gaps) - np.float32(lesion.gap_threshold)
            in_head = in_head * np.clip(0.5 + gaps / np.float32(0.1), 0.0, 1.0)
        if "bright" in lesion.lines:
            paint(
                canvas,
                hw,
                occupancy(np.abs(g - gw / 2) - gw / 2, w) * in_head,
                lesion.granulation_signal,
            )
        if "dark" in lesion.lines:
            paint(
                canvas,
                hw,
                occupancy(np.abs(g + sw / 2) - sw / 2, w) * in_head,
                lesion.sclerosis_signal,
            )


def hip_truth(
    grid: SampleGrid, hip: Hip, plane_multiple: int
) -> tuple[tuple[slice, slice, slice], F32, F32 | None] | None:
    """Head and lesion occupancy of one hip on the block of ``grid`` around its head."""
    c, R = hip.head_centre, hip.head_radius
    box = _box(
        hip, [c[0] - R - 3, c[1] - R - 3, c[2] - R - 3], [c[0] + R + 3, c[1] + R + 3, c[2] + R + 3]
    )
    blk = grid.block(*box, plane_multiple=plane_multiple)
    if blk is None:
        return None
    bw, x, y, z = blk
    head, lesion, _ = head_sdfs(hip, _sl(hip, x), y, z)
    occ_lesion = None if lesion is None else occupancy(lesion, grid.spacing)
    return bw, occupancy(head, grid.spacing), occ_lesion


__all__ = [
    "FemurSDF",
    "SampleGrid",
    "femur_sdfs",
    "head_sdfs",
    "hip_truth",
    "paint",
    "paint_hip",
    "paint_soft_tissue",
]
