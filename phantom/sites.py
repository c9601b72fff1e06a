"""Site profiles: how one hospital's scanner, protocol and patients shape a phantom series.

A :class:`SiteProfile` holds *distributions*, not values: every case of a site draws its
own field of view, slice thickness, noise, scaling, habitus and so on from the site's
ranges, so two sites differ the way two hospitals do (vendor conventions, coverage,
resolution, signal chain, patients) while cases within a site still vary. Ranges stay
within what real scanners do (``shared/ONFH_MRI.md``).

``legacy`` is the phantom's original behaviour (vendor, protocol and chain drawn per case
from the generator's built-in ranges); the other profiles also switch on the harder
realism of :class:`Realism` (heterogeneous healthy marrow, subtle ARCO I bands).

Only data lives here; :mod:`phantom.site_draw` draws cases from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onfh_dlr.errors import PhantomError
from phantom.case import PrivateTag


@dataclass(frozen=True)
class Range:
    """A uniform distribution on ``[lo, hi]``."""

    lo: float
    hi: float

    def draw(self, rng: np.random.Generator) -> float:
        """One draw (consumes exactly one uniform from ``rng``)."""
        return float(rng.uniform(self.lo, self.hi))


@dataclass(frozen=True)
class VendorConvention:
    """What one vendor's scanner writes into a coronal T2-FS (or STIR) hip series."""

    manufacturer: str
    models: tuple[tuple[float, tuple[str, ...]], ...]  # (field strength, model names)
    software: tuple[str, ...]
    fs_descriptions: tuple[str, ...]  # SeriesDescription of the fat-saturated TSE/FSE
    stir_descriptions: tuple[str, ...]
    protocol_name: str | None  # None: the protocol is named like the series
    sequence_name: str
    scan_options: tuple[tuple[str, ...], ...]
    sequence_variant: tuple[str, ...]
    receive_coil: str
    rescale_slope: Range | None  # Philips-style Rescale Slope, drawn per series
    rescale_intercept: float
    bits_stored: int
    private_tags: tuple[PrivateTag, ...]

    def models_at(self, field: float) -> tuple[str, ...]:
        """Model names this vendor sells at ``field`` tesla."""
        for strength, names in self.models:
            if strength == field:
                return names
        raise PhantomError(f"{self.manufacturer} has no {field} T model in this profile")


@dataclass(frozen=True)
class Realism:
    """The harder phantom: healthy heads that look busy, necrotic heads that look subtle.

    Marrow variation and extra findings are drawn from a label-blind stream; only the
    subtle-lesion choices use the site's pathology stream (honest classes).
    """

    marrow_scale: Range  # physiological fatty-marrow signal, times the case's marrow
    patch_fraction: Range  # fraction of the head's marrow in red-marrow patches
    patch_signal: Range  # signal added inside a patch (fluid = 1)
    texture: Range  # relative amplitude of fine trabecular texture
    islands: tuple[int, int]  # extra red-marrow islands in the head, [lo, hi)
    cyst_probability: float  # per hip, one or two small subchondral cysts
    subtle_probability: float  # an ONFH lesion becomes a faint ARCO I band
    band_missing: Range  # fraction of a subtle band that is not visible
    band_strength: Range  # subtle band contrast, 0 = invisible, 1 = full
    oedema_keep: float  # fraction of non-subtle ONFH hips that keep marrow oedema


@dataclass(frozen=True)
class SiteProfile:
    """One site: vendor conventions, protocol, coverage, signal chain and patients.

    ``vendor`` ``None`` means the legacy per-case vendor draw; ``realism`` ``None`` means
    the legacy pathology. Geometry ranges are in mm; ``centre_z`` is where the field of
    view's centre lies above the femoral heads (larger: more pelvis, less thigh).
    """

    name: str
    institution: str
    stations: tuple[str, ...]
    summary: str
    vendor: VendorConvention | None
    field_strengths: tuple[float, ...]  # drawn with equal weight
    stir_probability: float
    fov: Range  # in-plane field of view across the columns (left-right)
    rows_fraction: Range  # rows / columns (superior-inferior coverage)
    matrices: tuple[int, ...]  # reconstructed column counts
    slice_thickness: tuple[float, ...]
    gap: Range  # fraction of the thickness
    slices: tuple[int, int]  # [lo, hi) before raising to cover both heads
    max_tilt: float  # degrees about each axis (obliquity)
    centre_z: Range
    subcutaneous_fat: Range
    body_scale: Range  # multiplies the body outline (habitus)
    fat_suppression_failure: Range
    snr: Range
    bias_amplitude: Range
    scale_fraction: Range  # fluid at this fraction of the stored range (log-uniform)
    realism: Realism | None


