"""Serving: scoring hips with a verified model bundle.

Lives here: :class:`BundleModel` (loads a bundle, verified first, and scores one hip with
the feature code training used), :class:`HipPrediction` (one hip's result) and
:class:`ModelName` (Rad, DL, DLR).

Who may import it: external evaluation (``model_bundle.evaluation.external``), the
worker, the CLI, tests and benchmarks. It imports ``model_bundle.bundle``, ``features``,
``imaging``, ``models``, ``monitoring`` (the input check) and ``training`` (for the model
keys). Import the public names
from this package, not from its modules.
"""

from model_bundle.serving.bundle_model import BundleModel, HipPrediction, ModelName

__all__ = ["BundleModel", "HipPrediction", "ModelName"]
