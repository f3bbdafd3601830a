"""Any backbone through the command line: trained, exported, reloaded by the printed lines; bad choices in one line."""

import json

import pytest
import torch

from simsiam.checkpoint import load_checkpoint
from simsiam.cli import main
from simsiam.config import TrainConfig, resolve
from simsiam.evaluate import normalize_images

from .conftest import write_class_folder

SMALL = ["--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "4", "--knn-k", "3", "--epochs", "1", "--no-progress"]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def printed_lines(out: str) -> list[str]:
    """The loading lines `export --format torchvision` printed, as a user would paste them."""
    return [line[4:] for line in out.split("load them with:\n", 1)[1].splitlines() if line.startswith("    ")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_class_folder(tmp_path_factory.mktemp("rgb") / "images", per_class=4, size=32)


BACKBONES = {"mobilenet_v3_small": "torchvision", "timm:test_vit": "timm"}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_a_backbone_trains_exports_and_reloads_strictly(images, tmp_path, capsys, backbone):
    if BACKBONES[backbone] == "timm":
        timm = pytest.importorskip("timm")
        if not timm.is_model(backbone[5:]):
            pytest.skip(f"this timm has no {backbone[5:]}")
    folder = tmp_path / "run"
    code, out, err = run(capsys, "train", images, "--backbone", backbone, "--out", folder, *SMALL)
    assert code == 0, err
    assert f"backbone: {backbone} at 32 px:" in out and "32-true on CPU" in out  # float32 on every CPU

    code, out, err = run(capsys, "export", folder, "--format", "torchvision")
    assert code == 0, err
    file = folder / f"{backbone.replace(':', '_')}.pt"
    meta = json.loads(file.with_name(file.name + ".json").read_text())
    lines = printed_lines(out)
    assert meta["load"] == lines and meta["library"] == BACKBONES[backbone] and meta["channels"] == 3
    assert lines[-1] == f"net.load_state_dict(torch.load({str(file)!r}))"  # strict, as load_state_dict is by default
    namespace: dict = {}
    exec("\n".join(lines), namespace)
    model, cfg = load_checkpoint(folder)
    x = normalize_images(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8), *cfg.normalization())
    with torch.no_grad():
        assert torch.equal(namespace["net"].eval()(x), model.features(x))
    code, _, err = run(capsys, "embed", file, images, "--out", tmp_path / "e.npz", "--no-progress")  # weights, not a checkpoint
    assert code == 2 and err.endswith("(backbone.pt holds backbone weights only; pass the run folder)\n")

    pytest.importorskip("onnx")
    code, out, err = run(capsys, "export", folder, "--format", "onnx")
    assert code == 0, err
    assert "input 'images' (batch, 3, 32, 32)" in out and (folder / f"{backbone.replace(':', '_')}.onnx").is_file()


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--backbone", "vit_b_16", "--image-size", "40"],
         "--image-size: vit_b_16 cuts images into 16x16 patches: the image size must be a multiple of 16, got 40; "
         "choose another --image-size or --backbone"),
        (["--backbone", "vgg11", "--image-size", "16"], "--image-size: vgg11 cannot take 16 px images with 3 channels: "),
        (["--backbone", "mobilenet_v9"], "--backbone: unknown backbone 'mobilenet_v9'; did you mean "),
        (["--backbone", "timm:no_such_net_at_all"], "--backbone: unknown timm model 'timm:no_such_net_at_all'"),
    ],
    ids=["vit-patch", "too-small", "unknown", "unknown-timm"],
)  # fmt: skip
def test_a_backbone_that_cannot_be_trained_is_one_line(images, tmp_path, capsys, options, line):
    if "timm:" in options[1]:
        pytest.importorskip("timm")
    code, out, err = run(capsys, "train", images, *options, "--out", tmp_path / "run", *SMALL)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"simsiam train: error: {line}"), err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_an_image_size_found_from_the_data_says_so(tmp_path, capsys):
    small = write_class_folder(tmp_path / "small", per_class=2, size=16)
    code, _, err = run(capsys, "train", small, "--backbone", "vgg11", "--out", tmp_path / "run", *SMALL)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("simsiam train: error: --image-size: vgg11 cannot take 16 px images with 3 channels: ")
    assert err.endswith("; 16 px is the size found from DATA: set --image-size, or choose another --backbone\n")


def test_every_backbone_trains_in_float32_on_a_cpu_even_with_bf16_units(monkeypatch):
    monkeypatch.setattr("simsiam.system.cpu_has_bf16_units", lambda: True)
    for backbone in ("resnet18", "resnet10-tiny", "convnext_tiny"):
        assert resolve(TrainConfig.from_dict({"model": {"backbone": backbone}}), 64, on_gpu=False).precision == "32-true"
    assert resolve(TrainConfig(), 64, on_gpu=True).precision == "bf16-mixed"
