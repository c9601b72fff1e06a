"""Site calibration: recalibrating an installed bundle on a small labelled local cohort.

Lives here: the recalibration parameters a calibrated bundle carries and how they apply
to a probability (``recalibration``: :class:`Recalibration`, :class:`ModelRecalibration`,
:class:`ThresholdRule`; NumPy only), their maximum-likelihood fit
(``fit``: :func:`fit_recalibration`, :class:`CalibrationError`,
:func:`sensitivity_rule_note`), and ``onfh-dlr
calibrate`` itself (``site``: :func:`calibrate_bundle`, which scores the cohort with the
parent bundle through :mod:`model_bundle.evaluation`'s deployed path and writes the new
bundle).

Who may import it: serving (the ``recalibration`` names only, to apply a calibrated
bundle's parameters), the CLI and tests. ``fit`` and ``site`` load statsmodels, serving,
features and torch, so their names are imported on first use (PEP 562): serving imports
this package without a cycle. Import the public names from this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from model_bundle.calibration.recalibration import (
    CALIBRATION_FILE,
    ModelRecalibration,
    Recalibration,
    ThresholdRule,
)

if TYPE_CHECKING:
    from model_bundle.calibration.fit import (
        CalibrationError,
        fit_recalibration,
        sensitivity_rule_note,
    )
    from model_bundle.calibration.site import CalibrationResult, calibrate_bundle

_LAZY = {
    "CalibrationError": "model_bundle.calibration.fit",
    "fit_recalibration": "model_bundle.calibration.fit",
    "sensitivity_rule_note": "model_bundle.calibration.fit",
    "CalibrationResult": "model_bundle.calibration.site",
    "calibrate_bundle": "model_bundle.calibration.site",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "CALIBRATION_FILE",
    "CalibrationError",
    "CalibrationResult",
    "ModelRecalibration",
    "Recalibration",
    "ThresholdRule",
    "calibrate_bundle",
    "fit_recalibration",
    "sensitivity_rule_note",
]
