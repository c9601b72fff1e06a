"""Leave-one-site-out: train on every phantom site but one, score the held-out site.

For each site of a multi-site phantom cohort (``onfh-dlr phantom --site A,B,C,D``, which
writes a ``Site`` column), a bundle is trained on the other sites' patients exactly as
``onfh-dlr train`` does (the head ROI from each hip's SEG, the training default
normalisation profile unless ``--profile``), then the held-out site is scored exactly as
``onfh-dlr evaluate --auto-roi`` does: every head auto-segmented, the bundle's fixed
thresholds, nothing refitted on the held-out site. Per held-out site it prints: hips
scored, Dice of the auto-ROI against the phantom's truth, Rad/DL/DLR AUC with DeLong CI,
sensitivity and specificity at the bundle's fixed threshold, and the calibration slope,
then whether each of the issue's targets is met.

The feature cache (``WORK/cache``) is shared by the folds: each training hip's inputs are
extracted once. Nothing here is timed against a peer; the wall time is printed.

    python bench/leave_one_site_out.py data/sites-160/cohort.csv --work data/loso --workers 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from model_bundle.bundle import load_bundle
from model_bundle.evaluation import cohort_metrics, score_cohort
from model_bundle.evaluation.discrimination import roc_auc_delong
from model_bundle.features import (
    NormalisationProfile,
    SeriesJob,
    read_cohort,
    run_cohort,
    series_rois,
)
from model_bundle.imaging import Side, load_series
from model_bundle.training import (
    PREDICTION_COLUMNS,
    csv_bytes,
    plan_training,
    read_train_config,
    run_training,
)
from onfh_dlr.errors import OnfhError

#: The issue's targets on every held-out site.
MIN_SCORED = 0.99
MIN_DICE = 0.90
MIN_DLR_AUC = 0.95
MIN_SENSITIVITY = 0.85
MIN_SPECIFICITY = 0.85
SLOPE_RANGE = (0.8, 1.25)
TARGETS: dict[str, object] = {
    "hips_scored": MIN_SCORED,
    "dice": MIN_DICE,
    "dlr_auc": MIN_DLR_AUC,
    "sensitivity": MIN_SENSITIVITY,
    "specificity": MIN_SPECIFICITY,
    "slope": SLOPE_RANGE,
}


@dataclass(frozen=True)
class LesionGroup:
    """The deployed DLR model on one kind of ONFH hip against the site's healthy hips."""

    onfh: int
    called: int  # of ``onfh``, called positive at the fold's fixed threshold
    auc: float  # against every scored healthy hip of the site; NaN without both classes


def lesion_groups(
    predictions: Sequence[dict[str, str]], truth: Sequence[dict[str, str]]
) -> dict[str, LesionGroup]:
    """DLR on ``plain`` and on ``subtle`` lesions (the phantom's ``Subtle`` column).

    Only scored hips count. A subtle ARCO I lesion can leave next to nothing in the head
    (``bench/lesion_visibility.py``), so the overall AUC is read better beside these.
    """
    subtle = {(r["PatientID"], r["Side"]): r.get("Subtle") == "1" for r in truth}
    rows = [p for p in predictions if p.get("prob_dlr")]
    healthy = [float(p["prob_dlr"]) for p in rows if p["Label"] == "0"]
    out: dict[str, LesionGroup] = {}
    for name, want in (("plain", False), ("subtle", True)):
        onfh = [
            p for p in rows if p["Label"] == "1" and subtle.get((p["PatientID"], p["Side"])) == want
        ]
        scores = [float(p["prob_dlr"]) for p in onfh]
        auc = float("nan")
        if scores and healthy:
            auc = float(
                roc_auc_delong([1] * len(scores) + [0] * len(healthy), scores + healthy).auc
            )
        out[name] = LesionGroup(len(onfh), sum(p.get("call") == "1" for p in onfh), auc)
    return out


