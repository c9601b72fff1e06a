"""The model bundle format (model_bundle.bundle): writing, verifying, loading, tampering."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save

import model_bundle.bundle as bundle_module
from model_bundle.bundle import (
    FORMAT_VERSION,
    LIBRARY_DISTRIBUTIONS,
    MANIFEST_NAME,
    Bundle,
    JsonValue,
    canonical_json,
    load_bundle,
    verify_bundle,
    write_bundle,
)
from onfh_dlr.errors import (
    BundleContentError,
    BundleError,
    BundleExtraFileError,
    BundleFileMissingError,
    BundleFileModifiedError,
    BundleFormatVersionError,
    BundleManifestError,
    BundlePathError,
    PermanentError,
    UnsafeBundleFileError,
)

BUNDLE_PACKAGE = Path(bundle_module.__file__).parent
PARAMS_YAML = Path(__file__).parents[1] / "model_bundle" / "resources" / "radiomics_params.yaml"
UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
WARNING = "synthetic demonstration — not for clinical use"

RAD = [
    "original_firstorder_Mean",
    "wavelet-LLH_glcm_Idmn",
    "log-sigma-3-0-mm-3D_gldm_DependenceEntropy",
]
DL = ["deep_pca_000", "deep_pca_001"]
DLR = [*RAD[:2], *DL]

Mutation = Callable[[dict[str, JsonValue]], None]


def _tensors() -> dict[str, np.ndarray]:
    return {
        "conv1.weight": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 10,
        "bn1.running_mean": np.zeros(2, dtype=np.float32),
        "bn1.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def _model_files(key: str, features: list[str], pca: bool) -> dict[str, bytes]:
    n = len(features)
    parts: dict[str, JsonValue] = {
        "scaler": {"mean": [0.5] * n, "scale": [2.0] * n},
        "selector": {"selected": [*features], "method": "mrmr+lasso"},
        "classifier": {"kind": "logistic_regression", "coef": [0.1] * n, "intercept": -0.2},
    }
    if pca:
        parts["pca"] = {"components": [[1.0, 0.0], [0.0, 1.0]], "mean": [0.0, 0.0]}
    return {f"models/{key}/{part}.json": canonical_json(value) for part, value in parts.items()}


def _files(tmp_path: Path) -> dict[str, bytes | Path]:
    # The weights come from a file, as training writes them (save_backbone), the rest
    # as bytes: write_bundle takes both.
    weights = tmp_path / "inputs" / "resnet18.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(save(_tensors(), metadata={"architecture": "resnet18"}))
    files: dict[str, bytes | Path] = {
        "resnet18.safetensors": weights,
        "radiomics_params.yaml": PARAMS_YAML.read_bytes(),
        "preprocessing.json": canonical_json(
            {"spacing_mm": [1.0, 1.0, 1.0], "normalize": "zscore"}
        ),
        "MODEL_CARD.md": f"# ONFH DLR (test)\n\n> {WARNING}\n\nIntended use: tests.\n".encode(),
        "report.html": b"<!doctype html><title>report</title><p>AUC 0.97</p>\n",
    }
    files.update(_model_files("rad", RAD, pca=False))
    files.update(_model_files("dl", DL, pca=True))
    files.update(_model_files("dlr", DLR, pca=True))
    return files


def _fields() -> dict[str, object]:
    def parts(key: str, pca: bool) -> dict[str, str]:
        names = ["scaler", "selector", "classifier", *(["pca"] if pca else [])]
        return {name: f"models/{key}/{name}.json" for name in names}

    return {
        "name": "onfh-dlr-test",
        "version": "0.1.0-test.1",
        "feature_names": {"rad": RAD, "dl": tuple(DL), "dlr": DLR},
        "models": {"rad": parts("rad", False), "dl": parts("dl", True), "dlr": parts("dlr", True)},
        "deployed_model": "dlr",
        "threshold": 0.42,
        "metrics": {
            "test": {"dlr": {"auc": 0.968, "auc_ci95": [0.909, 1.0], "n_hips": 45}},
            "train": {"dlr": {"auc": 0.99}},
        },
        "intended_use": "Tests of the bundle format only.",
        "synthetic": True,
        "not_for_clinical_use": True,
        "warning": WARNING,
    }


@pytest.fixture
def written(tmp_path: Path) -> Path:
    directory = tmp_path / "bundle"
    write_bundle(directory, _fields(), _files(tmp_path))
    return directory


def _manifest(directory: Path) -> dict[str, JsonValue]:
    loaded = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _rewrite_manifest(directory: Path, mutate: Mutation) -> None:
    manifest = _manifest(directory)
    mutate(manifest)
    (directory / MANIFEST_NAME).write_bytes(canonical_json(manifest))


def _relist(directory: Path, relpath: str) -> None:
    """Make the manifest vouch for a file's current bytes (a tamperer who also edits it)."""
    data = (directory / relpath).read_bytes()

    def mutate(manifest: dict[str, JsonValue]) -> None:
        files = manifest["files"]
        assert isinstance(files, dict)
        files[relpath] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    _rewrite_manifest(directory, mutate)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _refused(
    directory: Path, error: type[BundleError], relpath: str
) -> pytest.ExceptionInfo[BundleError]:
    """Assert load_bundle and verify_bundle both refuse the bundle over ``relpath``."""
    report = verify_bundle(directory)
    assert not report.ok
    assert report.summary is None
    assert report.problems[0].path == relpath, report.lines()
    assert report.problems[0].error is error, report.lines()
    with pytest.raises(error) as info:
        load_bundle(directory)
    assert info.value.path == relpath
    assert relpath in str(info.value)
    assert isinstance(info.value, PermanentError)
    return info


