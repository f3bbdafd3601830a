"""The SimSiam networks: backbone + projection MLP (the encoder f) and the predictor h.

Notation follows Chen & He, "Exploring Simple Siamese Representation Learning"
(arXiv 2011.10566). Where each symbol of the paper lives:

    ==========================  ==============================================
    paper                       code
    ==========================  ==============================================
    x1, x2 (two views)          ``Augment`` (augment.py), both views per step
    f (encoder)                 ``SimSiam.encoder``: ``Encoder`` = backbone + projector
    backbone (ResNet)           ``SimSiam.encoder.backbone`` (also ``SimSiam.backbone``), built
                                by backbones.py: any torchvision or timm model, or yours
    projection MLP              ``SimSiam.encoder.projector``: ``ProjectionHead``
    h (predictor)               ``SimSiam.predictor``: ``PredictionHead``
    z = f(x), p = h(z)          ``SimSiam.forward`` returns p1, p2, z1, z2
    stopgrad(z)                 ``SimSiam.forward``: z detached, the one place
    D(p, z)                     ``negative_cosine`` / ``cross_entropy`` (loss.py)
    L = D(p1,z2)/2 + D(p2,z1)/2 ``simsiam_loss`` (loss.py)
    ==========================  ==============================================

Backbones start from their library's own initialisation. The reference
implementation builds its ResNets with ``zero_init_residual=True`` (the last BN of
every residual block starts at zero, so each block starts as the identity); here
that is ``--zero-init-residual``, off by default: on the CPU demo it lowered kNN
top-1 at random init from 0.300 to 0.174 and after 23 of 30 epochs from 0.366 to
0.316 (README, "The demo"), and the paper's tables do not depend on it.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from simsiam.errors import ConfigError
from simsiam.model.backbones import MODULE, BackboneInfo, adopt, build, build_backbone, zero_init_residual
from simsiam.settings import ModelConfig

__all__ = ["BackboneInfo", "Encoder", "ModelConfig", "PredictionHead", "ProjectionHead", "SimSiam", "build_backbone"]


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
    """The encoder f: backbone, then projection MLP. ``f(x)`` is z (B, d).

    A backbone that returns a (B, D, H, W) map (your own module may) is averaged
    over H and W first: the global average pooling that ends the paper's ResNet.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(x)
        return h.mean(dim=(2, 3)) if h.ndim == 4 else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.features(x))


class SimSiam(nn.Module):
    """Encoder f (backbone + projector) and predictor h.

    forward(x1, x2) returns p1, p2, z1, z2 with z detached: the stop-gradient of
    the paper's Algorithm 1, "the encoder on x2 receives no gradient from z2 in the
    first term, but it receives gradients from p2 in the second term". This is the
    one place it is applied; ``stop_gradient=False`` is the paper's ablation.

    The options are the fields of :class:`ModelConfig` (``small_images``,
    ``channels``, ``proj_dim``, ``proj_layers``, ...); ``predictor=False`` is the other
    collapsing ablation (Table 1a).

    backbone: a name (see :mod:`simsiam.model.backbones`: any torchvision classification
    model, ``timm:NAME``, ``resnet10-slim``) or your own ``nn.Module`` mapping
    (B, C, H, W) images to (B, D) features, or to a (B, D, H', W') map that is
    global-average-pooled. Its width D is found by a forward pass of a dummy batch
    of ``channels`` x ``image_size`` images, or given as ``feature_dim``; the config
    records it as ``module:ClassName``, which no config can rebuild.

    image_size: the training image size. ViTs are built for it; every backbone is
    checked at it (one ConfigError line when it cannot take it), and it picks the
    small-image defaults when ``small_images`` is auto.

    >>> model = SimSiam("resnet18", small_images=True, proj_layers=2)
    >>> p1, p2, z1, z2 = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    >>> z1.requires_grad, tuple(model.features(torch.randn(4, 3, 32, 32)).shape)
    (False, (4, 512))
    >>> mine = nn.Sequential(nn.Conv2d(4, 16, 3), nn.ReLU())  # a (B, 16, H, W) map
    >>> SimSiam(mine, channels=4, image_size=16, proj_dim=32).features(torch.randn(2, 4, 16, 16)).shape
    torch.Size([2, 16])
    """

    def __init__(self, backbone: str | nn.Module = "resnet18", *, image_size: int | None = None, feature_dim: int | None = None, **options):
        super().__init__()
        from simsiam.options import validate

        module = backbone if isinstance(backbone, nn.Module) else None
        config = ModelConfig(backbone=MODULE + type(module).__name__ if module is not None else backbone, **options)
        # A module's name stands for no network a config could rebuild; the other fields are checked as usual.
        validate(config if module is None else dataclasses.replace(config, backbone="resnet18"), "model.")
        self.config = config = config.resolved(image_size)
        if module is None:
            net, info = build(config.backbone, small_images=bool(config.small_images), channels=config.channels, image_size=image_size)
            if feature_dim is not None and feature_dim != info.feature_dim:
                raise ConfigError(f"{config.backbone} gives {info.feature_dim}-d features, not {feature_dim}", key="feature_dim")
            if config.zero_init_residual:
                zero_init_residual(net)
        else:
            net, info = module, adopt(module, channels=config.channels, image_size=image_size, feature_dim=feature_dim)
        self.backbone_info: BackboneInfo = info  # what was built: description (a log line), loading_lines (for export)
        self.feature_dim, self.image_size = info.feature_dim, image_size
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
        return self.encoder.features(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        # Each view is its own forward pass, as in the paper's Algorithm 1, so BN
        # normalises over one view's batch (concatenating the views would mix their
        # statistics and change the method).
        z1, z2 = self.encoder(x1), self.encoder(x2)  # (B, d) each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, d) each
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        return p1, p2, z1, z2


class Projected(nn.Module):
    """A SimSiam whose ``features`` are the projector's z = f(x), not the backbone's: for embeddings of z.

    >>> model = SimSiam("resnet10-tiny", proj_dim=64, proj_layers=2, pred_hidden_dim=16)
    >>> Projected(model).eval().features(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 64])
    """

    def __init__(self, model: SimSiam):
        super().__init__()
        self.model = model
        self.feature_dim = model.out_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(x)  # (B, d)
