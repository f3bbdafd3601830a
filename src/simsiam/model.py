"""The SimSiam networks: backbone + projection MLP (the encoder f) and the predictor h.

Notation follows Chen & He, "Exploring Simple Siamese Representation Learning"
(arXiv 2011.10566): two views x1, x2; projections z = f(x); predictions p = h(z).
"""

from __future__ import annotations

from typing import Callable

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
        net = _TORCHVISION_RESNETS[name](weights=None)
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
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


class SimSiam(nn.Module):
    """Encoder f (backbone + projector) and predictor h.

    forward(x1, x2) returns p1, p2, z1, z2 with z detached: the stop-gradient of
    the paper's Algorithm 1, "the encoder on x2 receives no gradient from z2 in the
    first term, but it receives gradients from p2 in the second term".

    stop_gradient=False and predictor=False exist for the paper's ablations
    (section 4.1 and Table 1): either one makes the representation collapse.

    >>> model = SimSiam("resnet18", small_images=True, proj_layers=2)
    >>> p1, p2, z1, z2 = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    >>> z1.requires_grad
    False
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        small_images: bool = False,
        proj_dim: int = 2048,
        proj_hidden_dim: int | None = None,
        proj_layers: int = 3,
        pred_hidden_dim: int | None = None,
        stop_gradient: bool = True,
        predictor: bool = True,
    ):
        super().__init__()
        self.backbone, self.feature_dim = build_backbone(backbone, small_images)
        self.projector = ProjectionHead(self.feature_dim, proj_hidden_dim or proj_dim, proj_dim, proj_layers)
        self.predictor = PredictionHead(proj_dim, pred_hidden_dim) if predictor else nn.Identity()
        self.stop_gradient = stop_gradient
        self.out_dim = proj_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, D): the one feature path for kNN, probes, embeddings and export."""
        return self.backbone(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        # Each view is its own forward pass, as in the paper's Algorithm 1, so BN
        # normalises over one view's batch (concatenating the views would mix their
        # statistics and change the method).
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))  # (B, d) each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, d) each
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        return p1, p2, z1, z2
