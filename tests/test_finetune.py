"""Fine-tuning the ResNet18 backbone: it learns, deterministically, and saves cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model_bundle.features import build_resnet18, deep_features, save_backbone
from model_bundle.training import FineTuneConfig, fine_tune
from onfh_dlr.errors import ConfigurationError


def _toy(n: int = 24, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Noise images; class 1 has a bright disc in the upper half (like a dome lesion)."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, size=(n, 3, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    rr, cc = np.mgrid[:size, :size]
    disc = ((rr - size * 0.3) ** 2 + (cc - size * 0.5) ** 2) < (size * 0.15) ** 2
    x[y == 1] += 2.5 * disc
    return x, y


CONFIG = FineTuneConfig(epochs=6, batch_size=8, learning_rate=0.01, seed=1, threads=1)


def test_fine_tuning_learns_the_training_task() -> None:
    x, y = _toy()
    model = build_resnet18(seed=0)
    result = fine_tune(model, x, y, CONFIG)
    assert len(result.losses) == CONFIG.epochs
    assert result.losses[-1] < result.losses[0]
    assert result.accuracies[-1] >= 0.75
    assert not model.training  # left ready for feature extraction


def test_fine_tuning_is_deterministic_for_a_seed_and_changes_the_backbone(tmp_path: Path) -> None:
    x, y = _toy()
    before = deep_features(build_resnet18(seed=0), x[:4], num_threads=1)
    a, b = build_resnet18(seed=0), build_resnet18(seed=0)
    fine_tune(a, x, y, CONFIG)
    fine_tune(b, x, y, CONFIG)
    fa = deep_features(a, x[:4], num_threads=1)
    fb = deep_features(b, x[:4], num_threads=1)
    assert np.array_equal(fa, fb)
    assert not np.allclose(fa, before)
    # The saved backbone (no head) reproduces the fine-tuned features exactly.
    save_backbone(a, tmp_path / "resnet18.safetensors")
    again = build_resnet18(tmp_path / "resnet18.safetensors")
    assert np.array_equal(deep_features(again, x[:4], num_threads=1), fa)


def test_fine_tuning_leaves_global_torch_state_alone() -> None:
    x, y = _toy(8)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fine_tune(build_resnet18(seed=0), x, y, FineTuneConfig(epochs=1, batch_size=4, threads=1))
    assert torch.equal(torch.rand(3), expected)


def test_fine_tuning_refuses_one_class_or_bad_shapes() -> None:
    x, y = _toy(8)
    with pytest.raises(ConfigurationError, match="both classes"):
        fine_tune(build_resnet18(), x, np.zeros(8, dtype=int), CONFIG)
    with pytest.raises(ConfigurationError, match="inputs"):
        fine_tune(build_resnet18(), x[:, 0], y, CONFIG)
