"""Judging an encoder: feature extraction, kNN accuracy and the collapse metric.

Evaluation functions are pure tensor functions (features and labels in, a figure
out); extraction and caching live apart from them, and every path goes through
``SimSiam.features`` with the backbone in eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import IMAGENET_MEAN, IMAGENET_STD


def normalize_images(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, normalised as the training views are (no augmentation)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Backbone features (N, D) of uint8 images (N, 3, H, W), in eval mode, float32 on ``device``.

    The model's train/eval state is restored afterwards.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    batches = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="extracting features", unit="batch")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    try:
        for start in batches:
            x = normalize_images(images[start : start + batch_size].to(device, non_blocking=True))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                out.append(model.features(x).float())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(model, "feature_dim", 0), device=device)


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int | None = None,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (M, C) from a similarity-weighted kNN vote (InstDisc's rule).

    Features are l2-normalised; each of the k nearest training samples (cosine
    similarity s) votes for its class with weight exp(s / temperature).
    """
    num_classes = int(train_labels.max()) + 1 if num_classes is None else num_classes
    train = F.normalize(train_features.float(), dim=1)  # (N, D)
    labels = train_labels.to(train.device)
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        test = F.normalize(test_features[start : start + chunk_size].float().to(train.device), dim=1)  # (m, D)
        sim, idx = (test @ train.T).topk(k, dim=1)  # (m, k)
        weights = (sim / temperature).exp()
        votes = torch.zeros(test.shape[0], num_classes, device=train.device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.empty(0, num_classes, device=train.device)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """kNN top-1 accuracy in [0, 1] (k=200, temperature 0.1: the InstDisc / lightly convention).

    >>> f = torch.eye(4).repeat(5, 1)                # 20 samples, 4 well separated classes
    >>> y = torch.arange(4).repeat(5)
    >>> knn_accuracy(f, y, f, y, k=5)
    1.0
    """
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return (scores.argmax(dim=1).cpu() == test_labels.cpu()).float().mean().item()


def z_std(z: torch.Tensor) -> torch.Tensor:
    """Std over the batch of l2-normalised z, averaged over dimensions (paper, Figure 2).

    About 1/sqrt(d) for a healthy representation, 0 for a collapsed one.
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def collapse_level(std: float, dim: int) -> float:
    """z_std relative to the healthy 1/sqrt(d): 1 healthy, 0 fully collapsed."""
    return std * math.sqrt(dim)
