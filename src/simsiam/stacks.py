"""Multispectral stacks: arrays (.npy, .npz) and multi-page TIFFs of C bands, as (C, S, S) uint8.

An array file holds one H x W x C (or H x W for one band) array of uint8 or
uint16; a multi-page TIFF holds one 8- or 16-bit grey band per page, every page
of one size. Each band is resized as an image is.

16-bit values become 8-bit by one fixed rule, the same for every file
(:func:`eight_bit`): x * 255 / 65535, rounded, so a band value means the same in
every image of a folder.

A stack is refused from its header when it declares more than
:data:`~simsiam.guards.MAX_PIXELS` pixels, :data:`MAX_CHANNELS` bands or
3 x MAX_PIXELS values; an array is read with ``allow_pickle=False`` (never as
Python objects), only after its header's dtype, shape and size were checked, and
only when the file holds as many bytes as the header declares.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import DataError
from .guards import MAX_PIXELS, error_text

# Bands of a multispectral stack: hyperspectral sensors have a few hundred.
MAX_CHANNELS = 512
# Files that may hold a stack of bands (other than 3): their headers are read to count them.
STACK_EXTENSIONS = (".npy", ".npz", ".tif", ".tiff")
# The first bytes of an .npy array and of an .npz archive (a zip file).
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def eight_bit(array: np.ndarray) -> np.ndarray:
    """uint8 from uint8, or from 16-bit values by the fixed rule x * 255 / 65535, rounded: (x + 128) // 257."""
    if array.dtype == np.uint8:
        return array
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def decode_array(fh: BinaryIO, size: int, name: str, channels: int | None, is_zip: bool) -> torch.Tensor:
    """An .npy or .npz image array as (C, size, size) uint8; DataError naming the file when C is not ``channels``."""
    return _fit_bands(_want(_read_array(fh, name, is_zip), channels, name), size)


def decode_pages(img: Image.Image, size: int, name: str, channels: int | None) -> torch.Tensor:
    """A multi-page TIFF of grey pages (see :func:`is_stack`) as (C, size, size) uint8, one band per page."""
    return _fit_bands(_want(_tiff_bands(img, name), channels, name), size)


def is_stack(img: Image.Image) -> bool:
    """Whether an open image is a multi-page TIFF of grey pages: a stack of bands (multispectral, or a z-stack).

    A damaged chain of pages counts as one page: its first is read as an image, as before stacks were read.
    """
    if img.format != "TIFF" or img.mode not in ("L", "1", *SIXTEEN_BIT):
        return False
    try:
        return img.n_frames > 1
    except Exception:  # Pillow raises several types for a broken page chain
        return False


def array_dims_of(fh: BinaryIO, is_zip: bool) -> tuple[int, int, int]:
    """(H, W, C) of an array file from its header alone; DataError when it is not a readable image array."""
    if not is_zip:
        return _array_dims(*_npy_header(fh, ""), "")
    with np.load(fh, allow_pickle=False) as z:
        key = _npz_member(z, "")
        with z.zip.open(key + ".npy" if key + ".npy" in z.zip.namelist() else key) as m:
            return _array_dims(*_npy_header(m, ""), "")


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
            raise DataError(
                f"{name}: page {i + 1} is {img.width}x{img.height}, page 1 {width}x{height}; the bands of a stack share one size"
            )
        if img.mode not in ("L", "1", *SIXTEEN_BIT):
            raise DataError(f"{name}: page {i + 1} is a {img.mode} image; a multi-page TIFF is read as one 8- or 16-bit grey band per page")
        img.load()
        if img.mode == "1":
            bands[i] = np.asarray(img.convert("L"))
        else:
            bands[i] = eight_bit(np.asarray(img) if img.mode == "L" else np.asarray(img, dtype=np.uint16))
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
        raise DataError(f"{name}: not a readable .npy array ({error_text(e)})") from None
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
    return eight_bit(np.moveaxis(array, 2, 0))  # (C, H, W)
