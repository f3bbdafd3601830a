"""The pixel steps of the views, batched: one call per batch, one factor per sample.

Brightness, contrast, saturation, hue, grayscale and blur, each on a whole
(B, C, H, W) float batch in [0, 1] with per-sample factors (a sample that skips a
step gets the identity factor), as :class:`simsiam.augment.Augment` applies them.
The colour steps work in place on the resampled batch (a fresh tensor that
nothing else holds): on a CPU the memory traffic of temporaries is most of their cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


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
    return x.mul_(f).add_((1 - f) * grayscale(x)).clamp_(0, 1)


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
