"""Image sources decoded once into one uint8 tensor.

Data flows one way: files -> (N, 3, S, S) uint8 cache -> device -> batched
augmentation. Three sources are understood:

- a folder of images, searched recursively: flat (unlabeled), or with one
  subfolder per class (the subfolder names become the labels);
- a CIFAR-10 "python version" folder (data_batch_1..5) or one batch file;
- the bundled demo set (``data=None``): 5,000 labeled 32x32 images of CIFAR-10's
  validation split, stored as their JPEG bytes in one 5 MB file.

Decoding uses Pillow (torchvision's own image datasets use it too): it reads every
format people keep images in (BMP and TIFF included), applies EXIF rotation,
converts palette, CMYK, 16-bit and alpha images to RGB, and decodes large JPEGs
at a reduced scale (``draft``), which is most of the cost on big photos. Every
image is resized (shorter side to S) and centre-cropped to S x S, once; the
result is saved under ~/.cache/simsiam (or $SIMSIAM_CACHE) and reused while the
files are unchanged.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import statistics
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from .io import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEMO_FILE = Path(__file__).parent / "demo" / "cifar10_demo.npz"
DEFAULT_MAX_SIZE = 224
CACHE_VERSION = 1
# Refuse decompression bombs far beyond any photo, but allow big satellite tiles.
Image.MAX_IMAGE_PIXELS = 1 << 30
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DataError(ValueError):
    """Bad input data; the message names the file or folder at fault."""


class SkippedImagesWarning(UserWarning):
    """Some files could not be decoded and were left out (see --strict)."""


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

    def subset(self, index: torch.Tensor) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            classes=self.classes,
            paths=[self.paths[i] for i in index.tolist()],
            source=self.source,
        )

    def split(self, held_out: float, seed: int = 0) -> tuple["ImageSet", "ImageSet"]:
        """A random split, stratified by label: (rest, held-out fraction)."""
        g = torch.Generator().manual_seed(seed)
        groups = [torch.arange(len(self))] if self.labels is None else [
            torch.nonzero(self.labels == c).flatten() for c in range(len(self.classes))
        ]
        keep, out = [], []
        for idx in groups:
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_out = int(round(len(idx) * held_out))
            out.append(idx[:n_out])
            keep.append(idx[n_out:])
        return self.subset(torch.cat(keep).sort().values), self.subset(torch.cat(out).sort().values)


# -- decoding ------------------------------------------------------------------------


def decode_image(source: str | Path | bytes, size: int) -> torch.Tensor:
    """One image file (or its bytes) as a (3, size, size) uint8 tensor, RGB.

    Shorter side resized to ``size`` (antialiased), then centre-cropped.
    Raises DataError, naming the file, for anything that cannot be read or decoded
    (Pillow raises a dozen exception types for broken files; callers see one).

    >>> decode_image(b"not an image", 8)
    Traceback (most recent call last):
    ...
    simsiam.data.DataError: image bytes: not an image (no format recognised)
    """
    try:
        return _decode(source, size)
    except Exception as e:  # Pillow's parsers also raise SyntaxError, struct.error, IndexError, MemoryError, ...
        name = "image bytes" if isinstance(source, bytes) else show_path(source)
        if isinstance(e, OSError) and e.errno is not None:  # the file itself: missing, unreadable, a link loop
            raise DataError(f"{name}: cannot read ({e.strerror})") from e
        if isinstance(e, UnidentifiedImageError):
            raise DataError(f"{name}: not an image (no format recognised)") from e
        raise DataError(f"{name}: cannot decode image ({type(e).__name__}: {_short(e)})") from e


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text if len(text) <= 160 else text[:157] + "..."


def show_path(path: str | Path) -> str:
    """A path as text that can always be printed: bytes that are not UTF-8 show as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _decode(source: str | Path | bytes, size: int) -> torch.Tensor:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale when that still covers size
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        array = np.asarray(img, dtype=np.uint8)  # (S, S, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit and 32-bit integer images: scale the full range to 8 bits
        # (Pillow's plain convert("RGB") would clip everything above 255).
        array = np.asarray(img, dtype=np.float64)
        hi = array.max() if array.size else 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0)
        img = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels over white, as a viewer shows them, not over black.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


