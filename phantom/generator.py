"""One synthetic coronal T2-FS study: acquisition, rendering, signal chain, truth.

:func:`generate_study` is pure computation (a seed in, a :class:`PhantomStudy` out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from onfh_dlr.errors import PhantomError
from phantom.anatomy import Anatomy, Hip, rotation, sample_anatomy
from phantom.case import (
    HipTruth,
    PatientInfo,
    PhantomStudy,
    ScannerProfile,
    Segment,
    SeriesGeometry,
)
from phantom.render import SampleGrid, hip_truth, paint_hip, paint_soft_tissue
from phantom.scanner import sample_scanner
from phantom.site_draw import apply_habitus, apply_realism, draw_scanner
from phantom.sites import LEGACY, SiteProfile, site_profile

F32 = NDArray[np.float32]
Vec = NDArray[np.float64]

_MATRICES = (256, 288, 320, 384, 416, 448, 512, 576, 640)
_INSTITUTIONS = (
    "Synthetic General Hospital",
    "Phantom University Clinic",
    "Demo Orthopaedic Centre",
)
_SURNAMES = (
    "ALDER",
    "BIRCH",
    "CEDAR",
    "DOGWOOD",
    "ELM",
    "FIR",
    "HAZEL",
    "JUNIPER",
    "LARCH",
    "MAPLE",
)
_GIVEN = ("ALEX", "SAM", "JO", "KIM", "LEE", "ROBIN", "CHRIS", "DANA", "ROWAN", "SKY")


@dataclass(frozen=True)
class Acquisition:
    """The sampled acquisition: output geometry plus how it was rendered."""

    geometry: SeriesGeometry
    acquisition_factor: int | float  # recon matrix / acquired matrix (zero-fill interpolation)
    sub_planes: int
    pelvis_rotation: Vec
    pelvis_origin: Vec
    obliquity_deg: float


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def sample_acquisition(
    rng: np.random.Generator, anat: Anatomy, site: SiteProfile = LEGACY
) -> Acquisition:
    """Draw matrix, pixel size, slices, obliquity and patient placement from ``site``'s ranges.

    The legacy profile's ranges are the original generator's, drawn in the original order.
    """
    fov = site.fov.draw(rng)
    choices = [m for m in site.matrices if 0.6 <= fov / m <= 1.3]
    if not choices:
        raise PhantomError(f"site {site.name}: no matrix gives 0.6-1.3 mm pixels at {fov:.0f} mm")
    columns = int(rng.choice(choices))
    spacing = round(fov / columns, 4)
    rows = int(max(192, round(columns * site.rows_fraction.draw(rng) / 16) * 16))
    pixel_acq = spacing
    factor: int | float = 1
    if spacing < 0.675:
        factor = 2
    elif spacing < 0.9:
        factor = 4 / 3
    pixel_acq = spacing * factor

    thickness = float(rng.choice(site.slice_thickness))
    gap = site.gap.draw(rng)
    slice_spacing = round(thickness * (1 + gap), 2)
    max_radius = max(h.head_radius for h in anat.hips)
    needed = math.ceil((2 * max_radius + 24) / slice_spacing)
    n_slices = int(max(int(rng.integers(*site.slices)), needed))
    if n_slices > 30:
        raise PhantomError("cannot cover both femoral heads with 30 slices")

    pelvis_rotation = rotation(rng.normal(0, 2.0), rng.normal(0, 1.5), rng.normal(0, 2.0))
    pelvis_origin = np.array([rng.normal(0, 8), rng.normal(0, 15), rng.uniform(-60, 40)])
    tilt = rng.uniform(-site.max_tilt, site.max_tilt, size=3)
    acq_rotation = rotation(float(tilt[0]), float(tilt[1]), float(tilt[2]))
    row_dir = acq_rotation @ np.array([1.0, 0, 0])
    col_dir = acq_rotation @ np.array([0.0, 0, -1])
    normal = np.cross(row_dir, col_dir)
    mean_head_y = float(np.mean([h.head_centre[1] for h in anat.hips]))
    centre_local = np.array(
        [rng.normal(0, 6), mean_head_y + rng.normal(0, 3), site.centre_z.draw(rng)]
    )
    centre = pelvis_origin + pelvis_rotation @ centre_local
    origin = (
        centre
        - (columns - 1) / 2 * spacing * row_dir
        - (rows - 1) / 2 * spacing * col_dir
        - (n_slices - 1) / 2 * slice_spacing * normal
    )
    # Round like a scanner writes DS values, then derive everything from the rounded ones.
    geometry = SeriesGeometry(
        rows=rows,
        columns=columns,
        n_slices=n_slices,
        pixel_spacing=(spacing, spacing),
        slice_thickness=thickness,
        slice_spacing=slice_spacing,
        row_direction=np.round(row_dir, 6),
        column_direction=np.round(col_dir, 6),
        origin=np.round(origin, 4),
    )
    obliquity = float(np.degrees(np.arccos(np.clip(abs(normal[1]), -1, 1))))
    sub_planes = max(2, math.ceil(thickness / 1.8))
    _ = pixel_acq
    return Acquisition(geometry, factor, sub_planes, pelvis_rotation, pelvis_origin, obliquity)


def _grid(acq: Acquisition, offsets: Vec, rows: int, columns: int, spacing: float) -> SampleGrid:
    g = acq.geometry
    return SampleGrid(
        origin=g.origin,
        row_direction=g.row_direction,
        column_direction=g.column_direction,
        normal=g.normal,
        plane_offsets=offsets,
        rows=rows,
        columns=columns,
        spacing=spacing,
        pelvis_rotation=acq.pelvis_rotation,
        pelvis_origin=acq.pelvis_origin,
    )


def _plane_offsets(acq: Acquisition) -> tuple[Vec, Vec, Vec]:
    """Slice centres, the sub-planes through each slice, and the slice-profile weights."""
    g = acq.geometry
    centres = np.arange(g.n_slices) * g.slice_spacing
    k = acq.sub_planes
    sub = (np.arange(k) + 0.5) / k * g.slice_thickness - g.slice_thickness / 2
    fine = (centres[:, None] + sub[None, :]).ravel()
    # A smooth slice profile: sub-planes at the edges of the slab count less.
    weights = np.cos(0.9 * np.pi / 2 * (sub / (g.slice_thickness / 2))) ** 0.5
    return (
        centres.astype(np.float64),
        fine.astype(np.float64),
        (weights / weights.sum()).astype(np.float64),
    )


def render_signal(anat: Anatomy, acq: Acquisition) -> tuple[F32, dict[str, float]]:
    """Noise-free T2-FS signal (fluid ~ 1) on the acquired grid, shape (slices, rows, cols)."""
    g = acq.geometry
    factor = acq.acquisition_factor
    rows_a, cols_a = round(g.rows / factor), round(g.columns / factor)
    spacing_a = g.pixel_spacing[0] * g.columns / cols_a
    centres, fine, weights = _plane_offsets(acq)
    coarse = _grid(acq, centres, rows_a, cols_a, spacing_a)
    # Fat suppression fails away from the isocentre (B0 inhomogeneity at the FOV edges).
    rr = ((np.arange(rows_a) - (rows_a - 1) / 2) * spacing_a)[:, None] ** 2
    cc = ((np.arange(cols_a) - (cols_a - 1) / 2) * spacing_a)[None, :] ** 2
    radial = np.sqrt(rr + cc).astype(np.float32)
    fs2d = np.clip((radial - 130.0) / 90.0, 0, 1) ** 2 * anat.fat_suppression_failure
    fs = np.broadcast_to(fs2d, coarse.shape).astype(np.float32)
    canvas = np.zeros(coarse.shape, dtype=np.float32)
    paint_soft_tissue(coarse, canvas, anat, fs)
    k = acq.sub_planes
    fine_canvas = np.repeat(canvas, k, axis=0)
    fine_grid = _grid(acq, fine, rows_a, cols_a, spacing_a)
    for hip in anat.hips:
        paint_hip(fine_grid, fine_canvas, anat, hip)
    signal = np.tensordot(
        fine_canvas.reshape(g.n_slices, k, rows_a, cols_a),
        weights.astype(np.float32),
        axes=([1], [0]),
    )
    return signal.astype(np.float32), {"acquired_rows": rows_a, "acquired_columns": cols_a}


@dataclass(frozen=True)
class SignalChain:
    """What the scanner does to the signal: coil bias, noise level, intensity scaling."""

    snr: float  # fluid signal over the noise standard deviation
    bias_amplitude: float  # peak relative deviation of the coil sensitivity
    bias_coefficients: tuple[float, ...]  # of u, v, w, u², v², w², uv, vw, uw
    scale_fraction: float  # fluid lands at this fraction of the stored range
    noise_seed: int


def sample_chain(rng: np.random.Generator, site: SiteProfile = LEGACY) -> SignalChain:
    """Draw coil bias, SNR and the scanner's arbitrary intensity scaling from ``site``."""
    coeffs = rng.normal(0, 1, size=9)
    coeffs[5] += 0.8  # surface coils front and back: brighter near them
    scale = site.scale_fraction
    return SignalChain(
        snr=site.snr.draw(rng),
        bias_amplitude=site.bias_amplitude.draw(rng),
        bias_coefficients=tuple(float(c) for c in coeffs),
        scale_fraction=float(np.exp(rng.uniform(np.log(scale.lo), np.log(scale.hi)))),
        noise_seed=int(rng.integers(2**63)),
    )