@dataclass(frozen=True)
class SiteResult:
    """What one fold measured on its held-out site."""

    site: str
    train_sites: tuple[str, ...]
    patients: int
    hips: int
    scored: int
    dice: list[float]
    not_found: list[str]
    metrics: dict[str, Any]
    threshold: float
    train_seconds: float
    score_seconds: float
    lesions: dict[str, LesionGroup] = dataclasses.field(default_factory=dict)

    def model(self, key: str) -> dict[str, Any]:
        models: dict[str, dict[str, Any]] = self.metrics.get("models", {})
        return models.get(key, {})

    def auc(self, key: str) -> tuple[float, float, float]:
        auc = self.model(key).get("auc") or {}
        ci = auc.get("ci95") or [float("nan"), float("nan")]
        return _f(auc.get("estimate")), _f(ci[0]), _f(ci[1])

    def rate(self, key: str, name: str) -> tuple[float, int, int]:
        m = self.model(key).get("metrics", {}).get(name, {})
        return _f(m.get("estimate")), m.get("numerator", 0), m.get("denominator", 0)

    def slope(self, key: str = "dlr") -> float:
        return _f((self.model(key).get("calibration") or {}).get("slope"))

    def meets(self) -> dict[str, bool]:
        lo, hi = SLOPE_RANGE
        return {
            "hips scored": self.scored >= MIN_SCORED * self.hips,
            "Dice": bool(self.dice) and min(self.dice) >= MIN_DICE,
            "DLR AUC": self.auc("dlr")[0] >= MIN_DLR_AUC,
            "sensitivity": self.rate("dlr", "sensitivity")[0] >= MIN_SENSITIVITY,
            "specificity": self.rate("dlr", "specificity")[0] >= MIN_SPECIFICITY,
            "slope": lo <= self.slope() <= hi,
        }


def _f(value: Any) -> float:
    """A JSON number, or NaN for a missing or null one."""
    return float("nan") if value is None else float(value)


def _dice_job(job: SeriesJob) -> tuple[dict[str, float], dict[str, str]]:
    """Each head's auto-ROI against the SEG's head (Dice), or why it was not found."""
    try:
        series = load_series(job.image)
        auto = series_rois(series, None)
        truth = series_rois(series, job.mask).rois
    except OnfhError as exc:
        return {}, {"both": f"{type(exc).__name__}: {exc}"}
    dice: dict[str, float] = {}
    for side, roi in auto.rois.items():
        if side not in truth:
            continue
        a = sitk.GetArrayViewFromImage(roi.mask).astype(bool)
        t = sitk.GetArrayViewFromImage(truth[side].mask).astype(bool)
        dice[side.value] = float(2 * (a & t).sum() / max(1, a.sum() + t.sum()))
    failed = {side.value: str(exc) for side, exc in auto.failures.items()}
    return dice, failed


def _site_of(job: SeriesJob) -> str:
    return job.hips[0].get("Site", "")


def _write_cohort(rows: Sequence[dict[str, str]], root: Path, path: Path) -> None:
    # Image and Mask are relative to the original CSV; the fold's CSV lives elsewhere.
    fields = list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            out = dict(row)
            for col in ("Image", "Mask"):
                if out.get(col):
                    out[col] = str((root / out[col]).resolve())
            writer.writerow(out)


def _first_per_site(rows: list[dict[str, str]], n: int) -> list[dict[str, str]]:
    """The rows of the first ``n`` patients of each site, in cohort order."""
    patients: dict[str, list[str]] = {}
    for row in rows:
        chosen = patients.setdefault(row["Site"], [])
        if row["PatientID"] not in chosen and len(chosen) < n:
            chosen.append(row["PatientID"])
    kept = {p for chosen in patients.values() for p in chosen}
    return [r for r in rows if r["PatientID"] in kept]


