"""The model bundle: one directory that holds a trained DLR model, and the checks on it.

A bundle is what training writes and what the worker serves. It is a plain directory, so
that it can be reviewed, diffed, copied and archived with ordinary tools::

    manifest.json               what the bundle is; sha256 and size of every other file
    MODEL_CARD.md               the model card (intended use, data, metrics, limits)
    radiomics_params.yaml       the PyRadiomics parameter file the features came from
    preprocessing.json          resampling and normalisation parameters
    resnet18.safetensors        the fine-tuned ResNet18 backbone
    models/<model>/<part>.json  per model (rad, dl, dlr): scaler, pca, selector, classifier
    report.html, plots, ...     optional documents, listed in the manifest like any file

Trust
    Loading a bundle must never run code from it. A bundle therefore holds only JSON
    (read with ``json.loads``), YAML (``yaml.safe_load``), safetensors and documents that
    nothing here interprets. Pickle-capable files are refused by extension (``.pkl``,
    ``.pt``, ``.joblib``, ``.npy``, ...) and by content (a pickle protocol header, a zip
    archive as ``torch.save`` writes, a NumPy array header, a compressed stream), whatever
    their name. This module does not import :mod:`pickle`, and loading a bundle does not
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

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import shutil
import stat
import struct
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Final, NoReturn, TypeAlias, TypeGuard, TypeVar

import yaml

from onfh_dlr.errors import (
    BundleContentError,
    BundleError,
    BundleExtraFileError,
    BundleFileMissingError,
    BundleFileModifiedError,
    BundleFormatVersionError,
    BundleIntegrityError,
    BundleManifestError,
    BundlePathError,
    UnsafeBundleFileError,
)

__all__ = [
    "DEFAULT_REFERENCES",
    "FORMAT",
    "FORMAT_VERSION",
    "LIBRARY_DISTRIBUTIONS",
    "MANIFEST_NAME",
    "MODEL_COMPONENTS",
    "MODEL_KEYS",
    "Bundle",
    "FileEntry",
    "JsonValue",
    "Manifest",
    "Problem",
    "VerifyReport",
    "canonical_json",
    "library_versions",
    "load_bundle",
    "verify_bundle",
    "write_bundle",
]

_T = TypeVar("_T")

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"

#: Value of the manifest's ``format`` key: tells a bundle manifest from any other JSON.
FORMAT: Final = "onfh-dlr-bundle"
#: The manifest schema this module writes and reads. Any change to the schema (even an
#: added optional key) bumps it, because the loader refuses unknown keys.
FORMAT_VERSION: Final = 1
#: The manifest's file name, at the top of the bundle.
MANIFEST_NAME: Final = "manifest.json"
#: The models a bundle may hold: radiomics only, deep only, and both (the paper's DLR).
MODEL_KEYS: Final[tuple[str, ...]] = ("rad", "dl", "dlr")
#: The fitted parts of one model, each a JSON file; only ``classifier`` is required
#: (the radiomics model, for one, has no PCA).
MODEL_COMPONENTS: Final[tuple[str, ...]] = ("scaler", "pca", "selector", "classifier")
#: Where :func:`write_bundle` points the manifest's ``references`` unless told otherwise.
DEFAULT_REFERENCES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "model_card": "MODEL_CARD.md",
        "preprocessing": "preprocessing.json",
        "radiomics_params": "radiomics_params.yaml",
        "weights": "resnet18.safetensors",
    }
)
#: Distributions whose versions the manifest records (besides ``python``): a bundle is
#: only reproducible with the feature code and libraries it was trained with.
LIBRARY_DISTRIBUTIONS: Final[tuple[str, ...]] = (
    "numpy",
    "onfh-dlr",
    "pyradiomics-bhklab",
    "scikit-learn",
    "torch",
    "torchvision",
)

#: Keys the writer computes; a caller must not pass them.
_COMPUTED_KEYS: Final = frozenset(
    {"created", "device_uid", "files", "format", "format_version", "libraries"}
)
#: Keys the caller passes to :func:`write_bundle`; ``references`` has a default.
_CALLER_KEYS: Final = frozenset(
    {
        "deployed_model",
        "feature_names",
        "intended_use",
        "metrics",
        "models",
        "name",
        "not_for_clinical_use",
        "references",
        "synthetic",
        "threshold",
        "version",
        "warning",
    }
)
#: Every key of a format_version 1 manifest; all are required.
_MANIFEST_KEYS: Final = _COMPUTED_KEYS | _CALLER_KEYS
#: File types each reference must have: the consumers read them by type.
_REFERENCE_SUFFIXES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "model_card": (".md",),
        "preprocessing": (".json",),
        "radiomics_params": (".yaml", ".yml"),
        "weights": (".safetensors",),
    }
)

# File types. An allow-list: a type not named here is refused, so a new pickle-capable
# format cannot slip in under a name nobody thought of.
_JSON_SUFFIXES: Final = frozenset({".json"})
_YAML_SUFFIXES: Final = frozenset({".yaml", ".yml"})
_SAFETENSORS_SUFFIXES: Final = frozenset({".safetensors"})
#: Documents for people (model card, reports, plots): listed and hashed, never interpreted.
_DOCUMENT_SUFFIXES: Final = frozenset(
    {".md", ".txt", ".csv", ".tsv", ".html", ".svg", ".png", ".pdf"}
)
_TEXT_SUFFIXES: Final = (
    _JSON_SUFFIXES | _YAML_SUFFIXES | {".md", ".txt", ".csv", ".tsv", ".html", ".svg"}
)
_ALLOWED_SUFFIXES: Final = (
    _JSON_SUFFIXES | _YAML_SUFFIXES | _SAFETENSORS_SUFFIXES | _DOCUMENT_SUFFIXES
)
#: Types that hold pickles (or marshalled code): named so that the refusal says why.
_PICKLE_SUFFIXES: Final = frozenset(
    {
        ".bin",
        ".ckpt",
        ".cloudpickle",
        ".dill",
        ".h5",
        ".hdf5",
        ".jbl",
        ".joblib",
        ".keras",
        ".npy",
        ".npz",
        ".pickle",
        ".pkl",
        ".pt",
        ".pth",
        ".sav",
    }
)

#: Pickle protocols 2-5 open with the PROTO opcode (0x80) and the protocol number.
#: Protocols 0 and 1 have no header; no text type parses them and no binary type accepts
#: them, so they fail the type checks instead.
_PICKLE_HEADER: Final = re.compile(rb"\x80([\x02-\x05])")
#: Other containers that carry pickles: refused whatever the file's name.
_UNSAFE_SIGNATURES: Final[tuple[tuple[re.Pattern[bytes], str], ...]] = (
    (
        re.compile(rb"PK\x03\x04"),
        "a zip archive (torch.save checkpoints and .npz are zips of pickles)",
    ),
    (re.compile(rb"\x93NUMPY"), "a NumPy array file (object arrays are pickles)"),
    (re.compile(rb"\x1f\x8b"), "a gzip stream (joblib and others compress pickles)"),
    (re.compile(rb"\x78[\x01\x9c\xda]"), "a zlib stream (joblib compresses pickles)"),
    (re.compile(rb"BZh[1-9]"), "a bzip2 stream"),
    (re.compile(rb"\xfd7zXZ\x00"), "an xz stream"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "a zstandard stream"),
)
_SNIFF_BYTES: Final = 8

#: One path component: starts with a letter or digit (so no ``.``, ``..``, hidden files
#: or option-like names), then letters, digits, ``.``, ``_``, ``-``; portable everywhere.
_PATH_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", re.ASCII)
_SHA256: Final = re.compile(r"[0-9a-f]{64}", re.ASCII)
#: DICOM UID (PS3.5 §9.1): dot-separated numbers without leading zeros, at most 64 chars.
_UID: Final = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", re.ASCII)
_UID_MAX: Final = 64
#: Semantic Versioning 2.0.0 (semver.org's regular expression).
_SEMVER: Final = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
#: Name and version go into the SR's algorithm identification, DICOM LO values: at most
#: 64 characters, no backslash (the value delimiter), no control characters.
_LO_MAX: Final = 64

#: A manifest is a few hundred kB (1,197 feature names); anything far larger is not one,
#: and is not read into memory.
_MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024
#: safetensors' own limit on its JSON header.
_MAX_SAFETENSORS_HEADER: Final = 100 * 1024 * 1024
#: Bits per element of safetensors dtypes whose elements are whole bytes.
_SAFETENSORS_DTYPE_BYTES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "BOOL": 1,
        "U8": 1,
        "I8": 1,
        "F8_E5M2": 1,
        "F8_E4M3": 1,
        "F8_E8M0": 1,
        "I16": 2,
        "U16": 2,
        "F16": 2,
        "BF16": 2,
        "I32": 4,
        "U32": 4,
        "F32": 4,
        "C64": 8,
        "I64": 8,
        "U64": 8,
        "F64": 8,
    }
)

# Read regular files without following a symbolic link in their last component: a link
# planted after verification must not redirect a read (the walk refuses links anyway).
_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class FileEntry:
    """What the manifest records of one file.

    Attributes
    ----------
    sha256
        The SHA-256 of the file's bytes, 64 lowercase hexadecimal digits.
    size
        The file's size in bytes.
    """

    sha256: str
    size: int


@dataclass(frozen=True)
class Problem:
    """One reason a bundle is refused.

    Attributes
    ----------
    path
        The file the problem is about (a bundle-relative POSIX path; ``manifest.json`` for
        schema problems), or ``None`` for the bundle directory itself.
    message
        What is wrong, and where possible what to do about it.
    error
        The error class :func:`load_bundle` raises for it.
    """

    path: str | None
    message: str
    error: type[BundleError]

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message

    def as_dict(self) -> dict[str, JsonValue]:
        """Return the problem as JSON (``path``, ``message``, ``error`` class name)."""
        return {"error": self.error.__name__, "message": self.message, "path": self.path}


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify_bundle`.

    Attributes
    ----------
    directory
        The bundle directory (resolved, if it exists).
    problems
        Every problem found, in a stable order; empty when the bundle is fine.
    summary
        :meth:`Bundle.summary` of the bundle when it is fine, else ``None``.
    """

    directory: Path
    problems: tuple[Problem, ...]
    summary: Mapping[str, JsonValue] | None = None

    @property
    def ok(self) -> bool:
        """Whether the bundle passed every check."""
        return not self.problems

    def lines(self) -> list[str]:
        """Return one human-readable line per problem, file first."""
        return [str(problem) for problem in self.problems]


