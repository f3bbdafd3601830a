"""Backbones by name: any torchvision classification model, any timm model, the demo ResNet, or your own module.

The paper's encoder starts with a ResNet; here f may start with any network that
maps images to a feature vector. Each one is built without pretrained weights and
with its classifier removed, and its feature width is *found* by a forward pass
of a dummy batch (on the meta device, so nothing is computed), never looked up in
a table. Names:

- any torchvision classification model (``torchvision.models.list_models``):
  resnet18, resnext50_32x4d, wide_resnet50_2, convnext_tiny, efficientnet_b0,
  mobilenet_v3_small, regnet_y_400mf, vit_b_16, swin_t, ...;
- ``timm:NAME``: any timm model, when timm is installed (``pip install 'simsiam[timm]'``),
  built as ``timm.create_model(NAME, num_classes=0, in_chans=C)``;
- ``resnet10-tiny`` and ``resnet10-slim``: our CPU networks, ResNet-18's BasicBlock
  design with one block per stage at a quarter and half the width; resnet10-tiny is
  the CPU demo's, so a 2-core machine sees a real SimSiam gain in a minute.

The small-image stem of the paper's CIFAR experiments (appendix D: "the first conv
layer is 3x3 with stride 1 and the first max-pooling layer is removed") is a ResNet
notion and applies to the ResNet family only (resnet*, resnext*, wide_resnet*,
resnet10-tiny, resnet10-slim); :attr:`BackboneInfo.description` says what was done for the others.

C-channel images: the first convolution is replaced by one taking C channels
under the same name (timm builds it so with ``in_chans``), so the module tree and
the state_dict keys stay torchvision's or timm's, and :attr:`BackboneInfo.loading_lines`
rebuild the bare network that the exported weights load into strictly.

>>> net, info = build("resnet18", small_images=True, image_size=32)
>>> info.feature_dim, info.description
(512, 'resnet18 at 32 px: small-image stem (3x3 stride-1 conv1, no max-pool); 4x4 features before pooling, 512-d')
>>> info.loading_lines[1:]
('net = torchvision.models.resnet18(weights=None)', 'net.fc = torch.nn.Identity()', 'net.conv1, net.maxpool = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False), torch.nn.Identity()  # small-image stem: 3x3 stride-1 conv1, no max-pool')
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from torch.func import functional_call
from torchvision.models.resnet import BasicBlock, ResNet

from simsiam.errors import ConfigError
from simsiam.files import error_text
from simsiam.model.adapt import first_conv_takes, module_expr, remove_classifier, resnet_stem
from simsiam.settings import MODULE, RESNET_FAMILY, SLIM_WIDTHS, TIMM, has_small_stem, name_problem, timm_or_none

SMALL_STEM = "small-image stem (3x3 stride-1 conv1, no max-pool)"

# Constructor arguments by model name prefix. "build" ones only initialise; "shape"
# ones change the module tree, so the loading lines repeat them.
_BUILD_ARGS = {("googlenet", "inception_v3"): dict(init_weights=True)}
_SHAPE_ARGS = {("googlenet", "inception_v3"): dict(aux_logits=False)}
# Constructor arguments that fix the image size a network is built for (ViT: image_size; MaxViT: input_size).
_SIZE_ARGS = (("image_size", lambda s: s), ("input_size", lambda s: (s, s)))


@dataclass(frozen=True)
class BackboneInfo:
    """What was built: the name, the feature width D, the input it takes, a log line, and the lines that rebuild it."""

    name: str  # "resnet18", "timm:resnet10t", "resnet10-slim" or "module:MyNet"
    feature_dim: int
    channels: int
    image_size: int | None
    small_stem: bool
    description: str  # one line for the training log
    loading_lines: tuple[str, ...]  # Python lines that define ``net``, ready for net.load_state_dict(...)


# -- building ----------------------------------------------------------------------------


def build(name: str, *, small_images: bool = False, channels: int = 3, image_size: int | None = None) -> tuple[nn.Module, BackboneInfo]:
    """A randomly initialised backbone mapping (B, C, S, S) images to (B, D) features, and what was built.

    small_images applies the paper's small-image stem to the ResNet family and is
    ignored (and said so in the description) for others. image_size is the size the
    network is built for (ViTs) and checked at (a dummy forward at that size must
    work); None means the network's own default.
    """
    problem = name_problem(name)
    if problem:
        raise ConfigError(problem, key="model.backbone")
    if channels < 1:
        raise ConfigError(f"must be at least 1, got {channels}", key="model.channels")
    stem = small_images and has_small_stem(name)
    if name.startswith(TIMM):
        net, lines = _timm_net(name[len(TIMM) :], channels, image_size)
    elif name in SLIM_WIDTHS:
        net, lines = _slim_resnet(SLIM_WIDTHS[name]), []
    else:
        net, lines = _torchvision_net(name, image_size)
    if not name.startswith(TIMM):
        lines = _adapt(net, name, stem, channels, lines)
    size = image_size or getattr(net, "image_size", None) or _timm_size(net) or (32 if stem else 224)
    out, side = _probe_or_refuse(net, name, channels, size, image_size)
    if out.ndim != 2:
        raise ConfigError(f"{name} gives features of shape {tuple(out.shape)}, not (batch, width)", key="model.backbone")
    dim = int(out.shape[1])
    text = _description(name, net, dim, size, side, small_images, stem, channels)
    return net, BackboneInfo(name, dim, channels, image_size, stem, text, tuple(lines))


def build_backbone(
    name: str = "resnet18", small_images: bool = False, channels: int = 3, image_size: int | None = None
) -> tuple[nn.Module, int]:
    """The backbone and its feature width, as :func:`build` makes them.

    >>> net, dim = build_backbone("resnet18", small_images=True)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """
    net, info = build(name, small_images=small_images, channels=channels, image_size=image_size)
    return net, info.feature_dim


def adopt(module: nn.Module, *, channels: int = 3, image_size: int | None = None, feature_dim: int | None = None) -> BackboneInfo:
    """What SimSiam needs to know of your own backbone module: its feature width, found or given.

    The module maps (B, C, S, S) images to (B, D) features, or to a (B, D, H, W)
    map that SimSiam averages over H and W. Without ``feature_dim``, a dummy batch
    of ``channels`` x ``image_size`` (default 224) images finds D.
    """
    name = MODULE + type(module).__name__
    if feature_dim is not None:
        if feature_dim < 1:
            raise ConfigError(f"must be at least 1, got {feature_dim}", key="feature_dim")
        text = f"{name}: your module, {feature_dim}-d features (as given)"
        return BackboneInfo(name, feature_dim, channels, image_size, False, text, (_OWN_MODULE_LINE,))
    size = image_size or 224
    try:
        out, _ = probe(module, channels, size)
    except Exception as e:
        raise ConfigError(
            f"your {type(module).__name__} fails on a (2, {channels}, {size}, {size}) batch ({error_text(e, kind=True, first_line=True)}); "
            "pass image_size= and channels= as your images are, or feature_dim=",
            key="model.backbone",
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"your {type(module).__name__} returns {shape}; SimSiam needs (B, D) features or a (B, D, H, W) map", key="model.backbone"
        )
    dim = int(out.shape[1])
    shape = "(B, " + ", ".join(str(n) for n in out.shape[1:]) + ")"
    text = (
        f"{name} at {size} px, {channels} channels: your module, {shape}"
        + (" averaged over positions" if out.ndim == 4 else "")
        + f", {dim}-d"
    )
    return BackboneInfo(name, dim, channels, image_size, False, text, (_OWN_MODULE_LINE,))


_OWN_MODULE_LINE = "# net = your own module, built as you passed it to SimSiam(backbone=...)"


def _torchvision_net(name: str, image_size: int | None) -> tuple[nn.Module, list[str]]:
    """torchvision's network and the lines that build it again: the shape-changing arguments only."""
    builder = torchvision.models.get_model_builder(name)
    build_args = next((a for prefixes, a in _BUILD_ARGS.items() if name.startswith(prefixes)), {})
    shape_args = dict(next((a for prefixes, a in _SHAPE_ARGS.items() if name.startswith(prefixes)), {}))
    if image_size:
        shape_args.update(_size_args(builder, image_size, **build_args, **shape_args))
    try:
        net = builder(weights=None, **build_args, **shape_args)
    except (AssertionError, ValueError) as e:  # a ViT refuses a size that is not a multiple of its patch
        raise ConfigError(_size_refusal(name, builder, image_size, e), key="image_size") from None
    args = "".join(f", {k}={v!r}" for k, v in shape_args.items())
    return net, ["import torch, torchvision", f"net = torchvision.models.{name}(weights=None{args})"]


