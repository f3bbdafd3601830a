"""One image file (or its bytes) as a (C, S, S) uint8 tensor: Pillow for images, numpy for arrays.

Decoding uses Pillow (torchvision's own image datasets use it too): it reads every
format people keep images in (BMP and TIFF included), applies EXIF rotation,
converts palette, CMYK, 16-bit, float and alpha images to RGB, and decodes large
JPEGs at a reduced scale (``draft``), which is most of the cost on big photos.
Every image is resized (shorter side to S) and centre-cropped to S x S. Arrays
(.npy, .npz) and multi-page TIFFs of grey pages are stacks of bands, read by
:mod:`simsiam.stacks`; the format is recognised from the file's first bytes, not
its name.

One channel is any image file read as one grey channel (colour images as their
luma, ITU-R 601, as Pillow's ``convert("L")``; 16-bit values by the fixed rule of
:func:`simsiam.stacks.eight_bit`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .guards import MAX_PIXELS, error_text, open_regular, quiet_bomb_warning
from .io import show_path
from .stacks import MAX_CHANNELS, NPY_MAGIC, SIXTEEN_BIT, ZIP_MAGIC, array_dims_of, decode_array, decode_pages, eight_bit, stack_pages

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
            raise DataError(f"{name}: cannot read ({e.strerror})") from e
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
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
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
