"""Batched photometric augmentation on the training device, from colour parameters drawn on the CPU (spec section 1).

The loader draws each view's `ColourParams` with `croc_utils.transforms.sample_colour_params` (same distributions, same
random stream as the faithful PIL path), turns them into a fixed-length float tensor with `colour_params_tensor`, and
returns them with the uint8 crop; torch's default collate stacks them into (B, PARAMS_LENGTH). `apply_photometric`
then runs, in DINO's order, colour jitter (each image's four ops in its own drawn order), grayscale, Gaussian blur,
solarisation and normalisation on the whole batch at once: no loop over images, no host synchronisation (every
per-image choice is a `torch.where`, every shape is fixed), so it runs on any device and under CUDA graphs.

Semantics: each op equals torchvision.transforms.v2.functional's tensor op on float images in [0, 1] with that image's
factor (adjust_brightness / adjust_contrast / adjust_saturation / adjust_hue, rgb_to_grayscale with 3 channels,
gaussian_blur, solarize), to float32 rounding (tests/test_photometric.py states the tolerances). Differences from the
PIL path (`transforms.apply_colour`), by design:
- no rounding to uint8 between ops (PIL quantises after every op, and its hue op goes through 8-bit HSV);
- blur is a true Gaussian with sigma = the drawn radius, truncated to a fixed BLUR_KERNEL_SIZE = 13 taps
  (2 * ceil(3 * 2.0) + 1, i.e. +-3 sigma of the largest sigma; torchvision's tensor blur needs an explicit size) and
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

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from croc_utils.transforms import IMAGENET_MEAN, IMAGENET_STD, ColourParams

# Column layout of a packed row: [jitter, brightness, contrast, saturation, hue, order0..3, grayscale, sigma, solarize].
PARAMS_LENGTH = 12
IDENTITY_FACTORS = (1.0, 1.0, 1.0, 0.0)
BLUR_KERNEL_SIZE = 13  # 2 * ceil(3 * max sigma 2.0) + 1
SOLARIZE_THRESHOLD = 128 / 255
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # indices of ColourParams.jitter and of jitter_order entries


@dataclass(frozen=True)
class PhotometricParams:
    """Per-image colour operations of a batch of B images, all on one device.

    jitter (B,) bool: colour jitter applied; factors (B, 4) float32: (brightness, contrast, saturation, hue),
    identity (1, 1, 1, 0) where jitter is off; order (B, 4) long: the jitter ops' order, indices into factors;
    grayscale (B,) bool; blur (B,) bool; sigma (B,) float32: Gaussian sigma (the drawn radius), 0 where blur is off;
    solarize (B,) bool.
    """

    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor


def colour_params_tensor(params: ColourParams | None) -> torch.Tensor:
    """One view's drawn colour operations -> (PARAMS_LENGTH,) float32 row; None (no colour ops) gives the identity.

    Fixed length, so torch's default_collate stacks a batch of them into (B, PARAMS_LENGTH).
    """
    if params is None:
        return torch.tensor([0.0, *IDENTITY_FACTORS, 0, 1, 2, 3, 0, 0, 0])
    factors = IDENTITY_FACTORS if params.jitter is None else params.jitter
    sigma = 0.0 if params.blur_radius is None else params.blur_radius
    row = [params.jitter is not None, *factors, *params.jitter_order, params.grayscale, sigma, params.solarize]
    return torch.tensor([float(v) for v in row])


def pack_colour_params(params: Sequence[ColourParams | None]) -> torch.Tensor:
    """A batch of drawn colour operations -> (B, PARAMS_LENGTH) float32, the same as collating their rows."""
    return torch.stack([colour_params_tensor(p) for p in params])


def unpack_colour_params(packed: torch.Tensor) -> PhotometricParams:
    """(B, PARAMS_LENGTH) rows (any device) -> named per-image tensors on the same device; no host sync."""
    if packed.ndim != 2 or packed.shape[1] != PARAMS_LENGTH:
        raise ValueError(f"photometric params must be (B, {PARAMS_LENGTH}), got {tuple(packed.shape)}")
    packed = packed.float()
    return PhotometricParams(
        jitter=packed[:, 0] > 0.5,
        factors=packed[:, 1:5],
        order=packed[:, 5:9].round().long(),
        grayscale=packed[:, 9] > 0.5,
        blur=packed[:, 10] > 0,
        sigma=packed[:, 10],
        solarize=packed[:, 11] > 0.5,
    )


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
        x = images.float() if images.is_floating_point() else images.to(torch.float32).mul_(1.0 / 255)
        x = torch.where(_per_image(params.jitter), colour_jitter(x, params.factors, params.order), x)
        x = torch.where(_per_image(params.grayscale), rgb_to_grayscale(x), x)
        x = torch.where(_per_image(params.blur), gaussian_blur(x, params.sigma, kernel_size), x)
        x = torch.where(_per_image(params.solarize), solarize(x), x)
        mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean_t).div_(std_t)


def _check_inputs(images: torch.Tensor, params, kernel_size: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"apply_photometric: images must be (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"apply_photometric: images must be uint8 or float in [0, 1], got {images.dtype}")
    rows = params.shape[0] if isinstance(params, torch.Tensor) else params.jitter.shape[0]
    if rows != images.shape[0]:
        raise ValueError(f"apply_photometric: {rows} parameter rows for {images.shape[0]} images")
    if kernel_size % 2 == 0 or kernel_size < 1 or min(images.shape[-2:]) <= kernel_size // 2:
        raise ValueError(f"apply_photometric: kernel_size {kernel_size} must be odd and < 2 * min(H, W)")


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
        x: (B, 3, H, W) float in [0, 1]; factors: (B, 4) as `PhotometricParams.factors`; order: (B, 4) long.
    Returns:
        (B, 3, H, W). All four ops are applied to every image (identity factors leave an image nearly unchanged; the
        caller selects with the jitter flag).
    """
    for position in range(4):
        op = order[:, position]  # (B,)
        factor = _per_image(factors.gather(1, op[:, None]).squeeze(1))  # (B, 1, 1, 1): this step's factor
        # Brightness, contrast and saturation are all blends with a per-image target: 0, the mean gray, the gray
        # image. One blend per step serves all three; hue is computed for the whole batch and selected.
        gray = _luma(x)  # (B, 1, H, W)
        target = torch.where(_per_image(op == SATURATION), gray, gray.mean(dim=(1, 2, 3), keepdim=True))
        target = torch.where(_per_image(op == BRIGHTNESS), torch.zeros_like(target), target)
        x = torch.where(_per_image(op == HUE), adjust_hue(x, factor), _blend(x, target, factor))
    return x


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
    """x (B, 3, H, W) in [0, 1], factor (B,) or (B, 1, 1, 1) in [-0.5, 0.5] -> hue rotated by factor turns."""
    h, s, v = _rgb_to_hsv(x).unbind(dim=1)  # each (B, H, W)
    h = (h + factor.view(-1, 1, 1)).remainder_(1.0)
    return _hsv_to_rgb(h, s, v)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) HSV, each in [0, 1]; PIL's formulas, as torchvision computes them."""
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    flat = maxc == minc  # gray pixels: every difference below is 0, so hue and saturation are 0, without 0 / 0
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    s = chroma / torch.where(flat, ones, maxc)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / torch.where(flat, ones, chroma).unsqueeze(1)).unbind(dim=1)
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    # Multiply by the float 1/6 (not divide by 6) for the same rounding as torchvision.
    h = h.mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), dim=1)


# Sector i of the hue circle -> which of (v, p, q, t) becomes r, g, b.
_HSV_SECTORS = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h, s, v (B, H, W) -> (B, 3, H, W) RGB."""
    h6 = h * 6
    sector = torch.floor(h6)
    frac = h6 - sector
    sxf = s * frac
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = (sxf + one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = (one_minus_s * v).clamp_(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=1)  # (B, 4, H, W)
    table = torch.tensor(_HSV_SECTORS, dtype=torch.long, device=h.device)  # (3, 6)
    select = table[:, sector.long().remainder_(6)].movedim(0, 1)  # (B, 3, H, W)
    return vpqt.gather(1, select)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W) gray, torchvision's weights, repeated over 3 channels."""
    return _luma(x).expand_as(x)


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


def solarize(x: torch.Tensor) -> torch.Tensor:
    """Invert values >= 128/255: PIL's solarize(threshold=128) on the uint8 grid, torchvision's float solarize."""
    return torch.where(x >= SOLARIZE_THRESHOLD, 1.0 - x, x)