def _bias_field(chain: SignalChain, shape: tuple[int, int, int]) -> F32:
    """A smooth multiplicative coil sensitivity, ±20-30 %."""
    w, v, u = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    w, v, u = w[:, None, None], v[None, :, None], u[None, None, :]
    coeffs = chain.bias_coefficients
    terms = [u, v, w, u * u, v * v, w * w, u * v, v * w, u * w]
    field = sum(np.float32(c) * t for c, t in zip(coeffs, terms, strict=True))
    field = np.broadcast_to(field, shape).astype(np.float32)
    field -= field.mean()
    field /= np.abs(field).max()
    return (1.0 + np.float32(chain.bias_amplitude) * field).astype(np.float32)


def _zero_fill(image: NDArray[np.complex64], rows: int, columns: int) -> NDArray[np.complex64]:
    """Interpolate each slice to ``rows x columns`` by zero-filling k-space, as scanners do."""
    n, ra, ca = image.shape
    if (ra, ca) == (rows, columns):
        return image
    k = scipy.fft.fftshift(scipy.fft.fft2(image, workers=2), axes=(1, 2))
    out = np.zeros((n, rows, columns), dtype=np.complex64)
    r0, c0 = (rows - ra) // 2, (columns - ca) // 2
    out[:, r0 : r0 + ra, c0 : c0 + ca] = k
    scale = (rows * columns) / (ra * ca)
    return (scipy.fft.ifft2(scipy.fft.ifftshift(out, axes=(1, 2)), workers=2) * scale).astype(
        np.complex64
    )


