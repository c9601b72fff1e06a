"""Where a study's scoring time goes, step by step, as the worker runs it.

Run: ``.venv/bin/python bench/scoring_profile.py [--studies 4] [--bundle model_bundle/demo]
[--site ge-3t] [--json PATH]``. Writes phantom studies (of a site profile, so the bundle sees
another scanner than the one it was trained on), loads the bundle once as a worker's pool
process does, then scores each study with :func:`worker.pipeline.score_series` and prints, per
step, the median wall seconds per study and its share of the total: loading the series,
auto-segmentation, radiomics, the network input and ResNet18, the models, SEG, SR, result
card (with PDF) and the read-back validation. Each step is timed by wrapping the function
where its caller looks it up (a clock around the call, nothing else changes), so the
figures carry no profiler overhead. One process, one thread: what a study costs a worker
pool process, the figure throughput on two cores divides into. ``--json PATH`` also writes
the medians as a ``bench_records.ScoringProfileRecord`` (read by ``summary.py``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_records import ScoringProfileRecord, StepSeconds, write_record

from model_bundle.serving import BundleModel
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from phantom.sites import site_profile
from worker.pipeline import score_series

#: Step -> where its function is looked up by its caller (module, attribute).
STEPS: dict[str, tuple[str, str]] = {
    "load series": ("worker.pipeline", "load_series"),
    "auto-segmentation": ("worker.pipeline", "series_rois"),
    "radiomics": ("model_bundle.features.hip", "extract_radiomics"),
    # The hip region resampled to 1 mm (B-spline) and z-scored, for the network input.
    "hip region at 1 mm": ("model_bundle.features.hip", "preprocessed"),
    "network input": ("model_bundle.features.hip", "deep_input"),
    "ResNet18": ("model_bundle.features.hip", "deep_features"),
    "models": ("model_bundle.serving.bundle_model.BundleModel", "probabilities"),
    "SEG": ("worker.pipeline", "build_segmentation"),
    "SR": ("worker.pipeline", "build_report"),
    "card and PDF": ("worker.pipeline", "build_result_card"),
    "validation": ("worker.pipeline", "validate_outputs"),
}


def _owner(path: str) -> Any:
    module, _, attribute = path.rpartition(".")
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        return getattr(importlib.import_module(module), attribute)


@contextmanager
def timed_steps() -> Iterator[dict[str, float]]:
    """Wrap every step's function with a clock; yield the seconds spent per step."""
    spent: dict[str, float] = defaultdict(float)
    originals: list[tuple[Any, str, Any]] = []

    def clock(step: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[step] += time.perf_counter() - start

        return wrapper

    for step, (where, name) in STEPS.items():
        owner = _owner(where)
        original = getattr(owner, name)
        originals.append((owner, name, original))
        setattr(owner, name, clock(step, original))
    try:
        yield spent
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--bundle", type=Path, default=Path("model_bundle/demo"))
    parser.add_argument("--site", default="ge-3t", help="phantom site profile of the studies")
    parser.add_argument("--seed", type=int, default=900)
    parser.add_argument("--json", type=Path, default=None, help="also write the medians here")
    args = parser.parse_args()
    model = BundleModel.load(args.bundle.resolve(), threads=1, deployed_only=True)
    site = site_profile(args.site)
    rows: list[dict[str, float]] = []
    totals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="scoring-profile-") as tmp:
        folders = []
        for k in range(args.studies + 1):
            folder = Path(tmp) / f"study-{k}"
            write_series(generate_study(args.seed + k, 0, (k % 2 == 0, False), site=site), folder)
            folders.append(folder)
        score_series(folders[0], model)  # warm-up: lazy imports, highdicom's tables
        for folder in folders[1:]:
            with timed_steps() as spent:
                start = time.perf_counter()
                score_series(folder, model)
                totals.append(time.perf_counter() - start)
            rows.append(dict(spent))
    total = statistics.median(totals)
    steps = [StepSeconds(step, statistics.median(r.get(step, 0.0) for r in rows)) for step in STEPS]
    result = ScoringProfileRecord(str(args.bundle), args.site, args.studies, total, steps)
    print(f"bundle {args.bundle}, {args.studies} {args.site} studies, two hips each, 1 thread")
    print(f"{'step':20} {'median s':>9} {'share':>7}")
    for step in steps:
        print(f"{step.step:20} {step.median_seconds:9.2f} {step.median_seconds / total:7.0%}")
    other = result.other_seconds
    print(f"{'other':20} {other:9.2f} {other / total:7.0%}")
    print(f"{'total':20} {total:9.2f}")
    if args.json:
        write_record(result, args.json)


if __name__ == "__main__":
    main()
