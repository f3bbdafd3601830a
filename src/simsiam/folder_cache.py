"""A folder's decoded images: found in the disk cache, or decoded into it; then held in memory or left on disk.

:func:`cached_folder` is the image-cache half of :func:`simsiam.data.load_folder`:

1. an entry of the folder's cache key that passes every check is used as it is
   (a damaged one is named in a :class:`~simsiam.io.CacheWarning`, removed and rebuilt);
2. otherwise, under the key's lock (one builder, the other DDP processes wait),
   the format is chosen (``raw``, or ``jpeg`` when asked, or with ``auto`` when raw
   would not fit in memory or on the disk), one line says what is about to be
   written, where, and how much disk is free (a disk that cannot hold it is a
   DataError naming the options that shrink it, before anything is written), and
   the images are decoded a chunk at a time straight into the entry;
3. the images are read into memory when they take under half of the free memory
   (``data_on="auto"``) or when asked (``"memory"``), else left on disk as
   :class:`~simsiam.disk_images.DiskImages` (``"disk"``; ``"gpu"`` leaves them for
   the batch source to copy to the GPU in chunks).

A cache folder that cannot be made at all (read-only, or a file in its place)
costs only speed when the images fit in memory: they are decoded into memory,
with a warning. A write that fails on the way (a full disk, a file-size limit)
is a DataError, and nothing half-written is kept.
"""

from __future__ import annotations

import errno
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .bulk_decode import decode_all, decode_chunks
from .cache import JPEG_QUALITY, DamagedCache, Entry, entry_path, images_dir, read_entry
from .cache_writer import EntryWriter, build_lock, remove_entry
from .decode import decode_image
from .disk_images import DiskImages, fits_in_memory, gib
from .errors import DataError
from .io import CacheWarning, show_path

__all__ = ["Stored", "cached_folder", "DATA_ON", "CACHE_FORMATS"]

DATA_ON = ("auto", "gpu", "memory", "disk")
CACHE_FORMATS = ("auto", "raw", "jpeg")
SHRINK = "shrink it with --image-size (or --cache-size), --cache-format jpeg, or set $SIMSIAM_CACHE to a folder on a disk with room"
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


@dataclass
class Stored:
    """What load_folder makes an ImageSet of: the images (in memory or on disk) and what the entry records."""

    images: torch.Tensor | DiskImages
    labels: list[int] | None
    classes: list[str]
    paths: list[str]
    skipped: list[str]


def cached_folder(
    key: str,
    files: list[Path],
    labels: list[int] | None,
    classes: list[str],
    size: int,
    channels: int = 3,
    cache_format: str = "auto",
    data_on: str = "auto",
    processes: int = 1,
    strict: bool = False,
    progress: bool = True,
    decode_device: str | None = None,
) -> Stored:
    """The decoded images of ``files`` (see the module's text)."""
    if cache_format not in CACHE_FORMATS or data_on not in DATA_ON:
        raise ValueError(f"cache_format must be one of {CACHE_FORMATS} and data_on one of {DATA_ON}")
    formats = ("raw", "jpeg") if cache_format == "auto" else (cache_format,)
    entry = _existing(key, formats)
    if entry is None:
        try:
            with build_lock(key):  # another process may have built it while this one waited
                entry = _existing(key, formats) or _build(key, files, labels, classes, size, channels, cache_format, data_on,
                                                          processes, strict, progress, decode_device)  # fmt: skip
        except OSError as e:  # the cache folder cannot be made or written at all (errors on the way are DataErrors)
            raw = len(files) * channels * size * size
            if e.errno in _NO_ROOM or not fits_in_memory(raw, processes)[0]:
                raise _write_error(e, images_dir(), len(files), size, f"{gib(raw)} (raw)") from None
            return _in_memory(files, labels, classes, size, channels, strict, progress, decode_device, e)
    if strict and entry.skipped:
        raise DataError(entry.skipped[0])
    return Stored(_place(entry, data_on, processes), entry.labels, entry.classes, entry.paths, entry.skipped)


def _existing(key: str, formats: tuple[str, ...]) -> Entry | None:
    """A published entry of ``key`` that passes every check; a damaged one is named in a warning and removed."""
    for fmt in formats:
        path = entry_path(key, fmt)
        if not path.exists():
            continue
        try:
            return read_entry(path)
        except DamagedCache as e:
            warnings.warn(f"image cache {show_path(e.file)} cannot be used ({e.reason}); rebuilding it", CacheWarning, stacklevel=4)
            remove_entry(path)
    return None


def _place(entry: Entry, data_on: str, processes: int) -> torch.Tensor | DiskImages:
    """In memory (a tensor) when asked or when it takes under half of the free memory; else on disk."""
    images = DiskImages(entry)
    if data_on in ("disk", "gpu"):
        images.note = f"--data-on {data_on}"
        return images
    fits, why = fits_in_memory(images.nbytes, processes)
    if data_on == "memory" or fits:
        return images.to_tensor()
    images.note = why
    return images


