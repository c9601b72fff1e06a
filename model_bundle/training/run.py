"""A whole training run, from a cohort CSV to a verified bundle (what ``onfh-dlr train`` does).

Two steps, so that a caller can refuse bad input before anything expensive starts:
:func:`plan_training` reads and checks everything the run needs (the settings, the
cohort, the output directory) and returns a :class:`TrainingPlan`;
:func:`run_training` extracts the features (through the cache), trains the three
models, measures the ROI label leak under the paper's lesion protocol, and publishes the
bundle. Neither prints: progress and messages go to the callbacks, so the command line
keeps its own display.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from model_bundle.bundle import Bundle
from model_bundle.evaluation import SiteValidation
from model_bundle.features import SeriesJob, load_params, read_cohort
from model_bundle.training.dataset import HipSample, build_dataset
from model_bundle.training.fit import TrainConfig, TrainingResult, shape_leak, train_models
from model_bundle.training.publishing import publish
from onfh_dlr.errors import ConfigurationError


class RoiProtocol(StrEnum):
    """Which ROI the features of every hip are computed in."""

    #: The whole femoral head of every hip: what a deployed system can draw.
    HEAD = "head"
    #: The source paper's protocol (a lesion ROI for ONFH hips): for reproduction only,
    #: as the ROI's shape then leaks the label.
    LESION = "lesion"


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a training run needs, read and checked.

    Attributes
    ----------
    jobs : list of SeriesJob
        The cohort's hips, one job per series.
    config : TrainConfig
        The training settings.
    out : Path
        The bundle directory to create (absent or empty).
    cache : Path
        The feature cache directory.
    roi_protocol : RoiProtocol
        The ROI protocol of every hip.
    """

    jobs: list[SeriesJob]
    config: TrainConfig
    out: Path
    cache: Path
    roi_protocol: RoiProtocol


@dataclass(frozen=True)
class TrainingRun:
    """What a training run produced.

    Attributes
    ----------
    bundle : Bundle
        The published, verified bundle.
    result : TrainingResult
        The training computation the bundle was written from.
    shape_leak : dict or None
        :func:`~model_bundle.training.shape_leak` under the lesion protocol, else ``None``.
    """

    bundle: Bundle
    result: TrainingResult
    shape_leak: dict[str, Any] | None

    @property
    def excluded(self) -> list[HipSample]:
        """The hips that could not be used, each with its ``reason``."""
        return [s for s in self.result.samples if not s.ok]


def read_train_config(
    path: Path | None, pretrained: Path | None = None, radiomics_params: Path | None = None
) -> TrainConfig:
    """Training settings from a YAML file (defaults without one).

    Parameters
    ----------
    path
        A YAML mapping of :class:`TrainConfig` fields, or ``None`` for the defaults.
    pretrained
        A local torchvision ImageNet ResNet18 checkpoint; overrides the file's.
    radiomics_params
        A PyRadiomics parameter file for the features; overrides the file's.

    Raises
    ------
    ValueError
        The file is not valid YAML or its fields are not valid settings (pydantic's
        ``ValidationError`` and ``yaml.YAMLError`` are both ``ValueError`` here).
    """
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path is not None else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: training settings must be a YAML mapping")
    settings: dict[str, Any] = dict(loaded or {})
    if pretrained is not None:
        settings["pretrained"] = pretrained
    if radiomics_params is not None:
        settings["radiomics_params"] = radiomics_params
    return TrainConfig.model_validate(settings)


def plan_training(
    cohort: Path | Sequence[Path],
    out: Path,
    *,
    config: TrainConfig,
    cache: Path | None = None,
    roi_protocol: RoiProtocol = RoiProtocol.HEAD,
) -> TrainingPlan:
    """Read the cohort and check the output directory; nothing is computed yet.

    Parameters
    ----------
    cohort
        The cohort CSV (``PatientID, Side, Image, Mask, Label``), or several whose
        patients are trained on together (each CSV's paths relative to itself).
    out
        The bundle directory to create; it must not exist or be empty.
    config
        The training settings (:func:`read_train_config`).
    cache
        The feature cache directory; default ``OUT.cache`` next to ``out``.
    roi_protocol
        The ROI of every hip.

    Raises
    ------
    onfh_dlr.errors.ConfigurationError
        ``out`` exists and is not empty, or the configured radiomics parameter file is
        not a usable PyRadiomics parameter file.
    onfh_dlr.errors.OnfhError, ValueError
        A cohort CSV cannot be read, or a patient has more than one series.
    """
    if config.radiomics_params is not None:
        load_params(config.radiomics_params)  # refused now, not after an hour of extraction
    jobs = [
        job
        for path in ([cohort] if isinstance(cohort, Path) else cohort)
        for job in read_cohort(path)
    ]
    patients = [job.hips[0].get("PatientID", "") for job in jobs]
    if len(set(patients)) < len(patients):
        raise ConfigurationError(
            "a patient appears in more than one series or cohort: the split is by patient, "
            "so every PatientID must be one series"
        )
    if out.exists() and any(out.iterdir()):
        raise ConfigurationError(f"{out} exists and is not empty")
    cache_dir = cache if cache is not None else out.with_name(out.name + ".cache")
    return TrainingPlan(
        jobs=list(jobs),
        config=config,
        out=out,
        cache=cache_dir,
        roi_protocol=RoiProtocol(roi_protocol),
    )


def run_training(
    plan: TrainingPlan,
    *,
    name: str = "onfh-dlr",
    version: str = "1.0.0",
    synthetic: bool = False,
    workers: int = 1,
    log: Callable[[str], None] = lambda _: None,
    on_hip: Callable[[], None] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
    site_validation: SiteValidation | None = None,
) -> TrainingRun:
    """Extract the features, train Rad, DL and DLR, and publish a verified bundle.

    Parameters
    ----------
    plan
        What to train on and where to write (:func:`plan_training`).
    name, version
        The bundle's name and semantic version.
    synthetic
        Mark the bundle as a synthetic demonstration, not for clinical use.
    workers
        Processes for feature extraction.
    log
        Receives one line of text per training step.
    on_hip
        Called once per cohort job whose features are ready (extracted or cached).
    on_epoch
        Called after every fine-tuning epoch with ``(epoch, loss, accuracy)``.
    site_validation
        A leave-one-site-out run of this recipe, carried by the bundle and its report.

    Returns
    -------
    TrainingRun
        The bundle, the training result and the label-leak check.

    Raises
    ------
    onfh_dlr.errors.OnfhError
        Training or publishing failed (too few usable hips, a bundle that does not verify).
    """

    def job_done(_samples: Sequence[HipSample], _cached: bool) -> None:
        if on_hip is not None:
            on_hip()

    samples = build_dataset(
        plan.jobs,
        params_file=plan.config.radiomics_params,
        cache=plan.cache,
        workers=workers,
        on_job=job_done,
        roi_protocol=plan.roi_protocol.value,
        profile=plan.config.preprocessing_profile,
    )
    result = train_models(samples, plan.config, log=log, on_epoch=on_epoch)
    leak = shape_leak(result) if plan.roi_protocol is RoiProtocol.LESION else None
    bundle = publish(
        result,
        plan.out,
        name=name,
        version=version,
        synthetic=synthetic,
        roi_protocol=plan.roi_protocol.value,
        shape_leak=leak,
        site_validation=site_validation,
    )
    return TrainingRun(bundle=bundle, result=result, shape_leak=leak)
