"""Batched photometric augmentation on the training device, from colour parameters drawn on the CPU.

docs/algorithm.md section 1 (`--augment_on device`).

The loader draws each view's `ColourParams` with `croc_utils.transforms.sample_colour_params` (same distributions, same
random stream as the faithful PIL path), turns them into a fixed-length float tensor with
`croc_utils.colour.colour_params_tensor`, and returns them with the uint8 crop; torch's default collate stacks them into
(B, PARAMS_LENGTH). `apply_photometric` then runs, in DINO's order, colour jitter (each image's four ops in its own
drawn order), grayscale, Gaussian blur, solarisation and normalisation on the whole batch at once: no loop over images,
no host synchronisation (every per-image choice is a `torch.where` or a blend with factor exactly 0 or 1, every shape is
fixed), so it runs on any device, and `torch.compile(apply_photometric, fullgraph=True)` compiles it (checked on CPU).

Semantics: each op equals torchvision.transforms.v2.functional's tensor op on float images in [0, 1] with that image's
factor (adjust_brightness / adjust_contrast / adjust_saturation / adjust_hue, rgb_to_grayscale with 3 channels,
gaussian_blur, solarize), to float32 rounding (tests/test_photometric.py states the tolerances). Differences from the
PIL path (`transforms.apply_colour`), by design:
- no rounding to uint8 between ops (PIL quantises after every op, and its hue op goes through 8-bit HSV);
- blur is a true Gaussian with sigma = the drawn radius, truncated to a fixed BLUR_KERNEL_SIZE = 13 taps
  (croc_utils.colour derives it from the largest drawn radius: 2 * ceil(3 * 2.0) + 1, i.e. +-3 sigma of the largest
  sigma; torchvision's tensor blur needs an explicit size) and
  renormalised, reflect padding, exactly torchvision's `gaussian_blur(img, [13, 13], [sigma, sigma])`. PIL's
  GaussianBlur(radius), used by DINO and the CPU path, approximates a Gaussian of standard deviation `radius` with
  three extended box filters;
- solarisation inverts x >= 128/255, which on the uint8 grid is PIL's `solarize(threshold=128)` (values >= 128
  inverted), and torchvision's float `solarize(img, 128/255)`.

Why hand-written (checked with torchvision 0.29 and kornia 0.9.0): torchvision's functional ops take one Python float
factor per call (a loop over images) and v2.ColorJitter draws its own parameters, one set and one order per call.
kornia's ColorJitter accepts per-image factors, but one `order` permutation for the whole batch, and its random-order
path calls `order.tolist()` and a Python `(factor != neutral).any()` per op (host syncs); its contrast and saturation
use 0.299 instead of torchvision's 0.2989 red weight (measured max |diff| 1.9e-5 against torchvision on [0, 1]
images). Its brightness, hue, solarize and per-sample-sigma gaussian_blur2d do match torchvision (<= 1.7e-6), but one
blur is not worth a dependency.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from croc_utils.colour import (
    BLUR_KERNEL_SIZE,
    CONTRAST,
    HUE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SATURATION,
    PhotometricParams,
    unpack_colour_params,
)

SOLARIZE_THRESHOLD = 128 / 255
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def apply_photometric(
    images: torch.Tensor,
    params: torch.Tensor | PhotometricParams,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    kernel_size: int = BLUR_KERNEL_SIZE,
) -> torch.Tensor:
    """Colour jitter, grayscale, Gaussian blur, solarisation and normalisation of a batch, per-image parameters.

    Args:
        images: (B, 3, H, W) uint8 (0..255) or float in [0, 1], on any device; H, W > kernel_size // 2.
        params: (B, PARAMS_LENGTH) rows from `colour_params_tensor` / `pack_colour_params` (moved to the images'
            device if needed), or their `unpack_colour_params` form.
        mean, std: per-channel normalisation.
        kernel_size: odd blur kernel size (taps per direction).
    Returns:
        (B, 3, H, W) float32, normalised. Computed in float32 even inside an autocast region.
    """
    _check_inputs(images, params, kernel_size)
    if isinstance(params, torch.Tensor):
        params = unpack_colour_params(params.to(images.device, non_blocking=True))
    with _autocast_off(images.device):
        x = images.to(torch.float32, copy=True) if images.is_floating_point() else images.float().mul_(1.0 / 255)
        # Without jitter an image must stay untouched, and the HSV round trip of a zero hue shift is not exact.
        x = torch.where(_per_image(params.jitter), colour_jitter(x, params.factors, params.order), x)
        x = grayscale_where(x, params.grayscale)
        x = torch.where(_per_image(params.blur), gaussian_blur(x, params.sigma, kernel_size), x)
        x = solarize(x, params.solarize)
        # Python scalars, not a tensor built from a list: that would be a blocking host-to-device copy per call.
        for channel in range(3):
            x[:, channel].sub_(mean[channel]).div_(std[channel])
        return x


def _check_inputs(images: torch.Tensor, params, kernel_size: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"apply_photometric: images must be (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"apply_photometric: images must be uint8 or float in [0, 1], got {images.dtype}")
    rows = params.shape[0] if isinstance(params, torch.Tensor) else params.jitter.shape[0]
    if rows != images.shape[0]:
        raise ValueError(f"apply_photometric: {rows} parameter rows for {images.shape[0]} images")
    if kernel_size % 2 == 0 or kernel_size < 1 or min(images.shape[-2:]) <= kernel_size // 2:
        raise ValueError(f"apply_photometric: kernel_size {kernel_size} must be odd with kernel_size // 2 < H, W")


def _autocast_off(device: torch.device):
    """Autocast would run the blur convolution in half precision; the augmentation stays float32."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _per_image(values: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast a per-image value over (B, C, H, W)."""
    return values.view(-1, 1, 1, 1)


