"""Image files to uint8 tensors: Pillow on the CPU, nvJPEG on the GPU for folders of JPEGs.

Decoding uses Pillow (torchvision's own image datasets use it too): it reads every
format people keep images in (BMP and TIFF included), applies EXIF rotation,
converts palette, CMYK, 16-bit, float and alpha images to RGB, and decodes large
JPEGs at a reduced scale (``draft``), which is most of the cost on big photos.
Every image is resized (shorter side to S) and centre-cropped to S x S.

Images of other channel counts (:func:`decode_image`'s ``channels``):

- one channel: any image file read as one grey channel (colour images as their
  luma, ITU-R 601, as Pillow's ``convert("L")``);
- multispectral stacks of C bands: ``.npy`` arrays and ``.npz`` archives of one
  array, H x W x C (or H x W for one band), uint8 or uint16, and multi-page TIFFs
  with one 8- or 16-bit grey band per page. Each band is resized as an image is.

16-bit values (uint16 arrays, 16-bit TIFF pages and one-channel 16-bit images)
become 8-bit by one fixed rule, the same for every file: x * 255 / 65535, rounded
(``round(x / 257)``), so a band value means the same in every image of a folder.
The format is recognised from the file's first bytes, not its name.

What is never done, whatever DATA holds:

- a file that is not a regular file (a FIFO, a device, a socket) is never opened
  (opening a FIFO blocks until someone writes to it); it is named and skipped;
- an image that declares more than :data:`MAX_PIXELS` pixels is refused from its
  header, before anything is allocated for it (a 100-byte PNG can declare
  30000 x 30000 pixels: 2.7 GB decoded); a stack, likewise, above MAX_PIXELS
  pixels, :data:`MAX_CHANNELS` bands or 3 x MAX_PIXELS values;
- an array file is read with ``allow_pickle=False`` (never as Python objects),
  only after its header's dtype, shape and size were checked, and only when the
  file holds as many bytes as the header declares;
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
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .io import show_path

__all__ = ["MAX_PIXELS", "decode_image", "decode_files", "image_size_of", "open_regular", "read_cifar_pickle", "show_path"]
__all__ += ["MAX_CHANNELS", "channels_of"]

# Pillow's own decompression-bomb error threshold (2 x Image.MAX_IMAGE_PIXELS at its
# default): about 13,400 x 13,400, far beyond any photo, and room for big satellite
# tiles. Images above it are refused from their header. Pillow refuses above its
# own threshold as well; raising both (this and PIL.Image.MAX_IMAGE_PIXELS) admits more.
MAX_PIXELS = 178_956_970
JPEG_EXTENSIONS = (".jpg", ".jpeg")
# Bands of a multispectral stack: hyperspectral sensors have a few hundred.
MAX_CHANNELS = 512
# Files that may hold a stack of bands (other than 3): their headers are read to count them.
STACK_EXTENSIONS = (".npy", ".npz", ".tif", ".tiff")
_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")

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


def decode_image(source: str | Path | bytes, size: int, channels: int | None = None) -> torch.Tensor:
    """One image file (or its bytes) as a (C, size, size) uint8 tensor: RGB by default.

    Shorter side resized to ``size`` (antialiased), then centre-cropped.
    ``channels``: None takes an image file as RGB and a stack (``.npy``, ``.npz``,
    multi-page TIFF) with its own C bands; 3 is RGB; 1 is one grey channel (colour
    images as their luma); other C take stacks of C bands only. A file with another
    channel count raises DataError naming it and both counts.
    Raises DataError, naming the file, for anything that cannot be read or decoded
    (Pillow raises a dozen exception types for broken files; callers see one).

    >>> decode_image(b"not an image", 8)
    Traceback (most recent call last):
    ...
    simsiam.errors.DataError: image bytes: not an image (no format recognised)
    """
    name = "image bytes" if isinstance(source, bytes) else show_path(source)
    if channels is not None and not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be in [1, {MAX_CHANNELS}], got {channels}")
    try:
        with _quiet_bomb_warning():
            return _decode_source(source, size, name, channels)
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


def _decode_source(source: str | Path | bytes, size: int, name: str, channels: int | None = None) -> torch.Tensor:
    if isinstance(source, bytes):
        return _decode_any(io.BytesIO(source), size, name, channels)
    with open_regular(source) as fh:
        return _decode_any(fh, size, name, channels)


def _decode_any(fh: BinaryIO, size: int, name: str, channels: int | None) -> torch.Tensor:
    """An array file (.npy, .npz) or an image (Pillow), told apart by the first bytes."""
    magic = fh.read(6)
    fh.seek(0)
    if magic.startswith(_NPY_MAGIC) or magic.startswith(_ZIP_MAGIC):
        return _fit_bands(_want(_read_array(fh, name, magic.startswith(_ZIP_MAGIC)), channels, name), size)
    return _decode(fh, size, name, channels)


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


def _decode(fh: BinaryIO, size: int, name: str, channels: int | None = None) -> torch.Tensor:
    with Image.open(fh) as img:  # reads the header only
        _check_pixels(img, name)
        # A stack of grey pages is C bands; read as an image (its first page, as ever) only where 1 or 3 channels are asked.
        if _is_stack(img) and (channels is None or channels == img.n_frames or channels not in (1, 3)):
            return _fit_bands(_want(_tiff_bands(img, name), channels, name), size)
        if channels not in (None, 1, 3):
            raise DataError(f"{name}: an image file, read as 3 (RGB) or 1 (grey) channels, where the data has {channels}")
        grey = channels == 1
        if img.format == "JPEG":
            img.draft("L" if grey else "RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale when that still covers size
        img = ImageOps.exif_transpose(img)
        img = _to_grey(img) if grey else _to_rgb(img)
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        array = np.asarray(img, dtype=np.uint8)  # (S, S, 3), or (S, S) grey
    if grey:
        return torch.from_numpy(array.copy()).unsqueeze(0)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _is_stack(img: Image.Image) -> bool:
    """Whether an open image is a multi-page TIFF of grey pages: a stack of bands (multispectral, or a z-stack).

    A damaged chain of pages counts as one page: its first is read as an image, as before stacks were read.
    """
    if img.format != "TIFF" or img.mode not in ("L", "1", *_SIXTEEN_BIT):
        return False
    try:
        return img.n_frames > 1
    except Exception:  # Pillow raises several types for a broken page chain
        return False


def _to_grey(img: Image.Image) -> Image.Image:
    """One 8-bit channel: 16-bit and 32-bit integer values by the fixed rule, anything else as RGB's luma."""
    if img.mode in (*_SIXTEEN_BIT, "I"):
        array = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)  # 32-bit integers taken as 16-bit values
        return Image.fromarray(_eight_bit(array))
    if img.mode == "L":
        return img
    return _to_rgb(img).convert("L")  # float scaling and transparency over white as for RGB, then ITU-R 601 luma


