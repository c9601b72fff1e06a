"""Feature selection: the paper's five steps, fitted on training data only, and JSON.

Seeded synthetic data from ``make_classification`` plus hand-built columns (a constant,
a near-duplicate, features with identical class distributions, an outlier-driven
feature). The references are written separately from the code under test: an
independent ``LassoCV`` run on the same folds, numpy for the z-score, and the
``mrmr-selection`` package for the mRMR order.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.stats import mannwhitneyu
from sklearn.datasets import make_classification
from sklearn.linear_model import LassoCV
from sklearn.model_selection import StratifiedKFold

from model_bundle.models import FeatureSelector, mrmr_fcq
from onfh_dlr.errors import NoSignificantFeatureError, SelectionError

SEED = 11

Dataset = tuple[NDArray[np.float64], NDArray[np.int64], list[str]]


def _cohort(seed: int = SEED, n_samples: int = 160) -> Dataset:
    """Informative and noise features plus hand-built ones.

    Columns: ``inf0`` = label + noise (hand-built, clearly informative), ``inf1..inf3``
    informative and ``noise0..noise29`` noise (from make_classification, unshuffled so
    the roles are known), ``const`` constant, ``dup_inf0`` = inf0 + small noise
    (r ~ 0.99), ``signal`` = label + less noise.
    """
    X, y = make_classification(
        n_samples=n_samples,
        n_features=33,
        n_informative=3,
        n_redundant=0,
        n_repeated=0,
        shuffle=False,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    inf0 = y + rng.normal(scale=1.2, size=n_samples)
    dup = inf0 + rng.normal(scale=0.14 * inf0.std(), size=n_samples)
    signal = y + rng.normal(scale=0.6, size=n_samples)
    const = np.full(n_samples, 3.25)
    data = np.column_stack([inf0, X, const, dup, signal])
    names = [f"inf{i}" for i in range(4)] + [f"noise{i}" for i in range(30)]
    names += ["const", "dup_inf0", "signal"]
    return data, y.astype(np.int64), names


@pytest.fixture(scope="module")
def cohort() -> Dataset:
    return _cohort()


@pytest.fixture(scope="module")
def fitted(cohort: Dataset) -> FeatureSelector:
    X, y, names = cohort
    return FeatureSelector(seed=SEED).fit(X, y, names)


def test_informative_feature_survives(fitted: FeatureSelector) -> None:
    assert "signal" in fitted.selected_names
    assert fitted.record.mrmr_order[0] == "signal"  # by far the largest F
    # Selected features come in mRMR order and are a subset of every earlier stage.
    rec = fitted.record
    order = [n for n in rec.mrmr_order if n in rec.selected]
    assert list(rec.selected) == order
    assert set(rec.selected) <= set(rec.after_correlation) <= set(rec.after_mwu)
    assert set(rec.after_mwu) <= set(rec.after_zscore)
    assert [n for _, n in rec.stage_counts()] == [
        37,
        36,
        len(rec.after_mwu),
        len(rec.after_correlation),
        len(rec.mrmr_order),
        len(rec.selected),
    ]


def test_constant_feature_is_dropped(fitted: FeatureSelector) -> None:
    rec = fitted.record
    assert rec.constant == ("const",)
    assert "const" not in rec.after_zscore
    assert "const" not in rec.mwu_p
    assert fitted.stds[fitted.feature_names.index("const")] == 0.0


def test_near_duplicate_removed_and_smaller_p_kept(
    cohort: Dataset, fitted: FeatureSelector
) -> None:
    X, y, names = cohort
    r = np.corrcoef(X[:, names.index("inf0")], X[:, names.index("dup_inf0")])[0, 1]
    assert 0.985 < r < 0.995
    rec = fitted.record
    assert {"inf0", "dup_inf0"} <= set(rec.after_mwu)
    drops = {d.dropped: d for d in rec.correlation_dropped}
    assert "dup_inf0" in drops
    assert drops["dup_inf0"].kept == "inf0"
    assert drops["dup_inf0"].r == pytest.approx(r, abs=1e-12)
    assert "inf0" in rec.after_correlation and "dup_inf0" not in rec.after_correlation
    # The rule, for every pair the step saw: the kept feature has the smaller p, and the
    # p-values are the two-sided Mann-Whitney U of the raw training values.
    for d in rec.correlation_dropped:
        assert rec.mwu_p[d.kept] <= rec.mwu_p[d.dropped]
        assert abs(d.r) > 0.9
    pos = y == 1
    for name in ("inf0", "dup_inf0"):
        col = X[:, names.index(name)]
        ref = mannwhitneyu(col[pos], col[~pos], alternative="two-sided").pvalue
        assert rec.mwu_p[name] == pytest.approx(ref, rel=1e-9)
    # No two kept features are correlated above the threshold.
    kept = [names.index(n) for n in rec.after_correlation]
    corr = np.abs(np.corrcoef(X[:, kept], rowvar=False))
    assert (corr[~np.eye(len(kept), dtype=bool)] <= 0.9).all()


def test_mrmr_keeps_at_most_30() -> None:
    # 60 features that each shift with the label, nearly uncorrelated with one another:
    # all pass Mann-Whitney and the Pearson step, so mRMR has more than 30 to choose from.
    rng = np.random.default_rng(SEED)
    y = np.r_[np.zeros(75, dtype=np.int64), np.ones(75, dtype=np.int64)]
    X = y[:, None] * rng.uniform(0.8, 1.6, size=60) + rng.normal(size=(150, 60))
    names = [f"f{i:02d}" for i in range(X.shape[1])]
    rec = FeatureSelector(seed=SEED).fit(X, y, names).record
    assert len(rec.after_correlation) > 30
    assert len(rec.mrmr_order) == 30
    assert len(rec.mrmr_scores) == 30
    assert 1 <= len(rec.selected) <= 30


def test_fewer_than_30_candidates(fitted: FeatureSelector) -> None:
    rec = fitted.record
    assert len(rec.after_correlation) < 30
    # Every candidate passed Mann-Whitney, so every one has F > 0 and mRMR ranks all.
    assert sorted(rec.mrmr_order) == sorted(rec.after_correlation)


def test_lasso_equals_independent_lassocv(cohort: Dataset, fitted: FeatureSelector) -> None:
    X, y, names = cohort
    rec = fitted.record
    cols = [names.index(n) for n in rec.mrmr_order]
    train = X[:, cols]
    Z = (train - train.mean(axis=0)) / train.std(axis=0)
    folds = list(StratifiedKFold(n_splits=10, shuffle=True, random_state=SEED).split(Z, y))
    ref = LassoCV(cv=folds, max_iter=50_000).fit(Z, y.astype(float))
    assert rec.lasso.n_folds == 10
    assert rec.lasso.alpha == pytest.approx(float(ref.alpha_), rel=1e-12)
    assert np.allclose(rec.lasso.alphas, ref.alphas_, rtol=1e-12, atol=0)
    assert np.allclose(rec.lasso.cv_mse_mean, ref.mse_path_.mean(axis=1), rtol=1e-9, atol=0)
    coefs = np.array([rec.lasso.coefficients[n] for n in rec.mrmr_order])
    np.testing.assert_allclose(coefs, ref.coef_, rtol=0, atol=1e-10)
    expected = tuple(n for n, c in zip(rec.mrmr_order, ref.coef_, strict=True) if c != 0)
    assert rec.selected == expected
    assert rec.lasso.fallback is None


def test_lasso_with_no_survivor_keeps_top_mrmr_feature() -> None:
    # Hand-built: class 1 ranks above class 0 (Mann-Whitney p ~ 6e-4), but two class-0
    # outliers cancel the difference in means, so no linear fit beats the intercept.
    y = np.r_[np.zeros(20, dtype=np.int64), np.ones(20, dtype=np.int64)]
    x = np.r_[np.arange(18.0), [110.0, 110.5], np.arange(10.0, 30.0)]
    rec = FeatureSelector(seed=0).fit(x[:, None], y, ["ranked"]).record
    assert rec.mwu_p["ranked"] < 0.001
    assert rec.lasso.coefficients == {"ranked": 0.0}
    assert rec.selected == ("ranked",)
    assert rec.lasso.fallback is not None and "ranked" in rec.lasso.fallback


def test_nothing_significant_raises() -> None:
    # Hand-built: each feature takes the same values in both classes, so U = n1*n2/2.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(25, 4))
    X = np.vstack([base, base[::-1]])
    y = np.r_[np.zeros(25, dtype=np.int64), np.ones(25, dtype=np.int64)]
    with pytest.raises(NoSignificantFeatureError, match="Mann-Whitney"):
        FeatureSelector().fit(X, y, ["a", "b", "c", "d"])
    with pytest.raises(NoSignificantFeatureError, match="constant"):
        FeatureSelector().fit(np.ones((50, 2)), y, ["a", "b"])


def test_fit_on_train_only_uses_train_statistics() -> None:
    X, y, names = _cohort(seed=SEED + 1, n_samples=200)
    train, test = np.arange(140), np.arange(140, 200)
    sel = FeatureSelector(seed=SEED).fit(X[train], y[train], names)
    np.testing.assert_array_equal(sel.means, X[train].mean(axis=0))
    stds = X[train].std(axis=0)
    stds[names.index("const")] = 0.0
    np.testing.assert_array_equal(sel.stds, stds)
    cols = [names.index(n) for n in sel.selected_names]
    expected = (X[test][:, cols] - X[train].mean(axis=0)[cols]) / X[train].std(axis=0)[cols]
    np.testing.assert_array_equal(sel.transform(X[test]), expected)
    # Not the test set's own statistics.
    own = (X[test][:, cols] - X[test][:, cols].mean(axis=0)) / X[test][:, cols].std(axis=0)
    assert not np.allclose(sel.transform(X[test]), own)
    # Refitting on train + test changes the statistics: the fit really saw only train.
    assert not np.array_equal(FeatureSelector(seed=SEED).fit(X, y, names).means, sel.means)


def test_transform_by_name_and_errors(cohort: Dataset, fitted: FeatureSelector) -> None:
    X, _, names = cohort
    perm = np.random.default_rng(1).permutation(len(names))
    by_name = fitted.transform(X[:, perm], [names[i] for i in perm])
    np.testing.assert_array_equal(by_name, fitted.transform(X))
    with pytest.raises(SelectionError, match="expected 37 feature columns"):
        fitted.transform(X[:, :-1])
    with pytest.raises(SelectionError, match="missing"):
        fitted.transform(X[:, :3], names[:3])
    bad = X.copy()
    bad[0, names.index(fitted.selected_names[0])] = np.nan
    with pytest.raises(SelectionError, match="non-finite"):
        fitted.transform(bad)


def test_bad_training_input_raises(cohort: Dataset) -> None:
    X, y, names = cohort
    with pytest.raises(SelectionError, match="names"):
        FeatureSelector().fit(X, y, names[:-1])
    with pytest.raises(SelectionError, match="unique"):
        FeatureSelector().fit(X, y, [*names[:-1], names[0]])
    with pytest.raises(SelectionError, match="0 or 1"):
        FeatureSelector().fit(X, y * 2, names)
    bad = X.copy()
    bad[3, 5] = np.inf
    with pytest.raises(SelectionError, match="non-finite"):
        FeatureSelector().fit(bad, y, names)
    with pytest.raises(SelectionError, match="not fitted"):
        _ = FeatureSelector().selected_names


def test_json_round_trip_is_exact(cohort: Dataset, fitted: FeatureSelector) -> None:
    X, _, _ = cohort
    text = json.dumps(fitted.to_json(), allow_nan=False)
    loaded = FeatureSelector.from_json(json.loads(text))
    assert loaded.selected_names == fitted.selected_names
    assert loaded.record == fitted.record
    np.testing.assert_array_equal(loaded.transform(X), fitted.transform(X))
    assert json.dumps(loaded.to_json(), allow_nan=False) == text


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), "something-else", "format"),
        (("means",), [0.0, 1.0], "one value per feature"),
        (("stds",), "oops", "array"),
        (("selected",), ["no-such-feature"], "among feature_names"),
        (("record", "lasso", "alpha"), float("nan"), "finite"),
        (("record", "mrmr_order"), [1, 2], "strings"),
    ],
)
def test_tampered_json_raises(
    fitted: FeatureSelector, path: tuple[str, ...], value: Any, message: str
) -> None:
    data = json.loads(json.dumps(fitted.to_json()))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SelectionError, match=message):
        FeatureSelector.from_json(data)


def test_deterministic_for_a_seed(cohort: Dataset, fitted: FeatureSelector) -> None:
    X, y, names = cohort
    again = FeatureSelector(seed=SEED).fit(X, y, names)
    assert again.to_json() == fitted.to_json()


def _reference_mrmr(X: NDArray[np.float64], y: NDArray[np.int64], names: list[str], k: int) -> Any:
    pd = pytest.importorskip("pandas")
    # mrmr-selection calls warnings.filterwarnings("ignore") when imported; keep that
    # from leaking into the rest of the test session.
    with warnings.catch_warnings():
        mrmr = pytest.importorskip("mrmr")
        return mrmr.mrmr_classif(
            X=pd.DataFrame(X, columns=names),
            y=pd.Series(y),
            K=k,
            n_jobs=1,
            show_progress=False,
        )


def test_mrmr_order_matches_reference_small_example() -> None:
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(40, dtype=np.int64), np.ones(40, dtype=np.int64)]
    strong = y + rng.normal(scale=0.7, size=80)
    X = np.column_stack(
        [
            strong,
            strong + rng.normal(scale=0.1, size=80),  # a near-copy of column 0
            y + rng.normal(scale=1.5, size=80),  # weaker, independent of 0
            rng.normal(size=(80, 9)),
        ]
    )
    names = [f"x{i}" for i in range(X.shape[1])]
    order, scores, relevance = mrmr_fcq(X, y, 8)
    assert len(order) == 8 and len(scores) == 8 and relevance.shape == (12,)
    assert [names[i] for i in order] == _reference_mrmr(X, y, names, 8)
    # The first choice is the most relevant feature; its score is its F statistic.
    assert order[0] == int(np.argmax(relevance))
    assert scores[0] == relevance[order[0]]


def test_mrmr_order_matches_reference_in_pipeline(cohort: Dataset, fitted: FeatureSelector) -> None:
    X, y, names = cohort
    rec = fitted.record
    cols = [names.index(n) for n in rec.after_correlation]
    reference = _reference_mrmr(X[:, cols], y, list(rec.after_correlation), 30)
    assert list(rec.mrmr_order) == reference
