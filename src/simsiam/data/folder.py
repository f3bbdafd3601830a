"""A folder's images: listed, keyed, then found in the decoded cache or decoded into it.

Listing (:func:`list_images`): image files are found recursively and labeled by
class subfolder. Hidden files and folders are skipped, symbolic links are followed once (a link to
a file is read as that file, a link to a folder as that folder; a broken link or a
link loop is named when its file is decoded), folders that cannot be read
(permission denied) are skipped with a :class:`SkippedImagesWarning` naming them
(an error under ``strict``), DATA itself unreadable is an error,
and a simsiam run folder inside DATA (``cd photos && simsiam train .``) is never
read as data (:func:`is_run_folder`).

Caching (:func:`cached_folder`, the image-cache half of :func:`simsiam.data.load_folder`):

1. an entry of the folder's cache key that passes every check is used as it is
   (a damaged one is named in a :class:`~simsiam.files.CacheWarning`, removed and rebuilt);
2. otherwise, under the key's lock (one builder, the other DDP processes wait),
   the format is chosen (``raw``, or ``jpeg`` when asked, or with ``auto`` when raw
   would not fit in memory or on the disk), one line says what is about to be
   written, where, and how much disk is free (a disk that cannot hold it is a
   DataError naming the options that shrink it, before anything is written), and
   the images are decoded a chunk at a time straight into the entry;
3. the images are read into memory, or left on disk as
   :class:`~simsiam.data.disk.DiskImages`, as :func:`simsiam.data.batches.placement`
   decides for ``data_on`` (``"gpu"`` leaves them on disk for the batch source to
   copy to the GPU in chunks).

Every option arrives in one :class:`DataOptions`.

A cache folder that cannot be made at all (read-only, or a file in its place)
costs only speed when the images fit in memory: they are decoded into memory,
with a warning. A write that fails on the way (a full disk, a file-size limit)
is a DataError, and nothing half-written is kept.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from simsiam.data import CACHE_FORMATS, DATA_ON
from simsiam.data.batches import placement
from simsiam.data.bulk import decode_all, decode_chunks
from simsiam.data.cache import (
    CACHE_VERSION,
    JPEG_QUALITY,
    DamagedCache,
    Entry,
    EntryWriter,
    build_lock,
    entry_path,
    images_dir,
    read_entry,
    remove_entry,
)
from simsiam.data.decode import decode_image
from simsiam.data.disk import DiskImages
from simsiam.errors import DataError
from simsiam.files import MARKER, CacheWarning, os_error_text, show_path
from simsiam.system import fits_in_memory, gib, pool

# Images, and arrays of bands (.npy, .npz: H x W x C); a TIFF may be an image or a stack of bands, one per page.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".npy", ".npz")
MAX_NAMED = 50  # files named one by one in a warning; the rest are counted


class SkippedImagesWarning(UserWarning):
    """Some files or folders of DATA were left out: undecodable, unreadable, or a run folder (see --strict)."""


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a simsiam run (its marker or checkpoint, or its config with any of the files a run writes)."""
    path = Path(path)
    if (path / "checkpoints" / "last.ckpt").is_file() or (path / MARKER).is_file():
        return True
    return (path / "config.yaml").is_file() and any(
        (path / name).exists() for name in ("metrics.csv", "metrics.json", "training.png", "checkpoints")
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: Path, exclude: set[str]) -> tuple[list[Path], dict[str, tuple[str, str]], list[Path]]:
    """Image files under ``root``; the folders that could not be read (real path -> (name, why)); the folders left out.

    DataError when ``root`` itself cannot be read (os.access does not tell: root may read anything, a network
    file system may refuse what the mode bits allow).
    """
    files: list[Path] = []
    seen: set[str] = set()
    unreadable: dict[str, tuple[str, str]] = {}
    left_out: list[Path] = []

    def note_unreadable(e: OSError) -> None:
        where = root if e.filename is None else e.filename
        if os.path.realpath(where) == os.path.realpath(root):
            raise DataError(f"{show_path(root)}: cannot read the folder ({os_error_text(e)})")
        unreadable[os.path.realpath(where)] = (show_path(where), os_error_text(e))

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


