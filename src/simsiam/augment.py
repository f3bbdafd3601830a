"""SimSiam's view augmentations, batched: one call per batch, random parameters per sample.

The recipe is SimCLR's as the paper gives it (section 4 and appendix A): random
resized crop (scale 0.2-1), horizontal flip, color jitter (0.4, 0.4, 0.4, 0.1)
with p=0.8, grayscale with p=0.2, Gaussian blur, and optional solarization.
Every step is tensor arithmetic on the whole batch, so the same code runs on CPU
tensors and on CUDA tensors with no Python call per image:

- crop, flips and rotation are folded into one affine matrix per sample and
  applied by a single ``grid_sample`` straight to the output size; the crop box is
  torchvision's (whole pixels), and sampling stays inside it, as a crop then resize does;
- jitter, grayscale and solarization are broadcast arithmetic with per-sample
  factors (a sample that skips a step gets the identity factor);
- blur is separable, with one kernel per sample (a grouped convolution on a GPU,
  sums of shifted copies of the blurred samples only on a CPU).

On a CPU a batch of photo-sized views goes through a few MB at a time, each group
from resampling to normalisation while it is in the cache, the groups shared out
to threads that each run their operations alone (``Augment._render_in_groups``
says why): at 224 px the views are 3x what whole-batch steps made (benchmarks/views.py).

One deliberate difference from torchvision's ColorJitter: brightness, contrast,
saturation and hue are applied in that fixed order rather than a random order
per image, which keeps the batch in one pass.

Images of C != 3 channels (one band, or a multispectral stack): saturation and hue
jitter, grayscale and solarization are defined for RGB and are off (``Augment.notes``
says so); crop, flips, rotation and blur apply unchanged, and brightness and
contrast jitter apply per channel, each band with its own factor and its own mean.

The pixel steps (brightness, contrast, saturation, hue, grayscale, blur; below
:class:`Augment`) each take a whole (B, C, H, W) float batch in [0, 1] with
per-sample factors. They stay in this module, past 600 lines: each is written for
the way :class:`Augment` calls it (in place, on slices of a sorted group, torch.where
on a GPU), and a reader of one needs the other. The colour steps work in place on the resampled batch (a fresh tensor that
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
from simsiam.system import torch_workers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GROUP_BYTES = 8 << 20  # a CPU renders views in groups of about this many bytes (Augment._render_in_groups)


def channel_note(channels: int) -> str | None:
    """The one line that says which augmentations C-channel images get (None for RGB)."""
    if channels == 3:
        return None
    return (
        f"{channels} channel{'s' if channels > 1 else ''}: saturation and hue jitter, grayscale and solarization are for RGB and are off; "
        "crop, flips, rotation, blur and brightness/contrast jitter (per channel) apply"
    )


class PerSample:
    """A dataclass of tensors whose first dimension is the sample."""

    def take(self, index: torch.Tensor | slice):
        """The same fields for the samples ``index`` picks (an index tensor or a slice)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


