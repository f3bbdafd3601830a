"""Decoded images left on disk, read a batch at a time by index.

:class:`DiskImages` stands for the (N, C, S, S) uint8 images of an image-cache
entry (:mod:`simsiam.data.cache`) without holding them: indexing it reads just the
images asked for. The files are never memory-mapped (pages of a mapping that
are touched count in the process's resident memory, so reading a whole epoch
through a mapping would grow it to the size of the set): a raw entry is read
with ``preadv`` straight into the batch, one call per run of consecutive
images; a JPEG entry reads each image's bytes and decodes them (threads on a
CPU, nvJPEG on a GPU). Peak memory stays a few batches, whatever the set's size.

Every image read is checked against its CRC-32 in the entry. One that does not
match (a bit flipped on the disk, a cache file overwritten in place) is decoded
again from its source file, so no damaged pixel is trained on; the first such
image of an entry is named in a :class:`~simsiam.files.CacheWarning` and the entry
is removed, so that the next run rebuilds it (this run keeps reading the
removed files through the descriptors it holds).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from simsiam.data.cache import JPEG_QUALITY, RAW_FILE, Entry, crc_of, remove_entry
from simsiam.data.decode import decode_image, jpeg_read_mode
from simsiam.errors import DataError
from simsiam.files import CacheWarning, show_path
from simsiam.system import pool

__all__ = ["DiskImages"]

IOV_MAX = 1024  # buffers per preadv call (POSIX's minimum guarantee)
_DAMAGE = threading.Lock()  # one warning and one removal per damaged entry, whichever thread finds it


class DiskImages:
    """The images of a cache entry (or a subset of them), (N, C, S, S) uint8, read from disk by index.

    Indexing with an int gives one (C, S, S) image, with a slice, a list or a
    tensor of indices a (k, C, S, S) batch. :meth:`subset` is a view that reads
    nothing; :meth:`to_tensor` reads everything (in chunks) onto a device.
    ``rows_read`` counts the images this object read; when ``log`` is a list,
    every batch's rows (in the entry) are appended to it.
    """

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, entry: Entry, rows: np.ndarray | None = None, note: str = ""):
        self.entry, self.rows, self.note = entry, rows, note
        self.shape = torch.Size((entry.shape[0] if rows is None else len(rows), *entry.shape[1:]))
        self.rows_read = 0
        self.log: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DiskImages({tuple(self.shape)}, {self.entry.format}, {show_path(self.entry.path)})"

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded images (N x C x S x S)."""
        return len(self) * self.entry.row_bytes

    @property
    def where(self) -> str:
        return show_path(self.entry.path)

    def _physical(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        n = len(self)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"index out of range for {n} images")
        index = np.where(index < 0, index + n, index)
        return index if self.rows is None else self.rows[index]

    def subset(self, index) -> DiskImages:
        """The images at ``index``, as a view: nothing is read."""
        return DiskImages(self.entry, self._physical(_as_array(index, len(self))), self.note)

    def view(self) -> DiskImages:
        """The same images, with counters of their own."""
        return DiskImages(self.entry, self.rows, self.note)

    def fingerprint(self) -> str:
        """Changes whenever the images do: the entry's checksum and the rows of this view."""
        h = hashlib.sha1(self.entry.checksum.encode())
        h.update(b"all" if self.rows is None else self.rows.tobytes())
        return h.hexdigest()

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self.read([int(index)])[0]
        return self.read(_as_array(index, len(self)))

    def read(self, index, pin_memory: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
        """(k, C, S, S) uint8 on the CPU (in pinned memory if asked, or into ``out``): the images at ``index``, in its order."""
        rows = self._physical(_as_array(index, len(self)))
        if out is None:
            out = batch_buffer((len(rows), *self.shape[1:]), pin_memory)
        if self.entry.format == "raw":
            flat = out.numpy().reshape(len(rows), -1)
            self._read_raw(rows, flat)
            for j in self._damaged(rows, flat):
                out[j].copy_(self._from_source(int(rows[j])))
        else:
            blobs = self._read_encoded(rows)
            damaged = set(self._damaged(rows, blobs))

            def one(j: int) -> None:
                out[j].copy_(self._from_source(int(rows[j])) if j in damaged else self._decode_one(blobs[j], rows[j]))

            list(pool().map(one, range(len(rows))))
        self._count(rows)
        return out

    def read_encoded(self, index) -> list[torch.Tensor]:
        """jpeg: the JPEG bytes of the images at ``index``, as 1-D uint8 tensors, to decode elsewhere (:meth:`decode_on`)."""
        from torchvision.io import encode_jpeg

        rows = self._physical(_as_array(index, len(self)))
        blobs: list = self._read_encoded(rows)
        for j in self._damaged(rows, blobs):
            blobs[j] = encode_jpeg(self._from_source(int(rows[j])), quality=JPEG_QUALITY).numpy()
        self._count(rows)
        return [torch.frombuffer(b, dtype=torch.uint8) for b in blobs]

    def decode_on(self, blobs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """jpeg: a batch of JPEG bytes decoded on ``device`` in one call (nvJPEG on a GPU), as (k, C, S, S) uint8."""
        from torchvision.io import decode_jpeg

        images = decode_jpeg(blobs, mode=jpeg_read_mode(self.shape[1]), device=device)
        if any(tuple(x.shape) != tuple(self.shape[1:]) for x in images):
            raise DataError(f"{self.where}: an image of the cache decodes to the wrong shape: the entry is damaged; delete it to rebuild")
        return torch.stack(images)

    def to_tensor(self, device: torch.device | str | None = None, chunk: int = 512) -> torch.Tensor:
        """Every image, read in chunks into one tensor on ``device`` (the CPU by default): memory for the set, never twice."""
        device = torch.device(device or "cpu")
        out = torch.empty(tuple(self.shape), dtype=torch.uint8, device=device)
        for start in range(0, len(self), chunk):
            index = np.arange(start, min(start + chunk, len(self)))
            part = out[start : start + len(index)]
            if device.type == "cpu":
                self.read(index, out=part)
            elif self.entry.format == "jpeg":
                part.copy_(self.decode_on(self.read_encoded(index), device))  # nvJPEG on a GPU
            else:
                part.copy_(self.read(index, pin_memory=True), non_blocking=True)  # the pinned block is kept until the copy is done
        return out

    # -- reading -----------------------------------------------------------------------------

    def _count(self, rows: np.ndarray) -> None:
        self.rows_read += len(rows)
        if self.log is not None:
            self.log.append(rows.copy())

    def _damaged(self, rows: np.ndarray, stored: list | np.ndarray) -> list[int]:
        """The positions j whose stored bytes ``stored[j]`` do not match the CRC-32 of image ``rows[j]``."""
        crcs = self.entry.crcs
        if crcs is None or not len(rows):
            return []
        sums = list(pool().map(crc_of, stored)) if len(rows) * self.entry.row_bytes > 1 << 22 else [crc_of(b) for b in stored]
        return [j for j, (got, row) in enumerate(zip(sums, rows)) if got != crcs[row]]

    def _from_source(self, row: int) -> torch.Tensor:
        """Image ``row`` decoded again from its source file: its bytes in the cache do not match their checksum."""

        entry, source = self.entry, self.entry.paths[row]
        with _DAMAGE:
            if not entry.damaged:
                entry.damaged = True
                warnings.warn(
                    f"image cache {self.where}: image {row} ({source}) does not match its checksum; decoding such images again "
                    "from their files, and removing the entry so that the next run rebuilds it",
                    CacheWarning,
                    stacklevel=2,
                )
                for shard in entry.shards:  # held open: this run goes on reading the entry once it is removed
                    entry.fd(shard["file"])
                remove_entry(entry.path)
        try:
            image = decode_image(Path(source), self.shape[-1], self.shape[1])
        except DataError as e:
            raise DataError(f"{self.where}: image {row} of the cache is damaged and its file no longer decodes: {e}") from None
        if tuple(image.shape) != tuple(self.shape[1:]):
            raise DataError(f"{self.where}: image {row} of the cache is damaged and {source} now decodes to {tuple(image.shape)}")
        return image

    def _read_raw(self, rows: np.ndarray, out: np.ndarray) -> None:
        """preadv each run of consecutive rows straight into its rows of ``out`` (k, row_bytes); runs spread over threads."""
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        runs = [run for part in np.split(np.arange(len(rows)), breaks) for run in np.array_split(part, -(-len(part) // IOV_MAX))]
        fd, row_bytes = self.entry.fd(RAW_FILE), self.entry.row_bytes

        def read_run(run: np.ndarray) -> None:
            buffers = [out[order[p]] for p in run]
            _read_fully(fd, buffers, int(ordered[run[0]]) * row_bytes, self.where)

        if len(runs) <= 4:
            for run in runs:
                read_run(run)
        else:
            list(pool().map(read_run, runs))

    def _read_encoded(self, rows: np.ndarray) -> list[bytearray]:
        entry = self.entry
        offsets, firsts = entry.offsets, entry.firsts
        shards = np.searchsorted(firsts, rows, side="right") - 1
        starts = offsets[rows] - offsets[firsts[shards]]
        lengths = offsets[rows + 1] - offsets[rows]

        def read_one(j: int) -> bytearray:
            buf = bytearray(int(lengths[j]))
            _read_fully(entry.fd(entry.shards[int(shards[j])]["file"]), [buf], int(starts[j]), self.where)
            return buf

        return list(pool().map(read_one, range(len(rows))))

    def _decode_one(self, blob: bytearray, row: int) -> torch.Tensor:
        from torchvision.io import decode_jpeg

        try:
            image = decode_jpeg(torch.frombuffer(blob, dtype=torch.uint8), mode=jpeg_read_mode(self.shape[1]))
        except RuntimeError as e:
            raise DataError(
                f"{self.where}: image {row} of the cache cannot be decoded ({e}); the entry is damaged: delete it to rebuild"
            ) from None
        if tuple(image.shape) != tuple(self.shape[1:]):
            raise DataError(
                f"{self.where}: image {row} of the cache decodes to {tuple(image.shape)}; the entry is damaged: delete it to rebuild"
            )
        return image


def batch_buffer(shape: tuple[int, ...], pin_memory: bool = False) -> torch.Tensor:
    """An uninitialised uint8 tensor for a batch read from disk, whose memory goes back to the system when it is freed.

    Pinned memory comes from torch's caching host allocator. Other batches get
    pages of their own (an anonymous mapping) rather than the C heap: batches made
    in one thread and freed in another, a few MB each, leave glibc's heap
    fragmented (its mmap threshold rises to their size after the first is
    freed), and resident memory then grows over an epoch; a mapping is unmapped
    when the tensor goes.
    """
    if pin_memory:
        return torch.empty(shape, dtype=torch.uint8, pin_memory=True)
    nbytes = int(np.prod(shape))
    if nbytes < 1 << 20:
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.uint8).view(shape)


def _as_array(index, n: int) -> np.ndarray:
    if isinstance(index, slice):
        return np.arange(n)[index]
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool:
            return np.flatnonzero(index.cpu().numpy())
        return index.cpu().numpy().astype(np.int64).reshape(-1)
    return np.asarray(index, dtype=np.int64).reshape(-1)


def _read_fully(fd: int, buffers: list, offset: int, where: str) -> None:
    """preadv until every buffer is full; a file shorter than that is a DataError naming the entry."""
    want = sum(memoryview(b).nbytes for b in buffers)
    if hasattr(os, "preadv"):
        got = os.preadv(fd, buffers, offset)
        if got == want:
            return
    else:
        got = 0
    views = [memoryview(b).cast("B") for b in buffers]
    done = 0
    for view in views:  # short reads (rare): finish one buffer at a time
        size = len(view)
        filled = max(0, min(size, got - done))
        while filled < size:
            data = os.pread(fd, size - filled, offset + done + filled)
            if not data:
                raise DataError(f"{where}: the image cache is shorter than its record says (changed while in use?); delete it to rebuild")
            view[filled : filled + len(data)] = data
            filled += len(data)
        done += size
