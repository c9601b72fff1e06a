"""The classifiers as loaded from a bundle: numpy models that compute the probability of
class 1 from validated arrays (LR, SVM, tree ensembles, MLP, and LightGBM's booster
rebuilt from validated arrays). None of them runs code stored in the bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import lightgbm as lgb
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from model_bundle.models.factory import _CLASSES, _check_rows
from onfh_dlr.errors import ClassifierError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


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
