"""What the evaluators and the hub load: a backbone built for a checkpoint and filled with its weights.

docs/evaluation.md "Loading a backbone": teacher by default, ``module.`` / ``backbone.`` stripped, ``head.*``
dropped, bare backbone state dicts accepted, safe loading. The file format itself (names, safe load,
``backbone_state_dict``) is ``croc_utils.checkpoint``'s.
"""

import math
from collections.abc import Mapping

import torch
from torch import nn

from croc_utils.checkpoint import CheckpointError, _check_shapes, backbone_state_dict, load_checkpoint

from .vision_transformer import build_backbone

__all__ = ["build_for_state", "load_backbone", "load_backbone_state", "state_grid"]


def state_grid(state: Mapping[str, torch.Tensor]) -> int | None:
    """Side g of the patch grid of a backbone state dict's ``pos_embed`` (1, 1+g*g, D); None if absent."""
    pos = next((v for k, v in state.items() if k.endswith("pos_embed") and isinstance(v, torch.Tensor)), None)
    if pos is None or pos.dim() != 3:
        return None
    g = math.isqrt(pos.shape[1] - 1)
    return g if g * g == pos.shape[1] - 1 else None


def build_for_state(arch: str, patch_size: int, state: Mapping[str, torch.Tensor] | None = None,
                    **kwargs) -> nn.Module:
    """``build_backbone(arch, patch_size)`` shaped for a backbone state dict: a file whose position embedding was
    made for another grid than 224 px (e.g. trained on 64 px crops) gets a model built for that grid; DINO's
    interpolation then adapts it to any input."""
    grid = state_grid(state) if state is not None else None
    if grid and "img_size" not in kwargs:
        kwargs["img_size"] = grid * patch_size
    return build_backbone(arch, patch_size=patch_size, **kwargs)


def load_backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str,
                        checkpoint_key: str = "teacher") -> str:
    """Load a ``backbone_state_dict`` into ``model``, every tensor or none; returns a one-line load message.

    Raises CheckpointError naming the file when no weight fits, when an architecture differs (e.g. vit_small
    weights into vit_tiny), when the file lacks some of the backbone's tensors (what it lacks would stay random and
    the scores would mean nothing) and when a tensor holds NaN or inf (a run that diverged). Tensors the backbone
    does not have (a head, extra buffers) are left out and counted.
    """
    _check_shapes(model, state, path, "the backbone")
    own = model.state_dict()
    if not any(key in own for key in state):
        raise CheckpointError(f"{path}: no ViT weights found (checkpoint_key '{checkpoint_key}'; keys like "
                              f"{list(state)[:3]})")
    missing = [key for key in own if key not in state]
    if missing:
        raise CheckpointError(f"{path}: holds {len(own) - len(missing)} of the {len(own)} tensors of the backbone "
                              f"('{checkpoint_key}'; lacks e.g. {missing[:2]}): an incomplete file or another model")
    bad = [key for key in own if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} backbone tensors hold NaN or inf (e.g. {bad[0]}): the run that "
                              "saved it diverged")
    unused = [key for key in state if key not in own]
    model.load_state_dict({key: state[key] for key in own})
    return (f"loaded {path} [{checkpoint_key}]: {len(own)}/{len(own)} tensors"
            + (f", {len(unused)} unused (e.g. {unused[:2]})" if unused else ""))


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
    model = build_for_state(arch, patch_size, state)
    if pretrained_weights:
        msg = load_backbone_state(model, state, pretrained_weights, checkpoint_key)
        if verbose:
            print(msg)
    elif verbose:
        print(f"NOTICE: no --pretrained_weights given, evaluating a RANDOMLY INITIALISED {arch}/{patch_size}.")
    model.requires_grad_(False)
    return model.eval().to(device)