def _read_rows(cohort: Path) -> list[dict[str, str]]:
    with cohort.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_fold(
    site: str,
    rows: list[dict[str, str]],
    cohort: Path,
    work: Path,
    *,
    cache: Path,
    config_overrides: dict[str, Any],
    workers: int,
    dice: dict[tuple[str, str], float],
    not_found: dict[tuple[str, str], str],
) -> SiteResult:
    """Train on every site but ``site``, then score ``site`` with auto-ROI."""
    fold = work / f"held-out-{site}"
    fold.mkdir(parents=True, exist_ok=True)
    train_rows = [r for r in rows if r["Site"] != site]
    test_rows = [r for r in rows if r["Site"] == site]
    _write_cohort(train_rows, cohort.parent, fold / "train.csv")
    _write_cohort(test_rows, cohort.parent, fold / "test.csv")
    bundle_dir = fold / "bundle"
    t0 = time.perf_counter()
    if not (bundle_dir / "manifest.json").exists():
        config = read_train_config(None).model_copy(update=config_overrides)
        plan = plan_training(fold / "train.csv", bundle_dir, config=config, cache=cache)
        run_training(
            plan,
            name=f"loso-{site}",
            synthetic=True,
            workers=workers,
            log=lambda line: print(f"  [{site}] {line}", flush=True),
        )
    train_seconds = time.perf_counter() - t0
    bundle = load_bundle(bundle_dir)
    thresholds = bundle.thresholds()
    jobs = [dataclasses.replace(j, mask=None) for j in read_cohort(fold / "test.csv")]
    t0 = time.perf_counter()
    predictions = [row.as_csv() for row in score_cohort(bundle_dir, jobs, workers=workers)]
    score_seconds = time.perf_counter() - t0
    (fold / "predictions.csv").write_bytes(
        csv_bytes(predictions, (*PREDICTION_COLUMNS, "roi_source"))
    )
    metrics = cohort_metrics(predictions, thresholds)
    keys = [(r["PatientID"], r["Side"]) for r in test_rows]
    return SiteResult(
        site=site,
        train_sites=tuple(sorted({r["Site"] for r in train_rows})),
        patients=len({r["PatientID"] for r in test_rows}),
        hips=len(predictions),
        scored=sum(1 for r in predictions if r.get("prob_dlr")),
        dice=[dice[k] for k in keys if k in dice],
        not_found=[f"{k[0]} {k[1]}: {not_found[k]}" for k in keys if k in not_found],
        metrics=metrics,
        threshold=bundle.threshold,
        train_seconds=train_seconds,
        score_seconds=score_seconds,
        lesions=lesion_groups(predictions, test_rows),
    )


def _fmt_auc(result: SiteResult, key: str) -> str:
    est, lo, hi = result.auc(key)
    return f"{est:.3f} ({lo:.3f} to {hi:.3f})"


def _fmt_rate(result: SiteResult, name: str) -> str:
    est, num, den = result.rate("dlr", name)
    return f"{est:.2f} ({num}/{den})"


def table(results: Sequence[SiteResult]) -> str:
    """The per-site table as Markdown (the closing note and the bundle report show it)."""
    head = (
        "| Held-out site | Hips scored | Auto-ROI Dice mean (min) | Rad AUC (95 % CI) "
        "| DL AUC (95 % CI) | DLR AUC (95 % CI) | Sensitivity | Specificity "
        "| DLR calibration slope | Targets met |\n|" + "---|" * 10
    )
    lines = [head]
    for r in results:
        dice = f"{statistics.mean(r.dice):.3f} ({min(r.dice):.3f})" if r.dice else "—"
        met = r.meets()
        missed = [k for k, ok in met.items() if not ok]
        lines.append(
            f"| {r.site} | {r.scored}/{r.hips} | {dice} | {_fmt_auc(r, 'rad')} "
            f"| {_fmt_auc(r, 'dl')} | {_fmt_auc(r, 'dlr')} | {_fmt_rate(r, 'sensitivity')} "
            f"| {_fmt_rate(r, 'specificity')} | {r.slope():.2f} "
            f"| {'all' if not missed else 'missed: ' + ', '.join(missed)} |"
        )
    return "\n".join(lines)


