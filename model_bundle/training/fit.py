"""Training the Rad, DL and DLR models on a labelled cohort (the source paper's pipeline).

Every fitted step sees training data only:

1. split the patients 7:3, stratified by whether a patient has ONFH (seeded);
2. fine-tune ResNet18 on the training hips' network inputs, extract 512-d features
   for every hip, fit PCA on the training hips;
3. per model (Rad: radiomics, DL: deep PCA components, DLR: both) fit the selector
   (z-score, Mann-Whitney U, Pearson, mRMR, LASSO) on the training hips;
4. compare the eight classifiers by 5-fold CV AUC on the training hips, fit the chosen
   one on all of them;
5. fix each model's threshold by Youden's index on out-of-fold training probabilities;
6. only then score the test hips.

:func:`train_models` is the computation; :func:`~model_bundle.training.publish` writes it
out as a bundle, and :func:`~model_bundle.training.run_training` does both from a cohort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, train_test_split

from model_bundle.evaluation import youden_threshold
from model_bundle.features import (
    FEATURE_NAMES,
    NormalisationProfile,
    build_resnet18,
    deep_features,
)
from model_bundle.models import (
    CLASSIFIERS,
    FeatureSelector,
    PCAParams,
    cross_validate_auc,
    make_classifier,
    positive_probability,
)
from model_bundle.training.dataset import HipSample
from model_bundle.training.finetune import FineTuneConfig, FineTuneResult, fine_tune
from onfh_dlr.errors import ClassifierError, ConfigurationError

F64 = NDArray[np.float64]
ModelKey = Literal["rad", "dl", "dlr"]
MODEL_KEYS: tuple[ModelKey, ...] = ("rad", "dl", "dlr")


class TrainConfig(BaseModel):
    """Settings of a training run (YAML via ``--config``; defaults follow the paper)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=96, ge=2)
    learning_rate: float = Field(default=0.001, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    pretrained: Path | None = None  # a local torchvision ImageNet ResNet18 checkpoint
    # The PyRadiomics parameter file the features are computed with (None: the packaged
    # one); the bundle carries this very file, so serving computes the same features.
    radiomics_params: Path | None = None
    # Where each hip's intensity scale comes from (see NormalisationProfile): "hip" is
    # independent of the field of view and the scanner's scale; "paper" reproduces the
    # source paper's whole-image z-score.
    preprocessing_profile: NormalisationProfile = NormalisationProfile.HIP
    pca_variance: float = Field(default=0.95, gt=0, le=1)
    pca_max_components: int = Field(default=64, ge=1)
    p_threshold: float = Field(default=0.05, gt=0, le=1)
    correlation_threshold: float = Field(default=0.9, gt=0, le=1)
    max_features: int = Field(default=30, ge=1)
    lasso_folds: int = Field(default=10, ge=2)
    cv_folds: int = Field(default=5, ge=2)
    # "auto": the first in the paper's order (LR first) whose CV AUC is within one standard
    # error of the best (the one-standard-error rule); or a name from CLASSIFIERS.
    classifier: str = "auto"
    deployed_model: ModelKey = "dlr"
    weights_dtype: Literal["float32", "float16"] = "float16"
    threads: int | None = None


class TrainProbabilities(StrEnum):
    """Which probabilities of the training hips a set of training metrics describes.

    The value is what ``metrics.json`` records under ``train_probabilities``.
    """

    #: The final classifier's own probabilities on the hips it was fitted on.
    IN_SAMPLE = "in-sample"
    #: Cross-validated probabilities, each from a fit without that hip's fold (what the
    #: threshold is fixed on).
    OUT_OF_FOLD = "out-of-fold"


@dataclass
class ModelResult:
    """One of Rad, DL, DLR: its selection, classifiers and predictions."""

    key: ModelKey
    input_names: tuple[str, ...]
    selector: FeatureSelector
    cv_auc: dict[str, tuple[float, tuple[float, ...]]]  # classifier -> (mean, per fold)
    classifier_name: str
    classifier: Any
    threshold: float
    train_prob: F64  # in-sample
    train_oof_prob: F64  # out-of-fold, what the threshold was fitted on
    test_prob: F64
    test_prob_by_classifier: dict[str, F64] = field(default_factory=dict)
    skipped_classifiers: dict[str, str] = field(default_factory=dict)  # name -> why

    def train_probabilities(self, kind: TrainProbabilities) -> F64:
        """The training hips' probabilities of one kind."""
        return self.train_oof_prob if kind is TrainProbabilities.OUT_OF_FOLD else self.train_prob


@dataclass
class TrainingResult:
    """Everything a bundle and its report need."""

    config: TrainConfig
    samples: list[HipSample]  # every hip, usable or not
    train_idx: NDArray[np.intp]  # into the usable hips
    test_idx: NDArray[np.intp]
    usable: list[HipSample]
    y: NDArray[np.int64]  # labels of the usable hips
    backbone: Any  # torch.nn.Module, the fine-tuned ResNet18 (weights as shipped)
    finetune: FineTuneResult
    pca: PCAParams
    models: dict[ModelKey, ModelResult]
    # The usable hips' deep PCA components, (hips, components) in ``pca.names`` order:
    # the DL inputs the reference statistics describe.
    pca_features: F64 | None = None

    def split_of(self, i: int) -> str:
        return "train" if i in set(self.train_idx.tolist()) else "test"


def patient_split(
    samples: Sequence[HipSample], test_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices of training and test hips, split by patient, stratified by patient label."""
    patients = sorted({s.patient_id for s in samples})
    has_onfh = {p: 0 for p in patients}
    for s in samples:
        has_onfh[s.patient_id] = max(has_onfh[s.patient_id], s.label)
    strata = [has_onfh[p] for p in patients]
    if min(strata.count(0), strata.count(1)) < 2:
        raise ConfigurationError("training needs at least two patients with and two without ONFH")
    train_p, _ = train_test_split(
        patients, test_size=test_fraction, stratify=strata, random_state=seed
    )
    train_set = set(train_p)
    train = np.array([i for i, s in enumerate(samples) if s.patient_id in train_set], dtype=np.intp)
    test = np.array(
        [i for i, s in enumerate(samples) if s.patient_id not in train_set], dtype=np.intp
    )
    return train, test


def _fit_pca(deep_train: F64, config: TrainConfig) -> PCAParams:
    limit = min(config.pca_max_components, deep_train.shape[0] - 1, deep_train.shape[1])
    pca = PCA(n_components=limit, svd_solver="full", random_state=config.seed).fit(deep_train)
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    k = int(min(np.searchsorted(cumulative, config.pca_variance) + 1, limit))
    return PCAParams(
        np.asarray(pca.mean_, dtype=np.float64),
        np.asarray(pca.components_[:k], dtype=np.float64),
        np.asarray(pca.explained_variance_ratio_[:k], dtype=np.float64),
    )


def _oof_probabilities(name: str, X: F64, y: NDArray[np.int64], folds: int, seed: int) -> F64:
    """Out-of-fold probabilities of the training hips (for a threshold not fitted in-sample)."""
    oof = np.zeros(len(y), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held in splitter.split(X, y):
        model = make_classifier(name, seed)
        model.fit(X[fit_idx], y[fit_idx])
        oof[held] = positive_probability(model, X[held])
    return oof


def _choose(cv: dict[str, tuple[float, tuple[float, ...]]], wanted: str) -> str:
    if wanted != "auto":
        if wanted not in CLASSIFIERS:
            raise ConfigurationError(
                f"unknown classifier {wanted!r}; choose from {', '.join(CLASSIFIERS)}"
            )
        if wanted not in cv:
            raise ConfigurationError(f"classifier {wanted} could not be trained on this cohort")
        return wanted
    # The one-standard-error rule (Hastie, Tibshirani & Friedman, ESL 7.10): the first
    # classifier in the paper's order (LR first, then by growing flexibility) whose CV AUC
    # is within one standard error of the best. Eight CV AUCs of ~100-300 hips differ by
    # less than their noise, and the flexible classifiers that win by noise give coarse,
    # over-confident probabilities on another site (KNN, LightGBM: calibration slopes
    # 0.17-0.42 held out, bench/site_transfer_radiomics.py).
    best_name = max(cv, key=lambda name: cv[name][0])
    best, folds = cv[best_name]
    se = float(np.std(folds, ddof=1) / np.sqrt(len(folds))) if len(folds) > 1 else 0.0
    return next(name for name in CLASSIFIERS if name in cv and cv[name][0] >= best - se - 1e-9)


def fit_model(
    key: ModelKey,
    X: F64,
    names: Sequence[str],
    y: NDArray[np.int64],
    train: NDArray[np.intp],
    test: NDArray[np.intp],
    config: TrainConfig,
) -> ModelResult:
    """Selection, classifier comparison, final fit and threshold of one model."""
    selector = FeatureSelector(
        p_threshold=config.p_threshold,
        correlation_threshold=config.correlation_threshold,
        max_features=config.max_features,
        n_folds=config.lasso_folds,
        seed=config.seed,
    ).fit(X[train], y[train], list(names))
    z_train = selector.transform(X[train])
    z_test = selector.transform(X[test])
    folds = min(config.cv_folds, int(np.bincount(y[train]).min()))
    cv: dict[str, tuple[float, tuple[float, ...]]] = {}
    skipped: dict[str, str] = {}
    for name in CLASSIFIERS:
        try:
            cv[name] = cross_validate_auc(name, z_train, y[train], folds=folds, seed=config.seed)
        except (ClassifierError, ValueError) as exc:
            # A small cohort can be too small for a classifier (the SVM's Platt scaling
            # needs five hips of each class per fold); it drops out of the comparison.
            skipped[name] = str(exc)
    if not cv:
        raise ConfigurationError(f"{key}: no classifier could be cross-validated: {skipped}")
    chosen = _choose(cv, config.classifier)
    by_classifier: dict[str, F64] = {}
    final: Any = None
    for name in cv:
        model = make_classifier(name, config.seed)
        model.fit(z_train, y[train])
        by_classifier[name] = positive_probability(model, z_test)
        if name == chosen:
            final = model
    oof = _oof_probabilities(chosen, z_train, y[train], folds, config.seed)
    return ModelResult(
        key=key,
        input_names=tuple(names),
        selector=selector,
        cv_auc=cv,
        classifier_name=chosen,
        classifier=final,
        threshold=float(youden_threshold(y[train], oof)),
        train_prob=positive_probability(final, z_train),
        train_oof_prob=oof,
        test_prob=by_classifier[chosen],
        test_prob_by_classifier=by_classifier,
        skipped_classifiers=skipped,
    )


def _as_shipped(backbone: Any, dtype: str) -> None:
    """Round the weights to what the bundle will store, so what is measured is what ships."""
    if dtype == "float16":
        import torch

        with torch.no_grad():
            for tensor in backbone.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())


def train_models(
    samples: list[HipSample],
    config: TrainConfig,
    *,
    log: Callable[[str], None] = lambda _: None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainingResult:
    """Train Rad, DL and DLR on the usable hips of ``samples``.

    Raises
    ------
    ConfigurationError
        Too few usable hips or patients of a class to split and train.
    """
    usable = [s for s in samples if s.ok]
    if len(usable) < 8:
        raise ConfigurationError(f"only {len(usable)} usable hips: too few to train")
    y = np.array([s.label for s in usable], dtype=np.int64)
    train, test = patient_split(usable, config.test_fraction, config.seed)
    log(f"split: {len(train)} training hips, {len(test)} test hips (by patient)")
    inputs = np.stack([s.network_input for s in usable]).astype(np.float32)  # type: ignore[misc]
    rad = np.stack([s.radiomics for s in usable]).astype(np.float64)  # type: ignore[misc]

    backbone = build_resnet18(config.pretrained, seed=config.seed)
    ft = fine_tune(
        backbone,
        inputs[train],
        y[train],
        FineTuneConfig(
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            momentum=config.momentum,
            seed=config.seed,
            threads=config.threads,
        ),
        on_epoch=on_epoch,
    )
    _as_shipped(backbone, config.weights_dtype)
    deep = deep_features(backbone, inputs, num_threads=config.threads).astype(np.float64)
    pca = _fit_pca(deep[train], config)
    dl = pca.transform(deep)
    kept = float(pca.explained_variance_ratio.sum())
    log(f"deep features: 512 -> {len(pca.names)} PCA components ({kept:.0%} of the variance)")

    matrices: dict[ModelKey, tuple[F64, tuple[str, ...]]] = {
        "rad": (rad, tuple(FEATURE_NAMES)),
        "dl": (dl, pca.names),
        "dlr": (np.hstack([rad, dl]), (*FEATURE_NAMES, *pca.names)),
    }
    models: dict[ModelKey, ModelResult] = {}
    for key in MODEL_KEYS:
        X, names = matrices[key]
        models[key] = fit_model(key, X, names, y, train, test, config)
        m = models[key]
        log(
            f"{key}: {len(m.selector.selected_names)} features selected, "
            f"classifier {m.classifier_name} (CV AUC {m.cv_auc[m.classifier_name][0]:.3f}), "
            f"threshold {m.threshold:.3f}"
        )
    return TrainingResult(
        config, samples, train, test, usable, y, backbone, ft, pca, models, pca_features=dl
    )


def shape_leak(result: TrainingResult) -> dict[str, Any]:
    """How well the 14 shape features alone separate the classes (the lesion protocol's leak).

    A logistic regression on the z-scored ``original_shape_*`` radiomics, fitted on the
    training hips; its test AUC says how much of the paper's performance the ROI's
    shape alone explains when ONFH hips get a lesion ROI and healthy ones a head ROI.
    """
    from sklearn.linear_model import LogisticRegression

    from model_bundle.evaluation import roc_auc_delong

    columns = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith("original_shape_")]
    X = np.stack([s.radiomics for s in result.usable])[:, columns]  # type: ignore[misc]
    train, test, y = result.train_idx, result.test_idx, result.y
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0
    Z = (X - mean) / std
    model = LogisticRegression(max_iter=5000).fit(Z[train], y[train])
    out: dict[str, Any] = {"features": [FEATURE_NAMES[i] for i in columns]}
    for split, idx in (("train", train), ("test", test)):
        auc = roc_auc_delong(y[idx], model.predict_proba(Z[idx])[:, 1])
        out[f"{split}_auc"] = float(auc.auc)
        out[f"{split}_auc_ci95"] = [float(auc.ci_low), float(auc.ci_high)]
    return out
