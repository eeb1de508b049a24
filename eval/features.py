"""Feature extraction shared by every evaluator, and the backbone flags they share.

The backbone itself is built and loaded by ``models.pretrained.load_backbone`` (docs/evaluation.md "Loading a
backbone"). The features follow docs/evaluation.md sections 1-3: patch tokens after the final norm of the last n
blocks, frozen backbone in eval mode.
"""

import argparse
import json
from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from croc_utils.atomic_io import atomic_write
from croc_utils.cli import UsageError, default_device, device_flag
from models import ARCH_CONFIGS

__all__ = ["add_backbone_args", "check_input_size", "check_n_last_blocks", "extract_features", "feature_cache_gb",
           "patch_features", "write_json"]


def add_backbone_args(parser: argparse.ArgumentParser) -> None:
    """The flags every evaluator shares (DINO names), in a "backbone" argument group."""
    group = parser.add_argument_group("backbone")
    group.add_argument("--pretrained_weights", default="", type=str,
                       help="Checkpoint to evaluate: a CrOC/DINO training checkpoint or a bare backbone state dict. "
                            "Empty: random initialisation (a notice is printed). Default: empty.")
    group.add_argument("--checkpoint_key", default="teacher", type=str,
                       help="Entry of a full checkpoint holding the network (teacher or student). Default: teacher.")
    group.add_argument("--arch", default="vit_small", type=str, choices=list(ARCH_CONFIGS),
                       help="Backbone architecture. Default: vit_small.")
    group.add_argument("--patch_size", default=16, type=int, choices=[8, 16], help="Patch size. Default: 16.")
    group.add_argument("--device", default=default_device(), type=device_flag,
                       help="Torch device (checked to exist on this machine). Default: cuda when available, else cpu.")


def check_input_size(size: int, patch_size: int, flag: str = "--input_size") -> None:
    if size % patch_size:
        raise UsageError(f"{flag} {size} must be a multiple of --patch_size {patch_size}")


def write_json(path, obj, indent: int = 2) -> None:
    """``obj`` as JSON at ``path``, written atomically (a crash leaves the previous file or the new one)."""
    text = json.dumps(obj, indent=indent).encode()
    atomic_write(str(path), lambda f: f.write(text), size=len(text))


def check_n_last_blocks(model: nn.Module, n_last_blocks: int) -> None:
    """``--n_last_blocks`` must name blocks the backbone has (DINO's get_intermediate_layers would silently take
    fewer)."""
    depth = len(model.blocks)
    if not 1 <= n_last_blocks <= depth:
        raise UsageError(f"--n_last_blocks {n_last_blocks} is not in 1..{depth}, the blocks of this backbone")


@torch.no_grad()
def patch_features(model: nn.Module, images: torch.Tensor, n_last_blocks: int = 1) -> torch.Tensor:
    """Patch tokens of the last ``n_last_blocks`` blocks, each after the final norm, concatenated on channels.

    Args:
        images: (B, 3, S, S') with S, S' multiples of the patch size.
    Returns:
        (B, n_last_blocks * D, S / p, S' / p), the oldest block's channels first (DINO's concatenation order).
    """
    p = model.patch_size
    if images.shape[-2] % p or images.shape[-1] % p:
        raise ValueError(f"input size {tuple(images.shape[-2:])} is not a multiple of the patch size {p}")
    h, w = images.shape[-2] // p, images.shape[-1] // p
    blocks = model.get_intermediate_layers(images, n=n_last_blocks)
    tokens = torch.cat([b[:, 1:] for b in blocks], dim=-1)  # (B, h*w, n*D)
    return tokens.transpose(1, 2).reshape(images.shape[0], -1, h, w)


@torch.no_grad()
def extract_features(model: nn.Module, batches: Iterable, n_last_blocks: int, device: str | torch.device,
                     dtype: torch.dtype = torch.float32, desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a whole loader, kept on the CPU: ((N, n*D, h, w) in ``dtype``, masks (N, S, S) uint8).

    float32 (default) keeps the features as the backbone computed them (the authors' code never stores them);
    float16 halves the memory at a rounding cost.

    ``batches`` yields (images (B, 3, S, S), masks (B, S, S)) as the paired transforms produce them.
    """
    feats, masks = [], []
    for images, target in tqdm(batches, desc=desc, disable=None):
        feats.append(patch_features(model, images.to(device, non_blocking=True), n_last_blocks).to("cpu", dtype))
        masks.append(target.to(torch.uint8))
    return torch.cat(feats), torch.cat(masks)


def feature_cache_gb(num_images: int, channels: int, grid: tuple[int, int], dtype=torch.float32) -> float:
    """Memory a feature cache of ``num_images`` would take, in GiB."""
    itemsize = torch.tensor([], dtype=dtype).element_size()
    return num_images * channels * grid[0] * grid[1] * itemsize / 2**30
