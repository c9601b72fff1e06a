"""Settings: every path is absolute once the Settings object exists."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from onfh_dlr.errors import ConfigurationError
from onfh_dlr.settings import (
    ALL_OUTPUT_KINDS,
    PATH_FIELDS,
    OutputKind,
    Settings,
    load_settings,
)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """Run the test from a working directory of its own, as an administrator might."""
    work = tmp_path / "work"
    work.mkdir()
    before = Path.cwd()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(before)


def test_relative_paths_in_the_environment_resolve_against_the_working_directory(
    elsewhere: Path,
) -> None:
    settings = load_settings(
        environ={
            "ONFH_DATA_DIR": "../data",
            "ONFH_BUNDLE": "bundles/v2",
            "ONFH_TLS_CERT": "tls/cert.pem",
            "ONFH_TLS_KEY": "tls/key.pem",
            "ONFH_TLS_CA": "./tls/ca.pem",
            "ONFH_ADMISSION_RULES": "rules.yaml",
            "ONFH_STATUS_TOKEN_FILE": "secrets/status-token",
        }
    )
    assert settings.data_dir == elsewhere.parent / "data"
    assert settings.status_token_file == elsewhere / "secrets" / "status-token"
    assert settings.bundle == elsewhere / "bundles" / "v2"
    assert settings.tls_ca == elsewhere / "tls" / "ca.pem"
    assert settings.admission_rules == elsewhere / "rules.yaml"
    for name in PATH_FIELDS:
        assert getattr(settings, name).is_absolute(), name


def test_the_default_data_directory_is_absolute(elsewhere: Path) -> None:
    assert load_settings(environ={}).data_dir == elsewhere / "data"
    assert Settings().data_dir == elsewhere / "data"


def test_relative_paths_in_a_configuration_file_resolve_against_the_file(
    tmp_path: Path, elsewhere: Path
) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "onfh.yaml").write_text(
        "data_dir: ../srv/onfh\nbundle: bundle\ndatabase_url: sqlite:///state/onfh.db\n",
        encoding="utf-8",
    )
    settings = load_settings(Path("../etc/onfh.yaml"))
    assert settings.data_dir == tmp_path / "srv" / "onfh"
    assert settings.bundle == config_dir / "bundle"
    assert settings.database_url == f"sqlite:///{config_dir / 'state' / 'onfh.db'}"
    # ONFH_CONFIG names the file the same way; the environment still wins, against the cwd.
    settings = load_settings(environ={"ONFH_CONFIG": "../etc/onfh.yaml", "ONFH_DATA_DIR": "here"})
    assert settings.bundle == config_dir / "bundle"
    assert settings.data_dir == elsewhere / "here"


def test_a_relative_sqlite_url_becomes_absolute_and_other_urls_stay_as_written(
    elsewhere: Path,
) -> None:
    relative = load_settings(environ={"ONFH_DATABASE_URL": "sqlite:///state.db"})
    assert relative.database_url == f"sqlite:///{elsewhere / 'state.db'}"
    postgres = "postgresql+psycopg://onfh:secret@db:5432/onfh"
    assert load_settings(environ={"ONFH_DATABASE_URL": postgres}).database_url == postgres
    memory = "sqlite://"
    assert load_settings(environ={"ONFH_DATABASE_URL": memory}).database_url == memory
    absolute = "sqlite:////var/lib/onfh/state.db"
    assert load_settings(environ={"ONFH_DATABASE_URL": absolute}).database_url == absolute


def test_a_database_url_that_is_no_url_is_a_configuration_error(elsewhere: Path) -> None:
    with pytest.raises(ConfigurationError, match="database URL"):
        load_settings(environ={"ONFH_DATABASE_URL": "not a url"})


def test_destination_objects_parse_per_ae_title_and_unlisted_destinations_get_all() -> None:
    settings = load_settings(
        environ={
            "ONFH_DESTINATIONS": "PACS@pacs:104,WALL@wall:104,ARCHIVE@arch:104",
            "ONFH_DESTINATION_OBJECTS": "PACS = SR+seg , WALL=card",
        }
    )
    pacs, wall, archive = settings.destinations
    assert settings.objects_for(pacs) == {OutputKind.SR, OutputKind.SEG}
    assert settings.objects_for(wall) == {OutputKind.CARD}
    assert settings.objects_for(archive) == ALL_OUTPUT_KINDS


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("PACS=sr", "sr and seg go together"),
        ("PACS=sr+seg+xls", "not a \\+-joined subset"),
        ("PACS", "not of the form"),
        ("PACS=", "no object kind"),
    ],
)
def test_bad_destination_objects_are_configuration_errors(value: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        load_settings(environ={"ONFH_DESTINATION_OBJECTS": value})


def test_destination_objects_from_a_yaml_file_may_be_lists(tmp_path: Path) -> None:
    config = tmp_path / "onfh.yaml"
    config.write_text("destination_objects:\n  PACS: [sr, seg, card]\n  WALL: card\n")
    settings = load_settings(config)
    assert settings.destination_objects == {
        "PACS": ALL_OUTPUT_KINDS,
        "WALL": frozenset({OutputKind.CARD}),
    }


def test_destination_objects_name_a_stow_destination_by_its_host() -> None:
    from onfh_dlr.settings import ALL_OUTPUT_KINDS, OutputKind

    settings = load_settings(
        environ={
            "ONFH_DESTINATIONS": "PACS@pacs:104,stow+https://archive.example.org/dicomweb",
            "ONFH_DESTINATION_OBJECTS": "archive.example.org=card",
        }
    )
    pacs, archive = settings.destinations
    assert settings.objects_for(archive) == frozenset({OutputKind.CARD})
    assert settings.objects_for(pacs) == ALL_OUTPUT_KINDS
