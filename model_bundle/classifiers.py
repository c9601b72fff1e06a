"""The paper's eight classifiers, their cross-validated AUC, and JSON without pickle.

:data:`CLASSIFIERS` names the classifiers the source paper compares with 5-fold
cross-validation. :func:`make_classifier` builds each with defaults meant for small
tabular data (a few hundred hips, at most 30 z-scored features, see
:mod:`model_bundle.selection`); :func:`cross_validate_auc` scores one with stratified
folds. :func:`to_json` writes a fitted classifier as plain JSON data and
:func:`from_json` reads it back, for every one of the eight, without pickle: a model
bundle must never execute code when it is loaded. What is stored, and what
:func:`from_json` returns:

=============  =========================================  ================================
name           stored                                     loaded as
=============  =========================================  ================================
LR             coefficients, intercept                    :class:`LogisticModel`
SVM            support vectors, dual coefficients,        :class:`KernelSVMModel`
               intercept, kernel and its parameters,
               Platt sigmoid (a, b)
KNN            training rows and labels, parameters       a refitted scikit-learn
                                                          ``KNeighborsClassifier``
RandomForest,  every tree's node arrays (children,        :class:`TreeEnsembleModel`
ExtraTrees     feature, threshold, class fractions)
XGBoost        XGBoost's own JSON model (``save_raw``)    ``xgboost.XGBClassifier``
LightGBM       LightGBM's model text, parsed into         :class:`LightGBMModel`
               per-tree arrays (rebuilt as text on load)
MLP            weights, biases, activations               :class:`MLPModel`
=============  =========================================  ================================

The ``*Model`` classes are small numpy evaluators that repeat scikit-learn's arithmetic
operation for operation, so their probabilities equal the fitted estimator's bit for bit
(the SVM to about 1e-15: libsvm sums its kernel expansion in its own order). They do not
depend on scikit-learn internals, so a bundle outlives a scikit-learn upgrade, which a
pickle does not. KNN is refitted on its stored training rows instead, because its
probabilities depend on how the neighbour search breaks distance ties; the same search
on the same rows gives the same neighbours. Saving reads three private scikit-learn
attributes that have no public equivalent (``SVC._gamma``, the resolved ``"scale"``
gamma; ``KNeighborsClassifier._fit_X`` and ``._y``, the training rows); loading reads
none.

Loading validates everything before any native library sees it: shapes, finiteness,
index ranges and that every tree is a tree (children in range, no node reached twice).
XGBoost and LightGBM do not check this themselves: a child or feature index out of
range makes them read out of bounds and crash the process, and LightGBM aborts the
process on any malformed model text. For LightGBM the model text handed to
``lightgbm.Booster(model_str=...)`` is therefore never the stored text but one rebuilt
from the validated arrays. Every problem raises :class:`~onfh_dlr.errors.ClassifierError`.

Choices
-------
SVM probabilities
    scikit-learn 1.9 deprecates ``SVC(probability=True)`` (libsvm's internal
    cross-validated Platt scaling, removed in 1.11). The SVM is therefore
    ``CalibratedClassifierCV(SVC(), method="sigmoid", ensemble=False)``: an RBF SVC
    fitted on all training rows, and a Platt sigmoid fitted on its decision values from a
    stratified, shuffled 5-fold split seeded by ``seed``. SVC itself has no randomness
    when it does not estimate probabilities, so the result is deterministic for a seed.
    It needs at least 5 training rows of each class.
Determinism
    Every estimator gets ``seed`` where it has randomness and runs single-threaded
    (``n_jobs=1``): results are the same for a seed, and a forest's averaged
    probabilities are summed in tree order.
Labels
    Binary, 0/1; ``predict_proba`` columns follow ``classes_ == [0, 1]``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import lightgbm as lgb
import numpy as np
import xgboost as xgb
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit
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

__all__ = [
    "CLASSIFIERS",
    "CLASSIFIER_FORMAT",
    "FittableClassifier",
    "KernelSVMModel",
    "LightGBMModel",
    "LogisticModel",
    "MLPModel",
    "ProbabilisticClassifier",
    "TreeArrays",
    "TreeEnsembleModel",
    "classifier_name",
    "cross_validate_auc",
    "from_json",
    "make_classifier",
    "positive_probability",
    "to_json",
]

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


# --- the loaded models ----------------------------------------------------------------------


class _BinaryModel:
    """What every model loaded from JSON shares: it tells class 0 from class 1."""

    @property
    def classes_(self) -> I64:
        """Always ``[0, 1]``."""
        return np.array(_CLASSES, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class LogisticModel(_BinaryModel):
    """A loaded logistic regression (binary).

    Attributes
    ----------
    coef : ndarray of shape (1, n_features)
    intercept : ndarray of shape (1,)
    hyperparameters : dict
        Informational copy of the estimator's parameters at training time.
    """

    coef: F64
    intercept: F64
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features_in_(self) -> int:
        """Number of input features."""
        return int(self.coef.shape[1])

    def predict_proba(self, X: ArrayLike, /) -> F64:
        """Class probabilities, as ``LogisticRegression.predict_proba`` computes them."""
        data = _check_rows(X, self.n_features_in_)
        # scikit-learn: decision_function, then expit, then [1 - p, p].
        scores = (data @ self.coef.T + self.intercept).reshape(-1)
        prob = expit(scores)
        return np.stack([1 - prob, prob], axis=1)


_KERNELS: Final = ("linear", "poly", "rbf", "sigmoid")


@dataclass(frozen=True, eq=False)
class KernelSVMModel(_BinaryModel):
    """A loaded SVM with a Platt sigmoid on its decision function.

    Attributes
    ----------
    support_vectors : ndarray of shape (n_support, n_features)
    dual_coef : ndarray of shape (n_support,)
        Signed so that a positive decision value favours class 1 (scikit-learn's public
        ``dual_coef_``).
    intercept : float
    kernel : str
        ``"linear"``, ``"poly"``, ``"rbf"`` or ``"sigmoid"``.
    gamma, coef0 : float
    degree : int
    platt_a, platt_b : float
        ``P(class 1) = 1 / (1 + exp(a * decision + b))``.
    hyperparameters : dict
        Informational copy of the estimator's parameters at training time.
    """

    support_vectors: F64
    dual_coef: F64
    intercept: float
    kernel: str
    gamma: float
    coef0: float
    degree: int
    platt_a: float
    platt_b: float
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features_in_(self) -> int:
        """Number of input features."""
        return int(self.support_vectors.shape[1])

    def decision_function(self, X: ArrayLike) -> F64:
        """Signed distance to the separating surface (positive favours class 1)."""
        data = _check_rows(X, self.n_features_in_)
        sv = self.support_vectors
        if self.kernel == "rbf":
            gram = np.empty((data.shape[0], sv.shape[0]))
            # In row blocks, to bound the (rows, support vectors, features) temporary.
            for start in range(0, data.shape[0], 256):
                block = data[start : start + 256]
                sq = ((block[:, None, :] - sv[None, :, :]) ** 2).sum(axis=2)
                gram[start : start + 256] = np.exp(-self.gamma * sq)
        else:
            dot = data @ sv.T
            if self.kernel == "linear":
                gram = dot
            elif self.kernel == "poly":
                gram = (self.gamma * dot + self.coef0) ** self.degree
            else:
                gram = np.tanh(self.gamma * dot + self.coef0)
        return gram @ self.dual_coef + self.intercept

    def predict_proba(self, X: ArrayLike, /) -> F64:
        """Class probabilities, as ``CalibratedClassifierCV`` (sigmoid) computes them."""
        decision = self.decision_function(X)
        proba = np.zeros((decision.shape[0], 2))
        proba[:, 1] = expit(-(self.platt_a * decision + self.platt_b))
        proba[:, 0] = 1.0 - proba[:, 1]
        return proba


@dataclass(frozen=True, eq=False)
class TreeArrays:
    """One decision tree in scikit-learn's array layout.

    Attributes
    ----------
    children_left, children_right : ndarray of int, shape (n_nodes,)
        Child node indices; -1 at leaves.
    feature : ndarray of int, shape (n_nodes,)
        Split feature (ignored at leaves).
    threshold : ndarray of float, shape (n_nodes,)
        A row goes left when its (float32-rounded) feature value is ``<= threshold``.
    value : ndarray of shape (n_nodes, 2)
        Class fractions at each node (only leaves are used).
    """

    children_left: I64
    children_right: I64
    feature: I64
    threshold: F64
    value: F64

    def leaves(self, X32: NDArray[np.float32]) -> NDArray[np.intp]:
        """Leaf reached by each row (rows as float32, as scikit-learn's trees use them)."""
        node = np.zeros(X32.shape[0], dtype=np.intp)
        active = np.flatnonzero(self.children_left[node] != -1)
        while active.size:
            current = node[active]
            # float32 feature against float64 threshold: numpy compares in float64, as
            # scikit-learn's Cython code does.
            go_left = X32[active, self.feature[current]] <= self.threshold[current]
            following = np.where(go_left, self.children_left[current], self.children_right[current])
            node[active] = following
            active = active[self.children_left[following] != -1]
        return node


@dataclass(frozen=True, eq=False)
class TreeEnsembleModel(_BinaryModel):
    """A loaded random forest or extra-trees classifier.

    Attributes
    ----------
    name : str
        ``"RandomForest"`` or ``"ExtraTrees"``.
    trees : tuple of TreeArrays
    n_features : int
    hyperparameters : dict
        Informational copy of the estimator's parameters at training time.
    """

    name: str
    trees: tuple[TreeArrays, ...]
    n_features: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features_in_(self) -> int:
        """Number of input features."""
        return self.n_features

    def predict_proba(self, X: ArrayLike, /) -> F64:
        """Mean of the trees' leaf class fractions, summed in tree order as scikit-learn does."""
        data = _check_rows(X, self.n_features)
        X32 = data.astype(np.float32)
        proba = np.zeros((data.shape[0], 2))
        for tree in self.trees:
            proba += tree.value[tree.leaves(X32)]
        proba /= len(self.trees)
        return proba


# In place, like scikit-learn's ACTIVATIONS; the return value is ignored.
_HIDDEN_ACTIVATIONS: Final[dict[str, Callable[[F64], object]]] = {
    "identity": lambda a: None,
    "logistic": lambda a: expit(a, out=a),
    "tanh": lambda a: np.tanh(a, out=a),
    "relu": lambda a: np.maximum(a, 0, out=a),
}


@dataclass(frozen=True, eq=False)
class MLPModel(_BinaryModel):
    """A loaded multi-layer perceptron (binary, logistic output).

    Attributes
    ----------
    coefs : tuple of ndarray
        Weight matrices, layer ``i`` of shape (units in, units out).
    intercepts : tuple of ndarray
        Bias vectors.
    activation : str
        Hidden-layer activation (``identity``, ``logistic``, ``tanh``, ``relu``).
    hyperparameters : dict
        Informational copy of the estimator's parameters at training time.
    """

    coefs: tuple[F64, ...]
    intercepts: tuple[F64, ...]
    activation: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features_in_(self) -> int:
        """Number of input features."""
        return int(self.coefs[0].shape[0])

    def predict_proba(self, X: ArrayLike, /) -> F64:
        """Class probabilities, as ``MLPClassifier.predict_proba`` computes them."""
        activation = _check_rows(X, self.n_features_in_)
        hidden = _HIDDEN_ACTIVATIONS[self.activation]
        last = len(self.coefs) - 1
        # scikit-learn's _forward_pass_fast: matmul, add bias in place, activate in place.
        for i, (coef, bias) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            activation = activation @ coef
            activation += bias
            if i != last:
                hidden(activation)
        expit(activation, out=activation)
        out = activation.ravel()
        return np.vstack([1 - out, out]).T


@dataclass(frozen=True, eq=False)
class LightGBMModel(_BinaryModel):
    """A loaded LightGBM binary classifier.

    Attributes
    ----------
    booster : lightgbm.Booster
        Built from model text that :func:`from_json` rebuilt from validated arrays.
    model : dict
        The validated JSON form (kept so that :func:`to_json` can write it again).
    hyperparameters : dict
        Informational copy of the estimator's parameters at training time.
    """

    booster: lgb.Booster
    model: dict[str, Any]
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features_in_(self) -> int:
        """Number of input features."""
        return int(self.model["max_feature_idx"]) + 1

    def predict_proba(self, X: ArrayLike, /) -> F64:
        """Class probabilities, as ``LGBMClassifier.predict_proba`` computes them."""
        data = _check_rows(X, self.n_features_in_)
        result = self.booster.predict(data)
        if not isinstance(result, np.ndarray):
            raise ClassifierError("LightGBM returned no probability array")
        return np.vstack((1.0 - result, result)).transpose()


# --- to_json --------------------------------------------------------------------------------


def classifier_name(estimator: object) -> str:
    """Which of :data:`CLASSIFIERS` a fitted or loaded estimator is.

    Raises
    ------
    ClassifierError
        If it is none of them.
    """
    if isinstance(estimator, LogisticRegression | LogisticModel):
        return "LR"
    if isinstance(estimator, CalibratedClassifierCV | KernelSVMModel):
        return "SVM"
    if isinstance(estimator, KNeighborsClassifier):
        return "KNN"
    if isinstance(estimator, RandomForestClassifier):
        return "RandomForest"
    if isinstance(estimator, ExtraTreesClassifier):
        return "ExtraTrees"
    if isinstance(estimator, TreeEnsembleModel):
        return estimator.name
    if isinstance(estimator, xgb.XGBClassifier):
        return "XGBoost"
    if isinstance(estimator, lgb.LGBMClassifier | LightGBMModel):
        return "LightGBM"
    if isinstance(estimator, MLPClassifier | MLPModel):
        return "MLP"
    raise ClassifierError(f"not one of the supported classifiers: {type(estimator).__name__}")


def to_json(estimator: object) -> dict[str, Any]:
    """A fitted (or loaded) classifier as plain JSON data, without pickle.

    Parameters
    ----------
    estimator : object
        A fitted estimator from :func:`make_classifier` (or a compatible one of the same
        class), or a model returned by :func:`from_json`.

    Returns
    -------
    dict
        ``{"format", "version", "name", "n_features", "classes", "hyperparameters",
        "model"}``; only dicts, lists, strings, finite numbers, booleans and null, so
        :func:`json.dumps` works with ``allow_nan=False``. The layout of ``model``
        depends on ``name`` (see the module docstring).

    Raises
    ------
    ClassifierError
        If the estimator is unsupported, unfitted, not binary 0/1, or holds something
        the JSON form cannot represent (non-finite values, categorical splits).
    """
    name = classifier_name(estimator)
    if isinstance(estimator, LogisticModel | KernelSVMModel | TreeEnsembleModel | MLPModel):
        loaded = estimator
    elif isinstance(estimator, LightGBMModel):
        return _envelope(name, estimator.n_features_in_, estimator.hyperparameters, estimator.model)
    else:
        _check_fitted_classes(estimator)
        fitted: Any = estimator  # a scikit-learn API estimator
        hyper = _json_scalars(fitted.get_params())
        if name == "KNN":
            return _knn_to_json(fitted, hyper)
        if isinstance(estimator, xgb.XGBClassifier):
            return _xgboost_to_json(estimator, hyper)
        if isinstance(estimator, lgb.LGBMClassifier):
            model = _lightgbm_parse(estimator.booster_.model_to_string())
            return _envelope(name, int(model["max_feature_idx"]) + 1, hyper, model)
        loaded = _from_sklearn(name, fitted, hyper)
    return _loaded_to_json(name, loaded)


def _check_fitted_classes(estimator: object) -> None:
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise ClassifierError(f"{type(estimator).__name__} is not fitted")
    if [int(c) for c in np.asarray(classes)] != list(_CLASSES):
        raise ClassifierError(f"expected classes [0, 1], the estimator has {list(classes)}")


def _from_sklearn(name: str, est: Any, hyper: dict[str, Any]) -> Any:
    """Convert a fitted scikit-learn estimator to its loaded-model class."""
    if name == "LR":
        return LogisticModel(
            coef=np.asarray(est.coef_, dtype=np.float64),
            intercept=np.asarray(est.intercept_, dtype=np.float64),
            hyperparameters=hyper,
        )
    if name == "SVM":
        if est.method != "sigmoid" or len(est.calibrated_classifiers_) != 1:
            raise ClassifierError("only a sigmoid-calibrated SVC with ensemble=False can be stored")
        calibrated = est.calibrated_classifiers_[0]
        svc = calibrated.estimator
        if not isinstance(svc, SVC) or svc.kernel not in _KERNELS:
            raise ClassifierError("the calibrated estimator must be an SVC with a named kernel")
        (sigmoid,) = calibrated.calibrators
        return KernelSVMModel(
            support_vectors=np.asarray(svc.support_vectors_, dtype=np.float64),
            dual_coef=np.asarray(svc.dual_coef_, dtype=np.float64)[0],
            intercept=float(svc.intercept_[0]),
            kernel=str(svc.kernel),
            # The gamma in use ("scale" resolved on the training data) is only kept in
            # this private attribute; there is no public one.
            gamma=float(svc._gamma),
            coef0=float(svc.coef0),
            degree=int(svc.degree),
            platt_a=float(sigmoid.a_),
            platt_b=float(sigmoid.b_),
            hyperparameters=hyper,
        )
    if name in ("RandomForest", "ExtraTrees"):
        if est.n_outputs_ != 1:
            raise ClassifierError("only single-output forests can be stored")
        trees = []
        for member in est.estimators_:
            t = member.tree_
            value = np.asarray(t.value, dtype=np.float64)[:, 0, :]
            leaf = np.asarray(t.children_left) == -1
            sums = value[leaf].sum(axis=1)
            if not np.allclose(sums, 1.0, rtol=0.0, atol=1e-9):
                # scikit-learn < 1.4 stored weighted counts and normalised at predict time.
                value = value / np.where(value.sum(axis=1) > 0, value.sum(axis=1), 1.0)[:, None]
            trees.append(
                TreeArrays(
                    children_left=np.asarray(t.children_left, dtype=np.int64),
                    children_right=np.asarray(t.children_right, dtype=np.int64),
                    feature=np.asarray(t.feature, dtype=np.int64),
                    threshold=np.asarray(t.threshold, dtype=np.float64),
                    value=value,
                )
            )
        return TreeEnsembleModel(
            name=name, trees=tuple(trees), n_features=int(est.n_features_in_), hyperparameters=hyper
        )
    if name == "MLP":
        if est.out_activation_ != "logistic" or est.n_outputs_ != 1:
            raise ClassifierError("only a binary MLP with a logistic output can be stored")
        return MLPModel(
            coefs=tuple(np.asarray(c, dtype=np.float64) for c in est.coefs_),
            intercepts=tuple(np.asarray(b, dtype=np.float64) for b in est.intercepts_),
            activation=str(est.activation),
            hyperparameters=hyper,
        )
    raise ClassifierError(f"no scikit-learn conversion for {name}")  # pragma: no cover


def _loaded_to_json(name: str, m: object) -> dict[str, Any]:
    if isinstance(m, LogisticModel):
        model: dict[str, Any] = {
            "coef": _floats(m.coef, "coef"),
            "intercept": _floats(m.intercept, "intercept"),
        }
        # Validate what we write: a model that cannot be loaded must not be saved.
        _logistic_from_json(model, m.hyperparameters)
        return _envelope(name, m.n_features_in_, m.hyperparameters, model)
    if isinstance(m, KernelSVMModel):
        model = {
            "kernel": m.kernel,
            "gamma": m.gamma,
            "coef0": m.coef0,
            "degree": m.degree,
            "support_vectors": _floats(m.support_vectors, "support_vectors"),
            "dual_coef": _floats(m.dual_coef, "dual_coef"),
            "intercept": m.intercept,
            "platt_a": m.platt_a,
            "platt_b": m.platt_b,
        }
        _svm_from_json(model, m.hyperparameters)
        return _envelope(name, m.n_features_in_, m.hyperparameters, model)
    if isinstance(m, TreeEnsembleModel):
        model = {
            # The trees alone do not say how many features the forest was fitted on.
            "n_features": m.n_features,
            "trees": [
                {
                    "children_left": t.children_left.tolist(),
                    "children_right": t.children_right.tolist(),
                    "feature": t.feature.tolist(),
                    "threshold": _floats(t.threshold, "threshold"),
                    "value": _floats(t.value, "value"),
                }
                for t in m.trees
            ],
        }
        _trees_from_json(name, model, m.n_features, m.hyperparameters)
        return _envelope(name, m.n_features, m.hyperparameters, model)
    if isinstance(m, MLPModel):
        model = {
            "activation": m.activation,
            "out_activation": "logistic",
            "coefs": [_floats(c, "coefs") for c in m.coefs],
            "intercepts": [_floats(b, "intercepts") for b in m.intercepts],
        }
        _mlp_from_json(model, m.hyperparameters)
        return _envelope(name, m.n_features_in_, m.hyperparameters, model)
    raise ClassifierError(f"cannot write {type(m).__name__}")  # pragma: no cover


def _knn_to_json(est: Any, hyper: dict[str, Any]) -> dict[str, Any]:
    if est.metric_params is not None or not isinstance(est.metric, str):
        raise ClassifierError("KNN with a callable metric or metric_params cannot be stored")
    if not isinstance(est.weights, str):
        raise ClassifierError("KNN with callable weights cannot be stored")
    # The training rows are kept in private attributes only (_fit_X, and _y as indices
    # into classes_); there is no public accessor.
    X_train = np.asarray(est._fit_X, dtype=np.float64)
    y_train = np.asarray(est.classes_)[np.asarray(est._y)].astype(np.int64)
    model = {
        "params": {
            "n_neighbors": int(est.n_neighbors),
            "weights": str(est.weights),
            "algorithm": str(est.algorithm),
            "leaf_size": int(est.leaf_size),
            "p": _finite(float(est.p), "p"),
            "metric": str(est.metric),
        },
        "X": _floats(X_train, "X"),
        "y": y_train.tolist(),
    }
    _knn_check(model)
    return _envelope("KNN", int(X_train.shape[1]), hyper, model)


def _xgboost_to_json(est: xgb.XGBClassifier, hyper: dict[str, Any]) -> dict[str, Any]:
    raw = est.get_booster().save_raw(raw_format="json")
    try:
        model = json.loads(raw)
    except ValueError as exc:  # NaN/Infinity are not JSON
        raise ClassifierError(f"XGBoost wrote a model that is not plain JSON: {exc}") from exc
    n_features = int(est.n_features_in_)
    _xgboost_check(model, n_features)
    return _envelope("XGBoost", n_features, hyper, {"xgboost_json": model})


def _envelope(
    name: str, n_features: int, hyper: Mapping[str, Any], model: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": CLASSIFIER_FORMAT,
        "version": _VERSION,
        "name": name,
        "n_features": int(n_features),
        "classes": list(_CLASSES),
        "hyperparameters": dict(hyper),
        "model": model,
    }


def _json_scalars(params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-representable scalar parameters (the rest is informational anyway)."""
    out: dict[str, Any] = {}
    for key, value in sorted(params.items()):
        if value is None or isinstance(value, str | bool | int | float):
            if not isinstance(value, float) or math.isfinite(value):
                out[str(key)] = value
        elif isinstance(value, tuple | list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            out[str(key)] = list(value)
    return out


def _floats(a: NDArray[Any], what: str) -> Any:
    arr = np.asarray(a, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ClassifierError(f"{what} holds non-finite values")
    return arr.tolist()


def _finite(v: float, what: str) -> float:
    if not math.isfinite(v):
        raise ClassifierError(f"{what} is not finite")
    return v


# --- from_json ------------------------------------------------------------------------------


def from_json(data: Mapping[str, Any]) -> ProbabilisticClassifier:
    """Rebuild a classifier from :func:`to_json` output, validating it first.

    Parameters
    ----------
    data : mapping
        Parsed JSON (e.g. from :func:`json.load`). Nothing in it is executed.

    Returns
    -------
    ProbabilisticClassifier
        A model whose ``predict_proba`` equals that of the estimator that was saved
        (see the module docstring for the class per name).

    Raises
    ------
    ClassifierError
        If the data are not a classifier of this format and version, or anything in
        them is malformed or inconsistent (shapes, index ranges, non-finite numbers).
    """
    if not isinstance(data, Mapping):
        raise ClassifierError("a classifier must be a JSON object")
    if data.get("format") != CLASSIFIER_FORMAT or data.get("version") != _VERSION:
        raise ClassifierError(
            f"not a classifier of format {CLASSIFIER_FORMAT!r} version {_VERSION}: "
            f"format={data.get('format')!r} version={data.get('version')!r}"
        )
    name = data.get("name")
    if name not in CLASSIFIERS:
        raise ClassifierError(f"unknown classifier {name!r}; expected one of {CLASSIFIERS}")
    n_features = data.get("n_features")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ClassifierError("n_features must be a positive integer")
    if data.get("classes") != list(_CLASSES):
        raise ClassifierError("classes must be [0, 1]")
    hyper = data.get("hyperparameters")
    if not isinstance(hyper, dict):
        raise ClassifierError("hyperparameters must be a JSON object")
    model = data.get("model")
    if not isinstance(model, Mapping):
        raise ClassifierError("model must be a JSON object")

    loaded: Any
    if name == "LR":
        loaded = _logistic_from_json(model, hyper)
    elif name == "SVM":
        loaded = _svm_from_json(model, hyper)
    elif name == "KNN":
        loaded = _knn_from_json(model)
    elif name in ("RandomForest", "ExtraTrees"):
        loaded = _trees_from_json(name, model, n_features, hyper)
    elif name == "XGBoost":
        loaded = _xgboost_from_json(model, n_features)
    elif name == "LightGBM":
        loaded = _lightgbm_from_json(model, hyper)
    else:
        loaded = _mlp_from_json(model, hyper)
    if int(loaded.n_features_in_) != n_features:
        raise ClassifierError(
            f"n_features is {n_features} but the {name} model takes {loaded.n_features_in_}"
        )
    return loaded


def _array(obj: Mapping[str, Any], key: str, ndim: int, *, integer: bool = False) -> Any:
    """A nested JSON list as a rectangular numeric array of ``ndim`` dimensions."""
    value = obj.get(key)
    if not isinstance(value, list):
        raise ClassifierError(f"{key!r} must be a JSON array")
    try:
        arr = np.array(value)
    except ValueError as exc:  # ragged nesting
        raise ClassifierError(f"{key!r} is not a rectangular array") from exc
    if arr.ndim != ndim and not (arr.size == 0 and ndim == 1):
        raise ClassifierError(f"{key!r} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64 if integer else np.float64).reshape((0,) * ndim)
    # numpy turns true/false among numbers into 1/0, and integers beyond int64 into
    # uint64 (which would wrap on conversion): both are rejected, not reinterpreted.
    if ndim == 1 and any(isinstance(v, bool) for v in value):
        raise ClassifierError(f"{key!r} must hold numbers, not booleans")
    kinds = "i" if integer else "if"
    if arr.dtype.kind not in kinds:
        what = "integers" if integer else "numbers"
        raise ClassifierError(f"{key!r} must hold only {what}")
    if integer:
        return arr.astype(np.int64)
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ClassifierError(f"{key!r} holds non-finite values")
    return out


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClassifierError(f"{key!r} must be a finite number")
    return float(value)


def _integer(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClassifierError(f"{key!r} must be an integer")
    return value


def _logistic_from_json(model: Mapping[str, Any], hyper: dict[str, Any]) -> LogisticModel:
    coef = _array(model, "coef", 2)
    intercept = _array(model, "intercept", 1)
    if coef.shape[0] != 1 or coef.shape[1] < 1 or intercept.shape != (1,):
        raise ClassifierError(
            f"LR needs coef of shape (1, n_features) and one intercept, got {coef.shape} "
            f"and {intercept.shape}"
        )
    return LogisticModel(coef=coef, intercept=intercept, hyperparameters=hyper)


def _svm_from_json(model: Mapping[str, Any], hyper: dict[str, Any]) -> KernelSVMModel:
    kernel = model.get("kernel")
    if kernel not in _KERNELS:
        raise ClassifierError(f"SVM kernel must be one of {_KERNELS}, not {kernel!r}")
    sv = _array(model, "support_vectors", 2)
    dual = _array(model, "dual_coef", 1)
    if sv.shape[0] < 1 or sv.shape[1] < 1 or dual.shape != (sv.shape[0],):
        raise ClassifierError(
            f"SVM needs one dual coefficient per support vector, got {dual.shape} for "
            f"support vectors of shape {sv.shape}"
        )
    degree = _integer(model, "degree")
    gamma = _number(model, "gamma")
    if gamma <= 0 or degree < 0:
        raise ClassifierError("SVM gamma must be positive and degree non-negative")
    return KernelSVMModel(
        support_vectors=sv,
        dual_coef=dual,
        intercept=_number(model, "intercept"),
        kernel=str(kernel),
        gamma=gamma,
        coef0=_number(model, "coef0"),
        degree=degree,
        platt_a=_number(model, "platt_a"),
        platt_b=_number(model, "platt_b"),
        hyperparameters=hyper,
    )


_KNN_WEIGHTS: Final = ("uniform", "distance")
_KNN_ALGORITHMS: Final = ("auto", "ball_tree", "kd_tree", "brute")
_KNN_METRICS: Final = ("minkowski", "euclidean", "manhattan", "chebyshev")


def _knn_check(model: Mapping[str, Any]) -> tuple[dict[str, Any], F64, I64]:
    params = model.get("params")
    if not isinstance(params, Mapping) or set(params) != {
        "n_neighbors",
        "weights",
        "algorithm",
        "leaf_size",
        "p",
        "metric",
    }:
        raise ClassifierError(
            "KNN params must hold exactly n_neighbors, weights, algorithm, leaf_size, p, metric"
        )
    X = _array(model, "X", 2)
    y = _array(model, "y", 1, integer=True)
    if X.shape[0] < 1 or X.shape[1] < 1 or y.shape != (X.shape[0],):
        raise ClassifierError(f"KNN needs one label per training row, got {y.shape} for {X.shape}")
    if not np.isin(y, _CLASSES).all() or np.unique(y).size != 2:
        raise ClassifierError("KNN training labels must be 0 and 1, both present")
    n_neighbors = _integer(params, "n_neighbors")
    leaf_size = _integer(params, "leaf_size")
    p = _number(params, "p")
    if not 1 <= n_neighbors <= X.shape[0] or leaf_size < 1 or p < 1:
        raise ClassifierError(
            f"KNN needs 1 <= n_neighbors <= {X.shape[0]}, leaf_size >= 1 and p >= 1"
        )
    if (
        params["weights"] not in _KNN_WEIGHTS
        or params["algorithm"] not in _KNN_ALGORITHMS
        or params["metric"] not in _KNN_METRICS
    ):
        raise ClassifierError(
            f"KNN weights, algorithm and metric must be among {_KNN_WEIGHTS}, "
            f"{_KNN_ALGORITHMS} and {_KNN_METRICS}"
        )
    clean = {
        "n_neighbors": n_neighbors,
        "weights": str(params["weights"]),
        "algorithm": str(params["algorithm"]),
        "leaf_size": leaf_size,
        "p": p,
        "metric": str(params["metric"]),
    }
    return clean, X, y


def _knn_from_json(model: Mapping[str, Any]) -> Any:
    params, X, y = _knn_check(model)
    return KNeighborsClassifier(**params).fit(X, y)


def _check_binary_tree(left: I64, right: I64, what: str) -> None:
    """Children in range, leaves marked -1 on both sides, every node reached exactly once."""
    n = left.shape[0]
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise ClassifierError(f"{what}: a node has exactly one child")
    internal = ~leaf
    for side in (left, right):
        if ((side[internal] < 1) | (side[internal] >= n)).any():
            raise ClassifierError(f"{what}: a child index is out of range")
    seen = np.zeros(n, dtype=bool)
    stack = [0]
    while stack:
        node = stack.pop()
        if seen[node]:
            raise ClassifierError(f"{what}: node {node} is reached twice (not a tree)")
        seen[node] = True
        if not leaf[node]:
            stack.extend((int(left[node]), int(right[node])))
    if not seen.all():
        raise ClassifierError(f"{what}: {int((~seen).sum())} nodes are unreachable")


def _trees_from_json(
    name: str, model: Mapping[str, Any], n_features: int, hyper: dict[str, Any]
) -> TreeEnsembleModel:
    if _integer(model, "n_features") != n_features:
        raise ClassifierError(
            f"n_features is {n_features} but the {name} model takes {model['n_features']}"
        )
    items = model.get("trees")
    if not isinstance(items, list) or not items:
        raise ClassifierError(f"{name} needs a non-empty list of trees")
    trees = []
    for i, item in enumerate(items):
        what = f"{name} tree {i}"
        if not isinstance(item, Mapping):
            raise ClassifierError(f"{what} must be a JSON object")
        left = _array(item, "children_left", 1, integer=True)
        right = _array(item, "children_right", 1, integer=True)
        feature = _array(item, "feature", 1, integer=True)
        threshold = _array(item, "threshold", 1)
        value = _array(item, "value", 2)
        n = left.shape[0]
        if (
            n < 1
            or any(a.shape != (n,) for a in (right, feature, threshold))
            or (value.shape != (n, 2))
        ):
            raise ClassifierError(
                f"{what}: node arrays must all have {n} entries and value shape ({n}, 2)"
            )
        _check_binary_tree(left, right, what)
        internal = left != -1
        if ((feature[internal] < 0) | (feature[internal] >= n_features)).any():
            raise ClassifierError(f"{what}: a split feature is out of range")
        if (value < 0).any():
            raise ClassifierError(f"{what}: negative class fractions")
        trees.append(TreeArrays(left, right, feature, threshold, value))
    return TreeEnsembleModel(
        name=name, trees=tuple(trees), n_features=n_features, hyperparameters=hyper
    )


def _mlp_from_json(model: Mapping[str, Any], hyper: dict[str, Any]) -> MLPModel:
    activation = model.get("activation")
    if not isinstance(activation, str) or activation not in _HIDDEN_ACTIVATIONS:
        raise ClassifierError(f"MLP activation must be one of {sorted(_HIDDEN_ACTIVATIONS)}")
    if model.get("out_activation") != "logistic":
        raise ClassifierError("MLP out_activation must be 'logistic' (binary)")
    raw_coefs = model.get("coefs")
    raw_bias = model.get("intercepts")
    if not isinstance(raw_coefs, list) or not isinstance(raw_bias, list):
        raise ClassifierError("MLP coefs and intercepts must be JSON arrays")
    if not raw_coefs or len(raw_coefs) != len(raw_bias):
        raise ClassifierError("MLP needs one intercept vector per weight matrix")
    coefs = tuple(_array({"coefs": c}, "coefs", 2) for c in raw_coefs)
    biases = tuple(_array({"intercepts": b}, "intercepts", 1) for b in raw_bias)
    width = coefs[0].shape[0]
    if width < 1:
        raise ClassifierError("MLP input layer is empty")
    for i, (c, b) in enumerate(zip(coefs, biases, strict=True)):
        if c.shape[0] != width or c.shape[1] < 1 or b.shape != (c.shape[1],):
            raise ClassifierError(
                f"MLP layer {i}: weights {c.shape} and bias {b.shape} do not follow a layer "
                f"of {width} units"
            )
        width = c.shape[1]
    if width != 1:
        raise ClassifierError(f"a binary MLP has one output unit, not {width}")
    return MLPModel(
        coefs=coefs, intercepts=biases, activation=str(activation), hyperparameters=hyper
    )


# --- XGBoost: validate the model JSON before XGBoost reads it -------------------------------


# XGBoost's "no parent" marker (the largest int32).
_XGB_NO_PARENT: Final = 2147483647
_XGB_TREE_INTS: Final = (
    "left_children",
    "right_children",
    "parents",
    "split_indices",
    "split_type",
)
_XGB_TREE_FLOATS: Final = ("split_conditions", "base_weights", "loss_changes", "sum_hessian")
_XGB_CATEGORY_KEYS: Final = (
    "categories",
    "categories_nodes",
    "categories_segments",
    "categories_sizes",
)
_XGB_NUMBER: Final = re.compile(r"\[?\s*[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?\s*\]?")


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            raise ClassifierError(f"XGBoost model lacks {'.'.join(path)}")
        obj = obj[key]
    return obj


def _int_text(value: Any, what: str) -> int:
    """XGBoost writes model parameters as decimal strings."""
    if not isinstance(value, str) or not value.isdigit():
        raise ClassifierError(f"XGBoost {what} must be a decimal string, not {value!r}")
    return int(value)


def _xgboost_check(model: Any, n_features: int) -> None:
    """Validate the parts of an XGBoost JSON model its loader trusts blindly."""
    learner = _get(model, "learner")
    if _get(learner, "objective", "name") != "binary:logistic":
        raise ClassifierError("XGBoost objective must be binary:logistic")
    params = _get(learner, "learner_model_param")
    if _int_text(_get(params, "num_feature"), "num_feature") != n_features:
        raise ClassifierError(f"XGBoost num_feature is not {n_features}")
    if _int_text(_get(params, "num_class"), "num_class") != 0:
        raise ClassifierError("XGBoost model must be binary (num_class 0)")
    if _int_text(params.get("num_target", "1"), "num_target") != 1:
        raise ClassifierError("XGBoost model must have one target")
    base_score = _get(params, "base_score")
    if not isinstance(base_score, str) or not _XGB_NUMBER.fullmatch(base_score):
        raise ClassifierError(f"XGBoost base_score {base_score!r} is not a number")
    feature_types = learner.get("feature_types", [])
    if not isinstance(feature_types, list) or "c" in feature_types:
        raise ClassifierError("XGBoost categorical features are not supported")
    booster = _get(learner, "gradient_booster")
    if _get(booster, "name") != "gbtree":
        raise ClassifierError("XGBoost booster must be gbtree")
    gbm = _get(booster, "model")
    trees = _get(gbm, "trees")
    if not isinstance(trees, list) or not trees:
        raise ClassifierError("XGBoost model has no trees")
    gbparams = _get(gbm, "gbtree_model_param")
    if _int_text(_get(gbparams, "num_trees"), "num_trees") != len(trees):
        raise ClassifierError("XGBoost num_trees does not match the trees")
    if _int_text(_get(gbparams, "num_parallel_tree"), "num_parallel_tree") != 1:
        raise ClassifierError("XGBoost num_parallel_tree must be 1")
    tree_info = _get(gbm, "tree_info")
    if tree_info != [0] * len(trees):
        raise ClassifierError("XGBoost tree_info must be one 0 per tree (binary)")
    indptr = gbm.get("iteration_indptr")
    if indptr is not None and (
        not isinstance(indptr, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in indptr)
        or indptr[:1] != [0]
        or indptr[-1:] != [len(trees)]
        or any(b < a for a, b in itertools.pairwise(indptr))
    ):
        raise ClassifierError("XGBoost iteration_indptr is inconsistent with the trees")
    cats = gbm.get("cats")
    if cats is not None and (
        not isinstance(cats, Mapping) or any(v not in ([], None, {}) for v in cats.values())
    ):
        raise ClassifierError("XGBoost categorical data are not supported")
    for i, tree in enumerate(trees):
        _xgboost_check_tree(tree, i, n_features)


def _xgboost_check_tree(tree: Any, i: int, n_features: int) -> None:
    what = f"XGBoost tree {i}"
    if not isinstance(tree, Mapping):
        raise ClassifierError(f"{what} must be a JSON object")
    if tree.get("id") != i:
        raise ClassifierError(f"{what} has id {tree.get('id')!r}")
    param = _get(tree, "tree_param")
    n = _int_text(_get(param, "num_nodes"), "num_nodes")
    if n < 1:
        raise ClassifierError(f"{what} has no nodes")
    if _int_text(_get(param, "num_deleted"), "num_deleted") != 0:
        raise ClassifierError(f"{what} has deleted nodes (not supported)")
    if _int_text(_get(param, "num_feature"), "num_feature") != n_features:
        raise ClassifierError(f"{what} num_feature is not {n_features}")
    if _int_text(_get(param, "size_leaf_vector"), "size_leaf_vector") > 1:
        raise ClassifierError(f"{what} has vector leaves (not supported)")
    arrays = {k: _array(tree, k, 1, integer=True) for k in _XGB_TREE_INTS}
    for k in _XGB_TREE_FLOATS:
        arrays[k] = _array(tree, k, 1)
    default_left = tree.get("default_left")
    if not isinstance(default_left, list) or any(v not in (0, 1) for v in default_left):
        raise ClassifierError(f"{what}: default_left must hold 0/1")
    if any(a.shape != (n,) for a in arrays.values()) or len(default_left) != n:
        raise ClassifierError(f"{what}: node arrays must all have {n} entries")
    for k in _XGB_CATEGORY_KEYS:
        if tree.get(k, []) != []:
            raise ClassifierError(f"{what}: categorical splits are not supported")
    if (arrays["split_type"] != 0).any():
        raise ClassifierError(f"{what}: categorical splits are not supported")
    left, right = arrays["left_children"], arrays["right_children"]
    _check_binary_tree(left, right, what)
    parents = arrays["parents"]
    if parents[0] != _XGB_NO_PARENT:
        raise ClassifierError(f"{what}: the root has a parent")
    internal = np.flatnonzero(left != -1)
    if (parents[left[internal]] != internal).any() or (parents[right[internal]] != internal).any():
        raise ClassifierError(f"{what}: parents do not match children")
    split = arrays["split_indices"]
    if ((split < 0) | (split >= n_features)).any():
        raise ClassifierError(f"{what}: a split feature is out of range")


def _xgboost_from_json(model: Mapping[str, Any], n_features: int) -> xgb.XGBClassifier:
    inner = model.get("xgboost_json")
    _xgboost_check(inner, n_features)
    text = json.dumps(inner, allow_nan=False)
    classifier = xgb.XGBClassifier(n_jobs=1)
    try:
        classifier.load_model(bytearray(text.encode("utf-8")))
    except (xgb.core.XGBoostError, ValueError, KeyError, TypeError) as exc:
        raise ClassifierError(f"XGBoost cannot load the model: {exc}") from exc
    return classifier


# --- LightGBM: model text <-> validated arrays -----------------------------------------------

# Keys of a tree in LightGBM's model text (v4), in the order LightGBM writes them.
_LGB_TREE_KEYS: Final = (
    "num_leaves",
    "num_cat",
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "leaf_value",
    "leaf_weight",
    "leaf_count",
    "internal_value",
    "internal_weight",
    "internal_count",
    "is_linear",
    "shrinkage",
)
_LGB_SCALARS: Final = frozenset({"num_leaves", "num_cat", "is_linear", "shrinkage"})
_LGB_INTS: Final = frozenset(
    {
        "num_leaves",
        "num_cat",
        "split_feature",
        "decision_type",
        "left_child",
        "right_child",
        "leaf_count",
        "internal_count",
        "is_linear",
    }
)
# Arrays with one entry per internal node; the others (leaf_*) have one per leaf.
_LGB_INTERNAL: Final = frozenset(
    {
        "split_feature",
        "split_gain",
        "threshold",
        "decision_type",
        "left_child",
        "right_child",
        "internal_value",
        "internal_weight",
        "internal_count",
    }
)
_LGB_HEADER_FIXED: Final = {
    "version": "v4",
    "num_class": "1",
    "num_tree_per_iteration": "1",
    "label_index": "0",
}
_LGB_OBJECTIVE: Final = re.compile(r"binary sigmoid:[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_LGB_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_LGB_INFO: Final = re.compile(r"none|\[([^:\[\]\s]+):([^:\[\]\s]+)\]")


def _lightgbm_parse(text: str) -> dict[str, Any]:
    """LightGBM model text (``model_to_string``) to the validated JSON form."""
    lines = text.split("\n")
    if not lines or lines[0] != "tree":
        raise ClassifierError("not a LightGBM tree model")
    header: dict[str, str] = {}
    i = 1
    while i < len(lines) and not lines[i].startswith("Tree="):
        line = lines[i]
        if line:
            key, sep, value = line.partition("=")
            header[key] = value if sep else ""
        i += 1
    trees: list[dict[str, Any]] = []
    while i < len(lines) and lines[i].startswith("Tree="):
        if lines[i] != f"Tree={len(trees)}":
            raise ClassifierError(f"unexpected LightGBM line {lines[i]!r}")
        i += 1
        raw: dict[str, str] = {}
        while i < len(lines) and lines[i]:
            key, _, value = lines[i].partition("=")
            raw[key] = value
            i += 1
        trees.append(_lightgbm_parse_tree(raw, len(trees)))
        while i < len(lines) and not lines[i]:
            i += 1
    if i >= len(lines) or lines[i] != "end of trees":
        raise ClassifierError("LightGBM model text does not end its trees")
    for key, expected in _LGB_HEADER_FIXED.items():
        if header.get(key) != expected:
            raise ClassifierError(
                f"unsupported LightGBM model: {key}={header.get(key)!r} (need {expected})"
            )
    allowed = {*_LGB_HEADER_FIXED, "max_feature_idx", "objective", "feature_names"}
    allowed |= {"feature_infos", "tree_sizes", "average_output"}
    extra = set(header) - allowed
    if extra:
        raise ClassifierError(f"unsupported LightGBM model header keys: {sorted(extra)}")
    if not header.get("max_feature_idx", "").isdigit():
        raise ClassifierError("LightGBM max_feature_idx is missing")
    model = {
        "objective": header.get("objective", ""),
        "average_output": "average_output" in header,
        "max_feature_idx": int(header["max_feature_idx"]),
        "feature_names": header.get("feature_names", "").split(" "),
        "feature_infos": header.get("feature_infos", "").split(" "),
        "trees": trees,
    }
    _lightgbm_check(model)
    return model


def _lightgbm_parse_tree(raw: Mapping[str, str], index: int) -> dict[str, Any]:
    if set(raw) != set(_LGB_TREE_KEYS):
        raise ClassifierError(
            f"unsupported LightGBM tree {index}: keys {list(raw)} (need {list(_LGB_TREE_KEYS)})"
        )
    tree: dict[str, Any] = {}
    for key in _LGB_TREE_KEYS:
        convert: Callable[[str], Any] = int if key in _LGB_INTS else float
        try:
            values = [convert(v) for v in raw[key].split(" ") if v != ""]
        except ValueError as exc:
            raise ClassifierError(f"LightGBM tree {index}: bad {key}") from exc
        if key not in _LGB_INTS and not all(math.isfinite(v) for v in values):
            raise ClassifierError(f"LightGBM tree {index}: non-finite {key}")
        if key in _LGB_SCALARS:
            if len(values) != 1:
                raise ClassifierError(f"LightGBM tree {index}: {key} must be one value")
            tree[key] = values[0]
        else:
            tree[key] = values
    return tree


def _lightgbm_check(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Validate the JSON form of a LightGBM model (structure, ranges, finiteness).

    Returns
    -------
    list of dict
        Per tree, the validated values (numpy arrays and Python scalars), from which
        :func:`_lightgbm_text` writes the model text.
    """
    expected_keys = {
        "objective",
        "average_output",
        "max_feature_idx",
        "feature_names",
        "feature_infos",
        "trees",
    }
    if set(model) != expected_keys:
        raise ClassifierError(f"LightGBM model must have exactly the keys {sorted(expected_keys)}")
    objective = model["objective"]
    if not isinstance(objective, str) or not _LGB_OBJECTIVE.fullmatch(objective):
        raise ClassifierError(f"unsupported LightGBM objective {objective!r}")
    if not isinstance(model["average_output"], bool):
        raise ClassifierError("LightGBM average_output must be true or false")
    max_idx = _integer(model, "max_feature_idx")
    n_features = max_idx + 1
    if n_features < 1:
        raise ClassifierError("LightGBM max_feature_idx must be >= 0")
    names = model["feature_names"]
    infos = model["feature_infos"]
    if (
        not isinstance(names, list)
        or len(names) != n_features
        or not all(isinstance(s, str) and _LGB_NAME.fullmatch(s) for s in names)
    ):
        raise ClassifierError(f"LightGBM needs {n_features} plain feature names")
    if not isinstance(infos, list) or len(infos) != n_features:
        raise ClassifierError(f"LightGBM needs {n_features} feature infos")
    for info in infos:
        match = _LGB_INFO.fullmatch(info) if isinstance(info, str) else None
        if match is None or (match.group(1) is not None and not _parse_finite_pair(match)):
            raise ClassifierError(f"bad LightGBM feature info {info!r}")
    trees = model["trees"]
    if not isinstance(trees, list) or not trees:
        raise ClassifierError("LightGBM model has no trees")
    return [_lightgbm_check_tree(tree, index, max_idx) for index, tree in enumerate(trees)]


def _parse_finite_pair(match: re.Match[str]) -> bool:
    try:
        return all(math.isfinite(float(match.group(g))) for g in (1, 2))
    except ValueError:
        return False


def _lightgbm_check_tree(tree: Any, index: int, max_idx: int) -> dict[str, Any]:
    what = f"LightGBM tree {index}"
    # Key order is not checked: bundles store JSON with sorted keys.
    if not isinstance(tree, Mapping) or set(tree) != set(_LGB_TREE_KEYS):
        raise ClassifierError(f"{what} must have exactly the keys {list(_LGB_TREE_KEYS)}")
    leaves = _integer(tree, "num_leaves")
    if leaves < 1:
        raise ClassifierError(f"{what}: num_leaves must be >= 1")
    if _integer(tree, "num_cat") != 0 or _integer(tree, "is_linear") != 0:
        raise ClassifierError(f"{what}: categorical splits and linear trees are not supported")
    arrays: dict[str, Any] = {
        "num_leaves": leaves,
        "num_cat": 0,
        "is_linear": 0,
        "shrinkage": _number(tree, "shrinkage"),
    }
    for key in _LGB_TREE_KEYS:
        if key in _LGB_SCALARS:
            continue
        arrays[key] = _array(tree, key, 1, integer=key in _LGB_INTS)
        size = leaves - 1 if key in _LGB_INTERNAL else leaves
        # A one-leaf tree has empty internal arrays and LightGBM writes its leaf_weight
        # empty too.
        ok = arrays[key].shape == (size,) or (
            leaves == 1 and key == "leaf_weight" and arrays[key].size == 0
        )
        if not ok:
            raise ClassifierError(f"{what}: {key} must have {size} entries")
    if leaves == 1:
        return arrays
    decision = arrays["decision_type"]
    # Bit 0: categorical; bit 1: default left; bits 2-3: missing type 0 (none), 1 (zero),
    # 2 (NaN).
    if ((decision < 0) | (decision > 15) | (decision & 1 != 0) | ((decision >> 2) & 3 == 3)).any():
        raise ClassifierError(f"{what}: unsupported decision_type")
    split = arrays["split_feature"]
    if ((split < 0) | (split > max_idx)).any():
        raise ClassifierError(f"{what}: a split feature is out of range")
    # Children: >= 0 is an internal node, < 0 is leaf ~child. Every internal node and
    # every leaf must be reached exactly once from the root (internal node 0).
    seen_internal = np.zeros(leaves - 1, dtype=bool)
    seen_leaf = np.zeros(leaves, dtype=bool)
    stack = [0]
    while stack:
        node = stack.pop()
        if seen_internal[node]:
            raise ClassifierError(f"{what}: node {node} is reached twice (not a tree)")
        seen_internal[node] = True
        for child in (int(arrays["left_child"][node]), int(arrays["right_child"][node])):
            if child >= 0:
                if child >= leaves - 1:
                    raise ClassifierError(f"{what}: a child index is out of range")
                stack.append(child)
            else:
                leaf = ~child
                if leaf >= leaves:
                    raise ClassifierError(f"{what}: a leaf index is out of range")
                if seen_leaf[leaf]:
                    raise ClassifierError(f"{what}: leaf {leaf} is reached twice (not a tree)")
                seen_leaf[leaf] = True
    if not (seen_internal.all() and seen_leaf.all()):
        raise ClassifierError(f"{what}: some nodes are unreachable")
    return arrays


def _lightgbm_text(model: Mapping[str, Any], trees: Sequence[Mapping[str, Any]]) -> str:
    """LightGBM model text rebuilt from a validated model (see :func:`_lightgbm_check`).

    Only what prediction needs is written, from the validated values (never the raw JSON
    values); ``tree_sizes`` (the byte length of each tree block, which LightGBM uses to
    parse trees in parallel) is computed here, so it always matches.
    """

    def fmt(key: str, value: Any) -> str:
        if key in _LGB_INTS:
            ints = [int(value)] if key in _LGB_SCALARS else [int(v) for v in value]
            return " ".join(str(v) for v in ints)
        # repr of a float is the shortest text that reads back as the same double.
        floats = [float(value)] if key in _LGB_SCALARS else [float(v) for v in value]
        return " ".join(repr(v) for v in floats)

    header = [
        "tree",
        *(f"{k}={v}" for k, v in _LGB_HEADER_FIXED.items()),
        f"max_feature_idx={int(model['max_feature_idx'])}",
        f"objective={model['objective']}",
    ]
    if model["average_output"]:
        header.append("average_output")
    header.append("feature_names=" + " ".join(model["feature_names"]))
    header.append("feature_infos=" + " ".join(model["feature_infos"]))
    blocks = [
        f"Tree={i}\n" + "".join(f"{k}={fmt(k, tree[k])}\n" for k in _LGB_TREE_KEYS) + "\n\n"
        for i, tree in enumerate(trees)
    ]
    sizes = " ".join(str(len(b.encode("ascii"))) for b in blocks)
    return (
        "\n".join(header)
        + f"\ntree_sizes={sizes}\n\n"
        + "".join(blocks)
        + "end of trees\n\npandas_categorical:null\n"
    )


def _lightgbm_from_json(model: Mapping[str, Any], hyper: dict[str, Any]) -> LightGBMModel:
    inner = model
    trees = _lightgbm_check(inner)
    text = _lightgbm_text(inner, trees)
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ClassifierError(f"LightGBM cannot load the model: {exc}") from exc
    return LightGBMModel(booster=booster, model=dict(inner), hyperparameters=hyper)
