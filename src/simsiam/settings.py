"""The settings of the method that a run can be given: the networks' and the views', as typed dataclasses.

:class:`ModelConfig` (the encoder f and the predictor h) and :class:`AugmentConfig`
(the views) are the ``model`` and ``augment`` sections of a run's config; the
loss kinds and the names of the backbones live here too. Every field is an
:func:`~simsiam.options.option` that carries its flag, help and check.

Nothing here imports torch: the command line builds its parser, and answers
``--help``, from these fields in a fraction of a second (torch and torchvision take
seconds to import). :mod:`simsiam.model` and :mod:`simsiam.augment` build what
these settings describe.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass

from simsiam.options import MAX_LAYERS, MAX_WIDTH, at_least, in_range, increasing_pair, option, probability

__all__ = ["ModelConfig", "AugmentConfig", "LOSS_KINDS", "ROTATIONS", "small_stem", "name_problem", "has_small_stem"]

# D(p, z), the paper's two: negative cosine similarity (eq. 1) and the symmetrized cross-entropy (section 4.5).
LOSS_KINDS = ("cosine", "cross_entropy")

# -- backbones by name -----------------------------------------------------------------------

SLIM = "resnet10-slim"
# Our CPU networks: torchvision's ResNet class with one BasicBlock per stage and
# narrower stages; resnet10-tiny is the CPU demo's (README, "The demo").
SLIM_WIDTHS = {SLIM: (32, 64, 128, 256), "resnet10-tiny": (16, 32, 64, 128)}
TIMM = "timm:"
MODULE = "module:"  # the config's name for a module passed to SimSiam(backbone=...)
RESNET_FAMILY = ("resnet", "resnext", "wide_resnet")


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """The torchvision classification models (detection, segmentation and video models live in submodules)."""
    import torchvision  # here, not at the top: the command line's help reads this module without torch

    return tuple(torchvision.models.list_models(module=torchvision.models))


def has_small_stem(name: str) -> bool:
    """Whether the small-image stem applies: the torchvision ResNet family and our CPU ResNets."""
    return name in SLIM_WIDTHS or (name.startswith(RESNET_FAMILY) and name in torchvision_names())


def timm_or_none():
    """The timm module when it is installed (the simsiam[timm] extra), else None."""
    try:
        import timm
    except ImportError:
        return None
    return timm


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a backbone we can build (one line, with close matches), or None."""
    if name.startswith(MODULE):
        return (
            f"{name!r} stands for a module passed to SimSiam(backbone=...); a config cannot rebuild it: build SimSiam(backbone=your_module)"
        )
    if name.startswith(TIMM):
        timm = timm_or_none()
        if timm is None:
            return f"{name} needs timm: pip install 'simsiam[timm]'"
        if timm.is_model(name[len(TIMM) :]):
            return None
        close = difflib.get_close_matches(name[len(TIMM) :], timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(TIMM + c for c in close)}?" if close else "; timm.list_models() lists them"
        return f"unknown timm model {name!r}{hint}"
    if name in SLIM_WIDTHS or name in torchvision_names():
        return None
    close = difflib.get_close_matches(name, (*torchvision_names(), *SLIM_WIDTHS), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown backbone {name!r}; {hint}(any torchvision classification model, {', '.join(SLIM_WIDTHS)}, or timm:NAME)"


# -- the encoder and the predictor -------------------------------------------------------------


SMALL_STEM_MAX = 64  # px: images this small get the paper's CIFAR stem, unless told otherwise


def small_stem(setting: bool | None, image_size: int | None, backbone: str) -> tuple[bool, str]:
    """Whether the encoder gets the paper's small-image stem, and why: the one rule, on a CPU and a GPU alike.

    The stem (3x3 stride-1 first convolution, no max-pool; paper, appendix D) is a
    ResNet notion: other families never get it. A setting (``--small-images``,
    ``--no-small-images``, a config file or a recipe) is followed; left auto, a
    ResNet gets it for images of at most 64 px. (The CPU recipes set it off: the
    ImageNet stem's 4x downsampling sends 16 times fewer pixels through the network.)

    >>> small_stem(None, 32, "resnet18"), small_stem(None, 32, "vit_b_16")[0]
    ((True, '32 px images, 64 or less'), False)
    """
    if not has_small_stem(backbone):
        return False, f"{backbone} is not a ResNet, which is what the stem is for"
    if setting is not None:
        return setting, "set by the options (--small-images / --no-small-images, the config file or the recipe)"
    if image_size is not None and image_size <= SMALL_STEM_MAX:
        return True, f"{image_size} px images, {SMALL_STEM_MAX} or less"
    return False, f"{image_size} px images, above {SMALL_STEM_MAX}" if image_size is not None else "the image size is not known"


@dataclass
class ModelConfig:
    """The networks' options (the ``model`` section of a run's config); ``None`` means auto, see :meth:`resolved`."""

    backbone: str = option(
        "resnet18",
        flag="--backbone",
        metavar="NAME",
        check=name_problem,
        help="the network that f starts with: any torchvision classification model (resnet50, convnext_tiny, vit_b_16, ...), "
        "timm:NAME with timm installed, or resnet10-tiny and resnet10-slim, our CPU networks",
    )
    small_images: bool | None = option(
        None, flag="--small-images", help="the paper's CIFAR stem: 3x3 stride-1 first conv, no max-pool (default: at 64 px or less)"
    )
    channels: int | None = option(
        None,
        flag="--channels",
        check=in_range(1, 512),  # 512: the most bands a file may hold (simsiam.data.decode.MAX_CHANNELS)
        help="image channels C, taken by the backbone's first convolution (default: the data's; 3 for RGB; 1 reads images as grey)",
    )
    proj_dim: int = option(
        2048, flag="--proj-dim", check=at_least(1, MAX_WIDTH), help="output width d of the projection MLP (and of the predictor)"
    )
    proj_hidden_dim: int | None = option(
        None, flag="--proj-hidden-dim", check=at_least(1, MAX_WIDTH), help="hidden width of the projection MLP (default: --proj-dim)"
    )
    proj_layers: int | None = option(
        None,
        flag="--proj-layers",
        check=at_least(1, MAX_LAYERS),
        help="layers of the projection MLP (default: 2 for small images as on CIFAR, else 3)",
    )
    pred_hidden_dim: int | None = option(
        None,
        flag="--pred-hidden-dim",
        check=at_least(1, MAX_WIDTH),
        help="bottleneck width of the predictor h (default: --proj-dim / 4, the paper's 512)",
    )
    zero_init_residual: bool = option(
        False,
        flag="--zero-init-residual",
        help="start each residual block as the identity (its last BN at zero), as the reference code does",
    )
    stop_gradient: bool = option(
        True, flag="--stop-gradient", help="stop-gradient on z; --no-stop-gradient is the paper's ablation, which collapses"
    )
    predictor: bool = option(True, flag="--predictor", help="the predictor h; --no-predictor is the paper's ablation, which collapses")

    def resolved(self, image_size: int | None = None, channels: int | None = None) -> ModelConfig:
        """Every auto field filled; ``image_size`` decides the small-image defaults (unknown: not small).

        ``channels`` is the data's channel count, used unless the config sets one (default 3).
        small_images ends up true only where the stem exists (the ResNet family);
        the 2-layer projector of the paper's CIFAR recipe follows small images either way.
        """
        small = (image_size is not None and image_size <= 64) if self.small_images is None else self.small_images
        return dataclasses.replace(
            self,
            small_images=small_stem(self.small_images, image_size, self.backbone)[0],
            channels=self.channels or channels or 3,
            proj_hidden_dim=self.proj_hidden_dim or self.proj_dim,
            proj_layers=self.proj_layers or (2 if small else 3),  # 2 on CIFAR (paper, appendix D)
            pred_hidden_dim=self.pred_hidden_dim or max(1, self.proj_dim // 4),
        )


# -- the views ---------------------------------------------------------------------------------

ROTATIONS = ("none", "90", "free")


@dataclass
class AugmentConfig:
    """The view augmentations' options (the ``augment`` section of a run's config).

    Probabilities are per view; strengths follow torchvision's ColorJitter.
    """

    min_scale: float = option(
        0.2, flag="--min-scale", check=in_range(0, 1, low_open=True), help="smallest crop area, as a fraction of the image"
    )
    max_scale: float = option(1.0, check=in_range(0, 1, low_open=True), help="largest crop area, as a fraction of the image")
    ratio: tuple[float, float] = option((3 / 4, 4 / 3), check=increasing_pair(0, 100), help="range of the crop's aspect ratio")
    hflip_p: float = option(0.5, check=probability, help="horizontal flip probability")
    vflip_p: float = option(
        0.0, flag="--vflip", metavar="P", check=probability, help="vertical flip probability, for data with no canonical orientation"
    )
    rotate: str = option("none", flag="--rotate", choices=ROTATIONS, help="random rotation, for data with no canonical orientation")
    jitter_p: float = option(0.8, check=probability, help="colour jitter probability")
    brightness: float = option(0.4, check=at_least(0, 10), help="brightness jitter strength")
    contrast: float = option(0.4, check=at_least(0, 10), help="contrast jitter strength")
    saturation: float = option(0.4, check=at_least(0, 10), help="saturation jitter strength")
    hue: float = option(0.1, check=in_range(0, 0.5), help="hue jitter strength, in turns")
    grayscale_p: float = option(0.2, check=probability, help="grayscale probability")
    blur_p: float | None = option(
        None, flag="--blur", metavar="P", check=probability, help="Gaussian blur probability (default: 0.5 above 64 px, 0 for small images)"
    )
    blur_sigma: tuple[float, float] = option((0.1, 2.0), check=increasing_pair(0.001, 100), help="range of the blur's sigma, in pixels")
    solarize_p: float = option(0.0, flag="--solarize", metavar="P", check=probability, help="solarization probability")

    def cross_checks(self):
        if self.min_scale > self.max_scale:
            yield "min_scale", f"must not exceed max_scale ({self.max_scale}), got {self.min_scale}"

    def resolved(self, size: int) -> AugmentConfig:
        """blur_p filled: the paper blurs ImageNet views (p=0.5) and not CIFAR's, where sigma up to 2 px wipes out 32x32 content."""
        return dataclasses.replace(self, blur_p=(0.5 if size > 64 else 0.0) if self.blur_p is None else self.blur_p)
