"""How long one phantom case takes, stage by stage, on this machine.

Run: ``.venv/bin/python bench/phantom_speed.py [--cases N]``. Prints per-case times of
rendering (``generate_study``) and of writing the DICOM series and SEG.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from phantom.cohort import assign_hips
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()
    render: list[float] = []
    write: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, onfh in enumerate(assign_hips(args.cases, 70 / 150, args.seed)):
            t0 = time.perf_counter()
            study = generate_study(args.seed, i, onfh)
            t1 = time.perf_counter()
            datasets = write_series(study, root / f"c{i}" / "series")
            write_segmentation(study, datasets, root / f"c{i}" / "seg.dcm")
            t2 = time.perf_counter()
            render.append(t1 - t0)
            write.append(t2 - t1)
    total = [r + w for r, w in zip(render, write, strict=True)]
    print(f"cases: {args.cases}")
    for name, values in (("render", render), ("write DICOM+SEG", write), ("total", total)):
        print(
            f"{name:>16}: median {statistics.median(values):.3f} s, "
            f"max {max(values):.3f} s, mean {statistics.mean(values):.3f} s"
        )


if __name__ == "__main__":
    main()