# --------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path, written: Path) -> None:
    bundle = load_bundle(written)
    assert isinstance(bundle, Bundle)
    assert bundle.directory == written.resolve()
    assert bundle.manifest.format_version == FORMAT_VERSION
    assert bundle.manifest.name == "onfh-dlr-test"
    assert bundle.manifest.version == "0.1.0-test.1"
    assert bundle.threshold == 0.42
    assert bundle.deployed_model == "dlr"
    assert bundle.is_synthetic and bundle.not_for_clinical_use
    assert bundle.warning == WARNING
    assert bundle.feature_names() == tuple(DLR)
    assert bundle.feature_names("rad") == tuple(RAD)
    assert bundle.feature_names("dl") == tuple(DL)  # written from a tuple, read as one
    assert bundle.manifest.metrics == _fields()["metrics"]
    assert bundle.manifest.created.utcoffset() is not None
    assert set(bundle.manifest.libraries) == {"python", *LIBRARY_DISTRIBUTIONS}

    # Every file comes back byte for byte; the typed accessors parse the safe formats.
    for relpath, content in _files(tmp_path).items():
        expected = content.read_bytes() if isinstance(content, Path) else content
        assert bundle.read_bytes(relpath) == expected
        assert bundle.path(relpath).read_bytes() == expected
    assert bundle.preprocessing() == {"normalize": "zscore", "spacing_mm": [1.0, 1.0, 1.0]}
    assert bundle.json("models/rad/classifier.json") == bundle.model_params("rad", "classifier")
    assert bundle.model_params("dl", "pca")["mean"] == [0.0, 0.0]
    with pytest.raises(KeyError, match="no 'pca'"):
        bundle.model_params("rad", "pca")
    with pytest.raises(KeyError, match="no model 'svm'"):
        bundle.feature_names("svm")
    loaded = load_file(bundle.weights_path)
    for name, tensor in _tensors().items():
        np.testing.assert_array_equal(loaded[name], tensor)
    assert bundle.yaml("radiomics_params.yaml") == yaml.safe_load(PARAMS_YAML.read_text())
    assert bundle.radiomics_params_path.name == "radiomics_params.yaml"
    assert bundle.model_card_path.read_text(encoding="utf-8").startswith("# ONFH DLR")
    assert bundle.manifest.as_dict() == _manifest(written)
    with pytest.raises(BundleFileMissingError, match=re.escape("lists no file 'nope.json'")):
        bundle.path("nope.json")


