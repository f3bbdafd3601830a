"""Image sources decoded once into one uint8 tensor.

Data flows one way: files -> (N, 3, S, S) uint8 cache -> device -> batched
augmentation. Three sources are understood:

- a folder of images, searched recursively: flat (unlabeled), or with one
  subfolder per class (the subfolder names become the labels);
- a CIFAR-10 "python version" folder (data_batch_1..5) or one batch file;
- the bundled demo set (``data=None``): 5,000 labeled 32x32 images of CIFAR-10's
  validation split, stored as their JPEG bytes in one 5 MB file.

Images are decoded by :mod:`simsiam.decode` (resized, shorter side to S, and
centre-cropped to S x S, once); the result is saved in the disk cache
(``$SIMSIAM_CACHE``, see :mod:`simsiam.io`) and reused while the files are
unchanged.

Reading DATA never runs code and never reads our own outputs: CIFAR batches are
unpickled with a restricted unpickler that admits only the types the format
uses (:func:`simsiam.decode.read_cifar_pickle`), and a simsiam run folder inside
DATA (``cd photos && simsiam train .``) is left out, with a warning naming it.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .decode import decode_files, decode_image, image_size_of, read_cifar_pickle, show_path
from .errors import DataError
from .io import cache_dir, load_cached, save_cached

__all__ = ["ImageSet", "DataError", "SkippedImagesWarning", "load", "load_folder", "load_cifar", "load_demo", "list_images"]
__all__ += ["is_run_folder", "cache_dir", "decode_image", "show_path"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEMO_FILE = Path(__file__).parent / "demo" / "cifar10_demo.npz"
DEFAULT_MAX_SIZE = 224
CACHE_VERSION = 1
MAX_NAMED = 50  # files named one by one in a warning; the rest are counted


class SkippedImagesWarning(UserWarning):
    """Some files or folders of DATA were left out: undecodable, unreadable, or a run folder (see --strict)."""


@dataclass
class ImageSet:
    """Decoded images with their labels and where they came from."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor | None  # (N,) int64, or None for unlabeled data
    classes: list[str]
    paths: list[str]
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, index: torch.Tensor) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            images=self.images[index],
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


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a simsiam run (its checkpoint, or its config with any of the files a run writes)."""
    path = Path(path)
    if (path / "checkpoints" / "last.ckpt").is_file():
        return True
    return (path / "config.yaml").is_file() and any(
        (path / name).exists() for name in ("metrics.csv", "metrics.json", "training.png", "checkpoints")
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: Path, exclude: set[str]) -> tuple[list[Path], dict[str, str], list[Path]]:
    """Image files under ``root``; the folders that could not be read (real path -> text); the folders left out."""
    files: list[Path] = []
    seen: set[str] = set()
    unreadable: dict[str, str] = {}
    left_out: list[Path] = []

    def note_unreadable(e: OSError) -> None:
        if os.path.realpath(e.filename) != os.path.realpath(root):
            unreadable[os.path.realpath(e.filename)] = f"{show_path(e.filename)} ({e.strerror})"

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=note_unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(d for d in dirnames if not _is_hidden(d)):
            sub = Path(dirpath) / d
            if os.path.realpath(sub) in exclude or is_run_folder(sub):
                left_out.append(sub)
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.realpath(path) not in exclude:
                files.append(path)
    return files, unreadable, left_out


def list_images(root: Path, exclude: Iterable[str | Path] = ()) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files under ``root``, and labels when the images sit in class subfolders.

    Hidden files and folders are skipped; symbolic links are followed once (loops
    are cut by remembering the real paths visited); folders that cannot be read
    are skipped with a warning naming them. Simsiam run folders (see
    :func:`is_run_folder`) and the paths in ``exclude`` (files or folders: a
    run's own output folder, say) are never read, and a warning names them.
    """
    root = Path(root)
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{show_path(root)}: cannot read the folder (permission denied)")
    excluded = {os.path.realpath(p) for p in exclude} - {os.path.realpath(root)}
    files, unreadable, left_out = _walk(root, excluded)
    if unreadable:
        shown = ", ".join(sorted(unreadable.values())[:MAX_NAMED])
        warnings.warn(f"skipped {len(unreadable)} folder(s) that cannot be read: {shown}", SkippedImagesWarning, stacklevel=2)
    if left_out:
        shown = ", ".join(show_path(p.relative_to(root)) for p in left_out[:MAX_NAMED])
        warnings.warn(f"{show_path(root)}: left out {len(left_out)} simsiam run or output folder(s), never read as data: {shown}",
                      SkippedImagesWarning, stacklevel=2)  # fmt: skip
    top_level = [f for f in files if f.parent == root]
    class_dirs = sorted({f.relative_to(root).parts[0] for f in files if f.parent != root})
    if top_level or not class_dirs:
        return files, None, []
    holds_left_out = {p.relative_to(root).parts[0] for p in left_out}
    empty = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not _is_hidden(d.name) and d.name not in class_dirs and d.name not in holds_left_out
        and os.path.realpath(d) not in unreadable and os.path.realpath(d) not in excluded
    )  # fmt: skip
    if empty:
        warnings.warn(
            f"{show_path(root)}: class folders with no images are ignored: {', '.join(map(show_path, empty))}",
            SkippedImagesWarning,
            stacklevel=2,
        )
    index = {c: i for i, c in enumerate(class_dirs)}
    labels = [index[f.relative_to(root).parts[0]] for f in files]
    return files, labels, class_dirs


