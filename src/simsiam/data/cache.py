"""The decoded image cache on disk: written while decoding, published whole, checked when read.

One entry per folder, image size, channel count and format, under
``$SIMSIAM_CACHE/images`` (see :func:`simsiam.files.cache_dir`)::

    <key>.raw/    images.u8      the (N, C, S, S) uint8 pixels, image after image
                  meta.json      the completion record
    <key>.jpeg/   shard-000.bin  each image re-encoded as a JPEG, back to back (1 GiB per shard)
                  offsets.i64    where each image starts: N + 1 int64 over the shards laid end to end
                  meta.json
    both:         crc32.u32      the CRC-32 of each image's stored bytes: N little-endian uint32

An entry is written into a hidden sibling folder (``.<name>.<pid>.partial``): the
pixels a chunk at a time as they are decoded, then the record, each file
fsync'ed, and only then is the folder renamed to its name (atomic on POSIX). A
crash, a kill or a full disk at any moment leaves a whole entry or none; the
partial folders of dead processes are removed by the next build.

The record holds what a reader needs (shape, labels, classes, paths, skip
reasons) and what lets it refuse a damaged entry before trusting a byte: the
format version, the exact size of every data file, a SHA-256 of a sample of 16
images, a SHA-256 of the CRC file, and on its first line a SHA-256 of the record
itself. :func:`read_entry` checks the record, then the sizes of the files on disk
against it (so a truncated file is never read past its end), then the CRC file
and the sample. Every image read afterwards is checked against its CRC-32 (in
:mod:`simsiam.data.disk`): a damaged one never reaches training.

Writing, a chunk at a time, then published whole: :class:`EntryWriter` writes into a hidden partial folder beside the entry and,
in :meth:`~EntryWriter.publish`, writes the completion record, fsyncs every
file and renames the folder into place; any error on the way removes the
partial folder. :func:`build_lock` lets one process build while the others
(DDP's) wait for it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsiam.files import PARTIAL_SUFFIX, cache_dir, os_error_text, remove_partial_files, show_path

__all__ = [
    "CACHE_VERSION",
    "crc_of",
    "FORMATS",
    "Entry",
    "DamagedCache",
    "read_entry",
    "entry_path",
    "images_dir",
    "probe_rows",
    "probe_digest",
]

CACHE_VERSION = 3  # of the record and of the cache key (simsiam.data): one number for both
FORMATS = ("raw", "jpeg")
JPEG_QUALITY = 95
SHARD_BYTES = 1 << 30
PROBE_IMAGES = 16
RECORD = "meta.json"
RAW_FILE = "images.u8"
OFFSETS = "offsets.i64"
CRCS = "crc32.u32"
RECORD_MAGIC = "simsiam image cache"


class DamagedCache(Exception):
    """An entry that cannot be trusted: ``file`` is the file at fault, ``reason`` says why."""

    def __init__(self, file: Path, reason: str):
        self.file, self.reason = Path(file), reason
        super().__init__(f"{show_path(file)}: {reason}")


def images_dir() -> Path:
    return cache_dir() / "images"


def entry_path(key: str, fmt: str) -> Path:
    """The folder of the entry for cache key ``key`` in format ``fmt`` (raw or jpeg)."""
    return images_dir() / f"{key}.{fmt}"


@dataclass
class Entry:
    """A published, checked cache entry: where it is and what its record says."""

    path: Path
    format: str
    shape: tuple[int, int, int, int]  # (N, C, S, S)
    labels: list[int] | None
    classes: list[str]
    paths: list[str]
    skipped: list[str]
    shards: list[dict[str, Any]]  # {"file", "first" (its first image), "bytes"}, in order
    checksum: str  # the record's SHA-256: changes whenever the entry does
    offsets: np.ndarray | None = None  # jpeg: (N + 1,) int64 over the shards end to end
    crcs: np.ndarray | None = None  # (N,) uint32: the CRC-32 of each image's stored bytes
    damaged: bool = field(default=False, compare=False)  # an image failed its CRC while this entry was read
    files: _OpenFiles = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.files = _OpenFiles(self.path)
        self.firsts = np.asarray([s["first"] for s in self.shards], dtype=np.int64)  # each shard's first image

    @property
    def row_bytes(self) -> int:
        _, c, h, w = self.shape
        return c * h * w

    @property
    def data_bytes(self) -> int:
        return sum(int(s["bytes"]) for s in self.shards)

    def fd(self, name: str) -> int:
        """A read-only descriptor of data file ``name``, opened once (pread on it is safe from any thread)."""
        return self.files.get(name)

    def image_bytes(self, row: int) -> tuple[str, int, int]:
        """jpeg: (shard file, offset in it, length) of image ``row``."""
        assert self.offsets is not None
        s = int(np.searchsorted(self.firsts, row, side="right")) - 1
        base = int(self.offsets[self.shards[s]["first"]])
        return self.shards[s]["file"], int(self.offsets[row]) - base, int(self.offsets[row + 1] - self.offsets[row])


class _OpenFiles:
    """The read-only descriptors of an entry's data files: opened on first use, closed with the entry."""

    def __init__(self, folder: Path):
        self.folder, self.fds, self.lock = folder, {}, threading.Lock()

    def get(self, name: str) -> int:
        with self.lock:
            if name not in self.fds:
                self.fds[name] = os.open(self.folder / name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
            return self.fds[name]

    def close(self) -> None:
        with self.lock:
            for fd in self.fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.fds.clear()

    def __del__(self) -> None:
        self.close()


# -- reading and checking ------------------------------------------------------------------------


def read_entry(path: str | Path) -> Entry:
    """The entry in folder ``path``, checked; :class:`DamagedCache` naming the file at fault when it cannot be trusted."""
    path = Path(path)
    record_file = path / RECORD
    try:
        text = record_file.read_bytes()
    except OSError as e:
        raise DamagedCache(record_file, f"no completion record ({os_error_text(e)})") from None
    head, _, body = text.partition(b"\n")
    words = head.decode("ascii", "replace").rsplit(" ", 3)
    if len(words) != 4 or words[0] != RECORD_MAGIC or words[2] != "sha256":
        raise DamagedCache(record_file, "not a simsiam image-cache record")
    if words[1] != str(CACHE_VERSION):
        raise DamagedCache(record_file, f"written by another version of simsiam (format {words[1]}, this one reads {CACHE_VERSION})")
    if hashlib.sha256(body).hexdigest() != words[3]:
        raise DamagedCache(record_file, "its checksum does not match: the record is damaged or truncated")
    try:
        rec = json.loads(body)
        entry = _entry_of(path, rec, words[3])
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedCache(record_file, f"not the structure this version writes ({type(e).__name__}: {str(e)[:100]})") from None
    _check_files(entry)
    if entry.format == "jpeg":
        entry.offsets = _read_offsets(entry, rec)
    entry.crcs = _read_crcs(entry, rec)
    for shard in entry.shards:  # opened now: a reader keeps them if the entry is removed while in use (damaged, rebuilt)
        entry.fd(shard["file"])
    if probe_digest(entry, rec["probe"]["rows"]) != rec["probe"]["sha256"]:
        raise DamagedCache(path / entry.shards[0]["file"], "its pixels do not match the checksum of the sample in its record")
    return entry


def _entry_of(path: Path, rec: dict[str, Any], checksum: str) -> Entry:
    shape = tuple(int(x) for x in rec["shape"])
    n = shape[0] if len(shape) == 4 else -1
    labels, classes, paths, skipped = rec["labels"], rec["classes"], rec["paths"], rec["skipped"]
    problems = [
        (len(shape) != 4 or min(shape) < 0 or shape[2] != shape[3], f"shape {list(shape)}"),
        (rec["format"] not in FORMATS or rec["dtype"] != "uint8", f"format {rec['format']!r}, dtype {rec['dtype']!r}"),
        (not all(isinstance(x, list) and all(isinstance(s, str) for s in x) for x in (classes, paths, skipped)), "classes, paths or skips"),
        (len(paths) != n, f"{len(paths)} paths for {n} images"),
        (labels is not None and (len(labels) != n or not all(isinstance(y, int) and 0 <= y < len(classes) for y in labels)), "labels"),
        (not rec["shards"] or rec["shards"][0]["first"] != 0, "shards"),
    ]
    for bad, what in problems:
        if bad:
            raise ValueError(what)
    shards = [{"file": str(s["file"]), "first": int(s["first"]), "bytes": int(s["bytes"])} for s in rec["shards"]]
    if any("/" in s["file"] or s["file"].startswith(".") for s in shards):
        raise ValueError("shard names")
    return Entry(path, rec["format"], shape, labels, classes, paths, skipped, shards, checksum)  # type: ignore[arg-type]


def _check_files(entry: Entry) -> None:
    """The data files hold exactly the bytes the record declares (checked before anything is read from them)."""
    if entry.format == "raw" and entry.data_bytes != entry.shape[0] * entry.row_bytes:
        raise DamagedCache(entry.path / RECORD, f"declares {entry.data_bytes:,} bytes for {entry.shape} images")
    for shard in entry.shards:
        file = entry.path / shard["file"]
        try:
            size = file.stat().st_size
        except OSError as e:
            raise DamagedCache(file, f"missing ({os_error_text(e)})") from None
        if size != shard["bytes"]:
            what = "truncated" if size < shard["bytes"] else "longer than its record says"
            raise DamagedCache(file, f"{what}: {size:,} bytes, the record says {shard['bytes']:,}")


def _read_offsets(entry: Entry, rec: dict[str, Any]) -> np.ndarray:
    file = entry.path / OFFSETS
    n = entry.shape[0]
    try:
        raw = file.read_bytes() if file.stat().st_size == 8 * (n + 1) else None
    except OSError as e:
        raise DamagedCache(file, f"cannot be read ({os_error_text(e)})") from None
    if raw is None or hashlib.sha256(raw).hexdigest() != rec["offsets_sha256"]:
        raise DamagedCache(file, "truncated or damaged: its size or checksum does not match the record")
    offsets = np.frombuffer(raw, dtype="<i8").astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != entry.data_bytes or (n and np.any(np.diff(offsets) <= 0)):
        raise DamagedCache(file, "its offsets do not fit the shards")
    for shard in entry.shards:  # every shard starts at an image boundary
        if not 0 <= shard["first"] <= n:
            raise DamagedCache(file, "its shards do not fit the images")
    return offsets


def _read_crcs(entry: Entry, rec: dict[str, Any]) -> np.ndarray:
    file = entry.path / CRCS
    n = entry.shape[0]
    try:
        raw = file.read_bytes() if file.stat().st_size == 4 * n else None
    except OSError as e:
        raise DamagedCache(file, f"cannot be read ({os_error_text(e)})") from None
    if raw is None or hashlib.sha256(raw).hexdigest() != rec["crc32_sha256"]:
        raise DamagedCache(file, "truncated or damaged: its size or checksum does not match the record")
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32)