def test_thresholds_are_read_from_metrics_json_and_their_absence_is_refused(
    tmp_path: Path,
) -> None:
    def bundle_with(metrics: dict[str, object]) -> Bundle:
        files = _files(tmp_path) | {"metrics.json": canonical_json(metrics)}
        directory = tmp_path / f"bundle-{len(metrics)}"
        write_bundle(directory, _fields(), files)
        return load_bundle(directory)

    fixed = {"dlr": 0.42, "rad": 0.5, "dl": 0.3}
    assert bundle_with({"thresholds": fixed, "test": {}}).thresholds() == fixed
    with pytest.raises(BundleContentError, match="no per-model thresholds"):
        bundle_with({"test": {}}).thresholds()


def test_summary_and_clean_report(written: Path) -> None:
    bundle = load_bundle(written)
    summary = bundle.summary()
    assert list(summary)[:10] == [
        "name",
        "version",
        "device_uid",
        "created",
        "deployed_model",
        "threshold",
        "feature_counts",
        "synthetic",
        "not_for_clinical_use",
        "warning",
    ]
    assert summary["device_uid"] == bundle.device_uid
    assert summary["feature_counts"] == {"dl": 2, "dlr": 4, "rad": 3}
    assert summary["synthetic"] is True
    assert summary["files"] == len(_manifest(written)["files"])  # type: ignore[arg-type]
    json.dumps(summary)  # printable as JSON by the CLI
    report = verify_bundle(written)
    assert report.ok and report.problems == () and report.lines() == []
    assert report.summary == summary


