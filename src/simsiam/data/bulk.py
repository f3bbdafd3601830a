"""Many image files decoded at once, a chunk at a time: Pillow in threads, or nvJPEG on the GPU.

:func:`decode_chunks` is what the image cache is written from: it yields the
files in order, ``chunk`` files at a time, so that a folder of any size is
decoded in bounded memory (two chunks in flight at most: the one the caller is
writing, and the next one being decoded). :func:`decode_all` gathers every chunk
into one tensor, for sets small enough to hold.

Both paths accept and refuse the same files: a JPEG that nvJPEG refuses (or any
file that is not a plain RGB or grey JPEG) goes through Pillow, and every failure
is one line naming the file (:class:`~simsiam.errors.DataError`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from simsiam.data.decode import MAX_PIXELS, decode_image, fit_tensor, jpeg_read_mode, open_regular, quiet_bomb_warning
from simsiam.data.disk import batch_buffer
from simsiam.errors import DataError
from simsiam.files import error_text
from simsiam.system import pool as shared_pool

__all__ = ["Chunk", "decode_chunks", "decode_all", "CHUNK_BYTES"]

JPEG_EXTENSIONS = (".jpg", ".jpeg")
CHUNK_BYTES = 8 << 20  # decoded bytes per chunk (Pillow): 55 images at 224 px; two chunks are in flight
GPU_CHUNK = 256  # files per nvJPEG batch


@dataclass
class Chunk:
    """The files ``start`` to ``start + count`` of a list, decoded."""

    start: int
    count: int
    images: torch.Tensor  # (k, C, S, S) uint8: the files of the chunk that decoded, in order
    keep: list[int]  # their indices into the list of files
    skipped: list[str]  # why each of the others did not decode, in file order, one line each


def decode_chunks(
    files: list[Path],
    size: int,
    strict: bool = False,
    progress: bool = True,
    jpeg_device: str | torch.device | None = None,
    channels: int = 3,
    chunk: int | None = None,
) -> Iterator[Chunk]:
    """``files`` decoded ``chunk`` at a time, in order, as (k, C, size, size) uint8 (see :func:`decode_image`).

    ``chunk`` defaults to 8 MB of decoded images (256 files for nvJPEG). Each
    chunk is decoded straight into a buffer of its own, which the caller may keep.

    With ``strict`` the first file that cannot be decoded raises its DataError.
    ``jpeg_device`` ("cuda") decodes the RGB JPEGs with nvJPEG on that device.
    """
    on_device = jpeg_device is not None and channels == 3  # nvJPEG gives RGB; other channel counts go through decode_image
    bar = tqdm(total=len(files), desc="decoding images" + (" (GPU)" if on_device else ""), disable=not progress, unit="img")
    pool = shared_pool()
    in_flight: list[Future] = []
    try:
        with quiet_bomb_warning():
            if on_device:
                chunk = chunk or GPU_CHUNK
                for start in range(0, len(files), chunk):
                    stop = min(start + chunk, len(files))
                    yield _device_chunk(pool, files, start, stop, size, torch.device(jpeg_device), strict)
                    bar.update(stop - start)
                return
            chunk = chunk or max(1, min(1024, CHUNK_BYTES // (channels * size * size)))
            pending: tuple[int, torch.Tensor, list[Future]] | None = None
            for start in range(0, len(files), chunk):
                # The next chunk decodes in the threads while the caller writes this one.
                part = files[start : start + chunk]
                out = batch_buffer((len(part), channels, size, size))  # its memory goes back to the system when freed
                submitted = (start, out, [pool.submit(_attempt, f, size, channels, out[j]) for j, f in enumerate(part)])
                in_flight = (pending[2] if pending is not None else []) + submitted[2]
                if pending is not None:
                    yield _collect(*pending, strict)
                    bar.update(len(pending[2]))
                pending = submitted
            if pending is not None:
                yield _collect(*pending, strict)
                bar.update(len(pending[2]))
    finally:
        # On --strict's first bad file (or Ctrl-C, or a full disk), do not decode the rest first;
        # the pool is shared, so this drops the work of this call only.
        for future in in_flight:
            future.cancel()
        wait(in_flight)
        bar.close()


def decode_all(
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
    instead (:func:`decode_chunks`), never holding a whole folder.
    """
    out = torch.empty(len(files), channels, size, size, dtype=torch.uint8)
    keep: list[int] = []
    skipped: list[str] = []
    for part in decode_chunks(files, size, strict, progress, jpeg_device, channels):
        out[part.keep] = part.images
        keep += part.keep
        skipped += part.skipped
    return out, keep, skipped


