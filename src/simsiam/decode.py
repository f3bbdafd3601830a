"""Image files to uint8 tensors: Pillow on the CPU, nvJPEG on the GPU for folders of JPEGs.

Decoding uses Pillow (torchvision's own image datasets use it too): it reads every
format people keep images in (BMP and TIFF included), applies EXIF rotation,
converts palette, CMYK, 16-bit, float and alpha images to RGB, and decodes large
JPEGs at a reduced scale (``draft``), which is most of the cost on big photos.
Every image is resized (shorter side to S) and centre-cropped to S x S.

What is never done, whatever DATA holds:

- a file that is not a regular file (a FIFO, a device, a socket) is never opened
  (opening a FIFO blocks until someone writes to it); it is named and skipped;
- an image that declares more than :data:`MAX_PIXELS` pixels is refused from its
  header, before anything is allocated for it (a 100-byte PNG can declare
  30000 x 30000 pixels: 2.7 GB decoded);
- a CIFAR-10 python batch is unpickled with an unpickler that admits only the
  types the format uses (dicts, lists, bytes, str, numbers, numpy arrays of
  plain dtypes): reading DATA never runs code;
- nothing about Pillow's global state is changed.

Every failure is one :class:`DataError` that names the file, printable on one
line (see :func:`show_path`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import stat
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from .errors import DataError
from .io import show_path

__all__ = ["MAX_PIXELS", "decode_image", "decode_files", "image_size_of", "open_regular", "read_cifar_pickle", "show_path"]

# Pillow's own decompression-bomb error threshold (2 x Image.MAX_IMAGE_PIXELS at its
# default): about 13,400 x 13,400, far beyond any photo, and room for big satellite
# tiles. Images above it are refused from their header. Pillow refuses above its
# own threshold as well; raising both (this and PIL.Image.MAX_IMAGE_PIXELS) admits more.
MAX_PIXELS = 178_956_970
JPEG_EXTENSIONS = (".jpg", ".jpeg")

_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]  # fmt: skip


def _require_regular(mode: int, path: str | Path) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
        raise DataError(f"{show_path(path)}: not a regular file ({kind}); only regular files are read")


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file (links followed); DataError naming it if it is not.

    The type is checked before the open (a FIFO or a device is never opened) and
    again on the open file, in case the name was replaced in between; the open
    itself cannot block.
    """
    _require_regular(os.stat(path).st_mode, path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        _require_regular(os.fstat(fd).st_mode, path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def decode_image(source: str | Path | bytes, size: int) -> torch.Tensor:
    """One image file (or its bytes) as a (3, size, size) uint8 tensor, RGB.

    Shorter side resized to ``size`` (antialiased), then centre-cropped.
    Raises DataError, naming the file, for anything that cannot be read or decoded
    (Pillow raises a dozen exception types for broken files; callers see one).

    >>> decode_image(b"not an image", 8)
    Traceback (most recent call last):
    ...
    simsiam.errors.DataError: image bytes: not an image (no format recognised)
    """
    name = "image bytes" if isinstance(source, bytes) else show_path(source)
    try:
        with _quiet_bomb_warning():
            return _decode_source(source, size, name)
    except DataError:
        raise
    except Exception as e:  # Pillow's parsers also raise SyntaxError, struct.error, IndexError, MemoryError, ...
        if isinstance(e, OSError) and e.errno is not None:  # the file itself: missing, unreadable, a link loop
            raise DataError(f"{name}: cannot read ({e.strerror})") from e
        if isinstance(e, UnidentifiedImageError):
            raise DataError(f"{name}: not an image (no format recognised)") from e
        if isinstance(e, Image.DecompressionBombError):
            raise DataError(f"{name}: refused as a possible decompression bomb ({_short(e)})") from e
        raise DataError(f"{name}: cannot decode image ({type(e).__name__}: {_short(e)})") from e


@contextlib.contextmanager
def _quiet_bomb_warning():
    """Silence Pillow's warning for images between half its limit and its limit, which are accepted here.

    Warning filters are process-wide: they are changed on the main thread only
    (decode_files does it around its worker threads), never from two threads at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _decode_source(source: str | Path | bytes, size: int, name: str) -> torch.Tensor:
    if isinstance(source, bytes):
        return _decode(io.BytesIO(source), size, name)
    with open_regular(source) as fh:
        return _decode(fh, size, name)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text if len(text) <= 160 else text[:157] + "..."


def _check_pixels(img: Image.Image, name: str) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise DataError(
            f"{name}: refused as a possible decompression bomb ({width}x{height} = {width * height:,} pixels, "
            f"above the limit of {MAX_PIXELS:,})"
        )


def _decode(fh: BinaryIO, size: int, name: str) -> torch.Tensor:
    with Image.open(fh) as img:  # reads the header only
        _check_pixels(img, name)
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
        img = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8))
    elif img.mode == "F":
        # Float images (TIFFs from scientific cameras, masks): values in 0..1 are scaled
        # to 0..255, values in 0..255 kept, larger ranges scaled by their maximum.
        # (Pillow's convert would take 0.5 as 0 or 1 out of 255: a black image.)
        array = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(array.max()) if array.size else 0.0
        scale = 255.0 if hi <= 1.0 else (1.0 if hi <= 255.0 else 255.0 / hi)
        img = Image.fromarray(np.clip(np.rint(array * scale), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels over white, as a viewer shows them, not over black.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def image_size_of(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from an image file's header, or None when it is not a readable image (or not a regular file)."""
    try:
        with open_regular(path) as fh, _quiet_bomb_warning(), Image.open(fh) as img:
            return img.size
    except Exception:  # unreadable files are reported by the decoding pass
        return None


# -- a whole list of files ---------------------------------------------------------------------


def decode_files(
    files: list[Path], size: int, strict: bool = False, progress: bool = True, jpeg_device: str | torch.device | None = None
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode ``files`` into one (N, 3, size, size) uint8 tensor.

    Returns the tensor, the indices of the files that decoded (the other rows
    are garbage) and, in file order, why each of the others did not (one line
    each, naming the file). With ``strict`` the first failure raises instead.

    ``jpeg_device`` (a torch device, "cuda" in practice) decodes the JPEGs in
    batches with torchvision's decode_jpeg on that device (nvJPEG on a GPU); the
    other files, and any JPEG it refuses, go through Pillow. Both paths accept
    and refuse the same files.
    """
    with _quiet_bomb_warning():
        if jpeg_device is None:
            return _decode_with_pillow(files, size, strict, progress)
        return _decode_jpegs_on_device(files, size, torch.device(jpeg_device), strict, progress)


def _decode_with_pillow(files: list[Path], size: int, strict: bool, progress: bool) -> tuple[torch.Tensor, list[int], list[str]]:
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


def fit_on_device(images: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> (n, 3, size, size) uint8: shorter side to size (antialiased), centre crop."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = images.float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)


def _jpeg_bytes(path: Path) -> torch.Tensor | None:
    """The bytes of a plain RGB or grey JPEG within the pixel limit, for nvJPEG; None sends the file to Pillow."""
    try:
        with open_regular(path) as fh:
            blob = fh.read()
        with Image.open(io.BytesIO(blob)) as img:  # the header only: format, mode and declared size
            if img.format != "JPEG" or img.mode not in ("RGB", "L") or img.width * img.height > MAX_PIXELS:
                return None
        return torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    except Exception:  # unreadable, not a regular file, a link loop, not a JPEG: Pillow's pass names it
        return None


def _decode_jpegs_on_device(files: list[Path], size: int, device: torch.device, strict: bool, progress: bool, batch: int = 256):
    """JPEGs decoded by decode_jpeg on ``device`` in batches; the rest by Pillow.

    For folders of large JPEGs CPU decoding is the bottleneck of building the
    cache; the GPU decodes a batch of 256x256 JPEGs many times faster. A batch that
    nvJPEG refuses (a corrupt file, say) is decoded file by file on the CPU.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    jpeg = [i for i, f in enumerate(files) if f.suffix.lower() in JPEG_EXTENSIONS]
    fallback: list[int] = sorted(set(range(len(files))) - set(jpeg))
    bar = tqdm(total=len(files), desc="decoding images (GPU)", disable=not progress, unit="img")
    with ThreadPoolExecutor(max_workers=8) as pool:
        for start in range(0, len(jpeg), batch):
            chunk = jpeg[start : start + batch]
            bar.update(len(chunk))
            blobs = list(pool.map(_jpeg_bytes, [files[i] for i in chunk]))
            fallback += [i for i, blob in zip(chunk, blobs) if blob is None]
            chunk, blobs = [i for i, blob in zip(chunk, blobs) if blob is not None], [b for b in blobs if b is not None]
            if not chunk:
                continue
            try:
                decoded = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
            except Exception as e:  # nvJPEG refuses the whole batch for one bad file
                warnings.warn(f"GPU decoding refused a batch ({type(e).__name__}: {_short(e)}); decoding it with Pillow", stacklevel=3)
                fallback += chunk
                continue
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for j, image in enumerate(decoded):
                by_shape.setdefault(tuple(image.shape), []).append(j)
            for members in by_shape.values():  # one resize per distinct shape, not per image
                out[[chunk[j] for j in members]] = fit_on_device(torch.stack([decoded[j] for j in members]), size).cpu()
    bar.close()
    if not fallback:
        return out, list(range(len(files))), []
    order = sorted(fallback)
    rest, keep_rest, skipped = _decode_with_pillow([files[i] for i in order], size, strict, progress)
    out[[order[j] for j in keep_rest]] = rest[keep_rest]
    bad = {order[j] for j in set(range(len(order))) - set(keep_rest)}
    return out, [i for i in range(len(files)) if i not in bad], skipped


# -- CIFAR-10 python files ---------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # How protocol-2 pickles written by Python 3 spell bytes: _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR-10 batch refers to: numpy's array and dtype reconstruction, and bytes."""
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    allowed[("_codecs", "encode")] = _latin1_encode
    for package in ("numpy.core", "numpy._core"):  # numpy 1 writes numpy.core, numpy 2 numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that admits dicts, lists, tuples, bytes, str, numbers and numpy arrays, and nothing else.

    Anything else a pickle asks for (a function to call, a class to build) stops
    the load before it runs: reading DATA never executes code.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_globals().get((module, name))
        if found is None:
            raise _RefusedGlobal(show_path(f"{module}.{name}"[:120]))
        return found


_PLAIN_KINDS = "biufSU"  # bool, integers, floats, byte and text strings: no objects


def _array_bytes(obj: Any, depth: int = 0) -> int:
    """The bytes held by the arrays in ``obj``; raises unless it is made only of plain containers, scalars and arrays."""
    if depth > 8:
        raise pickle.UnpicklingError("nested too deeply")
    if isinstance(obj, dict):
        return sum(_array_bytes(k, depth + 1) + _array_bytes(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(_array_bytes(item, depth + 1) for item in obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in _PLAIN_KINDS:
            raise pickle.UnpicklingError(f"an array of {obj.dtype}")
        return obj.nbytes
    if obj is not None and not isinstance(obj, (bytes, str, int, float)):
        raise pickle.UnpicklingError(f"a {type(obj).__name__}")
    return 0


def read_cifar_pickle(path: Path) -> dict:
    """The dict in a CIFAR-10 python file, unpickled with only the types the format uses; DataError naming it otherwise."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            obj = _BatchUnpickler(fh, encoding="bytes").load()
        # Array data comes from the file's own bytes; an array larger than the file was
        # conjured from a declared shape alone (a memory bomb), never by a real batch.
        if _array_bytes(obj) > size:
            raise pickle.UnpicklingError(f"arrays larger than the {size}-byte file")
        if not isinstance(obj, dict):
            raise pickle.UnpicklingError(f"a {type(obj).__name__}, not a dict")
    except _RefusedGlobal as e:
        raise DataError(f"{show_path(path)}: damaged, or not a CIFAR-10 python file: it refers to {e}, which the format "
                        "never uses (refused; nothing in it was run)") from None  # fmt: skip
    except OSError as e:
        raise DataError(f"{show_path(path)}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # a damaged pickle raises many types
        text = " ".join(str(e).split())[:160]
        raise DataError(f"{show_path(path)}: damaged, or not a CIFAR-10 python file ({type(e).__name__}: {text})") from None
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
