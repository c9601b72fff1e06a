"""Admission rules: coronal T2-weighted fat-suppressed MR is admitted, the rest skipped."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedMRImageStorage, SegmentationStorage
from service_harness import CohortMaker

from listener.rules import AdmissionRules
from onfh_dlr.errors import AdmissionRulesError
from phantom.generator import plan_case

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]


@pytest.fixture(scope="module")
def phantom_series(phantom_cohort: CohortMaker) -> dict[str, list[Dataset]]:
    """Four phantom series, one per vendor (seed 14 draws all four, one of them STIR)."""
    series: dict[str, list[Dataset]] = {}
    for study in phantom_cohort(4, 14, onfh_fraction=70 / 150).studies:
        headers: list[Dataset] = [pydicom.dcmread(p, stop_before_pixels=True) for p in study.slices]
        series[str(headers[0].Manufacturer)] = headers
    return series


@pytest.fixture
def header(phantom_series: dict[str, list[Dataset]]) -> Dataset:
    """A copy of one phantom header, to alter."""
    return copy.deepcopy(next(iter(phantom_series.values()))[0])


def test_every_phantom_vendor_is_admitted(phantom_series: dict[str, list[Dataset]]) -> None:
    assert len(phantom_series) == 4  # all vendors
    assert any("InversionTime" in h[0] for h in phantom_series.values())  # and a STIR
    rules = AdmissionRules()
    for manufacturer, headers in phantom_series.items():
        decision = rules.evaluate(headers)
        assert decision.admitted, f"{manufacturer}: {decision.reason}"
        assert "coronal" in decision.reason


def _profile_header(seed: int) -> Dataset:
    plan = plan_case(seed, 0, (False, False))
    s = plan.scanner
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.Modality = "MR"
    ds.SeriesDescription = s.series_description
    ds.ScanOptions = list(s.scan_options)
    ds.EchoTime = s.echo_time
    ds.RepetitionTime = s.repetition_time
    if s.inversion_time is not None:
        ds.InversionTime = s.inversion_time
    ds.ImageOrientationPatient = list(plan.acquisition.geometry.image_orientation())
    return ds


def test_every_phantom_scanner_profile_is_admitted() -> None:
    # Headers only (no rendering): many draws cover every vendor, description and STIR.
    rules = AdmissionRules()
    seen = set()
    for seed in range(400):
        ds = _profile_header(seed)
        decision = rules.evaluate([ds])
        assert decision.admitted, f"{ds.SeriesDescription!r}: {decision.reason}"
        seen.add(str(ds.SeriesDescription))
    assert {"t2_tirm_cor", "COR STIR", "T2W_SPAIR_COR", "cor T2 FatSat"} <= seen


def test_t1_is_skipped(header: Dataset) -> None:
    header.EchoTime, header.RepetitionTime = 12, 500
    header.SeriesDescription = "T1 COR"
    header.ScanOptions = ""
    header.pop("InversionTime", None)
    decision = AdmissionRules().evaluate([header])
    assert not decision.admitted
    assert decision.reason == "not T2-weighted: TE 12 ms, TR 500 ms, description 'T1 COR'"


def test_t2_star_is_not_t2(header: Dataset) -> None:
    header.EchoTime, header.RepetitionTime = 15, 600
    header.SeriesDescription = "T2* GRE COR FS"
    header.pop("InversionTime", None)
    decision = AdmissionRules().evaluate([header])
    assert decision.reason.startswith("not T2-weighted: TE 15 ms, TR 600 ms")


@pytest.mark.parametrize(("iop", "angle"), [(AXIAL, 90), (SAGITTAL, 90)])
def test_axial_and_sagittal_are_skipped(header: Dataset, iop: list[float], angle: int) -> None:
    header.ImageOrientationPatient = iop
    decision = AdmissionRules().evaluate([header])
    assert not decision.admitted
    assert decision.reason == f"not coronal: slice normal {angle}° from anterior-posterior"


def test_oblique_coronal_within_limit() -> None:
    ds = _profile_header(0)
    # Rotate the coronal plane 25° about the left-right axis: still coronal by default.
    c, s = math.cos(math.radians(25)), math.sin(math.radians(25))
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, s, -c]
    assert AdmissionRules().evaluate([ds]).admitted
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.6, -0.8]  # about 37°
    decision = AdmissionRules().evaluate([ds])
    assert decision.reason == "not coronal: slice normal 37° from anterior-posterior"


def test_not_fat_suppressed_is_skipped(header: Dataset) -> None:
    header.SeriesDescription = "COR T2 FSE"  # FSE is fast spin echo, not fat suppression
    header.ScanOptions = ["FAST_GEMS"]
    header.pop("InversionTime", None)
    header.EchoTime, header.RepetitionTime = 85, 4000
    decision = AdmissionRules().evaluate([header])
    assert not decision.admitted
    assert decision.reason == (
        "not fat-suppressed: scan options FAST_GEMS, inversion time none, description 'COR T2 FSE'"
    )


@pytest.mark.parametrize(
    ("description", "options", "ti"),
    [
        ("COR T2", ["SFS"], None),
        ("COR T2", ["SPAIR"], None),
        ("COR T2 TSE", [], 160.0),  # STIR by inversion time
        ("cor t2 fat-sat", [], None),
        ("t2_tse_dixon_cor_W", [], None),
        ("COR T2 SPIR", [], None),
    ],
)
def test_fat_suppression_sources(
    header: Dataset, description: str, options: list[str], ti: float | None
) -> None:
    header.SeriesDescription = description
    header.ScanOptions = options
    header.pop("InversionTime", None)
    if ti is not None:
        header.InversionTime = ti
    decision = AdmissionRules().evaluate([header])
    assert decision.admitted, decision.reason


def test_ct_is_skipped(header: Dataset) -> None:
    header.Modality = "CT"
    header.SOPClassUID = CTImageStorage
    decision = AdmissionRules().evaluate([header])
    assert (decision.admitted, decision.reason) == (False, "not MR: modality CT")


def test_seg_only_is_skipped() -> None:
    seg = Dataset()
    seg.SOPClassUID = SegmentationStorage
    seg.Modality = "SEG"
    assert AdmissionRules().evaluate([seg]).reason == "no image instances in the series"
    assert not AdmissionRules().evaluate([]).admitted


def test_missing_orientation_is_skipped(header: Dataset) -> None:
    del header.ImageOrientationPatient
    decision = AdmissionRules().evaluate([header])
    assert decision.reason.startswith("not coronal: orientation unknown")


def _enhanced(te: float, tr: float, suppression: str, iop: list[float]) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.Modality = "MR"
    ds.SeriesDescription = "cor"
    shared = Dataset()
    plane = Dataset()
    plane.ImageOrientationPatient = iop
    shared.PlaneOrientationSequence = Sequence([plane])
    timing = Dataset()
    timing.RepetitionTime = tr
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    modifier = Dataset()
    modifier.InversionRecovery = "NO"
    shared.MRModifierSequence = Sequence([modifier])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frame = Dataset()
    echo = Dataset()
    echo.EffectiveEchoTime = te
    frame.MREchoSequence = Sequence([echo])
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
    ds.SpectrallySelectedSuppression = suppression
    return ds


def test_enhanced_mr() -> None:
    rules = AdmissionRules()
    assert rules.evaluate([_enhanced(80.0, 4000.0, "FAT", CORONAL)]).admitted
    assert rules.evaluate([_enhanced(10.0, 500.0, "FAT", CORONAL)]).reason.startswith(
        "not T2-weighted: TE 10 ms, TR 500 ms"
    )
    assert rules.evaluate([_enhanced(80.0, 4000.0, "NONE", CORONAL)]).reason.startswith(
        "not fat-suppressed"
    )
    assert rules.evaluate([_enhanced(80.0, 4000.0, "FAT", AXIAL)]).reason.startswith(
        "not coronal: slice normal 90°"
    )


def test_yaml_overrides(tmp_path: Path, header: Dataset) -> None:
    header.ImageOrientationPatient = AXIAL
    header.SeriesDescription = "AX PD"
    header.ScanOptions = ""
    header.pop("InversionTime", None)
    header.EchoTime, header.RepetitionTime = 30, 3000
    path = tmp_path / "rules.yaml"
    path.write_text(
        "coronal_max_angle: 90\nrequire_fat_suppression: false\nt2_descriptions: ['\\bPD\\b']\n",
        encoding="utf-8",
    )
    rules = AdmissionRules.load(path)
    assert rules.coronal_max_angle == 90 and not rules.require_fat_suppression
    assert rules.evaluate([header]).admitted
    assert not AdmissionRules.load(None).evaluate([header]).admitted

    path.write_text("modalities: [MR, CT]\nrequire_coronal: false\n", encoding="utf-8")
    assert AdmissionRules.load(path).modalities == ("MR", "CT")


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert AdmissionRules.load(path) == AdmissionRules()


@pytest.mark.parametrize(
    "text",
    [
        "coronal_angle: 20\n",  # unknown key
        "coronal_max_angle: 120\n",
        "t2_descriptions: ['(']\n",  # invalid regex
        "stir_inversion_time: [250, 100]\n",
        "- a list\n",
        "modalities: [MR\n",  # not YAML
    ],
)
def test_invalid_rules_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AdmissionRulesError):
        AdmissionRules.load(path)


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(AdmissionRulesError):
        AdmissionRules.load(tmp_path / "absent.yaml")