_HARD = Realism(
    marrow_scale=Range(0.8, 1.7),
    patch_fraction=Range(0.05, 0.35),
    patch_signal=Range(0.04, 0.14),
    texture=Range(0.05, 0.18),
    islands=(0, 4),
    cyst_probability=0.3,
    subtle_probability=0.3,
    band_missing=Range(0.05, 0.3),
    band_strength=Range(0.5, 0.8),
    oedema_keep=0.5,
)

SIEMENS = VendorConvention(
    manufacturer="SIEMENS",
    models=((1.5, ("Avanto", "Avanto_fit", "Aera")), (3.0, ("Skyra", "Vida"))),
    software=("syngo MR B17", "syngo MR E11"),
    fs_descriptions=("t2_tse_fs_cor", "t2_tse_fs_cor_hips"),
    stir_descriptions=("t2_tirm_cor",),
    protocol_name=None,
    sequence_name="*tse2d1_15",
    scan_options=(("FS",), ("PFP", "FS")),
    sequence_variant=("SK", "SP", "OSP"),
    receive_coil="Body_18",
    rescale_slope=None,
    rescale_intercept=0.0,
    bits_stored=12,
    private_tags=(
        PrivateTag(0x0029, "SIEMENS CSA HEADER", 0x08, "CS", "IMAGE NUM 4"),
        PrivateTag(0x0029, "SIEMENS CSA HEADER", 0x09, "LO", "20100114"),
        PrivateTag(0x0051, "SIEMENS MR HEADER", 0x08, "CS", "IMAGE NUM 4"),
        PrivateTag(0x0051, "SIEMENS MR HEADER", 0x0C, "LO", "FoV 380*380"),
    ),
)

GE = VendorConvention(
    manufacturer="GE MEDICAL SYSTEMS",
    models=((1.5, ("SIGNA Explorer",)), (3.0, ("DISCOVERY MR750", "SIGNA Premier"))),
    software=("DV26.0_R03_1831.b", "RX29.1_R02_2104.a"),
    fs_descriptions=("COR T2 FS", "Cor T2 FSE FS", "COR T2 FSE FS HIPS"),
    stir_descriptions=("COR STIR",),
    protocol_name="HIPS BILAT",
    sequence_name="fse-xl_1",
    scan_options=(("FAST_GEMS", "FS"), ("FAST_GEMS", "EDR_GEMS", "FS")),
    sequence_variant=("SK", "OSP"),
    receive_coil="GEM Flex Med",
    rescale_slope=None,
    rescale_intercept=0.0,
    bits_stored=16,
    private_tags=(
        PrivateTag(0x0019, "GEMS_ACQU_01", 0x9C, "LO", "fse-xl"),
        PrivateTag(0x0043, "GEMS_PARM_01", 0x39, "IS", "0"),
    ),
)

PHILIPS = VendorConvention(
    manufacturer="Philips Medical Systems",
    models=((1.5, ("Ingenia", "Achieva")), (3.0, ("Ingenia", "Achieva dStream"))),
    software=("5.6.1\\5.6.1.1", "5.7.1\\5.7.1.2"),
    fs_descriptions=("T2W_SPAIR_COR", "T2W_TSE_SPAIR COR"),
    stir_descriptions=("COR STIR",),
    protocol_name=None,
    sequence_name="TSE",
    scan_options=(("FS",), ("PFP", "FS")),
    sequence_variant=("SK",),
    receive_coil="dS Torso",
    rescale_slope=Range(1.2, 3.0),
    rescale_intercept=0.0,
    bits_stored=12,
    # MR Scale Intercept; the per-series MR Scale Slope (0x0E) is added when drawn.
    private_tags=(PrivateTag(0x2005, "Philips MR Imaging DD 001", 0x0D, "FL", 0.0),),
)

