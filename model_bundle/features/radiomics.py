"""Handcrafted radiomics of one ROI with PyRadiomics: the 1,197 features of the DLR model.

The feature definition is one PyRadiomics parameter file,
``model_bundle/resources/radiomics_params.yaml`` (every bundle carries a copy). With it,
:func:`extract_radiomics` gives per ROI 13 image types (original, 8 wavelet
decompositions, LoG sigma 2, 3, 4, 5 mm) x 91 features (18 first order, 22 GLCM,
16 GLRLM, 16 GLSZM, 14 GLDM, 5 NGTDM) + 14 shape features = 1,197.

Preprocessing
-------------
PyRadiomics does the paper's preprocessing itself, as the parameter file says: it
z-scores the *whole* image (``normalize``, times ``normalizeScale`` = 100), resamples
image (B-spline) and mask (nearest neighbour) to 1 x 1 x 1 mm over the ROI's bounding box
plus ``padDistance``, filters that box and crops it to the ROI. So pass the series image
exactly as :func:`model_bundle.imaging.series.load_series` returns it, and the ROI mask on that
grid (:class:`model_bundle.imaging.roi.HipROI`); never an image already resampled or z-scored by
:mod:`model_bundle.imaging.preprocess` (that is for the deep-feature branch), or it is
normalised twice. Keeping all of it in the parameter file means the stock ``pyradiomics``
command line reproduces our features from the series and mask written as NIfTI/NRRD.

Names and order
---------------
Names are PyRadiomics' own keys, ``<image type>_<class>_<feature>`` (for example
``original_shape_Sphericity``, ``wavelet-LLH_glcm_Contrast``,
``log-sigma-2-0-mm-3D_firstorder_Mean``), without the ``diagnostics_*`` entries. The
order (:data:`FEATURE_NAMES`, :func:`feature_names`) is PyRadiomics' output order for the
parameter file: the ``original_shape_*`` features first, then image type by image type
in the order Original, Wavelet (LLH, LHL, LHH, HLL, HLH, HHL, HHH, then the
approximation LLL), LoG (sigmas as listed); within an image type, classes and features
in the order the parameter file lists them.

Selective extraction
--------------------
A served bundle needs a few of the 1,197 features. ``extract_radiomics(...,
features=names)`` computes only the image types (a wavelet decomposition, a LoG sigma),
classes and features those names need, with the same images, crops and settings as the
full run, so the values are identical to it, not just close.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import itertools
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import SimpleITK as sitk
import yaml
from radiomics import featureextractor, getFeatureClasses, imageoperations

from model_bundle.features import bin_edges
from onfh_dlr.errors import ConfigurationError, FeatureError, SegmentationError

__all__ = [
    "FEATURE_NAMES",
    "extract_radiomics",
    "feature_names",
    "load_params",
    "read_params_text",
]

# PyRadiomics logs every image type and class at INFO on its own "radiomics" logger (with
# its own stderr handler); a worker scoring hips all day needs only its warnings.
logging.getLogger("radiomics").setLevel(logging.WARNING)
# The same discretisation without PyRadiomics' element-by-element min/max (bin_edges).
bin_edges.install()

_PARAMS_PACKAGE: Final = "model_bundle"
_PARAMS_RESOURCE: Final = ("resources", "radiomics_params.yaml")

# The image types the selective planner knows how to name and to compute one at a time.
_IMAGE_TYPES: Final = ("Original", "Wavelet", "LoG")
# Settings whose effect this module does not reproduce (resegmentation and 2-D extraction
# happen inside PyRadiomics' execute(), which we do not call), or which have process-wide
# side effects (geometryTolerance sets SimpleITK's global default tolerance).
_UNSUPPORTED_SETTINGS: Final = frozenset(
    {"resegmentRange", "resegmentMode", "resegmentShape", "force2D", "geometryTolerance"}
)
# A mask and image "on the same grid": ITK's own physical-space tolerance, relative to
# the voxel size, and an absolute one for the direction cosines.
_GRID_TOLERANCE: Final = 1e-6


@dataclass(frozen=True)
class _ImageSpec:
    """One image a parameter file produces: its PyRadiomics name and where it comes from."""

    name: str  # e.g. "original", "wavelet-LLH", "log-sigma-2-0-mm-3D"
    image_type: str  # its key under ``imageType``: "Original", "Wavelet" or "LoG"
    sigma: float | None  # the LoG sigma, None for the other types


@dataclass(frozen=True)
class _Catalogue:
    """Everything a (validated) parameter file can produce, in PyRadiomics' order."""

    shape: tuple[str, ...]
    images: tuple[_ImageSpec, ...]
    classes: tuple[tuple[str, tuple[str, ...]], ...]  # non-shape classes and features
    names: tuple[str, ...]
    index: Mapping[str, tuple[str, str, str]]  # name -> (image name, class, feature)
    settings: Mapping[str, Any]  # PyRadiomics' settings for execute(): defaults + file