@dataclass(frozen=True)
class Manifest:
    """A verified manifest, typed.

    Attributes
    ----------
    format_version
        The manifest schema version (:data:`FORMAT_VERSION`).
    name, version
        The model's name and semantic version.
    device_uid
        A DICOM UID, new for every training run: it identifies this exact model in the
        reports it produces.
    created
        When the bundle was written (UTC).
    libraries
        Versions of Python and of :data:`LIBRARY_DISTRIBUTIONS` at training time
        (``None``: not installed).
    files
        Every file of the bundle but the manifest, by relative POSIX path.
    feature_names
        Per model (a subset of :data:`MODEL_KEYS`), the input feature names in order.
    models
        Per model, its fitted parts (:data:`MODEL_COMPONENTS`) as relative paths.
    deployed_model
        The model the service scores with.
    threshold
        The deployed model's decision threshold on its probability, fixed on training data.
    metrics
        Training and test metrics, free-form JSON.
    intended_use
        The intended use, as text.
    synthetic, not_for_clinical_use, warning
        Whether the model was trained on synthetic data, whether it must not be used for
        patient care, and the warning every output must carry.
    references
        Relative paths of ``model_card``, ``preprocessing``, ``radiomics_params`` and
        ``weights``.
    """

    format_version: int
    name: str
    version: str
    device_uid: str
    created: datetime
    libraries: Mapping[str, str | None]
    files: Mapping[str, FileEntry]
    feature_names: Mapping[str, tuple[str, ...]]
    models: Mapping[str, Mapping[str, str]]
    deployed_model: str
    threshold: float
    metrics: Mapping[str, JsonValue]
    intended_use: str
    synthetic: bool
    not_for_clinical_use: bool
    warning: str
    references: Mapping[str, str]

    def as_dict(self) -> dict[str, JsonValue]:
        """Return the manifest as the JSON object it was read from."""
        return {
            "created": _iso_utc(self.created),
            "deployed_model": self.deployed_model,
            "device_uid": self.device_uid,
            "feature_names": {key: list(names) for key, names in self.feature_names.items()},
            "files": {
                path: {"sha256": entry.sha256, "size": entry.size}
                for path, entry in self.files.items()
            },
            "format": FORMAT,
            "format_version": self.format_version,
            "intended_use": self.intended_use,
            "libraries": dict(self.libraries),
            "metrics": json.loads(json.dumps(dict(self.metrics))),
            "models": {key: dict(parts) for key, parts in self.models.items()},
            "name": self.name,
            "not_for_clinical_use": self.not_for_clinical_use,
            "references": dict(self.references),
            "synthetic": self.synthetic,
            "threshold": self.threshold,
            "version": self.version,
            "warning": self.warning,
        }


# --------------------------------------------------------------------------- the bundle