CANON = VendorConvention(
    manufacturer="CANON_MEC",
    models=((1.5, ("Vantage Orian", "Vantage Elan")), (3.0, ("Vantage Galan 3T",))),
    software=("V6.0*R003", "V7.0*R006"),
    fs_descriptions=("COR T2 FS", "cor T2 FatSat"),
    stir_descriptions=("COR STIR", "STIR COR HIPS"),
    protocol_name=None,
    sequence_name="FSE2D",
    scan_options=(("FS",), ("FAT_SAT", "FS")),
    sequence_variant=("SK", "SP"),
    receive_coil="SPEEDER Body",
    rescale_slope=None,
    rescale_intercept=0.0,
    bits_stored=12,
    private_tags=(PrivateTag(0x700D, "TOSHIBA_MEC_MR3", 0x08, "LO", "FSE"),),
)

#: The original generator: every case draws its own vendor, protocol and chain, and the
#: original patients. Its acquisition and chain ranges are the generator's own; vendor,
#: field strength, STIR and habitus come from the original samplers (``scanner.py``,
#: ``anatomy.py``), and the corresponding fields here only record their ranges.
LEGACY = SiteProfile(
    name="legacy",
    institution="Phantom Mixed Vendors Site",
    stations=("MR1", "MR2", "MR3", "MR4", "MR5", "MR6", "MR7", "MR8"),
    summary="the original phantom: vendor, protocol and signal chain drawn per case",
    vendor=None,
    field_strengths=(1.5, 3.0),
    stir_probability=0.15,
    fov=Range(330, 420),
    rows_fraction=Range(0.75, 1.0),
    matrices=(256, 288, 320, 384, 416, 448, 512, 576, 640),
    slice_thickness=(3.0, 3.5, 4.0, 4.5, 4.5, 5.0),
    gap=Range(0.0, 0.2),
    slices=(16, 31),
    max_tilt=4.0,
    centre_z=Range(-10, 30),
    subcutaneous_fat=Range(10, 40),
    body_scale=Range(1.0, 1.0),
    fat_suppression_failure=Range(0.0, 1.0),  # the original draws U(0, 1) squared
    snr=Range(18, 45),
    bias_amplitude=Range(0.2, 0.3),
    scale_fraction=Range(0.08, 0.45),
    realism=None,
)

#: The source paper's protocol: Siemens 1.5 T, 4.5 mm TSE FS, the whole pelvis.
SIEMENS_15T = SiteProfile(
    name="siemens-1.5t",
    institution="Northfield University Hospital",
    stations=("AWP45190", "MRC25431"),
    summary="Siemens 1.5 T t2_tse_fs_cor, 4.5 mm, whole pelvis, average habitus",
    vendor=SIEMENS,
    field_strengths=(1.5,),
    stir_probability=0.0,
    fov=Range(360, 400),
    rows_fraction=Range(0.8, 1.0),
    matrices=(320, 384, 448),
    slice_thickness=(4.5,),
    gap=Range(0.1, 0.2),
    slices=(18, 24),
    max_tilt=3.0,
    centre_z=Range(10, 40),
    subcutaneous_fat=Range(12, 35),
    body_scale=Range(0.95, 1.05),
    fat_suppression_failure=Range(0.0, 0.3),
    snr=Range(22, 40),
    bias_amplitude=Range(0.18, 0.26),
    scale_fraction=Range(0.15, 0.35),
    realism=_HARD,
)

