"""Hostile files in DATA (issue 21): budgets checked from headers, pickles bounded, every kind of file named, nothing hangs.

Each test builds the input that broke a promise: a small file that declares (or builds) far more than the
per-image budget, a file that is not what its name says, a folder that cannot be read. Each ends in a warning
naming the file (skipped), or one line and exit 2 under --strict; never a traceback, a hang or gigabytes.
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import struct
import threading
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import simsiam.data.decode
from simsiam.cli import main
from simsiam.data import DataError, SkippedImagesWarning, load, load_folder
from simsiam.data.decode import MAX_CHANNELS, MAX_IMAGE_BYTES, MAX_PIXELS, decode_image

TINY = ["--backbone", "resnet10-tiny", "--proj-dim", "16", "--pred-hidden-dim", "8", "--batch-size", "2", "--epochs", "1"]
TINY += ["--image-size", "8", "--no-progress"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))


def _images(folder: Path, n: int = 3, size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _load(*args, **kwargs):
    """load(), and the messages of the SkippedImagesWarnings it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = load(*args, progress=False, **kwargs)
    return result, [str(w.message) for w in record if issubclass(w.category, SkippedImagesWarning)]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Cost:
    """The time and the growth of the peak memory of the block it wraps."""

    def __enter__(self):
        self.peak, self.started = _peak_mib(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds, self.mib = time.perf_counter() - self.started, _peak_mib() - self.peak


def _strict_cli(data: Path, tmp_path: Path, capsys) -> str:
    """`simsiam train DATA --strict`: asserts exit 2 and one line, no traceback; returns that line."""
    rc = main(["train", str(data), "--strict", *TINY, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# -- arrays: the declared shape and dtype are checked before anything is decompressed -----------------------


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npz_of_zeros(shape: tuple[int, ...], dtype: str) -> bytes:
    """An .npz holding one array of zeros of ``shape``, deflated (about 1,000 to 1): a valid archive, built without the array.

    Zeros deflated once, with a full flush (so that each copy stands alone), repeated; the zip written by hand.
    """
    header = _npy_header(shape, dtype)
    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    block = 1 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    tail_len = total % block
    tail = c.compress(bytes(tail_len)) + c.flush()
    body = first + zeros * (total // block) + tail
    crc = zlib.crc32(header)
    for _ in range(total // block):
        crc = zlib.crc32(bytes(block), crc)
    crc = zlib.crc32(bytes(tail_len), crc)
    name, size = b"image.npy", len(header) + total
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(body), size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(body), size, len(name), 0, 0, 0, 0, 0, 0)
    central += name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(body), 0)
    return local + body + central + end


def test_the_npz_builder_makes_a_real_archive_of_zeros():
    """The hand-made archive is what numpy reads, so the refusals below are of real files."""
    blob = _npz_of_zeros((300, 700, 3), "<u2")
    with np.load(io.BytesIO(blob)) as z:
        array = z["image"]
    assert array.shape == (300, 700, 3) and array.dtype == np.uint16 and not array.any()
    assert len(blob) < 300 * 700 * 3 * 2 // 100


@pytest.mark.parametrize(
    "shape, dtype, why",
    [
        ((13000, 13000, 3), "<u2", "507,000,000 values of 2 bytes"),  # the 1 MB file: 1 GB declared, 4.8 GB and 17 s to decode
        ((9000, 9000, 4), "<u2", "324,000,000 values of 2 bytes"),  # within the pixels and values of before, above the bytes of an image
        ((20000, 20000), "|u1", "400,000,000 values"),  # one band above MAX_PIXELS
        ((40, 40, 4000), "|u1", "4000 channels"),
    ],
)
def test_a_small_npz_declaring_more_than_the_budget_is_refused_before_decompressing(tmp_path, capsys, shape, dtype, why):
    root = _images(tmp_path / "data")
    blob = _npz_of_zeros(shape, dtype)
    assert len(blob) < 10 << 20
    (root / "bomb.npz").write_bytes(blob)
    with _Cost() as cost:
        ds, said = _load(root, image_size=8)
    assert cost.seconds < 1 and cost.mib < 100, (cost.seconds, cost.mib)
    assert len(ds) == 3 and len(said) == 1 and "bomb.npz (image): " in said[0] and why in said[0]
    with _Cost() as cost, pytest.raises(DataError, match=r"bomb\.npz \(image\): .*" + why):
        decode_image(root / "bomb.npz", 8)
    assert cost.seconds < 1 and cost.mib < 100
    line = _strict_cli(root, tmp_path, capsys)
    assert "bomb.npz (image): " in line and why in line


def test_the_budget_is_the_bytes_of_an_rgb_image_of_max_pixels(tmp_path, monkeypatch):
    """At the budget an array is read; one byte a value more (uint16) and it is refused, from the header."""
    assert MAX_IMAGE_BYTES == 3 * MAX_PIXELS
    monkeypatch.setattr(simsiam.data.decode, "MAX_IMAGE_BYTES", 16 * 16 * 3)
    np.save(tmp_path / "at.npy", np.full((16, 16, 3), 7, np.uint8))
    np.save(tmp_path / "above.npy", np.full((16, 16, 3), 7 * 257, np.uint16))
    np.savez_compressed(tmp_path / "above.npz", image=np.full((16, 16, 3), 7 * 257, np.uint16))
    assert decode_image(tmp_path / "at.npy", 8).unique().tolist() == [7]
    for name in ("above.npy", "above.npz"):
        with pytest.raises(DataError, match=r"768 values of 2 bytes, above the limit of .* 768 bytes an image"):
            decode_image(tmp_path / name, 8)
    monkeypatch.setattr(simsiam.data.decode, "MAX_IMAGE_BYTES", 16 * 16 * 3 * 2)
    assert decode_image(tmp_path / "above.npy", 8).unique().tolist() == [7]


@pytest.mark.parametrize("shape", [(100_000, 100_000, 3), (2**40, 2**20), (1, 1, 2**50)])
def test_an_npy_declaring_a_huge_shape_is_refused_from_its_header(tmp_path, shape):
    path = tmp_path / "x.npy"
    path.write_bytes(_npy_header(shape, "|u1") + bytes(64))
    with _Cost() as cost, pytest.raises(DataError, match=r"x\.npy: (refused as a possible decompression bomb|\d+ channels, more than)"):
        decode_image(path, 8)
    assert cost.seconds < 1 and cost.mib < 50


def test_an_npy_within_the_budget_but_holding_fewer_bytes_is_truncated(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(_npy_header((4000, 4000, 3), "|u1") + bytes(1000))
    with _Cost() as cost, pytest.raises(DataError, match=r"x\.npy: truncated: its header declares 48,000,000 bytes"):
        decode_image(path, 8)
    assert cost.mib < 30


@pytest.mark.parametrize("where", ["npy", "npz"])
def test_object_arrays_are_refused_and_never_unpickled(tmp_path, where):
    marker = tmp_path / "ran"
    array = np.array([_Runs(marker), 1], dtype=object)
    if where == "npy":
        np.save(tmp_path / "x.npy", array, allow_pickle=True)
    else:
        np.savez(tmp_path / "x.npz", image=array)
    with pytest.raises(DataError, match=rf"x\.{where}.*: an array of object; image arrays are uint8 or uint16"):
        decode_image(tmp_path / f"x.{where}", 8)
    assert not marker.exists()


class _Runs:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_npz_of_many_members_is_one_line_in_bounded_time(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(20_000):
            z.writestr(f"a{i}.npy", b"")
    (tmp_path / "many.npz").write_bytes(buf.getvalue())
    with _Cost() as cost, pytest.raises(DataError, match=r"many\.npz: an \.npz of 20000 arrays \(a0, a1, a2, a3, a4, \.\.\.\)"):
        decode_image(tmp_path / "many.npz", 8)
    assert cost.seconds < 1


# -- images: the declared size is checked before anything is decoded --------------------------------------


def _gif_declaring(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + image + b"\x3b"


def _bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + bytes(64)


def _tiff_declaring(width: int, height: int) -> bytes:
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8), (277, 3, 1), (279, 4, 16)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
    return b"II*\x00" + struct.pack("<I", 24) + bytes(16) + ifd + struct.pack("<I", 0)


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "make, ext, width, height",
    [(_png_declaring, ".png", 30000, 30000), (_png_declaring, ".png", 1, 200_000_000), (_gif_declaring, ".gif", 65535, 65535),
     (_bmp_declaring, ".bmp", 30000, -30000), (_tiff_declaring, ".tif", 100_000, 100_000)],
)  # fmt: skip
def test_a_tiny_image_declaring_a_huge_size_is_refused_from_its_header(tmp_path, monkeypatch, make, ext, width, height):
    root = _images(tmp_path / "data")
    (root / f"bomb{ext}").write_bytes(make(width, height))
    with monkeypatch.context() as m:  # the header says what the test means it to (Pillow's own check off to see it)
        m.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(root / f"bomb{ext}") as img:
            assert img.size == (width, abs(height)) and width * abs(height) > MAX_PIXELS
    with _Cost() as cost:
        ds, said = _load(root, image_size=8)
    assert cost.seconds < 1 and cost.mib < 100
    assert len(ds) == 3 and len(said) == 1 and f"bomb{ext}: refused as a possible decompression bomb" in said[0]


# -- multi-page TIFFs: pages counted to MAX_CHANNELS + 1, read in one pass -------------------------------------


def _tiff_of_pages(path: Path, pages: int, size: int = 1) -> Path:
    """A TIFF of ``pages`` grey pages of size x size, page i all of value i % 256, written by hand.

    Pillow's own writer is quadratic in the pages too (minutes for 10,000); each page here is its pixels, then
    its directory of 8 tags pointing to the next page.
    """
    pixels = size * size
    step = pixels + pixels % 2 + 2 + 8 * 12 + 4  # pixels (even length), tag count, tags, next offset
    out = bytearray(b"II*\x00" + struct.pack("<I", 8 + pixels + pixels % 2))
    for i in range(pages):
        start = 8 + i * step
        tags = [(256, 4, size), (257, 4, size), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, start), (278, 4, size),
                (279, 4, pixels)]  # fmt: skip
        following = 0 if i == pages - 1 else start + step + pixels + pixels % 2
        out += bytes([i % 256]) * pixels + bytes(pixels % 2) + struct.pack("<H", len(tags))
        out += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags) + struct.pack("<I", following)
    path.write_bytes(bytes(out))
    return path


def test_the_tiff_builder_makes_real_pages(tmp_path):
    with Image.open(_tiff_of_pages(tmp_path / "p.tif", 5, size=3)) as img:
        assert img.n_frames == 5 and img.size == (3, 3)
        img.seek(4)
        assert np.asarray(img).tolist() == [[4] * 3] * 3


@pytest.mark.parametrize("pages", [10_000, 20_000])
def test_a_tiff_of_thousands_of_tiny_pages_is_refused_within_a_second(tmp_path, pages):
    """Pillow's walk along the pages is quadratic: 10,000 pages took 2.3 s to count; 513 are walked now."""
    path = _tiff_of_pages(tmp_path / "pages.tif", pages)
    with _Cost() as cost, pytest.raises(DataError, match=rf"pages\.tif: a TIFF of more than {MAX_CHANNELS} pages"):
        decode_image(path, 8)
    assert cost.seconds < 1
    with _Cost() as cost:  # read as an image where 3 channels are asked: its first page, as ever
        assert decode_image(path, 8, channels=3).shape == (3, 8, 8)
    assert cost.seconds < 1


def test_a_folder_of_stacks_names_the_tiff_of_too_many_pages(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        _tiff_of_pages(root / f"{i}.tif", 4, size=8)
    _tiff_of_pages(root / "pages.tif", 10_000)
    with _Cost() as cost:
        ds, said = _load(root, image_size=8)
    assert cost.seconds < 2 and ds.channels == 4 and len(ds) == 3
    assert len(said) == 1 and f"pages.tif: a TIFF of more than {MAX_CHANNELS} pages" in said[0]
    assert f"pages.tif: a TIFF of more than {MAX_CHANNELS} pages" in _strict_cli(root, tmp_path, capsys)


@pytest.mark.parametrize("pages", [2, MAX_CHANNELS])
def test_tiffs_up_to_max_channels_pages_are_read_page_by_page(tmp_path, pages):
    path = _tiff_of_pages(tmp_path / "pages.tif", pages, size=2)
    bands = decode_image(path, 2)
    assert bands.shape == (pages, 2, 2) and bands[:, 0, 0].tolist() == [i % 256 for i in range(pages)]


def test_a_tiff_of_max_channels_plus_one_pages_is_refused(tmp_path):
    with pytest.raises(DataError, match=f"more than {MAX_CHANNELS} pages"):
        decode_image(_tiff_of_pages(tmp_path / "pages.tif", MAX_CHANNELS + 1), 2)


# -- CIFAR batches: what a pickle builds is bounded as it is built --------------------------------------------


PROTO, MARK, LIST, TUPLE, DICT, STOP = b"\x80\x02", b"(", b"l", b"t", b"d", b"."
EMPTY_DICT, SETITEM, NONE, APPENDS, EMPTY_LIST, POP = b"}", b"s", b"N", b"e", b"]", b"0"


def _binput(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)  # LONG_BINPUT


def _binget(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)  # LONG_BINGET


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _batch_around(labels: bytes) -> bytes:
    """A CIFAR batch pickle {b'data': b'...', b'labels': <labels>}, ``labels`` given as the opcodes that build it."""
    data = b"C" + bytes([0]) + b""  # SHORT_BINBYTES of length 0
    return PROTO + EMPTY_DICT + b"C\x04data" + data + SETITEM + b"C\x06labels" + labels + SETITEM + STOP


def _shared_lists(width: int, depth: int) -> bytes:
    """A list of ``width`` ints, then ``depth`` times a list of ``width`` references to the list before: width**(depth+1) labels."""
    ops = MARK + _int(0) * width + LIST + _binput(0)
    for level in range(1, depth + 1):
        ops += POP + MARK + _binget(level - 1) * width + LIST + _binput(level)
    return ops


def _shared_tuple_key(width: int, depth: int) -> bytes:
    """A dict keyed by a tuple of the same tuple, nested: hashing the key alone runs width**depth steps."""
    ops = MARK + _int(0) * width + TUPLE + _binput(0)
    for level in range(1, depth + 1):
        ops += POP + MARK + _binget(level - 1) * width + TUPLE + _binput(level)
    return EMPTY_DICT + ops + _int(1) + SETITEM


def _nested(depth: int) -> bytes:
    return EMPTY_LIST * depth + b"a" * (depth - 1)  # APPEND: each list into the one before it


CIFAR_BOMBS = {
    "labels: a list of the same list, 7 deep": _batch_around(_shared_lists(1000, 6)),
    "labels: a list of the same list, 2 deep": _batch_around(_shared_lists(100, 1)),
    "a dict key: a tuple of the same tuple": _batch_around(_shared_tuple_key(1000, 6)),
    "labels: lists nested 100 deep": _batch_around(_nested(100)),
    "labels: 3,000,000 Nones": _batch_around(EMPTY_LIST + MARK + NONE * 3_000_000 + APPENDS),
}


@pytest.mark.parametrize("case", list(CIFAR_BOMBS))
def test_a_cifar_batch_that_would_build_without_bound_is_refused_within_a_second(tmp_path, capsys, case):
    blob = CIFAR_BOMBS[case]
    assert len(blob) < 10 << 20
    (tmp_path / "data_batch_1").write_bytes(blob)
    with _Cost() as cost, pytest.raises(DataError, match=r"^\S*data_batch_1: (refused|damaged)") as e:
        load(tmp_path)
    assert cost.seconds < 1 and cost.mib < 100, (cost.seconds, cost.mib)
    assert "\n" not in str(e.value)
    rc = main(["train", str(tmp_path), *TINY, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "data_batch_1: " in err[0]


def test_the_shared_lists_would_expand_with_plain_pickle():
    """The bomb is real: pickle's own loader builds it at once, and its labels hold width**2 ints by reference."""
    labels = pickle.loads(_batch_around(_shared_lists(100, 1)))[b"labels"]
    assert len(labels) == 100 and all(item is labels[0] for item in labels) and len(labels[0]) == 100


def test_a_cifar_batch_referring_to_one_array_many_times_is_refused(tmp_path):
    array = np.zeros((1, 3072), np.uint8)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": [array] * 1000, b"labels": [0] * 1000}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: refused: .* ndarray referred to twice"):
        load(tmp_path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_cifar_batches_of_many_images_still_load(tmp_path, protocol):
    n = 2000
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(), b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}  # fmt: skip
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    ds = load(tmp_path)
    assert len(ds) == n and ds.labels.tolist() == batch[b"labels"]


# -- kinds of file in DATA: each named, skipped, or one line under --strict; never a hang ---------------------------


def _make(kind: str, root: Path) -> str:
    """Put a file of ``kind`` in ``root``; return the name (as printed) that the warning must show."""
    if kind == "zero-byte":
        (root / "x.png").write_bytes(b"")
        return "x.png: an empty file (0 bytes)"
    if kind == "fifo":
        os.mkfifo(root / "x.png")
        return "x.png: not a regular file (a FIFO)"
    if kind == "symlink loop":
        os.symlink("x.png", root / "x.png")
        return "x.png: cannot read (Too many levels of symbolic links)"
    if kind == "broken symlink":
        os.symlink("nowhere.png", root / "x.png")
        return "x.png: cannot read (No such file or directory)"
    if kind == "newline in name":
        (root / "a\nb.png").write_bytes(b"junk")
        return "a\\nb.png: not an image"
    if kind == "invalid utf-8 name":
        with open(os.fsencode(root) + b"/\xff\xfe.png", "wb") as fh:
            fh.write(b"junk")
        return "\\xff\\xfe.png: not an image"
    if kind == "link to a fifo":
        os.mkfifo(root.parent / "pipe")
        os.symlink(root.parent / "pipe", root / "x.jpg")
        return "x.jpg: not a regular file (a FIFO)"
    raise AssertionError(kind)


KINDS = ["zero-byte", "fifo", "symlink loop", "broken symlink", "newline in name", "invalid utf-8 name", "link to a fifo"]


def _within(seconds: float, fn):
    """fn(), failing the test (never hanging it) if it takes longer than ``seconds``."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "it blocked"
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_file_is_a_named_warning_or_one_strict_line(tmp_path, capsys, kind):
    root = _images(tmp_path / "data")
    shown = _make(kind, root)
    ds, said = _within(30, lambda: _load(root, image_size=8))
    assert len(ds) == 3 and len(said) == 1 and shown in said[0] and "\n" not in said[0]
    with pytest.raises(DataError) as e:
        _within(30, lambda: load(root, image_size=8, strict=True, progress=False))
    assert shown in str(e.value) and "\n" not in str(e.value)
    assert shown in _within(60, lambda: _strict_cli(root, tmp_path, capsys))


def test_a_link_to_a_regular_file_is_followed_and_a_folder_named_like_an_image_is_searched(tmp_path):
    root = _images(tmp_path / "data")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    (root / "x.jpg").mkdir()  # a folder: searched, never opened as an image
    Image.new("RGB", (8, 8), (10, 200, 10)).save(root / "x.jpg" / "inside.png")
    ds, said = _load(root, image_size=8)
    assert said == [] and len(ds) == 5
    assert {Path(p).name for p in ds.paths} == {"0.png", "1.png", "2.png", "link.png", "inside.png"}


def test_a_file_that_disappears_between_listing_and_decoding_is_named(tmp_path, monkeypatch, capsys):
    import simsiam.data.sources

    root = _images(tmp_path / "data")
    (root / "gone.png").write_bytes((root / "0.png").read_bytes())
    listed = simsiam.data.sources.list_images

    def list_then_delete(*args, **kwargs):
        found = listed(*args, **kwargs)
        (root / "gone.png").unlink(missing_ok=True)
        return found

    monkeypatch.setattr(simsiam.data.sources, "list_images", list_then_delete)
    ds, said = _load(root, image_size=8)
    assert len(ds) == 3 and len(said) == 1 and "gone.png: cannot read (No such file or directory)" in said[0]
    (root / "gone.png").write_bytes((root / "0.png").read_bytes())
    assert "gone.png: cannot read (No such file or directory)" in _strict_cli(root, tmp_path, capsys)


# -- folders that cannot be read (EACCES) ----------------------------------------------------------------------


def _class_folders(root: Path) -> Path:
    for name in ("a", "b", "c"):
        _images(root / name)
    return root


def _refuse_scandir(monkeypatch, folder: Path) -> None:
    """os.scandir raises PermissionError for ``folder``, as it does for a folder without read permission (tests run as root)."""
    real = os.scandir

    def scandir(path="."):
        if os.path.realpath(path) == os.path.realpath(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_class_folder_that_cannot_be_read_is_named_and_skipped_or_stops_strict(tmp_path, monkeypatch, capsys):
    root = _class_folders(tmp_path / "data")
    _refuse_scandir(monkeypatch, root / "b")
    ds, said = _load(root, image_size=8)
    assert ds.classes == ["a", "c"] and len(ds) == 6
    assert len(said) == 1 and "skipped 1 folder(s) that cannot be read" in said[0] and "data/b (Permission denied)" in said[0]
    with pytest.raises(DataError, match=r"data/b: cannot read the folder \(Permission denied\); --strict stops"):
        load_folder(root, image_size=8, strict=True, progress=False)
    assert "data/b: cannot read the folder (Permission denied)" in _strict_cli(root, tmp_path, capsys)


def test_a_nested_folder_that_cannot_be_read_is_named_too(tmp_path, monkeypatch):
    root = _class_folders(tmp_path / "data")
    _images(root / "a" / "deeper")
    _refuse_scandir(monkeypatch, root / "a" / "deeper")
    ds, said = _load(root, image_size=8)
    assert ds.classes == ["a", "b", "c"] and len(ds) == 9 and "a/deeper (Permission denied)" in said[0]


def test_data_itself_unreadable_is_one_line_not_an_empty_folder(tmp_path, monkeypatch, capsys):
    root = _class_folders(tmp_path / "data")
    _refuse_scandir(monkeypatch, root)
    with pytest.raises(DataError, match=r"data: cannot read the folder \(Permission denied\)$"):
        load(root, image_size=8, progress=False)
    assert "data: cannot read the folder (Permission denied)" in _strict_cli(root, tmp_path, capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders without read permission: simulated above instead")
def test_a_class_folder_without_read_permission_is_named(tmp_path):
    root = _class_folders(tmp_path / "data")
    (root / "b").chmod(0)
    try:
        ds, said = _load(root, image_size=8)
        assert ds.classes == ["a", "c"] and "data/b (Permission denied)" in said[0]
        with pytest.raises(DataError, match=r"data/b: cannot read the folder"):
            load(root, image_size=8, strict=True, progress=False)
    finally:
        (root / "b").chmod(0o755)