class Bundle:
    """A verified model bundle, read-only.

    Made by :func:`load_bundle` (or returned by :func:`write_bundle`) only after every
    check passed. Accessors read files through :meth:`read_bytes`, which checks the
    sha256 again, so a file changed after loading is refused rather than used.

    Parameters
    ----------
    directory
        The bundle directory (resolved).
    manifest
        Its verified manifest.
    """

    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self._directory = directory
        self._manifest = manifest

    def __repr__(self) -> str:
        manifest = self._manifest
        return (
            f"Bundle({str(self._directory)!r}, name={manifest.name!r}, "
            f"version={manifest.version!r}, device_uid={manifest.device_uid!r})"
        )

    @property
    def directory(self) -> Path:
        """The bundle directory."""
        return self._directory

    @property
    def manifest(self) -> Manifest:
        """The verified manifest."""
        return self._manifest

    @property
    def device_uid(self) -> str:
        """The Device UID of this training run (a DICOM UID)."""
        return self._manifest.device_uid

    @property
    def threshold(self) -> float:
        """The deployed model's decision threshold on its probability."""
        return self._manifest.threshold

    @property
    def deployed_model(self) -> str:
        """The key of the model the service scores with (e.g. ``"dlr"``)."""
        return self._manifest.deployed_model

    @property
    def is_synthetic(self) -> bool:
        """Whether the model was trained on synthetic data."""
        return self._manifest.synthetic

    @property
    def not_for_clinical_use(self) -> bool:
        """Whether the model must not be used for patient care."""
        return self._manifest.not_for_clinical_use

    @property
    def warning(self) -> str:
        """The warning every output of this model must carry (may be empty)."""
        return self._manifest.warning

    @property
    def weights_path(self) -> Path:
        """The ResNet18 weights (safetensors)."""
        return self.path(self._manifest.references["weights"])

    @property
    def radiomics_params_path(self) -> Path:
        """The PyRadiomics parameter file (for :func:`model_bundle.radiomics.load_params`)."""
        return self.path(self._manifest.references["radiomics_params"])

    @property
    def model_card_path(self) -> Path:
        """The model card (Markdown)."""
        return self.path(self._manifest.references["model_card"])

    def feature_names(self, model: str | None = None) -> tuple[str, ...]:
        """Return a model's input feature names, in order.

        Parameters
        ----------
        model
            A model key of the bundle (``"rad"``, ``"dl"``, ``"dlr"``); ``None`` is the
            deployed model.

        Returns
        -------
        tuple of str
            The feature names.

        Raises
        ------
        KeyError
            The bundle holds no such model.
        """
        key = self._manifest.deployed_model if model is None else model
        try:
            return self._manifest.feature_names[key]
        except KeyError:
            held = ", ".join(sorted(self._manifest.feature_names))
            raise KeyError(f"bundle holds no model {key!r} (it holds {held})") from None

    def path(self, relpath: str) -> Path:
        """Return the absolute path of a file the manifest lists.

        Parameters
        ----------
        relpath
            The file's bundle-relative POSIX path, as listed in the manifest.

        Returns
        -------
        pathlib.Path
            The file's path.

        Raises
        ------
        onfh_dlr.errors.BundleFileMissingError
            The manifest lists no such file.
        """
        self._entry(relpath)
        return self._directory.joinpath(*relpath.split("/"))

    def read_bytes(self, relpath: str) -> bytes:
        """Read a listed file, checking its size and sha256 against the manifest again.

        Parameters
        ----------
        relpath
            The file's bundle-relative POSIX path.

        Returns
        -------
        bytes
            The file's content.

        Raises
        ------
        onfh_dlr.errors.BundleFileMissingError
            The manifest lists no such file, or it has gone.
        onfh_dlr.errors.BundleFileModifiedError
            The file changed after the bundle was loaded.
        """
        entry = self._entry(relpath)
        try:
            data = _read_nofollow(self.path(relpath))
        except OSError as exc:
            raise BundleFileMissingError(
                f"bundle {self._directory}: {relpath}: cannot be read: {_os_reason(exc)}",
                path=relpath,
            ) from exc
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BundleFileModifiedError(
                f"bundle {self._directory}: {relpath}: changed after the bundle was loaded "
                "(size or sha256 differ from the manifest)",
                path=relpath,
            )
        return data

    def json(self, relpath: str) -> JsonValue:
        """Read a listed JSON file (``json.loads`` only; NaN and duplicate keys refused).

        Parameters
        ----------
        relpath
            The bundle-relative POSIX path of a ``.json`` file.

        Returns
        -------
        JsonValue
            The parsed JSON.

        Raises
        ------
        ValueError
            ``relpath`` is not a ``.json`` file.
        onfh_dlr.errors.BundleError
            As :meth:`read_bytes`; or :class:`~onfh_dlr.errors.BundleContentError` if the
            file is not strict JSON.
        """
        if _suffix(relpath) not in _JSON_SUFFIXES:
            raise ValueError(f"{relpath} is not a .json file")
        data = self.read_bytes(relpath)
        try:
            return _strict_json(data)
        except ValueError as exc:  # pragma: no cover - verified at load, hash re-checked
            raise BundleContentError(
                f"bundle {self._directory}: {relpath}: not valid JSON: {exc}", path=relpath
            ) from exc

    def yaml(self, relpath: str) -> object:
        """Read a listed YAML file with ``yaml.safe_load`` (plain data, never objects).

        Parameters
        ----------
        relpath
            The bundle-relative POSIX path of a ``.yaml``/``.yml`` file.

        Returns
        -------
        object
            The parsed YAML.

        Raises
        ------
        ValueError
            ``relpath`` is not a YAML file.
        onfh_dlr.errors.BundleError
            As :meth:`read_bytes`.
        """
        if _suffix(relpath) not in _YAML_SUFFIXES:
            raise ValueError(f"{relpath} is not a .yaml/.yml file")
        data = self.read_bytes(relpath)
        try:
            return yaml.safe_load(data.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:  # pragma: no cover - verified
            raise BundleContentError(
                f"bundle {self._directory}: {relpath}: not valid YAML: {exc}", path=relpath
            ) from exc

    def preprocessing(self) -> dict[str, JsonValue]:
        """Return the preprocessing parameters (a JSON object)."""
        return self._json_object(self._manifest.references["preprocessing"])

    def model_params(self, model: str, component: str) -> dict[str, JsonValue]:
        """Return the fitted parameters of one part of one model.

        Parameters
        ----------
        model
            A model key of the bundle (``"rad"``, ``"dl"``, ``"dlr"``).
        component
            One of :data:`MODEL_COMPONENTS` the model has.

        Returns
        -------
        dict
            The part's parameters, as written by training.

        Raises
        ------
        KeyError
            The bundle holds no such model, or the model no such part.
        """
        parts = self._manifest.models.get(model)
        if parts is None:
            raise KeyError(f"bundle holds no model {model!r}")
        relpath = parts.get(component)
        if relpath is None:
            raise KeyError(f"model {model!r} has no {component!r} (it has {', '.join(parts)})")
        return self._json_object(relpath)

    def summary(self) -> dict[str, JsonValue]:
        """Return what ``onfh-dlr bundle verify`` prints about a bundle.

        Returns
        -------
        dict
            ``name``, ``version``, ``device_uid``, ``created``, ``deployed_model``,
            ``threshold``, ``feature_counts`` (per model), ``synthetic``,
            ``not_for_clinical_use``, ``warning``, ``format_version``, ``files`` (count)
            and ``directory``, in that order.
        """
        manifest = self._manifest
        return {
            "name": manifest.name,
            "version": manifest.version,
            "device_uid": manifest.device_uid,
            "created": _iso_utc(manifest.created),
            "deployed_model": manifest.deployed_model,
            "threshold": manifest.threshold,
            "feature_counts": {key: len(names) for key, names in manifest.feature_names.items()},
            "synthetic": manifest.synthetic,
            "not_for_clinical_use": manifest.not_for_clinical_use,
            "warning": manifest.warning,
            "format_version": manifest.format_version,
            "files": len(manifest.files),
            "directory": str(self._directory),
        }

    def _entry(self, relpath: str) -> FileEntry:
        entry = self._manifest.files.get(relpath)
        if entry is None:
            raise BundleFileMissingError(
                f"bundle {self._directory} lists no file {relpath!r}", path=relpath
            )
        return entry

    def _json_object(self, relpath: str) -> dict[str, JsonValue]:
        value = self.json(relpath)
        if not isinstance(value, dict):  # pragma: no cover - verified at load
            raise BundleContentError(f"{relpath}: must hold a JSON object", path=relpath)
        return value


# --------------------------------------------------------------------------- public API


def load_bundle(directory: Path | str) -> Bundle:
    """Verify a bundle completely, then open it.

    Nothing but the manifest is read before the checks of :func:`verify_bundle` pass.

    Parameters
    ----------
    directory
        The bundle directory (may itself be a symbolic link, e.g. ``current -> v3``).

    Returns
    -------
    Bundle
        The verified bundle.

    Raises
    ------
    onfh_dlr.errors.BundleError
        The subclass for the first problem found (see :class:`Problem`); its message
        names the file, and ``problems`` lists every problem.
    """
    root, manifest, problems = _verify(Path(directory))
    if problems or manifest is None:
        _raise(root, problems)
    return Bundle(root, manifest)


def verify_bundle(directory: Path | str) -> VerifyReport:
    """Check a bundle and report every problem (what ``onfh-dlr bundle verify`` runs).

    Checks, in order: the manifest (present, a regular file, strict JSON, known format
    version, schema); every listed path (relative, normalised, portable, no ``..``);
    the directory tree (no symbolic links, no special files, no unlisted files); every
    listed file (present, size, sha256); and each file's content (no pickle-capable type
    or content; JSON, YAML and safetensors parse).

    Parameters
    ----------
    directory
        The bundle directory.

    Returns
    -------
    VerifyReport
        The problems (empty when the bundle is fine) and, if fine, its summary.
    """
    root, manifest, problems = _verify(Path(directory))
    summary = Bundle(root, manifest).summary() if manifest is not None and not problems else None
    return VerifyReport(directory=root, problems=tuple(problems), summary=summary)


def write_bundle(
    directory: Path | str,
    manifest_fields: Mapping[str, object],
    files: Mapping[str, bytes | Path],
    *,
    device_uid: str | None = None,
) -> Bundle:
    """Write a bundle: every file atomically, the manifest last, the whole atomically.

    Files are written into a staging directory beside ``directory`` (each to a temporary
    name, fsync'ed, renamed), then the manifest; the staging directory is verified with
    :func:`verify_bundle`'s checks and renamed onto ``directory``. On any failure the
    staging directory is removed and ``directory`` is untouched.

    Parameters
    ----------
    directory
        The bundle directory to create. It must not exist, or be empty.
    manifest_fields
        The caller's manifest keys: ``name``, ``version``, ``feature_names``,
        ``models``, ``deployed_model``, ``threshold``, ``metrics``, ``intended_use``,
        ``synthetic``, ``not_for_clinical_use``, ``warning`` and optionally
        ``references`` (default :data:`DEFAULT_REFERENCES`). ``format``,
        ``format_version``, ``device_uid`` (a new :func:`pydicom.uid.generate_uid`),
        ``created``, ``libraries`` and ``files`` are computed. Tuples are written as
        lists; values must be JSON types (no NaN).
    files
        Every file but the manifest, by bundle-relative POSIX path: its bytes, or a
        path to copy it from.
    device_uid
        The Device UID of this training run when the caller made it earlier (e.g. to
        print it in a report inside the bundle); by default a new one.

    Returns
    -------
    Bundle
        The written bundle, loaded back with :func:`load_bundle`.

    Raises
    ------
    onfh_dlr.errors.BundleManifestError
        ``manifest_fields`` is incomplete, has computed or unknown keys, non-JSON values,
        or fails the manifest schema.
    onfh_dlr.errors.BundlePathError
        A path in ``files`` is absolute, has ``..`` or is otherwise unsafe.
    onfh_dlr.errors.UnsafeBundleFileError
        A file has a pickle-capable or unknown type, or pickle-like content.
    onfh_dlr.errors.BundleContentError
        A JSON, YAML or safetensors file does not parse.
    FileExistsError
        ``directory`` exists and is not an empty directory.
    OSError
        A file cannot be read or written.
    """
    target = Path(directory).absolute()
    fields = _checked_fields(manifest_fields)
    for relpath in files:
        _raise_for_listed_path(relpath)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        # mkdtemp makes the directory private; the service reads bundles as another user.
        staging.chmod(0o755)
        entries = {
            relpath: _write_file(staging, relpath, files[relpath]) for relpath in sorted(files)
        }
        manifest = _computed_fields(entries, device_uid) | fields
        parser = _ManifestParser(manifest)
        parser.parse()
        if parser.problems:
            _raise(target, parser.problems)
        _write_atomic(staging / MANIFEST_NAME, canonical_json(manifest))
        _, _, problems = _verify(staging)
        if problems:
            _raise(target, problems)
        _fsync_directory(staging)
        # rename(2) replaces an empty directory and fails on a non-empty one, so a
        # bundle that appeared meanwhile is never overwritten.
        os.replace(staging, target)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(target)


def canonical_json(value: object) -> bytes:
    """Serialise JSON the way a bundle stores it: sorted keys, indent 2, final newline.

    The same content always gives the same bytes, so two bundles can be compared with
    ``diff`` and hashes are reproducible. Use it for the JSON files given to
    :func:`write_bundle`, too.

    Parameters
    ----------
    value
        JSON types only (``dict`` with ``str`` keys, ``list``/``tuple``, ``str``,
        ``int``, finite ``float``, ``bool``, ``None``).

    Returns
    -------
    bytes
        UTF-8 JSON.

    Raises
    ------
    TypeError
        ``value`` holds a non-JSON type.
    ValueError
        ``value`` holds NaN or infinity (strict JSON has neither).
    """
    text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def library_versions() -> dict[str, str | None]:
    """Return the versions the manifest records: Python and :data:`LIBRARY_DISTRIBUTIONS`.

    Returns
    -------
    dict
        ``python`` and each distribution name mapped to its version, ``None`` if the
        distribution is not installed.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for distribution in LIBRARY_DISTRIBUTIONS:
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[distribution] = None
    return versions


# --------------------------------------------------------------------------- verification


def _verify(directory: Path) -> tuple[Path, Manifest | None, list[Problem]]:
    """Run every check; return the resolved directory, the manifest if valid, problems."""
    try:
        # A symbolic link as the bundle directory itself is fine (``current -> v3``);
        # links inside it are not.
        root = directory.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        reason = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        return directory, None, [Problem(None, f"{directory}: {reason}", BundleError)]
    if not root.is_dir():
        return root, None, [Problem(None, f"{root} is not a directory", BundleError)]
    raw, problems = _read_manifest(root)
    if raw is None:
        return root, None, problems
    parser = _ManifestParser(raw)
    manifest = parser.parse()
    problems = parser.problems
    if parser.files is None:
        # Without a usable file list there is nothing to check the directory against.
        return root, None, problems
    problems += _check_tree(root, parser.files, parser.json_objects, parser.yaml_mappings)
    return root, manifest if not problems else None, problems


def _read_manifest(root: Path) -> tuple[dict[str, object] | None, list[Problem]]:
    path = root / MANIFEST_NAME

    def problem(message: str, error: type[BundleError] = BundleManifestError) -> list[Problem]:
        return [Problem(MANIFEST_NAME, message, error)]

    try:
        info = path.lstat()
    except FileNotFoundError:
        return None, problem(
            "is missing: this is not a model bundle, or writing it did not finish "
            "(the manifest is written last)"
        )
    except OSError as exc:
        return None, problem(f"cannot be read: {_os_reason(exc)}")
    if stat.S_ISLNK(info.st_mode):
        return None, problem(
            "is a symbolic link; a bundle holds regular files only", BundlePathError
        )
    if not stat.S_ISREG(info.st_mode):
        return None, problem("is not a regular file")
    if info.st_size > _MAX_MANIFEST_BYTES:
        return None, problem(
            f"is {info.st_size} bytes, more than any manifest ({_MAX_MANIFEST_BYTES})"
        )
    try:
        raw = _strict_json(_read_nofollow(path))
    except OSError as exc:
        return None, problem(f"cannot be read: {_os_reason(exc)}")
    except ValueError as exc:
        return None, problem(f"is not valid JSON ({exc}); is it truncated?")
    if not isinstance(raw, dict):
        return None, problem(f"must hold a JSON object, not {_kind(raw)}")
    return dict(raw), []


class _ManifestParser:
    """Checks a manifest object against the schema, collecting every problem.

    After :meth:`parse`, ``files`` holds the well-formed file entries (``None`` if the
    ``files`` key is unusable), ``json_objects`` and ``yaml_mappings`` the files whose
    content must be a JSON object or a YAML mapping.
    """

    def __init__(self, raw: Mapping[str, object]) -> None:
        self.raw = raw
        self.problems: list[Problem] = []
        self.files: dict[str, FileEntry] | None = None
        self.json_objects: set[str] = set()
        self.yaml_mappings: set[str] = set()

    def fail(self, message: str, error: type[BundleError] = BundleManifestError) -> None:
        self.problems.append(Problem(MANIFEST_NAME, message, error))

    def parse(self) -> Manifest | None:
        raw = self.raw
        # Format first: under another format or version the other keys mean nothing.
        fmt = raw.get("format")
        if fmt != FORMAT:
            self.fail(f"key 'format' must be {FORMAT!r}, not {fmt!r}: not a model bundle manifest")
            return None
        version = raw.get("format_version")
        if type(version) is not int:
            self.fail(f"key 'format_version' must be an integer, not {_kind(version)}")
            return None
        if version != FORMAT_VERSION:
            advice = (
                "it was written by a newer onfh-dlr; upgrade"
                if version > FORMAT_VERSION
                else "rewrite the bundle with this onfh-dlr"
            )
            self.fail(
                f"format_version {version} is not supported: this onfh-dlr reads format_version "
                f"{FORMAT_VERSION}; {advice}",
                BundleFormatVersionError,
            )
            return None
        for key in sorted(_MANIFEST_KEYS - raw.keys()):
            self.fail(f"key {key!r} is missing")
        for key in sorted(raw.keys() - _MANIFEST_KEYS):
            self.fail(f"key {key!r} is not part of format_version {FORMAT_VERSION} (misspelt?)")

        self.files = self._files(raw["files"]) if "files" in raw else None
        name = self._lo_text("name")
        semver = self._lo_text("version")
        if semver is not None and not _SEMVER.fullmatch(semver):
            self.fail(f"key 'version' must be a semantic version (e.g. 1.2.0), not {semver!r}")
            semver = None
        device_uid = self._device_uid()
        created = self._created()
        libraries = self._libraries()
        feature_names = self._feature_names()
        models = self._models(feature_names)
        deployed = self._deployed(feature_names)
        threshold = self._threshold()
        metrics = self._typed("metrics", dict, "an object")
        intended_use = self._text("intended_use", nonempty=True)
        synthetic = self._typed("synthetic", bool, "true or false")
        not_clinical = self._typed("not_for_clinical_use", bool, "true or false")
        warning = self._text("warning", nonempty=False)
        if synthetic and not_clinical is False:
            self.fail("a synthetic model must have 'not_for_clinical_use': true")
        if (synthetic or not_clinical) and warning is not None and not warning.strip():
            self.fail("key 'warning' must say why the model is not for clinical use")
        references = self._references()

        if (
            self.problems
            or self.files is None
            or name is None
            or semver is None
            or device_uid is None
            or created is None
            or libraries is None
            or feature_names is None
            or models is None
            or deployed is None
            or threshold is None
            or metrics is None
            or intended_use is None
            or synthetic is None
            or not_clinical is None
            or warning is None
            or references is None
        ):
            return None
        return Manifest(
            format_version=version,
            name=name,
            version=semver,
            device_uid=device_uid,
            created=created,
            libraries=MappingProxyType(libraries),
            files=MappingProxyType(dict(sorted(self.files.items()))),
            feature_names=MappingProxyType(feature_names),
            models=MappingProxyType(
                {key: MappingProxyType(parts) for key, parts in models.items()}
            ),
            deployed_model=deployed,
            threshold=threshold,
            metrics=MappingProxyType(metrics),
            intended_use=intended_use,
            synthetic=synthetic,
            not_for_clinical_use=not_clinical,
            warning=warning,
            references=MappingProxyType(references),
        )

    # -- one method per key; each returns None (and records why) when the value is bad.

    def _typed(self, key: str, kind: type[_T], described: str) -> _T | None:
        if key not in self.raw:
            return None
        value = self.raw[key]
        if not isinstance(value, kind):
            self.fail(f"key {key!r} must be {described}, not {_kind(value)}")
            return None
        return value

    def _text(self, key: str, *, nonempty: bool) -> str | None:
        value = self._typed(key, str, "a string")
        if value is not None and nonempty and not value.strip():
            self.fail(f"key {key!r} must not be empty")
            return None
        return value

    def _lo_text(self, key: str) -> str | None:
        value = self._text(key, nonempty=True)
        if value is None:
            return None
        if len(value) > _LO_MAX or "\\" in value or not value.isprintable():
            self.fail(
                f"key {key!r} must be at most {_LO_MAX} printable characters without a "
                f"backslash (it goes into DICOM LO attributes), not {value!r}"
            )
            return None
        return value

    def _device_uid(self) -> str | None:
        value = self._text("device_uid", nonempty=True)
        if value is not None and (len(value) > _UID_MAX or not _UID.fullmatch(value)):
            self.fail(f"key 'device_uid' must be a DICOM UID (at most 64 chars), not {value!r}")
            return None
        return value

    def _created(self) -> datetime | None:
        value = self._text("created", nonempty=True)
        if value is None:
            return None
        try:
            created = datetime.fromisoformat(value)
        except ValueError:
            created = None
        if created is None or created.utcoffset() is None or created.utcoffset():
            self.fail(f"key 'created' must be a UTC ISO 8601 time (…T…Z), not {value!r}")
            return None
        return created.astimezone(UTC)

    def _libraries(self) -> dict[str, str | None] | None:
        value = self._typed("libraries", dict, "an object")
        if value is None:
            return None
        ok = True
        for key, version in value.items():
            if version is not None and not isinstance(version, str):
                self.fail(
                    f"libraries[{key!r}] must be a version string or null, not {_kind(version)}"
                )
                ok = False
        for key in ("python", *LIBRARY_DISTRIBUTIONS):
            if key not in value:
                self.fail(f"libraries[{key!r}] is missing")
                ok = False
        return dict(value) if ok else None

    def _files(self, value: object) -> dict[str, FileEntry] | None:
        if not isinstance(value, dict):
            self.fail(
                f"key 'files' must be an object of paths to {{sha256, size}}, not {_kind(value)}"
            )
            return None
        entries: dict[str, FileEntry] = {}
        folded: dict[str, str] = {}
        for relpath, entry in value.items():
            refused = _listed_path_problem(relpath)
            if refused is not None:
                error, reason = refused
                self.fail(f"'files' lists {relpath!r}: {reason}", error)
                continue
            # On case-insensitive file systems (macOS, Windows) two such files are one.
            other = folded.setdefault(relpath.casefold(), relpath)
            if other != relpath:
                self.fail(
                    f"'files' lists {other!r} and {relpath!r}, which differ only in case",
                    BundlePathError,
                )
                continue
            where = f"files[{relpath!r}]"
            if not isinstance(entry, dict) or set(entry) != {"sha256", "size"}:
                self.fail(f"{where} must be an object with exactly 'sha256' and 'size'")
                continue
            digest, size = entry["sha256"], entry["size"]
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                self.fail(f"{where}.sha256 must be 64 lowercase hexadecimal digits, not {digest!r}")
                continue
            if type(size) is not int or size < 0:
                self.fail(f"{where}.size must be a non-negative integer, not {size!r}")
                continue
            entries[relpath] = FileEntry(sha256=digest, size=size)
        return entries

    def _listed_file(self, where: str, value: object, suffixes: Sequence[str]) -> str | None:
        """Check a reference to a file: a string, listed in 'files', of the right type."""
        if not isinstance(value, str):
            self.fail(f"{where} must be a path string, not {_kind(value)}")
            return None
        if _suffix(value) not in suffixes:
            self.fail(f"{where} is {value!r}; it must be a {'/'.join(suffixes)} file")
            return None
        if self.files is not None and value not in self.files:
            # Entries with refused paths are already reported; say it once.
            if _listed_path_problem(value) is None:
                self.fail(f"{where} is {value!r}, which 'files' does not list")
            return None
        return value

    def _feature_names(self) -> dict[str, tuple[str, ...]] | None:
        value = self._typed("feature_names", dict, "an object of model key to names")
        if value is None:
            return None
        result: dict[str, tuple[str, ...]] = {}
        if not value:
            self.fail("key 'feature_names' must name at least one model")
        for key, names in value.items():
            where = f"feature_names[{key!r}]"
            if key not in MODEL_KEYS:
                self.fail(f"{where}: unknown model (known: {', '.join(MODEL_KEYS)})")
                continue
            if not isinstance(names, list) or not names:
                self.fail(f"{where} must be a non-empty list of names")
                continue
            if not all(isinstance(name, str) and name for name in names):
                self.fail(f"{where} must hold non-empty strings only")
                continue
            duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
            if duplicates:
                self.fail(f"{where} repeats {', '.join(map(repr, duplicates[:5]))}")
                continue
            result[key] = tuple(names)
        return result if len(result) == len(value) and result else None

    def _models(
        self, feature_names: Mapping[str, tuple[str, ...]] | None
    ) -> dict[str, dict[str, str]] | None:
        value = self._typed("models", dict, "an object of model key to parts")
        if value is None:
            return None
        result: dict[str, dict[str, str]] = {}
        for key, parts in value.items():
            where = f"models[{key!r}]"
            if key not in MODEL_KEYS:
                self.fail(f"{where}: unknown model (known: {', '.join(MODEL_KEYS)})")
                continue
            if not isinstance(parts, dict) or "classifier" not in parts:
                self.fail(f"{where} must be an object with at least a 'classifier' file")
                continue
            checked: dict[str, str] = {}
            for component, relpath in parts.items():
                if component not in MODEL_COMPONENTS:
                    self.fail(
                        f"{where}[{component!r}]: unknown part "
                        f"(known: {', '.join(MODEL_COMPONENTS)})"
                    )
                    continue
                listed = self._listed_file(f"{where}[{component!r}]", relpath, (".json",))
                if listed is not None:
                    checked[component] = listed
                    self.json_objects.add(listed)
            if len(checked) == len(parts):
                result[key] = checked
        if feature_names is not None and set(value) != set(feature_names):
            self.fail(
                "keys 'models' and 'feature_names' must name the same models, not "
                f"{sorted(value)} and {sorted(feature_names)}"
            )
            return None
        return result if len(result) == len(value) else None

    def _deployed(self, feature_names: Mapping[str, tuple[str, ...]] | None) -> str | None:
        value = self._text("deployed_model", nonempty=True)
        if value is not None and feature_names is not None and value not in feature_names:
            self.fail(
                f"key 'deployed_model' is {value!r}, which the bundle does not hold "
                f"(it holds {', '.join(sorted(feature_names))})"
            )
            return None
        return value

    def _threshold(self) -> float | None:
        if "threshold" not in self.raw:
            return None
        value = self.raw["threshold"]
        # bool is an int subclass; true is no threshold.
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"key 'threshold' must be a number, not {_kind(value)}")
            return None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            self.fail(f"key 'threshold' must be a probability in [0, 1], not {value!r}")
            return None
        return float(value)

    def _references(self) -> dict[str, str] | None:
        value = self._typed("references", dict, "an object")
        if value is None:
            return None
        result: dict[str, str] = {}
        for key in sorted(_REFERENCE_SUFFIXES.keys() - value.keys()):
            self.fail(f"references[{key!r}] is missing")
        for key in sorted(value.keys() - _REFERENCE_SUFFIXES.keys()):
            self.fail(f"references[{key!r}]: unknown reference")
        for key, suffixes in sorted(_REFERENCE_SUFFIXES.items()):
            if key in value:
                listed = self._listed_file(f"references[{key!r}]", value[key], suffixes)
                if listed is not None:
                    result[key] = listed
        if len(result) != len(_REFERENCE_SUFFIXES) or len(value) != len(result):
            return None
        self.json_objects.add(result["preprocessing"])
        self.yaml_mappings.add(result["radiomics_params"])
        return result


def _check_tree(
    root: Path,
    entries: Mapping[str, FileEntry],
    json_objects: set[str],
    yaml_mappings: set[str],
) -> list[Problem]:
    """Check the directory against the listed files, then each file's content."""
    regular, problems = _scan(root)
    refused = {problem.path for problem in problems}
    for relpath in sorted(regular.keys() - entries.keys() - {MANIFEST_NAME}):
        problems.append(
            Problem(
                relpath,
                "is not listed in the manifest; a bundle holds exactly the files its manifest "
                "lists (remove the file, or write the bundle again with it)",
                BundleExtraFileError,
            )
        )
    for relpath, entry in sorted(entries.items()):
        if relpath in refused:
            continue  # a link or special file, already reported
        info = regular.get(relpath)
        if info is None:
            problems.append(
                Problem(relpath, _missing_reason(root, relpath, refused), BundleFileMissingError)
            )
            continue
        if info.st_size != entry.size:
            problems.append(
                Problem(
                    relpath,
                    f"is {info.st_size} bytes, the manifest lists {entry.size}: "
                    "the file was modified or truncated",
                    BundleFileModifiedError,
                )
            )
            continue
        path = root.joinpath(*relpath.split("/"))
        try:
            with _open_nofollow(path) as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            problems.append(
                Problem(relpath, f"cannot be read: {_os_reason(exc)}", BundleIntegrityError)
            )
            continue
        if digest != entry.sha256:
            problems.append(
                Problem(
                    relpath,
                    f"sha256 is {digest}, the manifest lists {entry.sha256}: "
                    "the file (or the manifest) was modified",
                    BundleFileModifiedError,
                )
            )
            continue
        # Content is checked only once the bytes are the ones the manifest vouches for.
        problem = _content_problem(
            path, relpath, entry.size, relpath in json_objects, relpath in yaml_mappings
        )
        if problem is not None:
            problems.append(problem)
    return problems


def _scan(root: Path) -> tuple[dict[str, os.stat_result], list[Problem]]:
    """Walk the bundle without following links: its regular files, and refused entries."""
    regular: dict[str, os.stat_result] = {}
    problems: list[Problem] = []

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename).relative_to(root).as_posix() if exc.filename else None
        problems.append(Problem(where, f"cannot be read: {_os_reason(exc)}", BundleIntegrityError))

    # followlinks=False: a linked directory is listed (and refused below), never entered.
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            relpath = path.relative_to(root).as_posix()
            try:
                info = path.lstat()
            except OSError as exc:
                problems.append(
                    Problem(relpath, f"cannot be read: {_os_reason(exc)}", BundleIntegrityError)
                )
                continue
            if stat.S_ISLNK(info.st_mode):
                problems.append(Problem(relpath, _symlink_reason(root, path), BundlePathError))
            elif stat.S_ISREG(info.st_mode):
                regular[relpath] = info
            elif not stat.S_ISDIR(info.st_mode):
                problems.append(
                    Problem(
                        relpath,
                        "is not a regular file (a device, socket or pipe); "
                        "a bundle holds regular files only",
                        BundlePathError,
                    )
                )
    return regular, problems


