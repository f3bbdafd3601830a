"""Judging an encoder: feature extraction, kNN accuracy, the linear probe and the collapse metric.

Evaluation functions are pure tensor functions (features and labels in, a figure
out); extraction and caching live apart from them, and every path goes through
``SimSiam.features`` with the backbone in eval mode.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from simsiam.augment import normalization, normalize_
from simsiam.errors import BackboneChangedError, DataError
from simsiam.files import cache_path, eval_mode, load_cached, save_cached, show_path
from simsiam.loss import z_std

if TYPE_CHECKING:  # the data layer loads when a set is read, not with the package
    from simsiam.data.sources import ImageSet

__all__ = ["BackboneChangedError", "normalize_images", "extract_features", "knn_predict", "knn_accuracy", "z_std"]
__all__ += ["collapse_level", "backbone_snapshot", "check_unchanged", "linear_probe", "feature_cache_key", "features_of"]
__all__ += ["align_labels", "evaluate_encoder", "dense_labels"]


def normalize_images(images: torch.Tensor, mean=None, std=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, normalised as the training views are (no augmentation).

    ``mean`` and ``std`` hold one value per channel, for pixels scaled to [0, 1]:
    the run's (``TrainConfig.normalization()``); None is ImageNet's, for RGB only.
    ``out`` (float, the shape of ``images``) is computed into, in place: a loop over
    batches that reuses one buffer allocates nothing per batch (large temporaries
    of each batch leave the C heap fragmented, and resident memory grows).
    """
    mean, std = normalization(mean, std, images.shape[1])
    if out is None:
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    x = out.copy_(images).div_(255.0) if images.dtype == torch.uint8 else out.copy_(images)
    return normalize_(x, mean, std)


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    progress: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    crop: int | None = None,
) -> torch.Tensor:
    """Backbone features (N, D) of uint8 images (N, C, H, W), in eval mode, float32 on ``device``.

    Images are normalised with ``mean`` and ``std`` (see :func:`normalize_images`)
    and, with ``crop``, centre-cropped to crop x crop first (images cached larger
    than the training size: resize 256, centre crop 224, as ImageNet evaluation
    does). ``images`` may be a tensor or images left on disk
    (:class:`~simsiam.data.disk.DiskImages`): batches are read ahead in the
    background (:func:`simsiam.data.batches.in_order`), never all at once.
    The model's train/eval state is restored afterwards.
    """
    from simsiam.data.batches import in_order

    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    batches = in_order(images, batch_size, device)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-images.shape[0] // batch_size), desc="extracting features", unit="batch")
    # The training default's precision (bf16 on a GPU, float32 on any CPU), decided in one place.
    from simsiam.config.layers import default_precision

    bf16 = default_precision(on_gpu=device.type == "cuda") == "bf16-mixed"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with eval_mode(model):
        buffer = None  # one float buffer for every batch, in the model's memory format
        for batch in batches:
            batch = centre_crop(batch, crop)
            if buffer is None or buffer.shape[1:] != batch.shape[1:]:
                layout = torch.channels_last if channels_last else torch.contiguous_format
                rows = min(batch_size, images.shape[0])  # never a buffer for more images than there are
                buffer = torch.empty((rows, *batch.shape[1:]), device=device, memory_format=layout)
            x = normalize_images(batch, mean, std, out=buffer[: batch.shape[0]])
            with autocast:
                out.append(model.features(x).float())
    return torch.cat(out) if out else torch.empty(0, getattr(model, "feature_dim", 0), device=device)


def centre_crop(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), the centre; unchanged when ``size`` is None or not smaller."""
    h, w = images.shape[-2:]
    if size is None or (h <= size and w <= size):
        return images
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return images[..., top : top + size, left : left + size]


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
    similarity s) votes for its class with weight exp(s / temperature). Labels are
    the score columns, 0..C-1; :func:`knn_accuracy` renumbers any integers first (:func:`dense_labels`).
    """
    num_classes = int(train_labels.max()) + 1 if num_classes is None else num_classes
    if len(train_labels) and not (0 <= int(train_labels.min()) and int(train_labels.max()) < num_classes):
        raise ValueError(f"train_labels must be in [0, {num_classes}), got {int(train_labels.min())}..{int(train_labels.max())}; "
                         "renumber them with dense_labels")  # fmt: skip
    train = F.normalize(train_features.float(), dim=1)  # (N, D)
    labels = train_labels.to(train.device)
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        test = F.normalize(test_features[start : start + chunk_size].float().to(train.device), dim=1)  # (m, D)
        sim, idx = (test @ train.T).topk(k, dim=1)  # (m, k)
        # exp((s - s_max) / T): the same vote scaled per query, which cannot overflow at a small T
        weights = ((sim - sim[:, :1]) / temperature).exp()
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

    Labels may be any integers (10**12, -1): they are renumbered 0..K-1 first, so
    the votes take memory for the K classes present, not for the largest label.
    """
    train_labels, test_labels, num_classes = dense_labels(train_labels, test_labels)
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    correct = int((scores.argmax(dim=1).cpu() == test_labels.cpu()).sum())
    return correct / max(1, len(test_labels))  # a Python division: 0.38, not float32's 0.3799999952316284


def dense_labels(train_labels: torch.Tensor, test_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Both label sets renumbered 0..K-1 in the order of their values (K: the distinct labels of both), and K.

    >>> dense_labels(torch.tensor([10**12, -3]), torch.tensor([-3, 7]))
    (tensor([2, 0]), tensor([0, 1]), 3)
    """
    values, index = torch.unique(torch.cat([train_labels.long().cpu(), test_labels.long().cpu()]), return_inverse=True)
    n = len(train_labels)
    return index[:n].to(train_labels.device), index[n:].to(test_labels.device), len(values)


