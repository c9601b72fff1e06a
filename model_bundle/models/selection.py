"""Feature selection as in the source paper, fitted on training data only.

:class:`FeatureSelector` runs five steps on a training matrix (rows = hips, columns =
named features) and remembers everything it needs to apply the same selection to new
data, plus a record of every step for the report:

1. **z-score.** Each feature is centred and scaled with the mean and standard deviation
   (``ddof=0``) of the training rows. A feature with one value only (``max == min``) is
   dropped and recorded; the test ``max == min`` is exact, whereas ``std == 0`` is not
   (the floating-point mean of equal values can differ from them in the last bit).
   Every later step sees the z-scored training matrix.
2. **Mann-Whitney U.** Two-sided, per feature, :func:`scipy.stats.mannwhitneyu` with its
   default method (``"auto"``: exact for small samples without ties, otherwise the
   normal approximation with continuity correction). Features with ``p < 0.05`` are
   kept. When none is kept, :class:`~onfh_dlr.errors.NoSignificantFeatureError` is
   raised: a model built from features that do not differ between the classes would be
   noise, and the caller should know rather than get one.
3. **Pearson de-duplication.** Greedy: the surviving features are visited in increasing
   order of their Mann-Whitney p (ties: input order); a feature is kept unless its
   ``|r|`` with an already kept feature exceeds 0.9, in which case it is dropped and the
   record names the kept partner with the largest ``|r|``. So of a correlated pair the
   feature with the smaller p is the one kept. Kept features stay in input order.
4. **mRMR** to at most 30 features, the *FCQ* variant (F-test Correlation Quotient: the
   relevance of a feature is its ANOVA F statistic against the label, its redundancy
   the mean ``|r|`` with the features already chosen, and the feature with the largest
   relevance / redundancy is taken next). This is the variant and the conventions of
   the ``mrmr-selection`` package (``mrmr_classif`` with its defaults: ``|r|`` floored
   at 0.001, a redundancy of exactly 1 scores 0, features with ``F = 0`` are never
   chosen, ties go to the earlier column); it is implemented here because that package
   silences every Python warning of the process when imported and fans out to worker
   processes. The tests check the two give the same order. FCQ rather than the
   mutual-information variants (MID/MIQ) because radiomics and deep features are
   continuous: mutual information would need a discretisation, an extra arbitrary
   parameter.
5. **LASSO** with 10-fold cross-validation: :class:`sklearn.linear_model.LassoCV` on the
   0/1 label, as the paper does (least squares with an L1 penalty, not an L1 logistic
   regression), on the mRMR features in mRMR order, with stratified, shuffled folds
   seeded by ``seed`` (fewer folds when a class has fewer than 10 training rows), and
   the alpha (lambda) of minimal mean CV squared error. Features with a non-zero
   coefficient are kept; if none is, the first mRMR feature is kept and the record says
   why, so that the bundle always has a model to fit.

The selected features keep their mRMR order, and :meth:`FeatureSelector.transform`
returns them z-scored with the *training* means and standard deviations. The selector
and its record round-trip through plain JSON (:meth:`~FeatureSelector.to_json` /
:meth:`~FeatureSelector.from_json`, no pickle); floats are written with ``repr``
precision, so a loaded selector transforms bit for bit like the fitted one.
"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import mannwhitneyu
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LassoCV, lasso_path
from sklearn.model_selection import StratifiedKFold

from model_bundle.models.selection_records import (
    CorrelationDrop,
    LassoRecord,
    SelectionRecord,
    _int,
    _num,
    _nums,
    _obj,
    _record_from_json,
    _strs,
)
from onfh_dlr.errors import NoSignificantFeatureError, SelectionError

F64 = NDArray[np.float64]


#: ``format`` value of a selector's JSON; ``version`` changes with incompatible changes.
SELECTOR_FORMAT: Final = "onfh-dlr/feature-selector"
_VERSION: Final = 1
#: Lower bound of ``|r|`` in the mRMR redundancy (mrmr-selection's ``FLOOR``): keeps the
#: quotient finite for uncorrelated features.
MRMR_FLOOR: Final = 0.001


def lasso_folds(y: ArrayLike, n_folds: int, seed: int) -> StratifiedKFold:
    """The cross-validation splitter of the LASSO step.

    Parameters
    ----------
    y : array-like of int
        Training labels (0/1).
    n_folds : int
        Folds wanted (10 in the paper).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    sklearn.model_selection.StratifiedKFold
        Shuffled, stratified, with ``min(n_folds, rows of the smaller class)`` folds.

    Raises
    ------
    SelectionError
        If a class has fewer than two rows.
    """
    labels = np.asarray(y)
    smaller = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    folds = min(n_folds, smaller)
    if folds < 2:
        raise SelectionError(
            f"LASSO cross-validation needs at least two rows of each class; the smaller "
            f"class has {smaller}"
        )
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def mrmr_fcq(
    X: ArrayLike, y: ArrayLike, k: int, *, abs_corr: ArrayLike | None = None
) -> tuple[list[int], list[float], F64]:
    """mRMR, FCQ variant, with mrmr-selection's conventions (see the module docstring).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Candidate features (scaling does not matter: F and r are scale-invariant).
    y : array-like of shape (n_samples,)
        Class labels.
    k : int
        Maximum number of features to choose.
    abs_corr : array-like of shape (n_features, n_features), optional
        ``|r|`` between the columns, if already computed.

    Returns
    -------
    order : list of int
        Column indices in the order chosen (at most ``k``, fewer if fewer columns have
        ``F > 0``).
    scores : list of float
        Relevance / redundancy of each chosen column when it was chosen (the first one's
        redundancy is 1 by convention, so its score is its F).
    relevance : ndarray of shape (n_features,)
        F statistic of every column (0 where undefined).
    """
    data = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        relevance = np.nan_to_num(np.asarray(f_classif(data, labels)[0], dtype=np.float64))
    corr = _abs_corr(data) if abs_corr is None else np.asarray(abs_corr, dtype=np.float64)
    redundancy = np.maximum(corr, MRMR_FLOOR)
    remaining = [j for j in range(data.shape[1]) if relevance[j] > 0]
    order: list[int] = []
    scores: list[float] = []
    for _ in range(min(k, len(remaining))):
        candidates = np.asarray(remaining)
        numerator = relevance[candidates]
        if order:
            denominator = np.mean(redundancy[np.ix_(candidates, np.asarray(order))], axis=1)
            # A candidate that is a perfect copy of everything chosen scores 0 (the
            # reference replaces a denominator of exactly 1 by infinity).
            denominator[denominator == 1.0] = np.inf
            score = numerator / denominator
        else:
            score = numerator
        best = int(np.argmax(score))  # first maximum: ties go to the earlier column
        order.append(int(candidates[best]))
        scores.append(float(score[best]))
        remaining.remove(int(candidates[best]))
    return order, scores, relevance


def _abs_corr(Z: F64) -> F64:
    """``|Pearson r|`` between the columns of ``Z``, clipped to [0, 1]."""
    if Z.shape[1] == 1:
        return np.ones((1, 1))
    corr = np.corrcoef(Z, rowvar=False)
    return np.clip(np.abs(corr), 0.0, 1.0)


class FeatureSelector:
    """Mann-Whitney U, Pearson de-duplication, mRMR and LASSO, as in the source paper.

    Parameters
    ----------
    p_threshold : float, default 0.05
        Mann-Whitney U features with ``p < p_threshold`` survive step 2.
    correlation_threshold : float, default 0.9
        Step 3 removes a feature whose ``|r|`` with a kept one exceeds this.
    max_features : int, default 30
        mRMR chooses at most this many features.
    n_folds : int, default 10
        LASSO cross-validation folds (fewer if a class has fewer training rows).
    seed : int, default 0
        Seed of the LASSO folds; the only randomness of the selection.
    lasso_max_iter : int, default 50000
        Coordinate-descent iterations of the LASSO fits (they stop earlier at ``tol``).

    Attributes
    ----------
    feature_names : tuple of str
        The input features the selector was fitted on, in input order.
    means, stds : ndarray of shape (n_input_features,)
        Training mean and standard deviation (``ddof=0``) of every input feature.
    """

    def __init__(
        self,
        *,
        p_threshold: float = 0.05,
        correlation_threshold: float = 0.9,
        max_features: int = 30,
        n_folds: int = 10,
        seed: int = 0,
        lasso_max_iter: int = 50_000,
    ) -> None:
        if not 0.0 < p_threshold <= 1.0:
            raise SelectionError(f"p_threshold must lie in (0, 1], not {p_threshold}")
        if not 0.0 < correlation_threshold <= 1.0:
            raise SelectionError(
                f"correlation_threshold must lie in (0, 1], not {correlation_threshold}"
            )
        if max_features < 1:
            raise SelectionError(f"max_features must be at least 1, not {max_features}")
        if n_folds < 2:
            raise SelectionError(f"n_folds must be at least 2, not {n_folds}")
        if lasso_max_iter < 1:
            raise SelectionError(f"lasso_max_iter must be at least 1, not {lasso_max_iter}")
        self.p_threshold = float(p_threshold)
        self.correlation_threshold = float(correlation_threshold)
        self.max_features = int(max_features)
        self.n_folds = int(n_folds)
        self.seed = int(seed)
        self.lasso_max_iter = int(lasso_max_iter)
        self.feature_names: tuple[str, ...] = ()
        self.means: F64 = np.zeros(0)
        self.stds: F64 = np.zeros(0)
        self._record: SelectionRecord | None = None

    # --- fitting -------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike, names: Sequence[str]) -> Self:
        """Fit the five steps on training data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features, finite.
        y : array-like of shape (n_samples,)
            Training labels, 0 or 1 (booleans accepted).
        names : sequence of str
            Unique feature names, one per column of ``X``.

        Returns
        -------
        FeatureSelector
            ``self``, fitted.

        Raises
        ------
        SelectionError
            If the input is malformed (shapes, non-finite values, labels, names) or a
            class has fewer than two rows.
        NoSignificantFeatureError
            If no feature passes the Mann-Whitney U test (or every feature is constant).
        """
        data, labels, feature_names = _check_training_input(X, y, names)
        n_samples = data.shape[0]

        # Step 1: z-score with training statistics; constants cannot be scaled.
        means = data.mean(axis=0)
        stds = data.std(axis=0)
        constant_mask = data.max(axis=0) == data.min(axis=0)
        stds[constant_mask] = 0.0
        keep1 = np.flatnonzero(~constant_mask)
        constant = tuple(feature_names[j] for j in np.flatnonzero(constant_mask))
        if keep1.size == 0:
            raise NoSignificantFeatureError(
                f"all {len(feature_names)} features are constant on the training data"
            )
        Z = (data[:, keep1] - means[keep1]) / stds[keep1]

        # Step 2: Mann-Whitney U, one call per feature so that scipy's choice of exact or
        # asymptotic p-value is made per feature, as the test is defined.
        positive = labels == 1
        p_values = np.array(
            [
                float(mannwhitneyu(Z[positive, j], Z[~positive, j], alternative="two-sided").pvalue)
                for j in range(Z.shape[1])
            ]
        )
        keep2 = np.flatnonzero(p_values < self.p_threshold)
        mwu_p = {feature_names[keep1[j]]: float(p_values[j]) for j in range(keep1.size)}
        if keep2.size == 0:
            raise NoSignificantFeatureError(
                f"no feature has a two-sided Mann-Whitney U p < {self.p_threshold} on the "
                f"training data ({keep1.size} non-constant features, {n_samples} rows, "
                f"{int(positive.sum())} positive)"
            )
        Z2 = Z[:, keep2]
        p2 = p_values[keep2]
        names2 = [feature_names[keep1[j]] for j in keep2]

        # Step 3: greedy de-duplication, smallest p first.
        corr2 = np.corrcoef(Z2, rowvar=False) if Z2.shape[1] > 1 else np.ones((1, 1))
        abs2 = np.clip(np.abs(corr2), 0.0, 1.0)
        visit = sorted(range(len(names2)), key=lambda j: (p2[j], j))
        kept3: list[int] = []
        drops: list[CorrelationDrop] = []
        for j in visit:
            partners = [i for i in kept3 if abs2[j, i] > self.correlation_threshold]
            if partners:
                partner = max(partners, key=lambda i: (abs2[j, i], -i))
                drops.append(CorrelationDrop(names2[j], names2[partner], float(corr2[j, partner])))
            else:
                kept3.append(j)
        keep3 = np.array(sorted(kept3))
        Z3 = Z2[:, keep3]
        names3 = [names2[j] for j in keep3]

        # Step 4: mRMR (FCQ).
        order, scores, relevance = mrmr_fcq(
            Z3, labels, self.max_features, abs_corr=abs2[np.ix_(keep3, keep3)]
        )
        if not order:
            # Cannot happen after step 2 (a feature with p < 1 has F > 0), but the
            # fallback below needs at least one feature.
            raise NoSignificantFeatureError("no mRMR candidate has a positive F statistic")
        Z4 = Z3[:, order]
        names4 = [names3[j] for j in order]

        # Step 5: LASSO on the 0/1 label.
        lasso = self._fit_lasso(Z4, labels, names4)
        if lasso.fallback is None:
            selected = tuple(n for n in names4 if lasso.coefficients[n] != 0.0)
        else:
            selected = (names4[0],)

        self.feature_names = tuple(feature_names)
        self.means = means
        self.stds = stds
        self._record = SelectionRecord(
            input_names=tuple(feature_names),
            n_samples=n_samples,
            n_positive=int(positive.sum()),
            constant=constant,
            after_zscore=tuple(feature_names[j] for j in keep1),
            mwu_p=mwu_p,
            after_mwu=tuple(names2),
            correlation_dropped=tuple(drops),
            after_correlation=tuple(names3),
            mrmr_relevance={names3[j]: float(relevance[j]) for j in range(len(names3))},
            mrmr_order=tuple(names4),
            mrmr_scores=tuple(scores),
            lasso=lasso,
            selected=selected,
        )
        return self

    def _fit_lasso(self, Z: F64, labels: NDArray[np.int64], names: list[str]) -> LassoRecord:
        splitter = lasso_folds(labels, self.n_folds, self.seed)
        model = LassoCV(
            cv=list(splitter.split(Z, labels)),
            max_iter=self.lasso_max_iter,
            selection="cyclic",  # deterministic coordinate order
        )
        model.fit(Z, labels.astype(np.float64))
        coefficients = {name: float(c) for name, c in zip(names, model.coef_, strict=True)}
        fallback = None
        if not any(coefficients.values()):
            fallback = (
                f"LASSO at the CV-optimal alpha {float(model.alpha_):.6g} set every "
                f"coefficient to zero; the first mRMR feature ({names[0]}) is kept instead"
            )
        mse = np.asarray(model.mse_path_, dtype=np.float64)
        # The coefficient path over the same alpha grid, recorded for the report (which
        # must not refit anything). LassoCV fits an intercept and lasso_path does not, so
        # both are centred as LassoCV does.
        y = labels.astype(np.float64)
        _, coefs, _ = lasso_path(
            Z - Z.mean(axis=0), y - y.mean(), alphas=model.alphas_, max_iter=self.lasso_max_iter
        )
        path = {
            name: tuple(float(c) for c in row)
            for name, row in zip(names, np.asarray(coefs, dtype=np.float64), strict=True)
        }
        return LassoRecord(
            alpha=float(model.alpha_),
            alphas=tuple(float(a) for a in model.alphas_),
            cv_mse_mean=tuple(float(v) for v in mse.mean(axis=1)),
            cv_mse_std=tuple(float(v) for v in mse.std(axis=1)),
            n_folds=int(splitter.get_n_splits()),
            coefficients=coefficients,
            intercept=float(model.intercept_),
            fallback=fallback,
            path=path,
        )

    # --- applying ------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_json`) has run."""
        return self._record is not None

    @property
    def record(self) -> SelectionRecord:
        """The record of every step (see :class:`SelectionRecord`)."""
        if self._record is None:
            raise SelectionError("the feature selector is not fitted")
        return self._record

    @property
    def selected_names(self) -> tuple[str, ...]:
        """The selected features, in mRMR order (the columns of :meth:`transform`)."""
        return self.record.selected

    def transform(self, X: ArrayLike, names: Sequence[str] | None = None) -> F64:
        """Select and z-score features with the training statistics.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_columns)
            Features of new rows.
        names : sequence of str, optional
            Names of the columns of ``X``. Without it, ``X`` must have the columns the
            selector was fitted on, in the same order; with it, the selected features
            are looked up by name (other columns are ignored).

        Returns
        -------
        ndarray of shape (n_samples, n_selected)
            The selected features, z-scored, in :attr:`selected_names` order.

        Raises
        ------
        SelectionError
            If the selector is not fitted, a column is missing, or a selected value is
            not finite.
        """
        selected = self.selected_names
        data = np.asarray(X, dtype=np.float64)
        if data.ndim != 2:
            raise SelectionError(f"features must be a 2-D array, not {data.ndim}-D")
        if names is None:
            if data.shape[1] != len(self.feature_names):
                raise SelectionError(
                    f"expected {len(self.feature_names)} feature columns, got {data.shape[1]}"
                )
            columns = [self.feature_names.index(n) for n in selected]
        else:
            given = list(names)
            if len(given) != data.shape[1]:
                raise SelectionError(f"{len(given)} names for {data.shape[1]} feature columns")
            missing = [n for n in selected if n not in given]
            if missing:
                raise SelectionError(f"selected features missing from the input: {missing}")
            columns = [given.index(n) for n in selected]
        index = [self.feature_names.index(n) for n in selected]
        values = data[:, columns]
        bad = ~np.isfinite(values)
        if bad.any():
            which = sorted({selected[j] for j in np.flatnonzero(bad.any(axis=0))})
            raise SelectionError(f"non-finite values in selected features: {which}")
        return (values - self.means[index]) / self.stds[index]

    def fit_transform(self, X: ArrayLike, y: ArrayLike, names: Sequence[str]) -> F64:
        """:meth:`fit`, then :meth:`transform` of the same data."""
        return self.fit(X, y, names).transform(X)

    # --- JSON ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The fitted selector as plain JSON data (dicts, lists, str, numbers, None).

        Returns
        -------
        dict
            Serialisable with :func:`json.dumps` (every float finite).
        """
        record = self.record
        lasso = record.lasso
        lasso_json: dict[str, Any] = {
            "alpha": lasso.alpha,
            "alphas": list(lasso.alphas),
            "cv_mse_mean": list(lasso.cv_mse_mean),
            "cv_mse_std": list(lasso.cv_mse_std),
            "n_folds": lasso.n_folds,
            "coefficients": dict(lasso.coefficients),
            "intercept": lasso.intercept,
            "fallback": lasso.fallback,
        }
        if lasso.path is not None:  # an older selector has none; its JSON stays as it was
            lasso_json["path"] = {name: list(values) for name, values in lasso.path.items()}
        return {
            "format": SELECTOR_FORMAT,
            "version": _VERSION,
            "params": {
                "p_threshold": self.p_threshold,
                "correlation_threshold": self.correlation_threshold,
                "max_features": self.max_features,
                "n_folds": self.n_folds,
                "seed": self.seed,
                "lasso_max_iter": self.lasso_max_iter,
            },
            "feature_names": list(self.feature_names),
            "means": [float(v) for v in self.means],
            "stds": [float(v) for v in self.stds],
            "selected": list(record.selected),
            "record": {
                "n_samples": record.n_samples,
                "n_positive": record.n_positive,
                "constant": list(record.constant),
                "after_zscore": list(record.after_zscore),
                "mwu_p": dict(record.mwu_p),
                "after_mwu": list(record.after_mwu),
                "correlation_dropped": [
                    {"dropped": d.dropped, "kept": d.kept, "r": d.r}
                    for d in record.correlation_dropped
                ],
                "after_correlation": list(record.after_correlation),
                "mrmr_relevance": dict(record.mrmr_relevance),
                "mrmr_order": list(record.mrmr_order),
                "mrmr_scores": list(record.mrmr_scores),
                "lasso": lasso_json,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSelector:
        """Rebuild a fitted selector from :meth:`to_json` output, validating it.

        Parameters
        ----------
        data : mapping
            Parsed JSON (e.g. from :func:`json.load`).

        Returns
        -------
        FeatureSelector
            A fitted selector that transforms exactly like the one saved.

        Raises
        ------
        SelectionError
            If the data are not a selector of this format and version, or are
            inconsistent (lengths, unknown names, non-finite or non-positive scales).
        """
        if not isinstance(data, Mapping):
            raise SelectionError("a feature selector must be a JSON object")
        if data.get("format") != SELECTOR_FORMAT or data.get("version") != _VERSION:
            raise SelectionError(
                f"not a feature selector of format {SELECTOR_FORMAT!r} version {_VERSION}: "
                f"format={data.get('format')!r} version={data.get('version')!r}"
            )
        params = _obj(data, "params")
        selector = cls(
            p_threshold=_num(params, "p_threshold"),
            correlation_threshold=_num(params, "correlation_threshold"),
            max_features=_int(params, "max_features"),
            n_folds=_int(params, "n_folds"),
            seed=_int(params, "seed"),
            lasso_max_iter=_int(params, "lasso_max_iter"),
        )
        names = _strs(data, "feature_names")
        if len(set(names)) != len(names) or not names:
            raise SelectionError("feature_names must be non-empty and unique")
        means = np.array(_nums(data, "means"))
        stds = np.array(_nums(data, "stds"))
        if means.shape != (len(names),) or stds.shape != (len(names),):
            raise SelectionError(
                f"means and stds must have one value per feature ({len(names)}), "
                f"got {means.size} and {stds.size}"
            )
        selected = _strs(data, "selected")
        known = set(names)
        if not selected or len(set(selected)) != len(selected) or not set(selected) <= known:
            raise SelectionError("selected must be non-empty, unique and among feature_names")
        for n in selected:
            if not stds[names.index(n)] > 0.0:
                raise SelectionError(f"selected feature {n!r} has a non-positive scale")
        selector.feature_names = tuple(names)
        selector.means = means
        selector.stds = stds
        selector._record = _record_from_json(_obj(data, "record"), tuple(names), tuple(selected))
        return selector


def _check_training_input(
    X: ArrayLike, y: ArrayLike, names: Sequence[str]
) -> tuple[F64, NDArray[np.int64], list[str]]:
    """Validate and convert the training input of :meth:`FeatureSelector.fit`."""
    data = np.asarray(X, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise SelectionError(f"features must be a non-empty 2-D array, got shape {data.shape}")
    raw = np.asarray(y)
    if raw.shape != (data.shape[0],):
        raise SelectionError(f"{raw.shape} labels for {data.shape[0]} rows")
    if raw.dtype == np.bool_:
        raw = raw.astype(np.int64)
    if not np.isin(raw, (0, 1)).all():
        raise SelectionError("labels must be 0 or 1")
    labels = raw.astype(np.int64)
    feature_names = [str(n) for n in names]
    if len(feature_names) != data.shape[1]:
        raise SelectionError(f"{len(feature_names)} names for {data.shape[1]} feature columns")
    if len(set(feature_names)) != len(feature_names):
        raise SelectionError("feature names must be unique")
    bad = ~np.isfinite(data).all(axis=0)
    if bad.any():
        which = [feature_names[j] for j in np.flatnonzero(bad)]
        raise SelectionError(
            f"{len(which)} features have non-finite training values, e.g. {which[:5]}"
        )
    for cls in (0, 1):
        if int(np.sum(labels == cls)) < 2:
            raise SelectionError(f"class {cls} has fewer than two training rows")
    return data, labels, feature_names
