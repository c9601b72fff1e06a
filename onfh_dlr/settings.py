"""One typed Settings object for every entry point.

Built once per process (from ``ONFH_*`` environment variables and an optional
YAML file) and passed down; library code never reads ``os.environ``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    SettingsConfigDict,
)

from onfh_dlr.errors import ConfigurationError

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash


class Destination(BaseModel):
    """A DICOM peer that results are sent to, written ``AE@host:port``."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@host:port``."""
        match = re.fullmatch(r"\s*([^@]+)@([^:@]+):(\d+)\s*", text)
        if match is None:
            raise ValueError(f"destination {text!r} is not of the form AE@host:port")
        ae, host, port = match.groups()
        if not _AE_RE.match(ae.strip()):
            raise ValueError(f"destination AE title {ae!r} is not a valid DICOM AE title")
        return cls(ae_title=ae.strip(), host=host, port=int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


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
    broker_url: str | None = None
    database_url: str | None = None
    bundle: Path | None = None
    series_timeout: float = Field(default=30.0, gt=0)
    # HTTP: metrics, health and (listener) the status page; None turns the server off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    http_host: str = "0.0.0.0"
    admin_token: str | None = None  # required by the status page's retry action
    retention_days: float | None = Field(default=None, gt=0)  # purge delivered data after
    # Listener: who may send, over what.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    admission_rules: Path | None = None  # YAML; unset = the built-in coronal T2-FS rules
    # Queue: how jobs move and how hard results are pushed to the destinations.
    worker_concurrency: int = Field(default=1, ge=1)
    visibility_timeout: float = Field(default=900.0, gt=0)
    sweep_interval: float = Field(default=10.0, gt=0)
    requeue_after: float = Field(default=900.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)  # a job whose worker dies this often fails
    delivery_retries: int = Field(default=10, ge=0)
    delivery_backoff: float = Field(default=2.0, gt=0)
    delivery_backoff_max: float = Field(default=60.0, gt=0)
    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("ae_title")
    @classmethod
    def _valid_ae(cls, value: str) -> str:
        if not _AE_RE.match(value):
            raise ValueError(f"{value!r} is not a valid DICOM AE title")
        return value

    @field_validator("allowed_calling_aes", "allowed_hosts", mode="before")
    @classmethod
    def _split_aes(cls, value: Any) -> Any:
        return _split_commas(value)

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
        values.update(loaded)
    env = {k: v for k, v in (environ or {}).items() if k.startswith("ONFH_") and k != "ONFH_CONFIG"}
    try:
        return _settings_from(env, values)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {exc}") from exc


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


__all__ = ["Destination", "Settings", "load_settings"]