def _symlink_reason(root: Path, path: Path) -> str:
    try:
        target = os.readlink(path)
        inside = path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        target, inside = "?", False
    where = "inside" if inside else "outside"
    # Even a link inside the bundle is refused: it can be re-pointed after verification,
    # and copies and archives of the bundle may drop or follow it.
    return (
        f"is a symbolic link to {target!r} ({where} the bundle); a bundle holds regular files only"
    )


def _missing_reason(root: Path, relpath: str, refused: set[str | None]) -> str:
    parents = [parent.as_posix() for parent in PurePosixPath(relpath).parents]
    linked = next((parent for parent in parents if parent in refused), None)
    if linked is not None:
        return f"is listed in the manifest but lies under {linked!r}, which is refused"
    if root.joinpath(*relpath.split("/")).is_dir():
        return "is listed in the manifest as a file but is a directory"
    return "is listed in the manifest but missing"


def _content_problem(
    path: Path, relpath: str, size: int, json_object: bool, yaml_mapping: bool
) -> Problem | None:
    """Check one verified file's content against its type; ``None`` if it is fine."""
    suffix = _suffix(relpath)
    try:
        with _open_nofollow(path) as handle:
            head = handle.read(_SNIFF_BYTES)
            unsafe = _unsafe_content(head)
            if unsafe is not None:
                return Problem(
                    relpath,
                    f"content is {unsafe} despite its {suffix or 'missing'} extension; "
                    "bundles never hold pickles (loading one can run code)",
                    UnsafeBundleFileError,
                )
            if suffix in _SAFETENSORS_SUFFIXES:
                reason = _safetensors_problem(head, handle, size)
                return None if reason is None else Problem(relpath, reason, BundleContentError)
            if suffix not in _TEXT_SUFFIXES:
                return None  # a binary document (png, pdf): listed, hashed, never read
            data = head + handle.read()
    except OSError as exc:
        return Problem(relpath, f"cannot be read: {_os_reason(exc)}", BundleIntegrityError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Problem(
            relpath, f"is not UTF-8 text ({exc.reason} at byte {exc.start})", BundleContentError
        )
    if suffix in _JSON_SUFFIXES:
        try:
            value = _strict_json(data)
        except ValueError as exc:
            return Problem(relpath, f"is not valid JSON ({exc})", BundleContentError)
        if json_object and not isinstance(value, dict):
            return Problem(
                relpath, f"must hold a JSON object, not {_kind(value)}", BundleContentError
            )
    elif suffix in _YAML_SUFFIXES:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            return Problem(relpath, f"is not valid YAML ({exc})", BundleContentError)
        if yaml_mapping and not isinstance(loaded, dict):
            return Problem(
                relpath, f"must hold a YAML mapping, not {_kind(loaded)}", BundleContentError
            )
    return None


def _unsafe_content(head: bytes) -> str | None:
    """Name a pickle-carrying format that ``head`` (a file's first bytes) starts, if any."""
    match = _PICKLE_HEADER.match(head)
    if match is not None:
        return f"a pickle (protocol {match.group(1)[0]})"
    for signature, description in _UNSAFE_SIGNATURES:
        if signature.match(head):
            return description
    return None


def _safetensors_problem(head: bytes, handle: io.BufferedReader, size: int) -> str | None:
    """Check a safetensors file's structure from its header, without any framework.

    The format: an 8-byte little-endian header length, a JSON header mapping tensor names
    to dtype, shape and a byte range of the data that follows, which the ranges must
    cover exactly. Parsing it here (not with ``safe_open(framework="numpy")``) keeps
    NumPy, and with it pickle, out of the process.
    """
    if len(head) < _SNIFF_BYTES or size < _SNIFF_BYTES:
        return "is not a safetensors file (shorter than its 8-byte header length)"
    (length,) = struct.unpack("<Q", head[:_SNIFF_BYTES])
    if length > _MAX_SAFETENSORS_HEADER or _SNIFF_BYTES + length > size:
        return f"is not a safetensors file (header length {length} does not fit the file)"
    try:
        header = _strict_json(handle.read(length))
    except ValueError as exc:
        return f"is not a safetensors file (header is not JSON: {exc})"
    if not isinstance(header, dict):
        return "is not a safetensors file (header is not a JSON object)"
    ranges: list[tuple[int, int]] = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                return "safetensors __metadata__ must map strings to strings"
            continue
        if not isinstance(info, dict):
            return f"safetensors tensor {name!r} has no dtype/shape/data_offsets"
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        dims = [n for n in shape if _is_count(n)] if isinstance(shape, list) else None
        bounds = [n for n in offsets if _is_count(n)] if isinstance(offsets, list) else None
        if (
            not isinstance(dtype, str)
            or dims is None
            or not isinstance(shape, list)
            or len(dims) != len(shape)
            or bounds is None
            or len(bounds) != 2
            or bounds[0] > bounds[1]
        ):
            return f"safetensors tensor {name!r} has a malformed dtype, shape or data_offsets"
        begin, end = bounds
        itemsize = _SAFETENSORS_DTYPE_BYTES.get(dtype)
        # Sub-byte and future dtypes: their size rule is not ours to guess; ranges still
        # have to tile the data below.
        if itemsize is not None and end - begin != math.prod(dims) * itemsize:
            return f"safetensors tensor {name!r}: {end - begin} bytes do not hold {dtype}{dims}"
        ranges.append((begin, end))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            return "safetensors data ranges overlap or leave gaps"
        position = end
    if position != size - _SNIFF_BYTES - length:
        return (
            f"safetensors data is {size - _SNIFF_BYTES - length} bytes but its tensors "
            f"cover {position}: the file is truncated or padded"
        )
    return None


# --------------------------------------------------------------------------- writing


def _checked_fields(manifest_fields: Mapping[str, object]) -> dict[str, JsonValue]:
    """Check the caller's manifest keys and return them as plain JSON (tuples → lists)."""
    computed = sorted(_COMPUTED_KEYS & manifest_fields.keys())
    if computed:
        raise BundleManifestError(
            f"write_bundle computes {', '.join(computed)}; do not pass them", path=MANIFEST_NAME
        )
    fields: dict[str, object] = {"references": dict(DEFAULT_REFERENCES), **manifest_fields}
    missing = sorted(_CALLER_KEYS - fields.keys())
    unknown = sorted(fields.keys() - _CALLER_KEYS)
    if missing or unknown:
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(unknown)}" if unknown else "",
        ]
        raise BundleManifestError(
            f"manifest fields: {'; '.join(part for part in parts if part)}", path=MANIFEST_NAME
        )
    problem = _json_problem(fields, "manifest")
    if problem is not None:
        raise BundleManifestError(f"manifest fields: {problem}", path=MANIFEST_NAME)
    # The round trip makes what is validated exactly what is written.
    loaded = json.loads(canonical_json(fields))
    if not isinstance(loaded, dict):  # pragma: no cover - a dict serialises to an object
        raise BundleManifestError("manifest fields must be an object", path=MANIFEST_NAME)
    return loaded