def list_images(root: Path, exclude: Iterable[str | Path] = (), strict: bool = False) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files under ``root``, and labels when the images sit in class subfolders.

    Hidden files and folders are skipped; symbolic links are followed once (loops
    are cut by remembering the real paths visited); folders that cannot be read
    are skipped with a warning naming them (with ``strict``, the first is a
    DataError naming it: a class must not go missing unnoticed). Simsiam run folders (see
    :func:`is_run_folder`) and the paths in ``exclude`` (files or folders: a
    run's own output folder, say) are never read, and a warning names them.
    """
    root = Path(root)
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{show_path(root)}: cannot read the folder (permission denied)")
    excluded = {os.path.realpath(p) for p in exclude} - {os.path.realpath(root)}
    files, unreadable, left_out = _walk(root, excluded)
    if unreadable and strict:
        name, why = min(unreadable.values())
        raise DataError(f"{name}: cannot read the folder ({why}); --strict stops at the first file or folder that cannot be read")
    if unreadable:
        shown = ", ".join(f"{name} ({why})" for name, why in sorted(unreadable.values())[:MAX_NAMED])
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


# -- the options of reading DATA, and finding or building its cache entry ---------------------

__all__ = ["SkippedImagesWarning", "is_run_folder", "list_images", "DataOptions", "Stored", "cached_folder", "cache_key"]
__all__ += ["DATA_ON", "CACHE_FORMATS"]

SHRINK = "shrink it with --image-size (or --cache-size), --cache-format jpeg, or set $SIMSIAM_CACHE to a folder on a disk with room"
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
KEY_BLOCK = 64 * 1024  # bytes hashed at each end of a file for its cache key


@dataclass(frozen=True)
class DataOptions:
    """How DATA is read and where its decoded images are kept: every option of the data layer, in one object.

    :func:`simsiam.data.load` takes one (or its fields as keywords); a run makes
    one from its config. ``None`` sizes and channels are found from the data.
    """

    image_size: int | None = None  # S: the shorter side is resized to S and the centre S x S kept; None: the median, at most 224
    channels: int | None = None  # None: the data's (3 for image files, C for stacks of C bands); 1: grey
    strict: bool = False  # stop at the first file that cannot be read, instead of skipping it with a warning
    progress: bool = True  # a progress bar and a line while the cache is built
    decode_device: str | None = None  # "cuda": the cache's JPEGs are decoded by nvJPEG on that GPU
    exclude: tuple[str, ...] = ()  # files or folders inside DATA never to read (a run's own output folder)
    data_on: str = "auto"  # auto, gpu, memory or disk: see simsiam.data.batches.placement
    cache_format: str = "auto"  # raw pixels, or JPEGs re-encoded at quality 95 (auto: JPEG when raw would not fit)
    processes: int = 1  # copies of the images this machine holds (DDP processes per node), for the memory rule

    def __post_init__(self):
        if self.cache_format not in CACHE_FORMATS or self.data_on not in DATA_ON:
            raise ValueError(f"cache_format must be one of {CACHE_FORMATS} and data_on one of {DATA_ON}")
        object.__setattr__(self, "exclude", tuple(str(p) for p in self.exclude))

    @property
    def jpeg_device(self) -> torch.device | None:
        """The GPU that decodes JPEGs while the cache is built (nvJPEG), or None: Pillow in threads."""
        device = None if self.decode_device is None else torch.device(self.decode_device)
        return device if device is not None and device.type == "cuda" else None


@dataclass
class Stored:
    """What load_folder makes an ImageSet of: the images (in memory or on disk) and what the entry records."""

    images: torch.Tensor | DiskImages
    labels: list[int] | None
    classes: list[str]
    paths: list[str]
    skipped: list[str]


def cache_key(kind: str, root: Path, files: list[Path], size: int) -> str:
    """The cache key of ``files`` decoded at ``size``: changes whenever any file's content may have.

    Each file contributes its size, mtime_ns, ctime_ns, inode and permission bits
    and a hash of its first and last 64 KiB (the whole file when it is under 128
    KiB), read through one descriptor. ctime cannot be set back by ``touch -r``,
    ``cp -p`` or ``rsync -t``, and the hash catches an edit that keeps every stamp;
    only an edit of the middle of a large file with every stamp kept would go
    unseen. Hashed in threads (reads release the GIL).
    """
    # os.fsencode: file names need not be valid UTF-8.
    h = hashlib.sha1(f"{CACHE_VERSION}|{kind}|{size}|".encode() + os.fsencode(root.resolve()))
    parts = [files[start : start + 256] for start in range(0, len(files), 256)]
    for part, stamps in zip(parts, pool().map(lambda part: [_file_stamp(f) for f in part], parts)):
        for f, stamp in zip(part, stamps):
            h.update(os.fsencode(f) + stamp.encode())
    return h.hexdigest()[:20]


def _file_stamp(f: Path, block: int = KEY_BLOCK) -> str:
    try:
        fd = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:  # a dangling link, a link loop, no permission: the decoding pass reports it
        return f"|unreadable {e.errno}\n"
    try:
        st = os.fstat(fd)
        digest = hashlib.blake2b(digest_size=16)
        if stat.S_ISREG(st.st_mode):  # anything else is refused by the decoding pass, unread
            if st.st_size <= 2 * block:
                digest.update(os.pread(fd, st.st_size, 0))
            else:
                digest.update(os.pread(fd, block, 0) + os.pread(fd, block, st.st_size - block))
        return f"|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_mode & 0o7777:o}|{digest.hexdigest()}\n"
    except OSError as e:
        return f"|unreadable {e.errno}\n"
    finally:
        os.close(fd)


def cached_folder(key: str, files: list[Path], labels: list[int] | None, classes: list[str], options: DataOptions) -> Stored:
    """The decoded images of ``files`` (see the module's text); ``options`` has their size and channels set."""
    formats = ("raw", "jpeg") if options.cache_format == "auto" else (options.cache_format,)
    entry = _existing(key, formats)
    if entry is None:
        try:
            with build_lock(key):  # another process may have built it while this one waited
                entry = _existing(key, formats) or _build(key, files, labels, classes, options)
        except OSError as e:  # the cache folder cannot be made or written at all (errors on the way are DataErrors)
            raw = len(files) * options.channels * options.image_size**2
            if e.errno in _NO_ROOM or not fits_in_memory(raw, options.processes)[0]:
                raise _write_error(e, images_dir(), len(files), options.image_size, f"{gib(raw)} (raw)") from None
            return _in_memory(files, labels, classes, options, e)
    if options.strict and entry.skipped:
        raise DataError(entry.skipped[0])
    return Stored(_hold(entry, options), entry.labels, entry.classes, entry.paths, entry.skipped)


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


def _hold(entry: Entry, options: DataOptions) -> torch.Tensor | DiskImages:
    """The entry's images read into memory (a tensor), or left on disk, as :func:`~simsiam.data.batches.placement` decides."""
    images = DiskImages(entry)
    where, images.note = placement(images.nbytes, "cpu", options.data_on, options.processes)
    return images.to_tensor() if where == "memory" else images


# -- building an entry ----------------------------------------------------------------------------


def _build(key: str, files: list[Path], labels: list[int] | None, classes: list[str], options: DataOptions) -> Entry:
    size, channels = options.image_size, options.channels
    fmt, needed, why = _choose_format(files, options)
    final = entry_path(key, fmt)
    free = _free_bytes(final.parent)
    what = f"{len(files):,} images at {size} px" + (f", {channels} channels" if channels != 3 else "")
    if free is not None and needed > free:
        raise DataError(
            f"not enough disk for the image cache: {what} take {'about ' if fmt == 'jpeg' else ''}{gib(needed)} ({fmt}) "
            f"in {show_path(final.parent)}, where {gib(free)} are free; {SHRINK}"
        )
    if options.progress:
        kind = "raw" if fmt == "raw" else f"as JPEG, quality {JPEG_QUALITY}{why}"
        room = "" if free is None else f" ({gib(free)} free there)"
        print(f"image cache: decoding {what} into {'about ' if fmt == 'jpeg' else ''}{gib(needed)} {kind} at {show_path(final)}{room}",
              file=sys.stderr, flush=True)  # fmt: skip
    writer = EntryWriter(final, fmt, (channels, size, size))
    with writer:  # a cache folder that cannot be written at all raises its OSError here, before any decoding
        try:
            keep: list[int] = []
            skipped: list[str] = []
            for chunk in decode_chunks(files, size, options.strict, options.progress, options.jpeg_device, channels):
                writer.add(chunk.images)
                keep += chunk.keep
                skipped += chunk.skipped
            return writer.publish(None if labels is None else [labels[i] for i in keep], classes, [str(files[i]) for i in keep], skipped)
        except OSError as e:  # a full disk, a file-size limit: the partial entry goes with the writer
            raise _write_error(e, final, len(files), size, f"{gib(needed)} ({fmt})") from None


def _write_error(e: OSError, where: Path, n: int, size: int, needed: str) -> DataError:
    return DataError(
        f"cannot write the image cache {show_path(where)} ({os_error_text(e)}); nothing of it was kept ({n:,} images at {size} px "
        f"take {needed}); free some disk there, or {SHRINK}"
    )


def _choose_format(files: list[Path], options: DataOptions) -> tuple[str, int, str]:
    """(format, bytes it will take, why jpeg was chosen): raw unless asked, or raw would not fit in memory or on the disk."""
    size, channels, cache_format = options.image_size, options.channels, options.cache_format
    raw = len(files) * channels * size * size
    if channels not in (1, 3):
        if cache_format == "jpeg":
            raise DataError(f"--cache-format jpeg: a JPEG holds 1 or 3 channels; this data has {channels}: use --cache-format raw")
        return "raw", raw, ""
    if cache_format == "raw":
        return "raw", raw, ""
    if cache_format == "auto":
        free = _free_bytes(images_dir())
        in_memory = options.data_on == "memory" or fits_in_memory(raw, options.processes)[0]
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


def _in_memory(files: list[Path], labels: list[int] | None, classes: list[str], options: DataOptions, error: OSError) -> Stored:
    """The old way, when the cache folder cannot be written at all: decoded into memory, with a warning."""
    warnings.warn(
        f"could not write the image cache in {show_path(images_dir())} ({os_error_text(error)}); decoding into memory, "
        "and the next run decodes again",
        CacheWarning,
        stacklevel=4,
    )
    images, keep, skipped = decode_all(files, options.image_size, options.strict, options.progress, options.jpeg_device, options.channels)
    images = images[keep].clone() if len(keep) < len(files) else images
    return Stored(images, None if labels is None else [labels[i] for i in keep], classes, [str(files[i]) for i in keep], skipped)
