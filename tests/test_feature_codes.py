"""The SR coding of the model's input features: IBSI codes, PyRadiomics names, UCUM units."""

from __future__ import annotations

import pytest

from model_bundle.features import DEEP_FEATURE_NAMES, FEATURE_NAMES
from worker.feature_codes import (
    DEEP_SCHEME,
    IBSI_CODES,
    IBSI_SCHEME,
    PRIVATE_SCHEME,
    feature_coding,
    feature_name,
)


def test_every_radiomics_feature_reads_back_to_its_own_name() -> None:
    seen = set()
    for name in FEATURE_NAMES:
        coding = feature_coding(name)
        key = (coding.name.value, coding.name.scheme_designator, coding.method)
        assert key not in seen, name  # no two features share a coding
        seen.add(key)
        assert feature_name(coding.name, coding.method) == name
        assert len(coding.name.value) <= 16 and coding.method is not None
        assert len(coding.method.value) <= 16


def test_pca_components_are_named_with_unit_one() -> None:
    coding = feature_coding("deep_pca_007")
    assert coding.name.scheme_designator == DEEP_SCHEME and coding.unit.value == "1"
    assert feature_name(coding.name, coding.method) == "deep_pca_007"


def test_features_of_the_model_that_ibsi_defines_carry_ibsi_codes() -> None:
    classes = {name.split("_", 1)[1] for name in FEATURE_NAMES}
    mapped = {key for key in classes if key in IBSI_CODES}
    # Most PyRadiomics features are IBSI's. SumAverage is PyRadiomics' but left out of
    # the model's 1,197 (2 x JointAverage for a symmetric GLCM).
    assert set(IBSI_CODES) - classes == {"glcm_SumAverage"}
    assert len(mapped) >= 80
    skewness = feature_coding("original_firstorder_Skewness")
    assert (skewness.name.value, skewness.name.scheme_designator) == ("KE2A", IBSI_SCHEME)
    assert feature_coding("original_glcm_Idmn").name.value == "1QCO"
    assert feature_coding("original_glcm_Idm").name.value == "WF0Z"
    assert feature_coding("original_glcm_Idn").name.value == "NDRX"


def test_pyradiomics_kurtosis_is_not_ibsi_kurtosis() -> None:
    coding = feature_coding("original_firstorder_Kurtosis")
    assert coding.name.scheme_designator == PRIVATE_SCHEME
    assert coding.name.meaning == "firstorder_Kurtosis"


@pytest.mark.parametrize(
    ("feature", "unit"),
    [
        ("original_shape_MeshVolume", "mm3"),
        ("original_shape_SurfaceArea", "mm2"),
        ("original_shape_SurfaceVolumeRatio", "/mm"),
        ("original_shape_Maximum3DDiameter", "mm"),
        ("original_shape_Maximum2DDiameterSlice", "mm"),
        ("original_shape_Sphericity", "1"),
        ("wavelet-LLH_firstorder_TotalEnergy", "mm3"),
        ("wavelet-LLH_firstorder_Mean", "1"),
        ("log-sigma-3-0-mm-3D_glszm_LargeAreaEmphasis", "1"),
    ],
)
def test_units_are_ucum_and_follow_what_pyradiomics_computes(feature: str, unit: str) -> None:
    coding = feature_coding(feature)
    assert (coding.unit.value, coding.unit.scheme_designator) == (unit, "UCUM")


def test_a_name_that_is_no_feature_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PyRadiomics feature"):
        feature_coding("Mean")
    assert DEEP_FEATURE_NAMES  # deep features are named deep_*, PCA components deep_pca_*
