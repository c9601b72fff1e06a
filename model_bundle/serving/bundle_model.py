"""Scoring hips with a verified model bundle: what `evaluate`, `score` and the worker run.

:class:`BundleModel` loads a bundle (verified first, JSON and safetensors only), and
scores one hip from its series and ROI with exactly the feature code training used
(:func:`model_bundle.features.hip_features`), with the bundle's own radiomics
parameter file and preprocessing parameters: the selective radiomics run (only the
features the bundle's models selected) and the bundle's own ResNet18 weights, PCA,
selectors and classifiers.

Each hip's series acquisition and model inputs are checked against the bundle's
reference statistics (:func:`model_bundle.monitoring.check_inputs`): a hip outside them
is still scored, and its :class:`HipPrediction` lists what is outside
(``out_of_range``) and whether a reference was there to check against
(``reference_status``).

:meth:`BundleModel.predict` scores a study's hips in parallel threads (``hip_workers``):
much of a hip's time is in SimpleITK filters, NumPy, torch and PyRadiomics' C loops,
which can run beside the other hip's Python on a second core.

Imported through :mod:`model_bundle.serving`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.bundle import Bundle, load_bundle
from model_bundle.calibration import Recalibration
from model_bundle.features import (
    DEEP_FEATURE_NAMES,
    FEATURE_NAMES,
    FeatureSpec,
    NormalisationProfile,
    Preprocessing,
    build_resnet18,
    hip_features,
    load_params,
)
from model_bundle.imaging import HipROI, LoadedSeries, Side, acquisition_of
from model_bundle.models import FeatureSelector, PCAParams, from_json, positive_probability
from model_bundle.monitoring import (
    OutOfRange,
    ReferenceStatus,
    check_acquisition,
    check_inputs,
)
from model_bundle.training import MODEL_KEYS
from onfh_dlr.errors import ConfigurationError

F64 = NDArray[np.float64]


class ModelName(enum.StrEnum):
    """The bundle's models: radiomics, deep, and both (the paper's Rad, DL and DLR)."""

    RAD = "rad"
    DL = "dl"
    DLR = "dlr"


@dataclass(frozen=True)
class HipPrediction:
    """The bundle's result for one hip."""

    side: Side
    probabilities: dict[ModelName, float]
    deployed_model: ModelName
    probability: float  # of the deployed model
    score: float  # log-odds of ``probability`` (the linear score for logistic regression)
    threshold: float
    call: int  # 1: suspected early ONFH (probability >= threshold)
    roi_source: str
    roi_description: str
    # The deployed model's selected features for this hip, by name, before the
    # selector's scaling: what the score was made from (reported in the SR).
    inputs: Mapping[str, float] = field(default_factory=dict)
    # What of this hip's inputs (its series' acquisition, then ``inputs``) lies outside
    # the bundle's reference statistics; empty when all is inside or nothing was checked.
    out_of_range: tuple[OutOfRange, ...] = ()
    # Whether there was a reference to check against (bundles without reference
    # statistics: NO_REFERENCE, and ``out_of_range`` is empty).
    reference_status: ReferenceStatus = ReferenceStatus.NO_REFERENCE


@dataclass(frozen=True)
class _Model:
    selector: FeatureSelector
    classifier: Any
    pca: PCAParams | None


