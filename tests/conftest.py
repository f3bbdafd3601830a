"""Shared fixtures: tiny image folders and a private image cache per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SIMSIAM_CACHE", str(tmp_path_factory.mktemp("cache")))
    # Every tensor in the tests is tiny: a second intra-op thread costs more than it
    # gives, and on a busy 2-core machine it makes the suite several times slower.
    torch.set_num_threads(1)
    yield
    mp.undo()


def write_class_folder(root, classes=("a", "b"), per_class=12, size=16, ext=".png", seed=0):
    """Class subfolders of small images whose colour depends on the class (so kNN can learn it)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.zeros((size, size, 3), dtype=np.float64)
            base[..., c % 3] = 200
            pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}{ext}")
    return root


@pytest.fixture
def class_folder(tmp_path):
    return write_class_folder(tmp_path / "images")


# A model and training setting small enough for a CPU test to run in seconds.
TINY = ["--backbone", "resnet10-slim", "--proj-dim", "64", "--pred-hidden-dim", "16", "--batch-size", "8", "--knn-k", "5", "--no-progress"]