# -- folders -------------------------------------------------------------------------


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def list_images(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files under ``root``, and labels when the images sit in class subfolders.

    Hidden files and folders are skipped; symbolic links are followed once (loops
    are cut by remembering the real paths visited); folders that cannot be read
    are skipped with a warning naming them.
    """
    files: list[Path] = []
    seen: set[str] = set()
    unreadable: dict[str, str] = {}  # real path -> what to show

    def note_unreadable(e: OSError) -> None:
        if os.path.realpath(e.filename) != os.path.realpath(root):
            unreadable[os.path.realpath(e.filename)] = f"{show_path(e.filename)} ({e.strerror})"

    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{show_path(root)}: cannot read the folder (permission denied)")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=note_unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(Path(dirpath) / name)
    if unreadable:
        shown = "; ".join(unreadable.values())
        warnings.warn(f"skipped {len(unreadable)} folder(s) that cannot be read: {shown}", SkippedImagesWarning, stacklevel=2)
    top_level = [f for f in files if f.parent == root]
    class_dirs = sorted({f.relative_to(root).parts[0] for f in files if f.parent != root})
    if top_level or not class_dirs:
        return files, None, []
    empty = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not _is_hidden(d.name) and d.name not in class_dirs and os.path.realpath(d) not in unreadable
    )
    if empty:
        warnings.warn(f"{show_path(root)}: class folders with no images are ignored: {', '.join(empty)}", SkippedImagesWarning, stacklevel=2)
    index = {c: i for i, c in enumerate(class_dirs)}
    labels = [index[f.relative_to(root).parts[0]] for f in files]
    return files, labels, class_dirs


def _auto_size(files: list[Path], max_size: int = DEFAULT_MAX_SIZE) -> int:
    """The median shorter side of a sample of the images, capped at ``max_size``."""
    sides = []
    for f in files[:: max(1, len(files) // 200)][:200]:
        try:
            with Image.open(f) as img:
                sides.append(min(img.size))
        except Exception:  # unreadable files are reported by the decoding pass
            continue
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


def cache_dir() -> Path:
    return Path(os.environ.get("SIMSIAM_CACHE", Path.home() / ".cache" / "simsiam"))


def _load_cached(key: str) -> dict | None:
    path = cache_dir() / f"{key}.pt"
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:
        return None  # a stale or damaged cache is rebuilt, never trusted


def _save_cached(key: str, payload: dict) -> None:
    path = cache_dir() / f"{key}.pt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            torch.save(payload, fh)  # streamed: the cache can be larger than a second copy in memory
    except (OSError, RuntimeError) as e:  # a read-only home or a full disk only costs the next run a decode
        # (torch's zip writer reports a failed write to a file object as RuntimeError "unexpected pos")
        warnings.warn(f"could not write the image cache {path}: {e}", stacklevel=2)


def _decode_all(files: list[Path], size: int, strict: bool, progress: bool) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode ``files`` with Pillow into one tensor; returns it, the indices that decoded, and why the others did not."""
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    bad: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            out[i] = decode_image(files[i], size)
        except DataError as e:
            if strict:
                raise
            bad[i] = str(e)

    pool = ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 1))
    try:
        list(tqdm(pool.map(work, range(len(files))), total=len(files), desc="decoding images", disable=not progress, unit="img"))
    finally:
        # On --strict's first bad file (or Ctrl-C), do not decode the rest of the folder first.
        pool.shutdown(wait=True, cancel_futures=True)
    keep = [i for i in range(len(files)) if i not in bad]
    return out, keep, [bad[i] for i in sorted(bad)]


MAX_NAMED = 50  # files named one by one in the warning; the rest are counted


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


_JPEG_EXTENSIONS = (".jpg", ".jpeg")


