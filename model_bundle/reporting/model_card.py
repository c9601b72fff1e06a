# ruff: noqa: RUF001
# Read by clinicians: typographic dashes, signs and Greek letters are intended.
"""The model card (``MODEL_CARD.md``) of a trained model: intended use and users, the model,
the data, the ROI protocol, the test results, the limitations, and where the applicable
TRIPOD+AI and CLEAR items are answered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from model_bundle.bundle import AcquisitionReference, ReferenceStatistics
from model_bundle.evaluation import SiteValidation
from model_bundle.features import NormalisationProfile
from model_bundle.models import CLASSIFIERS
from model_bundle.reporting.cohort import _ROI_SOURCE_NAMES, _Cohort, _cohort, _reason_category
from model_bundle.reporting.markdown import _md, _md_table
from model_bundle.reporting.text import (
    _PAPER_AUC,
    ROI_PROTOCOLS,
    SYNTHETIC_WARNING,
    _auc_text,
    _entry,
    _get,
    _metric_text,
    _models,
    _name,
    _num,
)
from model_bundle.training import TrainingResult
from onfh_dlr.errors import ConfigurationError

# --------------------------------------------------------------------------- model card


_COHORT_HEADER: Final = (
    "Split",
    "Patients",
    "with ONFH",
    "without ONFH",
    "Hips",
    "ONFH hips",
    "healthy hips",
)


def _cohort_rows(cohort: _Cohort) -> list[tuple[str, int, int, int, int, int, int]]:
    """Rows of the cohort table (:data:`_COHORT_HEADER`), train, test and total."""
    rows = [
        (split, p_pos + p_neg, p_pos, p_neg, h_pos + h_neg, h_pos, h_neg)
        for split, p_pos, p_neg, h_pos, h_neg in cohort.splits
    ]
    # Patients are split, never shared, so the split counts simply add up.
    p_pos = sum(row[1] for row in cohort.splits)
    p_neg = sum(row[2] for row in cohort.splits)
    h_pos = sum(row[3] for row in cohort.splits)
    h_neg = sum(row[4] for row in cohort.splits)
    rows.append(("total", p_pos + p_neg, p_pos, p_neg, h_pos + h_neg, h_pos, h_neg))
    return rows


# (checklist, item, topic, where it is answered): only items this card and the report
# answer, or must say "not done"; items about a manuscript (title page, abstract, funding,
# ethics, registration) belong to the hospital's publication, not to a bundle.
_CHECKLIST: Final = (
    ("TRIPOD+AI", "1", "Development of a prediction model, population, outcome", "Card: title"),
    ("TRIPOD+AI", "3b", "Target population, intended purpose and users", "Card: Intended use"),
    ("TRIPOD+AI", "5a", "Sources of data", "Card: Data"),
    ("TRIPOD+AI", "6b", "Eligibility criteria", "Card: Data (usable hips, exclusions)"),
    ("TRIPOD+AI", "7", "Data pre-processing and quality checking", "Card: Model, ROI protocol"),
    ("TRIPOD+AI", "8a", "Outcome definition", "Card: Data"),
    ("TRIPOD+AI", "9a", "Choice of initial predictors", "Card: Model"),
    ("TRIPOD+AI", "9b", "Definition of predictors", "Card: Model; report: Feature selection"),
    ("TRIPOD+AI", "10", "Study size", "Card: Data"),
    ("TRIPOD+AI", "11", "Missing data", "Card: Data; report: Cohort"),
    ("TRIPOD+AI", "12a", "How the data were used (partitioning)", "Card: Data"),
    ("TRIPOD+AI", "12b", "Handling of predictors (standardisation)", "Card: Model"),
    (
        "TRIPOD+AI",
        "12c",
        "Model type, building steps, tuning, internal validation",
        "Card: Model; report: Classifier comparison",
    ),
    (
        "TRIPOD+AI",
        "12e",
        "Performance measures and plots",
        "Card: Evaluation; report: Discrimination, Calibration, Decision curve",
    ),
    ("TRIPOD+AI", "13", "Class imbalance methods", "Card: Model (none used)"),
    ("TRIPOD+AI", "14", "Fairness", "Card: Limitations (not assessed)"),
    ("TRIPOD+AI", "15", "Model output and threshold", "Card: Model"),
    (
        "TRIPOD+AI",
        "20a",
        "Flow of participants, with/without outcome",
        "Card: Data; report: Cohort",
    ),
    ("TRIPOD+AI", "21", "Participants and events per analysis", "Card: Data; report: Cohort"),
    (
        "TRIPOD+AI",
        "22",
        "Full model specification",
        "Report: Feature selection (score formula); bundle files",
    ),
    (
        "TRIPOD+AI",
        "23a",
        "Performance with confidence intervals",
        "Card: Evaluation; report: Discrimination",
    ),
    ("TRIPOD+AI", "26", "Limitations", "Card: Limitations"),
    ("TRIPOD+AI", "27a", "Poor quality or unavailable input data", "Card: Intended use"),
    ("TRIPOD+AI", "27b", "User interaction and expertise", "Card: Intended use"),
    ("CLEAR", "13", "Data source", "Card: Data"),
    ("CLEAR", "15", "Data split methodology", "Card: Data"),
    ("CLEAR", "16", "Imaging protocol", "Card: Intended use, Model"),
    ("CLEAR", "18", "Reference standard", "Card: Data"),
    ("CLEAR", "19", "Segmentation strategy", "Card: ROI protocol"),
    ("CLEAR", "21", "Image pre-processing", "Card: Model"),
    ("CLEAR", "22", "Resampling", "Card: Model"),
    ("CLEAR", "23", "Discretisation", "Card: Model (bundle radiomics_params.yaml)"),
    ("CLEAR", "24", "Image types", "Card: Model"),
    ("CLEAR", "25", "Feature extraction software and version", "Card: Model; manifest libraries"),
    ("CLEAR", "26", "Feature classes", "Card: Model"),
    ("CLEAR", "27", "Number of features", "Card: Model"),
    ("CLEAR", "29", "Missing data", "Card: Data"),
    ("CLEAR", "30", "Class imbalance", "Card: Data, Model"),
    ("CLEAR", "32", "Feature scaling", "Card: Model"),
    ("CLEAR", "33", "Dimension reduction", "Card: Model; report: Feature selection"),
    ("CLEAR", "34", "Algorithm details", "Card: Model"),
    ("CLEAR", "35", "Training and tuning", "Card: Model"),
    ("CLEAR", "37", "Model selection strategy", "Card: Model; report: Classifier comparison"),
    ("CLEAR", "38", "Testing technique", "Card: Evaluation"),
    ("CLEAR", "39", "Performance metrics", "Card: Evaluation"),
    ("CLEAR", "40", "Uncertainty (confidence intervals)", "Card: Evaluation"),
    ("CLEAR", "41", "Statistical comparison of models", "Report: Discrimination (DeLong tests)"),
    (
        "CLEAR",
        "42",
        "Comparison with non-radiomic and combined models",
        "Card: Evaluation (Rad, DL, DLR)",
    ),
    ("CLEAR", "46", "Feature statistics", "Report: Feature selection"),
    ("CLEAR", "47", "Model performance", "Card: Evaluation; report: Discrimination"),
    ("CLEAR", "52", "Strengths and limitations", "Card: Limitations"),
    ("CLEAR", "57", "Sharing final model files", "Card: Model (the bundle)"),
)


#: The model card's statement of the bundle's preprocessing profile, and why.
_PROFILE_TEXT: dict[NormalisationProfile, str] = {
    NormalisationProfile.HIP: (
        "- **Intensity normalisation: profile `hip`.** Each hip is normalised on its own: "
        "radiomics and the network input are computed on a box around that hip's ROI "
        "(40 mm margin), z-scored over that box (radiomics then × `normalizeScale`, so the "
        "bin width keeps its meaning). MR intensities have no absolute scale, and what else "
        "the field of view holds (bladder, fat, coverage) says nothing about the femoral "
        "head, so the features depend on neither the scanner's intensity scale nor the "
        "field of view. This departs from the source paper (profile `paper`)."
    ),
    NormalisationProfile.PAPER: (
        "- **Intensity normalisation: profile `paper`** (the source paper's). Radiomics "
        "come from the whole series z-scored over every voxel; the network input is "
        "z-scored over a box around the hip. Chosen for fidelity to the paper. **Caution:** "
        "every radiomics intensity feature then depends on the field of view (a bright "
        "structure far from the hips, or a cropped field of view, moves the probabilities), "
        "so probabilities do not transfer to a site with another field of view or anatomy "
        "coverage; profile `hip` does not have this dependence."
    ),
}


def _site_validation_section(validation: SiteValidation | None) -> list[str]:
    """The leave-one-site-out table (the bench's own Markdown), or nothing."""
    if validation is None:
        return []
    summary = validation.summary
    verdict = (
        "Every held-out site met every target."
        if validation.all_targets_met
        else "**Not every held-out site met every target** (last column)."
    )
    return [
        "## Site transfer (leave-one-site-out)",
        "",
        f"The same recipe trained {len(validation.sites)} times, each time on every phantom "
        f"site but one ({', '.join(map(_md, validation.sites))}); the held-out site was "
        "then scored as deployed: heads auto-segmented, the fold's fixed threshold, nothing "
        "refitted on it. Targets per site: at least 99 % of hips scored, auto-ROI Dice at "
        "least 0.90 on every head, DLR AUC at least 0.95, sensitivity and specificity at "
        f"least 0.85, calibration slope 0.8 to 1.25. {verdict} The bundle itself is trained "
        "on every site, so these numbers describe its recipe, not its own weights. "
        f"Cohort: `{_md(str(summary.get('cohort', '?')))}`"
        + (
            f" (reduced run: the first {_md(str(summary['patients_per_site']))} patients "
            "of each site)"
            if summary.get("patients_per_site")
            else ""
        )
        + "; "
        "`bench/leave_one_site_out.py`; `site_validation.json` in this bundle has every "
        "number.",
        "",
        validation.table,
        "",
    ]


def _acquisition_range(acquisition: AcquisitionReference) -> str:
    """The limitation that names the training series' acquisition range."""

    def span(field: str, unit: str) -> str | None:
        dist = acquisition.numeric.get(field)
        if dist is None or dist.count == 0:
            return None
        low, high = f"{dist.minimum:.4g}", f"{dist.maximum:.4g}"
        return f"{low} {unit}" if low == high else f"{low}–{high} {unit}"

    parts = [
        f"{label} {text}"
        for label, text in (
            ("field strength", span("field_strength", "T")),
            ("slice thickness", span("slice_thickness", "mm")),
            ("pixel spacing", span("pixel_spacing_row", "mm")),
            ("TE", span("echo_time", "ms")),
            ("TR", span("repetition_time", "ms")),
        )
        if text is not None
    ]
    makers = acquisition.categorical.get("manufacturer")
    if makers is not None and makers.counts:
        parts.insert(0, "from " + ", ".join(_md(name) for name in sorted(makers.counts)))
    return (
        f"**Acquisition range.** Trained on {acquisition.series} series "
        + "; ".join(parts)
        + ". A study outside this range, or a hip whose features lie outside the training "
        "hips' (both are in `reference.json`), is still scored, and its report says "
        '"outside the model\'s training range".'
    )


def model_card(
    result: TrainingResult,
    *,
    name: str,
    version: str,
    synthetic: bool,
    intended_use: str,
    metrics: Mapping[str, Any],
    roi_protocol: str = "head",
    site_validation: SiteValidation | None = None,
    reference: ReferenceStatistics | None = None,
) -> str:
    """The model card of a trained model, as Markdown.

    Parameters
    ----------
    result
        The training run (:func:`~model_bundle.training.train_models`).
    name, version
        The bundle's name and version.
    synthetic
        Trained on synthetic data: the card then says, first and in bold, that it is a
        synthetic demonstration and not for clinical use.
    intended_use
        The intended use as the manifest states it (plain text).
    metrics
        ``{"train": evaluate_split(...), "test": evaluate_split(...)}``.
    roi_protocol
        ``"head"`` (whole femoral head of every hip) or ``"lesion"`` (the source paper's
        protocol, reproduction only; the card then warns that shape leaks the label).
    site_validation
        A leave-one-site-out run of the same recipe: its table becomes a section.
    reference
        The bundle's reference statistics: the card's limitations then state the
        acquisition range of the training series.

    Returns
    -------
    str
        Markdown; every value that comes from data is escaped.

    Raises
    ------
    ConfigurationError
        If ``roi_protocol`` is unknown.
    """
    if roi_protocol not in ROI_PROTOCOLS:
        raise ConfigurationError(
            f"roi_protocol must be one of {ROI_PROTOCOLS}, not {roi_protocol!r}"
        )
    config = result.config
    cohort = _cohort(result)
    models = _models(result)
    deployed = config.deployed_model
    pca = result.pca
    n_pca = len(pca.components)
    lines: list[str] = [
        f"# {_md(name)} {_md(version)} — model card",
        "",
        "Development and internal test of a per-hip diagnostic prediction model for early "
        "osteonecrosis of the femoral head (ONFH, ARCO I–II) on coronal T2-weighted "
        "fat-suppressed hip MRI: deep-learning radiomics (DLR).",
        "",
    ]
    if synthetic:
        lines += [
            f"> **⚠ {SYNTHETIC_WARNING}.** This model was trained and tested on synthetic "
            "phantom images only. Its numbers describe the phantom, not patients.",
            "",
        ]
    if roi_protocol == "lesion":
        lines += [
            "> **⚠ Label leak: paper ROI protocol, reproduction only — not for deployment.** "
            "The ROI of ONFH hips was the necrotic area and that of healthy hips the whole "
            "head, so the ROI's shape encodes the label. No deployed system knows the label "
            "before it draws the ROI.",
            "",
        ]

    lines += ["## Intended use", "", _md(intended_use.strip()) or "(not stated)", ""]
    lines += [
        "- **Intended users:** radiologists reading coronal T2-FS hip MRI.",
        "- **Role:** second reader. For each femoral head (left and right separately) the "
        "service reports a probability of early ONFH and a positive/negative call at a fixed "
        "threshold, next to the images, after the radiologist's own read. It does not make "
        "a diagnosis and must not be used alone.",
        "- **Input:** one coronal T2-weighted fat-suppressed series showing both hips; the "
        "femoral heads are auto-segmented, or taken from a DICOM-SEG sent with the series.",
        "- **User interaction:** none to obtain a score; the radiologist should check the "
        "returned segmentation (DICOM-SEG), since a wrong ROI gives a meaningless score.",
        "- **Unusable input:** a hip whose head cannot be found or whose features cannot be "
        "computed gets no score; the report says why. Series that are not coronal T2-FS "
        "are not scored.",
        "- **Not intended for:** staging, advanced ONFH (ARCO III–IV), other hip diseases "
        "(transient bone-marrow oedema, fractures, tumours), other sequences or planes, "
        "children, or use without a radiologist.",
        "",
    ]

    lines += ["## Model", ""]
    lines += [
        "- **Radiomics:** 1,197 PyRadiomics features per hip ROI: 13 image types "
        "(original, 8 wavelet decompositions, LoG σ = 2, 3, 4, 5 mm) × 91 (18 first order, "
        "22 GLCM, 16 GLRLM, 16 GLSZM, 14 GLDM, 5 NGTDM) + 14 shape, resampled to "
        "1 × 1 × 1 mm (B-spline) and discretised with a fixed bin width; every setting is "
        "in the bundle's `radiomics_params.yaml`, the library versions in the manifest.",
        _PROFILE_TEXT[config.preprocessing_profile],
        f"- **Deep features:** ResNet18 fine-tuned on the training hips (SGD, learning rate "
        f"{config.learning_rate:g}, batch {config.batch_size}, {len(result.finetune.losses)} "
        "epochs) on the coronal slice with the largest ROI area, cropped around the ROI; the "
        f"512-d pooled output is reduced by PCA (fitted on the training hips) to {n_pca} "
        f"components ({float(np.sum(pca.explained_variance_ratio)):.1%} of the variance).",
        "- **Three models:** Rad (radiomics), DL (deep PCA components), DLR (both). Each is "
        "fitted on the training hips only: z-score (training mean and SD), Mann–Whitney U "
        f"(p < {config.p_threshold:g}), Pearson de-duplication (|r| > "
        f"{config.correlation_threshold:g}), mRMR to at most {config.max_features}, LASSO "
        f"with {config.lasso_folds}-fold CV (α at minimum CV error).",
        f"- **Classifier:** of {len(CLASSIFIERS)} ({', '.join(CLASSIFIERS)}) compared by "
        f"{config.cv_folds}-fold CV AUC on the training hips, the first in that order (LR, "
        "the paper's choice, first) whose CV AUC is within one standard error of the best "
        "(the one-standard-error rule), with fixed default hyperparameters (no tuning), "
        "refitted on all training hips. No class-imbalance correction (resampling or "
        "weighting) is used.",
        f"- **Deployed model:** {_name(deployed)}. Output: the probability of ONFH per hip; "
        "the hip is called positive when the probability reaches the threshold. The "
        "threshold is fixed on the training hips by Youden's index on out-of-fold "
        "probabilities and stored in the bundle; it is never re-picked on test data.",
        "- **Files:** the bundle holds every fitted part as JSON and the network weights as "
        "safetensors (no pickle), with a sha256 per file in the manifest.",
        "",
    ]
    rows: list[tuple[object, ...]] = []
    for m in models:
        cv_mean = m.cv_auc.get(m.classifier_name, (float("nan"), ()))[0]
        rows.append(
            (
                _name(m.key) + (" (deployed)" if m.key == deployed else ""),
                len(m.input_names),
                len(m.selector.selected_names),
                m.classifier_name,
                _num(cv_mean),
                _num(m.threshold),
            )
        )
    lines += _md_table(
        ("Model", "Input features", "Selected", "Classifier", "CV AUC", "Threshold"), rows
    )
    lines.append("")

    test_n, test_pos = _get(metrics, "test", "n"), _get(metrics, "test", "n_positive")
    lines += ["## Data", ""]
    lines += [
        f"- **Cohort:** {cohort.n_patients} patients, {cohort.n_hips} hips; "
        f"{cohort.n_usable} hips usable. The unit is one hip (left and right separately).",
        "- **Source:** "
        + (
            "synthetic phantom studies (`onfh-dlr phantom`) with known ground truth."
            if synthetic
            else "the cohort CSV of the training run (one row per hip, with its label)."
        ),
        "- **Outcome (label):** early ONFH (ARCO I–II) in that hip (1) or not (0), as "
        "recorded in the cohort file"
        + (" (phantom ground truth)." if synthetic else " by the hospital's reference standard."),
        f"- **Split:** patients split {1 - config.test_fraction:.0%} / "
        f"{config.test_fraction:.0%} into training and test, stratified by whether the "
        f"patient has ONFH (seed {config.seed}); both hips of a patient are in the same set.",
        "- **Study size:** all usable hips of the cohort; no sample size calculation.",
        f"- **Excluded hips:** {cohort.n_hips - cohort.n_usable} (features could not be "
        "computed); they are not imputed. "
        f"Patients with no usable hip: {cohort.patients_without_usable_hip}.",
    ]
    if cohort.roi_sources:
        sources = ", ".join(
            f"{count} {_ROI_SOURCE_NAMES.get(src, src)}"
            for src, count in cohort.roi_sources.items()
        )
        lines.append(f"- **ROIs of the usable hips:** {_md(sources)}.")
    lines += ["", *_md_table(_COHORT_HEADER, _cohort_rows(cohort)), ""]
    if cohort.reasons:
        categories: Counter[str] = Counter()
        for reason, hips, _, _ in cohort.reasons:
            categories[_reason_category(reason)] += hips
        lines += [
            "Excluded hips by reason (the report lists the full messages):",
            "",
            *_md_table(("Reason", "Hips"), categories.most_common()),
            "",
        ]

    lines += ["## ROI protocol", ""]
    if roi_protocol == "head":
        lines += [
            "The ROI is the **whole femoral head of every hip**, auto-segmented or read from "
            "a DICOM-SEG. This deliberately differs from the source paper, which drew the "
            "whole head (and proximal neck) for healthy hips but only the necrotic area for "
            "ONFH hips: there the ROI's shape leaks the label, and no deployed system knows "
            "the label before it draws the ROI. Our numbers are therefore not directly "
            "comparable with the paper's, and are expected to be lower.",
            "",
        ]
    else:
        lines += [
            "**Paper protocol (reproduction only):** whole head for healthy hips, necrotic "
            "area for ONFH hips. The ROI's shape (volume, diameters, sphericity) encodes the "
            "label, so these results overstate what a deployed model can do. Do not deploy "
            "this model; the deployable protocol is the whole femoral head of every hip.",
            "",
        ]

    lines += ["## Evaluation", ""]
    lines += [
        f"Internal hold-out test set: {_num(test_n, 0)} hips, {_num(test_pos, 0)} with ONFH "
        "(patients never seen in training or selection). AUC with "
        "95 % DeLong CI; sensitivity and specificity at the training threshold with Wilson "
        "95 % CIs; calibration slope and intercept by logistic recalibration; "
        "Hosmer–Lemeshow; DeLong tests between the models and decision curves are in the "
        "report.",
        "",
    ]
    rows = []
    for m in models:
        test = _entry(metrics, "test", m.key)
        train = _entry(metrics, "train", m.key)
        rows.append(
            (
                _name(m.key) + (" (deployed)" if m.key == deployed else ""),
                _auc_text(test),
                _metric_text(_get(test, "metrics", "sensitivity")),
                _metric_text(_get(test, "metrics", "specificity")),
                _num(test.get("threshold", m.threshold)),
                _num(_get(test, "calibration", "slope"), 2),
                _auc_text(train),
                _PAPER_AUC.get(m.key, "n/a"),
            )
        )
    lines += _md_table(
        (
            "Model",
            "Test AUC (95 % CI)",
            "Sensitivity (95 % CI)",
            "Specificity (95 % CI)",
            "Threshold",
            "Calibration slope",
            "Training AUC",
            "Paper test AUC",
        ),
        rows,
    )
    lines += [
        "",
        "The paper's AUCs (45 test patients) used its lesion ROI for ONFH hips and are given "
        "for orientation only.",
        "",
    ]

    lines += _site_validation_section(site_validation)

    lines += ["## Limitations", ""]
    limitations = []
    if synthetic:
        limitations.append(
            "**Synthetic data.** Trained and tested on phantom images only: the performance "
            "says nothing about real patients, scanners or readers."
        )
    if roi_protocol == "lesion":
        limitations.append(
            "**Label leak.** The paper's ROI protocol leaks the label through the ROI's shape."
        )
    if reference is not None and reference.acquisition is not None:
        limitations.append(_acquisition_range(reference.acquisition))
    limitations += [
        "**Single sequence.** Coronal T2-weighted fat-suppressed MRI only.",
        "**Early ONFH only.** Trained to tell ARCO I–II ONFH from hips without ONFH; not "
        "for staging, advanced disease or other hip diseases it has not seen.",
        (
            "**Not validated externally.** One internal hold-out split of one cohort; other "
            "hospitals, scanners and populations may perform worse. Validate locally first."
            if site_validation is None
            else "**Site transfer measured on phantom sites only.** The leave-one-site-out "
            "table above describes phantom scanner profiles; a real site may differ in ways "
            "no profile draws. Validate locally first (`onfh-dlr evaluate`) and recalibrate "
            "(`onfh-dlr calibrate`)."
        ),
        "**Calibration.** Probabilities come from a small cohort and may be miscalibrated "
        "(see the calibration slope); recalibrate locally before reading them as risks.",
        "**Small sample, correlated hips.** The confidence intervals treat the hips as "
        "independent, although both hips of a patient are correlated: they are too narrow.",
        "**Optimistic CV.** The classifier comparison uses features selected on all "
        "training hips, so its CV AUCs are optimistic; only the test set is unbiased.",
        "**Fairness not assessed.** The cohort carries no sociodemographic data.",
    ]
    lines += [f"- {item}" for item in limitations]
    lines.append("")

    lines += [
        "## Reporting checklists",
        "",
        "Items of TRIPOD+AI (Collins et al., BMJ 2024) and CLEAR (Kocak et al., Insights "
        "Imaging 2023) that a model bundle can answer, and where they are answered. Items "
        "about a publication (title page, abstract, ethics, funding, registration) are for "
        "the hospital's own report.",
        "",
        *_md_table(("Checklist", "Item", "Topic", "Where answered"), _CHECKLIST),
        "",
    ]
    return "\n".join(lines)
