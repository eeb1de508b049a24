"""The released CrOC ViT-S/16 as torch.hub entry points (``hubconf.py`` re-exports them).

    model = torch.hub.load(".", "croc_vits16", source="local")                  # from a clone: teacher, COCO weights
    model = torch.hub.load(".", "croc_vits16", source="local", weights="in1k")  # or "coco+", or a local file
    from models import croc_vits16; model = croc_vits16(weights="runs/croc/checkpoint.pth")
    model = torch.hub.load(".", "croc_vit", source="local", weights="runs/pico/checkpoint.pth")  # any --arch

A released name is downloaded once into torch.hub's cache (``torch.hub.get_dir()/checkpoints``, under a readable
file name since the URLs carry none) and, like a local file, read with ``croc_utils.checkpoint.load_checkpoint``:
``weights_only`` loading that allows nothing but tensors, plain data and argparse.Namespace. The files are full
released checkpoints (docs/algorithm.md section 8); the teacher is what the paper evaluates.
"""

import os
from typing import Mapping

import torch

from croc_utils.checkpoint import (
    CheckpointError,
    backbone_state_dict,
    from_released_names,
    load_checkpoint,
    load_network_state,
)

from .head import CrOCHead, CrOCNetwork
from .pretrained import build_for_state, load_backbone_state
from .vision_transformer import CrOCViT, vit_small

# name -> (URL of the authors' full checkpoint, file name in the hub cache); see docs/checkpoints.md.
RELEASED_WEIGHTS = {
    "coco": ("https://rdr.kuleuven.be/api/access/datafile/31383", "croc_vits16_coco_full.pth"),
    "coco+": ("https://rdr.kuleuven.be/api/access/datafile/31400", "croc_vits16_coco_plus_full.pth"),
    "in1k": ("https://rdr.kuleuven.be/api/access/datafile/28925", "croc_vits16_in1k_full.pth"),
}
RELEASED_HEAD = {"out_dim": 65536, "out_dim_c": 8192}


def weights_path(weights: str, progress: bool = True) -> str:
    """Local file of ``weights``: a released name (downloaded into the hub cache if not there yet) or a path."""
    if weights in RELEASED_WEIGHTS:
        url, file_name = RELEASED_WEIGHTS[weights]
        folder = os.path.join(torch.hub.get_dir(), "checkpoints")
        path = os.path.join(folder, file_name)
        if not os.path.isfile(path):
            os.makedirs(folder, exist_ok=True)
            print(f"Downloading the released CrOC {weights} checkpoint from {url} to {path}")
            try:
                torch.hub.download_url_to_file(url, path, progress=progress)  # writes a temp file, then renames
            except (OSError, ValueError) as err:  # urllib's URLError and HTTPError are OSErrors
                raise ConnectionError(f"cannot download the released CrOC {weights} checkpoint from {url} "
                                      f"({_why(err)}); without a network, download it elsewhere and pass "
                                      f"weights=<that file>, or copy it to {path}") from None
        return path
    path = os.path.expanduser(str(weights))
    if not os.path.isfile(path):
        raise ValueError(f"weights={weights!r}: neither a released name ({', '.join(RELEASED_WEIGHTS)}) nor an "
                         f"existing file")
    return path


def _why(err: BaseException) -> str:
    """A download failure in a few words (urllib's ``reason`` or HTTP code when there is one)."""
    reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err)
    code = getattr(err, "code", None)
    return f"HTTP {code}: {reason}" if code else f"{type(err).__name__}: {reason}"


def _read(weights: str, progress: bool) -> tuple[str, dict]:
    path = weights_path(weights, progress)
    try:
        return path, load_checkpoint(path)
    except CheckpointError as err:
        if weights in RELEASED_WEIGHTS:  # a damaged download stays in the cache until removed
            raise CheckpointError(f"{err}; delete it to download it again") from None
        raise


