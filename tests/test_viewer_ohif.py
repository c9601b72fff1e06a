"""What a radiologist sees in OHIF: a study with our SR, SEG and card, in a real viewer.

A phantom study is scored offline (the worker's pipeline, the phantom's SEG as ROI
source, ``write_outputs`` writing the SR, SEG and card the worker delivers); the MR
series and those three go into Orthanc (Debian, DICOMweb plugin); the
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
# ("not rehydratable" is not among them: it means OHIF will not turn the measurements
# into its own editable tools, right for a read-only AI result it displays as is.)
SR_LOADER_TROUBLE = (
    "skipping annotation",
    "not currently supported",
    "No Tracking Unique Identifier",
    "Error Boundary",
    "ReferencedSOPSequence",
    "TypeError",
)
_THUMBNAIL = (
    "Array.from(document.querySelectorAll('[data-cy^=study-browser-thumbnail]'))"
    ".find(e => e.querySelector('[data-cy=series-modality-label]')?.innerText === '{}')"
)
# Scroll the active viewport to an image.
_SHOW_IMAGE = (
    "(() => {{ const id = services.viewportGridService.getActiveViewportId();"
    " const vp = services.cornerstoneViewportService.getCornerstoneViewport(id);"
    " const index = vp.getImageIds().indexOf({image_id});"
    " vp.setImageIdIndex(index); return index; }})()"
)
# Redraw the active viewport. OHIF's SR viewport can add the SR's annotations after the
# image's last render without drawing them (seen in 2 of 4 runs here: the
# annotations are in the state, the SVG layer is empty until the next render); any user
# action (a scroll, the mouse over the image) redraws, and so does this.
_RENDER = (
    "(() => { const id = services.viewportGridService.getActiveViewportId();"
    " services.cornerstoneViewportService.getCornerstoneViewport(id).render(); })()"
)
# What cornerstone's annotation layer draws in the active viewport: outlines, the text
# lines, and how far the rightmost text line reaches past the right edge of the layer,
# which covers the viewport (OHIF clips what does not fit).
_DRAWN = (
    "(() => { const layer = document.querySelector("
    "'[data-viewportid=' + services.viewportGridService.getActiveViewportId() + '] svg.svg-layer');"
    " if (!layer) return { outlines: 0, text: [], overflow: 0 };"
    " const spans = Array.from(layer.querySelectorAll('text tspan'));"
    " const lines = spans.length ? spans : Array.from(layer.querySelectorAll('text'));"
    " const right = Math.max(...lines.map(t => t.getBoundingClientRect().right));"
    " return { outlines: layer.querySelectorAll('path, polyline').length,"
    " text: lines.map(t => t.textContent),"
    " overflow: lines.length ? right - layer.getBoundingClientRect().right : 0 }; })()"
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
    card_path: Path
    card_uid: str


@pytest.fixture(scope="module")
def returned(tmp_path_factory: pytest.TempPathFactory) -> ReturnedStudy:
    """A phantom study (early ONFH right, healthy left) with the SR and SEG we return."""
    directory = tmp_path_factory.mktemp("returned")
    phantom = generate_study(23, 0, (True, False))
    datasets = write_series(phantom, directory / "series")
    write_segmentation(phantom, datasets, directory / "truth_seg.dcm")
    model = BundleModel.load(DEMO_BUNDLE)
    scored = score_series(directory / "series", model, seg=directory / "truth_seg.dcm")
    written = write_outputs(scored, directory / "out")
    assert written.seg is not None
    # The card is the one the worker writes and delivers with the SR and SEG.
    sr_path, seg_path, card_path = written.sr, written.seg, written.card
    return ReturnedStudy(
        str(datasets[0].StudyInstanceUID),
        sorted((directory / "series").glob("*.dcm")),
        sr_path,
        seg_path,
        card_path,
        scored.card_uid,
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
        for path in [*returned.mr_files, returned.sr_path, returned.seg_path, returned.card_path]:
            orthanc.upload(path)
        server = OhifServer(dist, orthanc)
        browser = Chromium(root / "chromium")
        browser.navigate(server.viewer_url(returned.study_uid))
        browser.wait_for(
            "window.services && services.displaySetService.getActiveDisplaySets()"
            ".filter(d => ['MR', 'SR', 'SEG', 'OT'].includes(d.Modality)).length === 4",
            90,
            "OHIF's display sets of the MR, SR, SEG and result card",
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


def _sr_measurements(browser: Chromium) -> list[dict[str, Any]]:
    """What OHIF's SR loader made of the SR: its display set's measurements."""
    value = browser.evaluate(
        "(services.displaySetService.getActiveDisplaySets().find(d => d.Modality === 'SR')"
        "?.measurements || []).map(m => ({"
        " trackingIdentifier: m.TrackingIdentifier, loaded: m.loaded, imageId: m.imageId,"
        " graphicType: m.graphicType, points: m.pointsLength,"
        " labels: (m.labels || []).map(l => l.label + ': ' + l.value) }))"
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
        if sum(bool(m["loaded"]) for m in _sr_measurements(browser)) >= 2:
            break
        time.sleep(0.3)
    time.sleep(1.5)  # let the viewport draw before the screenshot
    browser.screenshot(viewer.shots / "sr.png")
    assert not trouble(), "\n".join(f"{e.level}: {e.text[:300]}" for e in trouble())
    measurements = _sr_measurements(browser)
    assert sorted(m["trackingIdentifier"] for m in measurements) == sorted(
        SEGMENT_LABELS.values()
    ), json.dumps(measurements, indent=1)
    mr_series = str(
        pydicom.dcmread(viewer.study.mr_files[0], stop_before_pixels=True).SeriesInstanceUID
    )
    report = read_report(pydicom.dcmread(viewer.study.sr_path))
    by_label = {label: side for side, label in SEGMENT_LABELS.items()}
    # Each hip's outline is drawn on its own largest slice, labelled with its values.
    for measurement in measurements:
        side = by_label[measurement["trackingIdentifier"]]
        assert measurement["loaded"], measurement  # placed on an image of the MR series
        assert mr_series in measurement["imageId"]
        assert measurement["graphicType"] == "POLYLINE" and measurement["points"] >= 8
        browser.evaluate(_SHOW_IMAGE.format(image_id=json.dumps(measurement["imageId"])))
        hip = report[side]
        assert hip.probability is not None  # both hips of this study are scored
        verdict = "early ONFH suspected" if hip.necrosis_present else "early ONFH not suspected"
        call = f"{side.value}: {verdict}, p: {100 * hip.probability:.2f} %"
        # Rendering is asynchronous: poll until this hip's outline and text are drawn.
        deadline = time.monotonic() + 60  # a loaded 2-core machine draws late
        while True:
            browser.evaluate(_RENDER)
            drawn = browser.evaluate(_DRAWN)
            text = "\n".join(drawn["text"])
            done = drawn["outlines"] >= 1 and call in text
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        time.sleep(0.5)
        browser.screenshot(viewer.shots / f"sr-{side}.png")
        assert drawn["outlines"] >= 1, drawn
        assert call in text, text  # the call is readable where OHIF shows text
        # ... all of it: the left hip's text box (right of the outline, on the image's
        # right) once ran past the viewport's edge.
        assert drawn["overflow"] <= 0, drawn
        assert f"Probability: {100 * hip.probability:.2f} %" in text, text
        assert f"Score: {hip.score:.2f} {{log-odds}}" in text, text
        assert "Area:" in text and "mm2" in text and "Volume:" in text, text
        # No value followed by a bare unit "1" (OHIF prints the UCUM code as is).
        assert not [line for line in drawn["text"] if line.endswith(" 1")], text


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


def test_the_result_card_displays_as_an_image(viewer: Viewer) -> None:
    viewer.open_series("OT")
    browser = viewer.browser
    try:
        browser.wait_for(
            "(() => { const id = services.viewportGridService.getActiveViewportId();"
            " const vp = services.cornerstoneViewportService.getCornerstoneViewport(id);"
            " return vp && (vp.getCurrentImageId() || '')"
            f".includes('{viewer.study.card_uid}'); }})()",
            30,
            "the result card in the active viewport",
        )
    finally:
        time.sleep(1.5)
        browser.screenshot(viewer.shots / "card.png")
    errors = [e for e in browser.console if e.level in ("error", "exception", "log-error")]
    assert not errors, "\n".join(f"{e.level}: {e.text[:300]}" for e in errors)