#: Large 3 T field of view down to the thighs, thin slices, heavy patients, 16-bit values.
GE_3T = SiteProfile(
    name="ge-3t",
    institution="Lakeside Regional Medical Center",
    stations=("GEMR750A", "PREMIER1"),
    summary="GE 3 T FSE FS, 3-3.5 mm, pelvis and upper thighs, obese habitus, 16-bit",
    vendor=GE,
    field_strengths=(3.0,),
    stir_probability=0.0,
    fov=Range(420, 480),
    rows_fraction=Range(0.95, 1.0),
    matrices=(384, 416, 448, 512, 576),
    slice_thickness=(3.0, 3.5),
    gap=Range(0.0, 0.1),
    slices=(24, 31),
    max_tilt=6.0,
    centre_z=Range(-40, 0),
    subcutaneous_fat=Range(30, 60),
    body_scale=Range(1.05, 1.2),
    fat_suppression_failure=Range(0.4, 1.0),
    snr=Range(25, 50),
    bias_amplitude=Range(0.26, 0.36),
    scale_fraction=Range(0.25, 0.6),
    realism=_HARD,
)

#: Hips only, fine in-plane pixels, Philips rescale and a small stored-value range.
PHILIPS_3T = SiteProfile(
    name="philips-3t",
    institution="St Elsewhere Orthopaedic Clinic",
    stations=("INGENIA3T",),
    summary="Philips 3 T T2W SPAIR, 4 mm, hips only, fine pixels, slim patients, rescaled",
    vendor=PHILIPS,
    field_strengths=(3.0,),
    stir_probability=0.0,
    fov=Range(300, 340),
    rows_fraction=Range(0.7, 0.8),
    matrices=(448, 512),
    slice_thickness=(4.0,),
    gap=Range(0.05, 0.15),
    slices=(16, 22),
    max_tilt=2.0,
    centre_z=Range(-5, 10),
    subcutaneous_fat=Range(8, 20),
    body_scale=Range(0.88, 0.98),
    fat_suppression_failure=Range(0.0, 0.15),
    snr=Range(20, 35),
    bias_amplitude=Range(0.2, 0.3),
    scale_fraction=Range(0.15, 0.3),
    realism=_HARD,
)

#: STIR at 1.5 T: thick slices, coarse pixels, low SNR, even fat suppression.
CANON_STIR = SiteProfile(
    name="canon-stir-1.5t",
    institution="Hillcrest Community Hospital",
    stations=("ORIAN01", "ELAN02"),
    summary="Canon 1.5 T COR STIR, 5 mm + 20 % gap, coarse pixels, low SNR",
    vendor=CANON,
    field_strengths=(1.5,),
    stir_probability=1.0,
    fov=Range(370, 410),
    rows_fraction=Range(0.8, 0.95),
    matrices=(288, 320),
    slice_thickness=(5.0,),
    gap=Range(0.15, 0.2),
    slices=(16, 20),
    max_tilt=5.0,
    centre_z=Range(0, 30),
    subcutaneous_fat=Range(15, 45),
    body_scale=Range(0.95, 1.1),
    fat_suppression_failure=Range(0.0, 0.05),
    snr=Range(12, 20),
    bias_amplitude=Range(0.15, 0.22),
    scale_fraction=Range(0.3, 0.7),
    realism=_HARD,
)

#: Every profile by name.
SITES: dict[str, SiteProfile] = {
    s.name: s for s in (LEGACY, SIEMENS_15T, GE_3T, PHILIPS_3T, CANON_STIR)
}


def site_profile(name: str) -> SiteProfile:
    """The profile called ``name``.

    Raises
    ------
    PhantomError
        If there is no such profile.
    """
    try:
        return SITES[name]
    except KeyError:
        raise PhantomError(
            f"unknown phantom site {name!r}; known: {', '.join(sorted(SITES))}"
        ) from None


__all__ = [
    "CANON",
    "CANON_STIR",
    "GE",
    "GE_3T",
    "LEGACY",
    "PHILIPS",
    "PHILIPS_3T",
    "SIEMENS",
    "SIEMENS_15T",
    "SITES",
    "Range",
    "Realism",
    "SiteProfile",
    "VendorConvention",
    "site_profile",
]
