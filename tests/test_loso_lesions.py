"""The leave-one-site-out bench's DLR-by-lesion-kind rows, from hand-made predictions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from leave_one_site_out import LesionGroup, lesion_groups

TRUTH = [
    {"PatientID": "P1", "Side": "R", "Label": "1", "Subtle": "0"},
    {"PatientID": "P1", "Side": "L", "Label": "1", "Subtle": "1"},
    {"PatientID": "P2", "Side": "R", "Label": "1", "Subtle": "1"},
    {"PatientID": "P2", "Side": "L", "Label": "0", "Subtle": "0"},
    {"PatientID": "P3", "Side": "R", "Label": "0", "Subtle": "0"},
    {"PatientID": "P3", "Side": "L", "Label": "1", "Subtle": "1"},
]


def _row(pid: str, side: str, label: str, prob: float | None, call: int) -> dict[str, str]:
    row = {"PatientID": pid, "Side": side, "Label": label}
    if prob is None:  # not scored: no probability, a reason
        return row | {"reason": "FemoralHeadNotFoundError: no sphere"}
    return row | {"prob_dlr": f"{prob:.6f}", "call": str(call), "reason": ""}


PREDICTIONS = [
    _row("P1", "R", "1", 0.95, 1),
    _row("P1", "L", "1", 0.30, 0),
    _row("P2", "R", "1", 0.60, 1),
    _row("P2", "L", "0", 0.40, 0),
    _row("P3", "R", "0", 0.20, 0),
    _row("P3", "L", "1", None, 0),  # an unscored subtle hip counts nowhere
]


def test_plain_and_subtle_lesions_are_ranked_against_the_same_healthy_hips() -> None:
    groups = lesion_groups(PREDICTIONS, TRUTH)
    assert groups["plain"] == LesionGroup(onfh=1, called=1, auc=1.0)
    subtle = groups["subtle"]
    assert (subtle.onfh, subtle.called) == (2, 1)
    reference = roc_auc_score([1, 1, 0, 0], [0.30, 0.60, 0.40, 0.20])  # 0.75
    assert math.isclose(subtle.auc, reference)


def test_a_site_without_healthy_hips_has_no_auc() -> None:
    only_onfh = [p for p in PREDICTIONS if p["Label"] == "1"]
    assert math.isnan(lesion_groups(only_onfh, TRUTH)["plain"].auc)
