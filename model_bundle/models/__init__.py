"""What the model is made of after the features: feature selection, the PCA of the deep
features, and the paper's eight classifiers with their JSON codec.

Lives here: :class:`FeatureSelector` and its records (``selection``,
``selection_records``; mRMR and the LASSO folds), :class:`PCAParams` (``pca``), the
classifier factory and cross-validated AUC (``factory``), the numpy models a bundle loads
(``inference``), and the classifier JSON without pickle (``codec``, with ``trees`` for
XGBoost/LightGBM model data and ``arrays`` for checked JSON reading).

Who may import it: training, serving, reporting and tests. It imports no other part of
``model_bundle``. Import the public names from this package, not from its modules.
"""

from model_bundle.models.codec import classifier_name, from_json, to_json
from model_bundle.models.factory import (
    CLASSIFIER_FORMAT,
    CLASSIFIERS,
    FittableClassifier,
    ProbabilisticClassifier,
    cross_validate_auc,
    make_classifier,
    positive_probability,
)
from model_bundle.models.inference import (
    KernelSVMModel,
    LightGBMModel,
    LogisticModel,
    MLPModel,
    TreeArrays,
    TreeEnsembleModel,
)
from model_bundle.models.pca import PCAParams
from model_bundle.models.selection import (
    MRMR_FLOOR,
    SELECTOR_FORMAT,
    FeatureSelector,
    lasso_folds,
    mrmr_fcq,
)
from model_bundle.models.selection_records import CorrelationDrop, LassoRecord, SelectionRecord

__all__ = [
    "CLASSIFIERS",
    "CLASSIFIER_FORMAT",
    "MRMR_FLOOR",
    "SELECTOR_FORMAT",
    "CorrelationDrop",
    "FeatureSelector",
    "FittableClassifier",
    "KernelSVMModel",
    "LassoRecord",
    "LightGBMModel",
    "LogisticModel",
    "MLPModel",
    "PCAParams",
    "ProbabilisticClassifier",
    "SelectionRecord",
    "TreeArrays",
    "TreeEnsembleModel",
    "classifier_name",
    "cross_validate_auc",
    "from_json",
    "lasso_folds",
    "make_classifier",
    "mrmr_fcq",
    "positive_probability",
    "to_json",
]