def test_hashes_are_sha256_of_every_other_file(written: Path) -> None:
    files = _manifest(written)["files"]
    assert isinstance(files, dict)
    on_disk = sorted(p.relative_to(written).as_posix() for p in written.rglob("*") if p.is_file())
    assert sorted(files) == [p for p in on_disk if p != MANIFEST_NAME]
    assert list(files) == sorted(files)
    for relpath, entry in files.items():
        data = (written / relpath).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_manifest_text_is_stable(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_bundle(first, _fields(), _files(tmp_path))
    write_bundle(second, _fields(), _files(tmp_path))
    texts = [(d / MANIFEST_NAME).read_text(encoding="utf-8") for d in (first, second)]
    for text in texts:
        assert text.endswith("}\n")
        assert (
            text
            == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
        )
    uids = [load_bundle(d).device_uid for d in (first, second)]
    assert uids[0] != uids[1]

    def normalised(text: str, uid: str) -> str:
        text = text.replace(uid, "UID")
        return re.sub(r'"created": "[^"]+"', '"created": "T"', text)

    assert normalised(texts[0], uids[0]) == normalised(texts[1], uids[1])


def test_device_uid_is_a_new_valid_uid(tmp_path: Path) -> None:
    uids = []
    for name in ("one", "two"):
        bundle = write_bundle(tmp_path / name, _fields(), _files(tmp_path))
        assert UID.fullmatch(bundle.device_uid) and len(bundle.device_uid) <= 64
        uids.append(bundle.device_uid)
    assert uids[0] != uids[1]


def test_symlinked_bundle_directory_is_fine(written: Path, tmp_path: Path) -> None:
    # Deployments switch versions with a link (current -> v3); links *inside* are refused.
    current = tmp_path / "current"
    current.symlink_to(written, target_is_directory=True)
    assert load_bundle(current).directory == written.resolve()


# --------------------------------------------------------------------------- tampering


def test_one_byte_changed_in_json(written: Path) -> None:
    _flip_byte(written / "models/dlr/classifier.json", 10)
    info = _refused(written, BundleFileModifiedError, "models/dlr/classifier.json")
    assert "sha256" in str(info.value)


def test_one_byte_changed_in_weights(written: Path) -> None:
    path = written / "resnet18.safetensors"
    _flip_byte(path, path.stat().st_size - 1)
    _refused(written, BundleFileModifiedError, "resnet18.safetensors")


def test_truncated_file(written: Path) -> None:
    path = written / "resnet18.safetensors"
    path.write_bytes(path.read_bytes()[:-4])
    info = _refused(written, BundleFileModifiedError, "resnet18.safetensors")
    assert "truncated" in str(info.value)


def test_missing_file(written: Path) -> None:
    (written / "MODEL_CARD.md").unlink()
    info = _refused(written, BundleFileMissingError, "MODEL_CARD.md")
    assert "missing" in str(info.value)


def test_extra_file(written: Path) -> None:
    (written / "models" / "notes.txt").write_text("hello\n")
    info = _refused(written, BundleExtraFileError, "models/notes.txt")
    assert "not listed" in str(info.value)


def test_truncated_manifest(written: Path) -> None:
    path = written / MANIFEST_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    info = _refused(written, BundleManifestError, MANIFEST_NAME)
    assert "not valid JSON" in str(info.value)


def test_missing_manifest(written: Path) -> None:
    (written / MANIFEST_NAME).unlink()
    info = _refused(written, BundleManifestError, MANIFEST_NAME)
    assert "missing" in str(info.value)


def test_wrong_hash_in_manifest(written: Path) -> None:
    def mutate(manifest: dict[str, JsonValue]) -> None:
        files = manifest["files"]
        assert isinstance(files, dict)
        entry = files["preprocessing.json"]
        assert isinstance(entry, dict)
        entry["sha256"] = "0" * 64

    _rewrite_manifest(written, mutate)
    info = _refused(written, BundleFileModifiedError, "preprocessing.json")
    assert "0" * 64 in str(info.value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_renamed_to_json(written: Path, protocol: int) -> None:
    # A tamperer who swaps in a pickle and fixes the manifest's hash: integrity holds,
    # the content check does not.
    relpath = "models/dlr/classifier.json"
    (written / relpath).write_bytes(pickle.dumps({"coef": [0.1]}, protocol=protocol))
    _relist(written, relpath)
    info = _refused(written, UnsafeBundleFileError, relpath)
    assert f"pickle (protocol {protocol})" in str(info.value)


@pytest.mark.parametrize(
    ("relpath", "content", "described"),
    [
        ("preprocessing.json", b"PK\x03\x04" + b"\x00" * 40, "zip archive"),
        ("radiomics_params.yaml", b"\x93NUMPY\x01\x00v\x00{'descr': '|O'}", "NumPy array"),
        ("resnet18.safetensors", b"\x1f\x8b\x08\x00" + b"\x00" * 20, "gzip"),
        ("MODEL_CARD.md", b"\x78\x9c" + b"\x00" * 20, "zlib"),
    ],
)
def test_pickle_containers_sniffed(
    written: Path, relpath: str, content: bytes, described: str
) -> None:
    (written / relpath).write_bytes(content)
    _relist(written, relpath)
    info = _refused(written, UnsafeBundleFileError, relpath)
    assert described in str(info.value)


def test_protocol0_pickle_in_json_fails_parsing(written: Path) -> None:
    # Protocols 0/1 have no header to sniff; they are not JSON, so they fail as content.
    relpath = "preprocessing.json"
    (written / relpath).write_bytes(pickle.dumps({"a": 1}, protocol=0))
    _relist(written, relpath)
    _refused(written, BundleContentError, relpath)


def test_broken_safetensors_with_matching_hash(written: Path) -> None:
    relpath = "resnet18.safetensors"
    path = written / relpath
    path.write_bytes(path.read_bytes()[:-4])
    _relist(written, relpath)
    info = _refused(written, BundleContentError, relpath)
    assert "truncated" in str(info.value)


def test_json_parameters_must_be_objects(written: Path) -> None:
    relpath = "models/rad/scaler.json"
    (written / relpath).write_bytes(canonical_json([1, 2, 3]))
    _relist(written, relpath)
    info = _refused(written, BundleContentError, relpath)
    assert "JSON object" in str(info.value)


def test_symlink_escaping_the_bundle(written: Path, tmp_path: Path) -> None:
    # Same bytes, so the hash matches: the link itself is refused.
    relpath = "MODEL_CARD.md"
    outside = tmp_path / "elsewhere.md"
    outside.write_bytes((written / relpath).read_bytes())
    (written / relpath).unlink()
    (written / relpath).symlink_to(outside)
    info = _refused(written, BundlePathError, relpath)
    assert "outside the bundle" in str(info.value)


def test_symlinked_directory(written: Path, tmp_path: Path) -> None:
    outside = tmp_path / "rad"
    (written / "models" / "rad").rename(outside)
    (written / "models" / "rad").symlink_to(outside, target_is_directory=True)
    info = _refused(written, BundlePathError, "models/rad")
    assert "symbolic link" in str(info.value)
    # The files under it are reported too, pointing at the link.
    assert any("lies under 'models/rad'" in line for line in verify_bundle(written).lines())


def test_changed_after_load_is_refused_on_read(written: Path) -> None:
    bundle = load_bundle(written)
    _flip_byte(written / "preprocessing.json", 3)
    with pytest.raises(BundleFileModifiedError, match=r"preprocessing\.json"):
        bundle.preprocessing()


def test_every_problem_is_reported(written: Path) -> None:
    (written / "MODEL_CARD.md").unlink()
    (written / "extra.txt").write_text("x\n")
    _flip_byte(written / "preprocessing.json", 2)
    report = verify_bundle(written)
    assert {(p.path, p.error) for p in report.problems} == {
        ("extra.txt", BundleExtraFileError),
        ("MODEL_CARD.md", BundleFileMissingError),
        ("preprocessing.json", BundleFileModifiedError),
    }
    assert all(str(p).startswith(f"{p.path}: ") for p in report.problems)
    assert report.problems[0].as_dict()["error"] == "BundleExtraFileError"
    with pytest.raises(BundleError) as info:
        load_bundle(written)
    assert "2 more problems" in str(info.value)
    assert len(info.value.problems) == 3


def test_not_a_directory(tmp_path: Path) -> None:
    report = verify_bundle(tmp_path / "absent")
    assert not report.ok and report.problems[0].path is None
    with pytest.raises(BundleError):
        load_bundle(tmp_path / "absent")


# --------------------------------------------------------------------------- manifest schema


def _set(key: str, value: JsonValue) -> Mutation:
    def mutate(manifest: dict[str, JsonValue]) -> None:
        manifest[key] = value

    return mutate


def _delete(key: str) -> Mutation:
    def mutate(manifest: dict[str, JsonValue]) -> None:
        del manifest[key]

    return mutate


def _list_file(relpath: str) -> Mutation:
    def mutate(manifest: dict[str, JsonValue]) -> None:
        files = manifest["files"]
        assert isinstance(files, dict)
        files[relpath] = {"sha256": "a" * 64, "size": 1}

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (_delete("threshold"), BundleManifestError, "key 'threshold' is missing"),
        (_set("threshold", "0.5"), BundleManifestError, "'threshold' must be a number"),
        (_set("threshold", True), BundleManifestError, "'threshold' must be a number"),
        (_set("threshold", 1.5), BundleManifestError, "probability in [0, 1]"),
        (_set("treshold", 0.5), BundleManifestError, "'treshold' is not part of format_version"),
        (_set("format_version", 2), BundleFormatVersionError, "format_version 2 is not supported"),
        (_set("format_version", "1"), BundleManifestError, "must be an integer"),
        (_set("format", "other"), BundleManifestError, "not a model bundle manifest"),
        (_set("name", 7), BundleManifestError, "'name' must be a string"),
        (_set("name", "a\\b"), BundleManifestError, "DICOM LO"),
        (_set("version", "1.0"), BundleManifestError, "semantic version"),
        (_set("device_uid", "1.2.03"), BundleManifestError, "DICOM UID"),
        (_set("created", "2025-01-01T12:00:00+02:00"), BundleManifestError, "UTC ISO 8601"),
        (_set("created", "yesterday"), BundleManifestError, "UTC ISO 8601"),
        (_set("deployed_model", "svm"), BundleManifestError, "does not hold"),
        (_set("metrics", [1]), BundleManifestError, "'metrics' must be an object"),
        (_set("synthetic", "yes"), BundleManifestError, "'synthetic' must be true or false"),
        (_set("not_for_clinical_use", False), BundleManifestError, "not_for_clinical_use"),
        (_set("warning", ""), BundleManifestError, "'warning' must say why"),
        (_set("feature_names", {"rad": [*RAD]}), BundleManifestError, "same models"),
        (
            _set("feature_names", {"rad": [*RAD, RAD[0]], "dl": [*DL], "dlr": [*DLR]}),
            BundleManifestError,
            "repeats",
        ),
        (
            _set("feature_names", {"rad": [*RAD], "dl": [*DL], "svm": [*DLR]}),
            BundleManifestError,
            "unknown model",
        ),
        (
            _set("libraries", {"python": "3.11"}),
            BundleManifestError,
            "libraries['numpy'] is missing",
        ),
        (
            _set("references", {"weights": "resnet18.safetensors"}),
            BundleManifestError,
            "references['model_card'] is missing",
        ),
        (_set("files", []), BundleManifestError, "'files' must be an object"),
        (_list_file("../outside.json"), BundlePathError, "'../outside.json': a '..' component"),
        (_list_file("/etc/passwd.json"), BundlePathError, "absolute path"),
        (_list_file("models/./x.json"), BundlePathError, "'.' component"),
        (_list_file("models\\x.json"), BundlePathError, "backslash"),
        (_list_file("model.pkl"), UnsafeBundleFileError, "can hold pickles"),
        (_list_file("model.exe"), UnsafeBundleFileError, "not allowed"),
        (_list_file("REPORT.HTML"), BundlePathError, "differ only in case"),
    ],
)
def test_manifest_schema(
    written: Path, mutate: Mutation, error: type[BundleError], message: str
) -> None:
    _rewrite_manifest(written, mutate)
    report = verify_bundle(written)
    assert any(p.error is error and message in p.message for p in report.problems), report.lines()
    with pytest.raises(BundleError) as info:
        load_bundle(written)
    assert isinstance(info.value, BundleError)
    assert any(message in line for line in info.value.problems)


