"""The feature table: one CSV row per hip, identity columns first, then the features."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from model_bundle.features.cohort import HipRow
from model_bundle.features.hip import FeatureSpec

#: Columns of a feature table before the feature values.
ID_COLUMNS = ("PatientID", "Side", "Label", "roi_source", "status", "reason")


def write_feature_table(path: Path, rows: Sequence[HipRow], spec: FeatureSpec) -> None:
    """Write rows as CSV: identity columns, carried-through columns, then the features."""
    extra_cols: list[str] = []
    for row in rows:
        extra_cols += [k for k in row.extra if k not in extra_cols]
    names = spec.names
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*ID_COLUMNS, *extra_cols, *names])
        for row in rows:
            ident = [
                row.patient_id,
                row.side.value,
                row.label,
                row.roi_source,
                row.status,
                row.reason,
            ]
            extras = [row.extra.get(c, "") for c in extra_cols]
            feats = [repr(row.values[n]) if n in row.values else "" for n in names]
            writer.writerow([*ident, *extras, *feats])
    tmp.replace(path)


__all__ = ["ID_COLUMNS", "write_feature_table"]
