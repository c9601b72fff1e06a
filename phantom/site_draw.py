"""Draw one case's scanner, habitus and harder realism from a :class:`~phantom.sites.SiteProfile`.

Pure computation on random streams handed in by :func:`phantom.generator.plan_case`.
Label-blind streams draw everything but the pathology; ``pathology`` draws are made only
for diseased hips, so a healthy and a diseased draw of one case differ in nothing else.
"""

from __future__ import annotations

from dataclasses import replace
from statistics import NormalDist

import numpy as np

from phantom.anatomy import Anatomy, Finding, Hip, Lesion, MarrowVariation, waves_field
from phantom.case import PrivateTag, ScannerProfile
from phantom.scanner import sample_scanner
from phantom.sites import Realism, SiteProfile

# Standard deviation of a ``waves_field(..., amp=1)`` field: each wave has amplitude
# U(0.5, 1) / sqrt(n) and variance a**2 / 2, so the sum has variance E[U**2] / 2 = 7/24.
_WAVES_SD = float(np.sqrt(7 / 24))


def draw_scanner(rng: np.random.Generator, site: SiteProfile) -> ScannerProfile:
    """The site's vendor, model and protocol for one study (legacy: any vendor)."""
    station = str(site.stations[int(rng.integers(len(site.stations)))])
    vendor = site.vendor
    if vendor is None:
        return sample_scanner(rng, site.institution, station)
    field = float(site.field_strengths[int(rng.integers(len(site.field_strengths)))])
    models = vendor.models_at(field)
    model = str(models[int(rng.integers(len(models)))])
    stir = rng.random() < site.stir_probability
    variant = vendor.sequence_variant
    if stir:
        descriptions = vendor.stir_descriptions
        options: tuple[str, ...] = ("IR",) if vendor.manufacturer != "SIEMENS" else ()
        scanning: tuple[str, ...] = ("SE", "IR")
        variant = (*variant, "MP")
        ti: float | None = float(rng.uniform(140, 170) if field == 1.5 else rng.uniform(210, 240))
        te = float(rng.uniform(35, 70))
    else:
        descriptions = vendor.fs_descriptions
        options = vendor.scan_options[int(rng.integers(len(vendor.scan_options)))]
        scanning = ("SE",)
        ti = None
        te = float(rng.uniform(60, 90))
    description = str(descriptions[int(rng.integers(len(descriptions)))])
    rescale = None
    tags = vendor.private_tags
    if vendor.rescale_slope is not None:
        rescale = (round(vendor.rescale_slope.draw(rng), 5), vendor.rescale_intercept)
        # Philips' private MR Scale Slope maps stored values to "floating point" values,
        # a third intensity scale beside the stored and the rescaled one.
        scale_slope = float(rng.uniform(0.002, 0.02))
        tags = (*tags, PrivateTag(0x2005, "Philips MR Imaging DD 001", 0x0E, "FL", scale_slope))
    return ScannerProfile(
        manufacturer=vendor.manufacturer,
        model_name=model,
        software_versions=str(vendor.software[int(rng.integers(len(vendor.software)))]),
        magnetic_field_strength=field,
        series_description=description,
        protocol_name=vendor.protocol_name or description,
        sequence_name=vendor.sequence_name,
        scan_options=options,
        scanning_sequence=scanning,
        sequence_variant=tuple(variant),
        receive_coil_name=vendor.receive_coil,
        station_name=station,
        institution_name=site.institution,
        repetition_time=float(round(rng.uniform(2500, 5200), 0)),
        echo_time=round(te, 1),
        inversion_time=None if ti is None else round(ti, 0),
        echo_train_length=int(rng.integers(8, 24)),
        flip_angle=float(rng.choice([90.0, 150.0, 160.0, 180.0])),
        number_of_averages=float(rng.choice([1.0, 2.0, 3.0])),
        pixel_bandwidth=float(round(rng.uniform(150, 350), 0)),
        imaging_frequency=round(42.577478 * field * (1 + rng.normal(0, 2e-6)), 6),
        rescale=rescale,
        bits_stored=vendor.bits_stored,
        private_tags=tags,
    )


def apply_habitus(rng: np.random.Generator, anat: Anatomy, site: SiteProfile) -> Anatomy:
    """The site's patients: body size, subcutaneous fat, fat-suppression quality."""
    scale = site.body_scale.draw(rng)
    return replace(
        anat,
        body_half_width=anat.body_half_width * scale,
        body_half_depth=anat.body_half_depth * scale,
        thigh_radius=anat.thigh_radius * scale,
        subcutaneous_fat=site.subcutaneous_fat.draw(rng),
        fat_suppression_failure=site.fat_suppression_failure.draw(rng),
    )