def test_manifest_schema_first_error_class(written: Path) -> None:
    _rewrite_manifest(written, _set("format_version", 99))
    with pytest.raises(BundleFormatVersionError, match="upgrade"):
        load_bundle(written)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "onfh-dlr-bundle", "format": "x"}', "appears twice"),
        ('{"format": NaN}', "NaN is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ("\ufeff{}", "not valid JSON"),
    ],
)
def test_manifest_strict_json(written: Path, text: str, message: str) -> None:
    (written / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(BundleManifestError, match=re.escape(message)):
        load_bundle(written)


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    "relpath",
    ["../evil.json", "a/../../evil.json", "/tmp/evil.json", "./evil.json", ".hidden.json"],
)
def test_writer_refuses_unsafe_paths(tmp_path: Path, relpath: str) -> None:
    files = _files(tmp_path)
    files[relpath] = b"{}"
    with pytest.raises(BundlePathError, match=re.escape(repr(relpath))):
        write_bundle(tmp_path / "bundle", _fields(), files)
    assert not (tmp_path / "evil.json").exists()
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    "relpath", ["model.pkl", "model.pickle", "model.pt", "model.pth", "model.joblib", "x.npy"]
)
def test_writer_refuses_pickle_extensions(tmp_path: Path, relpath: str) -> None:
    files = _files(tmp_path)
    files[relpath] = b"\x00"
    with pytest.raises(UnsafeBundleFileError, match="pickles"):
        write_bundle(tmp_path / "bundle", _fields(), files)