# -- building an entry ----------------------------------------------------------------------------


def _build(key, files, labels, classes, size, channels, cache_format, data_on, processes, strict, progress, decode_device) -> Entry:
    fmt, needed, why = _choose_format(files, size, channels, cache_format, data_on, processes)
    final = entry_path(key, fmt)
    free = _free_bytes(final.parent)
    what = f"{len(files):,} images at {size} px" + (f", {channels} channels" if channels != 3 else "")
    if free is not None and needed > free:
        raise DataError(
            f"not enough disk for the image cache: {what} take {'about ' if fmt == 'jpeg' else ''}{gib(needed)} ({fmt}) "
            f"in {show_path(final.parent)}, where {gib(free)} are free; {SHRINK}"
        )
    if progress:
        kind = "raw" if fmt == "raw" else f"as JPEG, quality {JPEG_QUALITY}{why}"
        room = "" if free is None else f" ({gib(free)} free there)"
        print(f"image cache: decoding {what} into {'about ' if fmt == 'jpeg' else ''}{gib(needed)} {kind} at {show_path(final)}{room}",
              file=sys.stderr, flush=True)  # fmt: skip
    jpeg_device = decode_device if decode_device is not None and torch.device(decode_device).type == "cuda" else None
    writer = EntryWriter(final, fmt, (channels, size, size))
    with writer:  # a cache folder that cannot be written at all raises its OSError here, before any decoding
        try:
            keep: list[int] = []
            skipped: list[str] = []
            for chunk in decode_chunks(files, size, strict, progress, jpeg_device, channels):
                writer.add(chunk.images)
                keep += chunk.keep
                skipped += chunk.skipped
            return writer.publish(None if labels is None else [labels[i] for i in keep], classes, [str(files[i]) for i in keep], skipped)
        except OSError as e:  # a full disk, a file-size limit: the partial entry goes with the writer
            raise _write_error(e, final, len(files), size, f"{gib(needed)} ({fmt})") from None


def _write_error(e: OSError, where: Path, n: int, size: int, needed: str) -> DataError:
    return DataError(
        f"cannot write the image cache {show_path(where)} ({e.strerror or e}); nothing of it was kept ({n:,} images at {size} px "
        f"take {needed}); free some disk there, or {SHRINK}"
    )


def _choose_format(files, size, channels, cache_format, data_on, processes) -> tuple[str, int, str]:
    """(format, bytes it will take, why jpeg was chosen): raw unless asked, or raw would not fit in memory or on the disk."""
    raw = len(files) * channels * size * size
    if channels not in (1, 3):
        if cache_format == "jpeg":
            raise DataError(f"--cache-format jpeg: a JPEG holds 1 or 3 channels; this data has {channels}: use --cache-format raw")
        return "raw", raw, ""
    if cache_format == "raw":
        return "raw", raw, ""
    if cache_format == "auto":
        free = _free_bytes(images_dir())
        in_memory = data_on == "memory" or fits_in_memory(raw, processes)[0]
        on_disk = free is None or raw < free
        if in_memory and on_disk:
            return "raw", raw, ""
        why = f"; raw, {gib(raw)}, would not fit {'in memory' if not in_memory else 'on the disk'}"
        return "jpeg", _jpeg_estimate(files, size, channels), why
    return "jpeg", _jpeg_estimate(files, size, channels), f"; raw would take {gib(raw)}"


def _jpeg_estimate(files: list[Path], size: int, channels: int, sample: int = 8) -> int:
    """Bytes of the jpeg entry: the mean size of a few images of the folder, re-encoded as the cache does, times N, plus 20%."""
    from torchvision.io import encode_jpeg

    picks = files[:: max(1, len(files) // sample)][:sample]
    sizes = []
    for f in picks:
        try:
            sizes.append(len(encode_jpeg(decode_image(f, size, channels), quality=JPEG_QUALITY)))
        except (DataError, RuntimeError):
            continue
    per_image = sum(sizes) / len(sizes) if sizes else channels * size * size / 5
    return int(1.2 * per_image * len(files)) + 8 * (len(files) + 1)


def _free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent); None when unknown."""
    folder = Path(folder)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _in_memory(files, labels, classes, size, channels, strict, progress, decode_device, error: OSError) -> Stored:
    """The old way, when the cache folder cannot be written at all: decoded into memory, with a warning."""
    warnings.warn(
        f"could not write the image cache in {show_path(images_dir())} ({error.strerror or error}); decoding into memory, "
        "and the next run decodes again",
        CacheWarning,
        stacklevel=4,
    )
    jpeg_device = decode_device if decode_device is not None and torch.device(decode_device).type == "cuda" else None
    images, keep, skipped = decode_all(files, size, strict, progress, jpeg_device, channels)
    images = images[keep].clone() if len(keep) < len(files) else images
    return Stored(images, None if labels is None else [labels[i] for i in keep], classes, [str(files[i]) for i in keep], skipped)
