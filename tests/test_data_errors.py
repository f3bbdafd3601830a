"""Messy image folders and bad options: skip with a warning naming each file, or one clear error line.

Every case from issue 7's "Bad input" list is here; the fuzz test of the decoder
is at the end.
"""

from __future__ import annotations

import errno
import io
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from simsiam.cli import main
from simsiam.data import DataError, SkippedImagesWarning, decode_image, load, load_folder

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _own_cache_one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    # Tiny models on a shared 2-core machine: a second OpenMP thread mostly waits, and slows a step several times.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _noise(h: int = 16, w: int = 16) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    """32 wide x 16 tall as stored, top half red, bottom blue; EXIF orientation 6 (turn 90 degrees clockwise to view)."""
    a = np.zeros((16, 32, 3), np.uint8)
    a[:8] = (255, 0, 0)
    a[8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg_bytes(Image.fromarray(a), quality=95, exif=exif.tobytes())


def _write(path: Path, content: bytes | Image.Image, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Image.Image):
        content.save(path, fmt)
    else:
        path.write_bytes(content)
    return path


GOOD = 9  # decodable images in the messy folder
BAD = ["empty.png", "loop.jpg", "missing.png", "not-an-image.jpg", "truncated.jpg", "z-bad-\\xff.png"]


@pytest.fixture
def messy(tmp_path) -> Path:
    """A folder with every kind of file the issue lists, good and bad."""
    root = tmp_path / "messy"
    _write(root / "rgb.png", _noise())
    _write(root / "gray.png", _noise().convert("L"))
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    _write(root / "rgba.png", rgba)
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black (made transparent), index 1 blue
    palette.putpixel((0, 0), 0)
    palette.save(root / "palette.png", transparency=0)
    _write(root / "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")  # red in CMYK
    _write(root / "sixteen.png", Image.fromarray(np.full((16, 16), 65535, np.uint16)))  # 16-bit white
    _write(root / "exif.jpg", _exif_rotated())
    _write(root / "one-pixel.png", Image.new("RGB", (1, 1), (0, 255, 0)))
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as fh:  # a valid image, non-UTF-8 name
        fh.write(_png(_noise()))
    # the bad ones
    _write(root / "empty.png", b"")
    _write(root / "not-an-image.jpg", b"hello, I am a text file\n" * 10)
    _write(root / "truncated.jpg", _jpeg_bytes(_noise(64, 64))[:300])
    with open(os.path.join(os.fsencode(root), b"z-bad-\xff.png"), "wb") as fh:  # garbage with a non-UTF-8 name
        fh.write(b"\x89PNG garbage")
    os.symlink("loop.jpg", root / "loop.jpg")  # a link to itself: ELOOP
    os.symlink("nowhere.png", root / "missing.png")  # a dangling link
    # ignored: hidden files and folders, other extensions, a folder link back up (a loop)
    _write(root / ".hidden.png", b"garbage")
    _write(root / ".git" / "objects.png", b"garbage")
    _write(root / "notes.txt", b"not an image extension")
    os.symlink(".", root / "sub-loop", target_is_directory=True)
    return root


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _skip_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SkippedImagesWarning)]


def test_messy_folder_skips_bad_files_with_one_warning_naming_each(messy):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = load_folder(messy, image_size=16, progress=False)
    assert len(ds) == GOOD and ds.images.shape == (GOOD, 3, 16, 16) and ds.images.dtype == torch.uint8
    messages = _skip_warnings(record)
    assert len(messages) == 1, messages
    message = messages[0]
    assert f"skipped {len(BAD)} of {GOOD + len(BAD)} files" in message
    for name in BAD:
        assert name in message, (name, message)
    assert "hidden" not in message and ".git" not in message and "notes.txt" not in message
    assert message.encode("utf-8")  # printable: the non-UTF-8 name is escaped, not a lone surrogate
    assert sum("caf" in p for p in ds.paths) == 1  # the good non-UTF-8 name was loaded

    # The second run reads the cache, and still says what was left out.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        again = load_folder(messy, image_size=16, progress=False)
    assert torch.equal(again.images, ds.images)
    assert _skip_warnings(record) == [message]


