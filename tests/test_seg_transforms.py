"""The paired transforms of the linear probes, checked against independent statements of the resampling each
protocol's own code does: torch (bicubic) and numpy (the floor-index nearest rule, the fork's rotation about
(w / 2, h / 2)) for LC; PIL for Leopart."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from croc_utils.colour import IMAGENET_MEAN, IMAGENET_STD
from eval.seg_transforms import (
    EvalTransform,
    LCTrainTransform,
    LeopartEvalTransform,
    LeopartTrainTransform,
    lc_augment,
    scale_rotate,
)

VOC_AND_COCO_SIZES = [(375, 500), (500, 333), (480, 640), (427, 640)]  # (H, W)


def unnormalise(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) normalised -> (H, W, 3) grey levels 0..255 as floats."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x * std + mean) * 255).permute(1, 2, 0).numpy()


def torch_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """Bicubic a = -0.75 without antialiasing on the uint8 values, rounded: (H, W, 3) -> (size, size, 3)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    y = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    return y.round().clamp(0, 255)[0].permute(1, 2, 0).numpy()


def floor_index(n_in: int, n_out: int) -> np.ndarray:
    """OpenCV's INTER_NEAREST source indices: floor(dst * (1 / (n_out / n_in))) in double precision."""
    return np.minimum(np.floor(np.arange(n_out) * (1.0 / (n_out / n_in))).astype(int), n_in - 1)


