"""The paper's eight classifiers: construction with defaults meant for small tabular data, the
probability of class 1, and the cross-validated AUC that compares them.

:data:`CLASSIFIERS` names the classifiers the source paper compares with 5-fold
cross-validation. :func:`make_classifier` builds each (a few hundred hips, at most 30
z-scored features, see :mod:`model_bundle.models.selection`); :func:`cross_validate_auc`
scores one with stratified folds. Every estimator gets ``seed`` where it has randomness
and runs single-threaded, so results are the same for a seed.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import lightgbm as lgb
import numpy as np
import xgboost as xgb
from numpy.typing import ArrayLike, NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from onfh_dlr.errors import ClassifierError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


#: The classifiers the source paper compares, in its order.
CLASSIFIERS: Final[tuple[str, ...]] = (
    "LR",
    "SVM",
    "KNN",
    "RandomForest",
    "ExtraTrees",
    "XGBoost",
    "LightGBM",
    "MLP",
)
#: ``format`` value of a classifier's JSON; ``version`` changes with incompatible changes.
CLASSIFIER_FORMAT: Final = "onfh-dlr/classifier"
_VERSION: Final = 1
_CLASSES: Final = (0, 1)
#: Inner folds of the SVM's Platt calibration.
_SVM_CALIBRATION_FOLDS: Final = 5


class ProbabilisticClassifier(Protocol):
    """A fitted or loaded binary classifier: class labels and their probabilities."""

    @property
    def classes_(self) -> NDArray[Any]:
        """Class labels, the column order of :meth:`predict_proba`."""
        ...

    def predict_proba(self, X: F64, /) -> NDArray[Any]:
        """Probabilities of shape (n_samples, n_classes)."""
        ...


class FittableClassifier(ProbabilisticClassifier, Protocol):
    """An unfitted estimator as :func:`make_classifier` returns it."""

    def fit(self, X: F64, y: I64, /) -> Any:
        """Fit to training rows and 0/1 labels; returns the estimator."""
        ...


# --- construction and cross-validation ---------------------------------------------------


def make_classifier(name: str, seed: int = 0) -> FittableClassifier:
    """A new, unfitted classifier with this project's defaults.

    Parameters
    ----------
    name : str
        One of :data:`CLASSIFIERS`.
    seed : int, default 0
        Seed of every random choice the estimator makes.

    Returns
    -------
    FittableClassifier
        A scikit-learn (or XGBoost / LightGBM scikit-learn API) estimator.

    Raises
    ------
    ClassifierError
        If ``name`` is not one of :data:`CLASSIFIERS`.

    Notes
    -----
    Defaults, chosen for a few hundred rows of at most 30 z-scored features:

    * LR: L2-penalised, ``C=1``, lbfgs (scikit-learn's defaults; enough iterations).
    * SVM: RBF kernel, ``C=1``, ``gamma="scale"``, Platt-scaled (see the module notes).
    * KNN: 9 neighbours (about the square root of the training size), uniform weights,
      Euclidean, brute-force search (exact and fast at this size).
    * RandomForest / ExtraTrees: 300 trees, ``min_samples_leaf=2`` for smoother
      probabilities and smaller bundles.
    * XGBoost: 200 rounds of depth-3 trees, learning rate 0.05, row and column
      subsampling 0.8, ``hist``.
    * LightGBM: 200 rounds, 15 leaves, learning rate 0.05, at least 5 rows per leaf (the
      default 20 is too many for a small cohort), subsampling 0.8, deterministic mode.
    * MLP: one hidden layer of 32 ReLU units, lbfgs (recommended by scikit-learn for
      small data), a strong L2 penalty (``alpha=1``): the network has far more weights
      than there are training rows.
    """
    seed = int(seed)
    if name == "LR":
        return LogisticRegression(C=1.0, max_iter=10_000)
    if name == "SVM":
        return CalibratedClassifierCV(
            SVC(kernel="rbf", C=1.0, gamma="scale"),
            method="sigmoid",
            cv=StratifiedKFold(n_splits=_SVM_CALIBRATION_FOLDS, shuffle=True, random_state=seed),
            ensemble=False,
        )
    if name == "KNN":
        return KNeighborsClassifier(
            n_neighbors=9, weights="uniform", algorithm="brute", metric="minkowski", p=2
        )
    if name == "RandomForest":
        return RandomForestClassifier(
            n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1
        )
    if name == "ExtraTrees":
        return ExtraTreesClassifier(
            n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1
        )
    if name == "XGBoost":
        return xgb.XGBClassifier(
            n_estimators=200,
            max_depth=3,
            learning_rate=0.05,
            subsample=0.8,
            colsample_bytree=0.8,
            tree_method="hist",
            random_state=seed,
            n_jobs=1,
        )
    if name == "LightGBM":
        return lgb.LGBMClassifier(
            n_estimators=200,
            num_leaves=15,
            learning_rate=0.05,
            min_child_samples=5,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=seed,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
    if name == "MLP":
        return MLPClassifier(
            hidden_layer_sizes=(32,),
            activation="relu",
            solver="lbfgs",
            alpha=1.0,
            max_iter=5_000,
            random_state=seed,
        )
    raise ClassifierError(f"unknown classifier {name!r}; expected one of {CLASSIFIERS}")


def positive_probability(model: ProbabilisticClassifier, X: ArrayLike) -> F64:
    """Probability of label 1 for each row.

    Parameters
    ----------
    model : ProbabilisticClassifier
        A fitted or loaded classifier whose classes are 0 and 1.
    X : array-like of shape (n_samples, n_features)
        Rows to score.

    Returns
    -------
    ndarray of shape (n_samples,)
        The ``predict_proba`` column of class 1.
    """
    classes = [int(c) for c in np.asarray(model.classes_)]
    if classes != list(_CLASSES):
        raise ClassifierError(f"expected classes [0, 1], the model has {classes}")
    proba = np.asarray(model.predict_proba(np.asarray(X, dtype=np.float64)), dtype=np.float64)
    return proba[:, 1]


def cross_validate_auc(
    name: str, X: ArrayLike, y: ArrayLike, folds: int = 5, seed: int = 0
) -> tuple[float, tuple[float, ...]]:
    """Stratified k-fold cross-validated ROC AUC of one classifier.

    Parameters
    ----------
    name : str
        One of :data:`CLASSIFIERS`.
    X : array-like of shape (n_samples, n_features)
        Training rows (already selected and z-scored features).
    y : array-like of shape (n_samples,)
        Labels, 0 or 1.
    folds : int, default 5
        Number of folds (the paper uses 5).
    seed : int, default 0
        Seed of the fold shuffle and of the classifier.

    Returns
    -------
    mean_auc : float
        Mean of the per-fold AUCs.
    per_fold : tuple of float
        AUC of each held-out fold, in fold order.

    Raises
    ------
    ClassifierError
        If the input is malformed or a class has fewer rows than ``folds``.

    Notes
    -----
    When ``X`` holds features selected on all of these rows (as in the paper), the
    estimate is optimistic: the selection has seen every held-out fold. Only a test set
    left out of the selection gives an unbiased estimate.
    """
    data, labels = _check_xy(X, y)
    if folds < 2:
        raise ClassifierError(f"folds must be at least 2, not {folds}")
    smaller = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    if smaller < folds:
        raise ClassifierError(
            f"{folds}-fold CV needs {folds} rows per class; one class has {smaller}"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    aucs: list[float] = []
    # The matrices are tiny: BLAS threads only add overhead, and on a busy machine they
    # spin and slow the MLP's thousands of small products by an order of magnitude.
    with threadpool_limits(limits=1):
        for train, test in splitter.split(data, labels):
            model = make_classifier(name, seed)
            model.fit(data[train], labels[train])
            proba = positive_probability(model, data[test])
            aucs.append(float(roc_auc_score(labels[test], proba)))
    return float(np.mean(aucs)), tuple(aucs)


def _check_xy(X: ArrayLike, y: ArrayLike) -> tuple[F64, I64]:
    data = np.asarray(X, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise ClassifierError(f"features must be a non-empty 2-D array, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ClassifierError("features must be finite")
    raw = np.asarray(y)
    if raw.shape != (data.shape[0],):
        raise ClassifierError(f"{raw.shape} labels for {data.shape[0]} rows")
    if not np.isin(raw, _CLASSES).all():
        raise ClassifierError("labels must be 0 or 1")
    return data, raw.astype(np.int64)


def _check_rows(X: ArrayLike, n_features: int) -> F64:
    """Rows to score: 2-D, finite, with the model's number of features."""
    data = np.asarray(X, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != n_features:
        raise ClassifierError(
            f"expected rows of {n_features} features, got an array of shape {data.shape}"
        )
    if not np.isfinite(data).all():
        raise ClassifierError("features must be finite")
    return data
