"""Data that is not RGB, end to end: one-channel images, .npy and .npz arrays, multi-page TIFF stacks.

Each is read into a C-channel uint8 cache, trained on with its own per-channel
mean and std (saved in the run's config), embedded and exported with them.
"""

import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from simsiam.checkpoint import load_checkpoint
from simsiam.cli import main
from simsiam.config import TrainConfig
from simsiam.data import SkippedImagesWarning, channel_stats, load
from simsiam.data.decode import MAX_CHANNELS, decode_image
from simsiam.errors import ConfigError, DataError
from simsiam.evaluate import normalize_images
from simsiam.options import validate

TINY = ["--backbone", "resnet10-tiny", "--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "4", "--knn-k", "3", "--no-progress"]


def bands(rng, c: int, channels: int, size: int, dtype=np.uint8) -> np.ndarray:
    """An H x W x C array whose class shows in one band (so the classes differ)."""
    top = 255 if dtype == np.uint8 else 65535
    array = rng.integers(0, top // 2, (size, size + 2, channels)).astype(dtype)
    array[..., c % channels] += top // 3
    return array


def write_arrays(root, channels: int, kind: str, per_class: int = 4, size: int = 12, dtype=np.uint8, seed: int = 0):
    """Class subfolders a and b of .npy files, .npz files or multi-page TIFFs."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate("ab"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = bands(rng, c, channels, size, dtype)
            if kind == "npy":
                np.save(root / name / f"{i}.npy", array)
            elif kind == "npz":
                np.savez_compressed(root / name / f"{i}.npz", image=array)
            else:
                pages = [Image.fromarray(np.ascontiguousarray(array[..., k])) for k in range(channels)]
                pages[0].save(root / name / f"{i}.tif", save_all=True, append_images=pages[1:])
    return root


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def reload_printed(out: str) -> torch.nn.Module:
    """Execute the lines `export --format torchvision` printed: what a user pastes."""
    lines = out.split("load them with:\n", 1)[1].splitlines()
    code = [line[4:] for line in lines if line.startswith("    ")]
    namespace: dict = {}
    exec("\n".join(code), namespace)
    return namespace["net"].eval()


@pytest.fixture(scope="module", params=[("npy", 4, np.uint8), ("tif", 13, np.uint16)], ids=["4-channel-npy", "13-channel-tiff"])
def trained(request, tmp_path_factory):
    """(run folder, data folder, channels): one epoch on a tiny folder of C-channel files."""
    kind, channels, dtype = request.param
    root = tmp_path_factory.mktemp(f"ms{channels}")
    data = write_arrays(root / "data", channels, kind, dtype=dtype)
    assert main(["train", str(data), "--out", str(root / "run"), "--epochs", "1", *TINY]) == 0
    return root / "run", data, channels


def test_a_c_channel_folder_trains_with_the_data_s_own_normalisation(trained, capsys):
    folder, data, channels = trained
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    images = load(data, 12).images
    assert images.shape[1] == channels and saved["model"]["channels"] == channels
    mean, std = channel_stats(images)
    assert saved["mean"] == list(mean) and saved["std"] == list(std) and len(mean) == channels
    model, cfg = load_checkpoint(folder)
    assert model.backbone.conv1.in_channels == channels and cfg.normalization() == (mean, std)


def test_a_c_channel_run_embeds_and_exports(trained, capsys, tmp_path):
    folder, data, channels = trained
    code, out, _ = run(capsys, "embed", folder, data, "--out", tmp_path / "e.npz", "--no-progress")
    assert code == 0 and "8 embeddings of 128 dimensions" in out
    model, cfg = load_checkpoint(folder)
    mean, std = cfg.normalization()

    code, out, _ = run(capsys, "export", folder, "--format", "torchvision", "--out", tmp_path / "b.pt")
    assert code == 0, out
    meta = json.loads((tmp_path / "b.pt.json").read_text())
    assert meta["channels"] == channels and meta["mean"] == list(mean) and meta["std"] == list(std)
    assert f"inputs: {channels} channels" in out
    x = normalize_images(load(data, 12, channels=channels).images[:3], mean, std)
    with torch.no_grad():
        assert torch.allclose(reload_printed(out)(x), model.features(x), atol=1e-5)

    pytest.importorskip("onnx")
    code, out, _ = run(capsys, "export", folder, "--format", "onnx", "--out", tmp_path / "b.onnx")
    assert code == 0 and f"input 'images' (batch, {channels}, 12, 12)" in out


def test_one_channel_images_stay_one_channel_when_asked(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for c, name in enumerate("ab"):
        (tmp_path / "grey" / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 128, (12, 12)) + 100 * c
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "grey" / name / f"{i}.png")
    assert load(tmp_path / "grey", 12).channels == 3  # by default grey images are RGB, as ever
    code, out, _ = run(capsys, "train", tmp_path / "grey", "--channels", "1", "--out", tmp_path / "run", "--epochs", "1", *TINY)
    assert code == 0
    assert "at 12x12, 1 channel, 2 classes" in out and "the first convolution takes 1 channel" in out
    assert "views: 1 channel: saturation and hue jitter, grayscale and solarization are for RGB and are off" in out
    images = load(tmp_path / "grey", 12, channels=1).images
    assert images.shape == (8, 1, 12, 12)
    assert torch.equal(images[0, 0], torch.from_numpy(np.array(Image.open(tmp_path / "grey" / "a" / "0.png"))))


def test_a_file_with_another_channel_count_is_named(tmp_path, capsys):
    data = write_arrays(tmp_path / "data", 4, "npy")
    np.save(data / "a" / "odd.npy", np.zeros((12, 14, 5), np.uint8))
    with pytest.warns(SkippedImagesWarning, match=r"skipped 1 of 9 files .*odd\.npy: 5 channels, where the data has 4"):
        assert load(data, 12).channels == 4  # the most common count; the odd file is left out
    code, _, err = run(capsys, "train", data, "--strict", "--out", tmp_path / "run", "--epochs", "1", *TINY)
    assert code == 2 and re.fullmatch(r"simsiam train: error: \S*odd\.npy: 5 channels, where the data has 4", err.splitlines()[-1])
    code, _, err = run(capsys, "train", data, "--channels", "3", "--strict", "--out", tmp_path / "run", "--epochs", "1", *TINY)
    assert code == 2 and re.fullmatch(r"simsiam train: error: \S*\.npy: 4 channels, where the data has 3", err.splitlines()[-1])


def test_sixteen_bit_bands_are_scaled_by_one_fixed_rule(tmp_path):
    values = [0, 128, 129, 257, 385, 386, 1000, 32767, 32768, 65406, 65407, 65534, 65535, 12345, 4095, 255]
    array = np.array(values, dtype=np.uint16).reshape(2, 2, 4)
    np.save(tmp_path / "x.npy", array)
    decoded = decode_image(tmp_path / "x.npy", 2)
    expected = np.rint(array.astype(np.float64) * 255 / 65535).astype(np.uint8)  # round(x / 257): the same in every file
    assert torch.equal(decoded, torch.from_numpy(expected).permute(2, 0, 1))
    np.savez(tmp_path / "y.npz", array)  # one unnamed array
    assert torch.equal(decode_image(tmp_path / "y.npz", 2), decoded)
    pages = [Image.fromarray(np.ascontiguousarray(array[..., k])) for k in range(4)]
    pages[0].save(tmp_path / "z.tif", save_all=True, append_images=pages[1:])
    assert torch.equal(decode_image(tmp_path / "z.tif", 2), decoded)


def test_a_multi_page_tiff_of_colour_pages_is_still_an_image(tmp_path):
    pages = [Image.new("RGB", (8, 8), colour) for colour in ((200, 10, 10), (10, 200, 10))]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:])
    assert decode_image(tmp_path / "scan.tif", 8)[:, 0, 0].tolist() == [200, 10, 10]  # its first page, as before


def test_array_files_are_checked_from_their_header_before_reading(tmp_path):
    def refused(name: str, array=None, header: dict | None = None) -> str:
        path = tmp_path / name
        if header is not None:
            with open(path, "wb") as fh:
                np.lib.format.write_array_header_1_0(fh, header)
        else:
            np.save(path, array, allow_pickle=True)
        with pytest.raises(DataError) as error:
            decode_image(path, 8)
        assert "\n" not in str(error.value) and name in str(error.value)
        return str(error.value)

    assert "an array of float32; image arrays are uint8 or uint16" in refused("float.npy", np.zeros((4, 4, 2), np.float32))
    assert "an array of object" in refused("objects.npy", np.array([{"x": 1}], dtype=object))  # never unpickled
    assert "is this one C x H x W?" in refused("chw.npy", np.zeros((4, 8, 600), np.uint8))
    assert "shape (2, 2, 2, 2)" in refused("4d.npy", np.zeros((2, 2, 2, 2), np.uint8))
    bomb = refused("bomb.npy", header={"descr": "|u1", "fortran_order": False, "shape": (60000, 60000, 4)})
    assert "refused as a possible decompression bomb" in bomb
    truncated = refused("short.npy", header={"descr": "<u2", "fortran_order": False, "shape": (8, 8, 3)})
    assert "truncated: its header declares 384 bytes of pixels, the file holds 0" in truncated
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 4), np.uint8), b=np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"an \.npz of 2 arrays \(a, b\); save one array, or name the image 'image'"):
        decode_image(tmp_path / "two.npz", 4)
    assert MAX_CHANNELS >= 224  # hyperspectral stacks fit
    with pytest.raises(ConfigError, match=rf"^model.channels: must be in \[1, {MAX_CHANNELS}\], got {MAX_CHANNELS + 1}$"):
        validate(TrainConfig.from_dict({"model": {"channels": MAX_CHANNELS + 1}}))


def test_the_demo_set_is_rgb_only(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--channels", "4", "--out", tmp_path / "run", "--epochs", "1", "--no-progress")
    assert code == 2 and err == "simsiam train: error: --channels: the demo set is RGB: 3 channels, not 4\n"


def test_runs_saved_without_mean_and_std_are_normalised_as_imagenet():
    old = TrainConfig().to_dict()
    del old["mean"], old["std"]
    cfg = TrainConfig.from_dict(old)
    assert cfg.normalization() == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with pytest.raises(ConfigError, match=r"^mean: needs one value per channel: 4, got 3$"):
        validate(TrainConfig.from_dict({"model": {"channels": 4}, "mean": [0.5] * 3, "std": [0.2] * 4}))
    with pytest.raises(ConfigError, match=r"^std: must be positive for every channel"):
        validate(TrainConfig.from_dict({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}))