def colour_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue, each image in its own order (torchvision ColorJitter semantics).

    Args:
        x: (B, 3, H, W) float in [0, 1]; factors: (B, 4) as `PhotometricParams.factors`; order: (B, 4) long, each
            row a permutation of 0..3.
    Returns:
        (B, 3, H, W): every image with its four ops applied in its order.

    Each image's order is (blends before hue) hue (blends after hue), where brightness, contrast and saturation are
    blends with a per-image target (0, the mean gray level, the gray image). So the batch runs the blends of
    positions 0-2 that come before each image's hue, one hue shift for all, then the blends of positions 1-3 that
    come after it: six blend steps and one hue shift instead of evaluating all four ops at all four positions. A
    blend step an image skips gets factor 1, which is exactly the identity (x * 1 + target * 0).
    """
    hue_at = (order == HUE).long().argmax(dim=1)  # (B,) position of each image's hue shift
    for position in range(3):
        x = _blend_step(x, factors, order[:, position], active=hue_at > position)
    x = adjust_hue(x, factors[:, HUE])
    for position in range(1, 4):
        x = _blend_step(x, factors, order[:, position], active=hue_at < position)
    return x


def _blend_step(x: torch.Tensor, factors: torch.Tensor, op: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """One jitter position for the whole batch: op (B,) long, active (B,) bool; inactive or hue images unchanged."""
    factor = factors.gather(1, op[:, None]).squeeze(1)  # (B,) this step's factor
    factor = torch.where(active & (op != HUE), factor, torch.ones_like(factor))
    gray = _luma(x)  # (B, 1, H, W)
    # Exclusive 0/1 masks select the target exactly: gray image, mean gray level, or 0 (brightness, and hue).
    is_saturation, is_contrast = _per_image(op == SATURATION), _per_image(op == CONTRAST)
    target = gray * is_saturation + gray.mean(dim=(1, 2, 3), keepdim=True) * is_contrast
    return _blend(x, target, _per_image(factor))


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) with torchvision's weights and operation order."""
    r, g, b = x.unbind(dim=1)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: torch.Tensor, target: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * target, clamped to [0, 1]; target and factor broadcast against x (B, 3, H, W)."""
    return (x * factor + target * (1 - factor)).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1], factor (B,) -> x * factor clamped to [0, 1]."""
    return _blend(x, torch.zeros((), dtype=x.dtype, device=x.device), _per_image(factor))


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1], factor (B,) -> blend with each image's mean gray level."""
    return _blend(x, _luma(x).mean(dim=(1, 2, 3), keepdim=True), _per_image(factor))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1], factor (B,) -> blend with the gray image."""
    return _blend(x, _luma(x), _per_image(factor))


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1], factor (B,) in [-0.5, 0.5] -> hue rotated by `factor` turns, as torchvision.

    The hue is PIL's / torchvision's (same formulas and masks). Back to RGB, a shift in the HSV hexcone keeps each
    pixel's max and min and moves the channels along the hexagon: channel n = max - chroma * clamp(min(k, 4 - k), 0,
    1) with k = (n + 6 h) mod 6, n = 5, 3, 1 for r, g, b. That closed form equals torchvision's sector table (v, p,
    q, t) to float rounding and needs no per-pixel gather (slow on CPU).
    """
    r, g, b = x.unbind(dim=1)  # each (B, H, W)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    flat = chroma == 0  # gray pixels: every difference below is 0, so their hue is 0, without 0 / 0
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / (chroma + flat).unsqueeze(1)).unbind(dim=1)
    max_is_r = maxc == r
    max_is_g = (maxc == g) & ~max_is_r
    max_is_b = ~(max_is_r | max_is_g)
    hue = (bc - gc) * max_is_r + (2.0 + rc - bc) * max_is_g + (4.0 + gc - rc) * max_is_b  # exclusive masks
    # Multiply by the float 1/6 (not divide by 6) for the same rounding as torchvision.
    hue = hue.mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    hue6 = (hue + factor.view(-1, 1, 1)).remainder_(1.0).mul_(6.0)
    sector = hue6.floor()
    frac = hue6 - sector  # exact
    channels = []
    for n in (5, 3, 1):
        # k = j + frac with an exact integer j: the weight is frac, 1, 1, 1 - frac, 0, 0 for j = 0..5, each rounded
        # once, as torchvision's p, q, t (adding n to frac in float would cost ~5e-7).
        j = (sector + n).remainder_(6.0)
        weight = torch.minimum(j + frac, (4.0 - j).sub_(frac)).clamp_(0.0, 1.0)
        channels.append(maxc - chroma * weight)
    return torch.stack(channels, dim=1)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W) gray, torchvision's weights, repeated over 3 channels."""
    return _luma(x).expand_as(x)


