"""The CrOC view pair with exact original-image positions (docs/algorithm.md section 1).

Every view is a random resized crop (bicubic) followed by a horizontal flip and a colour pipeline. Its positions are
computed from the crop box and the flip instead of resampling a coordinate grid as the release does
(docs/algorithm.md section 9).

Coordinate convention (the released grid's): pixel (row i, column j) of the original image has its centre at
(x, y) = (j, i). PIL and torchvision resize with half-pixel centres, so output column u of a crop of width w starting
at column `left`, resized to S columns, samples the original at x = left + (u + 0.5) * w / S - 0.5; rows likewise.

All randomness goes through one optional `torch.Generator`, so a sample's views are a pure function of its seed
(see `croc_utils.datasets.EpochSampler`); without one, torch's global generator is used.
"""

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps

from croc_utils.colour import BLUR_RADIUS, IMAGENET_MEAN, IMAGENET_STD, ColourParams, colour_params_tensor

CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# The released defaults of the crop flags (the parser takes its defaults from here).
GLOBAL_CROPS_SCALE = (0.25, 1.0)
GLOBAL_CROPS_SIZE = 224
LOCAL_CROPS_SCALE = (0.05, 0.4)
LOCAL_CROPS_SIZE = 96


@dataclass(frozen=True)
class CropBox:
    """A crop of the original image in integer pixels: rows [top, top + height), columns [left, left + width)."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class ColourPipeline:
    """Probabilities of one view's colour operations and the largest hue shift (docs/algorithm.md section 1)."""

    blur_p: float
    solarize_p: float = 0.0
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    hue: float = 0.1  # ColorJitter(hue=...): the shift is uniform in [-hue, hue], at most 0.5
    strength: float = 1.0  # scales the brightness, contrast and saturation jitter (1: DINO's 0.4, 0.4, 0.2)

    @property
    def jitter_ranges(self) -> tuple[tuple[float, float], ...]:
        """(brightness, contrast, saturation, hue) factor ranges of the colour jitter."""
        if self.strength == 1:  # the released ranges, exactly
            return (*JITTER_RANGES[:3], (-self.hue, self.hue))
        scaled = tuple((1 - self.strength * (1 - lo), 1 + self.strength * (hi - 1)) for lo, hi in JITTER_RANGES[:3])
        return (*scaled, (-self.hue, self.hue))


# View 1 and view 2 of the release (DINO's global views); local crops use DINO's local-crop pipeline.
VIEW1_COLOUR = ColourPipeline(blur_p=1.0)
VIEW2_COLOUR = ColourPipeline(blur_p=0.1, solarize_p=0.2)
LOCAL_COLOUR = ColourPipeline(blur_p=0.5)
RELEASED_PIPELINES = (VIEW1_COLOUR, VIEW2_COLOUR, LOCAL_COLOUR)  # the parser's defaults of the colour flags
# ColorJitter(brightness=.4, contrast=.4, saturation=.2, hue=.1) ranges.
JITTER_RANGES = ((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))


# each: 1 value, or 3 (per view); their highest values (lowest: 0)
COLOUR_FLAGS = {"blur_p": 1.0, "solarize_p": 1.0, "jitter_p": 1.0, "grayscale_p": 1.0, "hue_jitter": 0.5,
                "jitter_strength": 2.5}


def colour_pipelines(**flags) -> tuple[ColourPipeline, ColourPipeline, ColourPipeline]:
    """The (view 1, view 2, local crops) pipelines of the colour flags ``COLOUR_FLAGS`` (keyword arguments named as
    the flags). Each flag holds one value for every view or three, one per view (view 1, view 2, local crops).
    ValueError naming the flag for a wrong count or a value out of range ([0, 1]; [0, 0.5] for --hue_jitter; [0, 2.5]
    for --jitter_strength, where the brightness factor's range 1 +- 0.4 x strength reaches 0)."""
    per_view = {}
    for flag in COLOUR_FLAGS:
        values = list(flags[flag]) if isinstance(flags[flag], (list, tuple)) else [flags[flag]]
        if len(values) not in (1, 3):
            raise ValueError(f"--{flag} takes 1 value (every view) or 3 (view 1, view 2, local crops), got "
                             f"{len(values)}")
        high = COLOUR_FLAGS[flag]
        for value in values:
            if not 0 <= value <= high:
                raise ValueError(f"--{flag} must lie in [0, {high:g}], got {value}")
        per_view[flag] = values * 3 if len(values) == 1 else values
    return tuple(ColourPipeline(blur_p=b, solarize_p=s, jitter_p=j, grayscale_p=g, hue=h, strength=k)
                 for b, s, j, g, h, k in zip(*(per_view[flag] for flag in COLOUR_FLAGS)))


@dataclass(frozen=True)
class ViewParams:
    """Everything random about one view."""

    box: CropBox
    flip: bool
    colour: ColourParams | None


