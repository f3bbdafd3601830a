"""The decoded image cache trusts nothing (issue 21, item 6).

A source file changed with its stamps restored is decoded again; a cache file
damaged anywhere (not only in the sampled images) is found, named once, and
never trained on; every file of an entry is checked on open.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.data import DataError, load
from simsiam.data.cache import probe_rows
from simsiam.data.decode import decode_image
from simsiam.files import CacheWarning

N = 40  # more images than the 16 sampled when an entry is opened


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))


def _picture(seed: int, size: int = 16) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _folder(root: Path, n: int = N, ext: str = ".bmp") -> Path:
    """n random images; BMP by default, whose files all have the same size."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _picture(i).save(root / f"{i:03d}{ext}")
    return root


def _load(root: Path, **kwargs):
    """load() and the messages of the cache warnings it (and reading its images) gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        images = load(root, progress=False, **kwargs)
        pixels = images.images[:]  # a disk set is read here
    return images, pixels, [str(w.message) for w in record if issubclass(w.category, CacheWarning)]


def _entries(tmp_path: Path, fmt: str = "*") -> list[Path]:
    return sorted(p for p in (tmp_path / "cache" / "images").glob(f"*.{fmt}") if not p.name.startswith("."))


def _restamp(file: Path, like: os.stat_result) -> None:
    os.utime(file, ns=(like.st_atime_ns, like.st_mtime_ns))


# -- source files changed behind the stamps ---------------------------------------------------------


@pytest.mark.parametrize("same_size", [True, False], ids=["same size", "other size"])
def test_a_file_edited_with_its_mtime_restored_is_decoded_again(tmp_path, same_size):
    root = _folder(tmp_path / "data", ext=".bmp" if same_size else ".png")
    target = sorted(root.iterdir())[7]
    _, before, said = _load(root)
    assert said == []
    stamp = target.stat()
    _picture(1000, size=16 if same_size else 24).save(target)  # then as `touch -r old new` or `rsync -t` leave it
    _restamp(target, stamp)
    assert target.stat().st_mtime_ns == stamp.st_mtime_ns and (target.stat().st_size == stamp.st_size) == same_size
    _, after, said = _load(root)
    assert said == []
    assert torch.equal(after[7], decode_image(target, 16)) and not torch.equal(after[7], before[7])
    assert torch.equal(after[:7], before[:7]) and torch.equal(after[8:], before[8:])


def test_two_files_swapped_with_their_stamps_kept_are_decoded_again(tmp_path):
    root = _folder(tmp_path / "data")
    a, b = sorted(root.iterdir())[3], sorted(root.iterdir())[30]
    _, before, _ = _load(root)
    stamps = a.stat(), b.stat()
    swap = tmp_path / "swap"
    shutil.copy2(a, swap)  # cp -p: content and mtime travel together
    shutil.copy2(b, a)
    shutil.copy2(swap, b)
    _restamp(a, stamps[0])
    _restamp(b, stamps[1])
    _, after, said = _load(root)
    assert said == [] and torch.equal(after[3], before[30]) and torch.equal(after[30], before[3])


def test_an_unchanged_folder_reuses_its_entry(tmp_path):
    root = _folder(tmp_path / "data")
    _load(root)
    entry = _entries(tmp_path)
    made = entry[0].stat().st_mtime_ns
    _, _, said = _load(root)
    assert said == [] and _entries(tmp_path) == entry and entry[0].stat().st_mtime_ns == made


# -- damaged cache files ----------------------------------------------------------------------------


def _flip(file: Path, at: int) -> None:
    data = bytearray(file.read_bytes())
    data[at] ^= 0x55
    file.write_bytes(bytes(data))


def _unsampled_row() -> int:
    return next(r for r in range(N) if r not in probe_rows(N))


@pytest.mark.parametrize("data_on", ["memory", "disk"])
def test_a_flipped_byte_in_an_image_that_is_not_sampled_is_never_trained_on(tmp_path, data_on):
    root = _folder(tmp_path / "data")
    _, before, _ = _load(root, data_on=data_on)
    (entry,) = _entries(tmp_path, "raw")
    row = _unsampled_row()
    _flip(entry / "images.u8", row * 3 * 16 * 16 + 100)
    _, again, said = _load(root, data_on=data_on)
    assert torch.equal(again, before)  # the damaged image was decoded again from its file
    assert len(said) == 1 and f"image {row} ({root / f'{row:03d}.bmp'}) does not match its checksum" in said[0], said
    assert str(entry) in said[0] and "the next run rebuilds it" in said[0]
    assert _entries(tmp_path) == []  # removed, so that ...
    _, third, said = _load(root, data_on=data_on)  # ... the next run rebuilds it, and is quiet
    assert said == [] and torch.equal(third, before) and len(_entries(tmp_path)) == 1


def test_damage_found_in_the_middle_of_training_from_disk_is_one_warning(tmp_path):
    root = _folder(tmp_path / "data")
    images, before, _ = _load(root, data_on="disk")
    (entry,) = _entries(tmp_path, "raw")
    rows = [r for r in range(N) if r not in probe_rows(N)][:3]
    for r in rows:
        _flip(entry / "images.u8", r * 768 + 5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        batches = [images.images[torch.arange(start, start + 8)] for start in range(0, N, 8)]
        batches += [images.images[torch.tensor(rows)]]  # after the entry is removed, its files are still read
    said = [str(w.message) for w in record if issubclass(w.category, CacheWarning)]
    assert len(said) == 1 and f"image {rows[0]} " in said[0], said
    assert torch.equal(torch.cat(batches[:-1]), before) and torch.equal(batches[-1], before[rows])


def test_a_damaged_image_whose_file_is_gone_is_an_error_naming_it(tmp_path):
    root = _folder(tmp_path / "data")
    images, _, _ = _load(root, data_on="disk")
    (entry,) = _entries(tmp_path, "raw")
    row = _unsampled_row()
    _flip(entry / "images.u8", row * 768)
    source = root / f"{row:03d}.bmp"
    source.write_bytes(b"not an image any more")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        with pytest.raises(DataError, match=f"image {row} of the cache is damaged and its file no longer decodes: .*{source.name}"):
            images.images[[row]]


def test_a_flipped_byte_in_a_jpeg_entry_is_decoded_again_from_its_file(tmp_path):
    root = _folder(tmp_path / "data")
    images, before, _ = _load(root, data_on="disk", cache_format="jpeg")
    (entry,) = _entries(tmp_path, "jpeg")
    offsets = np.fromfile(entry / "offsets.i64", dtype="<i8")
    row = _unsampled_row()
    _flip(entry / "shard-000.bin", int(offsets[row] + offsets[row + 1]) // 2)
    fresh = load(root, progress=False, data_on="disk", cache_format="jpeg").images
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        encoded = fresh.decode_on(fresh.read_encoded([row]), torch.device("cpu"))  # the bytes nvJPEG would be given
        decoded = fresh[[row]]  # decoded here
    said = [str(w.message) for w in record if issubclass(w.category, CacheWarning)]
    assert len(said) == 1 and f"image {row} " in said[0], said
    assert torch.equal(encoded[0], before[row])  # encoded again as the cache encodes it
    assert torch.equal(decoded[0], decode_image(root / f"{row:03d}.bmp", 16))  # the file's own pixels


@pytest.mark.parametrize("damage", ["crc deleted", "crc truncated", "crc garbled", "offsets deleted", "other version", "data truncated"])
def test_every_file_of_an_entry_is_checked_on_open(tmp_path, damage):
    root = _folder(tmp_path / "data")
    fmt = "jpeg" if damage.startswith("offsets") else "raw"
    _, before, _ = _load(root, cache_format=fmt)
    (entry,) = _entries(tmp_path, fmt)
    named, why = {
        "crc deleted": ("crc32.u32", "cannot be read"),
        "crc truncated": ("crc32.u32", "truncated or damaged"),
        "crc garbled": ("crc32.u32", "truncated or damaged"),
        "offsets deleted": ("offsets.i64", "cannot be read"),
        "other version": ("meta.json", "written by another version of simsiam (format 2"),
        "data truncated": ("images.u8", "truncated"),
    }[damage]
    file = entry / named
    if damage.endswith("deleted"):
        file.unlink()
    elif damage in ("crc truncated", "data truncated"):
        file.write_bytes(file.read_bytes()[:-1])
    elif damage == "crc garbled":
        _flip(file, 4 * _unsampled_row())
    else:
        head, _, body = file.read_bytes().partition(b"\n")
        words = head.split(b" ")
        words[-3] = b"2"
        file.write_bytes(b" ".join(words) + b"\n" + body)
    _, again, said = _load(root, cache_format=fmt)
    assert len(said) == 1 and str(file) in said[0] and why in said[0] and "rebuilding it" in said[0], said
    assert torch.equal(again, before)
