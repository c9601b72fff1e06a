"""The eight classifiers: cross-validated AUC, and JSON round trips without pickle.

Seeded synthetic data (``make_classification`` for an easy problem, Gaussian noise with
shuffled labels for a hopeless one) plus hand-built models. Round trips go through
``json.dumps`` with sorted keys and indentation, as a bundle stores them, and compare
probabilities with the fitted estimator's on held-out rows.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.special import expit
from sklearn.datasets import make_classification
from threadpoolctl import threadpool_limits

from model_bundle.models import (
    CLASSIFIERS,
    LightGBMModel,
    TreeEnsembleModel,
    classifier_name,
    cross_validate_auc,
    from_json,
    make_classifier,
    positive_probability,
    to_json,
)
from onfh_dlr.errors import ClassifierError

SEED = 3
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    # Small matrices: BLAS threads only slow the fits down (see cross_validate_auc).
    with threadpool_limits(limits=1):
        yield


def _easy(n_samples: int = 200, seed: int = SEED) -> tuple[F64, I64]:
    X, y = make_classification(
        n_samples=n_samples,
        n_features=8,
        n_informative=4,
        n_redundant=0,
        class_sep=1.2,
        random_state=seed,
    )
    return X, y.astype(np.int64)


def _noise(n_samples: int = 300, seed: int = SEED) -> tuple[F64, I64]:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.zeros(n_samples // 2), np.ones(n_samples - n_samples // 2)])
    return rng.normal(size=(n_samples, 4)), y.astype(np.int64)


@pytest.fixture(scope="module")
def split() -> tuple[F64, I64, F64]:
    X, y = _easy(n_samples=260)
    return X[:180], y[:180], X[180:]


@pytest.fixture(scope="module")
def fitted(split: tuple[F64, I64, F64]) -> dict[str, Any]:
    X_train, y_train, _ = split
    return {name: make_classifier(name, SEED).fit(X_train, y_train) for name in CLASSIFIERS}


def _canonical(data: dict[str, Any]) -> dict[str, Any]:
    """Through JSON text the way a bundle stores it (sorted keys, indent, no NaN)."""
    loaded = json.loads(json.dumps(data, sort_keys=True, indent=2, allow_nan=False))
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_cv_auc_is_high_on_an_easy_problem(name: str) -> None:
    X, y = _easy()
    mean, per_fold = cross_validate_auc(name, X, y, folds=5, seed=SEED)
    assert len(per_fold) == 5
    assert mean == pytest.approx(np.mean(per_fold))
    assert mean > 0.8


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_cv_auc_is_chance_on_noise(name: str) -> None:
    # 300 rows: the mean of five fold AUCs has a standard error of about 0.035 (and CV
    # on noise is biased slightly below 0.5), so 0.15 leaves a wide margin.
    X, y = _noise()
    mean, _ = cross_validate_auc(name, X, y, folds=5, seed=SEED)
    assert abs(mean - 0.5) < 0.15


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_json_round_trip_gives_the_same_probabilities(
    name: str, fitted: dict[str, Any], split: tuple[F64, I64, F64]
) -> None:
    _, _, X_test = split
    model = fitted[name]
    data = _canonical(to_json(model))
    assert data["name"] == name and classifier_name(model) == name
    loaded = from_json(data)
    expected = model.predict_proba(X_test)
    got = loaded.predict_proba(X_test)
    assert got.shape == (X_test.shape[0], 2)
    if name == "SVM":
        # libsvm sums the kernel expansion in its own order.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(loaded.classes_, [0, 1])
    np.testing.assert_array_equal(positive_probability(loaded, X_test), got[:, 1])
    # A loaded model writes the same model again.
    again = _canonical(to_json(loaded))
    assert again["model"] == data["model"]
    assert again["n_features"] == data["n_features"] == 8


_PICKLE_MARKERS = re.compile(r"pickle|py/object|py/reduce|__reduce__|copy_reg|\\x80|gASV", re.I)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_json_is_plain_data(name: str, fitted: dict[str, Any]) -> None:
    text = json.dumps(to_json(fitted[name]), allow_nan=False)
    assert not _PICKLE_MARKERS.search(text)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        else:
            assert value is None or isinstance(value, str | int | float | bool)
            # No blob hides in a string: every one is short (names, kernels, XGBoost's
            # decimal parameters, LightGBM's feature ranges).
            assert not isinstance(value, str) or len(value) < 200

    walk(json.loads(text))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_fit_is_deterministic_for_a_seed(
    name: str, fitted: dict[str, Any], split: tuple[F64, I64, F64]
) -> None:
    X_train, y_train, _ = split
    again = make_classifier(name, SEED).fit(X_train, y_train)
    first, second = to_json(fitted[name]), to_json(again)
    assert first["model"] == second["model"]


def _tree0(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Accessor of the first tree of a tree model's JSON."""
    if path == "xgboost":
        return lambda d: d["model"]["xgboost_json"]["learner"]["gradient_booster"]["model"][
            "trees"
        ][0]
    return lambda d: d["model"]["trees"][0]