# --- Parameter file ----------------------------------------------------------------------


def read_params_text() -> str:
    """Return the packaged parameter file verbatim, comments included.

    Bundles copy this text (rather than a re-dump of :func:`load_params`) so that the
    file in a bundle keeps the reasons written next to each value.

    Returns
    -------
    str
        The YAML text of ``model_bundle/resources/radiomics_params.yaml``.
    """
    resource = importlib.resources.files(_PARAMS_PACKAGE)
    for part in _PARAMS_RESOURCE:
        resource = resource.joinpath(part)
    return resource.read_text(encoding="utf-8")


def load_params(path: Path | None = None) -> dict[str, Any]:
    """Read and validate a PyRadiomics parameter file.

    Parameters
    ----------
    path
        A YAML parameter file (a bundle's copy); ``None`` reads the packaged one.

    Returns
    -------
    dict
        The parameters (``imageType``, ``featureClass``, ``setting``), as PyRadiomics'
        ``RadiomicsFeatureExtractor`` accepts them.

    Raises
    ------
    onfh_dlr.errors.ConfigurationError
        The file cannot be read, is not YAML, fails PyRadiomics' schema, or uses an image
        type or setting this module does not support.
    """
    if path is None:
        # A copy: callers may edit theirs, the cached one must stay the packaged file.
        return copy.deepcopy(_packaged_params())
    return _read_params(lambda: Path(path).read_text(encoding="utf-8"), str(path))


@functools.cache
def _packaged_params() -> dict[str, Any]:
    return _read_params(read_params_text, "the packaged radiomics_params.yaml")


def _read_params(read: Callable[[], str], where: str) -> dict[str, Any]:
    try:
        # safe_load: a parameter file comes with a bundle and must never construct objects.
        params = yaml.safe_load(read())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read radiomics parameters from {where}: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigurationError(f"radiomics parameters in {where} are not a YAML mapping")
    _catalogue(params, where)  # validates; raises ConfigurationError
    return params


def feature_names(params: Mapping[str, Any] | None = None) -> list[str]:
    """List the names a full extraction with ``params`` returns, in its order.

    Parameters
    ----------
    params
        Parameters as :func:`load_params` returns them; ``None`` = the packaged file.

    Returns
    -------
    list of str
        ``<image type>_<class>_<feature>`` names: shape first, then image type by image
        type (original, wavelet LLH ... HHH, LLL, LoG by sigma), classes and features in
        the parameter file's order. 1,197 names for the packaged file.

    Raises
    ------
    onfh_dlr.errors.ConfigurationError
        ``params`` is invalid or unsupported.
    """
    return list(_catalogue(_packaged_params() if params is None else params).names)


def _settings_of(params: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The global settings and each image type's custom settings, labelled for messages."""
    found: list[tuple[str, Mapping[str, Any]]] = [("setting", params.get("setting") or {})]
    for image_type, custom in (params.get("imageType") or {}).items():
        found.append((f"imageType.{image_type}", custom or {}))
    return found


#: PyRadiomics' extractor validates its parameters with pykwalify, whose YAML parser
#: (ruamel) shares state between threads: two hips' threads meeting new parameters at
#: once failed with ParserError/ComposerError. One construction at a time.
_EXTRACTOR_LOCK: Final = threading.Lock()


def _new_extractor(params: Mapping[str, Any], where: str) -> Any:
    """PyRadiomics' extractor for ``params``: its constructor validates them (pykwalify)."""
    try:
        # Deep copy: PyRadiomics keeps (and may normalise) the dictionary it is given.
        with _EXTRACTOR_LOCK:
            return featureextractor.RadiomicsFeatureExtractor(copy.deepcopy(dict(params)))
    except (RuntimeError, ValueError, TypeError, LookupError, AssertionError) as exc:
        # pykwalify's SchemaError is a RuntimeError; PyRadiomics' checks raise ValueError.
        raise ConfigurationError(f"invalid radiomics parameters in {where}: {exc}") from exc


def _catalogue(params: Mapping[str, Any], where: str = "the radiomics parameters") -> _Catalogue:
    """Validate ``params`` and enumerate what they produce (no image needed).

    Validation (pykwalify) costs ~50 ms, a noticeable part of a selective run, so the
    result is cached by the parameters' JSON text (keys not sorted: their order is the
    order of the features).
    """
    try:
        key = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError):  # not JSON-like: PyRadiomics' schema will say why
        return _build_catalogue(params, where)
    return _cached_catalogue(key, where)