def test_writer_refuses_pickle_content(tmp_path: Path) -> None:
    # A torch.save-style zip (holding data.pkl) and a plain pickle, both named .json.
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
    for content in (archive.getvalue(), pickle.dumps({"w": 1}, protocol=4)):
        files = _files(tmp_path)
        files["models/dlr/classifier.json"] = content
        with pytest.raises(UnsafeBundleFileError, match=r"models/dlr/classifier\.json"):
            write_bundle(tmp_path / "bundle", _fields(), files)
    # Nothing half-written is left: no bundle, no staging directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_writer_refuses_a_non_empty_target(written: Path, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        write_bundle(written, _fields(), _files(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_bundle(empty, _fields(), _files(tmp_path)).directory == empty.resolve()


def test_writer_checks_fields(tmp_path: Path) -> None:
    def attempt(fields: dict[str, object], message: str) -> None:
        with pytest.raises(BundleManifestError, match=re.escape(message)):
            write_bundle(tmp_path / "bundle", fields, _files(tmp_path))
        assert not (tmp_path / "bundle").exists()

    attempt({**_fields(), "device_uid": "1.2.3"}, "computes device_uid")
    attempt({k: v for k, v in _fields().items() if k != "threshold"}, "missing threshold")
    attempt({**_fields(), "metrics": {"auc": float("nan")}}, "manifest.metrics.auc is nan")
    attempt({**_fields(), "metrics": {"n": np.int64(3)}}, "numpy.int64, not a JSON type")
    attempt({**_fields(), "threshold": 2.0}, "probability in [0, 1]")
    files = _files(tmp_path)
    del files["MODEL_CARD.md"]
    with pytest.raises(
        BundleManifestError, match=re.escape("'MODEL_CARD.md', which 'files' does not list")
    ):
        write_bundle(tmp_path / "bundle", _fields(), files)


