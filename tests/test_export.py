"""Export: the torchvision state_dict and the ONNX graph compute the checkpoint's features."""

import dataclasses
import json

import pytest
import torch
import torchvision

from simsiam.config import TrainConfig, resolve
from simsiam.export import check_onnx, export_onnx, export_torchvision, loading_code
from simsiam.model import SimSiam


def trained_like(backbone: str, image_size: int, small_images: bool | None = None):
    """A model as a checkpoint gives it back: resolved config, eval mode, BN statistics that are not the defaults."""
    cfg = TrainConfig.from_dict({"model": {"backbone": backbone, "small_images": small_images, "proj_dim": 16}})
    cfg = resolve(cfg, image_size, on_gpu=False)
    model = SimSiam(**dataclasses.asdict(cfg.model))
    with torch.no_grad():
        model.train()
        model(torch.randn(4, 3, image_size, image_size), torch.randn(4, 3, image_size, image_size))
    return model.eval(), cfg


def load_as_documented(cfg, file):
    """Run the exact lines the export prints (and writes into the JSON beside the weights)."""
    namespace: dict = {}
    exec("\n".join(loading_code(cfg, file)), namespace)
    return namespace["net"].eval()


@pytest.mark.parametrize(("image_size", "small_images"), [(16, True), (32, False)])
def test_torchvision_weights_give_the_checkpoint_features(tmp_path, image_size, small_images):
    model, cfg = trained_like("resnet18", image_size, small_images)
    file = tmp_path / "backbone.pt"
    meta = json.loads(export_torchvision(model, cfg, file).read_text())
    assert meta["architecture"] == "resnet18" and meta["small_images"] is small_images and meta["feature_dim"] == 512
    x = torch.randn(3, 3, image_size, image_size)
    with torch.no_grad():
        assert torch.allclose(load_as_documented(cfg, file)(x), model.features(x), atol=1e-5)
    if not small_images:  # the stock torchvision network, no lines of ours involved
        net = torchvision.models.resnet18(weights=None)
        net.fc = torch.nn.Identity()
        net.load_state_dict(torch.load(file), strict=True)
        with torch.no_grad():
            assert torch.allclose(net.eval()(x), model.features(x), atol=1e-5)


def test_slim_backbone_export_loads_with_its_documented_lines(tmp_path):
    model, cfg = trained_like("resnet10-slim", 16)
    file = tmp_path / "slim.pt"
    export_torchvision(model, cfg, file)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(load_as_documented(cfg, file)(x), model.features(x), atol=1e-5)


def test_onnx_matches_pytorch_at_any_batch_size(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model, cfg = trained_like("resnet10-slim", 16)
    file = tmp_path / "backbone.onnx"
    export_onnx(model, cfg, file)
    graph = onnx.load(str(file))
    assert [i.name for i in graph.graph.input] == ["images"] and [o.name for o in graph.graph.output] == ["features"]
    assert json.loads({p.key: p.value for p in graph.metadata_props}["image_size"]) == 16
    for batch in (1, 5):
        assert check_onnx(model, file, torch.randn(batch, 3, 16, 16)) < 1e-4


def test_onnx_export_without_the_onnx_package_names_the_extra(tmp_path, monkeypatch):
    import sys

    from simsiam.errors import SimSiamError
    from simsiam.export import require_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    model, cfg = trained_like("resnet10-slim", 16)
    out = tmp_path / "backbone.onnx"
    with pytest.raises(SimSiamError) as info:
        export_onnx(model, cfg, out)
    assert str(info.value) == "ONNX export needs the onnx package, which is not installed: pip install 'simsiam[onnx]'"
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(SimSiamError, match=r"simsiam\[onnx\]"):
        require_onnx()  # what a caller runs before any costly work