@functools.lru_cache(maxsize=16)
def _cached_catalogue(key: str, where: str) -> _Catalogue:
    return _build_catalogue(json.loads(key), where)


def _build_catalogue(params: Mapping[str, Any], where: str) -> _Catalogue:
    extractor = _new_extractor(params, where)
    image_types = params.get("imageType") or {}
    feature_classes = params.get("featureClass") or {}
    # PyRadiomics silently falls back to defaults for missing sections; a model's feature
    # set must be written down, so both are required here.
    if not image_types or not feature_classes:
        raise ConfigurationError(f"{where} must list imageType and featureClass explicitly")
    unknown_types = [t for t in image_types if t not in _IMAGE_TYPES]
    if unknown_types:
        raise ConfigurationError(
            f"{where}: image types {unknown_types} are not supported (only {list(_IMAGE_TYPES)})"
        )
    if "shape2D" in feature_classes:
        raise ConfigurationError(f"{where}: shape2D (2-D extraction) is not supported")
    if params.get("voxelSetting"):
        raise ConfigurationError(f"{where}: voxel-based extraction is not supported")
    for label, settings in _settings_of(params):
        used = sorted(_UNSUPPORTED_SETTINGS.intersection(settings))
        if used:
            raise ConfigurationError(f"{where}: {label} uses unsupported settings {used}")

    pyradiomics_classes = getFeatureClasses()
    resolved: dict[str, tuple[str, ...]] = {}
    for class_name, listed in feature_classes.items():
        if listed:
            resolved[class_name] = tuple(listed)
        else:
            # An empty list means "all non-deprecated features", in PyRadiomics' own order.
            all_names = pyradiomics_classes[class_name].getFeatureNames()
            resolved[class_name] = tuple(n for n, deprecated in all_names.items() if not deprecated)
    shape = resolved.pop("shape", ())
    classes = tuple(resolved.items())

    images: list[_ImageSpec] = []
    for image_type, custom in image_types.items():
        custom = custom or {}
        if image_type == "Original":
            images.append(_ImageSpec("original", image_type, None))
        elif image_type == "Wavelet":
            images.extend(_wavelet_specs(custom))
        else:  # LoG; PyRadiomics' name: 'log-sigma-%s-mm-3D' % str(sigma).replace('.', '-')
            for sigma in custom.get("sigma", []):
                name = "log-sigma-{}-mm-3D".format(str(sigma).replace(".", "-"))
                images.append(_ImageSpec(name, image_type, sigma))

    index: dict[str, tuple[str, str, str]] = {}
    for feature in shape:
        index[f"original_shape_{feature}"] = ("original", "shape", feature)
    for spec in images:
        for class_name, features in classes:
            for feature in features:
                index[f"{spec.name}_{class_name}_{feature}"] = (spec.name, class_name, feature)
    n_expected = len(shape) + len(images) * sum(len(f) for _, f in classes)
    if len(index) != n_expected:  # a LoG sigma or a feature listed twice
        raise ConfigurationError(f"{where}: an image type or feature is listed twice")
    return _Catalogue(
        shape,
        tuple(images),
        classes,
        tuple(index),
        MappingProxyType(index),
        MappingProxyType(dict(extractor.settings)),
    )


def _wavelet_specs(custom: Mapping[str, Any]) -> list[_ImageSpec]:
    """The wavelet images PyRadiomics' getWaveletImage yields, in its order.

    pywt.swtn returns the 3-D decompositions keyed 'aad', 'ada', ..., 'ddd' (a -> L,
    d -> H) in itertools.product order; PyRadiomics yields the details of each level and
    the last level's approximation (LLL) at the end. Level 1 is unnumbered.
    """
    level = int(custom.get("level", 1))
    details = ["".join(p) for p in itertools.product("LH", repeat=3)][1:]
    specs: list[_ImageSpec] = []
    for idx in range(1, level + 1):
        prefix = "wavelet" if idx == 1 else f"wavelet{idx}"
        specs.extend(_ImageSpec(f"{prefix}-{d}", "Wavelet", None) for d in details)
    prefix = "wavelet" if level == 1 else f"wavelet{level}"
    specs.append(_ImageSpec(f"{prefix}-LLL", "Wavelet", None))
    return specs


