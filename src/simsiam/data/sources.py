"""Image sources decoded once into one uint8 tensor.

Data flows one way: files -> (N, C, S, S) uint8 cache -> device -> batched
augmentation. Three sources are understood:

- a folder of images, searched recursively: flat (unlabeled), or with one
  subfolder per class (the subfolder names become the labels); images are RGB
  (C = 3), or one grey channel with ``channels=1``, and multispectral stacks
  (.npy, .npz, multi-page TIFF) have their own C bands (see :func:`load_folder`);
- a CIFAR-10 "python version" folder (data_batch_1..5) or one batch file;
- the bundled demo set (``data=None``): 5,000 labeled 32x32 images of CIFAR-10's
  validation split, stored as their JPEG bytes in one 5 MB file.

Images are decoded by :mod:`simsiam.data.decode` (resized, shorter side to S, and
centre-cropped to S x S, once), a chunk at a time, straight into the image cache
on disk (``$SIMSIAM_CACHE/images``, see :mod:`simsiam.data.cache`), and reused while
the files are unchanged; a folder's images are then read into memory when they
fit, or left on disk and read by index (:mod:`simsiam.data.folder`).

Reading DATA never runs code and never reads our own outputs: CIFAR batches are
unpickled with a restricted unpickler that admits only the types the format
uses (:func:`simsiam.data.cifar.read_cifar_pickle`), and a simsiam run folder inside
DATA (``cd photos && simsiam train .``) is left out, with a warning naming it.
"""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simsiam.data.decode import STACK_EXTENSIONS, channels_of, decode_image, image_size_of
from simsiam.data.disk import DiskImages
from simsiam.data.folder import (
    IMAGE_EXTENSIONS,
    MAX_NAMED,
    DataOptions,
    SkippedImagesWarning,
    cache_key,
    cached_folder,
    is_run_folder,
    list_images,
)
from simsiam.errors import ConfigError, DataError
from simsiam.files import archive_problem, cache_dir, show_path

__all__ = ["ImageSet", "DataError", "SkippedImagesWarning", "load", "load_folder", "load_cifar", "load_demo", "list_images"]
__all__ += ["is_run_folder", "cache_dir", "decode_image", "show_path", "channel_stats"]

DEMO_FILE = Path(__file__).parent / "demo" / "cifar10_demo.npz"
DEFAULT_MAX_SIZE = 224


