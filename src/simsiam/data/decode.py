"""One image file (or its bytes) as a (C, S, S) uint8 tensor, behind the guards every read of DATA passes.

The guards: regular files only, a pixel limit, one-line reasons.

- :func:`open_regular` never opens a file that is not a regular file (opening a
  FIFO blocks until someone writes to it; a device may never end);
- :data:`MAX_PIXELS` is the most pixels an image (or a band of a stack) may
  declare in its header before anything is allocated for it, and
  :data:`MAX_IMAGE_BYTES` the most bytes of values a stack may declare: the
  per-image memory budget, checked from the header before anything is read;
- :func:`quiet_bomb_warning` silences Pillow's warning for images below that
  limit, without changing Pillow's global state from a worker thread;
- :func:`~simsiam.files.error_text` puts whatever a broken file made a parser
  raise on one printable line.

Decoding uses Pillow (torchvision's own image datasets use it too): it reads every
format people keep images in (BMP and TIFF included), applies EXIF rotation,
converts palette, CMYK, 16-bit, float and alpha images to RGB, and decodes large
JPEGs at a reduced scale (``draft``), which is most of the cost on big photos.
Every image is resized (shorter side to S) and centre-cropped to S x S, here and
only here: :func:`fit_pil` for what Pillow decodes, :func:`fit_tensor` for what
is decoded elsewhere (nvJPEG, CIFAR batches). Arrays
(.npy, .npz) and multi-page TIFFs of grey pages are stacks of bands, read by
the stack functions below; the format is recognised from the file's first bytes, not
its name.

One channel is any image file read as one grey channel (colour images as their
luma, ITU-R 601, as Pillow's ``convert("L")``; 16-bit values by the fixed rule of
:func:`eight_bit`).

Stacks. An array file holds one H x W x C (or H x W for one band) array of uint8 or
uint16; a multi-page TIFF holds one 8- or 16-bit grey band per page, every page
of one size. Each band is resized as an image is.

16-bit values become 8-bit by one fixed rule, the same for every file
(:func:`eight_bit`): x * 255 / 65535, rounded, so a band value means the same in
every image of a folder.

A stack is refused from its header when it declares more than
:data:`MAX_PIXELS` pixels a band, :data:`MAX_CHANNELS` bands
(a TIFF: pages) or :data:`MAX_IMAGE_BYTES` bytes of values (the
per-image budget; a 1 MB .npz of zeros can declare gigabytes); an array is read with ``allow_pickle=False`` (never as
Python objects), only after its header's dtype, shape and size were checked, and
only when the file holds as many bytes as the header declares.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from simsiam.errors import DataError
from simsiam.files import error_text, os_error_text, show_path

# Pillow's own decompression-bomb error threshold (2 x Image.MAX_IMAGE_PIXELS at its
# default): about 13,400 x 13,400, far beyond any photo, and room for big satellite
# tiles. Images above it are refused from their header. Pillow refuses above its
# own threshold as well; raising both (this and PIL.Image.MAX_IMAGE_PIXELS) admits more.
MAX_PIXELS = 178_956_970
# The per-image memory budget: the bytes of an 8-bit RGB image of MAX_PIXELS (about 537 MB).
# An array or a stack of pages whose header declares more bytes of values is refused before
# any of them is read or decompressed (a 1 MB .npz can declare gigabytes of zeros).
MAX_IMAGE_BYTES = 3 * MAX_PIXELS

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


@contextlib.contextmanager
def quiet_bomb_warning():
    """Silence Pillow's warning for images between half its limit and its limit, which are accepted here.

    Warning filters are process-wide: they are changed on the main thread only
    (decode_chunks does it around its worker threads), never from two threads at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


# -- stacks of bands: arrays (.npy, .npz) and multi-page TIFFs ----------------------