@pytest.mark.parametrize("hw", VOC_AND_COCO_SIZES)
def test_lc_val_resize_matches_the_fork(hw):
    h, w = hw
    rng = np.random.default_rng(h + w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: the hardest case for the image tolerance
    mask = rng.integers(0, 21, (h, w), dtype=np.uint8)
    x, y = EvalTransform(448)(Image.fromarray(image), mask)
    assert x.shape == (3, 448, 448) and y.shape == (448, 448) and y.dtype == torch.int64
    assert np.abs(unnormalise(x) - torch_bicubic(image, 448)).max() <= 1 + 1e-3
    rows, cols = floor_index(h, 448), floor_index(w, 448)
    assert np.array_equal(y.numpy(), mask[rows][:, cols])


def test_lc_nearest_is_not_the_pixel_centre_rule():
    """The floor-index rule and PIL's pixel-centre rule pick other pixels: the check above can tell them apart."""
    mask = np.arange(500, dtype=np.uint8)[None].repeat(4, 0) % 250
    _, y = EvalTransform(448)(Image.new("RGB", (500, 4)), mask)
    pil = np.asarray(Image.fromarray(mask).resize((448, 448), Image.NEAREST))
    assert not np.array_equal(y.numpy()[0], pil[0])


def two_regions(h=40, w=60):
    """Distinct labels everywhere (1..h*w mod 250 + 1, never 0 or 255) and a grey image."""
    mask = (np.arange(h * w).reshape(h, w) % 250 + 1).astype(np.uint8)
    return np.full((h, w, 3), 200, np.uint8), mask


def expected_zoom_out(mask, scale, border):
    """Hand-worked nearest warp for angle 0: dst pixel x samples round((x - w / 2) / scale + w / 2) (no ties occur
    for 40x60 at scale 0.6), or gets ``border`` when that falls outside."""
    h, w = mask.shape
    sy = np.floor((np.arange(h) - h / 2) / scale + h / 2 + 0.5).astype(int)
    sx = np.floor((np.arange(w) - w / 2) / scale + w / 2 + 0.5).astype(int)
    inside = ((sy >= 0) & (sy < h))[:, None] & ((sx >= 0) & (sx < w))[None]
    out = np.full_like(mask, border)
    out[inside] = mask[np.clip(sy, 0, h - 1)][:, np.clip(sx, 0, w - 1)][inside]
    return out, inside


@pytest.mark.parametrize("border", [0, 255])
def test_lc_affine_border_label(border):
    image, mask = two_regions()
    img, out = lc_augment(image, mask, flip=False, angle=0.0, scale=0.6, border_label=border)
    expect, inside = expected_zoom_out(mask, 0.6, border)
    assert np.array_equal(out, expect)
    assert inside.sum() == 24 * 36  # rows 8..31, columns 12..47 worked out by hand
    # black where all 4x4 cubic taps fall outside (source row/column < -2 or > size + 1), untouched well inside
    assert not img[:7].any() and not img[33:].any() and not img[:, :11].any() and not img[:, 49:].any()
    assert (img[10:30, 14:46] == 200).all()
    _, flipped = lc_augment(image, mask, flip=True, angle=0.0, scale=0.6, border_label=border)
    assert np.array_equal(flipped, expected_zoom_out(mask[:, ::-1], 0.6, border)[0])


def test_lc_rotation_turns_about_w_over_2():
    """cv2.getRotationMatrix2D's centre is (w / 2, h / 2), not the pixel centre ((w - 1) / 2): a 90 degree turn of
    a 4x4 array is np.rot90 shifted one row down, the first row brought in from outside."""
    a = np.arange(1, 17, dtype=np.uint8).reshape(4, 4)
    out = scale_rotate(a, 90.0, 1.0, nearest=True, border=0)
    assert (out[0] == 0).all() and np.array_equal(out[1:], np.rot90(a)[:3])


def test_lc_train_transform_end_to_end():
    random.seed(0)
    image, mask = two_regions()
    for border in (0, 255):
        t = LCTrainTransform(40, scales=(0.6, 0.6), degrees=(0.0, 0.0), border_label=border)
        _, y = t(Image.fromarray(image), mask)
        assert y.shape == (40, 40) and (y[0] == border).all() and (y[20, 20] not in (0, 255))
    # COCO: the mask is resized to size x size before the augmentation (it then turns about its own centre)
    t = LCTrainTransform(20, scales=(1.0, 1.0), degrees=(0.0, 0.0), mask_first=True)
    _, y = t(Image.fromarray(image), mask)
    first = mask[floor_index(40, 20)][:, floor_index(60, 20)]
    assert np.array_equal(y.numpy(), first) or np.array_equal(y.numpy(), first[:, ::-1])


def test_leopart_transforms_resample_with_pil():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    mask = rng.integers(0, 21, (50, 70), dtype=np.uint8)
    x, y = LeopartEvalTransform(32)(image, mask)
    assert np.abs(unnormalise(x) - np.asarray(image.resize((32, 32), Image.BILINEAR))).max() < 1e-3
    assert np.array_equal(y.numpy(), np.asarray(Image.fromarray(mask).resize((32, 32), Image.NEAREST)))
    torch.manual_seed(0)
    x, y = LeopartTrainTransform(32)(image, mask)
    assert x.shape == (3, 32, 32) and set(y.unique().tolist()) <= set(range(21))


def two_halves(h=40, w=60):
    """Red left half labelled 1, blue right half labelled 2: colour tells which label a pixel must carry."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2:] = (0, 0, 255)
    mask = np.ones((h, w), np.uint8)
    mask[:, w // 2:] = 2
    return Image.fromarray(img), mask


@pytest.mark.parametrize("transform", [EvalTransform(32), LCTrainTransform(32), LCTrainTransform(32, mask_first=True),
                                       LeopartEvalTransform(32), LeopartTrainTransform(32)])
def test_transforms_keep_image_and_mask_aligned(transform):
    torch.manual_seed(0)
    random.seed(0)
    image, mask = two_halves()
    for _ in range(5):
        x, y = transform(image, mask)
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {0, 1, 2}
        redder = x[0] > x[2]  # normalised red channel above blue: a red pixel
        labelled = y != 0  # 0: brought in from outside by the LC affine (black in the image)
        agree = ((redder & (y == 1)) | (~redder & (y == 2)))[labelled].float().mean()
        assert agree > 0.93  # only the resampled seam may disagree
