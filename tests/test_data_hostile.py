"""Hostile and odd DATA (issue 15): no code runs, nothing hangs, nothing huge is allocated, every name stays one line.

Each test builds the input that broke a promise and would have caught it.
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.data import DataError, SkippedImagesWarning, list_images, load, load_folder
from simsiam.data.bulk import decode_all
from simsiam.data.decode import MAX_PIXELS, decode_image
from simsiam.files import CacheWarning


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))


def _images(folder: Path, n: int = 4, size: int = 16, ext: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}{ext}")
    return folder


def _load(*args, **kwargs):
    """load(), and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = load(*args, progress=False, **kwargs)
    return result, [str(w.message) for w in record if issubclass(w.category, (SkippedImagesWarning, CacheWarning))]


# -- CIFAR batches never run code --------------------------------------------------------------


class _RunsCode:
    """A pickle payload that runs ``call(*args)`` when unpickled with plain pickle.load."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return (self.call, self.args)


def _payloads(marker: Path) -> dict:
    import builtins

    return {
        "os.system": _RunsCode(os.system, f"touch {marker}"),
        "subprocess.call": _RunsCode(subprocess.call, ["touch", str(marker)]),
        "builtins.exec": _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("payload", ["os.system", "subprocess.call", "builtins.exec"])
@pytest.mark.parametrize("file", ["data_batch_1", "batches.meta"])
def test_a_crafted_cifar_file_runs_no_code(tmp_path, payload, file):
    marker = tmp_path / "marker"
    data = tmp_path / "data"
    data.mkdir()
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    evil = _payloads(marker)[payload]
    with open(data / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": evil, b"labels": [0]} if file == "data_batch_1" else good, fh)
    with open(data / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": evil} if file == "batches.meta" else {b"label_names": [b"a", b"b"]}, fh)
    with pytest.raises(DataError) as info:
        load(data)
    message = str(info.value)
    assert not marker.exists(), "unpickling DATA ran code"
    assert message.startswith(f"{data / file}: ") and "\n" not in message
    assert "nothing in it was run" in message and payload.split(".")[1] in message


def test_the_crafted_pickle_would_run_code_with_plain_pickle(tmp_path):
    """The control: the payload above does run under pickle.load, so the test above proves something."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_RunsCode(os.system, f"touch {marker}")))
    assert marker.exists()


def test_cifar_arrays_of_objects_are_refused(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": np.array([1, b"x"], dtype=object), b"labels": [0]}, fh)
    with pytest.raises(DataError, match=r"data_batch_1: damaged, or not a CIFAR-10 python file \(.*object"):
        load(tmp_path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_cifar_batches_load_with_every_pickle_protocol(tmp_path, protocol):
    data = np.random.default_rng(0).integers(0, 255, (6, 3072), dtype=np.uint8)
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"batch_label": b"training batch 1 of 5", b"data": data, b"labels": [3, 1, 4, 1, 5, 9]}, fh, protocol=protocol)
    with open(tmp_path / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, fh, protocol=protocol)
    ds = load(tmp_path)
    assert ds.labels.tolist() == [3, 1, 4, 1, 5, 9] and ds.classes[9] == "c9"
    assert torch.equal(ds.images.flatten(1), torch.from_numpy(data))


# -- decompression bombs ------------------------------------------------------------------------


