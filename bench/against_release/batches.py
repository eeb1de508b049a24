"""The same batches in the formats of both codes: made by the released augmentation, or random."""

import random
from dataclasses import dataclass

import numpy as np
import torch

from bench.against_release.release import small_coordinate_grid


def patch_means(position_map: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 2, S, S) pixel-coordinate map -> (B, N, 2) patch means, computed in the released code's order of
    operations (patches of the rows then columns, mean over the p*p pixels of each)."""
    b, d, height, width = position_map.shape
    h, w = height // patch_size, width // patch_size
    patches = position_map.reshape(b, d, h, patch_size, w, patch_size).permute(0, 1, 2, 4, 3, 5)
    return patches.reshape(b, d, h * w, patch_size * patch_size).mean(dim=-1).transpose(1, 2)


def random_position_map(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, S, S) original-image (x, y) coordinates of the pixels of random crops (some flipped)."""
    maps = []
    for _ in range(batch):
        width, height = (torch.randint(size, 3 * size, (2,), generator=generator)).tolist()
        w, h = (torch.rand(2, generator=generator) * 0.75 + 0.25).tolist()
        w, h = w * width, h * height
        left, top = (torch.rand(2, generator=generator) * torch.tensor([width - w, height - h])).tolist()
        xs = left + (torch.arange(size) + 0.5) * w / size - 0.5
        ys = top + (torch.arange(size) + 0.5) * h / size - 0.5
        if torch.rand(1, generator=generator).item() < 0.5:
            xs = xs.flip(0)
        maps.append(torch.stack([xs[None, :].expand(size, size), ys[:, None].expand(size, size)]))
    return torch.stack(maps).float()


@dataclass
class Batch:
    """One batch in both codes' formats: ``release`` ((crops, positions), targets) as the released loader yields it,
    ``ours`` the dict our loader yields."""

    release: tuple
    ours: dict


def make_batch(views: list[torch.Tensor], maps: list[torch.Tensor], patch_size: int) -> Batch:
    """From the two views (B, 3, S, S) and their coordinate maps (B, 2, S, S): the released format repeats the views
    (its student sees ``images[2:]``) and ours takes patch-mean positions."""
    release = ([[*views, *views], [*maps, *maps]], torch.zeros(len(views[0])))
    ours = {"crops": list(views), "patch_positions": [patch_means(m, patch_size) for m in maps]}
    return Batch(release, ours)


def released_augmentation_batches(release, n_batches: int, batch_size: int, patch_size: int,
                                  seed: int) -> list[Batch]:
    """Batches made by the released ``DataAugmentationCrOC`` (224 px crops and their coordinate maps) from random
    images of 240-400 px."""
    with small_coordinate_grid(release, 400):
        augment = release.main.DataAugmentationCrOC(global_crops_scale=(0.25, 1.0))
    from PIL import Image

    rng = np.random.default_rng(seed)
    batches = []
    for b in range(n_batches):
        torch.manual_seed(seed + b)
        random.seed(seed + b)
        views, maps = [[], []], [[], []]
        for _ in range(batch_size):
            height, width = rng.integers(240, 400, size=2)
            pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
            pixels[: height // 2] //= 2  # some structure: a darker top half
            crops, positions = augment(Image.fromarray(pixels))
            for v in range(2):
                views[v].append(crops[v])
                maps[v].append(positions[v])
        batches.append(make_batch([torch.stack(v) for v in views], [torch.stack(m) for m in maps], patch_size))
    return batches


def synthetic_batches(n_batches: int, batch_size: int, size: int, patch_size: int, seed: int) -> list[Batch]:
    """Random images and random crop coordinate maps (when the released augmentation is not at hand)."""
    generator = torch.Generator().manual_seed(seed)
    return [make_batch([torch.randn(batch_size, 3, size, size, generator=generator) for _ in range(2)],
                       [random_position_map(batch_size, size, generator) for _ in range(2)], patch_size)
            for _ in range(n_batches)]
