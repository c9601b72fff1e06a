"""Making a model: from a labelled cohort to a verified bundle with its report.

Lives here: the training dataset, per-hip radiomics and network inputs cached on disk
(``dataset``: :func:`build_dataset`, :class:`HipSample`), the fine-tuning of the
ResNet18 backbone (``finetune``), the training computation of the Rad, DL and DLR models
(``fit``: the patient split, PCA, selection, classifier choice by CV AUC, thresholds by
Youden's index on out-of-fold training probabilities), publishing a result as a bundle
with its report, card, metrics, predictions and reference statistics (``publishing``),
and the whole run as ``onfh-dlr train`` does it (``run``: :func:`plan_training`,
:func:`run_training`).

Who may import it: the command line, serving and external evaluation (for
:data:`MODEL_KEYS`), reporting (for :class:`TrainingResult`), and tests. Import the
public names from this package, not from its modules. It imports torch (fine-tuning).
"""

from model_bundle.training.dataset import (
    HipSample,
    build_dataset,
    cache_key,
    extract_job,
    header_acquisition,
)
from model_bundle.training.finetune import FineTuneConfig, FineTuneResult, fine_tune
from model_bundle.training.fit import (
    MODEL_KEYS,
    ModelKey,
    ModelResult,
    TrainConfig,
    TrainingResult,
    TrainProbabilities,
    fit_model,
    patient_split,
    shape_leak,
    train_models,
)
from model_bundle.training.publishing import (
    DEFAULT_INTENDED_USE,
    PREDICTION_COLUMNS,
    SYNTHETIC_WARNING,
    csv_bytes,
    dump_json,
    prediction_rows,
    publish,
    training_metrics,
    training_reference,
)
from model_bundle.training.run import (
    RoiProtocol,
    TrainingPlan,
    TrainingRun,
    plan_training,
    read_train_config,
    run_training,
)

__all__ = [
    "DEFAULT_INTENDED_USE",
    "MODEL_KEYS",
    "PREDICTION_COLUMNS",
    "SYNTHETIC_WARNING",
    "FineTuneConfig",
    "FineTuneResult",
    "HipSample",
    "ModelKey",
    "ModelResult",
    "RoiProtocol",
    "TrainConfig",
    "TrainProbabilities",
    "TrainingPlan",
    "TrainingResult",
    "TrainingRun",
    "build_dataset",
    "cache_key",
    "csv_bytes",
    "dump_json",
    "extract_job",
    "fine_tune",
    "fit_model",
    "header_acquisition",
    "patient_split",
    "plan_training",
    "prediction_rows",
    "publish",
    "read_train_config",
    "run_training",
    "shape_leak",
    "train_models",
    "training_metrics",
    "training_reference",
]
