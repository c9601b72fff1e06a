"""The bundle format: its constants (format name and version, file kinds, limits, the
signatures of unsafe content), the value types shared by reading, verifying and writing
(:class:`FileEntry`, :class:`Problem`, :class:`VerifyReport`), and the low-level helpers
they share (strict JSON, paths, no-follow reads).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Final, NoReturn, TypeAlias, TypeGuard, TypeVar

from onfh_dlr.errors import (
    BundleError,
    BundlePathError,
    UnsafeBundleFileError,
)

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
#: Every required key of a format_version 1 manifest.
_MANIFEST_KEYS: Final = _COMPUTED_KEYS | _CALLER_KEYS
#: Keys only some bundles have: ``calibration`` (a site-calibrated bundle's lineage and
#: recalibration file) and ``reference_statistics`` (the path of ``reference.json``,
#: which bundles written before issue 15 lack). A reader that does not know a key
#: refuses the bundle, which is what an older onfh-dlr must do with a calibrated one
#: (serving it uncalibrated would be wrong), so an optional key needs no format_version
#: bump of its own.
_OPTIONAL_KEYS: Final = frozenset({"calibration", "reference_statistics"})
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
class CalibrationLineage:
    """The manifest's ``calibration`` key: where a site-calibrated bundle came from.

    Attributes
    ----------
    parent_device_uid
        The Device UID of the bundle that was recalibrated.
    parent_manifest_sha256
        sha256 of the parent's ``manifest.json`` bytes (which pins every parent file).
    parameters
        Bundle-relative path of the recalibration parameters (a listed ``.json`` file).
    cohort_patients, cohort_hips
        Size of the local cohort the recalibration was fitted on (hips scored).
    """

    parent_device_uid: str
    parent_manifest_sha256: str
    parameters: str
    cohort_patients: int
    cohort_hips: int

    def as_dict(self) -> dict[str, JsonValue]:
        """The manifest's JSON object for this key."""
        return {
            "cohort_hips": self.cohort_hips,
            "cohort_patients": self.cohort_patients,
            "parameters": self.parameters,
            "parent_device_uid": self.parent_device_uid,
            "parent_manifest_sha256": self.parent_manifest_sha256,
        }


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
