"""What :class:`~model_bundle.models.selection.FeatureSelector` records of every step (the
Pearson drops, the LASSO fit, the whole selection), and reading that record back from
JSON with every field checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from onfh_dlr.errors import SelectionError


@dataclass(frozen=True)
class CorrelationDrop:
    """A feature removed by the Pearson step, and the kept feature it duplicates.

    Attributes
    ----------
    dropped, kept : str
        Names of the removed feature and of its kept partner (largest ``|r|``).
    r : float
        Pearson correlation of the two on the training data.
    """

    dropped: str
    kept: str
    r: float


@dataclass(frozen=True)
class LassoRecord:
    """The LASSO step: cross-validation curve, chosen alpha and coefficients.

    Attributes
    ----------
    alpha : float
        The alpha (lambda) of minimal mean CV error; coefficients are fitted with it.
    alphas : tuple of float
        The alpha grid, decreasing (LassoCV's own grid).
    cv_mse_mean, cv_mse_std : tuple of float
        Mean and standard deviation over folds of the held-out squared error, per alpha.
    n_folds : int
        Number of stratified folds used.
    coefficients : dict of str to float
        Coefficient of every LASSO input feature (z-scored), zero or not.
    intercept : float
        Intercept of the fitted LASSO.
    fallback : str or None
        Why the first mRMR feature was kept although every coefficient is zero; ``None``
        when the selection is the non-zero coefficients.
    path : dict of str to tuple of float, or None
        The coefficient path: for every LASSO input feature its coefficient at each alpha
        of ``alphas``, fitted on the same z-scored training rows, for the report's figure.
        ``None`` for a selector recorded before the path was (an older bundle).
    """

    alpha: float
    alphas: tuple[float, ...]
    cv_mse_mean: tuple[float, ...]
    cv_mse_std: tuple[float, ...]
    n_folds: int
    coefficients: dict[str, float]
    intercept: float
    fallback: str | None
    path: dict[str, tuple[float, ...]] | None = None


@dataclass(frozen=True)
class SelectionRecord:
    """What every step of a fitted :class:`FeatureSelector` kept and why.

    Attributes
    ----------
    input_names : tuple of str
        All input features, in input order.
    n_samples, n_positive : int
        Training rows, and those with label 1.
    constant : tuple of str
        Features dropped in step 1 because they take one value only.
    after_zscore : tuple of str
        Features left after step 1.
    mwu_p : dict of str to float
        Two-sided Mann-Whitney U p-value of every feature left after step 1.
    after_mwu : tuple of str
        Features with ``p < p_threshold``.
    correlation_dropped : tuple of CorrelationDrop
        Features removed in step 3, in the order they were removed.
    after_correlation : tuple of str
        Features left after step 3, in input order.
    mrmr_relevance : dict of str to float
        ANOVA F statistic of every step-4 candidate.
    mrmr_order : tuple of str
        Features chosen by mRMR, in the order chosen.
    mrmr_scores : tuple of float
        Relevance / redundancy of each chosen feature when it was chosen.
    lasso : LassoRecord
        Step 5.
    selected : tuple of str
        The final features, in mRMR order.
    """

    input_names: tuple[str, ...]
    n_samples: int
    n_positive: int
    constant: tuple[str, ...]
    after_zscore: tuple[str, ...]
    mwu_p: dict[str, float]
    after_mwu: tuple[str, ...]
    correlation_dropped: tuple[CorrelationDrop, ...]
    after_correlation: tuple[str, ...]
    mrmr_relevance: dict[str, float]
    mrmr_order: tuple[str, ...]
    mrmr_scores: tuple[float, ...]
    lasso: LassoRecord
    selected: tuple[str, ...]

    def stage_counts(self) -> list[tuple[str, int]]:
        """Number of features after each step, for a report table.

        Returns
        -------
        list of (str, int)
            ``(step name, number of features)`` from the input to the final selection.
        """
        return [
            ("input", len(self.input_names)),
            ("z-score (non-constant)", len(self.after_zscore)),
            ("Mann-Whitney U", len(self.after_mwu)),
            ("Pearson de-duplication", len(self.after_correlation)),
            ("mRMR", len(self.mrmr_order)),
            ("LASSO", len(self.selected)),
        ]


# --- input checks and JSON reading ------------------------------------------------------


def _record_from_json(
    rec: Mapping[str, Any], names: tuple[str, ...], selected: tuple[str, ...]
) -> SelectionRecord:
    known = set(names)

    def subset(key: str) -> tuple[str, ...]:
        values = tuple(_strs(rec, key))
        if not set(values) <= known:
            raise SelectionError(f"record.{key} names features that are not inputs")
        return values

    drops = []
    for item in _list(rec, "correlation_dropped"):
        if not isinstance(item, Mapping):
            raise SelectionError("record.correlation_dropped entries must be objects")
        drops.append(CorrelationDrop(_str(item, "dropped"), _str(item, "kept"), _num(item, "r")))
    lasso_obj = _obj(rec, "lasso")
    fallback = lasso_obj.get("fallback")
    if fallback is not None and not isinstance(fallback, str):
        raise SelectionError("record.lasso.fallback must be a string or null")
    lasso = LassoRecord(
        alpha=_num(lasso_obj, "alpha"),
        alphas=tuple(_nums(lasso_obj, "alphas")),
        cv_mse_mean=tuple(_nums(lasso_obj, "cv_mse_mean")),
        cv_mse_std=tuple(_nums(lasso_obj, "cv_mse_std")),
        n_folds=_int(lasso_obj, "n_folds"),
        coefficients=_name_map(lasso_obj, "coefficients", known),
        intercept=_num(lasso_obj, "intercept"),
        fallback=fallback,
        path=_path(lasso_obj, known, len(_nums(lasso_obj, "alphas"))),
    )
    mrmr_order = subset("mrmr_order")
    if not set(selected) <= set(mrmr_order):
        raise SelectionError("selected features must come from record.mrmr_order")
    return SelectionRecord(
        input_names=names,
        n_samples=_int(rec, "n_samples"),
        n_positive=_int(rec, "n_positive"),
        constant=subset("constant"),
        after_zscore=subset("after_zscore"),
        mwu_p=_name_map(rec, "mwu_p", known),
        after_mwu=subset("after_mwu"),
        correlation_dropped=tuple(drops),
        after_correlation=subset("after_correlation"),
        mrmr_relevance=_name_map(rec, "mrmr_relevance", known),
        mrmr_order=mrmr_order,
        mrmr_scores=tuple(_nums(rec, "mrmr_scores")),
        lasso=lasso,
        selected=selected,
    )


def _name_map(obj: Mapping[str, Any], key: str, known: set[str]) -> dict[str, float]:
    """A JSON object of feature name to finite number, every name an input feature."""
    inner = _obj(obj, key)
    if not set(inner) <= known:
        raise SelectionError(f"{key!r} names features that are not inputs")
    return {k: _num(inner, k) for k in inner}


def _path(
    lasso: Mapping[str, Any], known: set[str], n_alphas: int
) -> dict[str, tuple[float, ...]] | None:
    """The optional LASSO path: feature name to one finite coefficient per alpha."""
    if lasso.get("path") is None:
        return None  # recorded before training kept the path
    inner = _obj(lasso, "path")
    if not set(inner) <= known:
        raise SelectionError("'path' names features that are not inputs")
    path = {name: tuple(_nums(inner, name)) for name in inner}
    if any(len(values) != n_alphas for values in path.values()):
        raise SelectionError("'path' must hold one coefficient per alpha")
    return path


def _obj(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d.get(key)
    if not isinstance(value, Mapping):
        raise SelectionError(f"{key!r} must be a JSON object")
    return value


def _list(d: Mapping[str, Any], key: str) -> list[Any]:
    value = d.get(key)
    if not isinstance(value, list):
        raise SelectionError(f"{key!r} must be a JSON array")
    return value


def _str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise SelectionError(f"{key!r} must be a string")
    return value


def _strs(d: Mapping[str, Any], key: str) -> list[str]:
    values = _list(d, key)
    if not all(isinstance(v, str) for v in values):
        raise SelectionError(f"{key!r} must be an array of strings")
    return values


def _num(d: Mapping[str, Any], key: str) -> float:
    value = d.get(key)
    # bool is an int subclass; a true/false where a number belongs is corruption.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SelectionError(f"{key!r} must be a finite number")
    return float(value)


def _int(d: Mapping[str, Any], key: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SelectionError(f"{key!r} must be an integer")
    return value


def _nums(d: Mapping[str, Any], key: str) -> list[float]:
    values = _list(d, key)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise SelectionError(f"{key!r} must be an array of finite numbers")
        out.append(float(v))
    return out
