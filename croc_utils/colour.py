"""Colour parameters of a view, their fixed-length encoding, and the colour constants of both augmentation paths.

docs/algorithm.md section 1. The loader draws one view's colour operations as a ``ColourParams``
(``croc_utils.transforms.sample_colour_params``); the CPU path applies them with PIL (``transforms.apply_colour``),
the device path packs them into a 12-column float row (``colour_params_tensor``), collates the rows into
(B, PARAMS_LENGTH) and applies them batched on the training device (``croc_utils.photometric.apply_photometric``).

Column layout of a packed row: [jitter, brightness, contrast, saturation, hue, order0..3, grayscale, sigma, solarize].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation of both paths
IMAGENET_STD = (0.229, 0.224, 0.225)

BLUR_RADIUS = (0.1, 2.0)  # GaussianBlur's radius (the Gaussian's sigma) is drawn uniformly in this range
# The device path's blur kernel: +-3 sigma of the largest sigma, 2 * ceil(3 * 2.0) + 1 = 13 taps.
BLUR_KERNEL_SIZE = 2 * math.ceil(3 * BLUR_RADIUS[1]) + 1

PARAMS_LENGTH = 12
IDENTITY_FACTORS = (1.0, 1.0, 1.0, 0.0)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # indices of ColourParams.jitter and of jitter_order entries


@dataclass(frozen=True)
class ColourParams:
    """The colour operations drawn for one view; `jitter` is None when jitter was not applied.

    `jitter` holds (brightness, contrast, saturation, hue) factors applied in `jitter_order` (indices into it).
    """

    jitter: tuple[float, float, float, float] | None
    jitter_order: tuple[int, ...]
    grayscale: bool
    blur_radius: float | None
    solarize: bool


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