def collapse_level(std: float, dim: int) -> float:
    """z_std relative to the healthy 1/sqrt(d): 1 healthy, 0 fully collapsed."""
    return std * math.sqrt(dim)


# -- the linear probe ------------------------------------------------------------------------


def backbone_snapshot(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every weight and buffer (BN running mean/var and batch counts included)."""
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def check_unchanged(before: dict[str, torch.Tensor], backbone: torch.nn.Module) -> None:
    """Raise BackboneChangedError naming the first tensor that differs from ``before``.

    The reference linear-classification script makes the same check (its
    sanity_check): a probe is only a measure of the pretrained features if they
    stayed frozen, and BN statistics drift silently whenever a forward pass runs
    in train mode.
    """
    after = backbone.state_dict()
    if after.keys() != before.keys():
        raise BackboneChangedError("the backbone's set of weights changed during evaluation")
    for name, value in before.items():
        if not torch.equal(value, after[name].detach().to(value.device)):
            raise BackboneChangedError(f"the frozen backbone changed during evaluation: {name}")


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int | None = None,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Top-1 of one linear layer trained on frozen features: SGD with momentum, cosine lr decay per step.

    The features are standardised with the training set's mean and std first, a
    fixed affine map that the linear layer could absorb, so the probe is still
    linear; it only makes one learning rate fit every encoder. Returns test and
    train top-1 in [0, 1].

    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.arange(2).repeat(50)
    >>> f = torch.randn(100, 8, generator=g) + 4 * y[:, None]  # two separable clusters
    >>> linear_probe(f, y, f, y, epochs=10)["top1"]
    1.0
    """
    device = train_features.device
    if num_classes is None:  # any integers as labels: a head of the K classes present (see dense_labels)
        train_labels, test_labels, num_classes = dense_labels(train_labels, test_labels)
    mean = train_features.float().mean(dim=0)  # (D,)
    std = train_features.float().std(dim=0).clamp_min(1e-6)  # (D,)
    x_train = (train_features.float() - mean) / std  # (N, D)
    x_test = (test_features.float().to(device) - mean) / std  # (M, D)
    y_train = train_labels.to(device)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(x_train.shape[1], num_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = x_train.shape[0]
    batch_size = min(batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    # A step here is a (b, D) x (D, C) product: too small to split between CPU threads,
    # and on a busy machine a second thread makes every one of the many steps wait
    # (measured: 20x slower on two shared cores).
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        _train_probe(head, optimizer, schedule, x_train, y_train, epochs, batch_size, g)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        test_top1 = (head(x_test).argmax(dim=1).cpu() == test_labels.cpu()).float().mean().item()
        train_top1 = (head(x_train).argmax(dim=1) == y_train).float().mean().item()
    return {"top1": test_top1, "train_top1": train_top1}


def _train_probe(head, optimizer, schedule, x_train, y_train, epochs: int, batch_size: int, g: torch.Generator) -> None:
    n = x_train.shape[0]
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=g).to(x_train.device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(head(x_train[idx]), y_train[idx])  # logits (b, C)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()


# -- features of a whole image set, extracted once -------------------------------------------


def feature_cache_key(checkpoint: str | Path, images: torch.Tensor) -> str:
    """A key for the features of ``images`` under the checkpoint file: changes when either does."""
    checkpoint = Path(checkpoint).resolve()
    st = checkpoint.stat()
    h = hashlib.sha1(f"features|1|{checkpoint}|{st.st_size}|{st.st_mtime_ns}|{tuple(images.shape)}".encode())
    if hasattr(images, "fingerprint"):  # images left on disk: the cache entry's checksum and the rows, not every byte
        h.update(images.fingerprint().encode())
    else:
        h.update(memoryview(images.contiguous().cpu().numpy()).cast("B"))
    return h.hexdigest()[:24]


def features_of(
    model: torch.nn.Module,
    images: torch.Tensor,
    device: torch.device | str | None = None,
    batch_size: int = 512,
    cache_key: str | None = None,
    progress: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    crop: int | None = None,
    checkpoint: str | Path | None = None,
) -> tuple[torch.Tensor, Path | None]:
    """Backbone features (N, D) on ``device``; with ``cache_key``, read from or saved to the feature cache.

    ``mean`` and ``std`` normalise the images (the run's; None: ImageNet's, for RGB);
    ``crop`` centre-crops images cached larger than the training size to it.

    Features that are not all finite (weights that overflow on these images) are
    a CheckpointError naming ``checkpoint``: NaN never reaches an output file or the cache.

    Returns the features and the cache file when one was used. The cache lives
    beside the image cache (``$SIMSIAM_CACHE/features``, see :mod:`simsiam.files`);
    an entry that is damaged or does not fit ``images`` is named in a warning and
    extracted again.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    name = f"features/{cache_key}.pt" if cache_key else None
    if name is not None:

        def fits(x) -> bool:
            ok = isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 2 and x.shape[0] == images.shape[0]
            return ok and bool(torch.isfinite(x).all())

        cached = load_cached(name, fits, "feature cache", map_location=device)
        if cached is not None:
            return cached, cache_path(name)
    model.to(device)
    options = dict(batch_size=batch_size, device=device, progress=progress, mean=mean, std=std, crop=crop)
    feats = extract_features(model, images, **options)  # (N, D)
    from simsiam.checkpoint import check_finite_features

    check_finite_features(feats, checkpoint)
    file = save_cached(name, feats.cpu(), "feature cache") if name is not None else None
    return feats, file


# -- the evaluation protocol, end to end ------------------------------------------------------


def align_labels(train: ImageSet, test: ImageSet) -> torch.Tensor:
    """The test labels renumbered into the training set's classes (matched by name)."""
    if train.labels is None or test.labels is None:
        which = train.source if train.labels is None else test.source
        raise DataError(f"{show_path(which)}: no labels; evaluation needs one subfolder per class (or CIFAR-10 batches)")
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        names = ", ".join(show_path(c) for c in unknown[:10])
        raise DataError(f"{show_path(test.source)}: classes not in the training data {show_path(train.source)}: {names}")
    index = torch.tensor([train.classes.index(c) for c in test.classes], dtype=torch.long)
    return index[test.labels]


def evaluate_encoder(
    model: torch.nn.Module,
    train: ImageSet,
    test: ImageSet,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    linear: bool = False,
    linear_epochs: int = 100,
    linear_lr: float = 0.1,
    device: torch.device | str | None = None,
    batch_size: int = 512,
    checkpoint: str | Path | None = None,
    cache: bool = False,
    progress: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    crop: int | None = None,
) -> dict:
    """kNN top-1 and, with ``linear``, linear-probe top-1 of ``model``'s frozen backbone features.

    ``mean`` and ``std`` normalise the images as in training (None: ImageNet's, for RGB);
    ``crop`` centre-crops images cached larger than the training size to it.

    Features are extracted once per image set (and, with ``cache`` and a
    ``checkpoint`` file, kept in the feature cache); the backbone is checked to be
    bit-for-bit unchanged afterwards.
    """
    test_labels = align_labels(train, test)
    num_classes = len(train.classes)
    before = backbone_snapshot(model.backbone)
    started = time.perf_counter()
    key = (lambda s: feature_cache_key(checkpoint, s.images)) if cache and checkpoint is not None else (lambda s: None)
    options = dict(mean=mean, std=std, crop=crop, checkpoint=checkpoint)
    train_feats, train_cache = features_of(model, train.images, device, batch_size, key(train), progress, **options)  # (N, D)
    test_feats, test_cache = features_of(model, test.images, device, batch_size, key(test), progress, **options)  # (M, D)
    result: dict = {
        "train": {"data": train.source, "images": len(train), "classes": num_classes, "feature_cache": _str(train_cache)},
        "test": {"data": test.source, "images": len(test), "classes": len(test.classes), "feature_cache": _str(test_cache)},
        "feature_dim": train_feats.shape[1],
        "extract_seconds": time.perf_counter() - started,
    }
    started = time.perf_counter()
    top1 = knn_accuracy(
        train_feats, train.labels.to(train_feats.device), test_feats, test_labels.to(test_feats.device), knn_k, knn_temperature
    )
    result["knn"] = {"top1": top1, "k": knn_k, "temperature": knn_temperature, "seconds": time.perf_counter() - started}
    if linear:
        started = time.perf_counter()
        probe = linear_probe(
            train_feats, train.labels, test_feats, test_labels, num_classes=num_classes, epochs=linear_epochs, lr=linear_lr
        )
        result["linear"] = {**probe, "epochs": linear_epochs, "lr": linear_lr, "seconds": time.perf_counter() - started}
    check_unchanged(before, model.backbone)
    result["backbone_unchanged"] = True
    return result


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