def test_the_gpu_decoding_path_skips_the_same_files(messy):
    """The nvJPEG path (torchvision's decode_jpeg), run here on the CPU: the same files decode, the same are named."""
    from simsiam.data import list_images
    from simsiam.data.bulk import decode_all

    files, _, _ = list_images(messy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice, and the refused batch that goes to Pillow
        images, keep, skipped = decode_all(files, 16, progress=False, jpeg_device="cpu")
    _, keep_pillow, skipped_pillow = decode_all(files, 16, progress=False)
    assert keep == keep_pillow and skipped == skipped_pillow and len(skipped) == len(BAD)
    assert images[keep].shape == (GOOD, 3, 16, 16)


def test_strict_stops_at_the_first_bad_file_naming_it(messy):
    with pytest.raises(DataError, match=r"messy/empty\.png: an empty file \(0 bytes\)"):
        load_folder(messy, image_size=16, strict=True, progress=False)
    with pytest.warns(SkippedImagesWarning):
        load_folder(messy, image_size=16, progress=False)  # fills the cache, with its skip list
    with pytest.raises(DataError, match=r"messy/empty\.png"):  # a cached run is just as strict
        load_folder(messy, image_size=16, strict=True, progress=False)


def test_every_mode_is_converted_to_rgb_correctly(messy):
    def rgb(name: str) -> torch.Tensor:
        return decode_image(messy / name, 16).float()  # (3, 16, 16)

    gray = rgb("gray.png")
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert rgb("rgba.png")[:, 0, 0].tolist() == [255, 255, 255]  # transparent over white, not black
    assert rgb("rgba.png")[:, 8, 8].tolist() == [255, 0, 0]
    assert rgb("palette.png")[:, 0, 0].tolist() == [255, 255, 255]  # the transparent index over white
    assert rgb("palette.png")[:, 8, 8].tolist() == [0, 0, 255]
    red = rgb("cmyk.jpg").mean(dim=(1, 2))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red
    assert rgb("sixteen.png").min() == 255  # 65535 is white, not clipped garbage
    assert rgb("one-pixel.png")[:, 5, 5].tolist() == [0, 255, 0]
    # EXIF orientation 6: the stored top (red) ends up on the right when viewed.
    exif = rgb("exif.jpg")
    left, right = exif[:, :, :6].mean(dim=(1, 2)), exif[:, :, 10:].mean(dim=(1, 2))
    assert right[0] > 200 and right[2] < 60 and left[2] > 200 and left[0] < 60, (left, right)


def test_unreadable_file_is_skipped_and_named(tmp_path, monkeypatch):
    root = tmp_path / "locked"
    for i in range(4):
        _write(root / f"{i}.png", _noise())
    locked = _write(root / "secret.png", _noise())
    if os.geteuid() == 0:
        # root reads any file whatever its mode, so make the open fail as it does for
        # a user: the PermissionError that the open system call raises on mode 000.
        real_open = os.open

        def guarded(path, *args, **kwargs):
            if os.fspath(path).endswith("secret.png"):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded)
    else:
        locked.chmod(0)
    with pytest.warns(SkippedImagesWarning, match=r"skipped 1 of 5 .*secret\.png: cannot read \(Permission denied\)"):
        ds = load_folder(root, image_size=16, progress=False)
    assert len(ds) == 4
    with pytest.raises(DataError, match=r"secret\.png: cannot read \(Permission denied\)"):
        load_folder(root, image_size=16, strict=True, progress=False)


