"""Random anatomy and pathology of one synthetic patient, as plain numbers.

Coordinates are in a *pelvis frame* in mm: x to the patient's left, y posterior, z
superior (the LPS axes of a perfectly aligned patient), origin midway between the two
femoral head centres. Per-hip numbers are given in *side-local* form, where x points
laterally (the left hip keeps x, the right hip mirrors it), so one description serves
both sides. The renderer places the pelvis frame in patient coordinates.

Numbers follow ``shared/ONFH_MRI.md``; each is drawn from a range, never fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Vec = NDArray[np.float64]
FindingKind = Literal["subchondral cyst", "herniation pit", "red marrow island", "bone island"]


def _unit(v: Vec | list[float]) -> Vec:
    a = np.asarray(v, dtype=np.float64)
    return np.asarray(a / np.linalg.norm(a), dtype=np.float64)


def rotation(rx: float, ry: float, rz: float) -> Vec:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    ax, ay, az = np.radians([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return np.asarray(mz @ my @ mx, dtype=np.float64)


@dataclass(frozen=True)
class Signals:
    """T2-FS signal of each tissue for this case (fluid ~ 1)."""

    fluid: float
    bladder: float
    cartilage: float
    muscle: float
    fat: float
    fat_unsuppressed: float
    marrow: float
    red_marrow_boost: float
    pelvic_marrow: float
    cortex: float
    skin: float
    ligament: float
    vessel_vein: float
    vessel_artery: float


@dataclass(frozen=True)
class Waves:
    """Parameters of a smooth random field (see :func:`phantom.sdf.waves`)."""

    vectors: Vec  # (n, 3) rad/mm
    phases: Vec
    amplitudes: Vec


@dataclass(frozen=True)
class Lesion:
    """An early ONFH lesion: a subchondral dome cut off by a serpiginous band."""

    stage: str  # "ARCO I" | "ARCO II"
    size_class: str  # small | medium | large
    target_fraction: float  # of the head's volume
    axis: Vec  # side-local unit vector from head centre to the dome
    dome_distance: float  # mm from the head centre to the centre of the lesion's sphere
    radius: float  # mm, radius of the sphere that carves the lesion out of the head
    boundary: Waves  # makes the band serpiginous
    granulation_width: float  # mm, inner bright line
    sclerosis_width: float  # mm, outer dark line
    granulation_signal: float
    sclerosis_signal: float
    double_line: bool
    lines: tuple[str, ...]  # which lines are drawn: ("bright", "dark"), ("dark",) or ("bright",)
    centre_kind: str  # "fat-like" | "oedema-like"
    centre_signal: float
    subtle: bool
    # Site profiles with harder realism only: where the band is missing. The band is drawn
    # where this field exceeds ``gap_threshold`` (a partly visible ARCO I band).
    band_gaps: Waves | None = None
    gap_threshold: float = -1e9


@dataclass(frozen=True)
class MarrowVariation:
    """Physiological variation of one femoral head's marrow (site profiles only).

    Healthy heads are not uniform fatty marrow: residual red marrow makes patches a
    little brighter on T2-FS, and the fatty marrow's own signal varies between people.
    """

    signal_scale: float  # multiplies the case's fatty-marrow signal
    patches: Waves  # patchy red marrow where this field exceeds ``patch_threshold``
    patch_threshold: float
    patch_signal: float  # signal added inside a patch (fluid = 1)
    texture: Waves  # fine trabecular texture, relative


@dataclass(frozen=True)
class Finding:
    """A benign finding that makes a hip look busy."""

    kind: FindingKind
    centre: Vec  # side-local
    radius: float
    signal: float
    rim_signal: float | None


@dataclass(frozen=True)
class Hip:
    """One hip joint and proximal femur, in side-local coordinates."""

    side: Literal["L", "R"]
    head_centre: Vec
    head_radius: float
    head_cortex: float
    head_cartilage: float
    joint_space: float
    acetabular_cartilage: float
    acetabular_thickness: float
    acetabular_axis: Vec  # unit, from the head centre into the depth of the socket
    acetabular_coverage: float  # degrees, half-angle of the socket around its axis
    fossa_angle: float  # degrees, the cartilage-free acetabular fossa
    neck_axis: Vec  # unit, head centre towards the trochanters
    neck_length: float
    neck_radius: float
    neck_cortex: float
    shaft_axis: Vec  # unit, distal
    shaft_radius: float
    shaft_cortex: float
    greater_trochanter: tuple[Vec, Vec]  # centre, radii
    lesser_trochanter: tuple[Vec, Vec]
    fovea_direction: Vec
    fovea_radius: float
    effusion: bool
    effusion_thickness: float  # mm of fluid distending the capsule
    oedema: bool
    oedema_signal: float
    oedema_decay: float  # mm along the neck
    marrow_texture: Waves
    lesion: Lesion | None
    findings: tuple[Finding, ...]
    marrow_variation: MarrowVariation | None = None  # site profiles with harder realism

    @property
    def sign(self) -> float:
        """+1 for the left hip (x points left), -1 for the right."""
        return 1.0 if self.side == "L" else -1.0

    @property
    def junction(self) -> Vec:
        """Where the neck axis meets the shaft (intertrochanteric centre)."""
        return np.asarray(self.head_centre + self.neck_length * self.neck_axis, dtype=np.float64)

    @property
    def head_neck_plane(self) -> float:
        """Distance along the neck axis from the head centre to the head-neck junction."""
        return float(np.sqrt(max(self.head_radius**2 - self.neck_radius**2, 1.0)))

    def to_local(self, v: Vec) -> Vec:
        """Side-local point to pelvis-frame point."""
        return np.asarray([self.sign * v[0], v[1], v[2]], dtype=np.float64)


@dataclass(frozen=True)
class Anatomy:
    """Everything about one synthetic patient's pelvis region."""

    sex: Literal["M", "F"]
    signals: Signals
    hips: tuple[Hip, Hip]  # (right, left)
    body_half_width: float  # mm, pelvis outline semi-axis along x
    body_half_depth: float  # along y
    body_centre_y: float
    thigh_radius: float
    thigh_offset: float  # |x| of the thigh centres
    crotch_z: float
    subcutaneous_fat: float  # mm
    bladder_centre: Vec
    bladder_radii: Vec
    muscle_texture: Waves
    fat_suppression_failure: float  # 0..1, how much fat comes back at the FOV edges
    bowel: tuple[tuple[Vec, Vec, float], ...]  # centre, radii, signal


