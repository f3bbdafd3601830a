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

The pixel steps (brightness, contrast, saturation, hue, grayscale, blur; below
:class:`Augment`) each take a whole (B, C, H, W) float batch in [0, 1] with
per-sample factors. The colour steps work in place on the resampled batch (a fresh tensor that
nothing else holds): on a CPU the memory traffic of temporaries is most of their cost.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simsiam.errors import ConfigError
from simsiam.options import validate
from simsiam.settings import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        self.mean, self.std = normalization(mean, std, channels)
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
        return normalize_(x, *self._mean_std(x.device))

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


def normalization(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) as one float per channel, for pixels in [0, 1]: those given, else ImageNet's (RGB only).

    The one home of that default: the views, feature extraction and the config ask here.

    >>> normalization(None, None, 3)
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    """
    return _per_channel(mean, IMAGENET_MEAN, "mean", channels), _per_channel(std, IMAGENET_STD, "std", channels)


def normalize_(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Float pixels (B, C, H, W) in [0, 1] normalised in place, (x - mean) / std per channel; returns ``x``.

    ``mean`` and ``std``: C values, or tensors of them already on ``x``'s device
    (a loop on a GPU keeps those, so that no step copies constants from the host).
    """
    C = x.shape[1]
    mean = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, C, 1, 1)
    std = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, C, 1, 1)
    return x.sub_(mean).div_(std)


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


# -- from pixel_ops.py ------------------------------------------------------------

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 as torchvision rounds it (its rgb_to_grayscale)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    # Python-scalar weights: a weights tensor made here would be a host-to-device copy
    # on every call when x is on a GPU.
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)  # (B, 1, H, W)


def where_samples(mask: torch.Tensor, fn, x: torch.Tensor) -> torch.Tensor:
    """x with ``fn`` applied to the samples where ``mask`` is set; fn takes a sample index.

    On a CPU only the selected samples are computed (a hue shift costs as much as
    the rest of the pipeline); on a GPU every sample is computed and selected with
    torch.where, since picking the samples out (nonzero) would make the host wait
    for the GPU. Under torch.compile it is torch.where too: one fused graph with no
    shapes that depend on the data.
    """
    if x.device.type == "cuda" or torch.compiler.is_compiling():
        return torch.where(mask[:, None, None, None], fn(slice(None)), x)
    index = mask.nonzero().squeeze(1)
    if len(index):
        x[index] = fn(index)
    return x


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x.mul_(factor.view(len(factor), -1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's definition: the mean of the grayscale image, taken here from the
    # channel means (the grayscale is linear) rather than from a full grayscale image.
    r, g, b = x.mean(dim=(2, 3)).unbind(1)  # (B,) each
    mean = (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b)[:, None, None, None]  # (B, 1, 1, 1)
    f = factor[:, None, None, None]
    return x.mul_(f).add_((1 - f) * mean).clamp_(0, 1)


def adjust_contrast_per_channel(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Contrast for C-channel images: each channel blended with its own mean, with its own factor (B, C)."""
    mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1), before x changes in place
    f = factor[:, :, None, None]
    return x.mul_(f).add_((1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor[:, None, None, None]
    gray = grayscale(x)  # of x as it comes in: taken after x.mul_ below, it was f times too dark
    return x.mul_(f).add_((1 - f) * gray).clamp_(0, 1)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` turns per sample, through HSV as torchvision does.

    A hue rotation keeps each pixel's max v and chroma c; only the hue angle moves.
    Matches torchvision's adjust_hue to float rounding (tests/test_augment.py).
    """
    r, g, b = x.unbind(1)  # (B, H, W) each
    # Elementwise max and min of the three channel planes: about 5x faster on a CPU
    # than a reduction over the (strided) channel dimension.
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)  # chroma
    sector = torch.where(v == r, g - b, torch.where(v == g, (b - r).add_(c, alpha=2), (r - g).add_(c, alpha=4)))
    h6 = sector.div_(c.clamp_min(1e-8)).add_(6 * shift[:, None, None])  # hue in sixths of a turn
    # HSV -> RGB without branches: channel n is v - c*clamp(2 - d, 0, 1), where d is the
    # distance on the hue circle (length 6) from h6 + n to 2, with n = 5, 3, 1 for R, G, B.
    # fmod wraps any shift of at most half a turn: h6 + n + 1 + 6 stays positive.
    out = torch.empty_like(x)
    ramp = torch.empty_like(h6)  # one scratch plane reused by the three channels
    for channel, n in enumerate((5.0, 3.0, 1.0)):
        torch.add(h6, n + 7, out=ramp).fmod_(6).sub_(3).abs_().neg_().add_(2).clamp_(0, 1).mul_(c)
        torch.sub(v, ramp, out=out[:, channel])
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample; sigma 0 leaves the sample unchanged."""
    B, C, H, W = x.shape
    half = kernel_size // 2
    offsets = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)  # (k,)
    s = sigma.clamp_min(1e-3)[:, None]  # (B, 1)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * s**2))  # (B, k)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(C, dim=0)  # (B*C, k): one kernel per sample and channel
    pad = min(half, H - 1, W - 1)
    y = x.reshape(1, B * C, H, W)
    if pad < half:  # reflection padding needs pad < side; tiny images get a cropped kernel
        kernel = kernel[:, half - pad : half + pad + 1]
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=B * C)  # along width
    y = F.conv2d(y, kernel[:, None, :, None], groups=B * C)  # along height
    return y.reshape(B, C, H, W)
