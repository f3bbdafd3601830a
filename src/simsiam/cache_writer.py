"""Writing an image-cache entry (see :mod:`simsiam.cache` for its layout): a chunk at a time, then published whole.

:class:`EntryWriter` writes into a hidden partial folder beside the entry and,
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import (
    CACHE_VERSION,
    CRCS,
    FORMATS,
    JPEG_QUALITY,
    OFFSETS,
    RAW_FILE,
    RECORD,
    RECORD_MAGIC,
    SHARD_BYTES,
    DamagedCache,
    Entry,
    crc_of,
    images_dir,
    probe_digest,
    probe_rows,
    read_entry,
)
from .io import PARTIAL_SUFFIX, remove_partial_files

__all__ = ["EntryWriter", "build_lock", "remove_entry"]


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

    from .bulk_decode import decoder_threads

    with ThreadPoolExecutor(max_workers=decoder_threads()) as pool:
        return [bytes(t.numpy()) for t in pool.map(lambda x: encode_jpeg(x, quality=quality), images)]


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