def _attempt(file: Path, size: int, channels: int, into: torch.Tensor | None = None) -> torch.Tensor | DataError | None:
    """The decoded image (or, with ``into``, None once it is written there), or the DataError that says why not."""
    try:
        image = decode_image(file, size, channels)
    except DataError as e:
        return e
    if into is None:
        return image
    into.copy_(image)
    return None


def _collect(start: int, out: torch.Tensor, futures: list[Future], strict: bool) -> Chunk:
    """The chunk decoded into ``out``, once its futures are done; rows of files that failed are dropped."""
    keep, skipped = [], []
    for j, future in enumerate(futures):
        result = future.result()
        if isinstance(result, DataError):
            if strict:
                raise result
            skipped.append(str(result))
        else:
            keep.append(start + j)
    images = out if len(keep) == len(futures) else out[[i - start for i in keep]]
    return Chunk(start, len(futures), images, keep, skipped)


# -- nvJPEG ------------------------------------------------------------------------------------


def _jpeg_bytes(path: Path) -> torch.Tensor | None:
    """The bytes of a plain RGB or grey JPEG within the pixel limit, for nvJPEG; None sends the file to Pillow."""
    try:
        with open_regular(path) as fh:
            blob = fh.read()
        with Image.open(io.BytesIO(blob), formats=("JPEG",)) as img:  # the header only: format, mode and declared size
            if img.format != "JPEG" or img.mode not in ("RGB", "L") or img.width * img.height > MAX_PIXELS:
                return None
        return torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    except Exception:  # unreadable, not a regular file, a link loop, not a JPEG: Pillow's pass names it
        return None


def _device_chunk(
    pool: ThreadPoolExecutor, files: list[Path], start: int, stop: int, size: int, device: torch.device, strict: bool
) -> Chunk:
    """A chunk with its JPEGs decoded by decode_jpeg on ``device`` (nvJPEG on a GPU), the rest by Pillow.

    For folders of large JPEGs CPU decoding is the bottleneck of building the
    cache; the GPU decodes a batch of 256x256 JPEGs many times faster. A batch
    that nvJPEG refuses (for one corrupt file, say) is decoded file by file by Pillow.
    """
    from torchvision.io import decode_jpeg

    jpeg = [i for i in range(start, stop) if files[i].suffix.lower() in JPEG_EXTENSIONS]
    blobs = list(pool.map(_jpeg_bytes, [files[i] for i in jpeg]))
    ready = [(i, blob) for i, blob in zip(jpeg, blobs) if blob is not None]
    decoded: dict[int, torch.Tensor] = {}
    if ready:
        try:
            images = decode_jpeg([blob for _, blob in ready], mode=jpeg_read_mode(3), device=device, apply_exif_orientation=True)
        except Exception as e:  # nvJPEG refuses the whole batch for one bad file
            warnings.warn(f"GPU decoding refused a batch ({type(e).__name__}: {error_text(e)}); decoding it with Pillow", stacklevel=4)
            images = []
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j, image in enumerate(images):
            by_shape.setdefault(tuple(image.shape), []).append(j)
        for members in by_shape.values():  # one resize per distinct shape, not per image
            fitted = fit_tensor(torch.stack([images[j] for j in members]), size).cpu()
            decoded.update({ready[j][0]: fitted[k] for k, j in enumerate(members)})
    rest = [i for i in range(start, stop) if i not in decoded]
    results = dict(zip(rest, pool.map(lambda i: _attempt(files[i], size, 3), rest)))
    out, keep, skipped = [], [], []
    for i in range(start, stop):
        result = decoded.get(i, results.get(i))
        if isinstance(result, DataError):
            if strict:
                raise result
            skipped.append(str(result))
        else:
            out.append(result)
            keep.append(i)
    stacked = torch.stack(out) if out else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return Chunk(start, stop - start, stacked, keep, skipped)
