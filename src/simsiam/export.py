"""Taking the backbone elsewhere: torchvision weights and ONNX.

Both formats hold the backbone only (the projector and predictor exist for
training), and both compute ``SimSiam.features``: the same (B, D) vector as kNN,
the linear probe and the embeddings file. Inputs are RGB images scaled to [0, 1]
and normalised with the ImageNet mean and std, as in training.

>>> from simsiam.checkpoint import load_checkpoint  # doctest: +SKIP
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP
>>> export_torchvision(model, cfg, "backbone.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .augment import IMAGENET_MEAN, IMAGENET_STD
from .config import TrainConfig
from .errors import RunError
from .io import atomic_write, eval_mode, save_torch_atomic, write_json
from .model import SimSiam

ONNX_EXTRA = "pip install 'simsiam[onnx]'"


def require_onnx() -> None:
    """Raise RunError (one line naming the extra to install) unless the onnx package imports.

    torch's ONNX exporter needs it; call this before any costly work.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise RunError(f"ONNX export needs the onnx package, which is not installed: {ONNX_EXTRA}") from None


def small_stem_line(width: int = 64) -> str:
    """The one line that turns a torchvision ResNet's stem into the paper's small-image stem (appendix D)."""
    return f"net.conv1, net.maxpool = torch.nn.Conv2d(3, {width}, 3, 1, 1, bias=False), torch.nn.Identity()"


def loading_code(cfg: TrainConfig, file: str | Path, width: int = 64) -> list[str]:
    """Python lines that rebuild the backbone and load exported torchvision weights into it."""
    name = cfg.model.backbone
    if name == "resnet10-slim":
        # Not a torchvision constructor: the same ResNet class with narrower stages.
        lines = [
            "import torch, simsiam",
            f"net, _ = simsiam.model.build_backbone('resnet10-slim', small_images={bool(cfg.model.small_images)})",
        ]
    else:
        lines = ["import torch, torchvision", f"net = torchvision.models.{name}(weights=None)", "net.fc = torch.nn.Identity()"]
        if cfg.model.small_images:
            lines.append(small_stem_line(width) + "  # small-image stem: 3x3 stride-1 conv1, no max-pool")
    lines.append(f"net.load_state_dict(torch.load({str(file)!r}))")
    return lines


def _description(model: SimSiam, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "architecture": cfg.model.backbone,
        "small_images": bool(cfg.model.small_images),
        "feature_dim": model.feature_dim,
        "image_size": cfg.image_size,
        "input": "RGB, (B, 3, H, W) float32, pixel/255 normalised with mean and std",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def export_torchvision(model: SimSiam, cfg: TrainConfig, path: str | Path, source: str | None = None) -> Path:
    """Write the backbone's state_dict to ``path`` and a description beside it (``<path>.json``); returns that JSON's path.

    The state_dict loads with strict=True into ``torchvision.models.<backbone>(weights=None)``
    once its ``fc`` is ``nn.Identity()`` (and, for the small-image stem, after
    :func:`small_stem_line`); :func:`loading_code` gives the exact lines. Both
    files are written atomically: on a failure the previous ones stay and the
    OSError names the file.
    """
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    state = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(state, path)
    width = model.backbone.conv1.out_channels
    meta = {"format": "torchvision", **_description(model, cfg), "load": loading_code(cfg, path, width), "checkpoint": source}
    write_json(meta_path, meta)
    return meta_path


class _Features(nn.Module):
    """The backbone as a graph: normalised images (B, 3, H, W) -> features (B, D)."""

    def __init__(self, model: SimSiam):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images)


def export_onnx(model: SimSiam, cfg: TrainConfig, path: str | Path, opset: int = 17, source: str | None = None) -> None:
    """Write an ONNX graph of ``SimSiam.features``: input ``images`` (batch, 3, S, S), output ``features`` (batch, D).

    The batch dimension is dynamic. The graph's metadata holds the backbone, the
    image size and the input normalisation. The graph is built in memory and
    written once, atomically. Needs the onnx package (RunError naming the extra
    to install, before any work, when it is missing).
    """
    require_onnx()
    import onnx

    path = Path(path)
    size = cfg.image_size or 224
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), eval_mode(model):
        # The TorchScript-based exporter: the torch.export-based one needs onnxscript,
        # which is not among our dependencies; this one is deprecated, not yet removed.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Features(model),
            (torch.zeros(2, 3, size, size),),
            buffer,
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=opset,
        )
    graph = onnx.load_model_from_string(buffer.getvalue())
    meta = {**_description(model, cfg), "checkpoint": source}
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    graph.producer_name = "simsiam"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(graph.SerializeToString())


def check_onnx(model: SimSiam, path: str | Path, images: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's features on ``images`` (B, 3, S, S)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(["features"], {"images": images.float().cpu().numpy()})
    with torch.no_grad(), eval_mode(model):
        theirs = model.features(images.float().to(next(model.parameters()).device)).cpu()
    return float((torch.from_numpy(ours) - theirs).abs().max())
