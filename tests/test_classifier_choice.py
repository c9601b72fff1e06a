"""How training picks each model's classifier from the CV comparison (one-SE rule)."""

from __future__ import annotations

import numpy as np
import pytest

from model_bundle.training.fit import _choose
from onfh_dlr.errors import ConfigurationError

# A CV comparison as fit_model builds it: name -> (mean AUC, per-fold AUCs).
FOLDS_BEST = (0.86, 0.95, 0.98, 0.90, 0.91)  # mean 0.92, SE 0.0207
SE_BEST = float(np.std(FOLDS_BEST, ddof=1) / np.sqrt(5))


def _cv(**means: float) -> dict[str, tuple[float, tuple[float, ...]]]:
    out: dict[str, tuple[float, tuple[float, ...]]] = {
        name: (mean, (mean,) * 5) for name, mean in means.items()
    }
    out["XGBoost"] = (float(np.mean(FOLDS_BEST)), FOLDS_BEST)
    return out


def test_lr_within_one_standard_error_of_the_best_is_chosen() -> None:
    cv = _cv(LR=0.92 - SE_BEST + 0.001, KNN=0.919)
    assert _choose(cv, "auto") == "LR"


def test_the_first_in_the_paper_order_within_one_standard_error_wins() -> None:
    cv = _cv(LR=0.85, SVM=0.905, KNN=0.915)  # LR too far; SVM comes before KNN
    assert _choose(cv, "auto") == "SVM"


def test_a_classifier_better_by_more_than_one_standard_error_is_chosen() -> None:
    cv = _cv(LR=0.92 - SE_BEST - 0.005, SVM=0.80)
    assert _choose(cv, "auto") == "XGBoost"


def test_a_named_classifier_is_taken_as_asked() -> None:
    assert _choose(_cv(LR=0.99), "XGBoost") == "XGBoost"
    with pytest.raises(ConfigurationError, match="unknown classifier"):
        _choose(_cv(LR=0.99), "Boosted")