def _eight_bit(array: np.ndarray) -> np.ndarray:
    """uint8 from uint8, or from 16-bit values by the fixed rule x * 255 / 65535, rounded: (x + 128) // 257."""
    if array.dtype == np.uint8:
        return array
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _want(bands: np.ndarray, channels: int | None, name: str) -> np.ndarray:
    """The (C, H, W) bands, or DataError naming the file when C is not the count asked for."""
    if channels is not None and bands.shape[0] != channels:
        got = bands.shape[0]
        raise DataError(f"{name}: {got} channel{'s' if got != 1 else ''}, where the data has {channels}")
    return bands


def _fit_bands(bands: np.ndarray, size: int) -> torch.Tensor:
    """(C, H, W) uint8 -> (C, size, size): each band resized and cropped as an image is (bicubic, shorter side, centre)."""
    out = np.empty((bands.shape[0], size, size), dtype=np.uint8)
    for c, band in enumerate(bands):
        out[c] = np.asarray(ImageOps.fit(Image.fromarray(np.ascontiguousarray(band)), (size, size), method=Image.Resampling.BICUBIC))
    return torch.from_numpy(out)


def _check_stack(height: int, width: int, channels: int, name: str) -> None:
    """Refuse, from the header, a stack too large to decode: the image pixel limit, MAX_CHANNELS, 3 x MAX_PIXELS values."""
    if not (height >= 1 and width >= 1 and channels >= 1):
        raise DataError(f"{name}: an empty array ({height} x {width} x {channels})")
    if channels > MAX_CHANNELS:
        raise DataError(f"{name}: {channels} channels, more than {MAX_CHANNELS} (arrays are H x W x C: is this one C x H x W?)")
    if width * height > MAX_PIXELS or width * height * channels > 3 * MAX_PIXELS:
        raise DataError(
            f"{name}: refused as a possible decompression bomb ({height} x {width} x {channels} = {height * width * channels:,} values, "
            f"above the limit of {MAX_PIXELS:,} pixels and {3 * MAX_PIXELS:,} values)"
        )


def _tiff_bands(img: Image.Image, name: str) -> np.ndarray:
    """A multi-page TIFF as (C, H, W) uint8, one band per page; every page one 8- or 16-bit grey band of one size."""
    pages, (width, height) = img.n_frames, img.size
    _check_stack(height, width, pages, name)
    bands = np.empty((pages, height, width), dtype=np.uint8)
    for i in range(pages):
        img.seek(i)
        if img.size != (width, height):
            raise DataError(f"{name}: page {i + 1} is {img.width}x{img.height}, page 1 {width}x{height}; the bands of a stack share one size")
        if img.mode not in ("L", "1", *_SIXTEEN_BIT):
            raise DataError(f"{name}: page {i + 1} is a {img.mode} image; a multi-page TIFF is read as one 8- or 16-bit grey band per page")
        img.load()
        if img.mode == "1":
            bands[i] = np.asarray(img.convert("L"))
        else:
            bands[i] = _eight_bit(np.asarray(img) if img.mode == "L" else np.asarray(img, dtype=np.uint16))
    return bands


def _npy_header(fh: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an .npy stream declares (its header only; nothing else is read)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]}, not 1.0 or 2.0")
    except ValueError as e:
        raise DataError(f"{name}: not a readable .npy array ({_short(e)})") from None
    return tuple(int(n) for n in shape), dtype