def _auto_size(files: list[Path], max_size: int = DEFAULT_MAX_SIZE) -> int:
    """The median shorter side of a sample of the images, capped at ``max_size``."""
    sizes = [image_size_of(f) for f in files[:: max(1, len(files) // 200)][:200]]
    sides = [min(s) for s in sizes if s is not None]
    return min(max_size, int(statistics.median(sides))) if sides else max_size


def _cache_key(kind: str, root: Path, files: list[Path], size: int) -> str:
    # os.fsencode: file names need not be valid UTF-8.
    h = hashlib.sha1(f"{CACHE_VERSION}|{kind}|{size}|".encode() + os.fsencode(root.resolve()))
    for f in files:
        try:
            st = f.stat()
            stamp = f"|{st.st_size}|{st.st_mtime_ns}|{st.st_mode & 0o777}\n"
        except OSError as e:  # a dangling link or a link loop: the decoding pass reports it
            stamp = f"|unreadable {e.errno}\n"
        h.update(os.fsencode(f) + stamp.encode())
    return h.hexdigest()[:20]


def _is_image_cache(obj: Any, size: int) -> bool:
    """Whether ``obj`` is what load_folder saves: images, labels, classes, paths and skipped that fit together."""
    if not isinstance(obj, dict) or not {"images", "labels", "classes", "paths", "skipped"} <= obj.keys():
        return False
    images, labels, classes = obj["images"], obj["labels"], obj["classes"]
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape[1:]) == (3, size, size)):
        return False
    n = images.shape[0]
    texts = all(isinstance(x, list) and all(isinstance(s, str) for s in x) for x in (classes, obj["paths"], obj["skipped"]))
    if not texts or len(obj["paths"]) != n:
        return False
    if labels is None:
        return True
    return (isinstance(labels, torch.Tensor) and labels.dtype == torch.long and tuple(labels.shape) == (n,)
            and (n == 0 or (int(labels.min()) >= 0 and int(labels.max()) < len(classes))))  # fmt: skip


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


def load_folder(
    root: Path,
    image_size: int | None = None,
    strict: bool = False,
    progress: bool = True,
    decode_device: str | None = None,
    exclude: Iterable[str | Path] = (),
) -> ImageSet:
    """An image folder as an ImageSet, decoded once and then read from the disk cache; see :func:`load`."""
    root = Path(root)
    files, labels, classes = list_images(root, exclude)
    if not files:
        raise DataError(f"{show_path(root)}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
    size = image_size or _auto_size(files)
    name = f"{_cache_key('folder', root, files, size)}.pt"
    cached = load_cached(name, lambda obj: _is_image_cache(obj, size), "image cache")
    if cached is not None and strict and cached["skipped"]:
        raise DataError(cached["skipped"][0])
    if cached is None:
        on_gpu = decode_device is not None and torch.device(decode_device).type == "cuda"
        images, keep, skipped = decode_files(files, size, strict=strict, progress=progress, jpeg_device=decode_device if on_gpu else None)
        _warn_skipped(skipped, len(files))
        if not keep:
            raise DataError(f"{show_path(root)}: none of the {len(files)} image files could be decoded")
        cached = dict(
            images=images[keep].clone() if len(keep) < len(files) else images,
            labels=None if labels is None else torch.tensor([labels[i] for i in keep], dtype=torch.long),
            classes=classes,
            paths=[str(files[i]) for i in keep],
            skipped=skipped,  # so that a run from the cache warns about them too
        )
        save_cached(name, cached, "image cache")
    else:
        _warn_skipped(list(cached["skipped"]), len(files))
    return ImageSet(cached["images"], cached["labels"], list(cached["classes"]), list(cached["paths"]), str(root))


# -- CIFAR-10 python batches -----------------------------------------------------------


def _is_cifar(path: Path) -> bool:
    if path.is_file():
        return path.name.startswith(("data_batch", "test_batch"))
    return (path / "data_batch_1").is_file() or (path / "test_batch").is_file()


def _cifar_batch(f: Path) -> tuple[np.ndarray, list[int]]:
    batch = read_cifar_pickle(f)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [int(x) for x in batch["labels"]]
        if len(labels) != len(data) or not all(0 <= x < 256 for x in labels):
            raise ValueError(f"{len(data)} images but {len(labels)} labels, or labels out of range")
    except Exception as e:
        raise DataError(f"{show_path(f)}: not a CIFAR-10 python batch ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    return data, labels


def load_cifar(path: Path, image_size: int | None = None) -> ImageSet:
    """The CIFAR-10 python version: a folder (its data_batch_* files) or one batch file."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("data_batch_*")) or [path / "test_batch"]
    meta = (path.parent if path.is_file() else path) / "batches.meta"
    images, labels, paths = [], [], []
    for f in files:
        data, batch_labels = _cifar_batch(f)
        images.append(torch.from_numpy(data))
        labels += batch_labels
        paths += [f"{f}#{i}" for i in range(len(data))]
    classes = [str(i) for i in range(max(10, max(labels, default=0) + 1))]
    if meta.is_file():
        names = read_cifar_pickle(meta).get("label_names")
        if not isinstance(names, list) or len(names) <= max(labels, default=0):
            raise DataError(f"{show_path(meta)}: not CIFAR-10 batch metadata (no label_names for every label)")
        classes = [c.decode("utf-8", "backslashreplace") if isinstance(c, bytes) else str(c) for c in names]
    x = torch.cat(images)
    if image_size and image_size != 32:
        x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)
    return ImageSet(x, torch.tensor(labels, dtype=torch.long), classes, paths, str(path))


# -- the demo set --------------------------------------------------------------------------


def load_demo(image_size: int | None = None) -> ImageSet:
    """The bundled demo set: 5,000 labeled 32x32 CIFAR-10 validation images."""
    with np.load(DEMO_FILE) as z:
        blob, offsets, labels, classes = z["jpeg"].tobytes(), z["offsets"], z["labels"], z["classes"]
    size = image_size or 32
    images = torch.stack([decode_image(blob[offsets[i] : offsets[i + 1]], size) for i in range(len(labels))])
    paths = [f"demo#{i}" for i in range(len(labels))]
    return ImageSet(images, torch.from_numpy(labels.astype(np.int64)), [str(c) for c in classes], paths, "demo")


def load(
    data: str | Path | None,
    image_size: int | None = None,
    strict: bool = False,
    progress: bool = True,
    decode_device: str | None = None,
    exclude: Iterable[str | Path] = (),
) -> ImageSet:
    """Load DATA as the CLI understands it: None (the demo set), an image folder, or CIFAR-10 batches.

    decode_device="cuda" decodes the JPEGs of a folder on the GPU (when the cache
    is built). ``exclude`` names files or folders inside DATA never to read (a
    run's own output folder); run folders of simsiam are left out anyway.

    >>> ds = load(None)
    >>> ds.images.shape, ds.images.dtype, len(ds.classes)
    (torch.Size([5000, 3, 32, 32]), torch.uint8, 10)
    """
    if data is None:
        return load_demo(image_size)
    path = Path(data)
    if not path.exists():
        raise DataError(f"{show_path(path)}: no such file or folder")
    if _is_cifar(path):
        return load_cifar(path, image_size)
    if not path.is_dir():
        raise DataError(f"{show_path(path)}: expected a folder of images or a CIFAR-10 python batch")
    return load_folder(path, image_size, strict=strict, progress=progress, decode_device=decode_device, exclude=exclude)
