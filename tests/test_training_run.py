"""Planning a training run (model_bundle.training.run): settings and input are checked
before anything is computed. The whole run is exercised by test_training's `onfh-dlr
train` fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_bundle.training import RoiProtocol, plan_training, read_train_config
from onfh_dlr.errors import ConfigurationError

COHORT_CSV = "PatientID,Side,Image,Mask,Label\np1,R,p1/mr,,1\np1,L,p1/mr,,0\n"


def _cohort(tmp_path: Path) -> Path:
    path = tmp_path / "cohort.csv"
    path.write_text(COHORT_CSV, encoding="utf-8")
    return path


def test_settings_come_from_the_yaml_file_and_pretrained_overrides_it(tmp_path: Path) -> None:
    settings = tmp_path / "train.yaml"
    settings.write_text("epochs: 2\npretrained: /nowhere.pth\n", encoding="utf-8")
    config = read_train_config(settings, pretrained=tmp_path / "resnet18.pth")
    assert config.epochs == 2
    assert config.pretrained == tmp_path / "resnet18.pth"


def test_without_a_settings_file_the_defaults_apply() -> None:
    assert read_train_config(None).epochs == 30


@pytest.mark.parametrize("text", ["epochs: [1\n", "- 1\n- 2\n", "epochs: -3\n"])
def test_invalid_settings_are_a_value_error(tmp_path: Path, text: str) -> None:
    settings = tmp_path / "train.yaml"
    settings.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError):
        read_train_config(settings)


def test_a_non_empty_output_directory_is_refused_before_training(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="exists and is not empty"):
        plan_training(_cohort(tmp_path), out, config=read_train_config(None))


def test_the_plan_groups_the_cohort_by_series_and_puts_the_cache_next_to_the_bundle(
    tmp_path: Path,
) -> None:
    plan = plan_training(
        _cohort(tmp_path),
        tmp_path / "bundle",
        config=read_train_config(None),
        roi_protocol=RoiProtocol.LESION,
    )
    assert len(plan.jobs) == 1
    assert len(plan.jobs[0].hips) == 2
    assert plan.cache == tmp_path / "bundle.cache"
    assert plan.roi_protocol is RoiProtocol.LESION


def test_several_cohorts_are_planned_together_with_each_csvs_paths_relative_to_itself(
    tmp_path: Path,
) -> None:
    first = _cohort(tmp_path)
    other = tmp_path / "site-b"
    other.mkdir()
    (other / "cohort.csv").write_text(COHORT_CSV.replace("p1", "p2"), encoding="utf-8")
    plan = plan_training(
        [first, other / "cohort.csv"], tmp_path / "bundle", config=read_train_config(None)
    )
    assert [job.image for job in plan.jobs] == [tmp_path / "p1/mr", other / "p2/mr"]


def test_a_patient_in_two_cohorts_is_refused_because_the_split_is_by_patient(
    tmp_path: Path,
) -> None:
    other = tmp_path / "again"
    other.mkdir()
    (other / "cohort.csv").write_text(COHORT_CSV, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="more than one series"):
        plan_training(
            [_cohort(tmp_path), other / "cohort.csv"],
            tmp_path / "b",
            config=read_train_config(None),
        )