def croc_vits16(pretrained: bool = True, weights: str = "coco", checkpoint_key: str = "teacher",
                progress: bool = True, **kwargs) -> CrOCViT:
    """CrOC ViT-S/16 backbone (the ``checkpoint_key`` network of the file, teacher by default) in eval mode.

    Args:
        pretrained: load ``weights``; False gives a randomly initialised ViT-S/16.
        weights: "coco", "coco+", "in1k" (the released checkpoints) or the path of a checkpoint: a CrOC or DINO
            full checkpoint, or a bare backbone state dict.
        checkpoint_key: "teacher" or "student" in a full checkpoint.
        kwargs: passed to ``models.vit_small`` (e.g. ``which_features``); must keep the released shapes (a
            ``patch_size`` other than 16 is refused: ``croc_vit`` builds any architecture and patch size).
    Returns:
        The backbone: ``model(x)`` with x (B, 3, H, W), sides multiples of 16, gives cls (B, 384), tokens
        (B, 1+N, 384) and keys (B, 6, 1+N, 64); DINO's ``get_intermediate_layers`` and
        ``get_last_selfattention`` are there too.
    """
    if kwargs.pop("patch_size", 16) != 16:
        raise ValueError("croc_vits16 is the ViT-S/16 (patch_size 16); for another patch size use "
                         "croc_vit(weights=..., arch='vit_small', patch_size=...)")
    state = None
    if pretrained:  # read (and check) the file before the slower build
        path, ckpt = _read(weights, progress)
        state = backbone_state_dict(ckpt, checkpoint_key, path)
    model = build_for_state("vit_small", 16, state, **kwargs)
    if state is not None:
        load_backbone_state(model, state, path, checkpoint_key)  # every tensor or an error
    return model.eval()


def croc_vit(weights: str, checkpoint_key: str = "teacher", arch: str | None = None, patch_size: int | None = None,
             progress: bool = True, **kwargs) -> CrOCViT:
    """The backbone of any CrOC / DINO checkpoint, of any ``--arch`` (vit_pico, vit_tiny, vit_small, vit_base), in
    eval mode: the architecture and patch size come from the file's saved args unless given (a bare state dict
    needs both). ``weights`` as ``croc_vits16`` (a released name gives the ViT-S/16)."""
    path, ckpt = _read(weights, progress)
    saved = ckpt.get("args")
    saved = vars(saved) if hasattr(saved, "__dict__") else saved if isinstance(saved, Mapping) else {}
    arch, patch_size = arch or saved.get("arch"), patch_size or saved.get("patch_size")
    if arch is None or patch_size is None:
        raise CheckpointError(f"{path}: no saved args name the architecture; pass arch= and patch_size=")
    state = backbone_state_dict(ckpt, checkpoint_key, path)
    try:
        model = build_for_state(str(arch), int(patch_size), state, **kwargs)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build arch={arch!r}, patch_size={patch_size!r} ({err})") from None
    load_backbone_state(model, state, path, checkpoint_key)  # every tensor or an error
    return model.eval()


def _head_sizes(network_state: Mapping[str, torch.Tensor]) -> dict:
    """out_dim, out_dim_c and use_bn of the head stored in a (released-spelling) network state dict."""
    state = from_released_names(network_state)
    sizes = {}
    for key, layer in (("out_dim", "last_layer"), ("out_dim_c", "last_layer_c")):
        weight = state.get(f"head.{layer}.parametrizations.weight.original1")
        sizes[key] = weight.shape[0] if weight is not None else RELEASED_HEAD[key]
    sizes["use_bn"] = "head.mlp.1.running_mean" in state
    return sizes


def croc_vits16_full(pretrained: bool = True, weights: str = "coco", checkpoint_key: str = "teacher",
                     progress: bool = True, **kwargs) -> CrOCNetwork:
    """CrOC ViT-S/16 backbone + projection head (``CrOCNetwork``) in eval mode, e.g. to continue from the released
    prototypes or to read the teacher's CLS / cluster assignments.

    The head's sizes come from the file (the released ones: out_dim 65536, out_dim_c 8192); ``pretrained=False``
    gives a random network with the released sizes. Arguments as ``croc_vits16``; the file must be a full
    checkpoint (with ``head.*``). ``model.head(tokens)`` gives (M, out_dim) logits, ``cluster=True`` (M, out_dim_c).
    """
    sizes, path, state = dict(RELEASED_HEAD, use_bn=False), "", None
    if pretrained:
        path, ckpt = _read(weights, progress)
        if not isinstance(ckpt.get(checkpoint_key), Mapping):
            raise CheckpointError(f"{path}: no '{checkpoint_key}' network (entries: {sorted(ckpt)[:8]}); "
                                  f"croc_vits16_full needs a full checkpoint")
        state = ckpt[checkpoint_key]
        sizes = _head_sizes(state)
    backbone = vit_small(patch_size=16, **kwargs)
    model = CrOCNetwork(backbone, CrOCHead(backbone.embed_dim, sizes["out_dim"], sizes["out_dim_c"],
                                           use_bn=sizes["use_bn"]))
    if state is not None:
        load_network_state(model, state, path, checkpoint_key)
    return model.eval()
