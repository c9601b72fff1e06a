# ruff: noqa: RUF001
# The documents use typographic signs (en dash, multiplication sign); the tests look for them.
"""The training report and the model card, on a real (small) training run.

The run is real: :func:`~model_bundle.training.train_models` on synthetic hips (no
images: radiomics vectors with a few label-shifted features and 64 x 64 network inputs
with a brighter disc in ONFH hips), one fine-tuning epoch, 3-fold CV, then
:func:`~model_bundle.evaluation.evaluate_split` on both sets, as a training run does.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from html_checks import parse_html

from model_bundle.evaluation import evaluate_split, read_site_validation
from model_bundle.imaging import Side
from model_bundle.models import FeatureSelector
from model_bundle.reporting import SYNTHETIC_WARNING, model_card, render_report
from model_bundle.reporting.model_details import _lasso_path
from model_bundle.training import (
    MODEL_KEYS,
    HipSample,
    TrainConfig,
    TrainingResult,
    TrainProbabilities,
    shape_leak,
    train_models,
    training_metrics,
)
from onfh_dlr.errors import ConfigurationError

# Failure reasons with markup and Markdown in them: both documents must show them as text.
SCRIPT_REASON = 'HeadNotFoundError: <script>alert("x")</script> & co'
MARKDOWN_REASON = "<img src=x onerror=alert(1)> | *bold* `tick`"
# A feature name with markup, swapped into the Rad selector after training.
ODD_NAME = "orig<b>&\"name'"


def _samples() -> list[HipSample]:
    """40 patients x 2 hips, half the patients with ONFH (a third of them bilateral)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 14**2).astype(np.float32)
    out: list[HipSample] = []
    for p in range(40):
        patient = f"P{p:03d}"
        onfh = p % 2 == 1
        for side in (Side.LEFT, Side.RIGHT):
            label = int(onfh and (side == "L" or p % 3 == 0))
            row = {"PatientID": patient, "Side": side, "Label": str(label)}
            if (p, side) in ((3, "R"), (5, "L")):
                reason = SCRIPT_REASON if p == 3 else MARKDOWN_REASON
                out.append(HipSample(patient, side, label, row, None, None, "auto", reason))
                continue
            if p == 8:  # a patient with no usable hip at all
                out.append(HipSample(patient, side, label, row, None, None, "", SCRIPT_REASON))
                continue
            radiomics = rng.normal(size=1197)
            radiomics[20:26] += 1.2 * label  # first-order features of the original image
            net = rng.normal(size=(3, 64, 64)).astype(np.float32) + 1.0 * label * disc
            source = "seg" if p % 5 == 0 else "auto"
            out.append(HipSample(patient, side, label, row, radiomics, net, source, ""))
    return out


def _metrics(result: TrainingResult) -> dict[str, Any]:
    return training_metrics(result)  # what a training run writes to metrics.json


@pytest.fixture(scope="module")
def trained() -> tuple[TrainingResult, dict[str, Any]]:
    # model_validate, not TrainConfig(...): the positional Field(default, ...) of TrainConfig
    # makes mypy (without the pydantic plugin) take those fields for required arguments.
    config = TrainConfig.model_validate(
        {"epochs": 1, "batch_size": 8, "lasso_folds": 3, "cv_folds": 3, "threads": 1}
    )
    result = train_models(_samples(), config)
    return result, _metrics(result)


def _summary(result: TrainingResult, *, synthetic: bool = True) -> dict[str, Any]:
    """What Bundle.summary() returns, for a bundle of this run."""
    deployed = result.config.deployed_model
    return {
        "name": "onfh-dlr-test",
        "version": "0.0.1",
        "device_uid": "2.25.123456789",
        "created": "2025-01-02T03:04:05Z",
        "deployed_model": deployed,
        "threshold": result.models[deployed].threshold,
        "feature_counts": {k: len(m.input_names) for k, m in result.models.items()},
        "synthetic": synthetic,
        "not_for_clinical_use": synthetic,
        "warning": "Trained on phantom data." if synthetic else "",
        "format_version": 1,
        "files": 9,
        "directory": "/tmp/bundle",
    }


def _card(result: TrainingResult, metrics: Mapping[str, Any], synthetic: bool = True) -> str:
    return model_card(
        result,
        name="onfh-dlr-test",
        version="0.0.1",
        synthetic=synthetic,
        intended_use="Second reader for early ONFH on coronal T2-FS hip MRI.",
        metrics=metrics,
    )


def _render(
    result: TrainingResult, metrics: Mapping[str, Any], *, synthetic: bool = True, **kw: Any
) -> str:
    return render_report(
        result,
        metrics,
        manifest_summary=_summary(result, synthetic=synthetic),
        model_card_md=_card(result, metrics, synthetic),
        **kw,
    )


