"""The SimSiam networks: backbone + projection MLP (the encoder f) and the predictor h.

Notation follows Chen & He, "Exploring Simple Siamese Representation Learning"
(arXiv 2011.10566). Where each symbol of the paper lives:

    ==========================  ==============================================
    paper                       code
    ==========================  ==============================================
    x1, x2 (two views)          ``Augment`` (augment.py), both views per step
    f (encoder)                 ``SimSiam.encoder``: ``Encoder`` = backbone + projector
    backbone (ResNet)           ``SimSiam.encoder.backbone`` (also ``SimSiam.backbone``)
    projection MLP              ``SimSiam.encoder.projector``: ``ProjectionHead``
    h (predictor)               ``SimSiam.predictor``: ``PredictionHead``
    z = f(x), p = h(z)          ``SimSiam.forward`` returns p1, p2, z1, z2
    stopgrad(z)                 ``SimSiam.forward``: z detached, the one place
    D(p, z)                     ``negative_cosine`` / ``cross_entropy`` (loss.py)
    L = D(p1,z2)/2 + D(p2,z1)/2 ``simsiam_loss`` (loss.py)
    ==========================  ==============================================

The ResNets start from the reference implementation's initialisation,
``zero_init_residual=True`` (main_simsiam.py builds its backbone so): the last BN
of every residual block starts at zero, so each block starts as the identity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from .errors import ConfigError
from .options import at_least, option

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

# Backbones we build without pretrained weights. The "resnet10-slim" entry is the
# CPU demo network: ResNet-18's BasicBlock design with one block per stage and
# half the width, so a 2-core machine sees a real SimSiam gain in minutes.
_TORCHVISION_RESNETS: dict[str, Callable[..., ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}
BACKBONES = (*_TORCHVISION_RESNETS, "resnet10-slim")


@dataclass
class ModelConfig:
    """The networks' options (the ``model`` section of a run's config); ``None`` means auto, see :meth:`resolved`."""

    backbone: str = option("resnet18", flag="--backbone", choices=BACKBONES, help="the network that f starts with; resnet10-slim is the CPU demo network")
    small_images: bool | None = option(
        None, flag="--small-images", help="the paper's CIFAR stem: 3x3 stride-1 first conv, no max-pool (default: at 64 px or less)"
    )
    proj_dim: int = option(2048, flag="--proj-dim", check=at_least(1), help="output width d of the projection MLP (and of the predictor)")
    proj_hidden_dim: int | None = option(None, flag="--proj-hidden-dim", check=at_least(1), help="hidden width of the projection MLP (default: --proj-dim)")
    proj_layers: int | None = option(
        None, flag="--proj-layers", check=at_least(1), help="layers of the projection MLP (default: 2 for small images as on CIFAR, else 3)"
    )
    pred_hidden_dim: int | None = option(
        None, flag="--pred-hidden-dim", check=at_least(1), help="bottleneck width of the predictor h (default: --proj-dim / 4, the paper's 512)"
    )
    stop_gradient: bool = option(True, flag="--stop-gradient", help="stop-gradient on z; --no-stop-gradient is the paper's ablation, which collapses")
    predictor: bool = option(True, flag="--predictor", help="the predictor h; --no-predictor is the paper's ablation, which collapses")

    def resolved(self, image_size: int | None = None) -> "ModelConfig":
        """Every auto field filled; ``image_size`` decides the small-image defaults (unknown: not small)."""
        small = (image_size is not None and image_size <= 64) if self.small_images is None else self.small_images
        return dataclasses.replace(
            self,
            small_images=small,
            proj_hidden_dim=self.proj_hidden_dim or self.proj_dim,
            proj_layers=self.proj_layers or (2 if small else 3),  # 2 on CIFAR (paper, appendix D)
            pred_hidden_dim=self.pred_hidden_dim or max(1, self.proj_dim // 4),
        )


def _slim_resnet(widths: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (1, 1, 1, 1)) -> ResNet:
    """A torchvision ResNet of BasicBlocks with the stage widths given.

    torchvision fixes the widths at 64-128-256-512; we build the same ResNet class
    and swap in narrower stages so the module tree (conv1, bn1, layer1..4, fc)
    stays the one torchvision users know.
    """
    net = ResNet(BasicBlock, list(blocks), zero_init_residual=True)
    net.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    net.inplanes = widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        setattr(net, f"layer{i + 1}", net._make_layer(BasicBlock, width, n, stride=1 if i == 0 else 2))
    net.fc = nn.Linear(widths[-1], 1000)
    for m in net.modules():  # ResNet.__init__'s initialisation, for the new layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)  # zero_init_residual, as the constructor does for its own layers
    return net


def build_backbone(name: str = "resnet18", small_images: bool = False) -> tuple[nn.Module, int]:
    """A randomly initialised ResNet with its classifier removed, and its feature width.

    small_images: the paper's CIFAR variant (appendix D): "the first conv layer is
    3x3 with stride 1 and the first max-pooling layer is removed", so a 32x32 image
    is not shrunk to 8x8 before the first stage.

    >>> net, dim = build_backbone("resnet18", small_images=True)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """
    if name == "resnet10-slim":
        net = _slim_resnet()
    elif name in _TORCHVISION_RESNETS:
        net = _TORCHVISION_RESNETS[name](weights=None, zero_init_residual=True)
    else:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    dim = net.fc.in_features
    if small_images:
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, dim


class ProjectionHead(nn.Module):
    """The projection MLP of the encoder f.

    Paper, section 4: "The projection MLP (in f) has BN applied to each
    fully-connected (fc) layer, including its output fc. Its output fc has no ReLU.
    The hidden fc is 2048-d. This MLP has 3 layers." Appendix D uses 2 layers on
    CIFAR. The reference code makes the output BN affine-free, and drops the bias
    of every fc followed by BN (the BN shift makes it redundant).

    >>> head = ProjectionHead(512, 2048, 2048, num_layers=2)
    >>> head(torch.randn(4, 512)).shape
    torch.Size([4, 2048])
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        layers += [nn.Linear(dims[-1], out_dim, bias=False), nn.BatchNorm1d(out_dim, affine=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PredictionHead(nn.Module):
    """The prediction MLP h.

    Paper, section 4: "The prediction MLP (h) has BN applied to its hidden fc
    layers. Its output fc does not have BN or ReLU. This MLP has 2 layers." The
    hidden layer is a bottleneck, "h's hidden layer's dimension is 512" for a
    2048-d input and output (out/4 by default here).

    >>> PredictionHead(2048)(torch.randn(4, 2048)).shape
    torch.Size([4, 2048])
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int | None = None):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        hidden_dim = out_dim // 4 if hidden_dim is None else hidden_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """The encoder f: backbone, then projection MLP. ``f(x)`` is z (B, d)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


class SimSiam(nn.Module):
    """Encoder f (backbone + projector) and predictor h.

    forward(x1, x2) returns p1, p2, z1, z2 with z detached: the stop-gradient of
    the paper's Algorithm 1, "the encoder on x2 receives no gradient from z2 in the
    first term, but it receives gradients from p2 in the second term". This is the
    one place it is applied; ``stop_gradient=False`` is the paper's ablation.

    The options are the fields of :class:`ModelConfig` (``small_images``,
    ``proj_dim``, ``proj_layers``, ...); ``predictor=False`` is the other
    collapsing ablation (Table 1a).

    >>> model = SimSiam("resnet18", small_images=True, proj_layers=2)
    >>> p1, p2, z1, z2 = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    >>> z1.requires_grad, tuple(model.features(torch.randn(4, 3, 32, 32)).shape)
    (False, (4, 512))
    """

    def __init__(self, backbone: str = "resnet18", **options):
        super().__init__()
        from .options import validate

        config = ModelConfig(backbone=backbone, **options)
        validate(config)
        self.config = config = config.resolved()
        net, self.feature_dim = build_backbone(config.backbone, bool(config.small_images))
        projector = ProjectionHead(self.feature_dim, config.proj_hidden_dim, config.proj_dim, config.proj_layers)
        self.encoder = Encoder(net, projector)
        self.predictor = PredictionHead(config.proj_dim, config.pred_hidden_dim) if config.predictor else nn.Identity()
        self.stop_gradient = config.stop_gradient
        self.out_dim = config.proj_dim

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    @property
    def projector(self) -> nn.Module:
        return self.encoder.projector

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, D): the one feature path for kNN, probes, embeddings and export."""
        return self.encoder.backbone(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        # Each view is its own forward pass, as in the paper's Algorithm 1, so BN
        # normalises over one view's batch (concatenating the views would mix their
        # statistics and change the method).
        z1, z2 = self.encoder(x1), self.encoder(x2)  # (B, d) each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, d) each
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        return p1, p2, z1, z2