def _set(getter: Callable[[dict[str, Any]], Any], key: str, value: Any) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        getter(d)[key] = value

    return mutate


def _edit(
    getter: Callable[[dict[str, Any]], Any], key: str, fn: Callable[[list[Any]], list[Any]]
) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        target = getter(d)
        target[key] = fn(target[key])

    return mutate


def _first(value: Any) -> Callable[[list[Any]], list[Any]]:
    return lambda xs: [value, *xs[1:]]


_MODEL = lambda d: d["model"]  # noqa: E731
_DROP_LAST: Callable[[list[Any]], list[Any]] = lambda xs: xs[:-1]  # noqa: E731

# (classifier, mutation of its JSON, expected message). The XGBoost and LightGBM index
# cases crash the process (segfault / abort) if they reach the native loaders.
TAMPERING = [
    ("LR", _edit(_MODEL, "coef", lambda c: [c[0][:-1]]), "n_features"),
    ("LR", _set(_MODEL, "intercept", [0.1, 0.2]), "intercept"),
    ("LR", _set(_MODEL, "coef", [[1.0, "2"]]), "only numbers"),
    ("SVM", _edit(_MODEL, "dual_coef", _DROP_LAST), "dual coefficient"),
    ("SVM", _set(_MODEL, "gamma", -1.0), "gamma"),
    ("KNN", _edit(_MODEL, "y", _DROP_LAST), "one label per training row"),
    ("KNN", _edit(_MODEL, "X", lambda x: [x[0][:-1], *x[1:]]), "rectangular"),
    ("RandomForest", _edit(_tree0("sk"), "children_left", _DROP_LAST), "node arrays"),
    ("RandomForest", _edit(_tree0("sk"), "children_left", _first(0)), "out of range"),
    ("RandomForest", _edit(_tree0("sk"), "feature", _first(99)), "split feature"),
    ("ExtraTrees", _edit(_tree0("sk"), "value", lambda v: [[*v[0], 0.0], *v[1:]]), "rectangular"),
    ("ExtraTrees", _edit(_tree0("sk"), "children_right", _first(1)), "one child|reached twice"),
    ("XGBoost", _edit(_tree0("xgboost"), "left_children", _first(99999)), "out of range"),
    ("XGBoost", _edit(_tree0("xgboost"), "split_indices", _first(99999)), "split feature"),
    ("XGBoost", _edit(_tree0("xgboost"), "left_children", _DROP_LAST), "entries"),
    ("XGBoost", _edit(_tree0("xgboost"), "left_children", _first(0)), "out of range"),
    ("LightGBM", _edit(_tree0("lgb"), "left_child", _first(99999)), "out of range"),
    ("LightGBM", _edit(_tree0("lgb"), "split_feature", _first(99999)), "split feature"),
    ("LightGBM", _edit(_tree0("lgb"), "leaf_value", _DROP_LAST), "entries"),
    ("LightGBM", _edit(_tree0("lgb"), "left_child", _first(True)), "booleans"),
    ("MLP", _edit(_MODEL, "intercepts", lambda b: [b[0][:-1], *b[1:]]), "layer 0"),
    ("MLP", _set(_MODEL, "activation", ["relu"]), "activation"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    TAMPERING,
    ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(TAMPERING)],
)
def test_tampered_json_raises_a_clear_error(
    name: str, mutate: Callable[[dict[str, Any]], None], message: str, fitted: dict[str, Any]
) -> None:
    data = _canonical(to_json(fitted[name]))
    mutate(data)
    with pytest.raises(ClassifierError, match=message):
        from_json(data)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_envelope_is_checked(name: str, fitted: dict[str, Any]) -> None:
    good = _canonical(to_json(fitted[name]))
    for key, value, message in [
        ("n_features", 9, "n_features|num_feature"),
        ("format", "pickle", "format"),
        ("name", "NaiveBayes", "unknown classifier"),
        ("classes", [1, 2], "classes"),
    ]:
        data = copy.deepcopy(good)
        data[key] = value
        with pytest.raises(ClassifierError, match=message):
            from_json(data)