def _size_args(builder, image_size: int, **args) -> dict:
    """The arguments that build a network for ``image_size`` px, when its class takes one (ViT, MaxViT).

    The class is found by building the network on the meta device (no memory, no
    initialisation); a network that cannot be built there takes no size argument.
    """
    try:
        with torch.device("meta"):
            params = inspect.signature(type(builder(weights=None, **args)).__init__).parameters
    except Exception:
        return {}
    return {key: value(image_size) for key, value in _SIZE_ARGS if key in params}


def _size_refusal(name: str, builder, image_size: int, error: Exception) -> str:
    """One line on why a network built for one image size cannot be built for ``image_size``."""
    try:
        with torch.device("meta"):
            patch = getattr(builder(weights=None), "patch_size", None)
    except Exception:
        patch = None
    if isinstance(patch, int):
        return f"{name} cuts images into {patch}x{patch} patches: the image size must be a multiple of {patch}, got {image_size}"
    return f"{name} cannot be built for {image_size} px images: {error_text(error, kind=True, first_line=True)}"


def _timm_net(model: str, channels: int, image_size: int | None) -> tuple[nn.Module, list[str]]:
    timm = timm_or_none()
    args = dict(num_classes=0, in_chans=channels)
    try:
        try:  # ViT-like models are built for one size and take img_size; the others refuse it
            net = timm.create_model(model, pretrained=False, **args, **({"img_size": image_size} if image_size else {}))
            if image_size:
                args["img_size"] = image_size
        except TypeError as e:
            if not image_size or "'img_size'" not in str(e):
                raise
            net = timm.create_model(model, pretrained=False, **args)
    except Exception as e:
        raise ConfigError(
            f"timm could not build {model!r} for {channels}-channel {image_size or 'default-size'} images: {error_text(e, kind=True, first_line=True)}",
            key="model.backbone",
        ) from None
    call = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return net, ["import torch, timm", f"net = timm.create_model({model!r}, {call})"]