def test_unreadable_folder_is_skipped_and_named(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for i in range(4):
        _write(root / "a" / f"{i}.png", _noise())
        _write(root / "b" / f"{i}.png", _noise())
    if os.geteuid() == 0:
        # root lists any folder whatever its mode: fail the listing as it fails for a user.
        real_scandir = os.scandir

        def guarded(path="."):
            if os.fspath(path).endswith(os.sep + "b"):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", guarded)
    else:
        (root / "b").chmod(0)
    try:
        with pytest.warns(SkippedImagesWarning, match=r"skipped 1 folder\(s\) that cannot be read: .*data/b \(Permission denied\)"):
            ds = load_folder(root, image_size=16, progress=False)
        assert len(ds) == 4 and ds.classes == ["a"]
    finally:
        (root / "b").chmod(0o755)


def test_very_large_jpeg_decodes_at_reduced_scale(tmp_path):
    """12,000 x 9,000 (108 Mpx, 324 MB as RGB): draft mode decodes it at 1/8 scale."""
    path = tmp_path / "huge.jpg"
    # Made in a child process so that its 324 MB canvas does not count against ours.
    make = f"from PIL import Image; Image.new('RGB', (12000, 9000), (30, 120, 200)).save({str(path)!r}, quality=50)"
    subprocess.run([sys.executable, "-c", make], check=True)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    x = decode_image(path, 32)
    seconds = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert (x.float().mean(dim=(1, 2)) - torch.tensor([30.0, 120.0, 200.0])).abs().max() < 8
    assert grown_mib < 150, f"peak memory grew by {grown_mib:.0f} MiB: the full image was decoded"
    assert seconds < 10, f"{seconds:.1f} s"


def test_folders_empty_missing_one_class_and_empty_class(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images found"):
        load(tmp_path / "empty", progress=False)
    with pytest.raises(DataError, match=r"nope: no such file or folder"):
        load(tmp_path / "nope", progress=False)
    for i in range(6):
        _write(tmp_path / "one" / "cats" / f"{i}.png", _noise())
    one = load(tmp_path / "one", progress=False)
    assert one.classes == ["cats"] and one.labels.tolist() == [0] * 6
    (tmp_path / "one" / "dogs").mkdir()
    with pytest.warns(SkippedImagesWarning, match=r"class folders with no images are ignored: dogs"):
        again = load(tmp_path / "one", progress=False)
    assert again.classes == ["cats"]
    for i in range(2):
        _write(tmp_path / "bad" / f"{i}.png", b"garbage")
    with pytest.warns(SkippedImagesWarning), pytest.raises(DataError, match=r"bad: none of the 2 image files could be decoded"):
        load(tmp_path / "bad", progress=False)


# -- the command line: one line, non-zero exit, nothing written ---------------------------

TINY = ["--epochs", "1", "--batch-size", "4", "--backbone", "resnet10-slim", "--proj-dim", "16", "--pred-hidden-dim", "4", "--no-progress"]


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    for c in ("a", "b"):
        for i in range(5):
            _write(root / c / f"{i}.png", _noise())
    return root


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


BAD_OPTIONS = {
    # name: (extra arguments, text the error line must contain)
    "unknown config key": (lambda t: ["--config", _yaml(t, "epochs: 1\nbogus: 3\n")], "unknown key 'bogus'"),
    "wrong type": (lambda t: ["--config", _yaml(t, "epochs: one\n")], "epochs: expected int, got 'one'"),
    "nested wrong type": (lambda t: ["--config", _yaml(t, "augment: {hue: high}\n")], "augment.hue: expected float"),
    "config not a mapping": (lambda t: ["--config", _yaml(t, "- 1\n- 2\n")], "expected a mapping"),
    "missing config": (lambda t: ["--config", str(t / "none.yaml")], "none.yaml: config file not found"),
    "zero batch": (lambda t: ["--batch-size", "0"], "--batch-size: must be at least 2"),
    "negative epochs": (lambda t: ["--epochs", "-3"], "--epochs: must be at least 1"),
    "zero image size": (lambda t: ["--image-size", "0"], "--image-size: must be in [8, "),
    "zero projection": (lambda t: ["--proj-dim", "0"], "--proj-dim: must be at least 1, got 0"),
    "zero predictor": (lambda t: ["--pred-hidden-dim", "0"], "--pred-hidden-dim: must be at least 1, got 0"),
    "negative lr": (lambda t: ["--lr", "-0.1"], "--lr: must be positive"),
    "negative seed": (lambda t: ["--seed", "-1"], "--seed: must be in"),
    "bad precision": (lambda t: ["--precision", "fp7"], "--precision: must be one of"),
    "bad compile mode": (lambda t: ["--compile-mode", "fastest"], "--compile-mode: must be one of default, reduce-overhead"),
    "compile mode without compile": (
        lambda t: ["--compile-mode", "reduce-overhead", "--no-compile"],
        "--compile-mode: applies to the compiled step",
    ),
    "bad hue": (lambda t: ["--config", _yaml(t, "augment: {hue: 0.9}\n")], "augment.hue: must be in [0, 0.5]"),
    "bad ratio": (lambda t: ["--config", _yaml(t, "augment: {ratio: [2, 1]}\n")], "augment.ratio: need 0 < first <= second"),
    "unknown backbone": (lambda t: ["--backbone", "nosuchnet"], "--backbone: unknown backbone 'nosuchnet'"),
    "batch larger than the data": (lambda t: ["--batch-size", "64"], "--batch-size: 64 is larger than the 10 training images"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_is_one_line_and_writes_nothing(case, small_folder, tmp_path, capsys):
    extra, expected = BAD_OPTIONS[case]
    out = tmp_path / "run"
    rc = main(["train", str(small_folder), *TINY, "--held-out", "0", *extra(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("simsiam train: error: ") and expected in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty", "missing", "fewer than one batch", "strict with a bad file"])
def test_bad_folder_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    folder = tmp_path / "data"
    if case != "missing":
        folder.mkdir()
    if case == "fewer than one batch":
        for i in range(3):
            _write(folder / f"{i}.png", _noise())
    strict = []
    if case == "strict with a bad file":
        for i in range(8):
            _write(folder / f"{i}.png", _noise())
        _write(folder / "5-cut.jpg", _jpeg_bytes(_noise(64, 64))[:200])
        strict = ["--strict"]
    out = tmp_path / "run"
    rc = main(["train", str(folder), *TINY, *strict, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    expected = {
        "empty": "no images found",
        "missing": "no such file or folder",
        "fewer than one batch": "--batch-size: 4 is larger than the 3",
        "strict with a bad file": f"{folder}/5-cut.jpg: cannot decode image",
    }
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("simsiam train: error: ") and expected[case] in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "case, note",
    [
        ("one class", "online kNN: off (DATA has the one class 'cats'; an accuracy needs two or more)"),
        ("classes too small to hold out", "online kNN: off (no class has enough images to hold out 10% of them; see --held-out)"),
    ],
)
def test_awkward_labeled_folders_train_with_a_note(case, note, tmp_path, capsys):
    classes, per_class = (["cats"], 8) if case == "one class" else (["a", "b"], 4)
    for c in classes:
        for i in range(per_class):
            _write(tmp_path / "data" / c / f"{i}.png", _noise())
    rc = main(["train", str(tmp_path / "data"), *TINY, "--no-small-images", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert note in captured.out.splitlines()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


# -- fuzz: the decoder never raises anything but DataError -------------------------------

SEEDS = [_png(_noise(12, 9)), _jpeg_bytes(_noise(12, 9)), _exif_rotated(), _png(_noise(5, 7).convert("P"))]
FUZZ_CASES = {"random": 0, "mutated": 0, "decoded": 0}


def _check_decode(blob: bytes, size: int) -> None:
    try:
        x = decode_image(blob, size)
    except DataError as e:
        assert str(e).startswith("image bytes: ")
        return
    FUZZ_CASES["decoded"] += 1
    assert x.shape == (3, size, size) and x.dtype == torch.uint8


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.binary(max_size=2048), size=st.integers(1, 24))
def test_fuzz_decoder_with_random_bytes(blob, size):
    FUZZ_CASES["random"] += 1
    _check_decode(blob, size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
    size=st.integers(1, 24),
)
def test_fuzz_decoder_with_damaged_images(seed, edits, cut, size):
    """Valid images with bytes overwritten and tails cut off: the damage real files have."""
    FUZZ_CASES["mutated"] += 1
    blob = bytearray(seed)
    for where, value in edits:
        blob[where % len(blob)] = value
    if cut is not None:
        blob = blob[: cut % len(blob)]
    _check_decode(bytes(blob), size)


def test_fuzz_case_count_report():
    """Not a check: prints how many fuzz cases ran (pytest -s shows it)."""
    print(f"\ndecoder fuzz: {FUZZ_CASES['random']} random blobs, {FUZZ_CASES['mutated']} damaged images, {FUZZ_CASES['decoded']} decoded")
