"""Tests of croc_utils/transforms.py: view positions against independent decodings, layout, colour probabilities."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from croc_utils.colour import IMAGENET_MEAN, IMAGENET_STD, ColourParams
from croc_utils.transforms import (
    JITTER_RANGES,
    LOCAL_COLOUR,
    VIEW1_COLOUR,
    VIEW2_COLOUR,
    ColourPipeline,
    CrOCAugmentation,
    CropBox,
    apply_colour,
    resized_crop,
    sample_colour_params,
    sample_crop_box,
    view_positions,
)


def coordinate_image(width: int, height: int) -> Image.Image:
    """RGB image whose red = 2 * column and green = 2 * row (so width, height <= 127), blue constant."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    rgb = np.stack([2 * xs, 2 * ys, np.full_like(xs, 128)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB")


def decode(crop: torch.Tensor) -> torch.Tensor:
    """Normalised crop (3, S, S) of a coordinate_image -> decoded (x, y) per pixel (2, S, S)."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (crop * std + mean)[:2] * 255 / 2


def interior(t: torch.Tensor, margin: int) -> torch.Tensor:
    return t[..., margin:-margin, margin:-margin]


@pytest.mark.parametrize(
    "width, height, size, patch, scale",
    [(120, 90, 224, 16, (0.25, 1.0)), (90, 120, 32, 8, (0.25, 1.0)), (127, 64, 48, 16, (0.05, 0.3))],
)
def test_decoded_coordinates_match_positions(width, height, size, patch, scale):
    """Issue test: pixels >= 2 px from the border decode to the returned position within 0.5 px, flips included.

    Coordinates are stored as 2 * coordinate in 8 bits, so rounding costs at most 0.25 px; the rest of the 0.5 px
    budget covers bicubic's renormalised taps near the crop border when upsampling (PIL's exact resampling).
    """
    aug = CrOCAugmentation(
        scale, size, patch, local_crops_number=2, local_crops_scale=scale, local_crops_size=size, colour=False,
        pixel_positions=True,
    )
    img = coordinate_image(width, height)
    gen = torch.Generator().manual_seed(0)
    flips = set()
    for _ in range(6):
        out = aug(img, generator=gen, return_params=True)
        flips |= {p.flip for p in out["params"]}
        for crop, pos in zip(out["crops"], out["positions"]):
            err = (interior(decode(crop), 2) - interior(pos, 2)).abs().max()
            assert err <= 0.5, f"decoded coordinates off by {err:.3f} px"
    assert flips == {True, False}


def test_float_image_positions_are_exact():
    """On a 32-bit float image (no rounding) the positions equal the resampled coordinate where the bicubic kernel
    sees no border, for a 500x375 image: to 1e-3 px when upsampling, 0.05 px when downsampling (PIL's antialiasing
    filter is only nearly linear-preserving); 2 px from the border they stay within 0.1 px."""
    width, height, size = 500, 375, 224
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    x_img, y_img = Image.fromarray(xs, mode="F"), Image.fromarray(ys, mode="F")
    gen = torch.Generator().manual_seed(1)
    for k in range(8):
        box = sample_crop_box(height, width, (0.05, 1.0), generator=gen)
        flip = k % 2 == 1
        got = torch.stack([torch.from_numpy(np.array(resized_crop(im, box, size, flip))) for im in (x_img, y_img)])
        pos, _ = view_positions(box, flip, size, 16)
        # The bicubic kernel reaches 2 input pixels (or 2 output pixels when downsampling) from a pixel's centre.
        reach = math.ceil(2 * max(1.0, size / min(box.width, box.height))) + 1
        for axis, extent in enumerate((box.width, box.height)):
            # Keys' cubic reproduces linear ramps exactly; stretched for antialiased downsampling it does to ~0.02 px.
            tol = 1e-3 if extent <= size else 0.05
            assert (interior(got[axis], reach) - interior(pos[axis], reach)).abs().max() < tol
        assert (interior(got, 2) - interior(pos, 2)).abs().max() < 0.1


def released_grid_positions(box: CropBox, flip: bool, size: int, height: int, width: int, mode) -> torch.Tensor:
    """The release's way: a coordinate grid (2, H, W) pushed through the same crop, resize and flip."""
    xs = torch.arange(width, dtype=torch.float32).repeat(height, 1)
    grid = torch.stack((xs, torch.arange(height, dtype=torch.float32)[:, None].repeat(1, width)))
    out = TF.resized_crop(grid, box.top, box.left, box.height, box.width, [size, size], mode, antialias=False)
    return TF.hflip(out) if flip else out


