"""Series on disk to both hips' features: all features (training) vs a bundle's few (serving).

Run: ``.venv/bin/python bench/features_speed.py [--repeats 3]``. Writes one phantom study,
then times the whole per-series pipeline as the worker runs it (load the series,
auto-segment both heads, radiomics, ResNet18 deep features) twice: with all 1,197
radiomics features and with the selective subset of a typical bundle. Both runs share
everything but the radiomics, so the ratio is the selective mode's speed-up end to end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from radiomics_speed import BUNDLE_FEATURES  # the same bundle list as the radiomics bench

from model_bundle.features import FeatureSpec, run_series_job, series_job
from phantom.dicom_writer import write_series
from phantom.generator import generate_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        write_series(generate_study(7, 0, (True, False)), folder)
        job = series_job(folder, None, "bench")
        times: dict[str, list[float]] = {"full": [], "selective": []}
        specs = {
            "full": FeatureSpec(radiomics=None, deep=True, threads=1),
            "selective": FeatureSpec(radiomics=BUNDLE_FEATURES, deep=True, threads=1),
        }
        run_series_job(job, specs["selective"])  # warm up: imports, model, highdicom tables
        for _ in range(args.repeats):
            for name, spec in specs.items():
                start = time.perf_counter()
                rows = run_series_job(job, spec)
                times[name].append(time.perf_counter() - start)
                assert all(r.status == "ok" for r in rows), [r.reason for r in rows]
    full, selective = statistics.median(times["full"]), statistics.median(times["selective"])
    print("series on disk -> load, auto-segment both heads, radiomics + 512 deep features per hip")
    print(f"  full (1,197 radiomics + 512 deep):        {full:6.2f} s  (median of {args.repeats})")
    print(f"  selective ({len(BUNDLE_FEATURES)} radiomics + 512 deep):  {selective:6.2f} s")
    print(f"  speed-up of the selective mode: {full / selective:.2f}x")


if __name__ == "__main__":
    main()