def _array_dims(shape: tuple[int, ...], dtype: np.dtype, name: str) -> tuple[int, int, int]:
    """(H, W, C) of an H x W x C (or H x W) uint8 or uint16 array, checked against the limits; DataError otherwise."""
    if dtype.kind != "u" or dtype.itemsize not in (1, 2) or dtype.names is not None or dtype.subdtype is not None:
        raise DataError(f"{name}: an array of {dtype}; image arrays are uint8 or uint16")
    if len(shape) not in (2, 3):
        raise DataError(f"{name}: an array of shape {shape}; image arrays are H x W x C (or H x W for one channel)")
    height, width, channels = (*shape, 1) if len(shape) == 2 else shape
    _check_stack(height, width, channels, name)
    return height, width, channels


def _npz_member(z, name: str) -> str:
    """The array of an .npz archive to read: its only one, or the one named 'image'."""
    keys = list(z.files)
    if "image" in keys:
        return "image"
    if len(keys) != 1:
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise DataError(f"{name}: an .npz of {len(keys)} arrays ({shown}); save one array, or name the image 'image'")
    return keys[0]


def _read_array(fh: BinaryIO, name: str, is_zip: bool) -> np.ndarray:
    """An .npy or .npz image array as (C, H, W) uint8: header checked, size checked, then read without pickles."""
    if not is_zip:
        shape, dtype = _npy_header(fh, name)
        height, width, channels = _array_dims(shape, dtype, name)
        start, end = fh.tell(), fh.seek(0, io.SEEK_END)
        needed = height * width * channels * dtype.itemsize
        if end - start < needed:
            raise DataError(f"{name}: truncated: its header declares {needed:,} bytes of pixels, the file holds {end - start:,}")
        fh.seek(0)
        array = np.load(fh, allow_pickle=False)
    else:
        with np.load(fh, allow_pickle=False) as z:  # an archive: its members are not read yet
            key = _npz_member(z, name)
            member = key + ".npy" if key + ".npy" in z.zip.namelist() else key
            with z.zip.open(member) as m:
                shape, dtype = _npy_header(m, f"{name} ({key})")
            height, width, channels = _array_dims(shape, dtype, f"{name} ({key})")
            needed = height * width * channels * dtype.itemsize
            if z.zip.getinfo(member).file_size < needed:
                raise DataError(f"{name}: truncated: array {key!r} declares {needed:,} bytes of pixels, the archive holds fewer")
            array = z[key]
    array = array.reshape(height, width, channels)
    return _eight_bit(np.moveaxis(array, 2, 0))  # (C, H, W)


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
    """(width, height) from an image or array file's header, or None when it is not readable (or not a regular file)."""
    header = _header(path)
    return None if header is None else header[:2]


def channels_of(path: str | Path) -> int | None:
    """The channels a file decodes to by default, from its header: 3 for an image, C for a stack; None when unreadable."""
    header = _header(path)
    return None if header is None else header[2]


def _header(path: str | Path) -> tuple[int, int, int] | None:
    """(width, height, channels) from a file's header; None when it is not a readable image or array."""
    try:
        with open_regular(path) as fh, _quiet_bomb_warning():
            magic = fh.read(6)
            fh.seek(0)
            if magic.startswith(_NPY_MAGIC):
                height, width, channels = _array_dims(*_npy_header(fh, ""), "")
            elif magic.startswith(_ZIP_MAGIC):
                with np.load(fh, allow_pickle=False) as z:
                    key = _npz_member(z, "")
                    with z.zip.open(key + ".npy" if key + ".npy" in z.zip.namelist() else key) as m:
                        height, width, channels = _array_dims(*_npy_header(m, ""), "")
            else:
                with Image.open(fh) as img:
                    (width, height), channels = img.size, img.n_frames if _is_stack(img) else 3
            return width, height, channels
    except Exception:  # unreadable files are reported by the decoding pass
        return None


# -- a whole list of files ---------------------------------------------------------------------


def decode_files(
    files: list[Path],
    size: int,
    strict: bool = False,
    progress: bool = True,
    jpeg_device: str | torch.device | None = None,
    channels: int = 3,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode ``files`` into one (N, C, size, size) uint8 tensor, C = ``channels`` (see :func:`decode_image`).

    Returns the tensor, the indices of the files that decoded (the other rows
    are garbage) and, in file order, why each of the others did not (one line
    each, naming the file). With ``strict`` the first failure raises instead.

    ``jpeg_device`` (a torch device, "cuda" in practice) decodes the JPEGs in
    batches with torchvision's decode_jpeg on that device (nvJPEG on a GPU); the
    other files, and any JPEG it refuses, go through Pillow. Both paths accept
    and refuse the same files. The image cache decodes a chunk at a time
    instead (:func:`simsiam.bulk_decode.decode_chunks`), never holding a whole folder.
    """
    from .bulk_decode import decode_all

    return decode_all(files, size, strict, progress, jpeg_device, channels)


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
