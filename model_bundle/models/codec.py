"""The eight classifiers as plain JSON data, without pickle: :func:`to_json` and :func:`from_json`.

:data:`CLASSIFIERS` names the classifiers the source paper compares with 5-fold
cross-validation. :func:`make_classifier` builds each with defaults meant for small
tabular data (a few hundred hips, at most 30 z-scored features, see
:mod:`model_bundle.models.selection`); :func:`cross_validate_auc` scores one with stratified
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

import json
import math
from collections.abc import Mapping
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import xgboost as xgb
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

from model_bundle.models.arrays import _array, _check_binary_tree, _integer, _number
from model_bundle.models.factory import (
    _CLASSES,
    _VERSION,
    CLASSIFIER_FORMAT,
    CLASSIFIERS,
    ProbabilisticClassifier,
)
from model_bundle.models.inference import (
    _HIDDEN_ACTIVATIONS,
    _KERNELS,
    KernelSVMModel,
    LightGBMModel,
    LogisticModel,
    MLPModel,
    TreeArrays,
    TreeEnsembleModel,
)
from model_bundle.models.trees import (
    _lightgbm_from_json,
    _lightgbm_parse,
    _xgboost_check,
    _xgboost_from_json,
)
from onfh_dlr.errors import ClassifierError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


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