def acquire(
    signal: F32,
    acq: Acquisition,
    chain: SignalChain,
    bits_stored: int,
    rescale: tuple[float, float] | None,
) -> NDArray[np.uint16]:
    """Coil bias, Rician noise, k-space interpolation and the scanner's scaling."""
    g = acq.geometry
    rng = np.random.default_rng(chain.noise_seed)
    biased = signal * _bias_field(chain, signal.shape)
    sigma = np.float32(1.0 / chain.snr)
    real = biased + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    if acq.acquisition_factor == 1:
        magnitude = np.sqrt(real * real + imag * imag)  # Rician
    else:
        complex_image = (real + 1j * imag).astype(np.complex64)
        magnitude = np.abs(_zero_fill(complex_image, g.rows, g.columns))
    top = 2**bits_stored - 1
    # An arbitrary scanner scaling; fluid lands anywhere between 8 % and 45 % of the range.
    values = magnitude * np.float32(chain.scale_fraction * top)
    if rescale is not None:
        values = (values - rescale[1]) / np.float32(rescale[0])
    return np.clip(np.rint(values), 0, top).astype(np.uint16)


def truth_masks(
    acq: Acquisition, hip: Hip
) -> tuple[NDArray[np.bool_], NDArray[np.bool_] | None, float]:
    """Head and lesion masks on the output grid, and the lesion's volume fraction."""
    g = acq.geometry
    _, fine, weights = _plane_offsets(acq)
    grid = _grid(acq, fine, g.rows, g.columns, g.pixel_spacing[0])
    k = acq.sub_planes
    head = np.zeros(g.shape, dtype=np.bool_)
    lesion = np.zeros(g.shape, dtype=np.bool_)
    found = hip_truth(grid, hip, plane_multiple=k)
    if found is None:
        raise PhantomError(f"the {hip.side} femoral head lies outside the field of view")
    where, head_occ, lesion_occ = found
    s0, s1 = where[0].start // k, where[0].stop // k
    out = (slice(s0, s1), where[1], where[2])

    def collapse(occ: F32) -> F32:
        return np.tensordot(
            occ.reshape(s1 - s0, k, *occ.shape[1:]), weights.astype(np.float32), axes=([1], [0])
        )

    head_frac = collapse(head_occ)
    head[out] = head_frac >= 0.5
    fraction = 0.0
    if lesion_occ is not None:
        lesion_frac = collapse(lesion_occ)
        lesion[out] = lesion_frac >= 0.5
        fraction = float(lesion_frac.sum() / max(head_frac.sum(), 1e-6))
        return head, lesion, fraction
    return head, None, fraction


