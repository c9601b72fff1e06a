"""The manifest (``manifest.json``): :class:`Manifest`, and the parser that checks a manifest
object against the schema and collects every problem instead of stopping at the first.
"""

from __future__ import annotations

import json
import math
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from model_bundle.bundle.format import (
    _LO_MAX,
    _MANIFEST_KEYS,
    _MAX_MANIFEST_BYTES,
    _OPTIONAL_KEYS,
    _REFERENCE_SUFFIXES,
    _SEMVER,
    _SHA256,
    _T,
    _UID,
    _UID_MAX,
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
    _iso_utc,
    _kind,
    _listed_path_problem,
    _os_reason,
    _read_nofollow,
    _strict_json,
    _suffix,
)
from onfh_dlr.errors import (
    BundleError,
    BundleFormatVersionError,
    BundleManifestError,
    BundlePathError,
)


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
    calibration
        A site-calibrated bundle's lineage and recalibration file; ``None`` otherwise.
    reference_statistics
        The relative path of the reference statistics (``reference.json``); ``None`` in
        bundles written before they existed.
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
    calibration: CalibrationLineage | None = None
    reference_statistics: str | None = None

    def as_dict(self) -> dict[str, JsonValue]:
        """Return the manifest as the JSON object it was read from."""
        calibration = {} if self.calibration is None else {"calibration": self.calibration}
        optional: dict[str, JsonValue] = {k: v.as_dict() for k, v in calibration.items()}
        if self.reference_statistics is not None:
            optional["reference_statistics"] = self.reference_statistics
        return optional | {
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
        for key in sorted(raw.keys() - _MANIFEST_KEYS - _OPTIONAL_KEYS):
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
        calibration = self._calibration()
        reference_statistics = self._reference_statistics()

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
            or (calibration is None and "calibration" in raw)
            or (reference_statistics is None and "reference_statistics" in raw)
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
            calibration=calibration,
            reference_statistics=reference_statistics,
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

    def _calibration(self) -> CalibrationLineage | None:
        if "calibration" not in self.raw:
            return None
        value = self._typed("calibration", dict, "an object")
        if value is None:
            return None
        expected = {
            "cohort_hips",
            "cohort_patients",
            "parameters",
            "parent_device_uid",
            "parent_manifest_sha256",
        }
        for key in sorted(expected - value.keys()):
            self.fail(f"calibration[{key!r}] is missing")
        for key in sorted(value.keys() - expected):
            self.fail(f"calibration[{key!r}]: unknown key")
        if value.keys() != expected:
            return None
        uid, digest = value["parent_device_uid"], value["parent_manifest_sha256"]
        ok = True
        if not (isinstance(uid, str) and len(uid) <= _UID_MAX and _UID.fullmatch(uid)):
            self.fail(f"calibration['parent_device_uid'] must be a DICOM UID, not {uid!r}")
            ok = False
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            self.fail("calibration['parent_manifest_sha256'] must be 64 lower-case hex digits")
            ok = False
        counts = {k: value[k] for k in ("cohort_patients", "cohort_hips")}
        for key, count in counts.items():
            if type(count) is not int or count < 1:
                self.fail(f"calibration[{key!r}] must be a positive integer, not {count!r}")
                ok = False
        parameters = self._listed_file("calibration['parameters']", value["parameters"], (".json",))
        if not ok or parameters is None:
            return None
        self.json_objects.add(parameters)
        assert isinstance(uid, str) and isinstance(digest, str)
        return CalibrationLineage(
            parent_device_uid=uid,
            parent_manifest_sha256=digest,
            parameters=parameters,
            cohort_patients=int(counts["cohort_patients"]),
            cohort_hips=int(counts["cohort_hips"]),
        )

    def _reference_statistics(self) -> str | None:
        if "reference_statistics" not in self.raw:
            return None
        listed = self._listed_file(
            "key 'reference_statistics'", self.raw["reference_statistics"], (".json",)
        )
        if listed is not None:
            self.json_objects.add(listed)
        return listed

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
