"""The cached training dataset: extraction once, reuse, recovery from damage."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from service_harness import CohortMaker
from typer.testing import CliRunner

from model_bundle.features import load_params, read_cohort
from model_bundle.training import build_dataset, cache_key
from onfh_dlr.cli import app
from onfh_dlr.errors import ConfigurationError

DEMO = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, phantom_cohort: CohortMaker) -> Path:
    # A copy: the shared cohort is read-only, and a test here touches a mask's mtime.
    out = tmp_path_factory.mktemp("ds") / "cohort"
    shutil.copytree(phantom_cohort(2, 43).root, out)
    return out / "cohort.csv"


def test_dataset_is_extracted_once_then_read_from_the_cache(cohort: Path, tmp_path: Path) -> None:
    jobs = read_cohort(cohort)
    seen: list[bool] = []
    first = build_dataset(jobs, cache=tmp_path, on_job=lambda _, cached: seen.append(cached))
    assert seen == [False, False]
    assert len(first) == 4 and all(s.ok for s in first)
    assert {s.label for s in first} == {0, 1}
    for s in first:
        assert s.radiomics is not None and s.radiomics.shape == (1197,)
        assert s.network_input is not None and s.network_input.shape == (3, 224, 224)
    seen.clear()
    second = build_dataset(jobs, cache=tmp_path, on_job=lambda _, cached: seen.append(cached))
    assert seen == [True, True]
    for a, b in zip(first, second, strict=True):
        assert (a.patient_id, a.side, a.label) == (b.patient_id, b.side, b.label)
        assert np.array_equal(a.radiomics, b.radiomics)  # type: ignore[arg-type]
        assert np.array_equal(a.network_input, b.network_input)  # type: ignore[arg-type]
    # A damaged entry is recomputed, not trusted.
    entry = tmp_path / f"{cache_key(jobs[0], load_params())}.npz"
    entry.write_bytes(b"garbage")
    seen.clear()
    build_dataset(jobs, cache=tmp_path, on_job=lambda _, cached: seen.append(cached))
    assert seen == [False, True]


def test_cache_key_changes_with_the_parameters_and_the_files(cohort: Path) -> None:
    job = read_cohort(cohort)[0]
    params = load_params()
    other = {**params, "setting": {**params["setting"], "binWidth": 7}}
    before = cache_key(job, params)
    assert before == cache_key(job, load_params())
    assert before != cache_key(job, other)
    assert job.mask is not None
    stat = job.mask.stat()
    os.utime(job.mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache_key(job, params) != before


def test_a_hip_that_cannot_be_used_keeps_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "empty-series"
    folder.mkdir()
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_text("PatientID,Side,Image,Mask,Label\nP1,L,empty-series,,1\n")
    (sample,) = build_dataset(read_cohort(csv_path))
    assert not sample.ok and sample.label == 1
    assert "SeriesNotFoundError" in sample.reason


def test_the_lesion_protocol_gives_onfh_hips_their_lesion_roi(cohort: Path) -> None:
    from model_bundle.features import FEATURE_NAMES
    from model_bundle.training import extract_job

    params = load_params()
    volume = FEATURE_NAMES.index("original_shape_VoxelVolume")
    for job in read_cohort(cohort):
        labels = [h["Label"] for h in job.hips]
        if "1" not in labels:
            continue
        head = extract_job(job, params, "head")
        lesion = extract_job(job, params, "lesion")
        for h, les in zip(head, lesion, strict=True):
            assert h.radiomics is not None and les.radiomics is not None
            if h.label == 1:
                # The lesion is a fraction of its head: the paper's ROI shape follows the label.
                assert les.radiomics[volume] < 0.6 * h.radiomics[volume]
            else:
                assert les.radiomics[volume] == h.radiomics[volume]
        return
    pytest.fail("the fixture cohort has no ONFH patient")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("P1,R,series\nP1,L\n", "row 2 does not have one cell per column"),
        ("P1,R,series,extra\n", "row 1 does not have one cell per column"),
        ("P1,X,series\n", "row 1: Side must be L or R, not 'X'"),
        ("P1,R, \n", "row 1 has no Image"),
    ],
)
def test_a_malformed_cohort_row_is_a_configuration_error_naming_the_row(
    tmp_path: Path, body: str, message: str
) -> None:
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("PatientID,Side,Image\n" + body, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        read_cohort(cohort)
    # `evaluate` says so and exits 2, without a traceback.
    result = CliRunner().invoke(app, ["evaluate", str(DEMO), str(cohort), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
