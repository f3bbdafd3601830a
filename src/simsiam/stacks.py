"""Multispectral stacks: arrays (.npy, .npz) and multi-page TIFFs of C bands, as (C, S, S) uint8.

An array file holds one H x W x C (or H x W for one band) array of uint8 or
uint16; a multi-page TIFF holds one 8- or 16-bit grey band per page, every page
of one size. Each band is resized as an image is.

16-bit values become 8-bit by one fixed rule, the same for every file
(:func:`eight_bit`): x * 255 / 65535, rounded, so a band value means the same in
every image of a folder.

A stack is refused from its header when it declares more than
:data:`~simsiam.guards.MAX_PIXELS` pixels a band, :data:`MAX_CHANNELS` bands
(a TIFF: pages) or :data:`~simsiam.guards.MAX_IMAGE_BYTES` bytes of values (the
per-image budget; a 1 MB .npz of zeros can declare gigabytes); an array is read with ``allow_pickle=False`` (never as
Python objects), only after its header's dtype, shape and size were checked, and
only when the file holds as many bytes as the header declares.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

from .errors import DataError
from .guards import MAX_IMAGE_BYTES, MAX_PIXELS, error_text

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
        out[c] = np.asarray(ImageOps.fit(band, (size, size), method=Image.Resampling.BICUBIC))
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