def _unit(v: np.typing.NDArray[np.float64]) -> np.typing.NDArray[np.float64]:
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def _healthy_findings(rng: np.random.Generator, hip: Hip, realism: Realism) -> tuple[Finding, ...]:
    """Red-marrow islands and small subchondral cysts, drawn whatever the label."""
    c, radius = hip.head_centre, hip.head_radius
    found: list[Finding] = []
    for _ in range(int(rng.integers(*realism.islands))):
        r = float(rng.uniform(3.0, 6.0))
        centre = c + _unit(rng.normal(size=3)) * rng.uniform(0, radius - r - 2)
        found.append(Finding("red marrow island", centre, r, float(rng.uniform(0.16, 0.3)), None))
    cysts = int(rng.random() < realism.cyst_probability) * int(rng.integers(1, 3))
    for _ in range(cysts):
        r = float(rng.uniform(1.2, 3.0))
        # Upper, weight-bearing half of the head, where subchondral cysts sit.
        d = _unit(rng.normal(size=3) * [0.6, 0.6, 0.4] + [0.2, 0.0, 0.8])
        centre = c + d * (radius - r - rng.uniform(1.2, 2.5))
        found.append(
            Finding(
                "subchondral cyst",
                centre,
                r,
                float(rng.uniform(0.7, 1.0)),
                float(rng.uniform(0.03, 0.08)),
            )
        )
    return tuple(found)


def _subtle_lesion(
    pathology: np.random.Generator, lesion: Lesion, realism: Realism, marrow: float, cortex: float
) -> Lesion:
    """A faint, thin, partly missing ARCO I band around a fat-like centre."""
    strength = realism.band_strength.draw(pathology)
    granulation = marrow + strength * (float(pathology.uniform(0.7, 0.9)) - marrow)
    sclerosis = cortex + (1 - strength) * (marrow - cortex)
    missing = realism.band_missing.draw(pathology)
    return replace(
        lesion,
        stage="ARCO I",
        subtle=True,
        granulation_width=float(pathology.uniform(1.0, 1.8)),
        sclerosis_width=float(pathology.uniform(0.8, 1.5)),
        granulation_signal=float(granulation),
        sclerosis_signal=float(sclerosis),
        centre_kind="fat-like",
        centre_signal=float(marrow * pathology.uniform(0.9, 1.1)),
        band_gaps=waves_field(pathology, 6, (8.0, 20.0), 1.0),
        gap_threshold=_WAVES_SD * NormalDist().inv_cdf(missing),
    )


def apply_realism(
    rng: np.random.Generator,
    pathology: np.random.Generator,
    anat: Anatomy,
    realism: Realism,
) -> Anatomy:
    """Heterogeneous marrow and benign findings in every head; subtler lesions.

    ``rng`` is label-blind; ``pathology`` is drawn from only for a hip with a lesion.
    """
    hips = []
    for hip in anat.hips:
        scale = realism.marrow_scale.draw(rng)
        fraction = realism.patch_fraction.draw(rng)
        variation = MarrowVariation(
            signal_scale=scale,
            patches=waves_field(rng, 6, (10.0, 30.0), 1.0),
            patch_threshold=_WAVES_SD * NormalDist().inv_cdf(1.0 - fraction),
            patch_signal=realism.patch_signal.draw(rng),
            texture=waves_field(rng, 8, (2.5, 6.0), realism.texture.draw(rng) / _WAVES_SD),
        )
        findings = (*hip.findings, *_healthy_findings(rng, hip, realism))
        lesion, oedema = hip.lesion, hip.oedema
        if lesion is not None:
            marrow = anat.signals.marrow * scale
            if lesion.centre_kind == "fat-like":
                # Necrotic fat looks like the patient's own fatty marrow.
                lesion = replace(lesion, centre_signal=lesion.centre_signal * scale)
            if pathology.random() < realism.subtle_probability:
                lesion = _subtle_lesion(pathology, lesion, realism, marrow, anat.signals.cortex)
                oedema = False
            elif oedema and pathology.random() >= realism.oedema_keep:
                oedema = False
        hips.append(
            replace(
                hip, marrow_variation=variation, findings=findings, lesion=lesion, oedema=oedema
            )
        )
    return replace(anat, hips=(hips[0], hips[1]))


__all__ = ["apply_habitus", "apply_realism", "draw_scanner"]