@dataclass
class ViewParams(PerSample):
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
        # ten (area, aspect) tries of a box of whole pixels, keep the first that fits.
        area = uniform(self.min_scale, self.max_scale, B, tries) * (height * width)
        log_r = uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), B, tries)
        w = torch.round(torch.sqrt(area * torch.exp(log_r)))
        h = torch.round(torch.sqrt(area / torch.exp(log_r)))
        fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
        first = torch.argmax(fits.int(), dim=1, keepdim=True)  # (B, 1) first fitting try
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        # torchvision's fallback when no try fits: the whole image, its ratio clamped, centred.
        whole_w = float(min(width, round(height * self.ratio[1])))
        whole_h = float(min(height, round(width / self.ratio[0])))
        any_fit = fits.any(dim=1)
        w = torch.where(any_fit, w, torch.full_like(w, whole_w))
        h = torch.where(any_fit, h, torch.full_like(h, whole_h))
        x0 = torch.floor(torch.rand(B, generator=g, device=device) * (width - w + 1))
        y0 = torch.floor(torch.rand(B, generator=g, device=device) * (height - h + 1))
        x0 = torch.where(any_fit, x0, torch.floor((width - w) / 2))
        y0 = torch.where(any_fit, y0, torch.floor((height - h) / 2))
        cx, cy = x0 + w / 2, y0 + h / 2
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

    def __call__(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Views of a (B, C, H, W) batch; call twice for x1 and x2."""
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected a (B, {self.channels}, H, W) batch, got shape {tuple(images.shape)}")
        B, _, H, W = images.shape
        return self.apply(images, self.sample(B, H, W, images.device), out=out)

    def apply(self, images: torch.Tensor, params: ViewParams, out: torch.Tensor | None = None) -> torch.Tensor:
        """Render views of ``images`` with the given parameters (deterministic).

        ``out``: on a CPU, a contiguous (B, C, size, size) float32 tensor to write the
        views into and return, such as the previous step's views once they are no longer
        needed. Fresh memory costs its first touch: at 224 px that was a tenth of the
        time for the views. Elsewhere it is ignored.
        """
        steps = self._steps(params, images)
        if images.device.type != "cpu" or torch.compiler.is_compiling():
            return self._normalise(self._render(images, steps))
        return self._render_in_groups(images, steps, out)

    def _steps(self, params: ViewParams, images: torch.Tensor) -> Steps:
        """What the pixel steps need of each sample, worked out once for the batch."""
        H, W = images.shape[2], images.shape[3]
        cx, cy, cw, ch = params.crop.unbind(1)
        sx = torch.where(params.hflip, -cw, cw)
        sy = torch.where(params.vflip, -ch, ch)
        cos, sin = torch.cos(params.angle), torch.sin(params.angle)
        # Brightness also brings integer values to [0, 1]: one pass over the pixels, not two.
        scale = {torch.uint8: 1 / 255, torch.uint16: 1 / 65535}.get(images.dtype, 1.0)
        half = self.blur_kernel // 2
        # The centres of the box's outermost pixels, in grid_sample's units.
        limits = torch.stack([2 * cx - cw + 1 / W, 2 * cx + cw - 1 / W, 2 * cy - ch + 1 / H, 2 * cy + ch - 1 / H], 1) - 1
        return Steps(
            affine=torch.stack([sx * cos, -sx * sin, 2 * cx - 1, sy * sin, sy * cos, 2 * cy - 1], dim=1),
            limits=limits,
            brightness=params.brightness * scale,
            contrast=params.contrast,
            saturation=params.saturation,
            hue=params.hue,
            jitter=params.jitter,
            gray=params.gray,
            blur=params.blur_sigma > 0,
            blur_taps=gaussian_taps(params.blur_sigma, half),
            solarize=params.solarize,
        )

    def _render_in_groups(self, images: torch.Tensor, steps: Steps, out: torch.Tensor | None) -> torch.Tensor:
        # On a CPU every step over a whole batch is a pass through main memory (a batch of
        # 256 views at 224 px is 154 MB of floats), and at photo sizes those passes were
        # most of the time. So the batch goes through in groups of a few MB, each from
        # resampling to normalisation while it sits in the cache. The samples are taken in
        # the order of their coins (jitter, grayscale, then the blur's reach): in a group,
        # the samples a step applies to sit next to each other and the step works on slices
        # of them (in_place_on_samples), and the blurred ones need kernels of about the same
        # length. Each sample keeps its own parameters: the order changes nothing else.
        B, C, H, W = images.shape
        shape = (B, C, self.size, self.size)
        if out is None:
            out = torch.empty(shape, dtype=torch.float32)
        elif out.shape != shape or out.dtype != torch.float32 or not out.is_contiguous():
            raise ValueError(f"out: expected a contiguous float32 tensor of shape {shape}, got {out.dtype} {tuple(out.shape)}")
        # When there are several groups, they are shared out to as many threads as torch has
        # for this one (the training's FairShare lowers that on a busy machine), each running
        # its torch operations alone: no OpenMP barrier after every operation, which a thread
        # the scheduler has set aside holds up. One group (small images) stays on this thread
        # and its OpenMP team: there the threads' turns at the GIL would cost more than the
        # operations.
        lanes = torch.get_num_threads()
        per_sample = 4 * (C * H * W + (C + 2) * self.size**2)  # its source, grid and view in float32
        group = max(1, GROUP_BYTES // per_sample)
        shared = lanes > 1 and B > group
        if shared:
            group = min(group, math.ceil(B / lanes))
        order = torch.argsort((steps.blur_taps > 0).sum(dim=1), stable=True)  # by kernel length
        coins = (2 * steps.jitter.int() + steps.gray.int())[order]
        order = order[torch.argsort(coins, stable=True)]
        groups = iter(order.split(group))

        def lane() -> None:
            for index in groups:  # each lane takes the next group when it is done with one
                out.index_copy_(0, index, self._normalise(self._render(images.index_select(0, index), steps.take(index))))

        if not shared:
            lane()
        else:
            for done in [torch_workers().submit(lane) for _ in range(lanes)]:
                done.result()
        return out

    def _render(self, images: torch.Tensor, steps: Steps) -> torch.Tensor:
        """The views of a batch (or a group of it) before normalisation, every step over all of its samples."""
        x = self._resample(images.float(), steps)  # (B, C, size, size), still in the input's range
        x = adjust_brightness(x, steps.brightness)
        if self.channels != 3:  # contrast about each channel's own mean; the rest is for RGB
            x = adjust_contrast_per_channel(x, steps.contrast)
            return blur_samples(x, steps.blur, steps.blur_taps) if self.blur_p > 0 else x
        x = adjust_contrast(x, steps.contrast)
        x = adjust_saturation(x, steps.saturation)
        if self.hue > 0:
            x = in_place_on_samples(steps.jitter, lambda i, into=None: shift_hue(x[i], steps.hue[i], out=into), x)
        if self.grayscale_p > 0:
            x = where_samples(steps.gray, lambda i: grayscale(x[i]).expand(-1, 3, -1, -1), x)
        if self.blur_p > 0:
            x = blur_samples(x, steps.blur, steps.blur_taps)
        if self.solarize_p > 0:
            x = torch.where(steps.solarize[:, None, None, None] & (x >= 0.5), 1.0 - x, x)
        return x

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

    def _axis(self, device: torch.device) -> torch.Tensor:
        """(size,): the output pixels' centres in grid_sample's [-1, 1] units (align_corners=False)."""
        if device not in self._grids:
            self._grids[device] = (torch.arange(self.size, device=device, dtype=torch.float32) * 2 + 1) / self.size - 1
        return self._grids[device]

    def _resample(self, x: torch.Tensor, steps: Steps) -> torch.Tensor:
        """The crop, flip and rotation of every sample in one grid_sample."""
        # One affine map per sample from output coordinates (u along the width, v along
        # the height) to input coordinates, both in grid_sample's [-1, 1] units (rotate,
        # flip, scale to the crop size, move to the crop centre): x_in = a u + b v + c,
        # y_in = d u + e v + f. Each is a column term plus a row term, broadcast into the
        # grid (affine_grid's matrix product took as long as the resampling on a CPU).
        u = self._axis(x.device)
        a, b, c, d, e, f = (t[:, None, None] for t in steps.affine.unbind(1))
        grid = torch.empty((len(x), self.size, self.size, 2), device=x.device)
        torch.add(a * u[None, None, :], b * u[None, :, None] + c, out=grid[..., 0])
        torch.add(d * u[None, None, :], e * u[None, :, None] + f, out=grid[..., 1])
        if self.rotate != "free":
            # Inside the crop box, as a resize of the cropped image is (torchvision's crop,
            # then resize): the outer half pixel repeats the box's edge, not its neighbour.
            lo_x, hi_x, lo_y, hi_y = (t[:, None, None] for t in steps.limits.unbind(1))
            grid[..., 0].clamp_(lo_x, hi_x)
            grid[..., 1].clamp_(lo_y, hi_y)
        padding = "reflection" if self.rotate == "free" else "border"
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


@dataclass
class Steps(PerSample):
    """What the pixel steps need of each sample of a batch, from its :class:`ViewParams`."""

    affine: torch.Tensor  # (B, 6): output to input coordinates, x = a u + b v + c, y = d u + e v + f
    limits: torch.Tensor  # (B, 4): the crop box's outermost pixel centres, x and y, in grid_sample's units
    brightness: torch.Tensor  # (B,) or (B, C): the factor, times 1/255 (1/65535) for integer pixels
    contrast: torch.Tensor  # (B,) or (B, C)
    saturation: torch.Tensor  # (B,)
    hue: torch.Tensor  # (B,)
    jitter: torch.Tensor  # (B,) bool
    gray: torch.Tensor  # (B,) bool
    blur: torch.Tensor  # (B,) bool
    blur_taps: torch.Tensor  # (B, half + 1): the kernel from its centre out, zero past four sigmas
    solarize: torch.Tensor  # (B,) bool


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


# -- the pixel steps ---------------------------------------------------------------

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 as torchvision rounds it (its rgb_to_grayscale)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    # Python-scalar weights: a weights tensor made here would be a host-to-device copy
    # on every call when x is on a GPU.
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)  # (B, 1, H, W)


def where_samples(mask: torch.Tensor, fn, x: torch.Tensor) -> torch.Tensor:
    """x with ``fn`` applied to the samples where ``mask`` is set; fn takes a sample index.

    On a CPU only the selected samples are computed (a hue shift costs as much as
    the rest of the pipeline), one run of consecutive samples at a time: fn gets a
    slice, so its inputs are views, not copies. On a GPU every sample is computed and
    selected with torch.where, since picking the samples out would make the host
    wait for the GPU. Under torch.compile it is torch.where too: one fused graph with
    no shapes that depend on the data.
    """
    if x.device.type == "cuda" or torch.compiler.is_compiling():
        return torch.where(mask[:, None, None, None], fn(slice(None)), x)
    for run in runs(mask):
        x[run] = fn(run)
    return x


def in_place_on_samples(mask: torch.Tensor, fn, x: torch.Tensor) -> torch.Tensor:
    """As :func:`where_samples`, for an ``fn(index, into)`` that can write its result into ``into``.

    On a CPU each run of samples is rewritten where it lies (no copy of the result);
    elsewhere it is :func:`where_samples`.
    """
    if x.device.type == "cuda" or torch.compiler.is_compiling():
        return where_samples(mask, fn, x)
    for run in runs(mask):
        fn(run, x[run])
    return x


def runs(mask: torch.Tensor) -> list[slice]:
    """The runs of consecutive set entries of a 1-D bool mask, as slices.

    >>> runs(torch.tensor([True, True, False, True]))
    [slice(0, 2, None), slice(3, 4, None)]
    """
    found, start = [], None
    for i, on in enumerate(mask.tolist() + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            found.append(slice(start, i))
            start = None
    return found


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


def shift_hue(x: torch.Tensor, shift: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate hue by ``shift`` turns per sample (at most half a turn), through HSV as torchvision does.

    A hue rotation keeps each pixel's max v and chroma c; only the hue angle moves.
    Matches torchvision's adjust_hue to float rounding (tests/test_augment.py).
    ``out`` may be ``x`` itself: every read of x comes before the first write.
    """
    r, g, b = x.unbind(1)  # (B, H, W) each
    # Elementwise max and min of the three channel planes: about 5x faster on a CPU
    # than a reduction over the (strided) channel dimension.
    v = torch.maximum(torch.maximum(r, g), b)
    low = torch.minimum(torch.minimum(r, g), b)
    c = v - low  # chroma
    sector = torch.where(v == r, g - b, torch.where(v == g, (b - r).add_(c, alpha=2), (r - g).add_(c, alpha=4)))
    # The hue in sixths of a turn, shifted and wrapped into [0, 6): it was in [-1, 5).
    h6 = sector.div_(c.clamp_min(1e-8)).add_(6 * shift[:, None, None] + 6).fmod_(6)
    # HSV -> RGB without branches: channel n is low + c * clamp(d - 1, 0, 1), where d is
    # the distance on the hue circle (length 6) from h6 + n to 2, with n = 5, 3, 1 for R,
    # G, B; for h6 in [0, 6) that distance is | |h6 + n - 5| - 3 |. Written as
    # (low - c) + c * clamp(d, 1, 2), which is one operation fewer per channel.
    out = torch.empty_like(x) if out is None else out
    base = low.sub_(c)
    ramp = torch.empty_like(h6)  # one scratch plane reused by the three channels
    torch.sub(h6, 3, out=ramp).abs_().clamp_(1, 2)  # R: h6 + 0 >= 0, so the inner |.| is h6 itself
    torch.addcmul(base, c, ramp, out=out[:, 0])
    for channel, n in ((1, 3.0), (2, 1.0)):
        torch.sub(h6, 5 - n, out=ramp).abs_().sub_(3).abs_().clamp_(1, 2)
        torch.addcmul(base, c, ramp, out=out[:, channel])
    return out


def gaussian_taps(sigma: torch.Tensor, half: int) -> torch.Tensor:
    """(B, half + 1): each sample's normalised Gaussian kernel from its centre out; sigma 0 gives [1, 0, ...].

    A kernel has 2 half + 1 taps, the paper's about a tenth of the image side, and
    stops at four sigmas when that is shorter (at sigma 0.5, 5 taps of the 23 of a
    224 px view): the taps it leaves out carry under 1e-4 of the weight, and a CPU
    skips them.
    """
    offsets = torch.arange(half + 1, device=sigma.device, dtype=torch.float32)
    s = sigma.clamp_min(1e-3)[:, None]
    taps = torch.exp(-(offsets**2) / (2 * s**2)) * (offsets <= torch.ceil(4 * s))
    return taps / (2 * taps.sum(dim=1, keepdim=True) - taps[:, :1])


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (:func:`gaussian_taps`); sigma 0 leaves the sample unchanged."""
    return blur_samples(x, sigma > 0, gaussian_taps(sigma, kernel_size // 2))


def blur_samples(x: torch.Tensor, blur: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with each sample where ``blur`` is set blurred by its own kernel, ``taps`` (B, half + 1).

    On a CPU only the blurred samples are computed, in place, one run of them at a time
    as sums of shifted copies, each as long as its longest kernel: grouped convolutions
    with the whole kernel were a third of the time for the views. On a GPU every sample
    goes through one grouped convolution (a kernel of taps [1, 0, ...] leaves a sample
    as it is).
    """
    B, C, H, W = x.shape
    half = min(taps.shape[1] - 1, H - 1, W - 1)  # reflection padding needs pad < side: tiny images, shorter kernels
    if x.device.type != "cuda" and not torch.compiler.is_compiling():
        for run in runs(blur):
            reach = min(half, int((taps[run] > 0).sum(dim=1).max()) - 1)
            _blur_shifted(x[run], _shortened(taps[run], reach))
        return x
    taps = _shortened(taps, half)
    kernel = torch.cat([taps[:, 1:].flip(1), taps], dim=1).repeat_interleave(C, dim=0)  # (B*C, k): per sample and channel
    y = F.pad(x.reshape(1, B * C, H, W), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=B * C)  # along width
    y = F.conv2d(y, kernel[:, None, :, None], groups=B * C)  # along height
    return y.reshape(B, C, H, W)


def _shortened(taps: torch.Tensor, half: int) -> torch.Tensor:
    """The first half + 1 taps of each kernel; renormalised only where taps that are not zero go (tiny images)."""
    if half + 1 >= taps.shape[1]:
        return taps
    cut = taps[:, : half + 1]
    if taps.device.type != "cuda" and not torch.compiler.is_compiling() and not taps[:, half + 1 :].any():
        return cut  # only zeros went: the kernels as they were, whatever the run they are in
    return cut / (2 * cut.sum(dim=1, keepdim=True) - cut[:, :1])


def _blur_shifted(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Blur (B, C, H, W) in place along the width, then the height, as sums of shifted copies; taps (B, r + 1)."""
    half = taps.shape[1] - 1
    if half < 1:
        return x
    taps = taps[:, :, None, None, None]  # (B, r + 1, 1, 1, 1): one weight per sample and offset
    result = x
    for dim in (3, 2):
        n = x.shape[dim]
        padded = F.pad(x, (half, half, 0, 0) if dim == 3 else (0, 0, half, half), mode="reflect")
        x = torch.mul(padded.narrow(dim, half, n), taps[:, 0], out=result if dim == 2 else None)
        for j in range(1, half + 1):
            x.addcmul_(padded.narrow(dim, half + j, n), taps[:, j]).addcmul_(padded.narrow(dim, half - j, n), taps[:, j])
    return x