def _fit_on_device(images: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> (n, 3, size, size) uint8: shorter side to size (antialiased), centre crop."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = images.float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)


def _decode_all_gpu(files: list[Path], size: int, device: torch.device, strict: bool, progress: bool, batch: int = 256):
    """JPEGs decoded by nvJPEG on the GPU in batches (torchvision.io.decode_jpeg); the rest by Pillow.

    For folders of large JPEGs CPU decoding is the bottleneck of building the
    cache; the GPU decodes a batch of 256x256 JPEGs many times faster. A batch that
    nvJPEG refuses (a corrupt or CMYK file, say) is decoded file by file on the CPU.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    jpeg = [i for i, f in enumerate(files) if f.suffix.lower() in _JPEG_EXTENSIONS]
    others = sorted(set(range(len(files))) - set(jpeg))
    fallback: list[int] = list(others)
    bar = tqdm(total=len(files), desc="decoding images (GPU)", disable=not progress, unit="img")

    def read(i: int) -> torch.Tensor | None:
        try:
            return torch.frombuffer(bytearray(files[i].read_bytes()), dtype=torch.uint8)
        except (OSError, ValueError):  # unreadable, a dangling link, a link loop, zero bytes: Pillow's pass names it
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        for start in range(0, len(jpeg), batch):
            chunk = jpeg[start : start + batch]
            bar.update(len(chunk))
            blobs = list(pool.map(read, chunk))
            fallback += [i for i, blob in zip(chunk, blobs) if blob is None]
            chunk, blobs = [i for i, blob in zip(chunk, blobs) if blob is not None], [b for b in blobs if b is not None]
            if not chunk:
                continue
            try:
                decoded = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
            except Exception as e:  # nvJPEG refuses the whole batch for one bad file
                warnings.warn(f"GPU decoding refused a batch ({type(e).__name__}: {e}); decoding it with Pillow", stacklevel=2)
                fallback += chunk
            else:
                by_shape: dict[tuple[int, ...], list[int]] = {}
                for j, image in enumerate(decoded):
                    by_shape.setdefault(tuple(image.shape), []).append(j)
                for members in by_shape.values():  # one resize per distinct shape, not per image
                    fitted = _fit_on_device(torch.stack([decoded[j] for j in members]), size).cpu()
                    out[[chunk[j] for j in members]] = fitted
    bar.close()
    if not fallback:
        return out, list(range(len(files))), []
    order = sorted(fallback)
    rest, keep_rest, skipped = _decode_all([files[i] for i in order], size, strict, progress)
    out[[order[j] for j in keep_rest]] = rest[keep_rest]
    bad = {order[j] for j in set(range(len(order))) - set(keep_rest)}
    return out, [i for i in range(len(files)) if i not in bad], skipped


def load_folder(
    root: Path, image_size: int | None = None, strict: bool = False, progress: bool = True, decode_device: str | None = None
) -> ImageSet:
    files, labels, classes = list_images(root)
    if not files:
        raise DataError(f"{show_path(root)}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
    size = image_size or _auto_size(files)
    key = _cache_key("folder", root, files, size)
    cached = _load_cached(key)
    if cached is not None and strict and cached.get("skipped"):
        raise DataError(cached["skipped"][0])
    if cached is None:
        if decode_device is not None and torch.device(decode_device).type == "cuda":
            images, keep, skipped = _decode_all_gpu(files, size, torch.device(decode_device), strict, progress)
        else:
            images, keep, skipped = _decode_all(files, size, strict, progress)
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
        _save_cached(key, cached)
    else:
        _warn_skipped(list(cached.get("skipped", [])), len(files))
    return ImageSet(cached["images"], cached["labels"], list(cached["classes"]), list(cached["paths"]), str(root))


# -- CIFAR-10 python batches -----------------------------------------------------------


def _is_cifar(path: Path) -> bool:
    if path.is_file():
        return path.name.startswith(("data_batch", "test_batch"))
    return (path / "data_batch_1").is_file() or (path / "test_batch").is_file()


def load_cifar(path: Path, image_size: int | None = None) -> ImageSet:
    """The CIFAR-10 python version: a folder (its data_batch_* files) or one batch file."""
    files = [path] if path.is_file() else sorted(path.glob("data_batch_*")) or [path / "test_batch"]
    meta = (path.parent if path.is_file() else path) / "batches.meta"
    images, labels, paths = [], [], []
    for f in files:
        try:
            with open(f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels += list(batch[b"labels"])
        except Exception as e:
            raise DataError(f"{f}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from e
        images.append(torch.from_numpy(data))
        paths += [f"{f}#{i}" for i in range(len(data))]
    classes = [str(i) for i in range(10)]
    if meta.is_file():
        with open(meta, "rb") as fh:
            classes = [c.decode() for c in pickle.load(fh, encoding="bytes")[b"label_names"]]
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
    data: str | Path | None, image_size: int | None = None, strict: bool = False, progress: bool = True, decode_device: str | None = None
) -> ImageSet:
    """Load DATA as the CLI understands it: None (the demo set), an image folder, or CIFAR-10 batches.

    decode_device="cuda" decodes the JPEGs of a folder on the GPU (when the cache is built).

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
    return load_folder(path, image_size, strict=strict, progress=progress, decode_device=decode_device)