def size_class(fraction: float) -> str:
    """ONFH_MRI.md's lesion size classes by fraction of the head: < 15 %, 15-30 %, > 30 %."""
    if fraction < 0.15:
        return "small"
    return "medium" if fraction <= 0.30 else "large"


def _hip_truth(hip: Hip, acq: Acquisition, fraction: float) -> HipTruth:
    lesion = hip.lesion
    centre = acq.pelvis_origin + acq.pelvis_rotation @ hip.to_local(hip.head_centre)
    findings = tuple(sorted({f.kind for f in hip.findings}))
    return HipTruth(
        side=hip.side,
        label=int(lesion is not None),
        stage="none" if lesion is None else lesion.stage,
        lesion_fraction=round(fraction, 4),
        lesion_size_class="none" if lesion is None else size_class(fraction),
        lesion_centre="none" if lesion is None else lesion.centre_kind,
        double_line=bool(lesion is not None and lesion.double_line),
        band_contrast=0.0 if lesion is None else round(lesion.granulation_signal / 0.115, 3),
        marrow_oedema=hip.oedema,
        effusion=hip.effusion,
        subtle=bool(lesion is not None and lesion.subtle),
        benign_findings=findings,
        head_centre=(
            round(float(centre[0]), 2),
            round(float(centre[1]), 2),
            round(float(centre[2]), 2),
        ),
        head_radius=round(hip.head_radius, 2),
    )


def _patient(rng: np.random.Generator, anat: Anatomy, cohort_seed: int, index: int) -> PatientInfo:
    age = int(rng.integers(22, 76))
    year = int(rng.integers(2023, 2027))
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    hour, minute, second = (
        int(rng.integers(7, 20)),
        int(rng.integers(0, 60)),
        int(rng.integers(0, 60)),
    )
    birth_year = year - age
    return PatientInfo(
        patient_id=f"PH{cohort_seed % 10000:04d}{index:05d}",
        patient_name=f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}",
        birth_date=f"{birth_year:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        sex=anat.sex,
        age_years=age,
        weight_kg=round(float(rng.uniform(50, 95) if anat.sex == "F" else rng.uniform(60, 110)), 1),
        study_instance_uid=_uid("study", cohort_seed, index),
        series_instance_uid=_uid("series", cohort_seed, index),
        frame_of_reference_uid=_uid("frame", cohort_seed, index),
        accession_number=f"ACC{int(rng.integers(10**7, 10**8))}",
        study_id=str(int(rng.integers(1000, 99999))),
        study_date=f"{year:04d}{month:02d}{day:02d}",
        study_time=f"{hour:02d}{minute:02d}{second:02d}",
        study_description="MR HIPS BILATERAL",
        series_number=int(rng.integers(2, 12)),
    )


@dataclass(frozen=True)
class CasePlan:
    """Every random choice of one case, drawn before any pixel is rendered."""

    cohort_seed: int
    index: int
    onfh: tuple[bool, bool]
    anatomy: Anatomy
    scanner: ScannerProfile
    acquisition: Acquisition
    chain: SignalChain
    patient: PatientInfo
    site: SiteProfile | None = None


