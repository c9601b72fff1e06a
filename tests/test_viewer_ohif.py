"""What a radiologist sees in OHIF: a study with our SR and SEG, in a real viewer.

A phantom study is scored offline (the worker's pipeline, the phantom's SEG as ROI
source); the MR series, the SR and the SEG go into Orthanc (Debian, DICOMweb plugin); the
OHIF Viewer build from npm (``make ohif``) opens the study in headless Chromium, driven
over the DevTools protocol. The SR and then the SEG are opened as a user does, by
double-clicking their entries in the study browser. Screenshots land in the test's tmp
directory (``mr.png``, ``sr.png``, ``seg.png``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from viewer_harness import Chromium, ConsoleEntry, DicomWebOrthanc, OhifServer, ohif_dist

from model_bundle.serving import BundleModel
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study
from worker.pipeline import score_series, write_outputs
from worker.seg_output import SEGMENT_LABELS
from worker.sr_output import read_report

DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"
# What OHIF's SR loader says when it cannot place a measurement (issue 14, OHIF #3390).
SR_LOADER_TROUBLE = (
    "skipping annotation",
    "not rehydratable",
    "No measurements found which were rehydratable",
    "Error Boundary",
    "ReferencedSOPSequence",
    "TypeError",
)
_THUMBNAIL = (
    "Array.from(document.querySelectorAll('[data-cy^=study-browser-thumbnail]'))"
    ".find(e => e.querySelector('[data-cy=series-modality-label]')?.innerText === '{}')"
)
_HYDRATE_PROMPT = "document.body.innerText.includes('Do you want to open this Segmentation?')"
# OHIF's first-visit tour and investigational-use banner cover the viewport.
_DISMISS = (
    "(() => { let n = 0; for (const b of document.querySelectorAll('button')) {"
    " if (['Skip all', 'Confirm and hide'].includes(b.innerText.trim())) { b.click(); n++; } }"
    " return n; })()"
)


@dataclass(frozen=True)
class ReturnedStudy:
    study_uid: str
    mr_files: list[Path]
    sr_path: Path
    seg_path: Path


@pytest.fixture(scope="module")
def returned(tmp_path_factory: pytest.TempPathFactory) -> ReturnedStudy:
    """A phantom study (early ONFH right, healthy left) with the SR and SEG we return."""
    directory = tmp_path_factory.mktemp("returned")
    phantom = generate_study(23, 0, (True, False))
    datasets = write_series(phantom, directory / "series")
    write_segmentation(phantom, datasets, directory / "truth_seg.dcm")
    scored = score_series(
        directory / "series", BundleModel.load(DEMO_BUNDLE), seg=directory / "truth_seg.dcm"
    )
    sr_path, seg_path = write_outputs(scored, directory / "out")
    return ReturnedStudy(
        str(datasets[0].StudyInstanceUID),
        sorted((directory / "series").glob("*.dcm")),
        sr_path,
        seg_path,
    )


@dataclass
class Viewer:
    browser: Chromium
    study: ReturnedStudy
    shots: Path

    def open_series(self, modality: str) -> list[ConsoleEntry]:
        """Double-click the study browser's entry of ``modality``; the console it caused."""
        before = len(self.browser.console)
        self.browser.evaluate(_DISMISS)
        self.browser.double_click(_THUMBNAIL.format(modality))
        time.sleep(1)
        return self.browser.console[before:]


