"""Monitoring the model in use: its reference statistics, per-study input checks, drift.

Lives here: building the reference statistics a bundle carries from training (or
calibration) values (``reference``: :func:`distribution_of`, :func:`categories_of`,
:func:`acquisition_reference`, :func:`output_reference`); the per-study check of a
series' acquisition and a hip's features against them (``checks``: :func:`check_inputs`,
:class:`OutOfRange`, :class:`FeatureRule`, :class:`ReferenceStatus`, and
:func:`outside_text`, the one line reports print); and the
two-sample drift statistics a rolling window of scored hips is compared with (``drift``:
:func:`psi`, :func:`ks_against_reference`, :func:`positive_rate_test`) and their
combination over a rolling window into one drift score (``window``: :func:`window_drift`,
:class:`WindowDrift`, :class:`DriftState`). Pure computation:
no I/O, no service state; the typed statistics themselves live in
:mod:`model_bundle.bundle` (:class:`~model_bundle.bundle.ReferenceStatistics`), which
reads them from a bundle without NumPy.

Who may import it: training and calibration (to write the statistics), serving (to check
each hip), the worker and the CLI (to record, report and aggregate the results), tests.
It imports ``model_bundle.bundle`` and ``model_bundle.imaging``, NumPy and SciPy, and no
other part of ``model_bundle``. Import the public names from this package.
"""

from model_bundle.monitoring.checks import (
    ACQUISITION_TOLERANCE,
    OUTSIDE_PREFIX,
    FeatureRule,
    InputKind,
    OutOfRange,
    OutOfRangeReason,
    ReferenceStatus,
    check_acquisition,
    check_features,
    check_inputs,
    outside_text,
)
from model_bundle.monitoring.drift import (
    PSI_FLOOR,
    BinomialResult,
    KSResult,
    bin_fractions,
    ks_against_reference,
    positive_rate_test,
    psi,
    reference_cdf,
)
from model_bundle.monitoring.reference import (
    acquisition_reference,
    categories_of,
    distribution_of,
    output_reference,
)
from model_bundle.monitoring.window import (
    DRIFT_AT,
    WATCH_AT,
    DriftState,
    InputDrift,
    WindowDrift,
    drift_state,
    window_drift,
)

__all__ = [
    "ACQUISITION_TOLERANCE",
    "DRIFT_AT",
    "OUTSIDE_PREFIX",
    "PSI_FLOOR",
    "WATCH_AT",
    "BinomialResult",
    "DriftState",
    "FeatureRule",
    "InputDrift",
    "InputKind",
    "KSResult",
    "OutOfRange",
    "OutOfRangeReason",
    "ReferenceStatus",
    "WindowDrift",
    "acquisition_reference",
    "bin_fractions",
    "categories_of",
    "check_acquisition",
    "check_features",
    "check_inputs",
    "distribution_of",
    "drift_state",
    "ks_against_reference",
    "output_reference",
    "outside_text",
    "positive_rate_test",
    "psi",
    "reference_cdf",
    "window_drift",
]