def crc_of(data: Any) -> int:
    """The CRC-32 an image's stored bytes are checked with (zlib's: it releases the GIL on large buffers)."""
    return zlib.crc32(data)


def probe_rows(n: int) -> list[int]:
    return sorted({int(x) for x in np.linspace(0, n - 1, min(n, PROBE_IMAGES))}) if n else []


def probe_digest(entry: Entry, rows: list[int]) -> str:
    """SHA-256 over the stored bytes of images ``rows``."""
    h = hashlib.sha256()
    for row in rows:
        if not 0 <= row < entry.shape[0]:
            raise DamagedCache(entry.path / RECORD, f"its sample names image {row} of {entry.shape[0]}")
        if entry.format == "raw":
            name, start, length = RAW_FILE, row * entry.row_bytes, entry.row_bytes
        else:
            name, start, length = entry.image_bytes(row)
        h.update(os.pread(entry.fd(name), length, start))
    return h.hexdigest()


# -- from cache_writer.py ------------------------------------------------------------

__all__ += ["EntryWriter", "build_lock", "remove_entry"]


class EntryWriter:
    """Writes one entry into its partial folder, a chunk of images at a time; :meth:`publish` makes it whole.

    Use as a context manager: on any error the partial folder is removed.
    """

    def __init__(self, final: Path, fmt: str, shape_tail: tuple[int, int, int], quality: int = JPEG_QUALITY):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.final, self.format, self.tail, self.quality = Path(final), fmt, tuple(shape_tail), quality
        self.tmp = self.final.with_name(f".{self.final.name}.{os.getpid()}{PARTIAL_SUFFIX}")
        self.n = 0
        self.shards: list[dict[str, Any]] = []
        self.offsets = [0]
        self.crcs: list[int] = []
        self._fh = None

    def __enter__(self) -> EntryWriter:
        if self.tmp.exists():  # left by a killed earlier process that had this pid
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(self, kind, error, tb) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
        if self.tmp.exists():  # not published: an error, or never finished
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add(self, images: torch.Tensor) -> None:
        """Append (k, C, S, S) uint8 images."""
        if tuple(images.shape[1:]) != self.tail or images.dtype != torch.uint8:
            raise ValueError(f"images must be (k, {', '.join(map(str, self.tail))}) uint8, got {tuple(images.shape)} {images.dtype}")
        if not len(images):
            return
        if self.format == "raw":
            rows = images.contiguous().numpy().reshape(len(images), -1)
            self.crcs += [crc_of(row) for row in rows]
            self._write(memoryview(rows).cast("B"), first=0)
        else:
            for blob in _encode_jpegs(images, self.quality):
                self.crcs.append(crc_of(blob))
                self._write(blob, first=len(self.offsets) - 1)
                self.offsets.append(self.offsets[-1] + len(blob))
        self.n += len(images)

    def _write(self, data: Any, first: int) -> None:
        """Append ``data`` to the current data file; a JPEG shard past SHARD_BYTES gives way to a new one starting at image ``first``."""
        size = memoryview(data).nbytes
        full = self.format == "jpeg" and self.shards and self.shards[-1]["bytes"] and self.shards[-1]["bytes"] + size > SHARD_BYTES
        if self._fh is None or full:
            self._close_shard()
            name = RAW_FILE if self.format == "raw" else f"shard-{len(self.shards):03d}.bin"
            self.shards.append({"file": name, "first": first, "bytes": 0})
            self._fh = open(self.tmp / name, "wb")  # closed in _close_shard, or by __exit__
        written = self._fh.write(data)
        if written is not None and written != size:
            raise OSError(errno.EIO, f"short write ({written} of {size} bytes)")
        self.shards[-1]["bytes"] += size

    def _close_shard(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())  # the data is on disk before the record says it is
            self._fh.close()
            self._fh = None

    def publish(self, labels: list[int] | None, classes: list[str], paths: list[str], skipped: list[str]) -> Entry:
        """Write the record, make every file durable and rename the folder into place; returns the entry."""
        if self._fh is None:  # no image at all: an empty data file still makes the layout whole
            self._write(b"", first=0)
        self._close_shard()
        shape = (self.n, *self.tail)
        rec: dict[str, Any] = dict(format=self.format, shape=list(shape), dtype="uint8", shards=self.shards, labels=labels,
                                   classes=classes, paths=paths, skipped=skipped)  # fmt: skip
        if self.format == "jpeg":
            raw = np.asarray(self.offsets, dtype="<i8").tobytes()
            _write_durably(self.tmp / OFFSETS, raw)
            rec["offsets_sha256"] = hashlib.sha256(raw).hexdigest()
        crcs = np.asarray(self.crcs, dtype="<u4")
        _write_durably(self.tmp / CRCS, crcs.tobytes())
        rec["crc32_sha256"] = hashlib.sha256(crcs.tobytes()).hexdigest()
        entry = Entry(self.tmp, self.format, shape, labels, classes, paths, skipped, self.shards, "")  # type: ignore[arg-type]
        if self.format == "jpeg":
            entry.offsets = np.asarray(self.offsets, dtype=np.int64)
        rows = probe_rows(self.n)
        rec["probe"] = {"rows": rows, "sha256": probe_digest(entry, rows)}
        entry.files.close()
        body = json.dumps(rec, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        checksum = hashlib.sha256(body).hexdigest()
        _write_durably(self.tmp / RECORD, f"{RECORD_MAGIC} {CACHE_VERSION} sha256 {checksum}\n".encode() + body)
        _fsync_folder(self.tmp)
        published = _rename_into_place(self.tmp, self.final)
        if published is not None:  # another process published the same entry first: use theirs
            return published
        _fsync_folder(self.final.parent)
        return Entry(self.final, self.format, shape, labels, classes, paths, skipped, self.shards, checksum, entry.offsets,  # type: ignore[arg-type]
                     crcs.astype(np.uint32))  # fmt: skip


def _encode_jpegs(images: torch.Tensor, quality: int) -> list[bytes]:
    """Each (C, S, S) image (C = 1 or 3) as JPEG bytes, encoded in threads."""
    from torchvision.io import encode_jpeg

    from simsiam.system import pool

    return [bytes(t.numpy()) for t in pool().map(lambda x: encode_jpeg(x, quality=quality), images)]


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rename_into_place(tmp: Path, final: Path) -> Entry | None:
    """Rename the finished folder to its name; if a good entry is there already, keep that one (returned) and drop ours."""
    try:
        os.rename(tmp, final)
        return None
    except OSError:
        if not final.exists():
            raise
    try:
        theirs = read_entry(final)
        shutil.rmtree(tmp, ignore_errors=True)
        return theirs
    except DamagedCache:
        remove_entry(final)
        os.rename(tmp, final)
        return None


def remove_entry(path: Path) -> None:
    """Remove an entry folder: first renamed aside (atomic: it stops being an entry at once), then deleted."""
    aside = path.with_name(f".{path.name}.removed.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        os.rename(path, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


# -- one builder at a time --------------------------------------------------------------------


@contextlib.contextmanager
def build_lock(key: str) -> Iterator[None]:
    """Hold the build lock of cache key ``key`` (blocking): under DDP one process decodes, the others wait, then read.

    Also removes the partial folders that dead processes left in the cache.
    Without ``fcntl`` (Windows) there is no lock: two builders write separate
    partial folders and the second keeps the first one's entry.
    """
    folder = images_dir()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        remove_partial_files(folder)
        yield
        return
    fd = os.open(folder / f".{key}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        remove_partial_files(folder)
        yield
    finally:
        os.close(fd)  # releases the lock