def grayscale_where(x: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    """Grayscale the images whose flag (B,) is set: a blend with the gray image, factor 0 (exactly the gray image,
    as x * 0 + gray * 1) or 1 (exactly x)."""
    return _blend(x, _luma(x), _per_image((~flag).to(x.dtype)))


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """sigma (B,) > 0 -> (B, kernel_size) normalised 1-D Gaussian kernels, torchvision's formula."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    offsets = torch.linspace(-lim, lim, steps=kernel_size, dtype=sigma.dtype, device=sigma.device)  # taps / sqrt(2)
    return torch.softmax((offsets / sigma[:, None]).pow(2).neg(), dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int = BLUR_KERNEL_SIZE) -> torch.Tensor:
    """Per-image Gaussian blur: x (B, C, H, W), sigma (B,) -> (B, C, H, W); reflect padding, as torchvision.

    Separable: one grouped convolution along rows then one along columns, one group per (image, channel). Padding
    one axis commutes with filtering the other, so this equals torchvision's 2-D kernel on a 2-D reflect padding.
    Images with sigma <= 0 get a harmless sigma of 1 (the caller selects them out).
    """
    batch, channels, height, width = x.shape
    half = kernel_size // 2
    kernels = gaussian_kernels(torch.where(sigma > 0, sigma, torch.ones_like(sigma)), kernel_size)  # (B, K)
    weight = kernels.to(x.dtype).repeat_interleave(channels, dim=0)  # (B*C, K), image-major like x
    y = x.reshape(1, batch * channels, height, width)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), weight.view(-1, 1, 1, kernel_size), groups=y.shape[1])
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), weight.view(-1, 1, kernel_size, 1), groups=y.shape[1])
    return y.view(batch, channels, height, width)


def solarize(x: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
    """Invert values >= 128/255 of the images whose flag (B,) is set (all if None): PIL's solarize(threshold=128) on
    the uint8 grid, torchvision's float solarize(img, 128 / 255)."""
    invert = x >= SOLARIZE_THRESHOLD
    return torch.where(invert if flag is None else invert & _per_image(flag), 1.0 - x, x)
