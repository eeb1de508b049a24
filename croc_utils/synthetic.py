"""Procedural scene dataset with per-pixel class masks, generated on the fly (no files, no download).

Each image is a textured background with several object instances painted back to front (so they occlude each
other), of varied scale, rotation and aspect. The classes differ by SHAPE first; each class also has a preferred
texture family (used 85% of the time, another family otherwise), while colours come from one palette shared by every
class and by the backgrounds, and background textures come from the same families as the objects. So neither a colour
nor a texture alone labels a pixel: a patch's class needs the texture and shape around it. A linear probe on a
randomly initialised ViT-S/16 reaches only ~15% patch mIoU (all-background: 9%; raw patch pixels: 9%), see
`python bench/bench_data.py --probe`, while a small supervised CNN keeps improving (28% after 7 short CPU epochs at
96 px): hard for random features, learnable.

An image is a pure function of (seed, split, index): `SyntheticScenes('train', 1000, seed=0)[7]` is always the same.

Run `python -m croc_utils.synthetic --out figures/synthetic_sample.png` to draw a few images next to their masks.
"""

import argparse
import math
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from croc_utils.texture_scenes import TEXTURE_FAMILIES, render_texture_scene


class DataConfigError(ValueError):
    """A data flag that cannot be used (a missing folder or archive, no images, an unknown dataset type, a batch
    larger than the data, a bad --synthetic_* value); the message is one line naming the flag. Defined here, the
    lowest of the data modules; croc_utils.datasets raises it too. Other ValueErrors are bugs, not user errors."""


class DataPathError(DataConfigError, FileNotFoundError):
    """A data flag naming a file or folder that does not exist."""


SYNTHETIC_CLASSES = ("background", "disc", "box", "triangle", "ring", "star", "cross", "crescent")
TEXTURES = ("rings", "checker", "stripes", "dots", "sectors", "grid", "waves")
# Preferred texture family of each object class (index into TEXTURES), in SYNTHETIC_CLASSES[1:] order.
CLASS_TEXTURE = (0, 1, 2, 3, 4, 5, 6)
PREFERRED_TEXTURE_P = 0.85
SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SceneStyle:
    """Layout knobs of the generator. ``default`` is the scene set every test and README number was measured on.

    objects: instances per scene, an integer in [lo, hi).
    radius: object radius as a fraction of the image side, log-uniform in [lo, hi].
    texture_scale: multiplies every texture period (objects and background), so textures stay legible when scenes
        are drawn small.
    """

    objects: tuple[int, int] = (4, 10)
    radius: tuple[float, float] = (0.06, 0.32)
    texture_scale: float = 1.0
    kind: str = "objects"  # "objects" (classes by shape, SYNTHETIC_CLASSES) or "texture" (TEXTURE_FAMILIES)

    @property
    def classes(self) -> tuple[str, ...]:
        return TEXTURE_FAMILIES if self.kind == "texture" else SYNTHETIC_CLASSES


# "large": fewer, bigger objects with coarser textures, so that scenes of 96-128 px still hold objects of several
# 16-px patches (the default's smallest objects are a fraction of one such patch). For small-scale pretraining.
# "texture": Voronoi mosaics whose classes are texture families (croc_utils.texture_scenes, docs/synthetic.md).
SCENE_STYLES = {"default": SceneStyle(), "large": SceneStyle(objects=(2, 6), radius=(0.12, 0.36), texture_scale=1.5),
                "texture": SceneStyle(kind="texture")}

# One palette for objects and backgrounds alike, so colour carries no class information.
PALETTE = np.array(
    [
        [0.90, 0.20, 0.15],
        [0.95, 0.60, 0.10],
        [0.95, 0.90, 0.25],
        [0.35, 0.75, 0.25],
        [0.10, 0.45, 0.20],
        [0.20, 0.70, 0.80],
        [0.15, 0.30, 0.75],
        [0.50, 0.25, 0.65],
        [0.85, 0.45, 0.70],
        [0.55, 0.35, 0.20],
        [0.92, 0.92, 0.90],
        [0.45, 0.45, 0.45],
        [0.10, 0.10, 0.12],
        [0.80, 0.70, 0.55],
    ],
    dtype=np.float32,
)
# Colours used to draw masks (index = class), not used by the images.
MASK_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
    ],
    dtype=np.uint8,
)


