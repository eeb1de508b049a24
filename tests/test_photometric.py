"""Tests of croc_utils/photometric.py: each batched op against torchvision's tensor op image by image, the identity,
the order of the jitter ops, and the absence of host syncs (the whole pipeline runs on the meta device)."""


import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TVF
from PIL import Image

from croc_utils.colour import (
    BLUR_KERNEL_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PARAMS_LENGTH,
    ColourParams,
    pack_colour_params,
)
from croc_utils.photometric import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_photometric,
    gaussian_blur,
    rgb_to_grayscale,
    solarize,
)
from croc_utils.transforms import (
    JITTER_RANGES,
    apply_colour,
)

# float32 tolerances against torchvision's own op, image by image. Measured max |diff| on these inputs: brightness,
# grayscale, solarize 0; contrast, saturation <= 6e-8 (a batched mean, a*b + c*d instead of add_(alpha=)); hue
# 1.2e-7 (a closed form instead of torchvision's sector table); blur <= 6e-7 (two 1-D passes instead of one 2-D
# kernel). The whole pipeline, after normalisation (which divides by std ~0.22): <= 5e-6.
TOL = 1e-6
PIPELINE_TOL = 1e-5


def random_images(batch: int = 6, size: int = 40, seed: int = 0) -> torch.Tensor:
    """(B, 3, S, S) uint8 with saturated colours, gray pixels and the 0 / 255 extremes represented."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), generator=gen, dtype=torch.uint8)
    images[:, :, :4] = images[:, :1, :4]  # some gray rows (hue undefined, saturation 0)
    images[:, 0, 4, :] = 255
    images[:, 1, 5, :] = 0
    return images


def to_float(images: torch.Tensor) -> torch.Tensor:
    return TVF.to_dtype(images, torch.float32, scale=True)


def uniform(lo: float, hi: float, n: int, seed: int) -> torch.Tensor:
    return torch.empty(n).uniform_(lo, hi, generator=torch.Generator().manual_seed(seed))


def per_image(op, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([op(img, float(f)) for img, f in zip(x, factors)])


@pytest.mark.parametrize(
    "ours, theirs, rng, tol",
    [
        (adjust_brightness, TVF.adjust_brightness, JITTER_RANGES[0], TOL),
        (adjust_contrast, TVF.adjust_contrast, JITTER_RANGES[1], TOL),
        (adjust_saturation, TVF.adjust_saturation, JITTER_RANGES[2], TOL),
        (adjust_hue, TVF.adjust_hue, (-0.5, 0.5), TOL),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_jitter_ops_match_torchvision(ours, theirs, rng, tol):
    x = to_float(random_images())
    factors = uniform(*rng, len(x), seed=1)
    assert (ours(x, factors) - per_image(theirs, x, factors)).abs().max() <= tol


def test_grayscale_and_solarize_match_torchvision():
    x = to_float(random_images())
    gray = torch.stack([TVF.rgb_to_grayscale(img, num_output_channels=3) for img in x])
    assert (rgb_to_grayscale(x) - gray).abs().max() <= TOL
    assert torch.equal(solarize(x), torch.stack([TVF.solarize(img, 128 / 255) for img in x]))


@pytest.mark.parametrize("kernel_size", [BLUR_KERNEL_SIZE, 5])
def test_blur_matches_torchvision(kernel_size):
    x = to_float(random_images())
    sigma = torch.tensor([0.1, 2.0, 0.5, 1.0, 1.7, 0.3])
    expected = torch.stack(
        [TVF.gaussian_blur(img, [kernel_size, kernel_size], [float(s), float(s)]) for img, s in zip(x, sigma)]
    )
    assert (gaussian_blur(x, sigma, kernel_size) - expected).abs().max() <= TOL


def test_solarize_is_pils_threshold_on_the_uint8_grid():
    """On x / 255, values >= 128 are inverted and 127 is not: PIL's solarize(threshold=128), the CPU path."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    pil = Image.fromarray(levels[0].permute(1, 2, 0).numpy(), mode="RGB")
    expected = torch.from_numpy(np.array(apply_colour(pil, ColourParams(None, (0, 1, 2, 3), False, None, True))))
    ours = (solarize(to_float(levels))[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    assert torch.equal(ours, expected)


def torchvision_pipeline(image: torch.Tensor, params: ColourParams, kernel_size: int) -> torch.Tensor:
    """The reference: torchvision's tensor ops on one (3, H, W) uint8 image, in DINO's order, then normalisation."""
    x = to_float(image)
    if params.jitter is not None:
        ops = (TVF.adjust_brightness, TVF.adjust_contrast, TVF.adjust_saturation, TVF.adjust_hue)
        for k in params.jitter_order:
            x = ops[k](x, params.jitter[k])
    if params.grayscale:
        x = TVF.rgb_to_grayscale(x, num_output_channels=3)
    if params.blur_radius is not None:
        x = TVF.gaussian_blur(x, [kernel_size, kernel_size], [params.blur_radius] * 2)
    if params.solarize:
        x = TVF.solarize(x, 128 / 255)
    return TVF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def float32_params(params: ColourParams) -> ColourParams:
    """The same draw with factors and radius rounded to float32, as the packed rows hold them."""
    f32 = lambda v: float(torch.tensor(v, dtype=torch.float32))
    jitter = None if params.jitter is None else tuple(f32(v) for v in params.jitter)
    blur = None if params.blur_radius is None else f32(params.blur_radius)
    return ColourParams(jitter, params.jitter_order, params.grayscale, blur, params.solarize)


def mixed_params(n: int, seed: int) -> list[ColourParams]:
    """Every op on about half the images, random factors in the released ranges and random orders."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        u = torch.rand(9, generator=gen, dtype=torch.float64).tolist()
        jitter = tuple(lo + (hi - lo) * v for (lo, hi), v in zip(JITTER_RANGES, u[1:5])) if u[0] < 0.7 else None
        order = tuple(torch.randperm(4, generator=gen).tolist())
        blur = 0.1 + 1.9 * u[7] if u[6] < 0.5 else None
        out.append(ColourParams(jitter, order, u[5] < 0.4, blur, u[8] < 0.5))
    return out


@pytest.mark.parametrize("kernel_size", [BLUR_KERNEL_SIZE, 7])
def test_pipeline_matches_torchvision_image_by_image(kernel_size):
    images = random_images(batch=12, size=32, seed=3)
    params = mixed_params(len(images), seed=4)
    assert len({p.jitter_order for p in params if p.jitter is not None}) > 3  # several orders in one batch
    ours = apply_photometric(images, pack_colour_params(params), kernel_size=kernel_size)
    expected = [torchvision_pipeline(img, float32_params(p), kernel_size) for img, p in zip(images, params)]
    expected = torch.stack(expected)
    assert ours.dtype == torch.float32 and ours.shape == images.shape
    assert (ours - expected).abs().max() <= PIPELINE_TOL


def test_order_matters_and_is_per_image():
    """Two images with the same factors in different orders differ, and each matches its own order's reference."""
    image = random_images(batch=1, seed=5)[0]
    first = ColourParams((1.4, 0.6, 1.2, 0.1), (0, 1, 2, 3), False, None, False)
    last = ColourParams((1.4, 0.6, 1.2, 0.1), (3, 2, 1, 0), False, None, False)
    ours = apply_photometric(torch.stack([image, image]), pack_colour_params([first, last]))
    assert (ours[0] - ours[1]).abs().max() > 0.05
    for out, params in zip(ours, (first, last)):
        assert (out - torchvision_pipeline(image, float32_params(params), BLUR_KERNEL_SIZE)).abs().max() <= TOL * 10


def test_identity_params_only_normalise():
    images = random_images(batch=3)
    off = ColourParams(None, (2, 0, 3, 1), False, None, False)
    expected = TVF.normalize(to_float(images), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(apply_photometric(images, pack_colour_params([None, off, off])), expected)
    # The float path (images already in [0, 1]) is the same.
    assert torch.equal(apply_photometric(to_float(images), pack_colour_params([None] * 3)), expected)
    # Identity jitter factors still run the ops (as torchvision's ColorJitter would): the float HSV round trip moves
    # a value by < 1e-6 in [0, 1], i.e. < 1e-6 / std after normalisation.
    neutral = ColourParams((1.0, 1.0, 1.0, 0.0), (3, 1, 0, 2), False, None, False)
    assert (apply_photometric(images, pack_colour_params([neutral] * 3)) - expected).abs().max() <= 1e-6 / 0.224


def test_no_host_sync_runs_on_the_meta_device():
    """Meta tensors have no data: any .item(), `if tensor` or data-dependent shape in the pipeline would raise here."""
    images = torch.empty(4, 3, 24, 24, dtype=torch.uint8, device="meta")
    out = apply_photometric(images, torch.empty(4, PARAMS_LENGTH, device="meta"))
    assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32 and out.device.type == "meta"


def test_autocast_keeps_float32():
    images = random_images(batch=4, size=24)
    packed = pack_colour_params(mixed_params(4, seed=8))
    expected = apply_photometric(images, packed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = apply_photometric(images, packed)
    assert out.dtype == torch.float32 and torch.equal(out, expected)


def test_bad_inputs_raise_one_line_errors():
    images = random_images(batch=2, size=24)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        apply_photometric(images[:, :2], pack_colour_params([None, None]))
    with pytest.raises(ValueError, match="3 parameter rows for 2 images"):
        apply_photometric(images, pack_colour_params([None] * 3))
    with pytest.raises(ValueError, match=f"\\(B, {PARAMS_LENGTH}\\)"):
        apply_photometric(images, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="kernel_size 4"):
        apply_photometric(images, pack_colour_params([None, None]), kernel_size=4)
