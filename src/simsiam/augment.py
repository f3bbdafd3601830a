"""SimSiam's view augmentations, batched: one call per batch, random parameters per sample.

The recipe is SimCLR's as the paper gives it (section 4 and appendix A): random
resized crop (scale 0.2-1), horizontal flip, color jitter (0.4, 0.4, 0.4, 0.1)
with p=0.8, grayscale with p=0.2, Gaussian blur, and optional solarization.
Every step is tensor arithmetic on the whole batch, so the same code runs on CPU
tensors and on CUDA tensors with no Python call per image:

- crop, flips and rotation are folded into one affine matrix per sample and
  applied by a single ``grid_sample`` straight to the output size;
- jitter, grayscale and solarization are broadcast arithmetic with per-sample
  factors (a sample that skips a step gets the identity factor);
- blur is a separable convolution with one kernel per sample (grouped conv).

One deliberate difference from torchvision's ColorJitter: brightness, contrast,
saturation and hue are applied in that fixed order rather than a random order
per image, which keeps the batch in one pass.

Images of C != 3 channels (one band, or a multispectral stack): saturation and hue
jitter, grayscale and solarization are defined for RGB and are off (``Augment.notes``
says so); crop, flips, rotation and blur apply unchanged, and brightness and
contrast jitter apply per channel, each band with its own factor and its own mean.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .options import at_least, in_range, increasing_pair, option, probability, validate
from .pixel_ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_contrast_per_channel,
    adjust_saturation,
    gaussian_blur,
    grayscale,
    shift_hue,
    where_samples,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


def channel_note(channels: int) -> str | None:
    """The one line that says which augmentations C-channel images get (None for RGB)."""
    if channels == 3:
        return None
    return (
        f"{channels} channel{'s' if channels > 1 else ''}: saturation and hue jitter, grayscale and solarization are for RGB and are off; "
        "crop, flips, rotation, blur and brightness/contrast jitter (per channel) apply"
    )


@dataclass
class ViewParams:
    """The random parameters of one batch of views; each field has one entry per sample."""

    crop: torch.Tensor  # (B, 4) centre x, centre y, width, height, as fractions of the source
    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool
    angle: torch.Tensor  # (B,) radians
    jitter: torch.Tensor  # (B,) bool: color jitter applied
    brightness: torch.Tensor  # (B,) factor, 1 = unchanged; (B, C) for C != 3 channels, one factor per channel
    contrast: torch.Tensor  # (B,); (B, C) for C != 3 channels
    saturation: torch.Tensor  # (B,)
    hue: torch.Tensor  # (B,) shift in turns, 0 = unchanged
    gray: torch.Tensor  # (B,) bool
    blur_sigma: torch.Tensor  # (B,) pixels, 0 = no blur
    solarize: torch.Tensor  # (B,) bool


class Augment:
    """Turns a batch of images into SimSiam views, each sample with its own random parameters.

    Input: (B, C, H, W) uint8 in [0, 255], uint16 in [0, 65535] or float in [0, 1], on any device.
    Output: (B, C, size, size) float32, normalised with ``mean`` and ``std`` (one value per channel).

    >>> aug = Augment(size=32, seed=0)
    >>> images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    >>> x1, x2 = aug(images), aug(images)
    >>> x1.shape, bool((x1 - x2).abs().sum() > 0)
    (torch.Size([8, 3, 32, 32]), True)

    The options are the fields of :class:`AugmentConfig` (``min_scale``,
    ``blur_p``, ``rotate``, ...). blur_p=None picks the paper's defaults: blur (p=0.5) for images over 64 px and
    none for small images, where a blur of sigma up to 2 px wipes out the content
    (the paper's CIFAR recipe has no blur). vflip and rotate ("90" or "free") are
    for data with no canonical orientation, such as satellite or microscopy images.

    channels: C, by default the length of ``mean`` or 3. ``mean`` and ``std`` default
    to ImageNet's for RGB; for other C pass the data's (one value per channel).
    For C != 3 the RGB-only steps are off and ``notes`` says so in one line:

    >>> Augment(size=16, mean=(0.5,) * 4, std=(0.25,) * 4).notes
    ['4 channels: saturation and hue jitter, grayscale and solarization are for RGB and are off; crop, flips, rotation, blur and brightness/contrast jitter (per channel) apply']
    """

    def __init__(
        self,
        size: int = 224,
        *,
        channels: int | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        seed: int | None = None,
        **options,
    ):
        if size < 1:
            raise ConfigError(f"must be positive, got {size}", key="size")
        config = AugmentConfig(**options)
        validate(config)
        self.options = config.resolved(size)
        for f in dataclasses.fields(self.options):  # self.min_scale, self.blur_p, ...
            setattr(self, f.name, getattr(self.options, f.name))
        self.size = size
        # SimCLR's kernel: about a tenth of the image side, odd.
        self.blur_kernel = max(3, 2 * int(0.05 * size) + 1)
        self.channels = channels = channels if channels is not None else (len(mean) if mean is not None else 3)
        if channels < 1:
            raise ConfigError(f"must be at least 1, got {channels}", key="channels")
        self.mean, self.std = _per_channel(mean, IMAGENET_MEAN, "mean", channels), _per_channel(std, IMAGENET_STD, "std", channels)
        if min(self.std) <= 0:
            raise ConfigError(f"must be positive for every channel, got {list(self.std)}", key="std")
        self.notes: list[str] = [n for n in [channel_note(channels)] if n]  # lines for the training log
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._grids: dict[torch.device, torch.Tensor] = {}

    # -- randomness -----------------------------------------------------------------

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None  # torch's global RNG, seeded by the caller (Lightning's seed_everything)
        if device not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[device] = g
        return self._generators[device]

    def sample(self, batch: int, height: int, width: int, device: torch.device | str = "cpu") -> ViewParams:
        """Draw the parameters of ``batch`` views of (height x width) images."""
        device = torch.device(device)
        g = self._generator(device)

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g, device=device) * (hi - lo) + lo

        def coin(p: float) -> torch.Tensor:
            return torch.rand(batch, generator=g, device=device) < p

        B, tries = batch, 10
        # Random resized crop, torchvision's rule drawn for all samples at once: up to
        # ten (area, aspect) tries, keep the first that fits inside the image.
        area = uniform(self.min_scale, self.max_scale, B, tries) * (height * width)
        log_r = uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), B, tries)
        w = torch.sqrt(area * torch.exp(log_r))
        h = torch.sqrt(area / torch.exp(log_r))
        fits = (w <= width) & (h <= height)
        first = torch.argmax(fits.int(), dim=1, keepdim=True)  # (B, 1) first fitting try
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        # torchvision's fallback when no try fits: the whole image, ratio clamped.
        whole_w = min(float(width), height * self.ratio[1])
        whole_h = min(float(height), width / self.ratio[0])
        any_fit = fits.any(dim=1)
        w = torch.where(any_fit, w, torch.full_like(w, whole_w))
        h = torch.where(any_fit, h, torch.full_like(h, whole_h))
        cx = torch.rand(B, generator=g, device=device) * (width - w) + w / 2
        cy = torch.rand(B, generator=g, device=device) * (height - h) + h / 2
        crop = torch.stack([cx / width, cy / height, w / width, h / height], dim=1)

        if self.rotate == "90":
            angle = torch.randint(0, 4, (B,), generator=g, device=device).float() * (math.pi / 2)
        elif self.rotate == "free":
            angle = uniform(-math.pi, math.pi, B)
        else:
            angle = torch.zeros(B, device=device)

        jitter = coin(self.jitter_p)
        one = torch.ones(B, device=device)
        rgb = self.channels == 3
        brightness, contrast, saturation, hue = self._jitter_factors(jitter, uniform, one)
        blur = coin(self.blur_p)
        blur_sigma = torch.where(blur, uniform(*self.blur_sigma, B), 0 * one)
        return ViewParams(
            crop=crop,
            hflip=coin(self.hflip_p),
            vflip=coin(self.vflip_p),
            angle=angle,
            jitter=jitter,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
            gray=coin(self.grayscale_p) if rgb else one < 0,
            blur_sigma=blur_sigma,
            solarize=coin(self.solarize_p) if rgb else one < 0,
        )

    def _jitter_factors(self, jitter: torch.Tensor, uniform, one: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Brightness, contrast, saturation and hue of the colour jitter; identity where ``jitter`` is off.

        For C != 3 channels brightness and contrast get one factor per channel (B, C),
        and saturation and hue, which are for RGB, stay at the identity.
        """
        B = len(jitter)
        if self.channels == 3:
            brightness = torch.where(jitter, uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, B), one)
            contrast = torch.where(jitter, uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, B), one)
            saturation = torch.where(jitter, uniform(max(0.0, 1 - self.saturation), 1 + self.saturation, B), one)
            hue = torch.where(jitter, uniform(-self.hue, self.hue, B), 0 * one)
            return brightness, contrast, saturation, hue
        C, on = self.channels, jitter[:, None]
        brightness = torch.where(on, uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, B, C), 1.0)
        contrast = torch.where(on, uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, B, C), 1.0)
        return brightness, contrast, one, 0 * one

    # -- pixels -----------------------------------------------------------------------

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Views of a (B, C, H, W) batch; call twice for x1 and x2."""
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected a (B, {self.channels}, H, W) batch, got shape {tuple(images.shape)}")
        B, _, H, W = images.shape
        return self.apply(images, self.sample(B, H, W, images.device))

    def apply(self, images: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """Render views of ``images`` with the given parameters (deterministic)."""
        x = self._resample(images.float(), params)  # (B, C, size, size), still in the input's range
        # Brightness also brings integer values to [0, 1]: one pass over the batch, not two.
        scale = {torch.uint8: 1 / 255, torch.uint16: 1 / 65535}.get(images.dtype, 1.0)
        x = adjust_brightness(x, params.brightness * scale)
        if self.channels != 3:  # contrast about each channel's own mean; the rest is for RGB
            x = adjust_contrast_per_channel(x, params.contrast)
            if self.blur_p > 0:
                x = gaussian_blur(x, params.blur_sigma, self.blur_kernel)
            return self._normalise(x)
        x = adjust_contrast(x, params.contrast)
        x = adjust_saturation(x, params.saturation)
        if self.hue > 0:
            x = where_samples(params.jitter, lambda i: shift_hue(x[i], params.hue[i]), x)
        if self.grayscale_p > 0:
            x = where_samples(params.gray, lambda i: grayscale(x[i]).expand(-1, 3, -1, -1), x)
        if self.blur_p > 0:
            x = gaussian_blur(x, params.blur_sigma, self.blur_kernel)
        if self.solarize_p > 0:
            x = torch.where(params.solarize[:, None, None, None] & (x >= 0.5), 1.0 - x, x)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean_std(x.device)
        return x.sub_(mean).div_(std)

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Made once per device: torch.tensor(..., device="cuda") on every call would be
        # a pageable host-to-device copy, which can stall the host on the GPU each step.
        if device not in self._constants:
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            self._constants[device] = (mean, std)
        return self._constants[device]

    def _base_grid(self, device: torch.device) -> torch.Tensor:
        """(1, size*size, 3): each output pixel's (x, y, 1) in grid_sample's [-1, 1] units."""
        if device not in self._grids:
            identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=device)
            xy = F.affine_grid(identity, [1, 3, self.size, self.size], align_corners=False)
            self._grids[device] = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1).view(1, -1, 3)
        return self._grids[device]

    def _resample(self, x: torch.Tensor, params: ViewParams) -> torch.Tensor:
        # One affine map per sample from output coordinates to input coordinates
        # (both in grid_sample's [-1, 1] units): rotate, flip, scale to the crop size,
        # move to the crop centre.
        cx, cy, cw, ch = params.crop.unbind(1)
        sx = torch.where(params.hflip, -cw, cw)
        sy = torch.where(params.vflip, -ch, ch)
        cos, sin = torch.cos(params.angle), torch.sin(params.angle)
        theta = torch.stack(
            [
                torch.stack([sx * cos, -sx * sin, 2 * cx - 1], dim=1),
                torch.stack([sy * sin, sy * cos, 2 * cy - 1], dim=1),
            ],
            dim=1,
        )  # (B, 2, 3)
        # affine_grid rebuilds the output's base grid on every call; on a CPU that took as
        # long as the resampling itself. The base grid is fixed, so it is made once.
        grid = torch.matmul(self._base_grid(x.device), theta.transpose(1, 2)).view(-1, self.size, self.size, 2)
        padding = "reflection" if self.rotate == "free" else "border"
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _per_channel(values, rgb_default: tuple[float, ...], key: str, channels: int) -> tuple[float, ...]:
    """``mean`` or ``std`` as one float per channel; ImageNet's by default for RGB, required otherwise."""
    if values is None:
        if channels != 3:
            raise ConfigError(f"give one value per channel for {channels}-channel images (ImageNet's {key} is for RGB)", key=key)
        return rgb_default
    values = tuple(float(v) for v in values)
    if len(values) != channels:
        raise ConfigError(f"needs one value per channel: {channels}, got {len(values)}", key=key)
    return values


# The names tests/test_augment.py imports these two by (they were defined here).
_shift_hue, _where_samples = shift_hue, where_samples
