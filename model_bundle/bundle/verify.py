"""The checks on a bundle directory: every listed path and file (present, regular, same size
and sha256), no unlisted file, no symbolic link, and each file's content against its type.
:func:`~model_bundle.bundle.verify_bundle` and :func:`~model_bundle.bundle.load_bundle`
run them (:func:`_verify`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import yaml

from model_bundle.bundle.format import (
    _JSON_SUFFIXES,
    _MAX_SAFETENSORS_HEADER,
    _PICKLE_HEADER,
    _SAFETENSORS_DTYPE_BYTES,
    _SAFETENSORS_SUFFIXES,
    _SNIFF_BYTES,
    _TEXT_SUFFIXES,
    _UNSAFE_SIGNATURES,
    _YAML_SUFFIXES,
    MANIFEST_NAME,
    FileEntry,
    Problem,
    _is_count,
    _kind,
    _open_nofollow,
    _os_reason,
    _strict_json,
    _suffix,
)
from model_bundle.bundle.manifest import Manifest, _ManifestParser, _read_manifest
from onfh_dlr.errors import (
    BundleContentError,
    BundleError,
    BundleExtraFileError,
    BundleFileMissingError,
    BundleFileModifiedError,
    BundleIntegrityError,
    BundlePathError,
    UnsafeBundleFileError,
)

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