def sample_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio=CROP_RATIO, generator=None, attempts: int = 10
) -> CropBox:
    """Draw a random resized crop box, with torchvision's `RandomResizedCrop.get_params` rule.

    Area fraction uniform in `scale`, log aspect ratio uniform in log(`ratio`); the first of `attempts` draws that fits
    wins, else a centred crop with the aspect ratio clamped to `ratio`.
    """
    u = torch.rand(attempts, 4, generator=generator, dtype=torch.float64)  # (attempts, 4)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    if fits.any():
        k = int(fits.long().argmax())
        h_k, w_k = int(h[k]), int(w[k])
        top = int(u[k, 2] * (height - h_k + 1))
        left = int(u[k, 3] * (width - w_k + 1))
        return CropBox(top, left, h_k, w_k)
    return _central_box(height, width, ratio)


def _central_box(height: int, width: int, ratio) -> CropBox:
    """torchvision's fallback: the largest centred crop whose aspect ratio lies in `ratio`."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def view_positions(box: CropBox, flip: bool, size: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Original-image (x, y) of every pixel and every patch of a view (docs/algorithm.md sections 1 and 3, step 5).

    Args:
        box: the crop, resized to `size` x `size`.
        flip: whether the resized crop was flipped horizontally.
        size: side S of the view; `patch_size` must divide it.
    Returns:
        pixel map (2, S, S) float32, channel 0 = x (column), channel 1 = y (row), as the released grid gives it;
        patch positions (N, 2) float32, N = (S / patch_size)^2 in row-major token order, each the mean of its
        patch's pixel positions.
    """
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    xs = box.left + centres * (box.width / size) - 0.5  # (S,)
    ys = box.top + centres * (box.height / size) - 0.5  # (S,)
    if flip:
        xs = xs.flip(0)
    pixel_map = torch.stack((xs.expand(size, size), ys[:, None].expand(size, size))).float()  # (2, S, S)
    # x depends on the column only and y on the row only, so a patch mean is the mean of its columns' x and rows' y.
    patch_x = xs.view(-1, patch_size).mean(1)  # (S/p,)
    patch_y = ys.view(-1, patch_size).mean(1)  # (S/p,)
    grid = size // patch_size
    patch_pos = torch.stack((patch_x.expand(grid, grid), patch_y[:, None].expand(grid, grid)), dim=-1)  # (g, g, 2)
    return pixel_map, patch_pos.reshape(-1, 2).float()


def resized_crop(img: Image.Image, box: CropBox, size: int, flip: bool) -> Image.Image:
    """Crop `box`, resize to `size` x `size` (bicubic, as the release) and optionally flip; any PIL mode."""
    out = TF.resized_crop(img, box.top, box.left, box.height, box.width, [size, size], TF.InterpolationMode.BICUBIC)
    return TF.hflip(out) if flip else out


def sample_colour_params(pipeline: ColourPipeline, generator=None) -> ColourParams:
    """Draw one view's colour operations; always consumes the same number of random values."""
    u = torch.rand(9, generator=generator, dtype=torch.float64).tolist()
    order = tuple(torch.randperm(4, generator=generator).tolist())
    jitter = None
    if u[0] < pipeline.jitter_p:
        jitter = tuple(lo + (hi - lo) * v for (lo, hi), v in zip(pipeline.jitter_ranges, u[1:5]))
    blur = BLUR_RADIUS[0] + (BLUR_RADIUS[1] - BLUR_RADIUS[0]) * u[7] if u[6] < pipeline.blur_p else None
    return ColourParams(jitter, order, u[5] < pipeline.grayscale_p, blur, u[8] < pipeline.solarize_p)


def apply_colour(img: Image.Image, params: ColourParams) -> Image.Image:
    """Colour jitter (ops in random order, as ColorJitter), grayscale, Gaussian blur, solarisation, in DINO's order."""
    if params.jitter is not None:
        adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in params.jitter_order:
            img = adjust[k](img, params.jitter[k])
    if params.grayscale:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if params.blur_radius is not None:
        img = img.filter(ImageFilter.GaussianBlur(radius=params.blur_radius))
    if params.solarize:
        img = ImageOps.solarize(img, threshold=128)
    return img