FEATURE_NAMES: Final[tuple[str, ...]] = tuple(feature_names())
"""The 1,197 names of the packaged parameter file, in extraction order."""


# --- Extraction --------------------------------------------------------------------------


def extract_radiomics(
    image: sitk.Image,
    mask: sitk.Image,
    params: Mapping[str, Any] | None = None,
    *,
    features: Sequence[str] | None = None,
) -> dict[str, float]:
    """Compute PyRadiomics features of one ROI.

    Parameters
    ----------
    image
        The series image as loaded (3-D, scalar, scanner intensities, native grid):
        normalisation and 1 mm resampling are done here, by the parameter file.
    mask
        The ROI on exactly ``image``'s grid; voxels equal to the parameter file's
        ``label`` (1) are the ROI.
    params
        Parameters as :func:`load_params` returns them; ``None`` = the packaged file.
    features
        ``None`` for the full run (all of :func:`feature_names`). Otherwise names from the
        full run: only the image types, classes and features they need are computed, and
        the values are identical to the full run's.

    Returns
    -------
    dict of str to float
        Full run: every name, in :func:`feature_names` order. Selective run: exactly the
        requested names, in the order given. All values are finite.

    Raises
    ------
    onfh_dlr.errors.SegmentationError
        The mask is not on the image grid, is empty, holds a single voxel, or is refused
        by PyRadiomics (for example a flat, single-slice ROI).
    onfh_dlr.errors.FeatureError
        A requested name is not produced by ``params`` (the message names it), the image
        is not a 3-D scalar image, or a feature cannot be computed or is not finite.
    onfh_dlr.errors.ConfigurationError
        ``params`` is invalid or unsupported.
    """
    if params is None:
        params = _packaged_params()  # read-only here: no copy needed
    catalogue = _catalogue(params)
    wanted = list(catalogue.names) if features is None else _check_requested(features, catalogue)

    # Exactly the settings PyRadiomics' execute() would use (defaults + file); a deep copy
    # because they hold lists and the catalogue is cached across calls.
    settings = copy.deepcopy(dict(catalogue.settings))
    label = int(settings.get("label", 1))
    _check_inputs(image, mask, label)
    if not wanted:
        return {}

    # Group what is needed: shape features, and per image name the classes and features
    # (in the parameter file's order, so a selective run enables them as the full run does).
    wanted_set = set(wanted)
    shape_order = [f for f in catalogue.shape if f"original_shape_{f}" in wanted_set]
    need: dict[str, dict[str, list[str]]] = {}
    for spec in catalogue.images:
        for class_name, class_features in catalogue.classes:
            chosen = [f for f in class_features if f"{spec.name}_{class_name}_{f}" in wanted_set]
            if chosen:
                need.setdefault(spec.name, {})[class_name] = chosen

    try:
        values = _compute(image, mask, params, settings, catalogue, shape_order, need)
    except (SegmentationError, FeatureError):
        raise
    except (RuntimeError, ValueError, ArithmeticError, LookupError, AssertionError) as exc:
        raise FeatureError(f"PyRadiomics failed: {type(exc).__name__}: {exc}") from exc

    missing = [n for n in wanted if n not in values]
    if missing:
        # PyRadiomics skips a LoG sigma (with a warning) when the padded box is too small.
        raise FeatureError(f"PyRadiomics produced no value for {_some(missing)}")
    result = {name: values[name] for name in wanted}
    bad = [name for name, value in result.items() if not math.isfinite(value)]
    if bad:
        raise FeatureError(f"non-finite radiomics features (NaN or infinite): {_some(bad)}")
    return result


