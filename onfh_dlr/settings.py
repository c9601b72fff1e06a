"""One typed Settings object for every entry point.

Built once per process (from ``ONFH_*`` environment variables and an optional
YAML file) and passed down; library code never reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    SettingsConfigDict,
)

from onfh_dlr.errors import ConfigurationError

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")  # a DNS name or IPv4


class Transport(StrEnum):
    """How DICOM objects move between the service and a peer."""

    DIMSE = "dimse"  # C-STORE over a DICOM association
    STOW_RS = "stow-rs"  # DICOMweb STOW-RS over HTTP(S)


class Destination(BaseModel):
    """A peer that results are sent to.

    Written ``AE@host:port`` (C-STORE) or ``stow+http://host:port/path`` /
    ``stow+https://host/path`` (STOW-RS to ``<url>/studies``). The bearer token of STOW-RS
    destinations is a separate setting (``dicomweb_destination_token``), never part of the
    destination: destinations appear in logs, metrics and the state DB.
    """

    transport: Transport = Transport.DIMSE
    ae_title: str = ""  # DIMSE only
    host: str
    port: int = Field(ge=1, le=65535)
    url: str = ""  # STOW-RS only: the DICOMweb root, http(s)://host:port/path

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@host:port`` or ``stow+http(s)://host[:port][/path]``."""
        text = text.strip()
        if text.lower().startswith("stow+"):
            return cls._parse_stow(text)
        match = re.fullmatch(r"([^@]+)@([^:@]+):(\d+)", text)
        if match is None:
            raise ValueError(
                f"destination {text!r} is not of the form AE@host:port or stow+http(s)://host/path"
            )
        ae, host, port = match.groups()
        if not _AE_RE.match(ae.strip()):
            raise ValueError(f"destination AE title {ae!r} is not a valid DICOM AE title")
        return cls(ae_title=ae.strip(), host=host, port=int(port))

    @classmethod
    def _parse_stow(cls, text: str) -> Destination:
        url = text[len("stow+") :]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"destination {text!r}: stow+http://... or stow+https://... expected")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(
                f"destination {text!r}: no credentials, query or fragment in a STOW-RS "
                "destination (the token is dicomweb_destination_token)"
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValueError(f"destination {text!r}: {exc}") from None
        root = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        return cls(transport=Transport.STOW_RS, host=parts.hostname, port=port, url=root)

    def __str__(self) -> str:
        if self.transport is Transport.STOW_RS:
            return f"stow+{self.url}"
        return f"{self.ae_title}@{self.host}:{self.port}"


class OutputKind(StrEnum):
    """A kind of object the worker delivers for a job."""

    SR = "sr"  # the TID 1500 report (references the SEG when the hips were scored)
    SEG = "seg"  # the segmentation of the ROIs used
    CARD = "card"  # the result card (Secondary Capture), for viewers without SR
    PDF = "pdf"  # the result card as Encapsulated PDF; only where configured (opt-in)


#: What a destination not named in ``ONFH_DESTINATION_OBJECTS`` receives.
ALL_OUTPUT_KINDS: frozenset[OutputKind] = frozenset(OutputKind) - {OutputKind.PDF}


def parse_destination_objects(value: Any) -> Any:
    """``PACS=sr+seg+card,VIEWER=card`` -> ``{"PACS": {SR, SEG, CARD}, "VIEWER": {CARD}}``.

    A mapping (from a YAML file) may give the kinds as a ``+``-joined string or a list.
    The SR and the SEG go together: the SR references the SEG's segments, and a PACS
    holding one without the other has a report pointing at nothing.
    """
    if isinstance(value, str):
        entries: dict[str, Any] = {}
        for part in _split_commas(value):
            name, sep, kinds = part.partition("=")
            if not sep:
                raise ValueError(f"destination objects {part!r} is not of the form AE=sr+seg+card")
            entries[name.strip()] = kinds
        value = entries
    if not isinstance(value, dict):
        return value
    out: dict[str, frozenset[OutputKind]] = {}
    for name, kinds in value.items():
        if not (_AE_RE.match(str(name)) or _HOST_RE.match(str(name))):
            raise ValueError(
                f"destination objects: {name!r} is neither a DICOM AE title nor a host name"
            )
        words = kinds.split("+") if isinstance(kinds, str) else list(kinds)
        try:
            parsed = frozenset(OutputKind(str(w).strip().lower()) for w in words if str(w).strip())
        except ValueError:
            known = "+".join(k.value for k in OutputKind)
            raise ValueError(
                f"destination objects of {name}: {kinds!r} is not a +-joined subset of {known}"
            ) from None
        if not parsed:
            raise ValueError(f"destination objects of {name}: no object kind given")
        if (OutputKind.SR in parsed) != (OutputKind.SEG in parsed):
            raise ValueError(
                f"destination objects of {name}: sr and seg go together (the SR references the SEG)"
            )
        out[str(name)] = parsed
    return out


# Settings that name files or directories; made absolute where Settings is built.
PATH_FIELDS = (
    "data_dir",
    "bundle",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "admission_rules",
    "status_token_file",
)


def absolute_path(path: Path, base: Path | None = None) -> Path:
    """``path`` made absolute against ``base`` (default: the working directory), ``~`` expanded.

    Normalised (``..`` removed) but symlinks are kept, so that a data directory on a
    symlinked volume is still named as the administrator wrote it.
    """
    path = path.expanduser()
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return Path(os.path.normpath(path))


def absolute_database_url(url: str, base: Path | None = None) -> str:
    """A SQLite URL with a relative file path made absolute; any other URL unchanged.

    Raises
    ------
    ValueError
        If ``url`` is not a database URL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"database URL is not a valid SQLAlchemy URL: {exc}") from None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return url
    if parsed.database.startswith("file:"):  # a URI filename: SQLite resolves it itself
        return url
    database = absolute_path(Path(parsed.database), base)
    return parsed.set(database=str(database)).render_as_string(hide_password=False)


def _split_commas(value: Any) -> Any:
    # PACS administrators write lists as MODALITY1,PACS; YAML files may give a real list.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Settings of an onfh-dlr process (environment prefix ``ONFH_``)."""

    model_config = SettingsConfigDict(env_prefix="ONFH_", extra="forbid")

    data_dir: Path = Path("data")
    ae_title: str = "ONFH_DLR"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=1, le=65535)
    allowed_calling_aes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    destinations: Annotated[list[Destination], NoDecode] = Field(default_factory=list)
    # Which objects each destination (by AE title) receives; unlisted ones get all.
    destination_objects: Annotated[dict[str, frozenset[OutputKind]], NoDecode] = Field(
        default_factory=dict
    )
    broker_url: str | None = None
    database_url: str | None = None
    bundle: Path | None = None
    series_timeout: float = Field(default=30.0, gt=0)
    # HTTP: metrics, health and (listener) the status page; None turns the server off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    http_host: str = "0.0.0.0"
    admin_token: str | None = None  # required by the status page's retry action
    # Who may read the status page: a bearer token, or a sign-in with it that sets an
    # HMAC-signed session cookie. Given as a value or as a file holding it (a mounted
    # Kubernetes/compose secret); neither = the status page answers 401 to everyone.
    status_token: str | None = None
    status_token_file: Path | None = None
    status_session_hours: float = Field(default=12.0, gt=0)  # how long a sign-in lasts
    retention_days: float | None = Field(default=None, gt=0)  # purge delivered data after
    # Listener: who may send, over what.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    admission_rules: Path | None = None  # YAML; unset = the built-in coronal T2-FS rules
    # A series the rules refuse still gets a "could not analyse: <reason>" SR and card.
    report_skipped: bool = False
    # Queue: how jobs move and how hard results are pushed to the destinations.
    worker_concurrency: int = Field(default=1, ge=1)
    # Hips of one study scored at once, each in a thread of the pool process: with one
    # study in flight the second core scores the other hip (shorter time to the SR).
    hip_workers: int = Field(default=2, ge=1, le=2)
    visibility_timeout: float = Field(default=900.0, gt=0)
    sweep_interval: float = Field(default=10.0, gt=0)
    requeue_after: float = Field(default=900.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)  # a job whose worker dies this often fails
    delivery_retries: int = Field(default=10, ge=0)
    delivery_backoff: float = Field(default=2.0, gt=0)
    delivery_backoff_max: float = Field(default=60.0, gt=0)
    # DICOMweb: STOW-RS in on its own port (off without a token; TLS as DICOM TLS), and
    # the bearer token sent to stow+http(s):// destinations.
    dicomweb_port: int = Field(default=8180, ge=1, le=65535)
    dicomweb_token: str | None = None
    dicomweb_max_request: int = Field(default=512 * 1024 * 1024, ge=1024)  # bytes per request
    dicomweb_destination_token: str | None = None
    # --- drift (issue 15): the rolling window of scored hips the drift score reads ---
    drift_window: int = Field(default=50, ge=2)  # the last N hips of the deployed bundle
    drift_min_hips: int = Field(default=20, ge=2)  # fewer: "not enough data", no score
    # --- end of drift ---
    log_level: str = "INFO"
    log_json: bool = False
    # --- shadow bundles (issue 15 item 5) ---
    # Candidate bundles the worker also scores every study with, silently: their calls
    # are recorded beside the deployed one's and never delivered (worker.shadow).
    shadow_bundles: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # --- end of shadow bundles ---

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        # Every component (Redis, which changes into its own directory; Celery; SQLite;
        # spool; outputs; paths recorded in the state DB and read by another process)
        # must name the same files whatever its working directory: make them absolute
        # once, here, against the working directory of the process that builds them.
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                setattr(self, name, absolute_path(value))
        if self.database_url is not None:
            self.database_url = absolute_database_url(self.database_url)
        # A list of paths, so not in PATH_FIELDS (which holds single paths).
        self.shadow_bundles = [
            p if p.is_absolute() else absolute_path(p) for p in self.shadow_bundles
        ]
        return self

    @field_validator("ae_title")
    @classmethod
    def _valid_ae(cls, value: str) -> str:
        if not _AE_RE.match(value):
            raise ValueError(f"{value!r} is not a valid DICOM AE title")
        return value

    @field_validator("allowed_calling_aes", "allowed_hosts", "shadow_bundles", mode="before")
    @classmethod
    def _split_aes(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("destination_objects", mode="before")
    @classmethod
    def _parse_destination_objects(cls, value: Any) -> Any:
        return parse_destination_objects(value)

    def objects_for(self, destination: Destination) -> frozenset[OutputKind]:
        """The kinds of object ``destination`` receives (all unless configured).

        A C-STORE destination is named by its AE title, a STOW-RS one by its host.
        """
        name = (
            destination.ae_title if destination.transport is Transport.DIMSE else destination.host
        )
        return self.destination_objects.get(name, ALL_OUTPUT_KINDS)

    @field_validator("destinations", mode="before")
    @classmethod
    def _parse_destinations(cls, value: Any) -> Any:
        value = _split_commas(value)
        if isinstance(value, list):
            return [Destination.parse(v) if isinstance(v, str) else v for v in value]
        return value


def load_settings(config: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build the Settings of one process.

    Parameters
    ----------
    config
        Optional YAML file whose keys are the field names (``data_dir``, ``port``...).
    environ
        The environment to read ``ONFH_*`` variables from (the entry point passes
        ``os.environ``); ``None`` reads nothing but the file and defaults.

    Raises
    ------
    ConfigurationError
        If the file cannot be read or a value is invalid.
    """
    values: dict[str, Any] = {}
    if environ is not None and config is None and environ.get("ONFH_CONFIG"):
        config = Path(environ["ONFH_CONFIG"])
    if config is not None:
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read configuration file {config}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"configuration file {config} must hold a mapping")
        values.update(_relative_to(loaded, absolute_path(config)))
    env = {k: v for k, v in (environ or {}).items() if k.startswith("ONFH_") and k != "ONFH_CONFIG"}
    try:
        return _settings_from(env, values)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {exc}") from exc


def _relative_to(values: dict[str, Any], config: Path) -> dict[str, Any]:
    """A configuration file's values with its relative paths made relative to the file.

    Paths written in a YAML file mean what they say next to that file (as in Compose
    files), whichever directory the service is started from.
    """
    base = config.parent
    resolved = dict(values)
    for name in PATH_FIELDS:
        if isinstance(resolved.get(name), str):
            resolved[name] = absolute_path(Path(resolved[name]), base)
    if isinstance(resolved.get("shadow_bundles"), list | str):
        resolved["shadow_bundles"] = [
            absolute_path(Path(p), base) for p in _split_commas(resolved["shadow_bundles"])
        ]
    if isinstance(resolved.get("database_url"), str):
        try:
            resolved["database_url"] = absolute_database_url(resolved["database_url"], base)
        except ValueError as exc:
            raise ConfigurationError(f"invalid database_url in {config}: {exc}") from exc
    return resolved


def _settings_from(env: dict[str, str], values: dict[str, Any]) -> Settings:
    # pydantic-settings reads os.environ itself; feed it the given mapping instead so that
    # the caller decides what the environment is (and tests need not patch os.environ).
    # The environment overrides the file, as it does for Orthanc and most services.
    merged: dict[str, Any] = dict(values)
    for key, value in env.items():
        name = key.removeprefix("ONFH_").lower()
        if name in Settings.model_fields:
            merged[name] = value
        else:
            raise ConfigurationError(f"unknown setting {key}")
    return Settings.model_validate(merged)


__all__ = [
    "ALL_OUTPUT_KINDS",
    "PATH_FIELDS",
    "Destination",
    "OutputKind",
    "Settings",
    "Transport",
    "absolute_database_url",
    "absolute_path",
    "load_settings",
    "parse_destination_objects",
]