def _timm_size(net: nn.Module) -> int | None:
    size = (getattr(net, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size else None


def _slim_resnet(widths: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (1, 1, 1, 1)) -> ResNet:
    """A torchvision ResNet of BasicBlocks with the stage widths given.

    torchvision fixes the widths at 64-128-256-512; we build the same ResNet class
    and swap in narrower stages so the module tree (conv1, bn1, layer1..4, fc)
    stays the one torchvision users know.
    """
    net = ResNet(BasicBlock, list(blocks))
    net.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    net.inplanes = widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        setattr(net, f"layer{i + 1}", net._make_layer(BasicBlock, width, n, stride=1 if i == 0 else 2))
    net.fc = nn.Linear(widths[-1], 1000)
    for m in net.modules():  # ResNet.__init__'s initialisation, for the new layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def zero_init_residual(net: nn.Module) -> int:
    """Zero the last BN weight of every residual block (torchvision's ``zero_init_residual``); returns how many.

    Each block then starts as the identity. The reference SimSiam builds its
    ResNets so; it draws no random numbers, so the other weights are unchanged.
    """
    from torchvision.models.resnet import Bottleneck

    last_bns = [m.bn3 if isinstance(m, Bottleneck) else m.bn2 for m in net.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    for bn in last_bns:
        nn.init.zeros_(bn.weight)
    return len(last_bns)


# -- adapting torchvision's networks ------------------------------------------------------


def _adapt(net: nn.Module, name: str, stem: bool, channels: int, lines: list[str]) -> list[str]:
    """Remove the classifier, then fit the first convolution to the stem and the channels; returns the loading lines."""
    classifier = remove_classifier(net, name)
    resnet = name.startswith(RESNET_FAMILY) or name in SLIM_WIDTHS
    conv_line = resnet_stem(net, stem, channels) if resnet else first_conv_takes(net, channels)
    if name in SLIM_WIDTHS:  # not a torchvision constructor: the same ResNet class with narrower stages, rebuilt by us
        extra = f", channels={channels}" if channels != 3 else ""
        return ["import torch, simsiam", f"net, _ = simsiam.model.build_backbone({name!r}, small_images={stem}{extra})"]
    return lines + [f"{module_expr(classifier)} = torch.nn.Identity()"] + ([conv_line] if conv_line else [])


# -- the dummy forward --------------------------------------------------------------------


def _probe_or_refuse(net: nn.Module, name: str, channels: int, size: int, image_size: int | None):
    try:
        return probe(net, channels, size)
    except Exception as e:
        key = "image_size" if image_size else "model.backbone"
        raise ConfigError(
            f"{name} cannot take {size} px images with {channels} channels: {error_text(e, kind=True, first_line=True)}", key=key
        ) from None


def _description(name: str, net: nn.Module, dim: int, size: int, side: int | None, small: bool, stem: bool, channels: int) -> str:
    """The log line: what was built at this image size, and what was done (or not) for small images."""
    text = f"{name} at {size} px: "
    features = f"{side}x{side} features" if side else "features"
    if isinstance(net, torchvision.models.VisionTransformer) or type(net).__name__ == "VisionTransformer":
        patch = next((m.stride[0] for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        text += f"built for {size} px images" + (f", {size // patch}x{size // patch} patches of {patch} px" if patch else "")
    elif stem:
        text += f"{SMALL_STEM}; {features} before pooling"
    elif small or size <= 64:
        leaves = f"its {round(size / side)}x downsampling leaves" if side else "its downsampling leaves"
        why = "without the small-image stem" if has_small_stem(name) else "no small-image stem for this family"
        text += f"{why}; {leaves} {features}"
    else:
        text += f"{features} before pooling"
    text += f", {dim}-d"
    if channels != 3:
        text += f"; the first convolution takes {channels} channel{'s' if channels > 1 else ''}"
    return text


# -- the dummy forward that finds what a network gives: its output, and the side of its last feature map


def probe(net: nn.Module, channels: int, size: int):
    """The output of a (2, C, S, S) batch and the side of the last feature map before global pooling.

    On the meta device first (shapes only: free for any size of network); where a
    module does something the meta device cannot, a real forward in eval mode.
    The network's modes and statistics are left as they were.
    """
    modes = {m: m.training for m in net.modules()}
    sides = _Sides(net)
    net.eval()
    try:
        with torch.no_grad():
            try:
                state = {k: torch.empty_like(v, device="meta") for k, v in (*net.named_parameters(), *net.named_buffers())}
                out = functional_call(net, state, (torch.empty(2, channels, size, size, device="meta"),))
            except Exception:
                sides.reset()
                device = next(net.parameters(), torch.empty(0)).device
                out = net(torch.zeros(2, channels, size, size, device=device))
    finally:
        sides.remove()
        for m, training in modes.items():
            m.training = training
    return out, sides.side


class _Sides:
    """Forward hooks that find the side of the last feature map before global pooling (None when there is none)."""

    def __init__(self, net: nn.Module):
        self.handles = [m.register_forward_hook(self._hook) for m in net.modules()]
        self.reset()

    def reset(self):
        self.last = self.pooled = None

    def _hook(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if "Pool" in type(module).__name__ and x is not None and x.ndim == 4 and (output.ndim < 4 or _side(output) == 1):
            self.pooled = _side(x)  # the input of the latest global pool: squeeze-excitation pools come earlier
        elif output.ndim == 4 and _side(output) is not None:
            self.last = _side(output)

    @property
    def side(self) -> int | None:
        return self.pooled if self.pooled is not None else self.last

    def remove(self):
        for h in self.handles:
            h.remove()


def _side(t: torch.Tensor) -> int | None:
    """The spatial side of a map of a square image, laid out (B, C, H, W) or (B, H, W, C)."""
    if t.shape[2] == t.shape[3]:
        return int(t.shape[2])
    return int(t.shape[1]) if t.shape[1] == t.shape[2] else None


# -- starting weights ----------------------------------------------------------------------------------


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file: safetensors, or a torch file read with weights_only=True (tensors, never code).

    A torch file may hold the state_dict itself or wrap it under "state_dict" or
    "model" (as training scripts save them). Anything else is one ConfigError naming the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a file of weights: a damaged zip, a pickle of objects, a safetensors header that lies
        raise ConfigError(f"{path}: cannot read weights from it ({error_text(e, kind=True)})", key="init_weights") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConfigError(f"{path}: not a state_dict (a mapping of names to tensors)", key="init_weights")
    return state


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], strict: bool = True, where: str = "the file", load: bool = True) -> str:
    """Load ``state`` into the backbone ``net``; returns one line saying what was loaded and what was not.

    A classifier that SimSiam removed (an Identity in ``net``, such as torchvision's
    ``fc``) drops its keys: a supervised checkpoint of the same network loads
    strictly. Otherwise, with ``strict``, any missing, unexpected or misshapen
    tensor is a ConfigError listing them; without, the tensors that fit are loaded
    and the line names the others. ``load=False`` checks only (a network on the meta device).
    """
    dropped = [k for k in state if isinstance(_owner(net, k), nn.Identity)]
    state = {k: v for k, v in state.items() if k not in dropped}
    own = net.state_dict()
    misshapen = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    problems = [
        f"{len(x)} {what} ({_few(x)})" for x, what in ((missing, "missing"), (unexpected, "unexpected"), (misshapen, "misshapen")) if x
    ]
    if problems and strict:
        raise ConfigError(
            f"{where} does not fit this backbone: {'; '.join(problems)}; choose the matching --backbone, or "
            "--init-weights-nonstrict to load what fits",
            key="init_weights",
        )
    fits = {k: v for k, v in state.items() if k in own and k not in misshapen}
    if load:
        net.load_state_dict(fits, strict=False)
    said = f"{len(fits)} of the backbone's {len(own)} tensors loaded"
    said += f"; the removed classifier's {len(dropped)} left out" if dropped else ""
    return said + (f"; not loaded: {'; '.join(problems)}" if problems else "")


def _owner(net: nn.Module, key: str) -> nn.Module | None:
    try:
        return net.get_submodule(key.rsplit(".", 1)[0]) if "." in key else None
    except AttributeError:
        return None


def _few(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")
