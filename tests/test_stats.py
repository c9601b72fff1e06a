"""Tests of the statistics in model_bundle.evaluation against independent references.

Every reference here is written separately from the code under test: sklearn and scipy
for the AUC, O(n^2) loops over case pairs for DeLong's structural components, an explicit
loop over risk groups for Hosmer-Lemeshow, statsmodels for Wilson intervals, sklearn for
confusion matrices and calibration curves, a brute-force scan for Youden's J and the
textbook net-benefit formula for the decision curve. Published values: Hanley & McNeil's
(1982) CT rating example.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import optimize, special, stats
from sklearn.calibration import (
    calibration_curve as sk_calibration_curve,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from statsmodels.stats.proportion import proportion_confint

from model_bundle.evaluation import (
    TREAT_ALL,
    TREAT_NONE,
    ConfusionCounts,
    binary_metrics,
    calibration_curve,
    calibration_slope_intercept,
    confusion_counts,
    decision_curve,
    delong_covariance,
    delong_test,
    hosmer_lemeshow,
    roc_auc_delong,
    wilson_interval,
    youden_threshold,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _sample(
    n: int, seed: int, shift: float = 1.0, decimals: int | None = None
) -> tuple[IntArray, FloatArray]:
    """Labels (about 40 % positive) and binormal scores; rounding creates ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    y[:2] = [0, 1]  # both classes always present
    score = rng.normal(size=n) + shift * y
    if decimals is not None:
        score = np.round(score, decimals)
    return y, score


def _psi(x: float, y: float) -> float:
    """DeLong's kernel: 1 if the positive outscores the negative, 1/2 on a tie."""
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _brute_components(y: IntArray, score: FloatArray) -> tuple[list[float], list[float]]:
    """V10 (per positive) and V01 (per negative) by the O(m n) definition of DeLong 1988."""
    pos = [float(s) for s, t in zip(score, y, strict=True) if t == 1]
    neg = [float(s) for s, t in zip(score, y, strict=True) if t == 0]
    v10 = [sum(_psi(x, w) for w in neg) / len(neg) for x in pos]
    v01 = [sum(_psi(x, w) for x in pos) / len(pos) for w in neg]
    return v10, v01


