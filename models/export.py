"""Export a CrOC backbone as a safetensors file in timm's ViT naming, loadable with ``timm.create_model``.

The backbone already is timm's ``VisionTransformer`` (DINO's configuration: qkv bias, LayerNorm eps 1e-6, CLS
token), so its state dict has timm's names; the export takes the backbone out of a training checkpoint (teacher by
default, ``module.`` / ``backbone.`` stripped, the projection head dropped), checks that it fills the architecture
exactly, and writes its tensors with the timm call that rebuilds it in the file's metadata:

    python -m models.export --pretrained_weights checkpoint.pth --output croc_vits16.safetensors

    import timm
    model = timm.create_model("vit_small_patch16_224", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file="croc_vits16.safetensors"))

Architectures timm has no name for (ViT-Ti/8, ViT-Pico) are built from the nearest timm name with the differing
arguments (``patch_size``, ``embed_dim``, ``depth``, ``num_heads``) passed to ``create_model``; the command prints
the exact call. A position embedding made for another grid than 224 px adds ``img_size`` to it, so that timm keeps
the embedding as trained rather than resampling it.
"""

import argparse
import json
import math
import os
from collections.abc import Mapping

import torch

from croc_utils.architectures import ARCH_CONFIGS
from croc_utils.atomic_io import atomic_write
from croc_utils.checkpoint import CheckpointError, backbone_state_dict, load_checkpoint
from croc_utils.cli import OneLineErrorParser, UsageError, run_cli
from models.vision_transformer import build_backbone

# (arch, patch size) -> timm model name; other pairs use the nearest name with overriding arguments (timm_call)
TIMM_NAMES = {
    ("vit_tiny", 16): "vit_tiny_patch16_224",
    ("vit_small", 16): "vit_small_patch16_224",
    ("vit_small", 8): "vit_small_patch8_224",
    ("vit_base", 16): "vit_base_patch16_224",
    ("vit_base", 8): "vit_base_patch8_224",
}
NEAREST = "vit_tiny_patch16_224"  # the name the other pairs are built from, with their differing arguments
NEAREST_ARGS = {"patch_size": 16, **ARCH_CONFIGS["vit_tiny"]}


def infer_architecture(state: Mapping[str, torch.Tensor], path: str = "") -> tuple[str, int, int]:
    """(arch, patch size, grid side) of a backbone state dict, from its tensor shapes.

    The width (``cls_token``) and the number of blocks pick the row of ARCH_CONFIGS (the number of heads cannot be
    read from the weights); ``patch_embed.proj.weight`` (D, 3, p, p) gives the patch size, ``pos_embed`` the grid.
    """
    if "cls_token" not in state or "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise CheckpointError(f"{path}: no ViT backbone found (keys like {list(state)[:3]})")
    width = state["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    arch = next((name for name, cfg in ARCH_CONFIGS.items()
                 if cfg["embed_dim"] == width and cfg["depth"] == depth), None)
    if arch is None:
        raise CheckpointError(f"{path}: a ViT of width {width} and {depth} blocks is none of {sorted(ARCH_CONFIGS)}")
    patch = state["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    return arch, patch, grid


def timm_call(arch: str, patch_size: int, grid: int) -> tuple[str, dict]:
    """timm model name and the ``create_model`` arguments that build the same network as ``arch``/``patch_size``
    with a position embedding for ``grid`` x ``grid`` patches."""
    name, kwargs = TIMM_NAMES.get((arch, patch_size)), {}
    if name is None:
        name, wanted = NEAREST, {"patch_size": patch_size, **ARCH_CONFIGS[arch]}
        kwargs = {k: v for k, v in wanted.items() if NEAREST_ARGS[k] != v}
    if grid * patch_size != 224:
        kwargs["img_size"] = grid * patch_size
    return name, kwargs


def export_state(pretrained_weights: str, checkpoint_key: str = "teacher") -> tuple[dict, dict]:
    """Backbone tensors in timm's names (contiguous, CPU) and the metadata of the file (strings only)."""
    state = backbone_state_dict(load_checkpoint(pretrained_weights), checkpoint_key, pretrained_weights)
    arch, patch, grid = infer_architecture(state, pretrained_weights)
    model = build_backbone(arch, patch_size=patch, img_size=grid * patch)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{pretrained_weights}: the backbone does not fill {arch}/{patch}: missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    name, kwargs = timm_call(arch, patch, grid)
    metadata = {"format": "pt", "arch": arch, "patch_size": str(patch), "timm_model": name,
                "timm_kwargs": json.dumps(kwargs), "checkpoint_key": checkpoint_key,
                "source": os.path.basename(pretrained_weights)}
    return tensors, metadata


def export(pretrained_weights: str, output: str, checkpoint_key: str = "teacher") -> dict:
    """Write the backbone of ``pretrained_weights`` to ``output`` (.safetensors, atomically); returns the metadata."""
    from safetensors.torch import save

    if not output.endswith(".safetensors"):
        raise UsageError(f"--output {output}: the file name must end in .safetensors")
    tensors, metadata = export_state(pretrained_weights, checkpoint_key)
    data = save(tensors, metadata=metadata)
    atomic_write(output, lambda f: f.write(data), size=len(data))
    return metadata


def timm_snippet(output: str, metadata: Mapping[str, str]) -> str:
    """The Python line that loads ``output`` with timm."""
    extra = "".join(f", {k}={v!r}" for k, v in json.loads(metadata["timm_kwargs"]).items())
    return (f'timm.create_model("{metadata["timm_model"]}", pretrained=True, num_classes=0{extra}, '
            f'pretrained_cfg_overlay=dict(file="{output}"))')


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("python -m models.export", description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained_weights", required=True, type=str,
                        help="A CrOC/DINO training checkpoint or a bare backbone state dict.")
    parser.add_argument("--checkpoint_key", default="teacher", type=str,
                        help="Entry of a full checkpoint holding the network (teacher or student). Default: teacher.")
    parser.add_argument("--output", required=True, type=str, help="The .safetensors file to write.")
    return parser


def main(args: argparse.Namespace) -> dict:
    metadata = export(args.pretrained_weights, args.output, args.checkpoint_key)
    print(f"wrote {args.output} ({metadata['arch']}/{metadata['patch_size']}); load it with\n"
          f"    {timm_snippet(args.output, metadata)}")
    return metadata


if __name__ == "__main__":
    run_cli(main, get_args_parser())