def _sharp(wave: np.ndarray, edge: float = 3.0) -> np.ndarray:
    """Map a wave in [-1, 1] to a two-level pattern in [0, 1] with short soft edges (less aliasing than a step)."""
    return np.clip(0.5 + edge * wave, 0.0, 1.0)


def texture(kind: int, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Blend weight in [0, 1] of texture family TEXTURES[kind] at local pixel coordinates (u, v), any shape."""
    a, b = u * (2 * math.pi / period), v * (2 * math.pi / period)
    name = TEXTURES[kind]
    if name == "rings":
        return _sharp(np.sin(np.sqrt(a * a + b * b)))
    if name == "checker":
        return _sharp(np.sin(a) * np.sin(b))
    if name == "stripes":
        return _sharp(np.sin(a))
    if name == "dots":
        fu, fv = np.sin(a / 2), np.sin(b / 2)
        return _sharp(fu * fu + fv * fv - 1.2, edge=4.0)
    if name == "sectors":
        return _sharp(np.sin(6 * np.arctan2(v, u)))
    if name == "grid":
        return _sharp(np.maximum(np.cos(a), np.cos(b)) - 0.6, edge=4.0)
    return _sharp(np.sin(a + 2.0 * np.sin(b / 2)))  # waves


def shape_mask(cls: int, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Inside test of class `cls` (1..7) at normalised coordinates (p, q) (the shape spans about [-1.2, 1.2]^2)."""
    rho2 = p * p + q * q
    name = SYNTHETIC_CLASSES[cls]
    if name == "disc":
        return rho2 <= 1.0
    if name == "box":
        return np.maximum(np.abs(p), np.abs(q)) <= 0.85
    if name == "triangle":
        return (q >= -0.5) & (q <= 1.0 - math.sqrt(3.0) * np.abs(p))
    if name == "ring":
        return (rho2 <= 1.0) & (rho2 >= 0.36)
    if name == "star":
        t = np.mod(np.arctan2(q, p) * (5 / (2 * math.pi)) + 0.25, 1.0)  # +0.25: one spike points up
        return np.sqrt(rho2) <= 0.4 + 0.7 * (1.0 - 2.0 * np.abs(t - 0.5))
    if name == "cross":
        ap, aq = np.abs(p), np.abs(q)
        return ((ap <= 0.28) & (aq <= 1.0)) | ((aq <= 0.28) & (ap <= 1.0))
    return (rho2 <= 1.0) & ((p - 0.5) ** 2 + q * q >= 0.64)  # crescent


def _two_colours(rng: np.random.Generator) -> np.ndarray:
    """Two distinct palette colours, slightly jittered: (2, 3) float32."""
    idx = rng.choice(len(PALETTE), size=2, replace=False)
    return np.clip(PALETTE[idx] + rng.uniform(-0.08, 0.08, (2, 3)), 0.0, 1.0).astype(np.float32)


def _background(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """A textured background (size, size, 3) float32: an object texture at lower contrast over a smooth colour field."""
    coords = np.arange(size, dtype=np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    x, y = coords[None, :], coords[:, None]
    u = math.cos(theta) * x + math.sin(theta) * y
    v = -math.sin(theta) * x + math.cos(theta) * y
    weight = texture(int(rng.integers(len(TEXTURES))), u, v, period=rng.uniform(6, 18) * scale)
    weight = 0.5 + rng.uniform(0.3, 0.8) * (weight - 0.5)
    colours = _two_colours(rng)
    image = colours[0] + weight[..., None] * (colours[1] - colours[0])  # (S, S, 3)
    # A smooth field of a third colour: a few random low-frequency plane waves.
    freq = rng.uniform(0.5, 2.5, (3, 2)) * (2 * math.pi / size) * rng.choice([-1, 1], (3, 2))
    ax = freq[:, :1] * coords + rng.uniform(0, 2 * math.pi, (3, 1))  # (3, S) column phases
    by = freq[:, 1:] * coords  # (3, S) row phases
    # sin(ax + by) = sin(ax) cos(by) + cos(ax) sin(by), summed over the 3 waves: two (S, 3) @ (3, S) products.
    field = (np.cos(by).T @ np.sin(ax) + np.sin(by).T @ np.cos(ax)).astype(np.float32) / 3  # (S, S) in [-1, 1]
    alpha = np.clip(0.5 * (field + 1.0) * rng.uniform(0.3, 0.7), 0.0, 1.0)[..., None]
    third = PALETTE[rng.integers(len(PALETTE))]
    return image + alpha * (third - image)


def _paint_object(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale: float,
                  radius_range: tuple[float, float] = (0.06, 0.32)) -> None:
    """Paint one random instance in place over `image` (S, S, 3) and `mask` (S, S); radius_range: fraction of S."""
    size = mask.shape[0]
    cls = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
    radius = size * math.exp(rng.uniform(math.log(radius_range[0]), math.log(radius_range[1])))
    cx, cy = rng.uniform(0, size, 2)
    theta = rng.uniform(0, 2 * math.pi)
    stretch = math.exp(rng.uniform(-0.2, 0.2))
    preferred = rng.random() < PREFERRED_TEXTURE_P
    kind = CLASS_TEXTURE[cls - 1] if preferred else int(rng.integers(len(TEXTURES)))
    period = rng.uniform(4, 12) * scale
    colours = _two_colours(rng)
    half = 1.25 * radius * max(stretch, 1 / stretch)
    x0, x1 = max(int(cx - half), 0), min(int(cx + half) + 1, size)
    y0, y1 = max(int(cy - half), 0), min(int(cy + half) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx  # (1, w)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy  # (h, 1)
    u = math.cos(theta) * dx + math.sin(theta) * dy  # (h, w), rotated pixel units
    v = -math.sin(theta) * dx + math.cos(theta) * dy
    inside = shape_mask(cls, u / (radius * stretch), v * stretch / radius)  # (h, w) bool
    weight = texture(kind, u, v, period)[inside][:, None]  # (n_inside, 1)
    image[y0:y1, x0:x1][inside] = colours[0] + weight * (colours[1] - colours[0])
    mask[y0:y1, x0:x1][inside] = cls


def render_scene(rng: np.random.Generator, size: int = 224, style: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """One scene: image (size, size, 3) uint8 and mask (size, size) uint8 with values in [0, len(classes)), the
    classes of the style (``SceneStyle.classes``).

    ``style`` names a :class:`SceneStyle` of ``SCENE_STYLES``.
    """
    layout = scene_style(style)
    if layout.kind == "texture":
        image, mask = render_texture_scene(rng, size)
    else:
        scale = size / 224 * layout.texture_scale
        image = _background(rng, size, scale)
        mask = np.zeros((size, size), dtype=np.uint8)
        for _ in range(int(rng.integers(*layout.objects))):
            _paint_object(image, mask, rng, scale, layout.radius)
    # Global illumination gradient and sensor noise, so that no class is a flat colour.
    gx, gy = rng.uniform(-0.15, 0.15, 2) / size
    coords = np.arange(size, dtype=np.float32)
    image *= (1.0 + gx * (coords[None, :] - size / 2) + gy * (coords[:, None] - size / 2))[..., None]
    image += rng.normal(0.0, 0.02, (size, size, 1)).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mask


def scene_style(name: str) -> SceneStyle:
    if name not in SCENE_STYLES:
        raise DataConfigError(f"--synthetic_style must be one of {', '.join(SCENE_STYLES)}, got {name!r}")
    return SCENE_STYLES[name]


def _render_range(seed: int, split: str, size: int, start: int, stop: int,
                  style: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Scenes start..stop-1 of a split (absolute indices): images (n, size, size, 3) uint8, masks (n, size, size)."""
    scenes = [render_scene(np.random.default_rng([seed, SPLITS[split], i]), size, style) for i in range(start, stop)]
    return np.stack([img for img, _ in scenes]), np.stack([mask for _, mask in scenes])


def render_all(split: str, num_images: int, size: int, seed: int, workers: int | None = None, first_index: int = 0,
               style: str = "default"):
    """Scenes first_index .. first_index + num_images - 1 of a split, drawn once in ``workers`` processes (default:
    all CPUs): (images, masks) arrays.

    The result equals drawing each scene on demand: scene i is still a function of (seed, split, i) alone.
    """
    workers = max(1, min(workers or os.cpu_count() or 1, num_images))
    bounds = first_index + np.linspace(0, num_images, min(num_images, 8 * workers) + 1).astype(int)
    chunks = [(seed, split, size, int(a), int(b), style) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if workers == 1:
        parts = [_render_range(*chunk) for chunk in chunks]
    else:
        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            parts = list(pool.map(_render_range, *zip(*chunks)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` (cheap) unless this process has initialised CUDA or runs other threads: a forked copy of a CUDA
    context or of a lock held by another thread can crash or hang the child, so ``spawn`` then."""
    torch = sys.modules.get("torch")  # not imported here: only a process that uses torch can have CUDA on
    cuda_on = torch is not None and torch.cuda.is_initialized()
    return multiprocessing.get_context("spawn" if cuda_on or threading.active_count() > 1 else "fork")


class SyntheticScenes:
    """Deterministic synthetic segmentation scenes, rendered on demand or drawn once and served from memory.

    Args:
        split: 'train' or 'val' (disjoint random streams).
        num_images: length of the dataset.
        size: side of the square images in pixels (any size; features scale with it).
        seed: base seed; image `index` is a pure function of (seed, split, index).
        cache: draw every scene once at construction (in parallel, see ``render_all``) and serve them from memory
            (``--synthetic_cache``): num_images * size^2 * 4 bytes, e.g. 200 MiB for 4096 scenes of 112 px.
        workers: processes drawing the cache (default: all CPUs).
        first_index: item i is scene ``first_index + i`` of the split, so disjoint sets of one split can be made
            (e.g. a development set from train-split scenes that pretraining never sees). Default 0.
        style: a name of ``SCENE_STYLES`` (``--synthetic_style``). Default: ``default``.
    Items: (PIL.Image RGB size x size, mask uint8 numpy (size, size)), class names in SYNTHETIC_CLASSES.
    """

    def __init__(self, split: str = "train", num_images: int = 1000, size: int = 224, seed: int = 0,
                 cache: bool = False, workers: int | None = None, first_index: int = 0, style: str = "default"):
        if split not in SPLITS:
            raise DataConfigError(f"synthetic split must be one of {sorted(SPLITS)}, got {split!r}")
        if num_images <= 0:
            raise DataConfigError(f"--synthetic_num_images must be positive, got {num_images}")
        if size < 16:
            raise DataConfigError(f"--synthetic_size must be at least 16 px, got {size}")
        if first_index < 0:
            raise DataConfigError(f"synthetic first_index must be >= 0, got {first_index}")
        self.split, self.num_images, self.size, self.seed = split, num_images, size, seed
        self.first_index, self.style = first_index, style
        scene_style(style)  # a bad name fails here, not in a loader worker
        self.classes = scene_style(style).classes
        self._images = self._masks = None
        if cache:
            self._images, self._masks = render_all(split, num_images, size, seed, workers, first_index, style)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray]:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        index %= self.num_images
        if self._images is not None:
            return Image.fromarray(self._images[index], mode="RGB"), self._masks[index]
        rng = np.random.default_rng([self.seed, SPLITS[self.split], self.first_index + index])
        image, mask = render_scene(rng, self.size, self.style)
        return Image.fromarray(image, mode="RGB"), mask


def colourize_mask(mask: np.ndarray) -> np.ndarray:
    """Class mask (H, W) -> RGB (H, W, 3) uint8 with MASK_COLOURS."""
    return MASK_COLOURS[mask]


def save_figure(out: str, seed: int = 0, split: str = "val", size: int = 224, count: int = 3,
                style: str = "default") -> Path:
    """Save `count` synthetic images next to their colour-coded masks, with a class legend, as a PNG."""
    scenes = SyntheticScenes(split, count, size, seed, style=style)
    legend_h, gap = 22, 4
    canvas = Image.new("RGB", (2 * size + gap, count * (size + gap) + legend_h * len(scenes.classes)), "white")
    for row in range(count):
        image, mask = scenes[row]
        canvas.paste(image, (0, row * (size + gap)))
        canvas.paste(Image.fromarray(colourize_mask(mask)), (size + gap, row * (size + gap)))
    draw = ImageDraw.Draw(canvas)
    top = count * (size + gap)
    for cls, name in enumerate(scenes.classes):
        y = top + cls * legend_h + 3
        draw.rectangle([4, y, 20, y + 14], fill=tuple(int(c) for c in MASK_COLOURS[cls]), outline="black")
        draw.text((28, y + 1), f"{cls}: {name}", fill="black")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Draw synthetic scenes next to their colour-coded masks.")
    parser.add_argument("--out", default="figures/synthetic_sample.png", help="PNG to write.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="val", choices=sorted(SPLITS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--count", type=int, default=3, help="Number of image/mask pairs.")
    parser.add_argument("--style", default="default", choices=sorted(SCENE_STYLES))
    args = parser.parse_args()
    print(save_figure(args.out, args.seed, args.split, args.size, args.count, args.style))


if __name__ == "__main__":
    main()