# Bands of a multispectral stack: hyperspectral sensors have a few hundred.
MAX_CHANNELS = 512
# Files that may hold a stack of bands (other than 3): their headers are read to count them.
STACK_EXTENSIONS = (".npy", ".npz", ".tif", ".tiff")
# The first bytes of an .npy array and of an .npz archive (a zip file).
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def eight_bit(array: np.ndarray) -> np.ndarray:
    """uint8 from uint8, or from 16-bit values by the fixed rule x * 255 / 65535, rounded: (x + 128) // 257.

    Converted a block of rows at a time, so that the 32-bit temporaries stay small
    whatever the size of the array (a whole band in 32 bits would be twice its 16 bits).
    """
    if array.dtype == np.uint8:
        return array
    out = np.empty(array.shape, dtype=np.uint8)
    if out.ndim == 0:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    rows = max(1, (1 << 20) // max(1, out[0].size))
    for i in range(0, len(out), rows):
        out[i : i + rows] = (array[i : i + rows].astype(np.uint32) + 128) // 257
    return out


def decode_array(fh: BinaryIO, size: int, name: str, channels: int | None, is_zip: bool) -> torch.Tensor:
    """An .npy or .npz image array as (C, size, size) uint8; DataError naming the file when C is not ``channels``."""
    array = _read_array(fh, name, is_zip)  # (H, W, C), uint8 or uint16
    _want(array.shape[2], channels, name)
    return _fit_bands((array[:, :, c] for c in range(array.shape[2])), array.shape[2], size)


def decode_pages(img: Image.Image, size: int, name: str, channels: int | None) -> torch.Tensor:
    """A multi-page TIFF of grey pages (see :func:`stack_pages`) as (C, size, size) uint8, one band per page.

    The pages are counted (at most :data:`MAX_CHANNELS` + 1 are walked) and the
    stack checked against the budget before any page is decoded; then they are read
    in one pass, each resized as it is read (one page in memory at a time).
    """
    pages, (width, height) = stack_pages(img), img.size
    if pages > MAX_CHANNELS:
        raise DataError(f"{name}: a TIFF of more than {MAX_CHANNELS} pages; a stack holds at most {MAX_CHANNELS} bands, one per page")
    _check_stack(height, width, pages, 1, name)
    _want(pages, channels, name)
    return _fit_bands(_tiff_bands(img, pages, name), pages, size)


def stack_pages(img: Image.Image) -> int:
    """The pages of an open multi-page TIFF of grey pages (a stack of bands: multispectral, or a z-stack); 0 for anything else.

    At most :data:`MAX_CHANNELS` + 1 pages are walked (Pillow's walk along the
    chain of pages is quadratic in their number, and ``n_frames`` walks them all):
    a larger count comes back as MAX_CHANNELS + 1. A damaged chain of pages counts
    as one page: its first is read as an image, as before stacks were read.
    """
    if img.format != "TIFF" or img.mode not in ("L", "1", *SIXTEEN_BIT):
        return 0
    try:
        pages = 1
        while pages <= MAX_CHANNELS:  # one page further each time, up to page MAX_CHANNELS + 1, no further
            try:
                img.seek(pages)
            except EOFError:
                break
            pages += 1
        img.seek(0)
    except Exception:  # Pillow raises several types for a broken page chain
        try:
            img.seek(0)
        except Exception:
            pass
        return 0
    return pages if pages > 1 else 0


def is_stack(img: Image.Image) -> bool:
    """Whether an open image is a multi-page TIFF of grey pages (see :func:`stack_pages`)."""
    return stack_pages(img) > 0


def array_dims_of(fh: BinaryIO, is_zip: bool) -> tuple[int, int, int]:
    """(H, W, C) of an array file from its header alone; DataError when it is not a readable image array."""
    if not is_zip:
        return _array_dims(*_npy_header(fh, ""), "")
    with np.load(fh, allow_pickle=False) as z:
        key = _npz_member(z, "")
        with z.zip.open(key + ".npy" if key + ".npy" in z.zip.namelist() else key) as m:
            return _array_dims(*_npy_header(m, ""), "")


def fit_pil(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (bicubic, antialiased), then the centre ``size`` x ``size``."""
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)


def fit_tensor(images: torch.Tensor, size: int) -> torch.Tensor:
    """(n, C, H, W) uint8 -> (n, C, size, size) uint8: shorter side to size (bilinear, antialiased), centre crop; on their device."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = images.float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)


def jpeg_read_mode(channels: int):
    """torchvision's decode_jpeg mode (nvJPEG's too) for images of ``channels`` (1: grey, 3: RGB)."""
    from torchvision.io import ImageReadMode

    return ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY


def _want(got: int, channels: int | None, name: str) -> None:
    """DataError naming the file when its ``got`` bands are not the count asked for."""
    if channels is not None and got != channels:
        raise DataError(f"{name}: {got} channel{'s' if got != 1 else ''}, where the data has {channels}")


def _fit_bands(bands: Iterator[np.ndarray], count: int, size: int) -> torch.Tensor:
    """``count`` (H, W) uint8 or uint16 bands -> (count, size, size) uint8, one band at a time.

    Each band is made 8-bit (:func:`eight_bit`) and resized and cropped as an image
    is (bicubic, shorter side, centre); only one band's copies exist at a time.
    """
    out = np.empty((count, size, size), dtype=np.uint8)
    for c, band in enumerate(bands):
        band = Image.fromarray(np.ascontiguousarray(eight_bit(band)))
        out[c] = np.asarray(fit_pil(band, size))
    return torch.from_numpy(out)


def _check_stack(height: int, width: int, channels: int, itemsize: int, name: str) -> None:
    """Refuse, from the header, a stack too large to decode: MAX_PIXELS a band, MAX_CHANNELS, MAX_IMAGE_BYTES of values."""
    if not (height >= 1 and width >= 1 and channels >= 1):
        raise DataError(f"{name}: an empty array ({height} x {width} x {channels})")
    if channels > MAX_CHANNELS:
        raise DataError(f"{name}: {channels} channels, more than {MAX_CHANNELS} (arrays are H x W x C: is this one C x H x W?)")
    values = height * width * channels
    if width * height > MAX_PIXELS or values * itemsize > MAX_IMAGE_BYTES:
        raise DataError(
            f"{name}: refused as a possible decompression bomb ({height} x {width} x {channels} = {values:,} values of "
            f"{itemsize} byte{'s' if itemsize > 1 else ''}, above the limit of {MAX_PIXELS:,} pixels a band and "
            f"{MAX_IMAGE_BYTES:,} bytes an image)"
        )


def _tiff_bands(img: Image.Image, pages: int, name: str) -> Iterator[np.ndarray]:
    """The ``pages`` pages of a TIFF, in one pass, as (H, W) uint8 or uint16 bands; every page an 8- or 16-bit grey band of one size."""
    width, height = img.size
    for i, page in enumerate(ImageSequence.Iterator(img)):
        if i == pages:
            break
        if page.size != (width, height):
            raise DataError(
                f"{name}: page {i + 1} is {page.width}x{page.height}, page 1 {width}x{height}; the bands of a stack share one size"
            )
        if page.mode not in ("L", "1", *SIXTEEN_BIT):
            raise DataError(
                f"{name}: page {i + 1} is a {page.mode} image; a multi-page TIFF is read as one 8- or 16-bit grey band per page"
            )
        page.load()
        if page.mode == "1":
            yield np.asarray(page.convert("L"))
        else:
            yield np.asarray(page) if page.mode == "L" else np.asarray(page, dtype=np.uint16)


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
        raise DataError(f"{name}: not a readable .npy array ({error_text(e)})") from None
    return tuple(int(n) for n in shape), dtype


def _array_dims(shape: tuple[int, ...], dtype: np.dtype, name: str) -> tuple[int, int, int]:
    """(H, W, C) of an H x W x C (or H x W) uint8 or uint16 array, checked against the limits; DataError otherwise."""
    if dtype.kind != "u" or dtype.itemsize not in (1, 2) or dtype.names is not None or dtype.subdtype is not None:
        raise DataError(f"{name}: an array of {dtype}; image arrays are uint8 or uint16")
    if len(shape) not in (2, 3):
        raise DataError(f"{name}: an array of shape {shape}; image arrays are H x W x C (or H x W for one channel)")
    height, width, channels = (*shape, 1) if len(shape) == 2 else shape
    _check_stack(height, width, channels, dtype.itemsize, name)
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
    """An .npy or .npz image array as (H, W, C) uint8 or uint16: header checked, size checked, then read without pickles.

    Nothing is read or decompressed before the header's dtype, shape and bytes were
    checked against the budget (:func:`_check_stack`); then numpy reads exactly the
    declared bytes into one array of that size.
    """
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
    return array.reshape(height, width, channels)


# -- images: Pillow, the allowed formats only ------------------------------------------

# The only formats Pillow may open, told apart by their content (the file name plays no part):
# what people keep photos and scans in. Pillow knows some forty formats; some of its plugins
# hand the file to an external program (EPS and PostScript to Ghostscript), so every other
# plugin stays shut, whatever a file in DATA is named. Arrays (.npy, .npz) are read by numpy.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
READ_FORMATS = "JPEG, PNG, WebP, BMP, GIF (its first frame), TIFF, or a .npy/.npz array"


def open_image(fh: BinaryIO) -> Image.Image:
    """``Image.open`` restricted to :data:`IMAGE_FORMATS`: reads the header only; UnidentifiedImageError for any other format."""
    return Image.open(fh, formats=IMAGE_FORMATS)


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
    simsiam.errors.DataError: image bytes: not an image of a format that is read (JPEG, PNG, WebP, BMP, GIF (its first frame), TIFF, or a .npy/.npz array)
    """
    name = "image bytes" if isinstance(source, bytes) else show_path(source)
    if channels is not None and not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be in [1, {MAX_CHANNELS}], got {channels}")
    try:
        with quiet_bomb_warning():
            return _decode_source(source, size, name, channels)
    except DataError:
        raise
    except Exception as e:  # Pillow's parsers also raise SyntaxError, struct.error, IndexError, MemoryError, ...
        if isinstance(e, OSError) and e.errno is not None:  # the file itself: missing, unreadable, a link loop
            raise DataError(f"{name}: cannot read ({os_error_text(e)})") from e
        if isinstance(e, UnidentifiedImageError):
            raise DataError(f"{name}: not an image of a format that is read ({READ_FORMATS})") from e
        if isinstance(e, Image.DecompressionBombError):
            raise DataError(f"{name}: refused as a possible decompression bomb ({error_text(e)})") from e
        raise DataError(f"{name}: cannot decode image ({type(e).__name__}: {error_text(e)})") from e


def _decode_source(source: str | Path | bytes, size: int, name: str, channels: int | None = None) -> torch.Tensor:
    if isinstance(source, bytes):
        return _decode_any(io.BytesIO(source), size, name, channels)
    with open_regular(source) as fh:
        return _decode_any(fh, size, name, channels)


def _decode_any(fh: BinaryIO, size: int, name: str, channels: int | None) -> torch.Tensor:
    """An array file (.npy, .npz) or an image (Pillow), told apart by the first bytes."""
    magic = fh.read(6)
    fh.seek(0)
    if not magic:
        raise DataError(f"{name}: an empty file (0 bytes)")
    if magic.startswith(NPY_MAGIC) or magic.startswith(ZIP_MAGIC):
        return decode_array(fh, size, name, channels, magic.startswith(ZIP_MAGIC))
    return _decode(fh, size, name, channels)


def _check_pixels(img: Image.Image, name: str) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise DataError(
            f"{name}: refused as a possible decompression bomb ({width}x{height} = {width * height:,} pixels, "
            f"above the limit of {MAX_PIXELS:,})"
        )


def _decode(fh: BinaryIO, size: int, name: str, channels: int | None = None) -> torch.Tensor:
    with open_image(fh) as img:  # reads the header only
        _check_pixels(img, name)
        # A stack of grey pages is C bands; read as an image (its first page, as ever) only where 1 or 3 channels are asked.
        pages = stack_pages(img)  # walks at most MAX_CHANNELS + 1 pages, never the whole chain
        if pages and (channels is None or channels == pages or channels not in (1, 3)):
            return decode_pages(img, size, name, channels)
        if channels not in (None, 1, 3):
            raise DataError(f"{name}: an image file, read as 3 (RGB) or 1 (grey) channels, where the data has {channels}")
        grey = channels == 1
        if img.format == "JPEG":
            img.draft("L" if grey else "RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale when that still covers size
        img = ImageOps.exif_transpose(img)
        img = _to_grey(img) if grey else _to_rgb(img)
        img = fit_pil(img, size)
        array = np.asarray(img, dtype=np.uint8)  # (S, S, 3), or (S, S) grey
    if grey:
        return torch.from_numpy(array.copy()).unsqueeze(0)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _to_grey(img: Image.Image) -> Image.Image:
    """One 8-bit channel: 16-bit and 32-bit integer values by the fixed rule, anything else as RGB's luma."""
    if img.mode in (*SIXTEEN_BIT, "I"):
        array = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)  # 32-bit integers taken as 16-bit values
        return Image.fromarray(eight_bit(array))
    if img.mode == "L":
        return img
    return _to_rgb(img).convert("L")  # float scaling and transparency over white as for RGB, then ITU-R 601 luma


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
        with open_regular(path) as fh, quiet_bomb_warning():
            magic = fh.read(6)
            fh.seek(0)
            if magic.startswith(NPY_MAGIC) or magic.startswith(ZIP_MAGIC):
                height, width, channels = array_dims_of(fh, magic.startswith(ZIP_MAGIC))
            else:
                with open_image(fh) as img:
                    (width, height), channels = img.size, stack_pages(img) or 3
            if channels > MAX_CHANNELS:  # a TIFF of too many pages: the decoding pass names it
                return None
            return width, height, channels
    except Exception:  # unreadable files are reported by the decoding pass
        return None
