"""The site-calibration bench: calibration blocks, and what they are judged on, by hand."""

from __future__ import annotations

import sys
from pathlib import Path

from model_bundle.calibration import ThresholdRule
from model_bundle.evaluation import PredictionRow
from model_bundle.imaging import Side
from model_bundle.serving import ModelName

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from site_calibration import best_balanced, blocks_of, calibrate_site

THRESHOLDS = {"rad": 0.5, "dl": 0.5, "dlr": 0.5}


def _hip(pid: str, side: Side, onfh: bool, p: float) -> PredictionRow:
    probs = {m: p for m in ModelName}
    return PredictionRow(pid, side, "1" if onfh else "0", probs, int(p >= 0.5), "auto")


def _shifted_site(patients: int) -> list[PredictionRow]:
    """Every hip over the fixed threshold (healthy 0.55-0.79, ONFH 0.85-0.98): ranked
    right, called wrong, as a site with another intensity scale is."""
    rows = []
    for i in range(patients):
        pid = f"P{i:02d}"
        onfh = i % 2 == 0
        rows.append(_hip(pid, Side.RIGHT, onfh, (0.85 if onfh else 0.56) + 0.013 * (i % 10)))
        rows.append(_hip(pid, Side.LEFT, False, 0.55 + 0.024 * (i % 10)))
    return rows


def test_patients_are_cut_into_whole_blocks_in_id_order() -> None:
    rows = _shifted_site(25)
    blocks = blocks_of(rows, 10)
    assert blocks == [
        tuple(f"P{i:02d}" for i in range(10)),
        tuple(f"P{i:02d}" for i in range(10, 20)),
    ]


def test_each_block_calibrates_and_is_judged_on_the_other_patients_only() -> None:
    rows = _shifted_site(30)
    result = calibrate_site(
        "shifted",
        rows,
        THRESHOLDS,
        ModelName.DLR,
        size=10,
        rule=ThresholdRule.YOUDEN,
        target_sensitivity=None,
    )
    assert (result.before_sensitivity, result.before_specificity) == (1.0, 0.0)
    assert len(result.blocks) == 3
    for block in result.blocks:
        assert not block.refused
        # The other 20 patients' 40 hips, 10 of them ONFH; none of the block's own.
        assert (block.tp + block.fn, block.tn + block.fp) == (10, 30)
        assert (block.sensitivity, block.specificity) == (1.0, 1.0)
    assert result.meets()


def test_a_block_calibrate_refuses_is_reported_and_fails_the_target() -> None:
    rows = _shifted_site(20)
    # The first ten patients all healthy: calibrate refuses a single-class cohort.
    rows = [_hip(r.patient_id, r.side, False, 0.6) if r.patient_id < "P10" else r for r in rows]
    result = calibrate_site(
        "one-class",
        rows,
        THRESHOLDS,
        ModelName.DLR,
        size=10,
        rule=ThresholdRule.SENSITIVITY,
        target_sensitivity=0.9,
    )
    first, second = result.blocks
    assert "single class" in first.refused and first.threshold is None
    assert not second.refused
    assert not result.meets()


def test_a_prediction_row_reads_back_from_its_csv_row() -> None:
    scored = _hip("P01", Side.LEFT, True, 0.731)
    unscored = PredictionRow("P02", Side.RIGHT, "0", reason="FemoralHeadNotFoundError: no rim")
    for row in (scored, unscored):
        assert PredictionRow.from_csv(row.as_csv()) == row


def test_the_bound_is_the_best_balanced_threshold_in_hindsight() -> None:
    # ONFH 0.9, 0.8, 0.3; healthy 0.7, 0.2, 0.1: cut 0.8 gives 2/3 and 3/3, cut 0.3 gives
    # 3/3 and 2/3, no cut gives both 3/3.
    rows = [
        _hip(f"P{i}", Side.RIGHT, onfh, p)
        for i, (onfh, p) in enumerate(
            [(True, 0.9), (True, 0.8), (True, 0.3), (False, 0.7), (False, 0.2), (False, 0.1)]
        )
    ]
    assert best_balanced(rows, ModelName.DLR) == 2 / 3
    assert best_balanced(_shifted_site(10), ModelName.DLR) == 1.0