def test_positions_match_released_grid():
    """Bilinear resampling of a linear ramp is exact away from the border: the grid and the crop-box formula agree."""
    height, width, size = 300, 410, 64
    gen = torch.Generator().manual_seed(2)
    for k in range(10):
        box = sample_crop_box(height, width, (0.05, 1.0), generator=gen)
        pos, _ = view_positions(box, k % 2 == 0, size, 16)
        grid = released_grid_positions(box, k % 2 == 0, size, height, width, TF.InterpolationMode.BILINEAR)
        assert (interior(grid, 2) - interior(pos, 2)).abs().max() < 1e-3


@pytest.mark.parametrize("flip", [False, True])
def test_patch_positions_are_pixel_means(flip):
    box, size, patch = CropBox(top=7, left=13, height=151, width=97), 64, 16
    pixel_map, patch_pos = view_positions(box, flip, size, patch)
    pooled = F.avg_pool2d(pixel_map[None], patch)[0]  # (2, g, g)
    grid = size // patch
    assert patch_pos.shape == (grid * grid, 2)
    # Row-major token order: token r * g + c is the patch in row r, column c.
    for r in range(grid):
        for c in range(grid):
            assert torch.allclose(patch_pos[r * grid + c], pooled[:, r, c], atol=1e-4)


def test_position_formula_by_hand():
    """A 10-column crop starting at column 4, resized to 5: output column u samples x = 4 + (u + .5) * 2 - .5."""
    pixel_map, patch_pos = view_positions(CropBox(top=0, left=4, height=5, width=10), False, 5, 5)
    assert pixel_map[0, 0].tolist() == [4.5, 6.5, 8.5, 10.5, 12.5]
    assert pixel_map[1, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert patch_pos.tolist() == [[8.5, 2.0]]
    flipped, _ = view_positions(CropBox(top=0, left=4, height=5, width=10), True, 5, 5)
    assert flipped[0, 0].tolist() == [12.5, 10.5, 8.5, 6.5, 4.5]


def test_output_layout_and_two_views():
    aug = CrOCAugmentation(
        (0.25, 1.0), 32, 16, local_crops_number=3, local_crops_scale=(0.05, 0.25), local_crops_size=16,
        pixel_positions=True,
    )
    img = coordinate_image(100, 70)
    out = aug(img, generator=torch.Generator().manual_seed(3), return_params=True)
    crops, positions, patches = out["crops"], out["positions"], out["patch_positions"]
    assert set(out) == {"crops", "positions", "patch_positions", "params"}
    assert len(crops) == len(positions) == len(patches) == len(out["params"]) == 5  # [v1, v2, *locals], once each
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert [tuple(p.shape) for p in positions] == [(2, 32, 32)] * 2 + [(2, 16, 16)] * 3
    assert [tuple(p.shape) for p in patches] == [(4, 2)] * 2 + [(1, 2)] * 3
    assert all(p.dtype == torch.float32 for p in positions + patches)
    # Both views come from the same image but from different crops.
    v1, v2 = out["params"][:2]
    assert v1.box != v2.box
    for pos in positions:
        assert pos[0].min() >= -0.5 and pos[0].max() <= 99.5 and pos[1].min() >= -0.5 and pos[1].max() <= 69.5


def test_generator_makes_views_reproducible():
    aug = CrOCAugmentation((0.25, 1.0), 32, 16, pixel_positions=True)
    img = coordinate_image(60, 50)
    a = aug(img, generator=torch.Generator().manual_seed(5))
    b = aug(img, generator=torch.Generator().manual_seed(5))
    c = aug(img, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a["crops"] + a["positions"], b["crops"] + b["positions"]))
    assert not torch.equal(a["positions"][0], c["positions"][0])