def _png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header declares width x height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose start-of-frame header is rewritten to declare width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
    blob = bytearray(buf.getvalue())
    sof = blob.index(b"\xff\xc0")
    blob[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(blob)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("pillow_check", ["on", "off"])
def test_a_tiny_file_declaring_a_huge_image_is_refused_from_its_header(tmp_path, monkeypatch, pillow_check):
    if pillow_check == "off":  # a user who disabled Pillow's own check still gets ours
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    root = _images(tmp_path / "data")
    bomb = _png_declaring(30000, 30000)
    assert len(bomb) < 200 and 30000 * 30000 > MAX_PIXELS
    (root / "bomb.png").write_bytes(bomb)
    (root / "bomb.jpg").write_bytes(_jpeg_declaring(30000, 30000))
    before, started = _peak_mib(), time.perf_counter()
    ds, said = _load(root, image_size=16)
    assert time.perf_counter() - started < 10 and _peak_mib() - before < 300  # 30000 x 30000 x 3 would be 2.7 GB
    assert len(ds) == 4 and len(said) == 1
    assert "skipped 2 of 6 files" in said[0] and "bomb.png: refused as a possible decompression bomb" in said[0]
    assert "bomb.jpg: refused as a possible decompression bomb" in said[0]
    with pytest.raises(DataError, match="bomb.png: refused as a possible decompression bomb"):
        decode_image(root / "bomb.png", 16)


def test_the_gpu_decoding_path_refuses_bombs_too(tmp_path):
    """decode_jpeg on the CPU stands for nvJPEG: the header is checked before the bytes go to the decoder."""
    root = _images(tmp_path / "data", ext=".jpg")
    (root / "bomb.jpg").write_bytes(_jpeg_declaring(30000, 30000))
    files, _, _ = list_images(root)
    before = _peak_mib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, keep, skipped = decode_all(files, 16, progress=False, jpeg_device="cpu")
    assert _peak_mib() - before < 300
    assert len(keep) == 4 and len(skipped) == 1 and "bomb.jpg: refused" in skipped[0]


# -- only regular files ---------------------------------------------------------------------------


def _finishes(fn, timeout: float, unblock: list[Path]) -> tuple[bool, object]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():  # it blocked in open(): open the write ends so that it can finish and the test end
        for fifo in unblock:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(10)
        return False, None
    return True, box.get("result")


@pytest.mark.parametrize("jpeg_device", [None, "cpu"])
def test_fifos_and_devices_in_data_are_skipped_without_being_opened(tmp_path, jpeg_device):
    root = _images(tmp_path / "data", ext=".jpg")
    os.mkfifo(root / "pipe.jpg")
    os.mkfifo(root / "pipe.png")
    os.symlink("/dev/zero", root / "zero.png")  # a character device that never ends
    files, _, _ = list_images(root)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return decode_all(files, 16, progress=False, jpeg_device=jpeg_device)

    finished, result = _finishes(run, 30, [root / "pipe.jpg", root / "pipe.png"])
    assert finished, "decoding blocked on a FIFO"
    _, keep, skipped = result
    assert len(keep) == 4 and len(skipped) == 3
    assert any("pipe.jpg: not a regular file (a FIFO)" in s for s in skipped)
    assert any("pipe.png: not a regular file (a FIFO)" in s for s in skipped)
    assert any("zero.png: not a regular file (a character device)" in s for s in skipped)


def test_a_folder_with_a_fifo_loads_with_automatic_size(tmp_path):
    """The automatic image size reads headers too: it must not open the FIFO either."""
    root = _images(tmp_path / "data")
    os.mkfifo(root / "pipe.png")
    finished, result = _finishes(lambda: _load(root), 30, [root / "pipe.png"])
    assert finished, "loading blocked on a FIFO"
    ds, said = result
    assert len(ds) == 4 and ds.image_size == 16 and len(said) == 1 and "pipe.png: not a regular file (a FIFO)" in said[0]


# -- float images -------------------------------------------------------------------------------


def test_float_tiffs_in_0_to_1_are_scaled_to_0_to_255(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "half.tif")
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "ramp.tiff")
    assert Image.open(tmp_path / "half.tif").mode == "F"
    half = decode_image(tmp_path / "half.tif", 8)
    assert abs(half.float().mean().item() - 127.5) <= 1  # grey, not black or white
    ramp_decoded = decode_image(tmp_path / "ramp.tiff", 8)[0].float()
    assert ramp_decoded.min() <= 5 and ramp_decoded.max() >= 250
    Image.fromarray(np.full((8, 8), 200.0, np.float32)).save(tmp_path / "bytes.tif")
    assert decode_image(tmp_path / "bytes.tif", 8).float().mean().item() == pytest.approx(200, abs=1)


# -- names that would break a line ----------------------------------------------------------------


def test_names_with_newlines_and_carriage_returns_stay_on_one_line(tmp_path):
    root = _images(tmp_path / "data")
    (root / "bad\nname.png").write_bytes(b"not an image")
    (root / "cr\rname.png").write_bytes(b"")
    (root / "esc\x1b[31m.png").write_bytes(b"garbage")
    ds, said = _load(root, image_size=16)
    assert len(ds) == 4 and len(said) == 1
    message = said[0]
    assert len(message.splitlines()) == 1 and "\r" not in message and "\x1b" not in message
    assert "bad\\nname.png" in message and "cr\\rname.png" in message and "esc\\x1b[31m.png" in message
    with pytest.raises(DataError) as info:
        load_folder(root, image_size=16, strict=True, progress=False)
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(DataError) as info:
        load(tmp_path / "no\nsuch")
    assert str(info.value) == f"{tmp_path}/no\\nsuch: no such file or folder"


# -- the cache ------------------------------------------------------------------------------------