def test_writer_refuses_the_manifest_as_a_file(tmp_path: Path) -> None:
    files = _files(tmp_path)
    files[MANIFEST_NAME] = b"{}"
    with pytest.raises(BundlePathError, match="written by write_bundle"):
        write_bundle(tmp_path / "bundle", _fields(), files)


def test_bundle_files_are_readable_by_others(written: Path) -> None:
    # mkstemp/mkdtemp create private entries; the service reads bundles as another user.
    assert (written.stat().st_mode & 0o777) == 0o755
    for path in written.rglob("*"):
        if path.is_file():
            assert (path.stat().st_mode & 0o444) == 0o444, path


# --------------------------------------------------------------------------- no pickle


#: Modules that unpickle or run code; the bundle package must import none of them (numpy and torch
#: because importing them imports pickle).
_FORBIDDEN_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
    "torch",
    "numpy",
}
#: Calls that deserialise with code execution (or evaluate text); none may appear.
_FORBIDDEN_CALLS = {
    "load",
    "loads",
    "unsafe_load",
    "full_load",
    "eval",
    "exec",
    "compile",
    "__import__",
}


@pytest.mark.parametrize("module", sorted(BUNDLE_PACKAGE.glob("*.py")), ids=lambda path: path.name)
def test_bundle_package_imports_no_pickle(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & _FORBIDDEN_MODULES
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _FORBIDDEN_CALLS:
            # json.loads and re.compile are the allowed calls of those names.
            assert ast.unparse(func) in {"json.loads", "re.compile"}, ast.unparse(node)


def test_loading_a_bundle_imports_no_pickle(written: Path) -> None:
    # In a fresh interpreter: the bundle package imported (model_bundle's own __init__
    # imports its names lazily, so it pulls in nothing), then a whole bundle verified and read.
    code = f"""
import sys
import model_bundle.bundle as module
bundle = module.load_bundle({str(written)!r})
bundle.preprocessing()
bundle.model_params("dlr", "classifier")
bundle.yaml("radiomics_params.yaml")
assert module.verify_bundle({str(written)!r}).ok
print(sorted(m for m in ("pickle", "_pickle", "numpy", "torch") if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