def normalize(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, S, S) float, ImageNet mean/std."""
    return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)


def _check_size(size: int, patch_size: int, flag: str) -> None:
    if size <= 0 or size % patch_size:
        raise ValueError(f"--{flag} {size} is not a positive multiple of --patch_size {patch_size}")


def _check_scale(scale, flag: str) -> tuple[float, float]:
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"--{flag} {tuple(scale)} must be two numbers with 0 < min <= max <= 1")
    return float(scale[0]), float(scale[1])


class CrOCAugmentation:
    """The two global views of an image (+ optional DINO-style local crops) with their positions.

    docs/algorithm.md section 1. The released code hands the model [v1, v2, v1, v2]: the teacher takes the first two
    entries and the student the last two, the same views. We hand each view once, [v1, v2, *locals]: the teacher
    takes the first two, the student all of them (the same computation, without collating each global view twice).

    Args:
        global_crops_scale: area range of the global crops; `global_crops_size`: their side S (multiple of
            `patch_size`).
        local_crops_number: local crops for the student (0 = the release); `local_crops_scale`, `local_crops_size`:
            their area range and side.
        colour: False skips every colour operation (normalisation stays), e.g. to test positions.
        colour_on_device: return uint8 crops and the drawn colour operations (``--augment_on device``) instead of
            applying them here; ``croc_utils.photometric.apply_photometric`` applies them on the training device.
            The random draws are the same either way.
        pixel_positions: also return every pixel's original-image position (training needs the patches' only).
        pipelines: the colour operations of (view 1, view 2, local crops); default the release's (``colour_pipelines``
            builds them from the colour flags).
    Calling it on a PIL RGB image returns a dict of lists in the order [v1, v2, *locals]:
        'crops': (3, S, S) float tensors, normalised (uint8 and not colour-augmented with ``colour_on_device``);
        'patch_positions': (N, 2) per-patch original-image (x, y);
        'colour_params': (PARAMS_LENGTH,) rows of the drawn colour operations, with ``colour_on_device`` only;
        'positions': (2, S, S) per-pixel (x, y), with ``pixel_positions`` only;
        'params': [ViewParams], if ``return_params``.
    """

    def __init__(
        self,
        global_crops_scale=GLOBAL_CROPS_SCALE,
        global_crops_size: int = GLOBAL_CROPS_SIZE,
        patch_size: int = 16,
        local_crops_number: int = 0,
        local_crops_scale=LOCAL_CROPS_SCALE,
        local_crops_size: int = LOCAL_CROPS_SIZE,
        *,
        colour: bool = True,
        colour_on_device: bool = False,
        pixel_positions: bool = False,
        pipelines: tuple[ColourPipeline, ColourPipeline, ColourPipeline] = RELEASED_PIPELINES,
    ):
        _check_size(global_crops_size, patch_size, "global_crops_size")
        if local_crops_number < 0:
            raise ValueError(f"--local_crops_number {local_crops_number} must be >= 0")
        if local_crops_number:
            _check_size(local_crops_size, patch_size, "local_crops_size")
        self.global_crops_scale = _check_scale(global_crops_scale, "global_crops_scale")
        self.local_crops_scale = _check_scale(local_crops_scale, "local_crops_scale")
        self.global_crops_size = global_crops_size
        self.local_crops_size = local_crops_size
        self.local_crops_number = local_crops_number
        self.patch_size = patch_size
        self.colour, self.colour_on_device, self.pixel_positions = colour, colour_on_device, pixel_positions
        self.pipelines = tuple(pipelines)

    @classmethod
    def from_args(cls, args, **kwargs) -> "CrOCAugmentation":
        """The augmentation of a run's flags (``--global_crops_*``, ``--local_crops_*``, ``--patch_size``,
        ``--augment_on`` and the colour flags ``COLOUR_FLAGS``). ``args``: parsed flags, or a checkpoint's saved
        args after ``croc_utils.parser.upgrade_args``."""
        pipelines = colour_pipelines(**{flag: getattr(args, flag) for flag in COLOUR_FLAGS})
        return cls(args.global_crops_scale, args.global_crops_size, args.patch_size, args.local_crops_number,
                   args.local_crops_scale, args.local_crops_size, pipelines=pipelines,
                   colour_on_device=args.augment_on == "device", **kwargs)

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None, return_params: bool = False):
        global_args = (self.global_crops_size, self.global_crops_scale)
        local_args = (self.local_crops_size, self.local_crops_scale)
        view1, view2, local = self.pipelines
        specs = [(*global_args, view1), (*global_args, view2)]
        specs += [(*local_args, local)] * self.local_crops_number
        views = [self._view(img, size, scale, pipeline, generator) for size, scale, pipeline in specs]
        out = {key: [view[key] for view in views] for key in views[0]}
        if not return_params:
            del out["params"]
        return out

    def _view(self, img: Image.Image, size: int, scale, pipeline: ColourPipeline, generator) -> dict:
        """One view: crop, patch positions (N, 2), ViewParams, and colour row / pixel positions when asked."""
        box = sample_crop_box(img.height, img.width, scale, generator=generator)
        flip = bool(torch.rand(1, generator=generator) < 0.5)
        colour = sample_colour_params(pipeline, generator) if self.colour else None
        view = resized_crop(img, box, size, flip)
        pixel_map, patch_pos = self.view_positions(box, flip, size)
        out = {"patch_positions": patch_pos, "params": ViewParams(box, flip, colour)}
        if self.colour_on_device:
            out.update(crops=TF.pil_to_tensor(view), colour_params=colour_params_tensor(colour))
        else:
            out["crops"] = normalize(view if colour is None else apply_colour(view, colour))
        if self.pixel_positions:
            out["positions"] = pixel_map
        return out

    def view_positions(self, box: CropBox, flip: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of one view; a method so a benchmark can swap in the released grid computation."""
        return view_positions(box, flip, size, self.patch_size)
