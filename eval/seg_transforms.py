"""Paired image/mask transforms of the linear-probe protocols.

Spec: ``evaluation.md`` section 1 (LC: flip, scale 0.75..1.25 and rotation +-5 degrees, then resize to 448; images
bicubic, masks nearest) and 1b (Leopart: RandomResizedCrop(448, scale .8..1) + flip). Each transform maps
``(PIL image, uint8 mask (H, W))`` to ``(image (3, S, S) float normalised, mask (S, S) int64)``.
"""

import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from croc_utils.transforms import IMAGENET_MEAN, IMAGENET_STD
from eval.metrics import IGNORE_INDEX


def to_tensors(image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL pair -> (normalised image (3, H, W), int64 mask (H, W))."""
    img = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
    return img, torch.from_numpy(np.asarray(mask, dtype=np.uint8).copy()).long()


def _resize(image: Image.Image, mask: Image.Image, size: int) -> tuple[Image.Image, Image.Image]:
    return (image.resize((size, size), Image.BICUBIC), mask.resize((size, size), Image.NEAREST))


class EvalTransform:
    """Deterministic resize to ``size`` x ``size`` (bicubic image, nearest mask): val of every protocol."""

    deterministic = True

    def __init__(self, size: int = 448):
        self.size = size

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(*_resize(image, Image.fromarray(mask), self.size))


class LCTrainTransform:
    """LC train augmentation: flip (p=.5), one affine of scale U(.75, 1.25) and angle U(-5, 5) about the centre
    on the original image, then resize to ``size``. Pixels the affine brings in from outside are 0 in the image and
    255 (ignored) in the mask, so no label is invented for them."""

    deterministic = False

    def __init__(self, size: int = 448, scales=(0.75, 1.25), degrees=(-5.0, 5.0)):
        self.size, self.scales, self.degrees = size, scales, degrees

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mask = Image.fromarray(mask)
        if random.random() < 0.5:
            image, mask = TF.hflip(image), TF.hflip(mask)
        scale, angle = random.uniform(*self.scales), random.uniform(*self.degrees)
        image = TF.affine(image, angle, [0, 0], scale, [0.0], InterpolationMode.BICUBIC, fill=0)
        mask = TF.affine(mask, angle, [0, 0], scale, [0.0], InterpolationMode.NEAREST, fill=IGNORE_INDEX)
        return to_tensors(*_resize(image, mask, self.size))


class LeopartTrainTransform:
    """Leopart train augmentation: RandomResizedCrop(size, scale .8..1) with the same box for image (bicubic) and
    mask (nearest), then flip (p=.5)."""

    deterministic = False

    def __init__(self, size: int = 448, scale=(0.8, 1.0)):
        self.size, self.scale = size, scale

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mask = Image.fromarray(mask)
        top, left, h, w = RandomResizedCrop.get_params(image, self.scale, (3 / 4, 4 / 3))
        image = TF.resized_crop(image, top, left, h, w, [self.size, self.size], InterpolationMode.BICUBIC)
        mask = TF.resized_crop(mask, top, left, h, w, [self.size, self.size], InterpolationMode.NEAREST)
        if random.random() < 0.5:
            image, mask = TF.hflip(image), TF.hflip(mask)
        return to_tensors(image, mask)