def waves_field(
    rng: np.random.Generator, n: int, wavelength: tuple[float, float], amp: float
) -> Waves:
    """Draw ``n`` plane waves of random direction and phase (a smooth random field)."""
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelength, size=(n, 1))
    return Waves(
        vectors=np.asarray(directions * k, dtype=np.float64),
        phases=rng.uniform(0, 2 * np.pi, size=n),
        amplitudes=np.asarray(amp * rng.uniform(0.5, 1.0, size=n) / np.sqrt(n), dtype=np.float64),
    )


def sample_signals(rng: np.random.Generator) -> Signals:
    """Draw this case's tissue signals from the ranges of ONFH_MRI.md."""
    u = rng.uniform
    return Signals(
        fluid=u(0.92, 1.0),
        bladder=u(0.93, 1.0),
        cartilage=u(0.35, 0.45),
        muscle=u(0.2, 0.3),
        fat=u(0.05, 0.1),
        fat_unsuppressed=u(0.55, 0.8),
        marrow=u(0.08, 0.15),
        red_marrow_boost=u(0.02, 0.07),
        pelvic_marrow=u(0.12, 0.2),
        cortex=u(0.02, 0.05),
        skin=u(0.18, 0.3),
        ligament=u(0.12, 0.25),
        vessel_vein=u(0.25, 0.5),
        vessel_artery=u(0.02, 0.08),
    )


