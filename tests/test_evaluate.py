"""Evaluation: kNN and the linear probe as pure functions, and the frozen-backbone guarantee."""

import pytest
import torch

from simsiam.data import DataError, ImageSet
from simsiam.errors import BackboneChangedError
from simsiam.evaluate import (
    align_labels,
    backbone_snapshot,
    check_unchanged,
    evaluate_encoder,
    feature_cache_key,
    features_of,
    knn_accuracy,
    linear_probe,
)
from simsiam.model import SimSiam


def clusters(n_per_class: int, num_classes: int = 5, dim: int = 32, spread: float = 0.3, seed: int = 0):
    """Gaussian clusters around fixed random unit centres: features (N, D) and labels (N,); seed draws the noise."""
    centres = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)), dim=1)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=g) / dim**0.5
    return feats, labels


def test_knn_separable_clusters_is_near_one():
    train, y_train = clusters(60, seed=0)
    test, y_test = clusters(40, seed=1)
    assert knn_accuracy(train, y_train, test, y_test, k=20, temperature=0.1) > 0.98


def shuffled(labels: torch.Tensor, seed: int) -> torch.Tensor:
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_knn_shuffled_labels_is_near_chance():
    # Labels shuffled on both sides carry no information about the features.
    train, y_train = clusters(100, seed=0)
    test, y_test = clusters(200, seed=1)
    acc = knn_accuracy(train, shuffled(y_train, 2), test, shuffled(y_test, 3), k=200, temperature=0.1)
    assert abs(acc - 1 / 5) < 0.06  # 1,000 test samples: the std of chance accuracy is 0.013


def test_linear_probe_learns_separable_data_and_not_shuffled_labels():
    train, y_train = clusters(60, spread=0.6, seed=0)
    test, y_test = clusters(40, spread=0.6, seed=1)
    assert linear_probe(train, y_train, test, y_test, epochs=30)["top1"] > 0.95
    assert abs(linear_probe(train, shuffled(y_train, 2), test, shuffled(y_test, 3), epochs=30)["top1"] - 1 / 5) < 0.1


def tiny_model() -> SimSiam:
    model = SimSiam("resnet10-slim", small_images=True, proj_dim=16, proj_layers=2)
    model.train()
    with torch.no_grad():  # move the BN running statistics away from their initial values
        model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16))
    return model


def image_set(n: int, seed: int, classes=("a", "b")) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % len(classes)
    return ImageSet(images, labels, list(classes), [f"img{i}" for i in range(n)], f"set{seed}")


def test_evaluation_leaves_the_backbone_untouched():
    model = tiny_model()
    before = backbone_snapshot(model.backbone)
    result = evaluate_encoder(model, image_set(12, 0), image_set(6, 1), knn_k=5, linear=True, linear_epochs=3)
    assert result["backbone_unchanged"] and 0 <= result["linear"]["top1"] <= 1 and 0 <= result["knn"]["top1"] <= 1
    check_unchanged(before, model.backbone)  # weights and BN statistics, bit for bit
    assert model.training  # extraction ran in eval mode and restored the mode


def test_the_guard_catches_bn_statistics_drift():
    model = tiny_model()
    before = backbone_snapshot(model.backbone)
    with torch.no_grad():
        model.features(torch.randn(4, 3, 16, 16))  # a forward in train mode updates running_mean/var
    with pytest.raises(BackboneChangedError, match="bn1|running|num_batches"):
        check_unchanged(before, model.backbone)


def test_test_classes_are_matched_by_name():
    train = image_set(4, 0, classes=("cat", "dog"))
    test = image_set(4, 1, classes=("dog",))
    assert align_labels(train, test).tolist() == [1, 1, 1, 1]
    with pytest.raises(DataError, match="bird"):
        align_labels(train, image_set(4, 1, classes=("bird", "cat")))


def test_features_are_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"stands for a checkpoint file")
    model, images = tiny_model().eval(), image_set(5, 0).images
    key = feature_cache_key(checkpoint, images)
    first, file = features_of(model, images, "cpu", cache_key=key)
    assert file is not None and file.exists() and first.shape == (5, model.feature_dim)
    torch.save(torch.zeros_like(first), file)  # prove the second call reads the file
    second, _ = features_of(model, images, "cpu", cache_key=key)
    assert torch.equal(second, torch.zeros_like(first))
    assert feature_cache_key(checkpoint, images[:4]) != key  # other images, other entry