def lesion_table(results: Sequence[SiteResult]) -> str:
    """DLR by lesion kind per held-out site, as Markdown."""
    lines = [
        "| Held-out site | Plain ONFH: called | DLR AUC plain vs healthy "
        "| Subtle ONFH: called | DLR AUC subtle vs healthy |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        cells = []
        for name in ("plain", "subtle"):
            g = r.lesions.get(name)
            cells += ["—", "—"] if g is None else [f"{g.called}/{g.onfh}", f"{g.auc:.3f}"]
        lines.append(f"| {r.site} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cohort", type=Path, help="a multi-site phantom cohort.csv (Site column)")
    parser.add_argument("--work", type=Path, required=True, help="cache, fold bundles, results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sites", help="comma-separated held-out sites (default: every site)")
    parser.add_argument(
        "--profile",
        choices=[p.value for p in NormalisationProfile],
        default=None,
        help="normalisation profile (default: the training default)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (smoke runs)")
    parser.add_argument("--cache", type=Path, help="feature cache (default: WORK/cache)")
    parser.add_argument(
        "--per-site",
        type=int,
        default=None,
        help="use only the first N patients of each site (a reduced run; default: all)",
    )
    args = parser.parse_args()
    cohort = args.cohort.resolve()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = _read_rows(cohort)
    if not rows or "Site" not in rows[0]:
        sys.exit(f"{cohort}: no Site column; generate with onfh-dlr phantom --site A,B,C,D")
    if args.per_site:
        rows = _first_per_site(rows, args.per_site)
    sites = sorted({r["Site"] for r in rows})
    held_out = args.sites.split(",") if args.sites else sites
    overrides: dict[str, Any] = {}
    if args.profile:
        overrides["preprocessing_profile"] = NormalisationProfile(args.profile)
    if args.epochs:
        overrides["epochs"] = args.epochs
    started = time.perf_counter()

    # The auto-ROI's Dice per head, once for the cohort (it does not depend on the fold).
    kept = {r["PatientID"] for r in rows}
    jobs = [j for j in read_cohort(cohort) if j.hips[0]["PatientID"] in kept]
    dice: dict[tuple[str, str], float] = {}
    not_found: dict[tuple[str, str], str] = {}
    for job, (d, failed) in zip(
        jobs, run_cohort(jobs, _dice_job, workers=args.workers), strict=True
    ):
        pid = job.hips[0]["PatientID"]
        for side, value in d.items():
            dice[(pid, side)] = value
        for side, reason in failed.items():
            for s in (Side.RIGHT.value, Side.LEFT.value) if side == "both" else (side,):
                not_found[(pid, s)] = reason
    print(f"auto-ROI Dice computed for {len(dice)} heads ({len(not_found)} not found)", flush=True)

    results = []
    for site in held_out:
        print(f"held out: {site}", flush=True)
        result = run_fold(
            site,
            rows,
            cohort,
            work,
            cache=(args.cache or work / "cache").resolve(),
            config_overrides=overrides,
            workers=args.workers,
            dice=dice,
            not_found=not_found,
        )
        results.append(result)
        print(table([result]), flush=True)
    elapsed = time.perf_counter() - started
    text = table(results)
    print()
    print(text)
    print()
    print(lesion_table(results))
    for r in results:
        for line in r.not_found:
            print(f"  not found on {r.site}: {line}")
    print(f"\nwall time {elapsed / 60:.1f} min")
    summary = {
        "cohort": str(cohort),
        "patients_per_site": args.per_site,
        "sites": sites,
        "targets": {k: v for k, v in TARGETS.items()},
        "overrides": {k: str(v) for k, v in overrides.items()},
        "wall_seconds": elapsed,
        "results": [dataclasses.asdict(r) | {"meets": r.meets()} for r in results],
        "table": text,
        "lesion_table": lesion_table(results),
    }
    (work / "leave_one_site_out.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (work / "leave_one_site_out.md").write_text(
        text + "\n\n" + lesion_table(results) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
