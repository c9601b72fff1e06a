"""The phantom generator: valid objects, aligned truth, determinism, balance, realism."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_checks import dciodvfy_errors
from scipy import ndimage

from onfh_dlr.errors import PhantomError
from phantom.case import PhantomStudy
from phantom.cohort import COLUMNS, assign_hips, generate_cohort
from phantom.generator import generate_study, plan_case, render_case
from phantom.truth import segment_centroids

COHORT_SEED = 11


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four patients on disk (two with ONFH)."""
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, cases=4, seed=COHORT_SEED, onfh_fraction=0.5)
    return out


@pytest.fixture(scope="module")
def rows(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "cohort.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def rendered() -> list[PhantomStudy]:
    """Sixteen rendered patients, half with ONFH (not written to disk)."""
    hips = assign_hips(16, 0.5, seed=5)
    return [generate_study(5, i, onfh) for i, onfh in enumerate(hips)]


def _series(cohort: Path, row: dict[str, str]) -> list[pydicom.Dataset]:
    files = sorted((cohort / row["Image"]).glob("*.dcm"))
    return [pydicom.dcmread(f) for f in files]


def test_every_generated_object_passes_dciodvfy(cohort: Path) -> None:
    files = sorted(cohort.rglob("*.dcm"))
    assert len(files) > 4 * 16
    errors = {str(f.relative_to(cohort)): e for f in files if (e := dciodvfy_errors(f))}
    assert errors == {}


def test_cohort_csv_has_two_rows_per_patient_in_the_cohort_format(
    cohort: Path, rows: list[dict[str, str]]
) -> None:
    assert list(rows[0].keys()) == list(COLUMNS)
    assert list(COLUMNS[:5]) == ["PatientID", "Side", "Image", "Mask", "Label"]
    by_patient = Counter(r["PatientID"] for r in rows)
    assert len(by_patient) == 4 and set(by_patient.values()) == {2}
    for row in rows:
        assert row["Side"] in {"L", "R"} and row["Label"] in {"0", "1"}
        assert (cohort / row["Image"]).is_dir() and (cohort / row["Mask"]).is_file()
        assert (row["Label"] == "1") == (row["Stage"] in {"ARCO I", "ARCO II"})
        assert (row["Label"] == "1") == (float(row["LesionFraction"]) > 0)


def test_series_read_back_as_a_coronal_mr_hip_series(
    cohort: Path, rows: list[dict[str, str]]
) -> None:
    for row in rows[::2]:
        series = _series(cohort, row)
        assert 16 <= len(series) <= 30
        assert {ds.SeriesInstanceUID for ds in series} == {row["SeriesInstanceUID"]}
        assert len({ds.SOPInstanceUID for ds in series}) == len(series)
        first = series[0]
        assert first.Modality == "MR" and first.BodyPartExamined == "HIP"
        assert first.SOPClassUID == pydicom.uid.MRImageStorage
        normal = np.cross(first.ImageOrientationPatient[:3], first.ImageOrientationPatient[3:])
        assert abs(normal[1]) > np.cos(np.radians(8))  # coronal: slices stacked along y
        positions = np.array([ds.ImagePositionPatient for ds in series], dtype=float)
        steps = np.diff(positions @ normal)
        assert np.allclose(steps, float(first.SpacingBetweenSlices), atol=1e-3)
        assert float(first.SpacingBetweenSlices) >= float(first.SliceThickness)
        assert series[0].pixel_array.shape == (first.Rows, first.Columns)


def test_seg_reads_back_and_references_its_series(cohort: Path, rows: list[dict[str, str]]) -> None:
    for row in rows[::2]:
        seg = hd.seg.segread(cohort / row["Mask"])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == row["SeriesInstanceUID"]
        labels = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
        assert labels[:2] == ["Left femoral head", "Right femoral head"]
        diseased = [
            r["Side"] for r in rows if r["PatientID"] == row["PatientID"] and r["Label"] == "1"
        ]
        expected = {
            f"{'Left' if s == 'L' else 'Right'} femoral head necrotic lesion" for s in diseased
        }
        assert set(labels[2:]) == expected


def test_truth_head_centres_fall_inside_head_segments(
    cohort: Path, rows: list[dict[str, str]]
) -> None:
    for row in rows:
        series = sorted(_series(cohort, row), key=lambda ds: int(ds.InstanceNumber))
        seg = hd.seg.segread(cohort / row["Mask"])
        name = "Left" if row["Side"] == "L" else "Right"
        (number,) = seg.get_segment_numbers(segment_label=f"{name} femoral head")
        masks = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[ds.SOPInstanceUID for ds in series],
            segment_numbers=[number],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        centre = np.array([float(row[f"HeadCentre{a}"]) for a in "XYZ"])
        first = series[0]
        row_dir = np.array(first.ImageOrientationPatient[:3], dtype=float)
        col_dir = np.array(first.ImageOrientationPatient[3:], dtype=float)
        normal = np.cross(row_dir, col_dir)
        d = centre - np.array(first.ImagePositionPatient, dtype=float)
        k = round(d @ normal / float(first.SpacingBetweenSlices))
        r = round(d @ col_dir / float(first.PixelSpacing[0]))
        c = round(d @ row_dir / float(first.PixelSpacing[1]))
        assert masks[k, r, c], f"{row['PatientID']} {row['Side']}: centre outside its head segment"
        # And the segment is a head of the stated size where the truth says it is.
        cx, cy, cz, ml = segment_centroids(seg, series)[f"{name} femoral head"]
        radius = float(row["HeadRadius"])
        assert np.linalg.norm(np.array([cx, cy, cz]) - centre) < 0.25 * radius
        assert 0.6 < ml * 1000 / (4 / 3 * np.pi * radius**3) < 1.05


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    a = digest(generate_cohort(tmp_path / "a", cases=1, seed=3).parent)
    b = digest(generate_cohort(tmp_path / "b", cases=1, seed=3).parent)
    c = digest(generate_cohort(tmp_path / "c", cases=1, seed=4).parent)
    assert a == b
    assert set(a.values()).isdisjoint(c.values())


def test_default_cohort_of_150_matches_the_papers_class_balance() -> None:
    hips = assign_hips(150, 70 / 150, seed=0)
    patients = Counter("onfh" if any(h) else "healthy" for h in hips)
    assert patients == {"healthy": 80, "onfh": 70}
    bilateral = sum(all(h) for h in hips)
    assert bilateral == 35
    # Unilateral disease falls on both sides.
    sides = Counter("R" if h[0] else "L" for h in hips if any(h) and not all(h))
    assert min(sides.values()) >= 10
    assert assign_hips(150, 70 / 150, seed=0) == hips
    assert assign_hips(150, 70 / 150, seed=1) != hips


def test_onfh_fraction_sets_the_number_of_diseased_patients() -> None:
    assert sum(any(h) for h in assign_hips(20, 0.25, seed=2)) == 5
    assert not any(any(h) for h in assign_hips(7, 0.0, seed=2))
    with pytest.raises(PhantomError):
        assign_hips(10, 1.5, seed=0)
    with pytest.raises(PhantomError):
        assign_hips(0, 0.5, seed=0)


def test_varied_parameters_cover_the_ranges_asked_for() -> None:
    plans = [plan_case(9, i, (False, False)) for i in range(300)]
    g = [p.acquisition.geometry for p in plans]
    spacing = np.array([x.pixel_spacing[0] for x in g])
    assert spacing.min() >= 0.6 and spacing.max() <= 1.3 and np.ptp(spacing) > 0.5
    columns = {x.columns for x in g}
    assert min(columns) >= 256 and max(columns) <= 640 and len(columns) >= 6
    slices = np.array([x.n_slices for x in g])
    assert slices.min() >= 16 and slices.max() <= 30 and len(set(slices)) >= 10
    gap = np.array([x.slice_spacing / x.slice_thickness - 1 for x in g])
    assert gap.min() >= 0 and gap.max() <= 0.2 + 1e-3 and gap.max() > 0.15
    obliquity = np.array([p.acquisition.obliquity_deg for p in plans])
    assert obliquity.max() < 7 and np.mean(obliquity > 1) > 0.5
    radii = np.array([h.head_radius for p in plans for h in p.anatomy.hips])
    assert radii.min() >= 20 and radii.max() <= 27.5 and np.ptp(radii) > 5
    half_widths = np.array([abs(h.head_centre[0]) for p in plans for h in p.anatomy.hips])
    assert half_widths.min() > 80 and half_widths.max() < 105
    scanners = [p.scanner for p in plans]
    assert len({s.manufacturer for s in scanners}) == 4
    assert len({s.series_description for s in scanners}) >= 10
    assert any("STIR" in s.series_description.upper() for s in scanners)
    assert all((s.rescale is not None) == s.manufacturer.startswith("Philips") for s in scanners)
    assert {s.magnetic_field_strength for s in scanners} == {1.5, 3.0}
    uids = [p.patient.study_instance_uid for p in plans] + [
        p.patient.series_instance_uid for p in plans
    ]
    assert len(set(uids)) == len(uids)
    assert len({p.patient.patient_id for p in plans}) == len(plans)


def test_the_label_changes_nothing_but_the_pathology() -> None:
    for index in range(40):
        healthy = plan_case(13, index, (False, False))
        diseased = plan_case(13, index, (True, True))
        assert healthy.scanner == diseased.scanner
        assert healthy.patient == diseased.patient
        assert healthy.chain == diseased.chain
        assert healthy.acquisition.geometry.shape == diseased.acquisition.geometry.shape
        assert np.array_equal(
            healthy.acquisition.geometry.origin, diseased.acquisition.geometry.origin
        )
        for h, d in zip(healthy.anatomy.hips, diseased.anatomy.hips, strict=True):
            assert h.head_radius == d.head_radius and np.array_equal(h.head_centre, d.head_centre)
            assert np.array_equal(h.neck_axis, d.neck_axis)
            assert h.lesion is None and d.lesion is not None


def test_pathology_frequencies_follow_the_description() -> None:
    diseased = [h for i in range(200) for h in plan_case(17, i, (True, True)).anatomy.hips]
    healthy = [h for i in range(200) for h in plan_case(17, i, (False, False)).anatomy.hips]
    effusion_onfh = np.mean([h.effusion for h in diseased])
    effusion_healthy = np.mean([h.effusion for h in healthy])
    assert 0.72 < effusion_onfh < 0.88 and 0.22 < effusion_healthy < 0.38
    lesions = [h.lesion for h in diseased if h.lesion is not None]
    assert 0.72 < np.mean([les.double_line for les in lesions]) < 0.88
    assert 0.62 < np.mean([les.centre_kind == "fat-like" for les in lesions]) < 0.78
    assert {les.size_class for les in lesions} == {"small", "medium", "large"}
    assert {les.stage for les in lesions} == {"ARCO I", "ARCO II"}
    assert 0.1 < np.mean([les.subtle for les in lesions]) < 0.35
    assert np.mean([h.oedema for h in diseased]) > 5 * np.mean([h.oedema for h in healthy])
    # Healthy hips are not blank: a good share carry benign findings, some several.
    findings = [len(h.findings) for h in healthy]
    assert np.mean([n > 0 for n in findings]) > 0.5 and np.mean([n >= 2 for n in findings]) > 0.2
    kinds = {f.kind for h in healthy for f in h.findings}
    assert kinds == {"subchondral cyst", "herniation pit", "red marrow island", "bone island"}


def test_measured_lesion_fraction_follows_the_drawn_size(rendered: list[PhantomStudy]) -> None:
    # The truth reports the class of the lesion as rendered (its mask over the head's).
    limits = {"small": (0.0, 0.15), "medium": (0.15, 0.30), "large": (0.30, 1.0)}
    measured = [h for s in rendered for h in s.hips if h.label]
    assert len(measured) >= 8
    for hip in measured:
        lo, hi = limits[hip.lesion_size_class]
        assert lo <= hip.lesion_fraction <= hi
    # Rendered lesions are about as big as drawn (partial volume and the band aside).
    for i, (study, onfh) in enumerate(zip(rendered, assign_hips(16, 0.5, seed=5), strict=True)):
        plan = plan_case(5, i, onfh)
        for drawn, truth in zip(plan.anatomy.hips, study.hips, strict=True):
            if drawn.lesion is not None:
                assert abs(truth.lesion_fraction - drawn.lesion.target_fraction) < 0.03
    for study in rendered:
        for hip in study.hips:
            if not hip.label:
                assert hip.lesion_fraction == 0 and hip.lesion_size_class == "none"


def _head_stats(study: PhantomStudy) -> dict[str, tuple[float, float, float]]:
    """Per side: head mean and spread, and the dome-band signal, over the image median."""
    image = study.stored.astype(np.float64)
    norm = float(np.median(image[image > np.percentile(image, 20)]))
    out: dict[str, tuple[float, float, float]] = {}
    for seg in study.segments:
        if seg.kind != "femoral_head":
            continue
        head = ndimage.binary_erosion(seg.mask, iterations=1)
        values = image[head] / norm
        out[seg.side] = (
            float(values.mean()),
            float(values.std()),
            float(np.percentile(values, 95)),
        )
    return out


def test_onfh_hips_differ_from_healthy_ones_in_the_signs_described(
    rendered: list[PhantomStudy],
) -> None:
    onfh: list[tuple[float, float, float]] = []
    healthy: list[tuple[float, float, float]] = []
    oedema: list[tuple[float, float, float]] = []
    for study in rendered:
        stats = _head_stats(study)
        for hip in study.hips:
            (healthy, onfh)[hip.label].append(stats[hip.side])
            if hip.marrow_oedema and hip.label:
                oedema.append(stats[hip.side])
    onfh_a, healthy_a = np.array(onfh), np.array(healthy)
    # Band, oedema-like centres and marrow oedema make diseased heads brighter and more
    # heterogeneous on T2-FS; healthy heads stay dark fatty marrow.
    assert np.median(onfh_a[:, 2]) > 1.3 * np.median(healthy_a[:, 2])
    assert np.median(onfh_a[:, 1]) > 1.3 * np.median(healthy_a[:, 1])
    if oedema:
        assert np.median(np.array(oedema)[:, 0]) > 1.5 * np.median(healthy_a[:, 0])


def test_onfh_and_healthy_patients_do_not_differ_in_trivial_ways(
    rendered: list[PhantomStudy],
) -> None:
    def auc(values: list[float], labels: list[int]) -> float:
        pos = [v for v, lab in zip(values, labels, strict=True) if lab]
        neg = [v for v, lab in zip(values, labels, strict=True) if not lab]
        wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        return wins / (len(pos) * len(neg))

    labels = [int(any(h.label for h in s.hips)) for s in rendered]
    # On 16 patients chance alone spreads an AUC over roughly 0.2-0.8.
    for name, values in {
        "overall intensity": [float(np.median(s.stored)) for s in rendered],
        "bright tail": [float(np.percentile(s.stored, 99)) for s in rendered],
        "rows": [float(s.geometry.rows) for s in rendered],
        "slices": [float(s.geometry.n_slices) for s in rendered],
        "pixel spacing": [s.geometry.pixel_spacing[0] for s in rendered],
    }.items():
        assert 0.15 < auc(values, labels) < 0.85, name


def test_a_case_renders_from_its_plan_alone() -> None:
    plan = plan_case(21, 2, (True, False))
    a = render_case(plan)
    b = generate_study(21, 2, (True, False))
    assert np.array_equal(a.stored, b.stored)
    assert [s.label for s in a.segments] == [
        "Left femoral head",
        "Right femoral head",
        "Right femoral head necrotic lesion",
    ]