@pytest.fixture(scope="module")
def viewer(returned: ReturnedStudy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    dist = ohif_dist()
    root = tmp_path_factory.mktemp("viewer")
    orthanc = DicomWebOrthanc(root / "orthanc")
    server: OhifServer | None = None
    browser: Chromium | None = None
    try:
        for path in [*returned.mr_files, returned.sr_path, returned.seg_path]:
            orthanc.upload(path)
        server = OhifServer(dist, orthanc)
        browser = Chromium(root / "chromium")
        browser.navigate(server.viewer_url(returned.study_uid))
        browser.wait_for(
            "window.services && services.displaySetService.getActiveDisplaySets()"
            ".filter(d => ['MR', 'SR', 'SEG'].includes(d.Modality)).length === 3",
            90,
            "OHIF's display sets of the MR, SR and SEG",
        )
        browser.wait_for(
            "document.querySelector('[data-cy=viewport-overlay-bottom-right]')?.innerText"
            ".startsWith('I:')",
            60,
            "the first MR image in the viewport",
        )
        browser.evaluate(_DISMISS)
        time.sleep(0.5)
        browser.screenshot(root / "mr.png")
        yield Viewer(browser, returned, root)
    finally:
        if browser is not None:
            browser.stop()
        if server is not None:
            server.stop()
        orthanc.stop()


def _measurements(browser: Chromium) -> list[dict[str, Any]]:
    value = browser.evaluate(
        "services.measurementService.getMeasurements().map(m => ({"
        " label: m.label, toolName: m.toolName, points: (m.points || []).length,"
        " displayText: m.displayText, referencedImageId: m.referencedImageId,"
        " referenceSeriesUID: m.referenceSeriesUID }))"
    )
    assert isinstance(value, list)
    return value


def test_opening_the_sr_draws_both_hips_contours_without_loader_errors(viewer: Viewer) -> None:
    viewer.open_series("SR")
    browser = viewer.browser

    def trouble() -> list[ConsoleEntry]:
        return [
            entry
            for entry in browser.console
            if entry.level in ("error", "exception", "log-error")
            or any(marker in entry.text for marker in SR_LOADER_TROUBLE)
        ]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not trouble():
        if browser.evaluate("services.measurementService.getMeasurements().length") >= 2:
            break
        time.sleep(0.3)
    time.sleep(1.5)  # let the viewport draw before the screenshot
    browser.screenshot(viewer.shots / "sr.png")
    assert not trouble(), "\n".join(f"{e.level}: {e.text[:300]}" for e in trouble())
    measurements = _measurements(browser)
    labels = sorted(str(m["label"]) for m in measurements)
    assert labels == sorted(SEGMENT_LABELS.values()), json.dumps(measurements, indent=1)
    mr_series = str(
        pydicom.dcmread(viewer.study.mr_files[0], stop_before_pixels=True).SeriesInstanceUID
    )
    for measurement in measurements:
        assert measurement["referenceSeriesUID"] == mr_series
        assert measurement["points"] >= 8  # a closed contour, not a point or a line
    # The contours are drawn: cornerstone's annotation layer has a path per hip.
    drawn = browser.evaluate(
        "document.querySelectorAll('svg.svg-layer path, svg.svg-layer polyline').length"
    )
    assert drawn >= 2
    # Each hip's values, labelled with their concepts, are in the measurement text.
    report = read_report(pydicom.dcmread(viewer.study.sr_path))
    text = json.dumps([m["displayText"] for m in measurements])
    for hip in report.values():
        assert f"{hip.probability:.2f}" in text
    assert "Probability" in text


def test_opening_the_seg_hydrates_both_femoral_heads(viewer: Viewer) -> None:
    viewer.open_series("SEG")
    browser = viewer.browser
    # OHIF previews a SEG and asks before it hydrates it onto the source series.
    browser.wait_for(_HYDRATE_PROMPT, 30, "OHIF's 'open this Segmentation?' prompt")
    browser.evaluate(
        "Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Yes')"
        ".click()"
    )
    try:
        labels = browser.wait_for(
            "(() => { const s = services.segmentationService.getSegmentations();"
            " const id = services.viewportGridService.getActiveViewportId();"
            " if (!s.length || !services.segmentationService"
            ".getSegmentationRepresentations(id).length) return null;"
            " return Object.values(s[0].segments).filter(Boolean).map(x => x.label).sort(); })()",
            30,
            "the SEG's segments hydrated in the active viewport",
        )
    finally:
        time.sleep(1.5)
        browser.screenshot(viewer.shots / "seg.png")
    assert labels == sorted(SEGMENT_LABELS.values())
    assert not browser.evaluate(_HYDRATE_PROMPT)
    errors = [e for e in browser.console if e.level in ("error", "exception", "log-error")]
    assert not errors, "\n".join(f"{e.level}: {e.text[:300]}" for e in errors)
