"""Writing a bundle atomically: :func:`write_bundle` writes every file into a staging
directory next to the target (each to a temporary name, fsync'ed, then renamed), the
manifest last, verifies the result with the loader's own checks, and only then renames
the staging directory onto the target. Also :func:`canonical_json` and the library
versions a manifest records.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from model_bundle.bundle.format import (
    _CALLER_KEYS,
    _COMPUTED_KEYS,
    _OPTIONAL_KEYS,
    DEFAULT_REFERENCES,
    FORMAT,
    FORMAT_VERSION,
    LIBRARY_DISTRIBUTIONS,
    MANIFEST_NAME,
    FileEntry,
    JsonValue,
    _iso_utc,
    _json_problem,
    _listed_path_problem,
    _raise,
)
from model_bundle.bundle.manifest import _ManifestParser
from model_bundle.bundle.reader import Bundle, load_bundle
from model_bundle.bundle.verify import _verify
from onfh_dlr.errors import (
    BundleManifestError,
    BundlePathError,
)


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
        ``references`` (default :data:`DEFAULT_REFERENCES`) and ``calibration``
        (:meth:`CalibrationLineage.as_dict`, a site-calibrated bundle only). ``format``,
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
    unknown = sorted(fields.keys() - _CALLER_KEYS - _OPTIONAL_KEYS)
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