def plan_case(
    cohort_seed: int, index: int, onfh: tuple[bool, bool], site: SiteProfile | None = None
) -> CasePlan:
    """Draw case ``index`` of a cohort (cheap: no rendering).

    Each part has its own random stream, and the label only feeds the pathology streams:
    the same case drawn with other labels has the same anatomy, scanner, acquisition,
    signal chain and patient, so nothing but the pathology differs between classes.

    Without ``site`` the case is drawn exactly as the original generator drew it (the
    same seed gives the same bytes). With a site, its ranges replace the built-in ones,
    two more streams draw its habitus and realism (label-blind) and subtle lesions
    (pathology), and the header names the site.
    """
    streams = [np.random.default_rng([cohort_seed, index, part]) for part in range(6)]
    anatomy = sample_anatomy(streams[0], streams[1], onfh)
    if site is None:
        institution = str(streams[2].choice(_INSTITUTIONS))
        scanner = sample_scanner(streams[2], institution, f"MR{int(streams[2].integers(1, 9))}")
        acquisition = sample_acquisition(streams[3], anatomy)
        chain = sample_chain(streams[4])
    else:
        site_stream = np.random.default_rng([cohort_seed, index, 6])
        site_pathology = np.random.default_rng([cohort_seed, index, 7])
        if site is not LEGACY:  # legacy keeps the original patients
            anatomy = apply_habitus(site_stream, anatomy, site)
        if site.realism is not None:
            anatomy = apply_realism(site_stream, site_pathology, anatomy, site.realism)
        scanner = draw_scanner(streams[2], site)
        acquisition = sample_acquisition(streams[3], anatomy, site)
        chain = sample_chain(streams[4], site)
    patient = _patient(streams[5], anatomy, cohort_seed, index)
    return CasePlan(cohort_seed, index, onfh, anatomy, scanner, acquisition, chain, patient, site)


def render_case(plan: CasePlan) -> PhantomStudy:
    """Render a planned case: pixels, truth masks and header values."""
    anat, acq, scanner = plan.anatomy, plan.acquisition, plan.scanner
    signal, info = render_signal(anat, acq)
    stored = acquire(signal, acq, plan.chain, scanner.bits_stored, scanner.rescale)
    heads: list[Segment] = []
    lesions: list[Segment] = []
    truths: list[HipTruth] = []
    for hip in anat.hips:
        name = "Left" if hip.side == "L" else "Right"
        head, lesion, fraction = truth_masks(acq, hip)
        heads.append(Segment(f"{name} femoral head", "femoral_head", hip.side, head))
        if lesion is not None:
            lesions.append(
                Segment(f"{name} femoral head necrotic lesion", "necrotic_lesion", hip.side, lesion)
            )
        truths.append(_hip_truth(hip, acq, fraction))
    # Segments: left head, right head, then lesions (left first), as a reader expects.
    segments = tuple(sorted(heads, key=lambda s: s.side) + sorted(lesions, key=lambda s: s.side))
    extra: dict[str, float | str] = {
        **info,
        "snr": round(plan.chain.snr, 2),
        "scale_fraction": round(plan.chain.scale_fraction, 4),
        "obliquity_deg": round(acq.obliquity_deg, 3),
        "acquisition_factor": float(acq.acquisition_factor),
        "fat_suppression_failure": round(anat.fat_suppression_failure, 3),
    }
    if plan.site is not None:
        extra["site"] = plan.site.name
    return PhantomStudy(
        patient=plan.patient,
        scanner=scanner,
        geometry=acq.geometry,
        stored=stored,
        segments=segments,
        hips=(truths[0], truths[1]),
        seed=plan.cohort_seed,
        extra=extra,
    )


def generate_study(
    cohort_seed: int,
    index: int,
    onfh: tuple[bool, bool],
    site: SiteProfile | str | None = None,
) -> PhantomStudy:
    """Generate case ``index`` of a cohort; ``onfh`` says which hips (right, left) are diseased.

    Parameters
    ----------
    cohort_seed
        Seed of the cohort; together with ``index`` it fixes every random draw.
    index
        Case number within the cohort.
    onfh
        Early ONFH in the (right, left) hip.
    site
        A site profile (or its name, see :data:`phantom.sites.SITES`); ``None`` draws the
        case as the original generator does.

    Returns
    -------
    PhantomStudy
        Pixels, geometry, header values and ground truth.
    """
    profile = site_profile(site) if isinstance(site, str) else site
    return render_case(plan_case(cohort_seed, index, onfh, profile))


__all__ = [
    "Acquisition",
    "CasePlan",
    "SignalChain",
    "generate_study",
    "plan_case",
    "render_case",
    "render_signal",
    "sample_acquisition",
    "sample_chain",
    "size_class",
    "truth_masks",
]
