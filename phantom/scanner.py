"""Scanner vendors and protocols: what each writes into a coronal T2-FS hip series."""

from __future__ import annotations

import numpy as np

from phantom.case import ScannerProfile

# (manufacturer, models by field strength, software, series descriptions, scan options,
#  sequence variant, sequence name, coil, rescale?, bits stored)
_VENDORS = [
    (
        "SIEMENS",
        {1.5: ["Avanto", "Aera", "Avanto_fit"], 3.0: ["Skyra", "Prisma", "Vida"]},
        ["syngo MR B17", "syngo MR E11", "syngo MR XA20"],
        ["t2_tse_fs_cor", "t2_tse_fs_cor_hips", "t2_tse_cor_fs"],
        [("FS",), ("PFP", "FS"), ("SAT1", "FS")],
        ("SK", "SP", "OSP"),
        "*tse2d1_15",
        "Body_18",
        False,
        12,
    ),
    (
        "GE MEDICAL SYSTEMS",
        {1.5: ["SIGNA Explorer", "Optima MR450w"], 3.0: ["DISCOVERY MR750", "SIGNA Premier"]},
        ["DV26.0_R03_1831.b", "RX29.1_R02_2104.a", "27\\LX\\MR Software release:DV26.0"],
        ["COR T2 FS", "Cor T2 FS", "COR T2 FSE FS"],
        [("FAST_GEMS", "FS"), ("FAST_GEMS", "EDR_GEMS", "FS"), ("FS",)],
        ("SK", "OSP"),
        "fse-xl_1",
        "GEM Flex Med",
        False,
        16,
    ),
    (
        "Philips Medical Systems",
        {1.5: ["Ingenia", "Achieva"], 3.0: ["Ingenia", "Achieva dStream"]},
        ["5.3.1\\5.3.1.0", "5.6.1\\5.6.1.1", "5.7.1\\5.7.1.2"],
        ["T2W_SPAIR_COR", "T2W_TSE_SPAIR COR", "COR T2 SPAIR"],
        [("FS",), ("PFP", "FS")],
        ("SK",),
        "TSE",
        "dS Torso",
        True,
        12,
    ),
    (
        "CANON_MEC",
        {1.5: ["Vantage Orian", "Vantage Elan"], 3.0: ["Vantage Galan 3T"]},
        ["V6.0*R003", "V7.0*R006"],
        ["COR T2 FS", "cor T2 FatSat", "T2 FS COR"],
        [("FS",), ("FAT_SAT", "FS")],
        ("SK", "SP"),
        "FSE2D",
        "SPEEDER Body",
        False,
        12,
    ),
]

_STIR_DESCRIPTIONS = ["COR STIR", "cor_stir", "STIR COR HIPS", "t2_tirm_cor"]


def sample_scanner(rng: np.random.Generator, institution: str, station: str) -> ScannerProfile:
    """Draw a vendor, model and protocol for one study."""
    (
        manufacturer,
        models,
        software,
        descriptions,
        scan_options,
        variant,
        sequence_name,
        coil,
        rescale,
        bits,
    ) = _VENDORS[int(rng.integers(len(_VENDORS)))]
    field = 1.5 if rng.random() < 0.6 else 3.0
    model = str(rng.choice(models[field]))
    stir = rng.random() < 0.15
    if stir:
        description = str(rng.choice(_STIR_DESCRIPTIONS))
        options: tuple[str, ...] = ("IR",) if manufacturer != "SIEMENS" else ()
        scanning: tuple[str, ...] = ("SE", "IR")
        variant = (*variant, "MP")
        ti: float | None = float(rng.uniform(140, 170) if field == 1.5 else rng.uniform(210, 240))
        te = float(rng.uniform(35, 70))
    else:
        description = str(rng.choice(descriptions))
        options = tuple(scan_options[int(rng.integers(len(scan_options)))])
        scanning = ("SE",)
        ti = None
        te = float(rng.uniform(60, 90))
    return ScannerProfile(
        manufacturer=manufacturer,
        model_name=model,
        software_versions=str(rng.choice(software)),
        magnetic_field_strength=field,
        series_description=description,
        protocol_name=description if manufacturer != "GE MEDICAL SYSTEMS" else "HIPS BILAT",
        sequence_name=sequence_name,
        scan_options=options,
        scanning_sequence=scanning,
        sequence_variant=tuple(variant),
        receive_coil_name=coil,
        station_name=station,
        institution_name=institution,
        repetition_time=float(round(rng.uniform(2500, 5200), 0)),
        echo_time=round(te, 1),
        inversion_time=None if ti is None else round(ti, 0),
        echo_train_length=int(rng.integers(8, 24)),
        flip_angle=float(rng.choice([90.0, 150.0, 160.0, 180.0])),
        number_of_averages=float(rng.choice([1.0, 2.0, 3.0])),
        pixel_bandwidth=float(round(rng.uniform(150, 350), 0)),
        imaging_frequency=round(42.577478 * field * (1 + rng.normal(0, 2e-6)), 6),
        rescale=(round(float(rng.uniform(1.2, 4.0)), 5), 0.0) if rescale else None,
        bits_stored=bits,
    )


__all__ = ["sample_scanner"]