def test_unknown_or_unfitted_classifiers_raise() -> None:
    with pytest.raises(ClassifierError, match="unknown classifier"):
        make_classifier("NaiveBayes", 0)
    with pytest.raises(ClassifierError, match="not one of"):
        to_json(object())
    with pytest.raises(ClassifierError, match="not fitted"):
        to_json(make_classifier("LR", 0))
    with pytest.raises(ClassifierError, match="rows per class"):
        cross_validate_auc("LR", np.zeros((6, 2)), np.array([0, 0, 0, 0, 1, 1]), folds=5)


def test_loaded_models_check_their_input(fitted: dict[str, Any]) -> None:
    loaded = from_json(_canonical(to_json(fitted["LR"])))
    with pytest.raises(ClassifierError, match="8 features"):
        loaded.predict_proba(np.zeros((3, 7)))
    with pytest.raises(ClassifierError, match="finite"):
        loaded.predict_proba(np.full((1, 8), np.nan))


def _envelope(name: str, model: dict[str, Any], n_features: int) -> dict[str, Any]:
    return {
        "format": "onfh-dlr/classifier",
        "version": 1,
        "name": name,
        "n_features": n_features,
        "classes": [0, 1],
        "hyperparameters": {},
        "model": model,
    }


def test_hand_built_logistic_regression() -> None:
    model = from_json(_envelope("LR", {"coef": [[2.0, -1.0]], "intercept": [0.5]}, 2))
    X = np.array([[0.0, 0.0], [1.0, 3.0], [-2.0, 1.0]])
    p = expit(2.0 * X[:, 0] - X[:, 1] + 0.5)
    np.testing.assert_allclose(model.predict_proba(X), np.column_stack([1 - p, p]), rtol=1e-15)


def test_hand_built_stump_forest() -> None:
    stump = {
        "children_left": [1, -1, -1],
        "children_right": [2, -1, -1],
        "feature": [0, -2, -2],
        "threshold": [0.5, -2.0, -2.0],
        "value": [[0.5, 0.5], [0.8, 0.2], [0.1, 0.9]],
    }
    leaf = {
        "children_left": [-1],
        "children_right": [-1],
        "feature": [-2],
        "threshold": [-2.0],
        "value": [[0.4, 0.6]],
    }
    model = from_json(_envelope("RandomForest", {"n_features": 1, "trees": [stump, leaf]}, 1))
    assert isinstance(model, TreeEnsembleModel)
    # 0.5 <= 0.5 goes left, like scikit-learn.
    got = model.predict_proba(np.array([[0.25], [0.5], [0.75]]))
    np.testing.assert_allclose(got, [[0.6, 0.4], [0.6, 0.4], [0.25, 0.75]], rtol=1e-15)


@pytest.mark.parametrize("name", ["RandomForest", "ExtraTrees"])
def test_trees_split_exactly_like_sklearn_at_thresholds(name: str, fitted: dict[str, Any]) -> None:
    # Rows sitting exactly on (and one ulp either side of) every split threshold of the
    # first trees: the float32 rounding and the <= must match scikit-learn's.
    forest = fitted[name]
    rows = []
    for member in forest.estimators_[:5]:
        tree = member.tree_
        for node in np.flatnonzero(tree.children_left != -1):
            t = tree.threshold[node]
            for value in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)):
                row = np.zeros(8)
                row[tree.feature[node]] = value
                rows.append(row)
    X = np.array(rows)
    loaded = from_json(_canonical(to_json(forest)))
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.predict_proba(X))


def test_lightgbm_rebuilt_text_holds_the_same_trees(fitted: dict[str, Any]) -> None:
    original = fitted["LightGBM"].booster_.model_to_string()
    loaded = from_json(_canonical(to_json(fitted["LightGBM"])))
    assert isinstance(loaded, LightGBMModel)
    rebuilt = loaded.booster.model_to_string()

    def trees(text: str) -> str:
        return text[text.index("Tree=0") : text.index("end of trees")]

    assert trees(rebuilt) == trees(original)
    assert isinstance(loaded.booster, lgb.Booster)
