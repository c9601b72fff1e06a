"""Decision curve analysis: net benefit of the model against treating everyone or no one."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from model_bundle.evaluation.inputs import _labels, _require_both_classes, _scores

# --------------------------------------------------------------------------------------
# Decision curve analysis
# --------------------------------------------------------------------------------------

TREAT_ALL = "treat_all"
TREAT_NONE = "treat_none"


def decision_curve(
    y_true: ArrayLike,
    prob_by_model: Mapping[str, ArrayLike],
    thresholds: ArrayLike | None = None,
) -> pd.DataFrame:
    """Net benefit of each model and of treat-all / treat-none, by threshold probability.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Binary labels (1 = positive). Both classes must be present.
    prob_by_model : Mapping[str, array_like]
        Model name -> predicted probabilities on the same N cases. Names must differ from
        ``"treat_all"`` and ``"treat_none"``.
    thresholds : array_like, optional
        Threshold probabilities in [0, 1); default 0.01, 0.02, ..., 0.99.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (model, threshold), models in the given order then
        ``treat_all`` and ``treat_none``. Columns: ``model, threshold, net_benefit,
        tp_rate, fp_rate, test_pos_rate, net_intervention_avoided, prevalence, n``.
        ``tp_rate`` and ``fp_rate`` are TP/n and FP/n, so ``net_benefit = tp_rate -
        fp_rate * pt / (1 - pt)``; ``net_intervention_avoided`` is per case and ``nan``
        at ``pt = 0``.

    Raises
    ------
    ValueError
        If the input is malformed, a class is missing, a model name is reserved, or a
        threshold is outside [0, 1).

    Notes
    -----
    Computed by the ``dcurves`` package (the Python port of MSKCC's ``dca``) on a
    DataFrame built here, with internal column names so that user model names can never
    clash with its reserved ``all``/``none`` columns. dcurves calls a case positive when
    ``prob >= pt``, and nudges probabilities of exactly 0 below every threshold and of
    exactly 1 above, so a prediction of 0 is never treated, even at ``pt = 0``.

    References
    ----------
    .. [1] Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating
       prediction models. Med Decis Making. 2006;26(6):565-574.
    .. [2] Vickers AJ, van Calster B, Steyerberg EW. A simple, step-by-step guide to
       interpreting decision curve analysis. Diagn Progn Res. 2019;3:18.
    """
    # dcurves pulls in statsmodels and lifelines (~4 s): import only when asked for.
    import dcurves

    y = _labels(y_true)
    _require_both_classes(y, "decision_curve")
    if not prob_by_model:
        raise ValueError("prob_by_model is empty")
    names = list(prob_by_model)
    reserved = {TREAT_ALL, TREAT_NONE} & set(names)
    if reserved:
        raise ValueError(f"model names {sorted(reserved)} are reserved for the reference lines")
    if thresholds is None:
        pts = np.round(np.arange(1, 100) / 100.0, 2)
    else:
        pts = np.asarray(thresholds, dtype=np.float64)
        if pts.ndim != 1 or pts.size == 0:
            raise ValueError("thresholds must be a non-empty 1-D array")
        if not np.all(np.isfinite(pts)) or pts.min() < 0.0 or pts.max() >= 1.0:
            raise ValueError("thresholds must lie in [0, 1)")

    columns = {f"m{i}": name for i, name in enumerate(names)}
    data = pd.DataFrame(
        {
            key: _scores(prob_by_model[name], y.size, f"prob_by_model[{name!r}]", probability=True)
            for key, name in columns.items()
        }
    )
    # dcurves selects the positive rows with isin([True]): give it a real bool column.
    data["outcome"] = y.astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = dcurves.dca(
            data=data, outcome="outcome", modelnames=list(columns), thresholds=list(pts)
        )
    labels = {**columns, "all": TREAT_ALL, "none": TREAT_NONE}
    out = pd.DataFrame(
        {
            "model": raw["model"].map(labels),
            "threshold": raw["threshold"].astype(np.float64),
            "net_benefit": raw["net_benefit"].astype(np.float64),
            "tp_rate": raw["tp_rate"].astype(np.float64),
            "fp_rate": raw["fp_rate"].astype(np.float64),
            "test_pos_rate": raw["test_pos_rate"].astype(np.float64),
            "net_intervention_avoided": raw["net_intervention_avoided"].astype(np.float64),
            "prevalence": raw["prevalence"].astype(np.float64),
            "n": raw["n"].astype(np.int64),
        }
    )
    # Interventions avoided divide by pt / (1 - pt), which is 0 at pt = 0: undefined there.
    out.loc[out["threshold"] == 0.0, "net_intervention_avoided"] = np.nan
    order = {name: i for i, name in enumerate([*names, TREAT_ALL, TREAT_NONE])}
    out = out.sort_values(
        ["model", "threshold"], key=lambda col: col.map(order) if col.name == "model" else col
    )
    return out.reset_index(drop=True)
