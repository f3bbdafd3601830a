"""Taking the backbone elsewhere: torchvision weights and ONNX.

Both formats hold the backbone only (the projector and predictor exist for
training), and both compute ``SimSiam.features``: the same (B, D) vector as kNN,
the linear probe and the embeddings file. Inputs are (B, C, S, S) images scaled to
[0, 1] and normalised with the run's per-channel mean and std, as in training
(ImageNet's for RGB; the data's own for other channel counts, from the run's config).

The torchvision format is a state_dict for the backbone's own constructor: a
torchvision model's (with its classifier replaced by Identity, and the first
convolution or the small-image stem as trained), ``timm.create_model(NAME,
num_classes=0, in_chans=C)`` for a ``timm:`` backbone, or ours for resnet10-slim
and resnet10-tiny. :func:`loading_code` gives the lines that rebuild the network
and load the weights strictly; ``export`` prints them and the JSON beside the
weights holds them, with the channels, mean and std the inputs need.

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

from simsiam.config.schema import TrainConfig
from simsiam.errors import RunError
from simsiam.files import atomic_write, eval_mode, save_torch_atomic, write_json
from simsiam.model.backbones import BackboneInfo, build
from simsiam.model.siamese import SimSiam
from simsiam.settings import SLIM_WIDTHS, TIMM

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


def loading_code(source: SimSiam | TrainConfig, file: str | Path, width: int | None = None) -> list[str]:
    """Python lines that rebuild the bare backbone as ``net`` and load exported weights into it (strictly).

    ``source`` is the model (its :attr:`~simsiam.model.BackboneInfo.loading_lines`)
    or its resolved config, from which the backbone is built on the meta device
    (shapes only) to find them. ``width`` is not needed any more (the lines come
    from the network as built) and is ignored.
    """
    info = source.backbone_info if isinstance(source, SimSiam) else _backbone_info(source)
    if str(file).endswith(".safetensors"):
        return [*info.loading_lines, "import safetensors.torch", f"net.load_state_dict(safetensors.torch.load_file({str(file)!r}))"]
    return [*info.loading_lines, f"net.load_state_dict(torch.load({str(file)!r}))"]


def _backbone_info(cfg: TrainConfig) -> BackboneInfo:
    m = cfg.model
    with torch.device("meta"):
        _, info = build(m.backbone, small_images=bool(m.small_images), channels=m.channels or 3, image_size=cfg.image_size)
    return info


def _library(name: str) -> str:
    if name.startswith(TIMM):
        return "timm"
    return "simsiam" if name in SLIM_WIDTHS else "torchvision"


def describe_input(cfg: TrainConfig) -> str:
    """What the exported network takes: the channels, the scaling and the normalisation (one line)."""
    channels = cfg.model.channels or 3
    mean, std = ("(" + ", ".join(f"{v:.4g}" for v in values) + ")" for values in cfg.normalization())
    if channels == 3:
        what = "RGB scaled to [0, 1]"
    else:
        what = f"{channels} channel{'s' if channels > 1 else ''} (band order as in the training files) scaled to [0, 1] (8-bit / 255, 16-bit / 65535)"
    return f"{what}, then normalised with mean {mean} and std {std}"


def _description(model: SimSiam, cfg: TrainConfig) -> dict[str, Any]:
    mean, std = cfg.normalization()
    channels = cfg.model.channels or 3
    if channels == 3:
        text = "RGB, (B, 3, H, W) float32, pixel/255 normalised with mean and std"
    else:
        text = f"{channels} channels, (B, {channels}, H, W) float32, 8-bit pixel/255 (16-bit pixel/65535) normalised with mean and std"
    return {
        "architecture": cfg.model.backbone,
        "library": _library(cfg.model.backbone),
        "small_images": bool(cfg.model.small_images),
        "feature_dim": model.feature_dim,
        "image_size": cfg.image_size,
        "channels": channels,
        "input": text,
        "mean": list(mean),
        "std": list(std),
        "backbone": model.backbone_info.description,
    }


def export_torchvision(model: SimSiam, cfg: TrainConfig, path: str | Path, source: str | None = None) -> Path:
    """Write the backbone's state_dict to ``path`` and a description beside it (``<path>.json``); returns that JSON's path.

    A ``.safetensors`` path gets the safetensors format (tensors only, read without
    unpickling: ``safetensors.torch.load_file``), any other torch's.

    The state_dict loads with strict=True into the network its library builds
    (torchvision's constructor with its classifier replaced by Identity, timm's
    ``create_model(NAME, num_classes=0, in_chans=C)``, ...) after the lines of
    :func:`loading_code`, which the JSON holds under "load". Both files are
    written atomically: on a failure the previous ones stay and the OSError names
    the file.
    """
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    state = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        with atomic_write(path, "wb") as fh:
            fh.write(save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"}))
    else:
        save_torch_atomic(state, path)
    kind = "safetensors" if path.suffix == ".safetensors" else "torchvision"
    meta = {"format": kind, **_description(model, cfg), "load": loading_code(model, path), "checkpoint": source}
    write_json(meta_path, meta)
    return meta_path


class _Features(nn.Module):
    """The backbone as a graph: normalised images (B, C, H, W) -> features (B, D)."""

    def __init__(self, model: SimSiam):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images)


def export_onnx(
    model: SimSiam, cfg: TrainConfig, path: str | Path, opset: int = 17, source: str | None = None, dynamic: bool = False
) -> None:
    """Write an ONNX graph of ``SimSiam.features``: input ``images`` (batch, C, S, S), output ``features`` (batch, D).

    The batch dimension is dynamic; with ``dynamic`` the height and width are too
    (a ResNet or a ConvNet takes any size its downsampling leaves a map of; a ViT
    is built for one size, so check the graph at the sizes you will feed it). The graph's metadata holds the backbone, the
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
            (torch.zeros(2, cfg.model.channels or 3, size, size),),
            buffer,
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}, "features": {0: "batch"}},
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
    """Largest absolute difference between onnxruntime's and PyTorch's features on ``images`` (B, C, S, S)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(["features"], {"images": images.float().cpu().numpy()})
    with torch.no_grad(), eval_mode(model):
        theirs = model.features(images.float().to(next(model.parameters()).device)).cpu()
    return float((torch.from_numpy(ours) - theirs).abs().max())
