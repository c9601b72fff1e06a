"""A verified bundle, read: :func:`load_bundle` verifies everything before it reads anything
but the manifest, and the :class:`Bundle` it returns reads the listed files (JSON, YAML,
safetensors) without running any code from them. :func:`verify_bundle` runs the same
checks and returns every problem instead of raising the first one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from model_bundle.bundle.format import (
    _JSON_SUFFIXES,
    _YAML_SUFFIXES,
    FileEntry,
    JsonValue,
    VerifyReport,
    _iso_utc,
    _os_reason,
    _raise,
    _read_nofollow,
    _strict_json,
    _suffix,
)
from model_bundle.bundle.manifest import Manifest
from model_bundle.bundle.reference import ReferenceFormatError, ReferenceStatistics
from model_bundle.bundle.verify import _verify
from onfh_dlr.errors import (
    BundleContentError,
    BundleFileMissingError,
    BundleFileModifiedError,
)

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
        """The PyRadiomics parameter file (for :func:`model_bundle.features.load_params`)."""
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

    def thresholds(self) -> dict[str, float]:
        """Each model's fixed threshold (``metrics.json`` ``thresholds``), as ``evaluate``,
        ``calibrate`` and the benches apply them.

        Raises
        ------
        onfh_dlr.errors.BundleContentError
            ``metrics.json`` holds no per-model thresholds.
        """
        recorded = self.json("metrics.json")
        raw = recorded.get("thresholds") if isinstance(recorded, dict) else None
        if not isinstance(raw, dict):
            raise BundleContentError(
                f"bundle {self._directory}: metrics.json has no per-model thresholds",
                path="metrics.json",
            )
        return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}

    def recalibration(self) -> dict[str, JsonValue] | None:
        """Return a site-calibrated bundle's recalibration parameters; ``None`` otherwise."""
        lineage = self._manifest.calibration
        return None if lineage is None else self._json_object(lineage.parameters)

    def reference(self) -> ReferenceStatistics | None:
        """Return the reference statistics of the model's inputs and output.

        Returns
        -------
        ReferenceStatistics or None
            ``None`` for a bundle without them (written before they existed, like the
            shipped demo bundle until it is retrained): its studies are scored, and the
            input checks report that there is no reference.

        Raises
        ------
        onfh_dlr.errors.BundleContentError
            The file does not hold reference statistics of the known schema.
        """
        relpath = self._manifest.reference_statistics
        if relpath is None:
            return None
        try:
            return ReferenceStatistics.from_json(self._json_object(relpath))
        except ReferenceFormatError as exc:
            raise BundleContentError(
                f"bundle {self._directory}: {relpath}: {exc}", path=relpath
            ) from exc

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
