"""Fitting a torchvision network to SimSiam's encoder, and the Python lines that do the same.

Each step changes the module in place and keeps the names of the module tree, so
the state_dict keys stay torchvision's; what it returns lets the loading lines
repeat it on a freshly built network:

- :func:`remove_classifier`: the classifier (the last layer, 1000 outputs) becomes
  Identity; returns its dotted path (:func:`module_expr` spells it in Python);
- :func:`resnet_stem`: a ResNet's small-image stem (paper, appendix D) and/or a
  C-channel conv1; returns its loading line;
- :func:`first_conv_takes`: any other network's first convolution, taking C
  channels; returns its loading line.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torchvision.models.resnet import ResNet

from simsiam.errors import ConfigError


def remove_classifier(net: nn.Module, name: str) -> str:
    """Replace the classifier (the last Linear or Conv2d, with 1000 outputs) by Identity; returns its dotted path.

    Dropout beside it (before the classifier, in the same head) goes too: it has no
    weights, is idle in eval mode, and is not part of SimSiam's encoder in training.
    """
    path, layer = next(((n, m) for n, m in reversed(list(net.named_modules())) if isinstance(m, (nn.Linear, nn.Conv2d))), ("", None))
    if getattr(layer, "out_features", getattr(layer, "out_channels", None)) != 1000:
        raise ConfigError(f"cannot find the classifier of {name} (a last layer with 1000 outputs)", key="model.backbone")
    parent_path, _, leaf = path.rpartition(".")
    parent = net.get_submodule(parent_path)
    setattr(parent, leaf, nn.Identity())
    for child_name, child in list(parent.named_children()):
        if isinstance(child, nn.Dropout):
            setattr(parent, child_name, nn.Identity())
    return path


def resnet_stem(net: ResNet, stem: bool, channels: int) -> str | None:
    """The small-image stem and/or a C-channel conv1 for a ResNet; returns the loading line, or None when unchanged."""
    old = net.conv1
    if not stem and channels == 3:
        return None
    if stem:  # appendix D: "the first conv layer is 3x3 with stride 1 and the first max-pooling layer is removed",
        # so a 32x32 image is not shrunk to 8x8 before the first stage
        net.conv1 = nn.Conv2d(channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as ResNet.__init__ does
    if stem:
        return f"net.conv1, net.maxpool = {_conv_expr(net.conv1)}, torch.nn.Identity()  # small-image stem: 3x3 stride-1 conv1, no max-pool"
    return f"net.conv1 = {_conv_expr(net.conv1)}  # takes {channels} channel{'s' if channels > 1 else ''}"


def first_conv_takes(net: nn.Module, channels: int) -> str | None:
    """Replace the first Conv2d by one taking C channels, under the same name; returns the loading line.

    The new weights are drawn with the old ones' standard deviation scaled by
    sqrt(3 / C), so the first layer's output keeps the scale the network was
    initialised for whatever the number of channels.
    """
    if channels == 3:
        return None
    path, old = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        old.bias is not None,
        old.padding_mode,
    )
    with torch.no_grad():  # tensor arithmetic, no float(): the meta device (shapes only) builds it too
        new.weight.copy_(torch.randn_like(new.weight) * (old.weight.std() * math.sqrt(3 / channels)))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    parent_path, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent_path), leaf, new)
    return f"{module_expr(path)} = {_conv_expr(new)}  # takes {channels} channel{'s' if channels > 1 else ''}"


def module_expr(path: str) -> str:
    """Python for a dotted module path: "classifier.3" -> "net.classifier[3]"."""
    return "net" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path.split("."))


def _conv_expr(conv: nn.Conv2d) -> str:
    def short(v):
        return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v

    text = (
        f"torch.nn.Conv2d({conv.in_channels}, {conv.out_channels}, {short(conv.kernel_size)}, {short(conv.stride)}, {short(conv.padding)!r}"
    )
    if short(conv.dilation) != 1:
        text += f", dilation={short(conv.dilation)}"
    if conv.groups != 1:
        text += f", groups={conv.groups}"
    if conv.bias is None:
        text += ", bias=False"
    if conv.padding_mode != "zeros":
        text += f", padding_mode={conv.padding_mode!r}"
    return text + ")"