def test_crop_box_follows_scale_and_ratio():
    gen = torch.Generator().manual_seed(7)
    for _ in range(200):
        box = sample_crop_box(375, 500, (0.25, 1.0), generator=gen)
        assert 0 <= box.top <= 375 - box.height and 0 <= box.left <= 500 - box.width
        assert 0.24 <= box.height * box.width / (375 * 500) <= 1.0
    # Extreme aspect ratios fall back to a centred crop with a clamped ratio (torchvision's rule).
    box = sample_crop_box(10, 1000, (0.9, 1.0), generator=gen)
    assert box.height == 10 and box.width == 13 and box.left == (1000 - 13) // 2


def binomial_ok(count: int, n: int, p: float) -> bool:
    """Within 5 standard deviations of n * p (exact for p in {0, 1})."""
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9


@pytest.mark.parametrize(
    "pipeline, blur_p, solarize_p", [(VIEW1_COLOUR, 1.0, 0.0), (VIEW2_COLOUR, 0.1, 0.2), (LOCAL_COLOUR, 0.5, 0.0)]
)
def test_colour_probabilities_follow_spec(pipeline, blur_p, solarize_p):
    n = 4000
    gen = torch.Generator().manual_seed(8)
    draws = [sample_colour_params(pipeline, gen) for _ in range(n)]
    assert binomial_ok(sum(d.jitter is not None for d in draws), n, 0.8)
    assert binomial_ok(sum(d.grayscale for d in draws), n, 0.2)
    assert binomial_ok(sum(d.blur_radius is not None for d in draws), n, blur_p)
    assert binomial_ok(sum(d.solarize for d in draws), n, solarize_p)
    jitters = np.array([d.jitter for d in draws if d.jitter is not None])
    lows, highs = jitters.min(0), jitters.max(0)
    assert np.allclose(lows, [0.6, 0.6, 0.8, -0.1], atol=0.01) and np.allclose(highs, [1.4, 1.4, 1.2, 0.1], atol=0.01)
    radii = np.array([d.blur_radius for d in draws if d.blur_radius is not None])
    assert radii.size == 0 or (radii.min() >= 0.1 and radii.max() <= 2.0)
    assert all(sorted(d.jitter_order) == [0, 1, 2, 3] for d in draws[:50])


def test_colour_flags_set_the_drawn_probabilities_and_hue_range():
    pipeline = ColourPipeline(blur_p=0.0, jitter_p=1.0, grayscale_p=0.5, hue=0.5)
    gen = torch.Generator().manual_seed(3)
    draws = [sample_colour_params(pipeline, gen) for _ in range(2000)]
    assert all(d.jitter is not None and d.blur_radius is None for d in draws)
    assert binomial_ok(sum(d.grayscale for d in draws), 2000, 0.5)
    hues = np.array([d.jitter[3] for d in draws])
    assert hues.min() < -0.45 and hues.max() > 0.45 and np.abs(hues).max() <= 0.5


@pytest.mark.parametrize("strength", [0.5, 2.0])
def test_jitter_strength_scales_brightness_contrast_saturation(strength):
    pipeline = ColourPipeline(blur_p=0.0, jitter_p=1.0, hue=0.1, strength=strength)
    gen = torch.Generator().manual_seed(4)
    jitters = np.array([sample_colour_params(pipeline, gen).jitter for _ in range(3000)])
    expected_low = [1 - 0.4 * strength, 1 - 0.4 * strength, 1 - 0.2 * strength, -0.1]
    expected_high = [1 + 0.4 * strength, 1 + 0.4 * strength, 1 + 0.2 * strength, 0.1]
    assert np.allclose(jitters.min(0), expected_low, atol=0.02)
    assert np.allclose(jitters.max(0), expected_high, atol=0.02)
    assert ColourPipeline(blur_p=0.0).jitter_ranges == JITTER_RANGES  # strength 1: the released ranges, exactly


