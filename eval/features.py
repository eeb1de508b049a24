"""The one checkpoint-loading and feature-extraction path shared by every evaluator.

docs/evaluation.md "Loading a backbone" (teacher by default, ``module.`` / ``backbone.`` stripped, ``head.*`` dropped,
bare backbone state dicts accepted, safe loading) and the feature definitions of sections 1-3 (patch tokens after
the final norm of the last n blocks, frozen backbone in eval mode).
"""

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from croc_utils.checkpoint import CheckpointError, backbone_state_dict, load_backbone_state, load_checkpoint
from models import ARCH_CONFIGS, build_backbone

__all__ = [
    "add_backbone_args",
    "state_grid",
    "default_device",
    "extract_features",
    "feature_cache_gb",
    "load_backbone",
    "patch_features",
    "run_cli",
]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_backbone_args(parser: argparse.ArgumentParser) -> None:
    """The flags every evaluator shares (DINO names)."""
    parser.add_argument("--pretrained_weights", default="", type=str,
                        help="Checkpoint to evaluate: a CrOC/DINO training checkpoint or a bare backbone state dict. "
                             "Empty: random initialisation (a notice is printed).")
    parser.add_argument("--checkpoint_key", default="teacher", type=str,
                        help="Entry of a full checkpoint holding the network (teacher or student). Default: teacher.")
    parser.add_argument("--arch", default="vit_small", type=str, choices=list(ARCH_CONFIGS),
                        help="Backbone architecture. Default: vit_small.")
    parser.add_argument("--patch_size", default=16, type=int, choices=[8, 16], help="Patch size. Default: 16.")
    parser.add_argument("--device", default=default_device(), type=str,
                        help="Torch device. Default: cuda when available, else cpu.")


def load_backbone(arch: str = "vit_small", patch_size: int = 16, pretrained_weights: str = "",
                  checkpoint_key: str = "teacher", device: str | torch.device = "cpu",
                  verbose: bool = True, *, checkpoint: Mapping | None = None) -> nn.Module:
    """Frozen ViT in eval mode on ``device``, with weights from ``pretrained_weights`` (or random when empty).

    ``checkpoint``: the file's contents when the caller has already read it (``load_checkpoint``), so that a large
    file is read once. Raises CheckpointError (one line naming the file) for an unusable file.
    """
    state = None
    if pretrained_weights:  # read the file once: its grid sets the model, then its weights fill it
        ckpt = checkpoint if checkpoint is not None else load_checkpoint(pretrained_weights)
        state = backbone_state_dict(ckpt, checkpoint_key, pretrained_weights)
    grid = state_grid(state) if state is not None else None
    # A file whose position embedding was made for another grid than 224 px: build the model for that grid,
    # DINO's interpolation then adapts it to any input.
    kwargs = {"img_size": grid * patch_size} if grid else {}
    model = build_backbone(arch, patch_size=patch_size, **kwargs)
    if pretrained_weights:
        msg = load_backbone_state(model, state, pretrained_weights, checkpoint_key)
        if verbose:
            print(msg)
    elif verbose:
        print(f"NOTICE: no --pretrained_weights given, evaluating a RANDOMLY INITIALISED {arch}/{patch_size}.")
    model.requires_grad_(False)
    return model.eval().to(device)


def state_grid(state: Mapping[str, torch.Tensor]) -> int | None:
    """Side g of the patch grid of a backbone state dict's ``pos_embed`` (1, 1+g*g, D); None if absent."""
    pos = next((v for k, v in state.items() if k.endswith("pos_embed") and isinstance(v, torch.Tensor)), None)
    if pos is None or pos.dim() != 3:
        return None
    g = math.isqrt(pos.shape[1] - 1)
    return g if g * g == pos.shape[1] - 1 else None


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


def run_cli(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser, argv=None):
    """Parse ``argv`` and run ``main``; bad input (missing file, bad checkpoint, bad value) ends in one line."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
