"""Paired image/mask transforms of the linear-probe protocols.

Each transform maps ``(PIL image, uint8 mask (H, W))`` to ``(image (3, S, S) float normalised, mask (S, S) int64)``.

LC, the authors' protocol (docs/evaluation.md section 1), is resampled exactly as the authors' evaluation fork
(a fork of MaskContrast) does it, with the same OpenCV calls on uint8 arrays:

- resize to S x S: image ``cv2.INTER_CUBIC`` (bicubic, a = -0.75, no antialiasing), mask ``cv2.INTER_NEAREST``
  (source index ``floor(dst * (1 / (S / n)))`` in double precision);
- train: horizontal flip (p = .5); then each array, about its own centre (w / 2, h / 2), through
  ``cv2.getRotationMatrix2D(centre, angle U(-5, 5), scale U(.75, 1.25))`` and ``cv2.warpAffine`` (image cubic,
  mask nearest, constant border 0: pixels brought in from outside are black and labelled 0, or ``border_label``);
  then the resize above. For COCO the fork's reader resizes the mask to S x S before all this (``mask_first``).

Why OpenCV rather than torch: torch reproduces neither call exactly. ``F.interpolate(mode="nearest")`` computes the
source index in another precision and picks the neighbouring column wherever ``dst * n / S`` is an integer that
double precision rounds down (e.g. 640 -> 448, 36 -> 448), and ``F.grid_sample`` samples at exact coordinates where
OpenCV 4's ``warpAffine`` quantises them (1/32 pixel for cubic, 1/1024 for nearest): measured up to 4 grey levels
on smooth images and ~0.07% of the mask pixels. OpenCV 5 changed ``warpAffine`` the same way (measured against
4.x: 45% of the pixels of a noise image differ, by up to 7 levels); the fork (2023) ran 4.x, hence ``<5`` in
requirements.txt.

Leopart's protocol (docs/evaluation.md section 1b) resamples with PIL through torchvision, as Leopart does:
bilinear images (antialiased when shrinking) and nearest masks; train RandomResizedCrop(S, scale .8..1) + flip.
"""

import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from croc_utils.colour import IMAGENET_MEAN, IMAGENET_STD


def to_tensors(image, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL image or uint8 array (H, W, 3), and mask (H, W) -> (normalised image (3, H, W), int64 mask (H, W))."""
    img = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
    return img, torch.from_numpy(np.asarray(mask, dtype=np.uint8).copy()).long()


# ===== LC: the fork's OpenCV resampling =====

# OpenCV is imported where it is used: the synthetic probe (eval.probe_data), whose scenes are drawn at the probe's
# size, then never needs it, so it also runs where OpenCV is not installed (e.g. a lent GPU machine).

def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3), bicubic a = -0.75 without antialiasing (a copy when already that size,
    which is what OpenCV returns then)."""
    if image.shape[:2] == (size, size):
        return image.copy()
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W) -> (height, width), nearest with the floor-index rule (no label is invented)."""
    if mask.shape[:2] == (height, width):
        return mask.copy()
    import cv2

    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def scale_rotate(array: np.ndarray, angle: float, scale: float, nearest: bool, border: int = 0) -> np.ndarray:
    """Rotate by ``angle`` degrees (counter-clockwise) and zoom by ``scale`` about the centre (w / 2, h / 2), keeping
    the size (H, W[, 3]); pixels from outside the array get ``border``."""
    import cv2

    h, w = array.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    return cv2.warpAffine(array, matrix, (w, h), flags=cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def lc_augment(image: np.ndarray, mask: np.ndarray, *, flip: bool, angle: float, scale: float,
               border_label: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fork's train augmentation with given parameters, before the final resize.

    ``image`` (H, W, 3) and ``mask`` (H', W') uint8 may differ in size (COCO's mask is already S x S): each turns
    about its own centre, as in the fork.
    """
    if flip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    image = scale_rotate(np.ascontiguousarray(image), angle, scale, nearest=False)
    mask = scale_rotate(np.ascontiguousarray(mask), angle, scale, nearest=True, border=border_label)
    return image, mask


class EvalTransform:
    """LC val (and the K-means evaluator): resize to ``size`` x ``size`` as the fork (cubic image, nearest mask)."""

    deterministic = True

    def __init__(self, size: int = 448):
        self.size = size

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = resize_image(np.asarray(image.convert("RGB")), self.size)
        return to_tensors(image, resize_mask(mask, self.size, self.size))


class LCTrainTransform:
    """LC train: flip (p = .5), one scale U(``scales``) / rotation U(``degrees``) affine, then the LC resize.

    ``border_label``: label of the pixels the affine brings in from outside; 0 as the fork (VOC background, COCO's
    first super-category), 255 to ignore them. ``mask_first``: resize the mask to ``size`` x ``size`` before the
    augmentation, as the fork's COCO reader does (its VOC reader does not).
    """

    deterministic = False

    def __init__(self, size: int = 448, scales=(0.75, 1.25), degrees=(-5.0, 5.0), *, border_label: int = 0,
                 mask_first: bool = False):
        self.size, self.scales, self.degrees = size, scales, degrees
        self.border_label, self.mask_first = border_label, mask_first

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.asarray(image.convert("RGB"))
        if self.mask_first:
            mask = resize_mask(mask, self.size, self.size)
        # drawn in the fork's order: flip, angle, scale (Python's random: DataLoader seeds it per worker)
        flip = random.random() < 0.5
        angle, scale = random.uniform(*self.degrees), random.uniform(*self.scales)
        image, mask = lc_augment(image, mask, flip=flip, angle=angle, scale=scale, border_label=self.border_label)
        return to_tensors(resize_image(image, self.size), resize_mask(mask, self.size, self.size))


# ===== Leopart: PIL through torchvision =====

class LeopartEvalTransform:
    """Leopart val: PIL resize to ``size`` x ``size``, bilinear image, nearest mask (pixel centres)."""

    deterministic = True

    def __init__(self, size: int = 448):
        self.size = size

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = TF.resize(image, [self.size, self.size], InterpolationMode.BILINEAR)
        mask = TF.resize(Image.fromarray(mask), [self.size, self.size], InterpolationMode.NEAREST)
        return to_tensors(image, mask)


class LeopartTrainTransform:
    """Leopart train: RandomResizedCrop(size, scale .8..1) with the same box for image (bilinear) and mask
    (nearest), then flip (p = .5)."""

    deterministic = False

    def __init__(self, size: int = 448, scale=(0.8, 1.0)):
        self.size, self.scale = size, scale

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mask = Image.fromarray(mask)
        top, left, h, w = RandomResizedCrop.get_params(image, self.scale, (3 / 4, 4 / 3))
        image = TF.resized_crop(image, top, left, h, w, [self.size, self.size], InterpolationMode.BILINEAR)
        mask = TF.resized_crop(mask, top, left, h, w, [self.size, self.size], InterpolationMode.NEAREST)
        if random.random() < 0.5:
            image, mask = TF.hflip(image), TF.hflip(mask)
        return to_tensors(image, mask)
