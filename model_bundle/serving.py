"""Scoring hips with a verified model bundle: what `evaluate`, `score` and the worker run.

:class:`BundleModel` loads a bundle (verified first, JSON and safetensors only), and
scores one hip from its series and ROI with exactly the feature code training used:
the selective radiomics run (only the features the bundle's models selected) and the
bundle's own ResNet18 weights, PCA, selectors and classifiers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.bundle import Bundle, load_bundle
from model_bundle.deep import DEEP_FEATURE_NAMES, build_resnet18, deep_features, deep_input
from model_bundle.features import preprocessed
from model_bundle.models import FeatureSelector, PCAParams, from_json, positive_probability
from model_bundle.radiomics import FEATURE_NAMES, extract_radiomics
from model_bundle.roi import HipROI, Side
from model_bundle.series import LoadedSeries
from model_bundle.training import MODEL_KEYS

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class HipPrediction:
    """The bundle's result for one hip."""

    side: Side
    probabilities: dict[str, float]  # per model key: rad, dl, dlr
    deployed_model: str
    probability: float  # of the deployed model
    score: float  # log-odds of ``probability`` (the linear score for logistic regression)
    threshold: float
    call: int  # 1: suspected early ONFH (probability >= threshold)
    roi_source: str
    roi_description: str


@dataclass(frozen=True)
class _Model:
    selector: FeatureSelector
    classifier: Any
    pca: PCAParams | None


class BundleModel:
    """A loaded bundle, ready to score hips."""

    def __init__(self, bundle: Bundle, *, threads: int | None = None) -> None:
        self.bundle = bundle
        self.threads = threads
        self.models: dict[str, _Model] = {}
        for key in MODEL_KEYS:
            if key not in bundle.manifest.models:
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

    @classmethod
    def load(cls, directory: Path, *, threads: int | None = None) -> BundleModel:
        """Verify and load the bundle in ``directory`` (raises a BundleError if unsound)."""
        return cls(load_bundle(directory), threads=threads)

    @property
    def deployed_model(self) -> str:
        return self.bundle.deployed_model

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def features(self, series: LoadedSeries, roi: HipROI) -> dict[str, float]:
        """The named features this bundle's models read, for one hip."""
        values: dict[str, float] = {}
        if self.radiomics_names:
            values.update(extract_radiomics(series.image, roi.mask, features=self.radiomics_names))
        if self.needs_deep:
            assert self.backbone is not None
            image, mask = preprocessed(series, roi)
            deep = deep_features(self.backbone, deep_input(image, mask), num_threads=self.threads)[
                0
            ]
            values.update(zip(DEEP_FEATURE_NAMES, (float(v) for v in deep), strict=True))
        return values

    def probabilities(self, values: dict[str, float]) -> dict[str, float]:
        """Each model's probability of early ONFH from a hip's named features."""
        out: dict[str, float] = {}
        deep = np.array([[values[n] for n in DEEP_FEATURE_NAMES]]) if self.needs_deep else None
        for key, model in self.models.items():
            names = list(values)
            row = np.array([[values[n] for n in names]], dtype=np.float64)
            if model.pca is not None:
                assert deep is not None
                row = np.hstack([row, model.pca.transform(deep)])
                names += list(model.pca.names)
            z = model.selector.transform(row, names)
            out[key] = float(positive_probability(model.classifier, z)[0])
        return out

    def predict_hip(self, series: LoadedSeries, roi: HipROI) -> HipPrediction:
        """Score one hip."""
        probs = self.probabilities(self.features(series, roi))
        p = probs[self.deployed_model]
        clipped = min(max(p, 1e-12), 1 - 1e-12)
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
        )

    def predict(self, series: LoadedSeries, rois: dict[Side, HipROI]) -> dict[Side, HipPrediction]:
        """Score every hip that has an ROI."""
        return {side: self.predict_hip(series, roi) for side, roi in rois.items()}


__all__ = ["BundleModel", "HipPrediction"]