def _rewrite_record(record: Path, change) -> None:
    """Change the entry's record and sign it again, as a foreign writer would: only the structure checks can refuse it."""
    import hashlib
    import json

    head, _, body = record.read_bytes().partition(b"\n")
    rec = json.loads(body)
    change(rec)
    body = json.dumps(rec).encode()
    record.write_bytes(b" ".join(head.split(b" ")[:-1]) + b" " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


DAMAGES = ["no labels", "labels out of range", "wrong shape", "truncated", "longer", "garbled record", "garbled pixels", "no record"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_image_cache_is_named_and_rebuilt(tmp_path, damage):
    root = _images(tmp_path / "data" / "a", n=3).parent
    _images(root / "b", n=3)
    first, said = _load(root, data_on="disk")
    assert said == []
    (entry,) = (tmp_path / "cache" / "images").glob("*.raw")
    pixels, record = entry / "images.u8", entry / "meta.json"
    named = record
    if damage == "no labels":
        _rewrite_record(record, lambda rec: rec.pop("labels"))
    elif damage == "labels out of range":
        _rewrite_record(record, lambda rec: rec.update(labels=[y + 5 for y in rec["labels"]]))
    elif damage == "wrong shape":
        _rewrite_record(record, lambda rec: rec.update(shape=[6, 1, 16, 16]))
    elif damage in ("truncated", "longer"):
        data = pixels.read_bytes()
        pixels.write_bytes(data[:-100] if damage == "truncated" else data + b"x")
        named = pixels
    elif damage == "garbled record":
        data = bytearray(record.read_bytes())
        data[len(data) // 2] ^= 0x20
        record.write_bytes(bytes(data))
    elif damage == "garbled pixels":
        pixels.write_bytes(bytes(pixels.stat().st_size))  # right size, wrong bytes
        named = pixels
    else:
        record.unlink()
    again, said = _load(root, data_on="disk")
    assert len(said) == 1 and str(named) in said[0] and "rebuilding" in said[0], said
    assert torch.equal(again.images[:], first.images[:]) and torch.equal(again.labels, first.labels)
    third, said = _load(root)  # rebuilt: no warning, no error, ever after
    assert said == [] and torch.equal(third.labels, first.labels) and torch.equal(third.images, first.images[:])
    assert [p.name for p in (tmp_path / "cache" / "images").iterdir() if not p.name.endswith(".lock")] == [entry.name]


def test_a_damaged_feature_cache_is_named_and_recomputed(tmp_path):
    from simsiam.evaluate import features_of
    from simsiam.model import SimSiam

    model = SimSiam("resnet10-slim", small_images=True, proj_dim=16).eval()
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    first, file = features_of(model, images, "cpu", cache_key="k")
    torch.save(torch.zeros(4, 3), file)  # the wrong shape for these images
    with pytest.warns(CacheWarning, match="feature cache .* cannot be used"):
        again, _ = features_of(model, images, "cpu", cache_key="k")
    assert torch.allclose(again, first)


# -- our own outputs inside DATA -------------------------------------------------------------------


def _run_folder(path: Path, kind: str) -> Path:
    path.mkdir(parents=True)
    Image.new("RGB", (300, 200)).save(path / "training.png")
    if kind == "checkpoint":
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    else:
        (path / "config.yaml").write_text("epochs: 1\n")
        (path / "metrics.csv").write_text("epoch,loss\n")
    return path


@pytest.mark.parametrize("kind", ["checkpoint", "config and metrics"])
def test_a_run_folder_inside_data_is_never_read_as_a_class(tmp_path, monkeypatch, kind):
    photos = tmp_path / "photos"
    _images(photos / "cats")
    _images(photos / "dogs")
    _run_folder(photos / "runs" / "photos", kind)
    monkeypatch.chdir(photos)  # cd photos && simsiam train .
    ds, said = _load(".")
    assert ds.classes == ["cats", "dogs"] and len(ds) == 8
    assert len(said) == 1 and "runs/photos" in said[0] and "never read as data" in said[0]


def test_excluded_outputs_and_flat_folders(tmp_path):
    photos = _images(tmp_path / "photos")
    _run_folder(photos / "runs" / "x", "checkpoint")
    out = photos / "out"  # a run folder that has written nothing but its figure yet
    out.mkdir()
    Image.new("RGB", (50, 50)).save(out / "training.png")
    Image.new("RGB", (50, 50)).save(photos / "neighbors.png")  # an output file of ours
    ds, said = _load(photos, exclude=[out, photos / "neighbors.png"])
    assert len(ds) == 4 and ds.labels is None
    assert len(said) == 1 and "runs/x" in said[0] and "out" in said[0]
    assert not any("neighbors.png" in p or "training.png" in p for p in ds.paths)


def test_a_cifar_pickle_declaring_a_huge_array_is_refused(tmp_path):
    """numpy's own reconstruct function can declare a shape with no data behind it: 2 GB from a tiny file."""
    reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": _RunsCode(reconstruct, np.ndarray, (2_000_000_000,), b"b"), b"labels": [0]}, fh)
    assert (tmp_path / "data_batch_1").stat().st_size < 300
    # Refused before the array is made: _reconstruct builds only the empty array that numpy's own pickles fill.
    with pytest.raises(DataError, match=r"data_batch_1: damaged, or not a CIFAR-10 python file \(.*_reconstruct of anything but an empty"):
        load(tmp_path)


# -- no program runs from data: Pillow opens the allowed formats only ------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


def _fake_ghostscript(tmp_path: Path) -> tuple[Path, dict]:
    """A `gs` first on PATH that leaves a marker when it runs; the environment that finds it."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    return marker, {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _dos_eps() -> bytes:
    """The DOS EPS binary wrapper (magic C5 D0 D3 C6) around the PostScript above."""
    header = struct.pack("<IIIIIIIH", 0xC6D3D0C5, 30, len(EPS), 0, 0, 0, 0, 0xFFFF)
    return header + EPS


def test_the_ghostscript_control_pillow_alone_would_run_it(tmp_path):
    """The control: plain Pillow runs `gs` on this file, so the test below proves something."""
    marker, env = _fake_ghostscript(tmp_path)
    (tmp_path / "drawing.png").write_bytes(EPS)
    code = f"from PIL import Image\ntry:\n    Image.open({str(tmp_path / 'drawing.png')!r}).load()\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("name", ["drawing.png", "drawing.jpg", "scan.tif", "photo.webp"])
@pytest.mark.parametrize("kind", ["eps", "dos eps"])
def test_a_postscript_file_in_data_never_runs_ghostscript(tmp_path, name, kind):
    marker, env = _fake_ghostscript(tmp_path)
    root = _images(tmp_path / "data")
    (root / name).write_bytes(EPS if kind == "eps" else _dos_eps())
    probe = (
        "import warnings, sys\n"
        "from simsiam.data import load\n"
        "from simsiam.data.bulk import decode_all\n"
        "from simsiam.data.decode import decode_image\n"
        "from simsiam.data import list_images\n"
        "with warnings.catch_warnings(record=True) as said:\n"
        "    warnings.simplefilter('always')\n"
        f"    ds = load({str(root)!r}, progress=False)\n"
        f"    files, _, _ = list_images(__import__('pathlib').Path({str(root)!r}))\n"
        "    decode_all(files, 16, progress=False, jpeg_device='cpu')\n"
        "print(len(ds))\n"
        "print([str(w.message) for w in said])\n"
        "try:\n"
        f"    decode_image({str(root / name)!r}, 16)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    env = {**env, "SIMSIAM_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not marker.exists(), "a file in DATA made Pillow run Ghostscript"
    count, warned, error = out.stdout.strip().split("\n")
    assert count == "4"
    assert f"{name}: not an image of a format that is read" in warned
    assert error.startswith("DataError ") and f"{name}: not an image of a format that is read (JPEG, PNG" in error


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "PCX", "ICO", "SGI", "IM", "XBM"])
def test_formats_outside_the_allow_list_are_bad_files_whatever_their_name(tmp_path, fmt):
    root = _images(tmp_path / "data")
    buf = io.BytesIO()
    Image.new("1" if fmt == "XBM" else "RGB", (16, 16), 1 if fmt == "XBM" else (10, 200, 30)).save(buf, fmt)
    (root / f"other-{fmt.lower()}.png").write_bytes(buf.getvalue())
    ds, said = _load(root, image_size=16)
    assert len(ds) == 4 and len(said) == 1 and f"other-{fmt.lower()}.png: not an image of a format that is read" in said[0]
    with pytest.raises(DataError, match="not an image of a format that is read"):
        load_folder(root, image_size=16, strict=True, progress=False)


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("GIF", ".gif"), ("TIFF", ".tif")]
)
def test_every_allowed_format_is_read_from_its_content(tmp_path, fmt, ext):
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 0] = 200
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    (tmp_path / f"a{ext}").write_bytes(buf.getvalue())
    (tmp_path / f"misnamed{'.png' if ext != '.png' else '.jpg'}").write_bytes(buf.getvalue())  # the content decides
    for f in (tmp_path / f"a{ext}", *tmp_path.glob("misnamed.*")):
        red = decode_image(f, 16)[0].float().mean().item()
        assert abs(red - 200) < 8, (fmt, f.name, red)


def test_a_gif_is_read_as_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    image = decode_image(tmp_path / "anim.gif", 16)
    assert image[0].float().mean() > 200 and image[2].float().mean() < 30
