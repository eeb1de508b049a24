"""The images and masks the dense probe shows every backbone, prepared once (docs/evaluation.md section 4).

On the synthetic scenes the probe's sets are disjoint streams of the generator: pretraining reads train-split scenes
0..N-1, the probe's pool train-split scenes from ``POOL_OFFSET`` on, val the val split; the ``dev`` evaluation split
swaps val for train-split scenes from ``DEV_OFFSET`` on, for choosing recipes without ever looking at val. On a real
dataset: its first train and val images.
"""

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from eval.seg_datasets import SyntheticSegmentation, build_segmentation_dataset, mask_fixes
from eval.seg_transforms import EvalTransform

__all__ = ["DEV_OFFSET", "POOL_OFFSET", "ProbeData", "dataset_probe_data", "stack_dataset", "synthetic_probe_data"]

POOL_OFFSET = 1_000_000  # first train-split scene of the probe's train pool: beyond any pretraining set
DEV_OFFSET = 2_000_000  # first train-split scene of the development set (recipe choices), disjoint from both


@dataclass
class ProbeData:
    """Images and masks prepared once, then shown to every backbone.

    pool_images (P, 3, S, S) and val_images (V, 3, S, S): normalised, float16; pool_masks (P, S, S) and
    val_masks (V, S, S): uint8 class ids, 255 = ignore.
    """

    pool_images: torch.Tensor
    pool_masks: torch.Tensor
    val_images: torch.Tensor
    val_masks: torch.Tensor
    class_names: tuple[str, ...]
    description: dict = field(default_factory=dict)


def stack_dataset(dataset, num_workers: int = 0, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, mask) of a dataset with a deterministic paired transform: ((N, 3, S, S) f16, (N, S, S) u8)."""
    images, masks = [], []
    for img, mask in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        images.append(img.half())
        masks.append(mask.to(torch.uint8))
    return torch.cat(images), torch.cat(masks)


def synthetic_probe_data(*, pool_images: int = 600, val_images: int = 200, input_size: int = 96,
                         synthetic_size: int | None = None, seed: int = 0, eval_split: str = "val",
                         style: str = "default", num_workers: int = 0) -> ProbeData:
    """Pool, and val (or dev) scenes of the embedded generator, resized to ``input_size`` (see the module doc)."""
    if eval_split not in ("val", "dev"):
        raise ValueError(f"--eval_split must be val or dev, got {eval_split!r}")
    size = synthetic_size or input_size
    transform = EvalTransform(input_size)
    pool = SyntheticSegmentation("train", pool_images, size, seed, transform, first_index=POOL_OFFSET, cache=True,
                                 style=style)
    split, first = ("val", 0) if eval_split == "val" else ("train", DEV_OFFSET)
    val = SyntheticSegmentation(split, val_images, size, seed, transform, first_index=first, cache=True, style=style)
    description = {"dataset": "synthetic", "eval_split": eval_split, "pool_images": pool_images,
                   "pool_first_index": POOL_OFFSET, "val_split": split, "val_first_index": first,
                   "val_images": val_images, "synthetic_size": size, "input_size": input_size, "data_seed": seed,
                   "style": style}
    return ProbeData(*stack_dataset(pool, num_workers), *stack_dataset(val, num_workers), pool.class_names,
                     description)


def dataset_probe_data(name: str, data_path: str, *, pool_images: int, val_images: int, input_size: int,
                       num_workers: int = 0) -> ProbeData:
    """The first ``pool_images`` train and ``val_images`` val images (0 = all) of a real segmentation dataset."""
    transform = EvalTransform(input_size)
    sets = [build_segmentation_dataset(name, data_path, split, transform) for split in ("train", "val")]
    sets = [torch.utils.data.Subset(s, range(min(n, len(s)) if n else len(s))) for s, n in
            zip(sets, (pool_images, val_images))]
    pool, val = stack_dataset(sets[0], num_workers), stack_dataset(sets[1], num_workers)
    description = {"dataset": name, "data_path": data_path, "pool_images": len(sets[0]), "val_images": len(sets[1]),
                   "input_size": input_size,  # masks the readers mended (counted once every image was read)
                   "mask_fixes": {"pool": mask_fixes(sets[0]), "val": mask_fixes(sets[1])}}
    return ProbeData(*pool, *val, tuple(sets[1].dataset.class_names), description)