class BundleModel:
    """A loaded bundle, ready to score hips.

    ``deployed_only``: load and compute only the deployed model, whose call the outputs
    report (the worker); :attr:`HipPrediction.probabilities` then holds that model alone
    and only its radiomics are computed. Evaluation and calibration compare all three
    models and load them all (the default).
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        threads: int | None = None,
        hip_workers: int = 1,
        deployed_only: bool = False,
    ) -> None:
        if hip_workers < 1:
            raise ConfigurationError(f"hip_workers must be at least 1, not {hip_workers}")
        self.bundle = bundle
        self.threads = threads
        self.hip_workers = hip_workers
        self.models: dict[ModelName, _Model] = {}
        # A site-calibrated bundle maps each model's output through its recalibration.
        params = bundle.recalibration()
        self.recalibration = None if params is None else Recalibration.from_json(params)
        for key in map(ModelName, MODEL_KEYS):
            if key not in bundle.manifest.models:
                continue
            if deployed_only and key != bundle.deployed_model:
                continue
            selector = FeatureSelector.from_json(bundle.model_params(key, "selector"))
            classifier = from_json(bundle.model_params(key, "classifier"))
            refs = bundle.manifest.models[key]
            pca = PCAParams.from_json(bundle.model_params(key, "pca")) if "pca" in refs else None
            self.models[key] = _Model(selector, classifier, pca)
        wanted = {n for m in self.models.values() for n in m.selector.selected_names}
        # The radiomics the bundle needs, in the stable 1,197-name order.
        self.radiomics_names = tuple(n for n in FEATURE_NAMES if n in wanted)
        self.needs_deep = any(m.pca is not None for m in self.models.values())
        self.backbone = build_resnet18(bundle.weights_path) if self.needs_deep else None
        # The bundle's own parameter files, not the package's: a bundle trained with
        # another radiomics file (or preprocessing) is served with what it was trained on.
        self.radiomics_params = load_params(bundle.radiomics_params_path)
        # The reference statistics the inputs are checked against (None: the bundle
        # predates them; hips are scored and say "no reference").
        self.reference = bundle.reference()
        recorded = bundle.preprocessing()
        deep_input = recorded.get("deep_input", {})
        if not isinstance(deep_input, dict):
            raise ConfigurationError(f"{bundle}: preprocessing.json deep_input is not an object")
        self.spec = FeatureSpec(
            radiomics=self.radiomics_names,
            deep=self.needs_deep,
            weights=bundle.weights_path,
            params_file=bundle.radiomics_params_path,
            threads=threads,
            # A bundle without a profile predates profiles: served as the paper's.
            preprocessing=Preprocessing.from_json(
                deep_input, NormalisationProfile.from_json(recorded)
            ),
        )

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        threads: int | None = None,
        hip_workers: int = 1,
        deployed_only: bool = False,
    ) -> BundleModel:
        """Verify and load the bundle in ``directory`` (raises a BundleError if unsound).

        ``threads``: torch threads per network pass; ``hip_workers``: hips of a study
        scored at once, each in its own thread (:meth:`predict`); ``deployed_only``: see
        the class.
        """
        return cls(
            load_bundle(directory),
            threads=threads,
            hip_workers=hip_workers,
            deployed_only=deployed_only,
        )

    @property
    def deployed_model(self) -> ModelName:
        return ModelName(self.bundle.deployed_model)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def features(self, series: LoadedSeries, roi: HipROI) -> dict[str, float]:
        """The named features this bundle's models read, for one hip."""
        return hip_features(
            series, roi, self.spec, model=self.backbone, params=self.radiomics_params
        )

    def probabilities(self, values: dict[str, float]) -> dict[ModelName, float]:
        """Each model's probability of early ONFH from a hip's named features (recalibrated
        when the bundle is site-calibrated)."""
        out: dict[ModelName, float] = {}
        deep = np.array([[values[n] for n in DEEP_FEATURE_NAMES]]) if self.needs_deep else None
        for key, model in self.models.items():
            names = list(values)
            row = np.array([[values[n] for n in names]], dtype=np.float64)
            if model.pca is not None:
                assert deep is not None
                row = np.hstack([row, model.pca.transform(deep)])
                names += list(model.pca.names)
            z = model.selector.transform(row, names)
            p = float(positive_probability(model.classifier, z)[0])
            out[key] = p if self.recalibration is None else self.recalibration.apply(key, p)
        return out

    def model_inputs(
        self, values: dict[str, float], key: ModelName | None = None
    ) -> dict[str, float]:
        """The selected features of model ``key`` (default: the deployed one), unscaled.

        Radiomics by their PyRadiomics names; deep features as PCA components.
        """
        model = self.models[key or self.deployed_model]
        named = dict(values)
        if model.pca is not None:
            deep = np.array([[values[n] for n in DEEP_FEATURE_NAMES]], dtype=np.float64)
            named.update(zip(model.pca.names, model.pca.transform(deep)[0], strict=True))
        return {name: float(named[name]) for name in model.selector.selected_names}

    def check_acquisition(self, series: LoadedSeries) -> list[OutOfRange] | None:
        """The series' acquisition parameters outside the training series' range.

        Returns
        -------
        list of OutOfRange or None
            Empty when all are inside; ``None`` when the bundle has no reference.
        """
        if self.reference is None:
            return None
        return check_acquisition(self.reference, acquisition_of(series))

    def predict_hip(self, series: LoadedSeries, roi: HipROI) -> HipPrediction:
        """Score one hip, and check its inputs against the bundle's reference."""
        values = self.features(series, roi)
        probs = self.probabilities(values)
        p = probs[self.deployed_model]
        clipped = min(max(p, 1e-12), 1 - 1e-12)
        inputs = self.model_inputs(values)
        status = ReferenceStatus.NO_REFERENCE
        outside: tuple[OutOfRange, ...] = ()
        if self.reference is not None:
            status = ReferenceStatus.CHECKED
            outside = tuple(check_inputs(self.reference, acquisition_of(series), inputs))
        return HipPrediction(
            side=roi.side,
            probabilities=probs,
            deployed_model=self.deployed_model,
            probability=p,
            score=math.log(clipped / (1 - clipped)),
            threshold=self.threshold,
            call=int(p >= self.threshold),
            roi_source=roi.source,
            roi_description=roi.description,
            inputs=inputs,
            out_of_range=outside,
            reference_status=status,
        )

    def predict(self, series: LoadedSeries, rois: dict[Side, HipROI]) -> dict[Side, HipPrediction]:
        """Score every hip that has an ROI, up to ``hip_workers`` at once.

        The threads share the read-only series, bundle and network; each hip's features
        are computed from its own crops, so the results do not depend on the order in
        which they finish. The first error is raised after every hip has finished.
        """
        workers = min(self.hip_workers, len(rois))
        if workers <= 1:
            return {side: self.predict_hip(series, roi) for side, roi in rois.items()}
        with ThreadPoolExecutor(workers, thread_name_prefix="hip") as pool:
            futures = {
                side: pool.submit(self.predict_hip, series, roi) for side, roi in rois.items()
            }
        return {side: future.result() for side, future in futures.items()}


__all__ = ["BundleModel", "HipPrediction", "ModelName"]
