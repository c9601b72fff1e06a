"""Site transfer of the Rad model alone, in minutes: leave one phantom site out.

``leave_one_site_out.py`` is the issue's bench (all three models, auto-ROI on the held-out
site, about 90 minutes, most of it fine-tuning the network). This is its quick companion
for working on the radiomics recipe: the same cached inputs training uses
(``build_dataset``: SEG head ROIs, the ``hip`` profile, the shared feature cache), and per
held-out site the Rad model fitted exactly as ``onfh-dlr train`` fits it (``fit_model``:
the paper's selector, the classifier chosen by CV AUC, the Youden threshold on the
training folds' out-of-fold probabilities) on every *other* site's patients. The held-out
site is scored on its SEG ROIs, so the auto-segmentation plays no part.

Per held-out site: hips, AUC with DeLong CI, sensitivity and specificity at the fixed
threshold, the calibration slope, and the AUC of plain and of subtle lesions (the
phantom's ``Subtle`` column) against the site's healthy hips.

    python bench/site_transfer_radiomics.py data/sites-160/cohort.csv --cache data/loso-cache
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from model_bundle.evaluation.calibration import calibration_slope_intercept
from model_bundle.evaluation.discrimination import roc_auc_delong
from model_bundle.features import FEATURE_NAMES, NormalisationProfile, read_cohort
from model_bundle.training import TrainConfig, build_dataset, fit_model


@dataclass(frozen=True)
class HeldOut:
    """The Rad model trained without ``site``, scored on it."""

    site: str
    hips: int
    onfh: int
    auc: float
    ci: tuple[float, float]
    sensitivity: float
    specificity: float
    slope: float
    auc_plain: float
    auc_subtle: float
    classifier: str
    features: int
    threshold: float


def _auc(y: NDArray[np.int64], p: NDArray[np.float64]) -> float:
    if len(set(y.tolist())) < 2:
        return float("nan")
    return float(roc_auc_delong(y, p).auc)


def held_out(
    X: NDArray[np.float64],
    y: NDArray[np.int64],
    sites: NDArray[np.str_],
    subtle: NDArray[np.bool_],
    site: str,
    config: TrainConfig,
) -> HeldOut:
    """Fit the Rad model on every site but ``site`` and score ``site``."""
    train = np.flatnonzero(sites != site)
    test = np.flatnonzero(sites == site)
    result = fit_model("rad", X, FEATURE_NAMES, y, train, test, config)
    p, yt = result.test_prob, y[test]
    auc = roc_auc_delong(yt, p)
    call = p >= result.threshold
    healthy = yt == 0
    plain = healthy | ((yt == 1) & ~subtle[test])
    faint = healthy | ((yt == 1) & subtle[test])
    return HeldOut(
        site=site,
        hips=len(test),
        onfh=int(yt.sum()),
        auc=float(auc.auc),
        ci=(float(auc.ci_low), float(auc.ci_high)),
        sensitivity=float(call[yt == 1].mean()),
        specificity=float((~call[healthy]).mean()),
        slope=float(calibration_slope_intercept(yt, p).slope),
        auc_plain=_auc(yt[plain], p[plain]),
        auc_subtle=_auc(yt[faint], p[faint]),
        classifier=result.classifier_name,
        features=len(result.selector.selected_names),
        threshold=float(result.threshold),
    )


def table(rows: list[HeldOut]) -> str:
    """Markdown table, one row per held-out site."""
    lines = [
        "| Held-out site | Hips (ONFH) | Rad AUC (95 % CI) | Sensitivity | Specificity "
        "| Slope | AUC plain / subtle lesions | Classifier, features |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.site} | {r.hips} ({r.onfh}) | {r.auc:.3f} ({r.ci[0]:.3f} to {r.ci[1]:.3f}) "
            f"| {r.sensitivity:.2f} | {r.specificity:.2f} | {r.slope:.2f} "
            f"| {r.auc_plain:.3f} / {r.auc_subtle:.3f} | {r.classifier}, {r.features} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cohorts", type=Path, nargs="+", help="phantom cohort CSVs with Site")
    parser.add_argument("--cache", type=Path, required=True, help="training feature cache")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    started = time.monotonic()
    jobs = [job for cohort in args.cohorts for job in read_cohort(cohort.resolve())]
    samples = [
        s
        for s in build_dataset(
            jobs,
            cache=args.cache.resolve(),
            workers=args.workers,
            profile=NormalisationProfile.HIP,
        )
        if s.ok
    ]
    X = np.stack([s.radiomics for s in samples if s.radiomics is not None])
    y = np.array([s.label for s in samples], dtype=np.int64)
    sites = np.array([s.row.get("Site") or "phantom" for s in samples])
    subtle = np.array([s.row.get("Subtle") == "1" for s in samples])
    config = TrainConfig()
    rows = [held_out(X, y, sites, subtle, site, config) for site in sorted(set(sites))]
    print(table(rows))
    print(f"\n{len(samples)} hips; wall time {(time.monotonic() - started) / 60:.1f} min")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