def _some(names: Sequence[str], limit: int = 5) -> str:
    """Up to ``limit`` names for a message, and how many more there are."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _check_requested(features: Sequence[str], catalogue: _Catalogue) -> list[str]:
    """Validate a selective request: strings, no duplicates, all produced by the file."""
    # A bare string is a Sequence[str] too; iterating it would ask for one-letter names.
    if isinstance(features, str):
        raise TypeError("features must be a sequence of feature names, not one string")
    wanted = list(features)
    unknown = [n for n in wanted if n not in catalogue.index]
    if unknown:
        raise FeatureError(
            f"unknown radiomics feature names (not produced by the parameter file): "
            f"{_some(unknown)}"
        )
    duplicates = sorted(n for n, count in Counter(wanted).items() if count > 1)
    if duplicates:
        raise FeatureError(f"feature names requested more than once: {_some(duplicates)}")
    return wanted


def _check_inputs(image: sitk.Image, mask: sitk.Image, label: int) -> None:
    """Refuse what PyRadiomics would refuse less clearly, or silently resample."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise FeatureError(
            f"radiomics needs a 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise SegmentationError(
            f"the ROI mask must be a 3-D label image, got {mask.GetDimension()}-D with "
            f"{mask.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    # With resampling enabled PyRadiomics accepts a mask on any grid that covers the ROI;
    # our masks are defined on the series grid, so another grid means a mix-up upstream.
    if not _same_grid(image, mask):
        raise SegmentationError(
            "the ROI mask is not on the image grid: "
            f"image size {image.GetSize()}, spacing {_fmt(image.GetSpacing())}, origin "
            f"{_fmt(image.GetOrigin())}; mask size {mask.GetSize()}, spacing "
            f"{_fmt(mask.GetSpacing())}, origin {_fmt(mask.GetOrigin())}"
        )
    n_voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask) == label))
    if n_voxels == 0:
        raise SegmentationError(f"the ROI mask is empty (no voxel with label {label})")
    if n_voxels == 1:
        raise SegmentationError("the ROI mask holds a single voxel; features need a volume")


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    tolerance = _GRID_TOLERANCE * max(a.GetSpacing())
    return bool(
        np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tolerance)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=_GRID_TOLERANCE)
    )


def _compute(
    image: sitk.Image,
    mask: sitk.Image,
    params: Mapping[str, Any],
    settings: dict[str, Any],
    catalogue: _Catalogue,
    shape_features: Sequence[str],
    need: Mapping[str, Mapping[str, Sequence[str]]],
) -> dict[str, float]:
    """PyRadiomics' segment-based execute(), restricted to what is needed.

    The steps and arguments follow ``RadiomicsFeatureExtractor.execute`` (3.1.x): load
    (normalise, resample), checkMask, shape on the mask's bounding box, then every image
    type's generator, each image cropped to the bounding box (no padding) and passed to
    the feature classes with the image type's settings. Only the choice of which images,
    classes and features to compute differs, never how.
    """
    try:
        load = featureextractor.RadiomicsFeatureExtractor.loadImage  # a staticmethod
        image, mask = load(image, mask, None, **settings)
        bounding_box, corrected = imageoperations.checkMask(image, mask, **settings)
    except ValueError as exc:  # PyRadiomics' ROI checks all raise ValueError
        raise SegmentationError(f"PyRadiomics refused the ROI: {exc}") from exc
    if corrected is not None:
        mask = corrected

    classes = getFeatureClasses()
    values: dict[str, float] = {}

    def run_class(
        name: str,
        img: sitk.Image,
        msk: sitk.Image,
        kwargs: dict[str, Any],
        features: Sequence[str],
        prefix: str,
    ) -> None:
        calculator = classes[name](img, msk, **kwargs)
        for feature in features:
            calculator.enableFeatureByName(feature)
        computed = calculator.execute()
        for feature in features:
            values[f"{prefix}_{name}_{feature}"] = float(computed[feature])

    if shape_features:
        # execute() computes shape on the image and mask cropped without padding.
        cropped_image, cropped_mask = imageoperations.cropToTumorMask(image, mask, bounding_box)
        run_class("shape", cropped_image, cropped_mask, settings, shape_features, "original")

    image_types: Mapping[str, Any] = params["imageType"]
    for image_type, custom in image_types.items():
        specs = [s for s in catalogue.images if s.image_type == image_type and s.name in need]
        if not specs:
            continue
        # The image type's settings, exactly as execute() builds them; the feature classes
        # always get these, so a selective run's settings equal the full run's.
        kwargs = dict(settings)
        kwargs.update(custom or {})
        generator_kwargs = kwargs
        if image_type == "LoG":
            # Each sigma is filtered independently: asking only for the needed ones gives
            # the same images and skips the others' filtering.
            generator_kwargs = {**kwargs, "sigma": [s.sigma for s in specs]}
        # Wavelet: pywt computes all 8 decompositions in one transform whatever is asked;
        # the saving is in not computing features on the decompositions not needed.
        generator = getattr(imageoperations, f"get{image_type}Image")
        for filtered, image_name, _ in generator(image, mask, **generator_kwargs):
            if image_name not in need:
                continue
            cropped_image, cropped_mask = imageoperations.cropToTumorMask(
                filtered, mask, bounding_box, padDistance=0
            )
            for class_name, features in need[image_name].items():
                run_class(class_name, cropped_image, cropped_mask, kwargs, features, image_name)
    return values