def lens_fraction(r1: float, r2: float, d: float) -> float:
    """Volume of the intersection of spheres (r1, r2) at distance d, over sphere r1's."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return min(r1, r2) ** 3 / r1**3
    lens = (
        np.pi
        * (r1 + r2 - d) ** 2
        * (d * d + 2 * d * r2 - 3 * r2 * r2 + 2 * d * r1 + 6 * r1 * r2 - 3 * r1 * r1)
    )
    return float(lens / (12 * d) / (4 / 3 * np.pi * r1**3))


def _carving_radius(marrow_radius: float, dome_distance: float, fraction: float) -> float:
    """Radius of the sphere at ``dome_distance`` that cuts ``fraction`` of the head."""
    lo, hi = dome_distance - marrow_radius, dome_distance + marrow_radius
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if lens_fraction(marrow_radius, mid, dome_distance) < fraction:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def sample_lesion(
    rng: np.random.Generator, head_radius: float, head_cortex: float, signals: Signals
) -> Lesion:
    """Draw an ARCO I-II lesion in the weight-bearing dome."""
    stage = "ARCO II" if rng.random() < 0.55 else "ARCO I"
    subtle = rng.random() < 0.22
    if subtle:
        size_class = "small"
    else:
        size_class = str(rng.choice(["small", "medium", "large"], p=[0.3, 0.4, 0.3]))
    fraction = {
        "small": rng.uniform(0.06, 0.14),
        "medium": rng.uniform(0.16, 0.29),
        "large": rng.uniform(0.31, 0.45),
    }[size_class]
    # Antero-superolateral weight-bearing dome, a different tilt each time.
    axis = _unit([0.35 + rng.normal(0, 0.12), -0.35 + rng.normal(0, 0.12), 0.87])
    # The necrotic segment is the part of the head inside a second sphere centred just
    # beyond the dome: its boundary curves towards the head centre like the real
    # reactive interface, making a dome- or wedge-shaped area in coronal slices.
    marrow_radius = head_radius - head_cortex
    dome_distance = marrow_radius + rng.uniform(2.0, 10.0)
    stage_ii = stage == "ARCO II"
    sclerosis_width = float(rng.uniform(1.5, 3.0) if stage_ii else rng.uniform(1.0, 2.0))
    # ``fraction`` is of the whole head; the lesion lies in its marrow, and its outer dark
    # line belongs to it: carve so that lesion plus line hold the drawn fraction.
    of_marrow = min(fraction * (head_radius / marrow_radius) ** 3, 0.95)
    radius = _carving_radius(marrow_radius, dome_distance, of_marrow) - sclerosis_width
    double_line = rng.random() < 0.8
    if double_line:
        lines: tuple[str, ...] = ("bright", "dark")
    else:
        lines = ("dark",) if rng.random() < 0.6 else ("bright",)
    fat_like = rng.random() < 0.7
    band_strength = rng.uniform(0.35, 0.6) if subtle else rng.uniform(0.75, 1.0)
    granulation = signals.marrow + band_strength * (rng.uniform(0.7, 0.9) - signals.marrow)
    sclerosis = signals.cortex + (1 - band_strength) * (signals.marrow - signals.cortex)
    if fat_like:
        centre = signals.marrow * rng.uniform(0.85, 1.2)
    else:
        centre = rng.uniform(0.45, 0.7) if not subtle else rng.uniform(0.25, 0.4)
    return Lesion(
        stage=stage,
        size_class=size_class,
        target_fraction=float(fraction),
        axis=axis,
        dome_distance=float(dome_distance),
        radius=float(radius),
        boundary=waves_field(rng, 6, (10.0, 24.0), rng.uniform(1.0, 2.5)),
        granulation_width=float(rng.uniform(1.0, 1.8) if subtle else rng.uniform(1.3, 3.0)),
        sclerosis_width=sclerosis_width,
        granulation_signal=float(granulation),
        sclerosis_signal=float(sclerosis),
        double_line=bool(double_line),
        lines=lines,
        centre_kind="fat-like" if fat_like else "oedema-like",
        centre_signal=float(centre),
        subtle=bool(subtle),
    )


def _random_direction_in_cone(rng: np.random.Generator, axis: Vec, max_angle: float) -> Vec:
    while True:
        v = _unit(rng.normal(size=3))
        if np.degrees(np.arccos(np.clip(v @ axis, -1, 1))) <= max_angle:
            return v


def sample_findings(
    rng: np.random.Generator, hip_centre: Vec, radius: float, neck_axis: Vec, n: int
) -> tuple[Finding, ...]:
    """Draw ``n`` benign findings (cysts, herniation pits, red marrow, bone islands)."""
    kinds: list[FindingKind] = [
        "subchondral cyst",
        "herniation pit",
        "red marrow island",
        "bone island",
    ]
    findings = []
    for kind in rng.choice(kinds, size=n, p=[0.3, 0.25, 0.3, 0.15]):
        if kind == "subchondral cyst":
            r = rng.uniform(1.5, 3.5)
            d = _random_direction_in_cone(rng, _unit([0.3, 0.0, 1.0]), 70)
            centre = hip_centre + d * (radius - r - rng.uniform(1.2, 2.5))
            findings.append(
                Finding(kind, centre, r, rng.uniform(0.8, 1.0), rng.uniform(0.03, 0.08))
            )
        elif kind == "herniation pit":
            r = rng.uniform(2.0, 4.0)
            # Antero-superior head-neck junction.
            up = _unit(np.cross(neck_axis, [0.0, 1.0, 0.0]))
            up = up if up[2] > 0 else -up
            radial = _unit(up + np.array([0.0, -0.8, 0.0]))
            along = np.sqrt(max(radius**2 - 14.0**2, 1.0)) + rng.uniform(0, 6)
            centre = hip_centre + neck_axis * along + radial * rng.uniform(7, 10)
            findings.append(
                Finding(kind, centre, r, rng.uniform(0.75, 0.95), rng.uniform(0.03, 0.08))
            )
        elif kind == "red marrow island":
            r = rng.uniform(4.0, 8.0)
            d = _unit(rng.normal(size=3))
            centre = hip_centre + neck_axis * rng.uniform(0, 25) + d * rng.uniform(0, 8)
            findings.append(Finding(kind, centre, r, rng.uniform(0.18, 0.3), None))
        else:
            r = rng.uniform(2.0, 4.0)
            d = _unit(rng.normal(size=3))
            centre = hip_centre + d * rng.uniform(0, radius - r - 4)
            findings.append(Finding(kind, centre, r, rng.uniform(0.02, 0.05), None))
    return tuple(findings)


def sample_hip(
    rng: np.random.Generator,
    pathology_rng: np.random.Generator,
    side: Literal["L", "R"],
    centre: Vec,
    radius: float,
    onfh: bool,
    signals: Signals,
) -> Hip:
    """Draw one hip: its shape, and healthy or early ONFH with the signs that go with it.

    Shape comes from ``rng``, everything that depends on the label from
    ``pathology_rng``: the same case drawn healthy or diseased has the same anatomy,
    scanner and acquisition, so nothing but the pathology can tell the classes apart.
    """
    neck_shaft = np.radians(rng.uniform(125, 135))
    anteversion = np.radians(rng.uniform(8, 20))
    shaft_tilt = np.radians(rng.uniform(5, 9))
    # Angles in the coronal (x-z) plane, measured from +x (lateral) towards +z (up).
    shaft_angle = -np.pi / 2 - shaft_tilt  # distal shaft runs slightly medially
    head_angle = shaft_angle - neck_shaft  # junction -> head points supero-medially
    neck_axis = _unit(
        [-np.cos(head_angle), np.sin(anteversion), -np.sin(head_angle)]
    )  # head -> junction: infero-lateral and posterior (the head is anteverted)
    shaft_axis = _unit([np.cos(shaft_angle), 0.0, np.sin(shaft_angle)])
    neck_length = radius + rng.uniform(22, 32)
    neck_radius = rng.uniform(13.5, 16.0) * radius / 24.0
    junction = centre + neck_length * neck_axis
    gt_centre = junction + np.array([rng.uniform(14, 20), rng.uniform(2, 8), rng.uniform(8, 16)])
    gt_radii = np.array([rng.uniform(12, 16), rng.uniform(16, 22), rng.uniform(18, 26)])
    lt_centre = junction + np.array(
        [-rng.uniform(10, 16), rng.uniform(6, 12), -rng.uniform(32, 42)]
    )
    lt_radii = np.array([rng.uniform(7, 10), rng.uniform(7, 10), rng.uniform(9, 13)])
    acet_axis = _unit([-0.6 + rng.normal(0, 0.06), 0.25 + rng.normal(0, 0.05), 0.76])
    head_cortex = float(rng.uniform(1.0, 1.5))
    p = pathology_rng
    effusion = p.random() < (0.8 if onfh else 0.3)
    oedema = (p.random() < 0.45) if onfh else (p.random() < 0.04)
    lesion = sample_lesion(p, radius, head_cortex, signals) if onfh else None
    if lesion is not None and lesion.subtle:
        oedema = False
    if onfh:
        n_findings = int(p.random() < 0.3)
    else:
        n_findings = int(p.choice([0, 1, 2, 3], p=[0.35, 0.3, 0.2, 0.15]))
    return Hip(
        side=side,
        head_centre=np.asarray(centre, dtype=np.float64),
        head_radius=float(radius),
        head_cortex=head_cortex,
        head_cartilage=float(rng.uniform(1.5, 2.5)),
        joint_space=float(rng.uniform(0.4, 1.0)),
        acetabular_cartilage=float(rng.uniform(1.5, 2.5)),
        acetabular_thickness=float(rng.uniform(9, 14)),
        acetabular_axis=acet_axis,
        acetabular_coverage=float(rng.uniform(78, 92)),
        fossa_angle=float(rng.uniform(18, 28)),
        neck_axis=neck_axis,
        neck_length=float(neck_length),
        neck_radius=float(neck_radius),
        neck_cortex=float(rng.uniform(2.0, 3.0)),
        shaft_axis=shaft_axis,
        shaft_radius=float(rng.uniform(13, 15.5)),
        shaft_cortex=float(rng.uniform(4.0, 6.0)),
        greater_trochanter=(gt_centre, gt_radii),
        lesser_trochanter=(lt_centre, lt_radii),
        fovea_direction=_unit([-0.8, 0.15 + rng.normal(0, 0.05), -0.55]),
        fovea_radius=float(rng.uniform(3.5, 5.5)),
        effusion=bool(effusion),
        effusion_thickness=float(
            (p.uniform(3.0, 8.0) if onfh else p.uniform(1.5, 3.5))
            if effusion
            else p.uniform(0.3, 0.8)
        ),
        oedema=bool(oedema),
        oedema_signal=float(p.uniform(0.55, 0.8) if onfh else p.uniform(0.3, 0.45)),
        oedema_decay=float(p.uniform(15, 40)),
        marrow_texture=waves_field(rng, 5, (6.0, 18.0), rng.uniform(0.01, 0.025)),
        lesion=lesion,
        findings=sample_findings(p, centre, radius, neck_axis, n_findings),
    )


def sample_anatomy(
    rng: np.random.Generator, pathology_rng: np.random.Generator, onfh: tuple[bool, bool]
) -> Anatomy:
    """Draw one patient; ``onfh`` says which hips (right, left) have early ONFH.

    Only ``pathology_rng`` is consumed differently for different labels.
    """
    sex: Literal["M", "F"] = "M" if rng.random() < 0.55 else "F"
    signals = sample_signals(rng)
    base_radius = rng.uniform(23.0, 27.5) if sex == "M" else rng.uniform(20.0, 24.5)
    half_distance = rng.uniform(85, 100)
    hips = []
    sides: tuple[Literal["L", "R"], ...] = ("R", "L")
    for side, diseased in zip(sides, onfh, strict=True):
        radius = float(np.clip(base_radius + rng.normal(0, 0.5), 20.0, 27.5))
        # Side-local centre: x lateral; small asymmetries in height and depth.
        centre = np.array(
            [half_distance + rng.normal(0, 1.5), rng.normal(0, 1.5), rng.normal(0, 1.5)]
        )
        hips.append(sample_hip(rng, pathology_rng, side, centre, radius, diseased, signals))
    bowel = tuple(
        (
            np.array([rng.uniform(-50, 50), rng.uniform(-30, 50), rng.uniform(45, 110)]),
            np.array([rng.uniform(10, 25), rng.uniform(10, 25), rng.uniform(10, 30)]),
            float(rng.uniform(0.25, 0.75)),
        )
        for _ in range(int(rng.integers(2, 6)))
    )
    return Anatomy(
        sex=sex,
        signals=signals,
        hips=(hips[0], hips[1]),
        body_half_width=float(rng.uniform(160, 195) + (10 if sex == "F" else 0)),
        body_half_depth=float(rng.uniform(105, 140)),
        body_centre_y=float(rng.uniform(5, 25)),
        thigh_radius=float(rng.uniform(70, 92)),
        thigh_offset=float(rng.uniform(85, 105)),
        crotch_z=float(rng.uniform(-95, -70)),
        subcutaneous_fat=float(rng.uniform(10, 40)),
        bladder_centre=np.array([rng.normal(0, 5), rng.uniform(-40, -20), rng.uniform(5, 30)]),
        bladder_radii=np.array([rng.uniform(30, 55), rng.uniform(22, 40), rng.uniform(20, 42)]),
        muscle_texture=waves_field(rng, 3, (15.0, 40.0), 0.08),
        fat_suppression_failure=float(rng.uniform(0.0, 1.0) ** 2),
        bowel=bowel,
    )


__all__ = [
    "Anatomy",
    "Finding",
    "Hip",
    "Lesion",
    "MarrowVariation",
    "Signals",
    "Waves",
    "lens_fraction",
    "rotation",
    "sample_anatomy",
    "waves_field",
]
