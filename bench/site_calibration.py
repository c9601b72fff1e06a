"""Site calibration on a site the model never saw: ten patients calibrate, the rest judge.

The issue's acceptance for ``onfh-dlr calibrate``: calibrating on 10 patients of a held-out
phantom site gives sensitivity and specificity >= 0.9 on that site's other patients. The
leave-one-site-out bench (``bench/leave_one_site_out.py``) leaves what that needs in its
work directory: per held-out site, a bundle trained without the site
(``held-out-SITE/bundle``) and its out-of-the-box predictions of every hip of the site,
auto-segmented (``held-out-SITE/predictions.csv``), which is what ``calibrate`` computes
first when it scores the local cohort with the parent bundle.

Per held-out site, the site's patients (sorted by ID) are cut into consecutive blocks of
``--patients`` (10). Each block in turn is the calibration cohort: the recalibration is
fitted on its hips by the function behind ``calibrate``
(:func:`model_bundle.calibration.site.fit_rows`), and the site's other patients are
scored as the calibrated bundle scores them (:func:`~model_bundle.calibration.site.
recalibrated_row`) and measured as ``evaluate`` measures them. A calibration block never
meets the patients it is judged on. Both threshold rules are run: Youden (the default) and
``--sensitivity 0.9``. It prints, per site and rule, each block's sensitivity and
specificity of the deployed model on the other patients, their worst, and whether every
block reaches the target.

Reads files and fits a few GLMs: seconds. Nothing is timed.

    python bench/site_calibration.py data/loso [--patients 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from model_bundle.bundle import load_bundle
from model_bundle.calibration import CalibrationError, ThresholdRule
from model_bundle.calibration.site import fit_rows, recalibrated_row
from model_bundle.evaluation import PredictionRow, cohort_metrics
from model_bundle.serving import ModelName

#: The issue's target on the held-out site's other patients, after calibration.
TARGET = 0.9
#: The rules ``calibrate`` offers: Youden, and ``--sensitivity 0.9``.
RULES: tuple[tuple[ThresholdRule, float | None], ...] = (
    (ThresholdRule.YOUDEN, None),
    (ThresholdRule.SENSITIVITY, 0.9),
)


@dataclass(frozen=True)
class BlockResult:
    """One calibration block of a site, and the deployed model on the site's other patients."""

    patients: tuple[str, ...]  # the calibration block
    threshold: float | None  # the deployed model's new threshold (None: refused)
    tp: int = 0
    fn: int = 0
    tn: int = 0
    fp: int = 0
    refused: str = ""  # why calibrate refused the block (CalibrationError)

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")


@dataclass(frozen=True)
class SiteCalibration:
    """A held-out site under one threshold rule: before calibration and per block after."""

    site: str
    rule: str
    before_sensitivity: float  # the fold bundle's fixed threshold, every patient of the site
    before_specificity: float
    blocks: tuple[BlockResult, ...]
    # The bound: recalibration is monotone, so no threshold it picks does better than the
    # best one chosen in hindsight on all the site's hips, the larger min(sens, spec).
    best_balanced: float = float("nan")

    def meets(self) -> bool:
        return bool(self.blocks) and all(
            not b.refused and b.sensitivity >= TARGET and b.specificity >= TARGET
            for b in self.blocks
        )


def _counts(metrics: dict[str, object], key: str) -> tuple[int, int, int, int]:
    """(tp, fn, tn, fp) of model ``key`` from :func:`cohort_metrics`' estimates."""
    models = metrics.get("models")
    entry = models.get(key) if isinstance(models, dict) else None
    if not isinstance(entry, dict):
        return 0, 0, 0, 0
    sens, spec = entry["metrics"]["sensitivity"], entry["metrics"]["specificity"]
    tp, pos = int(sens["numerator"]), int(sens["denominator"])
    tn, neg = int(spec["numerator"]), int(spec["denominator"])
    return tp, pos - tp, tn, neg - tn


def blocks_of(rows: Sequence[PredictionRow], size: int) -> list[tuple[str, ...]]:
    """The site's patients, sorted by ID, in consecutive blocks of ``size`` (a short last
    block is dropped: ``calibrate`` refuses fewer than ten patients)."""
    patients = sorted({r.patient_id for r in rows})
    return [tuple(patients[i : i + size]) for i in range(0, len(patients) - size + 1, size)]