def _ci(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['estimate']:.3f} ({low:.3f}–{high:.3f})"


def test_report_is_one_self_contained_html_file(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    result, metrics = trained
    document = _render(result, metrics)
    assert document.startswith("<!DOCTYPE html>")
    parsed = parse_html(document)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "iframe" not in parsed.tags
    for tag, name, value in parsed.attrs:
        if name in ("src", "href"):
            assert not re.match(r"\s*(https?:)?//", value, re.I), (tag, name, value)
            assert value.startswith(("#", "data:image/png;base64,")), (tag, name, value)
    images = [v for t, n, v in parsed.attrs if t == "img" and n == "src"]
    assert len(images) >= 5
    for src in images:
        png = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "url(" not in document  # no CSS resource either


def test_report_header_banner_and_metrics(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    result, metrics = trained
    document = _render(result, metrics)
    text = " ".join(parse_html(document).text)
    for value in ("onfh-dlr-test", "0.0.1", "2.25.123456789", "2025-01-02T03:04:05Z"):
        assert value in text
    assert SYNTHETIC_WARNING in text
    assert 'class="banner"' in document
    # Every model's AUC, on both sets, exactly as evaluate_split reported it.
    for split in ("train", "test"):
        for key in MODEL_KEYS:
            assert _ci(metrics[split]["models"][key]["auc"]) in text, (split, key)
            sensitivity = metrics[split]["models"][key]["metrics"]["sensitivity"]
            assert _ci(sensitivity) in text
    for comparison in metrics["test"]["delong"]:
        assert f"{comparison['auc_a']:.3f}" in text

    plain = _render(result, metrics, synthetic=False)
    assert 'class="banner"' not in plain
    assert SYNTHETIC_WARNING not in plain


def test_report_cohort_counts(trained: tuple[TrainingResult, dict[str, Any]]) -> None:
    result, metrics = trained
    parsed = parse_html(_render(result, metrics))
    rows = parsed.table("Usable hips by split and label")
    expected = []
    for split, index in (("train", result.train_idx), ("test", result.test_idx)):
        hips = [result.usable[i] for i in index]
        patients: dict[str, int] = {}
        for h in hips:
            patients[h.patient_id] = max(patients.get(h.patient_id, 0), h.label)
        positive = sum(h.label for h in hips)
        with_onfh = sum(patients.values())
        expected.append(
            [
                split,
                len(patients),
                with_onfh,
                len(patients) - with_onfh,
                len(hips),
                positive,
                len(hips) - positive,
            ]
        )
    expected.append(["total", *(sum(int(r[i]) for r in expected) for i in range(1, 7))])
    assert rows[1:] == [[str(c) for c in r] for r in expected]
    assert expected[-1][4] == len(result.usable) == 76
    text = " ".join(parsed.text)
    assert "The cohort has 40 patients and 80 hips; 76 hips are usable and 4 were excluded" in text
    assert "(patients with no usable hip: 1)" in text
    reasons = parsed.table("Excluded (unusable) hips")
    assert [SCRIPT_REASON, "3", "1", "2"] in reasons
    assert [MARKDOWN_REASON, "1", "1", "0"] in reasons


def test_report_escapes_reasons_and_feature_names(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    result, metrics = trained
    rad = result.models["rad"]
    original = rad.selector.selected_names[0]
    # Rename one selected feature everywhere in the selector (through its JSON form).
    data = json.loads(
        json.dumps(rad.selector.to_json()).replace(json.dumps(original), json.dumps(ODD_NAME))
    )
    selector = FeatureSelector.from_json(data)
    names = tuple(ODD_NAME if n == original else n for n in rad.input_names)
    odd = dataclasses.replace(
        result,
        models={
            **result.models,
            "rad": dataclasses.replace(rad, selector=selector, input_names=names),
        },
    )
    document = _render(odd, metrics)
    parsed = parse_html(document)
    assert "<script>" not in document and "<b>" not in document and "<img src=x" not in document
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in document
    assert "orig&lt;b&gt;&amp;&quot;name&#x27;" in document
    text = "".join(parsed.text)
    assert f"× z({ODD_NAME})" in text  # the formula names it, as text
    # In the model card, Markdown and HTML in a reason stay text for any renderer.
    card = _card(odd, metrics)
    assert "\\<img src=x onerror=alert(1)\\> \\| \\*bold\\* \\`tick\\`" in card
    assert MARKDOWN_REASON in text  # and the report's rendering of the card shows it as is


def test_report_score_formula(trained: tuple[TrainingResult, dict[str, Any]]) -> None:
    result, metrics = trained
    text = "".join(parse_html(_render(result, metrics)).text)
    for key in MODEL_KEYS:
        m = result.models[key]
        names = m.selector.selected_names
        if m.classifier_name == "LR":
            clf = m.classifier
            intercept = float(clf.intercept_[0])
            assert f"score = {intercept:.4f}" in text
            for name, w in zip(names, clf.coef_[0], strict=True):
                sign = "-" if w < 0 else "+"
                assert f"{sign} {abs(w):.4f} × z({name})" in text
        assert f"P(ONFH) >= {m.threshold:.3f}" in text or m.classifier_name != "LR"

    # A classifier without a closed formula: the LASSO linear score instead.
    rad = result.models["rad"]
    forest = dataclasses.replace(
        result,
        models={**result.models, "rad": dataclasses.replace(rad, classifier_name="RandomForest")},
    )
    text = "".join(parse_html(_render(forest, metrics)).text)
    assert "(RandomForest) has no closed formula" in text
    lasso = rad.selector.record.lasso
    assert f"lasso_score = {lasso.intercept:.4f}" in text


def test_report_shows_na_with_reason(trained: tuple[TrainingResult, dict[str, Any]]) -> None:
    result, metrics = trained
    broken = copy.deepcopy(metrics)
    entry = broken["test"]["models"]["dl"]["metrics"]["ppv"]
    entry.update(estimate=None, ci95=[None, None], reason="no hip was called positive")
    del broken["test"]["models"]["rad"]["auc"]
    text = " ".join(parse_html(_render(result, broken)).text)
    assert "n/a (no hip was called positive)" in text
    assert "n/a (both classes are needed for an AUC)" in text
    assert "nan" not in text.lower().split()


def test_report_label_leak_section(trained: tuple[TrainingResult, dict[str, Any]]) -> None:
    result, metrics = trained
    head = _render(result, metrics)
    assert 'id="label-leak"' not in head
    assert "whole femoral head" in head
    leak = {"shape_only_auc": {"estimate": 0.987654, "ci95": [0.95, 1.0]}, "features": 14}
    document = _render(result, metrics, roi_protocol="lesion", shape_leak=leak)
    parsed = parse_html(document)
    assert 'id="label-leak"' in document
    rows = parsed.table("Shape-feature leak")
    assert ["shape_only_auc.estimate", "0.988"] in rows
    assert ["features", "14"] in rows
    assert "label leak: paper ROI protocol" in " ".join(parsed.text)
    with pytest.raises(ConfigurationError):
        _render(result, metrics, roi_protocol="necrosis")


def test_model_card(trained: tuple[TrainingResult, dict[str, Any]]) -> None:
    result, metrics = trained
    card = _card(result, metrics)
    assert card.startswith("# onfh-dlr-test 0.0.1 — model card")
    assert f"**⚠ {SYNTHETIC_WARNING}.**" in card
    assert "Second reader for early ONFH on coronal T2-FS hip MRI." in card
    for heading in ("Intended use", "Model", "Data", "ROI protocol", "Evaluation", "Limitations"):
        assert f"\n## {heading}\n" in card
    assert "whole femoral head of every hip" in card
    assert "| Checklist | Item | Topic | Where answered |" in card
    assert re.search(r"^\| TRIPOD\+AI \| 3b \| .+ \| Card: Intended use \|$", card, re.M)
    assert re.search(
        r"^\| CLEAR \| 19 \| Segmentation strategy \| Card: ROI protocol \|$", card, re.M
    )
    deployed = result.config.deployed_model
    assert _ci(metrics["test"]["models"][deployed]["auc"]) in card
    assert _ci(metrics["test"]["models"][deployed]["metrics"]["specificity"]) in card
    assert "| HeadNotFoundError | 3 |" in card  # failures grouped by error class
    assert "**Synthetic data.**" in card and "**Not validated externally.**" in card

    real = _card(result, metrics, synthetic=False)
    assert SYNTHETIC_WARNING not in real and "**Synthetic data.**" not in real
    lesion = model_card(
        result,
        name="x",
        version="1",
        synthetic=False,
        intended_use="research",
        metrics=metrics,
        roi_protocol="lesion",
    )
    assert "Label leak" in lesion and "reproduction only" in lesion


def test_lasso_path_matches_the_selection(trained: tuple[TrainingResult, dict[str, Any]]) -> None:
    result, _ = trained
    rad = result.models["rad"]
    path = _lasso_path(rad)
    assert path is not None
    alphas, coefs = path
    lasso = rad.selector.record.lasso
    at = int(np.argmin(np.abs(alphas - lasso.alpha)))
    assert alphas[at] == pytest.approx(lasso.alpha)
    expected = [lasso.coefficients[n] for n in rad.selector.record.mrmr_order]
    np.testing.assert_allclose(coefs[:, at], expected, atol=2e-3)
    # Training records the path of every model, deep features or not.
    dl = result.models["dl"]
    dl_path = _lasso_path(dl)
    assert dl_path is not None
    assert dl_path[1].shape == (len(dl.selector.record.mrmr_order), len(dl_path[0]))


def test_a_selector_without_a_recorded_path_round_trips_and_shows_no_path(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    # A selector from a bundle written before training recorded the LASSO path.
    result, _ = trained
    rad = result.models["rad"]
    data = rad.selector.to_json()
    assert "path" in data["record"]["lasso"]
    del data["record"]["lasso"]["path"]
    older = FeatureSelector.from_json(data)
    assert older.record.lasso.path is None
    assert older.to_json() == data
    assert _lasso_path(dataclasses.replace(rad, selector=older)) is None


def test_the_roc_figure_uses_the_probabilities_the_training_metrics_record(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    result, metrics = trained
    assert metrics["train_probabilities"] == "in-sample"
    in_sample = _render(result, metrics)
    assert "use the in-sample probabilities the training metrics" in in_sample
    kind = TrainProbabilities.OUT_OF_FOLD
    oof = dict(metrics)
    oof["train"] = evaluate_split(
        result.y[result.train_idx],
        {k: m.train_probabilities(kind) for k, m in result.models.items()},
        {k: m.threshold for k, m in result.models.items()},
    )
    oof["train_probabilities"] = kind.value
    assert "use the out-of-fold probabilities the training metrics" in _render(result, oof)


def test_shape_leak_measures_what_shape_alone_separates(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    result, _ = trained
    leak = shape_leak(result)
    assert len(leak["features"]) == 14
    assert all(n.startswith("original_shape_") for n in leak["features"])
    for split in ("train", "test"):
        assert 0.0 <= leak[f"{split}_auc"] <= 1.0
        low, high = leak[f"{split}_auc_ci95"]
        assert low <= leak[f"{split}_auc"] <= high


def test_training_metrics_record_the_aucs_the_figures_label(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    result, metrics = trained
    for key, m in result.models.items():
        recorded = metrics["train_auc"][key]
        assert recorded["in-sample"] == metrics["train"]["models"][key]["auc"]
        assert set(recorded) == {"in-sample", "out-of-fold"}
        assert set(metrics["test_auc_by_classifier"][key]) == set(m.test_prob_by_classifier)


def test_the_report_renders_the_recorded_classifier_aucs(
    trained: tuple[TrainingResult, dict[str, Any]],
) -> None:
    # The report shows what training recorded, never an AUC of its own.
    result, metrics = trained
    rad = result.models["rad"]
    name = next(iter(rad.test_prob_by_classifier))
    altered = copy.deepcopy(metrics)
    altered["test_auc_by_classifier"]["rad"][name] = {
        "estimate": 0.4321,
        "ci95": [0.1234, 0.5678],
        "se": 0.1,
    }
    assert "0.432 (0.123–0.568)" in _render(result, altered)


def _site_validation(tmp_path: Path, *, met: bool) -> Path:
    table = (
        "| Held-out site | Hips scored | Targets met |\n|---|---|---|\n"
        f"| ge-3t | 80/80 | {'all' if met else 'missed: slope'} |"
    )
    summary = {
        "cohort": "/data/sites-160/cohort.csv",
        "sites": ["ge-3t", "siemens-1.5t"],
        "table": table,
        "results": [{"site": "ge-3t", "meets": {"DLR AUC": True, "slope": met}}],
    }
    path = tmp_path / "leave_one_site_out.json"
    path.write_text(json.dumps(summary), encoding="utf-8")
    return path


def test_the_model_card_shows_the_leave_one_site_out_table_and_says_whether_targets_were_met(
    trained: tuple[TrainingResult, dict[str, Any]], tmp_path: Path
) -> None:
    result, metrics = trained
    for met, verdict in ((True, "Every held-out site met every target."), (False, "**Not every")):
        validation = read_site_validation(_site_validation(tmp_path, met=met))
        assert validation.all_targets_met is met
        card = model_card(
            result,
            name="x",
            version="1",
            synthetic=True,
            intended_use="research",
            metrics=metrics,
            site_validation=validation,
        )
        assert "\n## Site transfer (leave-one-site-out)\n" in card
        assert validation.table in card and verdict in card
        assert "**Not validated externally.**" not in card
        assert "**Site transfer measured on phantom sites only.**" in card


@pytest.mark.parametrize(
    "text", ["[1, 2]", '{"table": "t", "sites": []}', '{"table": "t", "sites": [], "results": []}']
)
def test_a_file_that_is_not_a_leave_one_site_out_summary_is_refused(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "x.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError):
        read_site_validation(path)