def _brute_cov(a: list[float], b: list[float]) -> float:
    """Sample covariance with denominator len - 1, by a plain loop."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    return sum((u - ma) * (v - mb) for u, v in zip(a, b, strict=True)) / (len(a) - 1)


def _brute_delong(
    y: IntArray, score_a: FloatArray, score_b: FloatArray
) -> tuple[float, float, float, float, float]:
    """(auc_a, auc_b, var_a, var_b, cov_ab) from brute-force structural components."""
    a10, a01 = _brute_components(y, score_a)
    b10, b01 = _brute_components(y, score_b)
    m, n = len(a10), len(a01)
    var_a = _brute_cov(a10, a10) / m + _brute_cov(a01, a01) / n
    var_b = _brute_cov(b10, b10) / m + _brute_cov(b01, b01) / n
    cov_ab = _brute_cov(a10, b10) / m + _brute_cov(a01, b01) / n
    return sum(a10) / m, sum(b10) / m, var_a, var_b, cov_ab


# --------------------------------------------------------------------------------------
# AUC with DeLong variance
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 1), (2, 0)])
def test_auc_equals_sklearn_and_mann_whitney(seed: int, decimals: int | None) -> None:
    y, score = _sample(150, seed, decimals=decimals)
    result = roc_auc_delong(y, score)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    u = stats.mannwhitneyu(score[y == 1], score[y == 0], alternative="two-sided").statistic
    assert result.auc == pytest.approx(roc_auc_score(y, score), rel=1e-12)
    assert result.auc == pytest.approx(u / (n_pos * n_neg), rel=1e-12)
    assert (result.n_pos, result.n_neg) == (n_pos, n_neg)


@pytest.mark.parametrize(("seed", "decimals"), [(3, None), (4, 1), (5, 0)])
def test_delong_variance_equals_bruteforce_structural_components(
    seed: int, decimals: int | None
) -> None:
    y, score = _sample(70, seed, decimals=decimals)
    auc, _, var, _, _ = _brute_delong(y, score, score)
    result = roc_auc_delong(y, score)
    assert result.auc == pytest.approx(auc, rel=1e-12)
    assert result.se == pytest.approx(math.sqrt(var), rel=1e-10)
    z = stats.norm.ppf(0.975)
    assert result.ci_low == pytest.approx(auc - z * math.sqrt(var), rel=1e-10)
    assert result.ci_high == pytest.approx(auc + z * math.sqrt(var), rel=1e-10)


def test_delong_covariance_matrix_equals_bruteforce() -> None:
    y, a = _sample(60, 6, decimals=1)
    b = np.round(a + np.random.default_rng(7).normal(size=a.size), 1)
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    auc_a, auc_b, var_a, var_b, cov_ab = _brute_delong(y, a, b)
    np.testing.assert_allclose(aucs, [auc_a, auc_b], rtol=1e-12)
    np.testing.assert_allclose(cov, [[var_a, cov_ab], [cov_ab, var_b]], rtol=1e-10)


def test_delong_se_agrees_with_bootstrap_se() -> None:
    # DeLong's variance is a large-sample (jackknife-like) estimate; a stratified
    # bootstrap of the same AUC should agree to within Monte Carlo and O(1/n) error.
    y, score = _sample(300, 8, shift=1.2)
    result = roc_auc_delong(y, score)
    rng = np.random.default_rng(9)
    pos, neg = score[y == 1], score[y == 0]
    boot = np.empty(2000)
    for i in range(boot.size):
        p = rng.choice(pos, pos.size)
        q = rng.choice(neg, neg.size)
        boot[i] = (stats.rankdata(np.r_[p, q])[: p.size].sum() - p.size * (p.size + 1) / 2) / (
            p.size * q.size
        )
    assert result.se == pytest.approx(boot.std(ddof=1), rel=0.12)


def test_hanley_mcneil_1982_published_example() -> None:
    # Hanley & McNeil (Radiology 1982;143:29-36), Table 1: CT ratings 1-5 of 58 normal
    # and 51 abnormal cases; published area 0.893, standard error 0.032.
    neg = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    pos = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(neg.size, dtype=np.int64), np.ones(pos.size, dtype=np.int64)]
    score = np.r_[neg, pos].astype(np.float64)
    result = roc_auc_delong(y, score)
    assert round(result.auc, 3) == 0.893
    # Their SE comes from an exponential-model approximation, not DeLong's estimator:
    # check the transcription with their own formula, then DeLong's SE loosely.
    a, m, n = result.auc, pos.size, neg.size
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    hm_se = math.sqrt((a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n))
    assert round(hm_se, 3) == 0.032
    assert result.se == pytest.approx(0.032, abs=0.0025)


def test_logit_ci_formula_and_bounds() -> None:
    y, score = _sample(40, 10, shift=2.0)
    normal = roc_auc_delong(y, score)
    logit = roc_auc_delong(y, score, ci_method="logit")
    a, se = normal.auc, normal.se
    z = stats.norm.ppf(0.975)
    half = z * se / (a * (1 - a))
    lo = 1 / (1 + math.exp(-(math.log(a / (1 - a)) - half)))
    hi = 1 / (1 + math.exp(-(math.log(a / (1 - a)) + half)))
    assert logit.se == normal.se
    assert (logit.ci_low, logit.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert 0.0 < logit.ci_low < a < logit.ci_high < 1.0
    assert logit.ci_method == "logit"


def test_other_levels_use_matching_critical_value() -> None:
    y, score = _sample(80, 11)
    r90 = roc_auc_delong(y, score, level=0.90)
    assert r90.ci_high - r90.auc == pytest.approx(stats.norm.ppf(0.95) * r90.se, rel=1e-12)


def test_perfect_separation_gives_zero_se_and_clipped_interval() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    normal = roc_auc_delong(y, score)
    assert (normal.auc, normal.se, normal.ci_low, normal.ci_high) == (1.0, 0.0, 1.0, 1.0)
    logit = roc_auc_delong(y, score, ci_method="logit")
    assert math.isnan(logit.ci_low) and math.isnan(logit.ci_high)
    assert logit.note is not None and "logit" in logit.note


def test_normal_ci_is_clipped_to_unit_interval() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    score = np.arange(8, dtype=np.float64)
    result = roc_auc_delong(y, score)
    assert result.auc + 1.96 * result.se > 1.0
    assert result.ci_high == 1.0


def test_single_case_in_a_class_has_undefined_variance() -> None:
    y = np.array([0, 0, 0, 1])
    result = roc_auc_delong(y, [0.1, 0.5, 0.3, 0.4])
    assert result.auc == pytest.approx(roc_auc_score(y, [0.1, 0.5, 0.3, 0.4]))
    assert math.isnan(result.se) and math.isnan(result.ci_low)
    assert result.note is not None and "at least 2" in result.note


def test_smallest_sample_with_a_variance() -> None:
    y = np.array([0, 1, 0, 1])
    score = np.array([0.2, 0.6, 0.5, 0.4])
    auc, _, var, _, _ = _brute_delong(y, score, score)
    result = roc_auc_delong(y, score)
    assert result.auc == pytest.approx(auc)
    assert result.se == pytest.approx(math.sqrt(var))


def test_scores_are_never_flipped() -> None:
    y, score = _sample(100, 12)
    assert roc_auc_delong(y, -score).auc == pytest.approx(1 - roc_auc_delong(y, score).auc)
    assert roc_auc_delong(y, -score).auc < 0.5


@pytest.mark.parametrize("y", [np.zeros(5, dtype=np.int64), np.ones(5, dtype=np.int64)])
def test_single_class_raises_naming_the_problem(y: IntArray) -> None:
    score = np.linspace(0.1, 0.9, 5)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc_delong(y, score)
    with pytest.raises(ValueError, match="both classes"):
        delong_test(y, score, score)
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold(y, score)
    with pytest.raises(ValueError, match="both classes"):
        calibration_slope_intercept(y, score)
    with pytest.raises(ValueError, match="both classes"):
        decision_curve(y, {"m": score})


def test_malformed_input_raises() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc_delong([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc_delong([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="has 2 values"):
        roc_auc_delong([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        roc_auc_delong([], [])
    with pytest.raises(ValueError, match="level"):
        roc_auc_delong([0, 1], [0.1, 0.2], level=95)
    with pytest.raises(ValueError, match="probabilities"):
        hosmer_lemeshow([0, 1, 0, 1], [0.1, 1.2, 0.3, 0.4], groups=3)


def test_bool_labels_are_accepted() -> None:
    y, score = _sample(50, 13)
    assert roc_auc_delong(y.astype(bool), score) == roc_auc_delong(y, score)


# --------------------------------------------------------------------------------------
# DeLong test
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "decimals"), [(20, None), (21, 1)])
def test_delong_test_equals_bruteforce(seed: int, decimals: int | None) -> None:
    y, a = _sample(80, seed, decimals=decimals)
    noise = np.random.default_rng(seed + 100).normal(scale=1.5, size=a.size)
    b = a + noise if decimals is None else np.round(a + noise, decimals)
    auc_a, auc_b, var_a, var_b, cov_ab = _brute_delong(y, a, b)
    se = math.sqrt(var_a + var_b - 2 * cov_ab)
    z = (auc_a - auc_b) / se
    result = delong_test(y, a, b)
    assert result.diff == pytest.approx(auc_a - auc_b, rel=1e-12)
    assert result.se == pytest.approx(se, rel=1e-10)
    assert result.z == pytest.approx(z, rel=1e-10)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-8)
    crit = stats.norm.ppf(0.975)
    assert result.ci_low == pytest.approx(auc_a - auc_b - crit * se, rel=1e-10)
    assert result.ci_high == pytest.approx(auc_a - auc_b + crit * se, rel=1e-10)


def test_delong_test_is_antisymmetric() -> None:
    y, a = _sample(90, 22)
    b = a + np.random.default_rng(23).normal(size=a.size)
    ab, ba = delong_test(y, a, b), delong_test(y, b, a)
    assert ab.z == pytest.approx(-ba.z)
    assert ab.p_value == pytest.approx(ba.p_value)


def test_identical_rankings_give_p_one() -> None:
    y, a = _sample(60, 24)
    for b in (a.copy(), special.expit(a), 3 * a + 1):  # same ranking, rank-based test
        result = delong_test(y, a, b)
        assert (result.diff, result.se, result.z, result.p_value) == (0.0, 0.0, 0.0, 1.0)
        assert result.note is not None and "identical" in result.note


def test_zero_variance_with_a_difference_is_undefined() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    a = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    result = delong_test(y, a, -a)
    assert result.diff == 1.0
    assert math.isnan(result.z) and math.isnan(result.p_value)
    assert result.note is not None and "zero variance" in result.note


def test_delong_test_pvalues_uniform_under_null() -> None:
    # Two different but equally good markers sharing a latent signal: H0 holds exactly.
    rng = np.random.default_rng(25)
    n, sims = 200, 500
    p_values = np.empty(sims)
    for i in range(sims):
        y = (rng.random(n) < 0.4).astype(np.int64)
        y[:2] = [0, 1]
        latent = y + rng.normal(size=n)
        a = latent + rng.normal(size=n)
        b = latent + rng.normal(size=n)
        p_values[i] = delong_test(y, a, b).p_value
    # Loose: DeLong's test is asymptotic, and 500 p-values resolve uniformity only coarsely.
    assert stats.kstest(p_values, "uniform").pvalue > 0.001
    assert 0.025 <= np.mean(p_values < 0.05) <= 0.085


def test_delong_test_detects_a_real_difference() -> None:
    rng = np.random.default_rng(26)
    y = (rng.random(300) < 0.5).astype(np.int64)
    strong = 2.0 * y + rng.normal(size=y.size)
    weak = 0.3 * y + rng.normal(size=y.size)
    result = delong_test(y, strong, weak)
    assert result.diff > 0 and result.p_value < 1e-6


# --------------------------------------------------------------------------------------
# Hosmer-Lemeshow and calibration
# --------------------------------------------------------------------------------------


def _hand_hosmer_lemeshow(y: IntArray, p: FloatArray, g: int) -> tuple[float, int, list[int]]:
    """The R hoslem.test recipe by hand: type-7 quantile cuts, (lo, hi] groups."""
    cuts = [float(np.percentile(p, 100 * k / g)) for k in range(g + 1)]
    stat, sizes = 0.0, []
    for k in range(g):
        lo, hi = cuts[k], cuts[k + 1]
        members = [i for i in range(p.size) if (lo < p[i] <= hi) or (k == 0 and p[i] == lo)]
        if not members:
            continue
        obs1 = sum(int(y[i]) for i in members)
        exp1 = sum(float(p[i]) for i in members)
        obs0, exp0 = len(members) - obs1, len(members) - exp1
        stat += (obs1 - exp1) ** 2 / exp1 + (obs0 - exp0) ** 2 / exp0
        sizes.append(len(members))
    return stat, len(sizes) - 2, sizes


def test_hosmer_lemeshow_equals_hand_loop_over_deciles() -> None:
    rng = np.random.default_rng(30)
    p = rng.uniform(0.02, 0.98, size=137)
    y = (rng.random(p.size) < p).astype(np.int64)
    stat, dof, sizes = _hand_hosmer_lemeshow(y, p, 10)
    result = hosmer_lemeshow(y, p)
    assert result.statistic == pytest.approx(stat, rel=1e-12)
    assert result.dof == dof == 8
    assert result.p_value == pytest.approx(stats.chi2.sf(stat, 8), rel=1e-10)
    assert result.table["n"].tolist() == sizes
    assert result.table["observed"].sum() == y.sum()
    assert result.table["expected"].sum() == pytest.approx(p.sum())
    assert result.note is None


def test_hosmer_lemeshow_keeps_ties_together_and_reduces_dof() -> None:
    rng = np.random.default_rng(31)
    p = rng.choice([0.1, 0.2, 0.3, 0.5, 0.8], size=200, p=[0.4, 0.1, 0.2, 0.2, 0.1])
    y = (rng.random(p.size) < p).astype(np.int64)
    stat, dof, sizes = _hand_hosmer_lemeshow(y, p, 10)
    result = hosmer_lemeshow(y, p)
    assert result.statistic == pytest.approx(stat, rel=1e-12)
    assert result.table["n"].tolist() == sizes
    assert result.groups == len(sizes) < 10
    assert result.dof == dof == result.groups - 2
    for value in np.unique(p):  # a tied value never straddles two groups
        inside = (result.table["prob_min"] <= value) & (result.table["prob_max"] >= value)
        assert int(inside.sum()) == 1
    assert result.note is not None and "non-empty groups" in result.note


def test_hosmer_lemeshow_external_dof() -> None:
    rng = np.random.default_rng(32)
    p = rng.uniform(0.05, 0.95, size=100)
    y = (rng.random(p.size) < p).astype(np.int64)
    internal, external = hosmer_lemeshow(y, p), hosmer_lemeshow(y, p, external=True)
    assert (internal.dof, external.dof) == (8, 10)
    assert external.statistic == internal.statistic
    assert external.p_value == pytest.approx(stats.chi2.sf(internal.statistic, 10))


def test_hosmer_lemeshow_calibrated_mostly_not_significant() -> None:
    rng = np.random.default_rng(33)
    p_values = []
    for _ in range(200):
        p = special.expit(rng.normal(-0.5, 1.5, size=400))
        y = (rng.random(p.size) < p).astype(np.int64)
        p_values.append(hosmer_lemeshow(y, p, external=True).p_value)
    # External dof: with no fitted parameters the null distribution is chi2(groups).
    assert np.mean(np.array(p_values) < 0.05) <= 0.10


def test_hosmer_lemeshow_miscalibrated_is_significant() -> None:
    rng = np.random.default_rng(34)
    p = special.expit(rng.normal(-0.5, 1.5, size=500))
    truth = special.expit(0.4 * special.logit(p) + 0.8)  # too extreme and too low
    y = (rng.random(p.size) < truth).astype(np.int64)
    assert hosmer_lemeshow(y, p).p_value < 0.001


def test_hosmer_lemeshow_degenerate_cases() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        hosmer_lemeshow([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], groups=2)
    result = hosmer_lemeshow([0, 1, 0, 1, 1, 0], [0.0, 0.0, 0.5, 0.5, 1.0, 1.0], groups=3)
    assert math.isnan(result.statistic) and result.note is not None
    two = hosmer_lemeshow([0, 1, 0, 1], [0.2, 0.2, 0.6, 0.6], groups=4)
    assert two.groups == 2 and math.isnan(two.p_value)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_calibration_curve_matches_sklearn(strategy: str) -> None:
    rng = np.random.default_rng(40)
    p = np.round(rng.beta(2, 3, size=250), 2)  # rounded: values land on bin edges
    y = (rng.random(p.size) < p).astype(np.int64)
    ours = calibration_curve(y, p, 8, strategy="uniform" if strategy == "uniform" else "quantile")
    prob_true, prob_pred = sk_calibration_curve(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(ours["observed"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(ours["mean_predicted"], prob_pred, rtol=1e-12)
    assert ours["n"].sum() == p.size
    events = np.round(ours["observed"] * ours["n"]).astype(int)
    lo, hi = proportion_confint(events, ours["n"], alpha=0.05, method="wilson")
    np.testing.assert_allclose(ours["ci_low"], lo, rtol=1e-10)
    np.testing.assert_allclose(ours["ci_high"], hi, rtol=1e-10)


def _logit(p: FloatArray) -> FloatArray:
    return np.log(p / (1 - p))


def test_calibration_slope_and_intercept_against_independent_fits() -> None:
    rng = np.random.default_rng(41)
    p = special.expit(rng.normal(-0.3, 1.2, size=600))
    truth = special.expit(0.5 * _logit(p) + 0.3)  # slope 0.5, as an overfitted model
    y = (rng.random(p.size) < truth).astype(np.int64)
    fit = calibration_slope_intercept(y, p)
    lp = _logit(p)

    sk = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(lp[:, None], y)
    assert fit.slope == pytest.approx(sk.coef_[0, 0], abs=1e-5)
    assert fit.recalibration_intercept == pytest.approx(sk.intercept_[0], abs=1e-5)

    # Calibration-in-the-large: the root of the offset model's score equation.
    a = optimize.brentq(lambda a: float(np.sum(y - special.expit(a + lp))), -10, 10, xtol=1e-14)
    assert fit.intercept == pytest.approx(a, abs=1e-8)

    # Wald interval of the slope from the inverse Fisher information, by hand.
    x = np.column_stack([np.ones(p.size), lp])
    mu = special.expit(x @ np.array([fit.recalibration_intercept, fit.slope]))
    info = x.T @ (x * (mu * (1 - mu))[:, None])
    se_slope = math.sqrt(np.linalg.inv(info)[1, 1])
    z = stats.norm.ppf(0.975)
    assert fit.slope_ci_low == pytest.approx(fit.slope - z * se_slope, rel=1e-6)
    assert fit.slope_ci_high == pytest.approx(fit.slope + z * se_slope, rel=1e-6)
    assert fit.slope_ci_low < 0.5 < fit.slope_ci_high
    assert fit.note is None


def test_calibration_of_a_calibrated_model() -> None:
    rng = np.random.default_rng(42)
    p = special.expit(rng.normal(0, 1.5, size=3000))
    y = (rng.random(p.size) < p).astype(np.int64)
    fit = calibration_slope_intercept(y, p)
    # Standard errors here are about 0.04 for both: allow 4-5 of them.
    assert abs(fit.intercept) < 0.2
    assert abs(fit.slope - 1) < 0.15
    assert fit.intercept_ci_low < fit.intercept < fit.intercept_ci_high


def test_calibration_slope_under_separation_is_nan_with_reason() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    fit = calibration_slope_intercept(y, [0.1, 0.2, 0.3, 0.3, 0.8, 1.0])
    assert math.isnan(fit.slope) and math.isfinite(fit.intercept)
    assert fit.note is not None and "separation" in fit.note


# --------------------------------------------------------------------------------------
# Threshold metrics
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (10, 10), (1, 1), (41, 45), (17, 300)])
def test_wilson_interval_equals_statsmodels(x: int, n: int) -> None:
    lo, hi = proportion_confint(x, n, alpha=0.05, method="wilson")
    assert wilson_interval(x, n) == pytest.approx((lo, hi), rel=1e-12, abs=1e-15)
    lo90, hi90 = proportion_confint(x, n, alpha=0.10, method="wilson")
    assert wilson_interval(x, n, 0.90) == pytest.approx((lo90, hi90), rel=1e-12, abs=1e-15)


def test_wilson_interval_edge_cases() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_binary_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(50)
    y = (rng.random(90) < 0.45).astype(np.int64)
    p = np.round(special.expit(1.5 * (y - 0.5) + rng.normal(size=y.size)), 2)
    threshold = 0.5  # rounded probabilities: some lie exactly on the threshold
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert confusion_counts(y, p, threshold) == ConfusionCounts(tp=tp, fp=fp, tn=tn, fn=fn)
    m = binary_metrics(y, p, threshold)
    assert m["accuracy"].estimate == pytest.approx(accuracy_score(y, pred))
    assert m["sensitivity"].estimate == pytest.approx(recall_score(y, pred))
    assert m["specificity"].estimate == pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["ppv"].estimate == pytest.approx(precision_score(y, pred))
    assert m["npv"].estimate == pytest.approx(precision_score(y, pred, pos_label=0))
    assert m["f1"].estimate == pytest.approx(f1_score(y, pred))
    assert m["recall"] is m["sensitivity"] and m["precision"] is m["ppv"]
    for key, (num, den) in {
        "accuracy": (tp + tn, y.size),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }.items():
        lo, hi = proportion_confint(num, den, alpha=0.05, method="wilson")
        assert (m[key].ci_low, m[key].ci_high) == pytest.approx((lo, hi), rel=1e-12)
        assert (m[key].numerator, m[key].denominator) == (num, den)
        assert m[key].method == "wilson"


def test_f1_interval_matches_an_index_resampling_bootstrap() -> None:
    rng = np.random.default_rng(51)
    y = (rng.random(120) < 0.4).astype(np.int64)
    pred = np.where(y == 1, rng.random(y.size) < 0.8, rng.random(y.size) < 0.15)
    p = np.where(pred, 0.9, 0.1)
    m = binary_metrics(y, p, 0.5, n_boot=4000, seed=1)
    # Resample case indices within each class (4000 x class size), then count by hand.
    called = pred.astype(bool)
    pos_called, neg_called = called[y == 1], called[y == 0]
    tp = pos_called[rng.integers(0, pos_called.size, (4000, pos_called.size))].sum(axis=1)
    fp = neg_called[rng.integers(0, neg_called.size, (4000, neg_called.size))].sum(axis=1)
    boot = 2 * tp / (2 * tp + fp + (pos_called.size - tp))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert m["f1"].ci_low == pytest.approx(lo, abs=0.02)
    assert m["f1"].ci_high == pytest.approx(hi, abs=0.02)
    assert m["f1"].ci_low < m["f1"].estimate < m["f1"].ci_high


def test_f1_interval_is_reproducible_with_a_seed() -> None:
    y, score = _sample(60, 52)
    a = binary_metrics(y, score, 0.5, seed=7)["f1"]
    b = binary_metrics(y, score, 0.5, seed=7)["f1"]
    c = binary_metrics(y, score, 0.5, seed=8)["f1"]
    assert a == b and (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


def test_zero_denominators_give_nan_with_reason() -> None:
    only_neg = binary_metrics([0, 0, 0], [0.1, 0.6, 0.2], 0.5)
    assert math.isnan(only_neg["sensitivity"].estimate)
    assert "no positive cases" in (only_neg["sensitivity"].reason or "")
    assert only_neg["specificity"].estimate == pytest.approx(2 / 3)
    assert only_neg["f1"].estimate == 0.0 and math.isnan(only_neg["f1"].ci_low)

    none_called = binary_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.9)
    assert math.isnan(none_called["ppv"].estimate)
    assert "no positive calls" in (none_called["ppv"].reason or "")
    assert none_called["f1"].estimate == 0.0

    all_called = binary_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.0)
    assert math.isnan(all_called["npv"].estimate)

    nothing = binary_metrics([0, 0], [0.1, 0.2], 0.5)
    assert math.isnan(nothing["f1"].estimate) and nothing["f1"].reason is not None


def test_binary_metrics_on_a_tiny_sample() -> None:
    m = binary_metrics([1, 0], [0.7, 0.2], 0.5)
    assert m["accuracy"].estimate == 1.0
    assert m["accuracy"].ci_low == pytest.approx(
        proportion_confint(2, 2, alpha=0.05, method="wilson")[0]
    )
    assert m["f1"].estimate == 1.0 and m["f1"].ci_high == 1.0


# --------------------------------------------------------------------------------------
# Youden threshold
# --------------------------------------------------------------------------------------


def _brute_youden(y: IntArray, s: FloatArray) -> tuple[float, list[float]]:
    """Max J over every midpoint between distinct scores, and the midpoints reaching it."""
    values = sorted(set(s.tolist()))
    cuts = [(lo + hi) / 2 for lo, hi in itertools.pairwise(values)]
    js = []
    for t in cuts:
        tp = sum(1 for si, yi in zip(s, y, strict=True) if yi == 1 and si >= t)
        tn = sum(1 for si, yi in zip(s, y, strict=True) if yi == 0 and si < t)
        js.append(tp / int(y.sum()) + tn / int((1 - y).sum()) - 1)
    best = max(js)
    return best, [t for t, j in zip(cuts, js, strict=True) if j >= best - 1e-12]


@pytest.mark.parametrize(("seed", "decimals"), [(60, None), (61, 1), (62, 2)])
def test_youden_matches_bruteforce_scan(seed: int, decimals: int | None) -> None:
    y, score = _sample(80, seed, decimals=decimals)
    best_j, ties = _brute_youden(y, score)
    t = youden_threshold(y, score)
    assert t == pytest.approx(min(ties))
    assert youden_threshold(y, score, prefer="specificity") == pytest.approx(max(ties))
    m = binary_metrics(y, score, t)
    assert m["sensitivity"].estimate + m["specificity"].estimate - 1 == pytest.approx(best_j)
    assert not np.any(score == t)


def test_youden_tie_rule() -> None:
    # Cuts at 0.25 and 0.65 both give J = 0.5: one trades a positive for a negative.
    y = np.array([0, 1, 0, 1])
    score = np.array([0.1, 0.4, 0.5, 0.8])
    _, ties = _brute_youden(y, score)
    assert ties == pytest.approx([0.25, 0.65])
    assert youden_threshold(y, score) == pytest.approx(0.25)
    assert youden_threshold(y, score, prefer="specificity") == pytest.approx(0.65)


def test_youden_needs_two_distinct_scores() -> None:
    with pytest.raises(ValueError, match="distinct"):
        youden_threshold([0, 1, 0], [0.3, 0.3, 0.3])


# --------------------------------------------------------------------------------------
# Decision curve
# --------------------------------------------------------------------------------------


def test_decision_curve_equals_hand_formula() -> None:
    rng = np.random.default_rng(70)
    y = (rng.random(150) < 0.35).astype(np.int64)
    good = np.clip(special.expit(2.0 * (y - 0.4) + rng.normal(size=y.size)), 0.01, 0.99)
    poor = np.clip(special.expit(rng.normal(-0.5, 1.0, size=y.size)), 0.01, 0.99)
    good = np.round(good, 2)  # ties with the thresholds exercise the >= rule
    thresholds = np.round(np.arange(0.0, 0.96, 0.05), 2)
    curve = decision_curve(y, {"DLR": good, "Rad": poor}, thresholds)

    n, prevalence = y.size, y.mean()
    assert curve["model"].unique().tolist() == ["DLR", "Rad", TREAT_ALL, TREAT_NONE]
    for name, prob in (("DLR", good), ("Rad", poor)):
        rows = curve[curve["model"] == name]
        np.testing.assert_allclose(rows["threshold"], thresholds)
        for pt, nb in zip(thresholds, rows["net_benefit"], strict=True):
            tp = int(np.sum((prob >= pt) & (y == 1)))
            fp = int(np.sum((prob >= pt) & (y == 0)))
            assert nb == pytest.approx(tp / n - fp / n * pt / (1 - pt), abs=1e-12)
    treat_all = curve[curve["model"] == TREAT_ALL]["net_benefit"].to_numpy()
    expected_all = prevalence - (1 - prevalence) * thresholds / (1 - thresholds)
    np.testing.assert_allclose(treat_all, expected_all, atol=1e-12)
    np.testing.assert_array_equal(curve[curve["model"] == TREAT_NONE]["net_benefit"], 0.0)
    assert curve["n"].eq(n).all() and np.allclose(curve["prevalence"], prevalence)
    at_zero = curve[curve["threshold"] == 0.0]["net_intervention_avoided"]
    assert at_zero.isna().all()


def test_decision_curve_rejects_bad_input() -> None:
    y = np.array([0, 1, 0, 1])
    p = np.array([0.2, 0.7, 0.4, 0.6])
    with pytest.raises(ValueError, match="reserved"):
        decision_curve(y, {TREAT_ALL: p})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        decision_curve(y, {"m": p}, [0.1, 1.0])
    with pytest.raises(ValueError, match="probabilities"):
        decision_curve(y, {"m": p * 2})
    with pytest.raises(ValueError, match="empty"):
        decision_curve(y, {})


def test_decision_curve_default_thresholds() -> None:
    y = np.array([0, 1, 0, 1, 1])
    curve = decision_curve(y, {"m": [0.2, 0.7, 0.4, 0.6, 0.9]})
    thresholds = curve[curve["model"] == "m"]["threshold"].to_numpy()
    np.testing.assert_allclose(thresholds, np.arange(1, 100) / 100)
