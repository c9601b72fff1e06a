"""How the SR names the model's input features: IBSI codes, PyRadiomics names, UCUM units.

A PyRadiomics feature ``<image type>_<class>_<name>`` (``wavelet-LHL_firstorder_Skewness``)
becomes one TID 300 measurement:

* concept name: the IBSI code (scheme ``IBSI``, e.g. ``KE2A`` *Skewness*) where the
  PyRadiomics feature computes the IBSI feature, as pyradiomics-dcm maps them; otherwise
  a private code (scheme ``99PYRADIOMICS``) whose meaning is the PyRadiomics
  ``<class>_<name>``;
* measurement method (HAS CONCEPT MOD): the image type it was computed on, a private
  code (scheme ``99PYRADIOMICS``) whose value and meaning are PyRadiomics' prefix
  (``original``, ``wavelet-LHL``, ``log-sigma-3-0-mm-3D``): IBSI has no codes for filtered
  images, and the feature is only reproducible with the exact filter;
* unit: UCUM, from what PyRadiomics computes: shape volumes ``mm3``, areas ``mm2``,
  lengths ``mm``, surface-to-volume ratio ``/mm``, first-order Total Energy ``mm3`` (Energy
  scaled by the voxel volume); every other feature is a ratio, count statistic or a value
  on the z-scored image: ``1``.

Deep features the model selected (PCA components of the ResNet18 features) are listed
too, by name, under scheme ``99ONFHDLR`` with unit ``1``.

Where this table differs from pyradiomics-dcm's ``featuresDict_IBSIv7.tsv`` (it is
checked against the IBSI reference manual's definitions): GLCM ``Idm`` is *Inverse
difference moment* (WF0Z), ``Idmn`` *Normalised inverse difference moment* (1QCO), ``Idn``
*Normalised inverse difference* (NDRX); the GLSZM grey-level emphases are GLSZM's
(``glszm``, with PyRadiomics' spelling ``Gray``), and ``Autocorrelation``, ``Imc1`` and
``Imc2`` map to their IBSI features. PyRadiomics' ``Kurtosis`` is not IBSI's (IBSI's is
excess kurtosis, 3 less), so it keeps its PyRadiomics name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from highdicom.sr.coding import CodedConcept

__all__ = [
    "DEEP_SCHEME",
    "IBSI_CODES",
    "IBSI_SCHEME",
    "PRIVATE_SCHEME",
    "FeatureCoding",
    "feature_coding",
    "feature_name",
]

IBSI_SCHEME: Final = "IBSI"
PRIVATE_SCHEME: Final = "99PYRADIOMICS"
DEEP_SCHEME: Final = "99ONFHDLR"

#: PyRadiomics ``<class>_<name>`` -> (IBSI code, IBSI meaning).
IBSI_CODES: Final[dict[str, tuple[str, str]]] = {
    # shape
    "shape_MeshVolume": ("RNU0", "Volume"),
    "shape_VoxelVolume": ("YEKZ", "Approximate volume"),
    "shape_SurfaceArea": ("C0JK", "Surface area"),
    "shape_SurfaceVolumeRatio": ("2PR5", "Surface to volume ratio"),
    "shape_Sphericity": ("QCFX", "Sphericity"),
    "shape_Maximum3DDiameter": ("L0JK", "Maximum 3D diameter"),
    "shape_MajorAxisLength": ("TDIC", "Major axis length"),
    "shape_MinorAxisLength": ("P9VJ", "Minor axis length"),
    "shape_LeastAxisLength": ("7J51", "Least axis length"),
    "shape_Elongation": ("Q3CK", "Elongation"),
    "shape_Flatness": ("N17B", "Flatness"),
    # first order
    "firstorder_Mean": ("Q4LE", "Mean"),
    "firstorder_Variance": ("ECT3", "Variance"),
    "firstorder_Skewness": ("KE2A", "Skewness"),
    "firstorder_Median": ("Y12H", "Median"),
    "firstorder_Minimum": ("1GSF", "Minimum grey level"),
    "firstorder_10Percentile": ("QG58", "10th percentile"),
    "firstorder_90Percentile": ("8DWT", "90th percentile"),
    "firstorder_Maximum": ("84IY", "Maximum grey level"),
    "firstorder_InterquartileRange": ("SALO", "Interquartile range"),
    "firstorder_Range": ("2OJQ", "Range"),
    "firstorder_MeanAbsoluteDeviation": ("4FUA", "Mean absolute deviation"),
    "firstorder_RobustMeanAbsoluteDeviation": ("1128", "Robust mean absolute deviation"),
    "firstorder_Energy": ("N8CA", "Energy"),
    "firstorder_RootMeanSquared": ("5ZWQ", "Root mean square"),
    "firstorder_Entropy": ("TLU2", "Intensity histogram entropy"),
    "firstorder_Uniformity": ("BJ5W", "Intensity histogram uniformity"),
    # GLCM
    "glcm_MaximumProbability": ("GYBY", "Joint maximum"),
    "glcm_JointAverage": ("60VM", "Joint average"),
    "glcm_SumSquares": ("UR99", "Joint variance"),
    "glcm_JointEntropy": ("TU9B", "Joint entropy"),
    "glcm_DifferenceAverage": ("TF7R", "Difference average"),
    "glcm_DifferenceVariance": ("D3YU", "Difference variance"),
    "glcm_DifferenceEntropy": ("NTRS", "Difference entropy"),
    "glcm_SumAverage": ("ZGXS", "Sum average"),
    "glcm_SumEntropy": ("P6QZ", "Sum entropy"),
    "glcm_JointEnergy": ("8ZQL", "Angular second moment"),
    "glcm_Contrast": ("ACUI", "Contrast"),
    "glcm_Id": ("IB1Z", "Inverse difference"),
    "glcm_Idn": ("NDRX", "Normalised inverse difference"),
    "glcm_Idm": ("WF0Z", "Inverse difference moment"),
    "glcm_Idmn": ("1QCO", "Normalised inverse difference moment"),
    "glcm_InverseVariance": ("E8JP", "Inverse variance"),
    "glcm_Correlation": ("NI2N", "Correlation"),
    "glcm_Autocorrelation": ("QWB0", "Autocorrelation"),
    "glcm_ClusterTendency": ("DG8W", "Cluster tendency"),
    "glcm_ClusterShade": ("7NFM", "Cluster shade"),
    "glcm_ClusterProminence": ("AE86", "Cluster prominence"),
    "glcm_Imc1": ("R8DG", "First measure of information correlation"),
    "glcm_Imc2": ("JN9H", "Second measure of information correlation"),
    # GLRLM
    "glrlm_ShortRunEmphasis": ("22OV", "Short runs emphasis"),
    "glrlm_LongRunEmphasis": ("W4KF", "Long runs emphasis"),
    "glrlm_LowGrayLevelRunEmphasis": ("V3SW", "Low grey level run emphasis"),
    "glrlm_HighGrayLevelRunEmphasis": ("G3QZ", "High grey level run emphasis"),
    "glrlm_ShortRunLowGrayLevelEmphasis": ("HTZT", "Short run low grey level emphasis"),
    "glrlm_ShortRunHighGrayLevelEmphasis": ("GD3A", "Short run high grey level emphasis"),
    "glrlm_LongRunLowGrayLevelEmphasis": ("IVPO", "Long run low grey level emphasis"),
    "glrlm_LongRunHighGrayLevelEmphasis": ("3KUM", "Long run high grey level emphasis"),
    "glrlm_GrayLevelNonUniformity": ("R5YN", "Grey level non-uniformity"),
    "glrlm_GrayLevelNonUniformityNormalized": ("OVBL", "Normalised grey level non-uniformity"),
    "glrlm_RunLengthNonUniformity": ("W92Y", "Run length non-uniformity"),
    "glrlm_RunLengthNonUniformityNormalized": ("IC23", "Normalised run length non-uniformity"),
    "glrlm_RunPercentage": ("9ZK5", "Run percentage"),
    "glrlm_GrayLevelVariance": ("8CE5", "Grey level variance"),
    "glrlm_RunVariance": ("SXLW", "Run length variance"),
    "glrlm_RunEntropy": ("HJ9O", "Run entropy"),
    # GLSZM
    "glszm_SmallAreaEmphasis": ("5QRC", "Small zone emphasis"),
    "glszm_LargeAreaEmphasis": ("48P8", "Large zone emphasis"),
    "glszm_LowGrayLevelZoneEmphasis": ("XMSY", "Low grey level zone emphasis"),
    "glszm_HighGrayLevelZoneEmphasis": ("5GN9", "High grey level zone emphasis"),
    "glszm_SmallAreaLowGrayLevelEmphasis": ("5RAI", "Small zone low grey level emphasis"),
    "glszm_SmallAreaHighGrayLevelEmphasis": ("HW1V", "Small zone high grey level emphasis"),
    "glszm_LargeAreaLowGrayLevelEmphasis": ("YH51", "Large zone low grey level emphasis"),
    "glszm_LargeAreaHighGrayLevelEmphasis": ("J17V", "Large zone high grey level emphasis"),
    "glszm_GrayLevelNonUniformity": ("JNSA", "Grey level non-uniformity"),
    "glszm_GrayLevelNonUniformityNormalized": ("Y1RO", "Normalised grey level non-uniformity"),
    "glszm_SizeZoneNonUniformity": ("4JP3", "Zone size non-uniformity"),
    "glszm_SizeZoneNonUniformityNormalized": ("VB3A", "Normalised zone size non-uniformity"),
    "glszm_ZonePercentage": ("P30P", "Zone percentage"),
    "glszm_GrayLevelVariance": ("BYLV", "Grey level variance"),
    "glszm_ZoneVariance": ("3NSA", "Zone size variance"),
    "glszm_ZoneEntropy": ("GU8N", "Zone size entropy"),
    # NGTDM
    "ngtdm_Coarseness": ("QCDE", "Coarseness"),
    "ngtdm_Contrast": ("65HE", "Contrast"),
    "ngtdm_Busyness": ("NQ30", "Busyness"),
    "ngtdm_Complexity": ("HDEZ", "Complexity"),
    "ngtdm_Strength": ("1X9X", "Strength"),
    # GLDM (IBSI's neighbouring grey level dependence)
    "gldm_SmallDependenceEmphasis": ("SODN", "Low dependence emphasis"),
    "gldm_LargeDependenceEmphasis": ("IMOQ", "High dependence emphasis"),
    "gldm_LowGrayLevelEmphasis": ("TL9H", "Low grey level count emphasis"),
    "gldm_HighGrayLevelEmphasis": ("OAE7", "High grey level count emphasis"),
    "gldm_SmallDependenceLowGrayLevelEmphasis": ("EQ3F", "Low dependence low grey level emphasis"),
    "gldm_SmallDependenceHighGrayLevelEmphasis": (
        "JA6D",
        "Low dependence high grey level emphasis",
    ),
    "gldm_LargeDependenceLowGrayLevelEmphasis": ("NBZI", "High dependence low grey level emphasis"),
    "gldm_LargeDependenceHighGrayLevelEmphasis": (
        "9QMG",
        "High dependence high grey level emphasis",
    ),
    "gldm_GrayLevelNonUniformity": ("FP8K", "Grey level non-uniformity"),
    "gldm_DependenceNonUniformity": ("Z87G", "Dependence count non-uniformity"),
    "gldm_DependenceNonUniformityNormalized": (
        "OKJI",
        "Dependence count non-uniformity normalised",
    ),
    "gldm_GrayLevelVariance": ("1PFV", "Grey level variance"),
    "gldm_DependenceVariance": ("DNX2", "Dependence count variance"),
    "gldm_DependenceEntropy": ("FCBV", "Dependence count entropy"),
}

_UNITS: Final[dict[str, tuple[str, str]]] = {
    "shape_MeshVolume": ("mm3", "cubic millimeter"),
    "shape_VoxelVolume": ("mm3", "cubic millimeter"),
    "shape_SurfaceArea": ("mm2", "square millimeter"),
    "shape_SurfaceVolumeRatio": ("/mm", "per millimeter"),
    "shape_Maximum3DDiameter": ("mm", "millimeter"),
    "shape_Maximum2DDiameterSlice": ("mm", "millimeter"),
    "shape_Maximum2DDiameterColumn": ("mm", "millimeter"),
    "shape_Maximum2DDiameterRow": ("mm", "millimeter"),
    "shape_MajorAxisLength": ("mm", "millimeter"),
    "shape_MinorAxisLength": ("mm", "millimeter"),
    "shape_LeastAxisLength": ("mm", "millimeter"),
    "firstorder_TotalEnergy": ("mm3", "cubic millimeter"),
}
_NO_UNITS: Final = ("1", "no units")
_DEEP_PREFIX: Final = "deep_"
_IBSI_BY_CODE: Final = {code: name for name, (code, _) in IBSI_CODES.items()}


@dataclass(frozen=True)
class FeatureCoding:
    """The SR coding of one input feature: concept name, method (image type), unit."""

    name: CodedConcept
    method: CodedConcept | None
    unit: CodedConcept


def _private_code(text: str, scheme: str) -> CodedConcept:
    # A Code Value is at most 16 characters; a short digest keeps long names unique.
    value = text if len(text) <= 16 else hashlib.sha1(text.encode()).hexdigest()[:16].upper()
    return CodedConcept(value, scheme, text)


def feature_coding(feature: str) -> FeatureCoding:
    """The SR coding of a feature named as the bundle names it.

    Raises
    ------
    ValueError
        ``feature`` is neither a deep feature nor a PyRadiomics ``type_class_name``.
    """
    if feature.startswith(_DEEP_PREFIX):
        unit = CodedConcept("1", "UCUM", "no units")
        return FeatureCoding(_private_code(feature, DEEP_SCHEME), None, unit)
    parts = feature.split("_")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{feature!r} is not a PyRadiomics feature name (type_class_name)")
    image_type, feature_class, short = parts
    key = f"{feature_class}_{short}"
    if key in IBSI_CODES:
        code, meaning = IBSI_CODES[key]
        name = CodedConcept(code, IBSI_SCHEME, meaning)
    else:
        name = _private_code(key, PRIVATE_SCHEME)
    unit_code, unit_meaning = _UNITS.get(key, _NO_UNITS)
    return FeatureCoding(
        name=name,
        method=_private_code(image_type, PRIVATE_SCHEME),
        unit=CodedConcept(unit_code, "UCUM", unit_meaning),
    )


def feature_name(name: CodedConcept, method: CodedConcept | None) -> str | None:
    """The bundle's name of a feature coded by :func:`feature_coding`; ``None`` if it is none."""
    scheme = name.scheme_designator
    if scheme == DEEP_SCHEME:
        return str(name.meaning)
    if method is None or method.scheme_designator != PRIVATE_SCHEME:
        return None
    if scheme == IBSI_SCHEME and name.value in _IBSI_BY_CODE:
        return f"{method.meaning}_{_IBSI_BY_CODE[name.value]}"
    if scheme == PRIVATE_SCHEME:
        return f"{method.meaning}_{name.meaning}"
    return None