def calibrate_site(
    site: str,
    rows: Sequence[PredictionRow],
    thresholds: dict[str, float],
    deployed: ModelName,
    *,
    size: int,
    rule: ThresholdRule,
    target_sensitivity: float | None,
) -> SiteCalibration:
    """Every block of ``size`` patients calibrates; the other patients are measured."""
    before = _counts(cohort_metrics([r.as_csv() for r in rows], thresholds), deployed.value)
    results = []
    for block in blocks_of(rows, size):
        calibration = [r for r in rows if r.patient_id in block]
        others = [r for r in rows if r.patient_id not in block]
        try:
            fitted, _, _ = fit_rows(
                calibration, list(ModelName), rule=rule, target_sensitivity=target_sensitivity
            )
        except CalibrationError as exc:
            results.append(BlockResult(block, None, refused=str(exc)))
            continue
        after = [recalibrated_row(r, fitted, deployed) for r in others]
        metrics = cohort_metrics([r.as_csv() for r in after], dict(fitted.thresholds))
        tp, fn, tn, fp = _counts(metrics, deployed.value)
        results.append(BlockResult(block, fitted.thresholds[deployed.value], tp, fn, tn, fp))
    tp, fn, tn, fp = before
    return SiteCalibration(
        site,
        rule.value if target_sensitivity is None else f"{rule.value} {target_sensitivity:g}",
        tp / (tp + fn) if tp + fn else float("nan"),
        tn / (tn + fp) if tn + fp else float("nan"),
        tuple(results),
        best_balanced(rows, deployed),
    )


def best_balanced(rows: Sequence[PredictionRow], model: ModelName) -> float:
    """max over thresholds of min(sensitivity, specificity) on the scored, labelled hips."""
    scored = [r for r in rows if r.call is not None and r.label in ("0", "1")]
    pos = [r.probabilities[model] for r in scored if r.label == "1"]
    neg = [r.probabilities[model] for r in scored if r.label == "0"]
    if not pos or not neg:
        return float("nan")
    best = 0.0
    for cut in {*pos, *neg}:  # positive call: p >= cut, as every threshold here
        sens = sum(p >= cut for p in pos) / len(pos)
        spec = sum(p < cut for p in neg) / len(neg)
        best = max(best, min(sens, spec))
    return best


def _rate(values: Sequence[float]) -> str:
    return f"{min(values):.2f}" if values else "—"


def table(results: Sequence[SiteCalibration]) -> str:
    """One Markdown row per site and rule."""
    lines = [
        "| Held-out site | Threshold rule | Before: sensitivity / specificity | Calibration "
        "blocks | After, each block on the other patients: sensitivity | specificity | "
        "Worst block | Target met | Best any threshold could do |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = [b for b in r.blocks if not b.refused]
        sens = " ".join(f"{b.tp}/{b.tp + b.fn}" for b in ok) or "—"
        spec = " ".join(f"{b.tn}/{b.tn + b.fp}" for b in ok) or "—"
        refused = len(r.blocks) - len(ok)
        blocks = f"{len(r.blocks)}" + (f" ({refused} refused)" if refused else "")
        worst = f"{_rate([b.sensitivity for b in ok])} / {_rate([b.specificity for b in ok])}"
        lines.append(
            f"| {r.site} | {r.rule} | {r.before_sensitivity:.2f} / {r.before_specificity:.2f} | "
            f"{blocks} | {sens} | {spec} | {worst} | {'yes' if r.meets() else 'no'} | "
            f"{r.best_balanced:.2f} |"
        )
    return "\n".join(lines)


def read_fold(fold: Path) -> tuple[list[PredictionRow], dict[str, float], ModelName]:
    """A fold's predictions of its held-out site, its bundle's thresholds and deployed model."""
    with (fold / "predictions.csv").open(newline="", encoding="utf-8") as f:
        rows = [PredictionRow.from_csv(r) for r in csv.DictReader(f)]
    bundle = load_bundle(fold / "bundle")
    return rows, bundle.thresholds(), ModelName(bundle.deployed_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="the leave-one-site-out bench's --work directory")
    parser.add_argument("--patients", type=int, default=10, help="calibration block size")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    folds = sorted(p for p in args.work.glob("held-out-*") if (p / "predictions.csv").exists())
    if not folds:
        sys.exit(f"{args.work}: no held-out-*/predictions.csv; run leave_one_site_out.py first")
    results = []
    for fold in folds:
        rows, thresholds, deployed = read_fold(fold)
        site = fold.name.removeprefix("held-out-")
        for rule, target in RULES:
            results.append(
                calibrate_site(
                    site,
                    rows,
                    thresholds,
                    deployed,
                    size=args.patients,
                    rule=rule,
                    target_sensitivity=target,
                )
            )
    text = table(results)
    print(text)
    for r in results:
        for b in r.blocks:
            if b.refused:
                print(
                    f"  {r.site} {r.rule}: block {b.patients[0]}..{b.patients[-1]} refused: "
                    f"{b.refused}"
                )
    if args.json:
        args.json.write_text(
            json.dumps([asdict(r) | {"meets": r.meets()} for r in results], indent=1),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