@dataclass
class ImageSet:
    """Decoded images with their labels and where they came from."""

    images: torch.Tensor | DiskImages  # (N, C, S, S) uint8: C = 3 for RGB; in memory, or read from the disk cache by index
    labels: torch.Tensor | None  # (N,) int64, or None for unlabeled data
    classes: list[str]
    paths: list[str]
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def subset(self, index: torch.Tensor) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            images=self.images.subset(index) if isinstance(self.images, DiskImages) else self.images[index],
            labels=None if self.labels is None else self.labels[index],
            classes=self.classes,
            paths=[self.paths[i] for i in index.tolist()],
            source=self.source,
        )

    def split(self, held_out: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A random split, stratified by label: (rest, held-out fraction)."""
        g = torch.Generator().manual_seed(seed)
        groups = (
            [torch.arange(len(self))]
            if self.labels is None
            else [torch.nonzero(self.labels == c).flatten() for c in range(len(self.classes))]
        )
        keep, out = [], []
        for idx in groups:
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_out = int(round(len(idx) * held_out))
            out.append(idx[:n_out])
            keep.append(idx[n_out:])
        return self.subset(torch.cat(keep).sort().values), self.subset(torch.cat(out).sort().values)


# -- folders -------------------------------------------------------------------------


def _auto_size(files: list[Path], max_size: int = DEFAULT_MAX_SIZE) -> int:
    """The median shorter side of a sample of the images, capped at ``max_size``."""
    sizes = [image_size_of(f) for f in files[:: max(1, len(files) // 200)][:200]]
    sides = [min(s) for s in sizes if s is not None]
    return min(max_size, int(statistics.median(sides))) if sides else max_size


def _data_channels(files: list[Path]) -> int:
    """The folder's channel count: 3 for image files (grey ones too, as RGB), C for stacks of C bands.

    The most common count over a sample of up to 200 files (the first seen wins a
    tie); only the headers of files that may be stacks (.npy, .npz, .tif) are read.
    """
    sample = files[:: max(1, len(files) // 200)][:200]
    counts = Counter(channels_of(f) if f.suffix.lower() in STACK_EXTENSIONS else 3 for f in sample)
    counts.pop(None, None)
    return counts.most_common(1)[0][0] if counts else 3


def _warn_skipped(reasons: list[str], total: int) -> None:
    if not reasons:
        return
    names = "; ".join(reasons[:MAX_NAMED])
    more = f"; and {len(reasons) - MAX_NAMED} more" if len(reasons) > MAX_NAMED else ""
    warnings.warn(
        f"skipped {len(reasons)} of {total} files that could not be decoded (--strict stops at the first instead): {names}{more}",
        SkippedImagesWarning,
        stacklevel=4,
    )


def load_folder(root: Path, options: DataOptions | None = None, **kwargs) -> ImageSet:
    """An image folder as an ImageSet, decoded once into the disk cache and then read from it; see :func:`load`.

    ``options`` (or its fields as keywords, which override it) say how; among them:
    the decoded images stay on disk (:class:`~simsiam.data.disk.DiskImages`)
    when they would take more than half of the free memory (for ``processes``
    copies), or with ``data_on="disk"``; ``"memory"`` always reads them in
    (:func:`~simsiam.data.batches.placement` decides). ``cache_format``: raw
    pixels, or JPEGs re-encoded at high quality (several times smaller); ``auto``
    takes JPEG when raw would not fit in memory or on disk (see :mod:`simsiam.data.folder`).

    ``channels``: None finds the count from the data (3 for image files, C for
    stacks of C bands: the most common count over a sample); 1 reads every image
    as one grey channel; any count reads stacks of that many bands. A file of
    another channel count is skipped and named in the warning, as a file that
    cannot be decoded is (``strict`` stops at it instead).
    """
    root = Path(root)
    options = dataclasses.replace(options or DataOptions(), **kwargs)
    files, labels, classes = list_images(root, options.exclude, strict=options.strict)
    if not files:
        raise DataError(f"{show_path(root)}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
    options = dataclasses.replace(
        options, image_size=options.image_size or _auto_size(files), channels=options.channels or _data_channels(files)
    )
    kind = "folder" if options.channels == 3 else f"folder/{options.channels}"
    stored = cached_folder(cache_key(kind, root, files, options.image_size), files, labels, classes, options)
    _warn_skipped(stored.skipped, len(files))
    if not stored.paths:
        raise DataError(f"{show_path(root)}: none of the {len(files)} image files could be decoded")
    labels_ = None if stored.labels is None else torch.tensor(stored.labels, dtype=torch.long)
    return ImageSet(stored.images, labels_, list(stored.classes), list(stored.paths), str(root))


# -- CIFAR-10 python batches -----------------------------------------------------------


def is_cifar(path: Path) -> bool:
    """Whether ``path`` is CIFAR-10's python version: a data_batch_* or test_batch file, or a folder holding one."""
    if path.is_file():
        return path.name.startswith(("data_batch", "test_batch"))
    return (path / "data_batch_1").is_file() or (path / "test_batch").is_file()


def load_cifar(path: Path, image_size: int | None = None) -> ImageSet:
    """The CIFAR-10 python version: a folder (its data_batch_* files) or one batch file (:mod:`simsiam.data.cifar`)."""
    from simsiam.data.cifar import read_cifar  # its restricted unpickler is loaded only for CIFAR data

    images, labels, classes, paths = read_cifar(Path(path), image_size)
    return ImageSet(images, labels, classes, paths, str(path))


# -- the demo set --------------------------------------------------------------------------


def load_demo(image_size: int | None = None) -> ImageSet:
    """The bundled demo set: 5,000 labeled 32x32 CIFAR-10 validation images."""
    with np.load(DEMO_FILE) as z:
        blob, offsets, labels, classes = z["jpeg"].tobytes(), z["offsets"], z["labels"], z["classes"]
    size = image_size or 32
    images = torch.stack([decode_image(blob[offsets[i] : offsets[i + 1]], size) for i in range(len(labels))])
    paths = [f"demo#{i}" for i in range(len(labels))]
    return ImageSet(images, torch.from_numpy(labels.astype(np.int64)), [str(c) for c in classes], paths, "demo")


def load(data: str | Path | None, image_size: int | None = None, *, options: DataOptions | None = None, **kwargs) -> ImageSet:
    """Load DATA as the CLI understands it: None (the demo set), an image folder, or CIFAR-10 batches.

    How is said by ``options`` (:class:`~simsiam.data.folder.DataOptions`), or by
    its fields as keywords, which override it (``image_size`` too). Most are for
    folders: the demo set and CIFAR-10 are RGB and held in memory. ``decode_device="cuda"``
    decodes the JPEGs of a folder on the GPU (when the cache is built). ``exclude``
    names files or folders inside DATA never to read (a run's own output folder);
    run folders of simsiam are left out anyway.

    >>> ds = load(None)
    >>> ds.images.shape, ds.images.dtype, len(ds.classes)
    (torch.Size([5000, 3, 32, 32]), torch.uint8, 10)
    """
    options = dataclasses.replace(options or DataOptions(), **({"image_size": image_size} if image_size else {}), **kwargs)
    path = None if data is None else Path(data)
    if options.channels not in (None, 3) and (path is None or (path.exists() and is_cifar(path))):
        what = "the demo set" if path is None else f"{show_path(path)} (CIFAR-10 batches)"
        raise ConfigError(f"{what} is RGB: 3 channels, not {options.channels}", key="model.channels")
    if path is None:
        return load_demo(options.image_size)
    if not path.exists():
        raise DataError(f"{show_path(path)}: no such file or folder")
    if is_cifar(path):
        return load_cifar(path, options.image_size)
    if not path.is_dir():
        raise DataError(archive_problem(path) or f"{show_path(path)}: expected a folder of images or a CIFAR-10 python batch")
    return load_folder(path, options)


# -- normalisation -------------------------------------------------------------------------


def channel_stats(images: torch.Tensor, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), for pixels scaled to [0, 1].

    What images that are not RGB are normalised with (RGB keeps ImageNet's, as
    pretrained torchvision weights expect). Exact, from per-channel histograms of
    the 256 values, over every image or, above ``max_images``, an evenly spaced
    sample of them. A channel with no spread gets std 1/255 (one grey level), so
    that normalising never divides by zero. Rounded to 6 digits, as the run's
    config stores them.

    >>> channel_stats(torch.tensor([[[[0, 255]]], [[[0, 255]]]], dtype=torch.uint8))
    ((0.5,), (0.5,))
    """
    n, C = images.shape[:2]
    index = torch.arange(0, n, max(1, -(-n // max_images)))
    per_chunk = max(1, 4_000_000 // max(1, images[0].numel()))  # about 32 MB of int64 indices at a time
    offsets = (torch.arange(C) * 256).view(1, C, 1)
    counts = torch.zeros(C * 256, dtype=torch.float64)
    for start in range(0, len(index), per_chunk):
        chunk = images[index[start : start + per_chunk]].to("cpu", torch.int64).flatten(2)  # (b, C, H*W)
        counts += torch.bincount((chunk + offsets).flatten(), minlength=C * 256).double()
    counts = counts.view(C, 256)
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(dim=1).clamp_min(1)
    mean = (counts * values).sum(dim=1) / total
    std = ((counts * values**2).sum(dim=1) / total - mean**2).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(v), 6) for v in std)