def _computed_fields(
    entries: Mapping[str, FileEntry], device_uid: str | None
) -> dict[str, JsonValue]:
    # Imported here: pydicom imports NumPy, and NumPy imports pickle. Only writing needs
    # it; loading a bundle keeps both out of the process.
    from pydicom.uid import generate_uid

    return {
        "created": _iso_utc(datetime.now(UTC)),
        "device_uid": device_uid or str(generate_uid()),
        "files": {
            relpath: {"sha256": entry.sha256, "size": entry.size}
            for relpath, entry in sorted(entries.items())
        },
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "libraries": dict(library_versions()),
    }


def _raise_for_listed_path(relpath: object) -> None:
    if not isinstance(relpath, str):
        raise BundlePathError(f"bundle file path {relpath!r} is not a string")
    if relpath == MANIFEST_NAME:
        raise BundlePathError(
            f"{MANIFEST_NAME} is written by write_bundle; do not pass it", path=relpath
        )
    refused = _listed_path_problem(relpath)
    if refused is not None:
        error, reason = refused
        raise error(f"bundle file {relpath!r}: {reason}", path=relpath)


def _write_file(staging: Path, relpath: str, content: bytes | Path) -> FileEntry:
    """Write one file atomically (temporary name, fsync, rename); return its entry."""
    destination = staging.joinpath(*relpath.split("/"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
    )
    temporary_path = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as out:
            if isinstance(content, bytes | bytearray | memoryview):
                data = bytes(content)
                out.write(data)
                digest.update(data)
                size = len(data)
            else:
                with Path(content).open("rb") as source:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file private; the service reads bundles as another user.
        temporary_path.chmod(0o644)
        temporary_path.replace(destination)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    return FileEntry(sha256=digest.hexdigest(), size=size)


def _write_atomic(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary_path = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary_path.chmod(0o644)
        temporary_path.replace(path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def _fsync_directory(path: Path) -> None:
    """Make renames in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(handle)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(handle)


# --------------------------------------------------------------------------- helpers


def _listed_path_problem(relpath: str) -> tuple[type[BundleError], str] | None:
    """Why a listed path is refused (error class, reason), or ``None`` if it is fine."""
    if not relpath:
        return BundlePathError, "an empty path"
    if "\\" in relpath:
        return BundlePathError, "a backslash; bundle paths are POSIX paths with '/'"
    if relpath.startswith("/") or re.match(r"[A-Za-z]:", relpath):
        return BundlePathError, "an absolute path; bundle paths are relative to the bundle"
    parts = relpath.split("/")
    if ".." in parts:
        return BundlePathError, "a '..' component, which leaves the bundle"
    if any(part in ("", ".") for part in parts):
        return BundlePathError, "an empty or '.' component; write the normalised path"
    if not all(_PATH_PART.fullmatch(part) for part in parts):
        return BundlePathError, (
            "characters other than letters, digits, '.', '_', '-' or a component that "
            "starts with '.', '_' or '-'"
        )
    if relpath == MANIFEST_NAME:
        return BundlePathError, "the manifest cannot list itself"
    suffix = _suffix(relpath)
    if suffix in _PICKLE_SUFFIXES:
        return UnsafeBundleFileError, (
            f"a {suffix} file can hold pickles, and loading one can run code; bundles hold "
            "JSON, YAML, safetensors and documents only"
        )
    if suffix not in _ALLOWED_SUFFIXES:
        return UnsafeBundleFileError, (
            f"type {suffix or '(no extension)'!r} is not allowed; allowed: "
            f"{', '.join(sorted(_ALLOWED_SUFFIXES))}"
        )
    return None


def _is_count(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a non-negative integer (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _suffix(relpath: str) -> str:
    return PurePosixPath(relpath).suffix.lower()


def _strict_json(data: bytes) -> JsonValue:
    """Parse strict JSON: UTF-8, no NaN/Infinity, no duplicate keys.

    Raises
    ------
    ValueError
        Whatever makes it invalid (``UnicodeDecodeError`` and ``JSONDecodeError`` are
        both ``ValueError``).
    """

    def no_constants(name: str) -> JsonValue:
        raise ValueError(f"{name} is not JSON")

    def unique(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
        # Two values for one key: readers disagree on which wins; refuse the ambiguity.
        result: dict[str, JsonValue] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"key {key!r} appears twice")
            result[key] = value
        return result

    try:
        value: JsonValue = json.loads(
            data.decode("utf-8"), parse_constant=no_constants, object_pairs_hook=unique
        )
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    return value


def _json_problem(value: object, where: str) -> str | None:
    """Say where ``value`` holds something strict JSON cannot, or return ``None``."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return (
            None
            if math.isfinite(value)
            else f"{where} is {value!r}: JSON has no NaN or infinity (use null)"
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has key {key!r}: JSON object keys are strings"
            problem = _json_problem(item, f"{where}.{key}")
            if problem is not None:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None
    kind = type(value)
    return (
        f"{where} is a {kind.__module__}.{kind.__qualname__}, not a JSON type "
        "(convert it, e.g. with float(), int() or .tolist())"
    )


def _kind(value: object) -> str:
    """Describe a JSON value's type for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _open_nofollow(path: Path) -> io.BufferedReader:
    return os.fdopen(os.open(path, _OPEN_FLAGS), "rb")


def _read_nofollow(path: Path) -> bytes:
    with _open_nofollow(path) as handle:
        return handle.read()


def _raise(root: Path, problems: Sequence[Problem]) -> NoReturn:
    if not problems:  # pragma: no cover - callers pass at least one
        raise BundleError(f"bundle {root} cannot be loaded")
    first = problems[0]
    more = len(problems) - 1
    tail = (
        f" (and {more} more problem{'s' if more > 1 else ''}: "
        f"'onfh-dlr bundle verify {root}' lists them all)"
        if more
        else ""
    )
    raise first.error(
        f"bundle {root}: {first}{tail}",
        path=first.path,
        problems=tuple(str(problem) for problem in problems),
    )
