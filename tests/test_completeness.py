"""Completeness of a received series, judged from its headers alone."""

from __future__ import annotations

import copy
import random

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, SegmentationStorage
from service_harness import CohortMaker

from listener.completeness import assess


@pytest.fixture(scope="module")
def series(phantom_cohort: CohortMaker) -> list[Dataset]:
    """The headers of one phantom series, in slice order."""
    (study,) = phantom_cohort(1, 3, onfh_fraction=1.0).studies
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in study.slices]
    assert "ImagesInAcquisition" not in headers[0]  # the phantom does not state it
    return sorted(headers, key=lambda h: int(h.InstanceNumber))


def _copy(headers: list[Dataset]) -> list[Dataset]:
    return [copy.deepcopy(h) for h in headers]


def test_full_series_is_complete(series: list[Dataset]) -> None:
    result = assess(series)
    assert result.complete, result.reason
    assert (result.count, result.expected) == (len(series), None)
    assert "no gap" in result.reason


def test_order_and_resent_instances_do_not_matter(series: list[Dataset]) -> None:
    shuffled = [*series, series[3]]  # one instance twice (a re-send)
    random.Random(1).shuffle(shuffled)
    result = assess(shuffled)
    assert result.complete and result.count == len(series)


def test_missing_middle_slice(series: list[Dataset]) -> None:
    without_8 = [h for h in series if int(h.InstanceNumber) != 8]
    result = assess(without_8)
    assert not result.complete
    assert result.reason.startswith("gap between slice 7 and 9: 1 slice(s) missing")
    assert result.count == len(series) - 1


def test_missing_ends_look_complete_without_a_stated_count(series: list[Dataset]) -> None:
    assert assess(series[1:-1]).complete


def test_images_in_acquisition_is_checked(series: list[Dataset]) -> None:
    headers = _copy(series)
    for h in headers:
        h.ImagesInAcquisition = len(series)
    assert assess(headers).complete
    result = assess(headers[1:-1])
    assert not result.complete
    assert result.reason == f"{len(series) - 2} of {len(series)} images (ImagesInAcquisition)"
    assert result.expected == len(series)


def test_duplicate_position(series: list[Dataset]) -> None:
    twin = copy.deepcopy(series[5])
    twin.SOPInstanceUID = "2.25.1234567"
    twin.InstanceNumber = 99
    result = assess([*series, twin])
    assert not result.complete
    assert result.reason.startswith("duplicate position: slices")
    assert "99" in result.reason and str(series[5].InstanceNumber) in result.reason


def test_every_other_slice_is_incomplete(series: list[Dataset]) -> None:
    # e.g. only the first pass of an interleaved acquisition has arrived
    result = assess(series[::2])
    assert not result.complete
    assert "2x SpacingBetweenSlices" in result.reason


def test_uneven_spacing(series: list[Dataset]) -> None:
    headers = _copy(series)
    shifted = headers[10]
    normal = np.cross(
        [float(v) for v in shifted.ImageOrientationPatient[:3]],
        [float(v) for v in shifted.ImageOrientationPatient[3:]],
    )
    step = float(shifted.SpacingBetweenSlices) * 0.4
    shifted.ImagePositionPatient = [
        float(p) + step * float(n)
        for p, n in zip(shifted.ImagePositionPatient, normal, strict=True)
    ]
    result = assess(headers)
    assert not result.complete and result.reason.startswith("uneven spacing between slice")


def test_mixed_orientation(series: list[Dataset]) -> None:
    headers = _copy(series)
    headers[4].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    result = assess(headers)
    assert not result.complete and "orientation differs" in result.reason


def test_too_few_slices(series: list[Dataset]) -> None:
    result = assess(series[:2])
    assert not result.complete and result.reason == "only 2 slice(s), at least 3 needed"


def test_missing_position(series: list[Dataset]) -> None:
    headers = _copy(series)
    del headers[2].ImagePositionPatient
    assert "no usable ImagePositionPatient" in assess(headers).reason


def test_nothing_or_only_seg() -> None:
    seg = Dataset()
    seg.SOPClassUID = SegmentationStorage
    seg.SOPInstanceUID = "1.2.3"
    assert assess([]).reason == "no image instances"
    assert not assess([seg]).complete


def _enhanced(frames: int, groups: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.NumberOfFrames = frames
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset() for _ in range(groups)])
    return ds


def test_enhanced_mr() -> None:
    result = assess([_enhanced(24, 24)])
    assert result.complete and (result.count, result.expected) == (24, 24)
    assert result.reason == "1 Enhanced MR instance with 24 frames"
    broken = assess([_enhanced(24, 20)])
    assert not broken.complete and broken.expected == 24