def test_transform_applies_the_drawn_colour_ops():
    """Over many real transforms: a view is gray exactly when its params say so, at the spec's 0.2 rate per view."""
    aug = CrOCAugmentation((0.5, 1.0), 16, 16)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), mode="RGB")
    gen = torch.Generator().manual_seed(9)
    n, gray = 300, [0, 0]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    for _ in range(n):
        out = aug(img, generator=gen, return_params=True)
        for view in range(2):
            rgb = out["crops"][view] * std + mean
            is_gray = bool((rgb.max(0).values - rgb.min(0).values).max() < 1e-5)
            assert is_gray == out["params"][view].colour.grayscale
            gray[view] += is_gray
    assert all(binomial_ok(g, n, 0.2) for g in gray)


def test_apply_colour_operations():
    img = Image.fromarray(np.full((8, 8, 3), (200, 100, 50), dtype=np.uint8), mode="RGB")
    none = ColourParams(None, (0, 1, 2, 3), False, None, False)
    assert np.array_equal(np.array(apply_colour(img, none)), np.array(img))
    solar = np.array(apply_colour(img, ColourParams(None, (0, 1, 2, 3), False, None, True)))
    assert solar[0, 0].tolist() == [55, 100, 50]  # only values >= 128 are inverted
    gray = np.array(apply_colour(img, ColourParams(None, (0, 1, 2, 3), True, None, False)))
    assert (gray == gray[..., :1]).all()
    assert abs(int(gray[0, 0, 0]) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1
    bright = np.array(apply_colour(img, ColourParams((1.2, 1.0, 1.0, 0.0), (0, 1, 2, 3), False, None, False)))
    assert np.abs(bright[0, 0].astype(int) - [240, 120, 60]).max() <= 2  # PIL's fixed point and HSV round trip
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8), mode="RGB")
    blurred = np.array(apply_colour(noisy, ColourParams(None, (0, 1, 2, 3), False, 2.0, False)), dtype=float)
    assert blurred.std() < 0.5 * np.array(noisy, dtype=float).std()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="--global_crops_size 100"):
        CrOCAugmentation(global_crops_size=100, patch_size=16)
    with pytest.raises(ValueError, match="--local_crops_size"):
        CrOCAugmentation(local_crops_number=2, local_crops_size=50)
    with pytest.raises(ValueError, match="--global_crops_scale"):
        CrOCAugmentation(global_crops_scale=(0.5, 0.2))


def test_device_colour_path_draws_the_same_views():
    """--augment_on device: the same boxes, flips, positions and colour draws; uint8 crops, packed colour rows."""
    from croc_utils.colour import colour_params_tensor

    kwargs = dict(local_crops_number=1, local_crops_scale=(0.05, 0.4), local_crops_size=16)
    cpu = CrOCAugmentation((0.25, 1.0), 32, 16, **kwargs)
    device = CrOCAugmentation((0.25, 1.0), 32, 16, colour_on_device=True, **kwargs)
    img = coordinate_image(90, 60)
    for seed in range(5):
        a = cpu(img, generator=torch.Generator().manual_seed(seed), return_params=True)
        b = device(img, generator=torch.Generator().manual_seed(seed), return_params=True)
        assert a["params"] == b["params"]
        assert all(torch.equal(p, q) for p, q in zip(a["patch_positions"], b["patch_positions"]))
        assert all(c.dtype == torch.uint8 for c in b["crops"]) and "colour_params" not in a
        rows = [colour_params_tensor(p.colour) for p in b["params"]]
        assert all(torch.equal(r, q) for r, q in zip(rows, b["colour_params"]))
        for raw, view, size in zip(b["crops"], b["params"], (32, 32, 16)):  # the drawn geometry, no colour yet
            expected = TF.pil_to_tensor(TF.resized_crop(img, view.box.top, view.box.left, view.box.height,
                                                        view.box.width, [size, size], TF.InterpolationMode.BICUBIC))
            assert torch.equal(raw, TF.hflip(expected) if view.flip else expected)
