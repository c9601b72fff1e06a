"""The model bundle: one directory that holds a trained DLR model, and the checks on it.

Lives here: the format (``format``: constants and shared value types), the manifest
(``manifest``), the checks (``verify``), the verified bundle and its reading (``reader``:
:class:`Bundle`, :func:`load_bundle`, :func:`verify_bundle`), the typed reference
statistics (``reference``: :class:`ReferenceStatistics`, read by :meth:`Bundle.reference`)
and the atomic writer (``write``). Who may import it: anything (training, serving,
monitoring, the worker, the command line); it imports only the standard library, PyYAML
and :mod:`onfh_dlr.errors`, so a process that only verifies a bundle loads neither numpy
nor torch. Import the public
names from this package, not from its modules.

A bundle is what training writes and what the worker serves. It is a plain directory, so
that it can be reviewed, diffed, copied and archived with ordinary tools::

    manifest.json               what the bundle is; sha256 and size of every other file
    MODEL_CARD.md               the model card (intended use, data, metrics, limits)
    radiomics_params.yaml       the PyRadiomics parameter file the features came from
    preprocessing.json          resampling and normalisation parameters
    resnet18.safetensors        the fine-tuned ResNet18 backbone
    models/<model>/<part>.json  per model (rad, dl, dlr): scaler, pca, selector, classifier
    calibration.json            site-calibrated bundles only: the recalibration parameters
    reference.json              reference statistics of the inputs and output (``reference``:
                                :class:`ReferenceStatistics`; absent in older bundles)
    report.html, plots, ...     optional documents, listed in the manifest like any file

Trust
    Loading a bundle must never run code from it. A bundle therefore holds only JSON
    (read with ``json.loads``), YAML (``yaml.safe_load``), safetensors and documents that
    nothing here interprets. Pickle-capable files are refused by extension (``.pkl``,
    ``.pt``, ``.joblib``, ``.npy``, ...) and by content (a pickle protocol header, a zip
    archive as ``torch.save`` writes, a NumPy array header, a compressed stream), whatever
    their name. This package does not import :mod:`pickle`, and loading a bundle does not
    make anything import it (the safetensors header is parsed here, not by a framework).
Integrity
    :func:`load_bundle` verifies everything before it reads anything but the manifest:
    the manifest's schema, every listed path (relative, inside the bundle), every listed
    file (present, regular, same size and sha256), no unlisted file, no symbolic link, and
    each file's content against its type. :func:`verify_bundle` runs the same checks and
    returns every problem instead of raising the first one.
Writing
    :func:`write_bundle` writes every file into a staging directory next to the target
    (each to a temporary name, fsync'ed, then renamed), the manifest last, verifies the
    result with the loader's own checks, and only then renames the staging directory onto
    the target: a reader sees a complete bundle or none, and the writer can never produce
    a bundle the loader refuses.
"""

from model_bundle.bundle.format import (
    DEFAULT_REFERENCES,
    FORMAT,
    FORMAT_VERSION,
    LIBRARY_DISTRIBUTIONS,
    MANIFEST_NAME,
    MODEL_COMPONENTS,
    MODEL_KEYS,
    CalibrationLineage,
    FileEntry,
    JsonValue,
    Problem,
    VerifyReport,
)
from model_bundle.bundle.manifest import Manifest
from model_bundle.bundle.reader import Bundle, load_bundle, verify_bundle
from model_bundle.bundle.reference import (
    DECILE_LEVELS,
    QUANTILE_LEVELS,
    REFERENCE_FILE,
    REFERENCE_SCHEMA,
    AcquisitionReference,
    Categories,
    Distribution,
    OutputReference,
    ReferenceFormatError,
    ReferenceStatistics,
)
from model_bundle.bundle.write import canonical_json, library_versions, write_bundle

__all__ = [
    "DECILE_LEVELS",
    "DEFAULT_REFERENCES",
    "FORMAT",
    "FORMAT_VERSION",
    "LIBRARY_DISTRIBUTIONS",
    "MANIFEST_NAME",
    "MODEL_COMPONENTS",
    "MODEL_KEYS",
    "QUANTILE_LEVELS",
    "REFERENCE_FILE",
    "REFERENCE_SCHEMA",
    "AcquisitionReference",
    "Bundle",
    "CalibrationLineage",
    "Categories",
    "Distribution",
    "FileEntry",
    "JsonValue",
    "Manifest",
    "OutputReference",
    "Problem",
    "ReferenceFormatError",
    "ReferenceStatistics",
    "VerifyReport",
    "canonical_json",
    "library_versions",
    "load_bundle",
    "verify_bundle",
    "write_bundle",
]
