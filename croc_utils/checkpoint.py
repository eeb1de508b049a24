"""Checkpoints in the released layout: names, safe loads, resume arithmetic (docs/algorithm.md section 8).

Layout of a full checkpoint: ``student`` (keys prefixed ``module.``), ``teacher`` (no prefix), ``optimizer``,
``epoch``, ``args`` (argparse.Namespace), ``croc_loss`` (``center``, ``center_c``) and ``fp16_scaler`` when mixed
precision was on; ours add ``iteration`` and ``images_seen`` (the position in the epoch where SIGTERM saved).
Below the prefix: ``backbone.`` + DINO ViT names and ``head.`` + the head, whose weight-normed output layers are
written with the old names ``weight_g`` / ``weight_v`` so that the released files and the DINO-ecosystem evaluators
read ours and we read theirs. Writing goes through ``croc_utils.atomic_io``. This module knows the format only, no
network class: ``models`` builds on it to load weights.
"""

import argparse
import codecs
import os
import pickle
import re
import warnings
import zipfile
from typing import Mapping, Optional

import torch
from torch import nn

from croc_utils.cli import UsageError
from croc_utils.optim import optimizer_name
from croc_utils.parser import upgrade_args

NEW_WN = (".parametrizations.weight.original0", ".parametrizations.weight.original1")
OLD_WN = (".weight_g", ".weight_v")
SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(UsageError, ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file (``run_cli`` prints it)."""


def to_released_names(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict:
    """Our state dict -> the released spelling: old weight-norm names, ``prefix`` (e.g. ``module.``) prepended."""
    out = {}
    for key, value in state_dict.items():
        for new, old in zip(NEW_WN, OLD_WN):
            if key.endswith(new):
                key = key[: -len(new)] + old
        out[prefix + key] = value
    return out


def from_released_names(state_dict: Mapping[str, torch.Tensor], strip: tuple = ("module.",)) -> dict:
    """Released (or our) spelling -> current module names: strip leading ``strip`` prefixes, new weight-norm names."""
    out = {}
    for key, value in state_dict.items():
        for prefix in strip:
            if key.startswith(prefix):
                key = key[len(prefix):]
        for new, old in zip(NEW_WN, OLD_WN):
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``, only argparse.Namespace allowed besides tensors).

    Raises CheckpointError (one line naming the file) for a missing, truncated or hostile file, and for a file that is
    not a PyTorch checkpoint at all (text, JSON, another zip archive, an empty file: see ``foreign_format``). A
    ``.safetensors`` file is read with ``load_safetensors`` (tensors only: nothing in it can run code).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        return load_safetensors(path, map_location)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign pickle; reported below
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged, foreign or hostile file
        raise CheckpointError(_load_failure(path, err)) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, expected a dict)")
    return obj


def load_safetensors(path: str, map_location="cpu") -> dict:
    """The tensors of a ``.safetensors`` file (a backbone state dict, e.g. from ``python -m models.export``), plus
    ``args`` = {"arch", "patch_size"} when its metadata names them, as a training checkpoint's saved args do."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt", device=str(map_location)) as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated, damaged or not a safetensors file ({err})") from None
    if "arch" in metadata and metadata.get("patch_size", "").isdigit():
        state["args"] = {"arch": metadata["arch"], "patch_size": int(metadata["patch_size"])}
    return state


def _load_failure(path: str, err: Exception) -> str:
    """The one-line reason ``torch.load`` failed: a forbidden type inside (a pickle that would run code or build
    arbitrary objects), a file of another format, or a damaged checkpoint."""
    forbidden = re.search(r"GLOBAL (\S+)", str(err))  # torch names the forbidden global it met
    if forbidden:
        return f"{path}: refused to load, it holds objects that are not tensors or plain data ({forbidden.group(1)})"
    if isinstance(err, OSError) and err.strerror:  # e.g. no permission to read it
        return f"{path}: cannot be read ({err.strerror})"
    foreign = foreign_format(path)
    if foreign:
        return f"{path}: not a PyTorch checkpoint ({foreign})"
    if isinstance(err, pickle.UnpicklingError):
        return f"{path}: refused to load, it holds objects that are not tensors or plain data (UnpicklingError)"
    return f"{path}: truncated or damaged PyTorch checkpoint ({type(err).__name__})"


_TORCH_LEGACY_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # how the legacy format opens


def foreign_format(path: str) -> str | None:
    """What ``path`` is when it has not the form of a file ``torch.save`` writes (a zip holding ``<name>/data.pkl``,
    or a pickle opening with torch's legacy magic number); None when it has that form (then it is damaged or
    hostile, not foreign). Reads the first 4 KiB and, for a zip, its table of contents."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None  # a truncated zip: a damaged checkpoint as likely as anything else
        if any(name.endswith("/data.pkl") for name in names):
            return None
        return f"a zip archive of other files, e.g. {names[0] if names else 'nothing'}"
    if head.startswith(_TORCH_LEGACY_HEAD):
        return None
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file"
    if head.startswith(b"\x80"):
        return "a pickle that torch.save did not write"
    try:  # final=False: a character cut at 4 KiB is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False).lstrip()
    except UnicodeDecodeError:
        return "binary data of another format"
    return "JSON text" if text[:1] in ("{", "[") else "text"


def _check_shapes(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str, what: str) -> None:
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(f"{path}: {what} is another architecture: {key} is {tuple(value.shape)} in the "
                                  f"file but {tuple(own[key].shape)} in the model")


def load_network_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str, what: str) -> None:
    """Strictly load a released-spelling student/teacher state dict into ``model`` (DDP unwrapped)."""
    model = unwrap(model)
    state_dict = from_released_names(state_dict)
    _check_shapes(model, state_dict, path, what)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: {what} does not match the model: {len(missing)} missing keys "
                              f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


OPTIONAL_ENTRIES = ("fp16_scaler",)  # a run resumed in fp16 from a fp32/bf16 checkpoint starts a fresh scaler


def restart_from_checkpoint(path: str, run_variables: Optional[dict] = None, *, loaded: Optional[Mapping] = None,
                            **objects) -> bool:
    """Restore ``objects`` (by checkpoint key) and ``run_variables`` from ``path``, DINO style.

    Networks (``student``, ``teacher``) load strictly through the released-name conversion, the optimizer through
    ``load_optimizer_state``; other objects with a ``load_state_dict`` (scaler, loss) load their entry. Returns False
    when ``path`` does not exist. ``loaded``: the checkpoint already read from ``path`` (croc_utils.run_dir reads it to
    choose it), not read again.
    """
    if loaded is None and not os.path.isfile(path):
        return False
    ckpt = loaded if loaded is not None else load_checkpoint(path)
    for key, obj in objects.items():
        if obj is None or (key in OPTIONAL_ENTRIES and key not in ckpt):
            continue
        if key not in ckpt:
            raise CheckpointError(f"{path}: has no '{key}' entry (keys: {sorted(ckpt)})")
        if isinstance(obj, nn.Module) and key in ("student", "teacher"):
            load_network_state(obj, ckpt[key], path, key)
        elif key == "optimizer":
            load_optimizer_state(obj, ckpt, path)
        else:
            try:
                obj.load_state_dict(ckpt[key])
            except (RuntimeError, ValueError, KeyError) as err:
                raise CheckpointError(f"{path}: cannot restore '{key}': {str(err).splitlines()[0]}") from None
    for key in run_variables or {}:
        if key in ckpt:
            run_variables[key] = ckpt[key]
    return True


def saved_args(ckpt: Mapping) -> Optional[argparse.Namespace]:
    """The checkpoint's ``args`` with today's defaults for the flags an older run lacks (``upgrade_args``); None
    when it has no saved args."""
    saved = ckpt.get("args")
    return upgrade_args(saved) if isinstance(saved, argparse.Namespace) else None


def load_optimizer_state(optimizer: torch.optim.Optimizer, ckpt: Mapping, path: str) -> None:
    """Restore ``optimizer`` from ``ckpt["optimizer"]``, or keep its fresh state when the checkpoint's saved args
    name another ``--optimizer``.

    A changed ``--optimizer`` is taken as deliberate: one notice, a fresh state (the moments of AdamW mean nothing to
    SGD or LARS); the networks, loss centres and epoch still resume. A state whose parameter groups lack this
    optimizer's settings (another optimizer's state, e.g. in a file without saved args) is refused in one line
    instead of a KeyError at the first step.
    """
    saved, current = saved_args(ckpt), optimizer_name(optimizer)
    saved = saved.optimizer if saved is not None else None
    if saved is not None and saved != current:
        print(f"Notice: {path} was trained with --optimizer {saved}; --optimizer {current} starts from a fresh "
              f"optimizer state (the networks, loss centres and epoch resume).")
        return
    try:
        optimizer.load_state_dict(with_execution_options(ckpt["optimizer"], optimizer))
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot restore 'optimizer': {str(err).splitlines()[0]}") from None
    missing = sorted({key for group in optimizer.param_groups for key in optimizer.defaults if key not in group})
    if missing:
        raise CheckpointError(f"{path}: its optimizer state does not fit --optimizer {current}: the parameter groups "
                              f"lack {', '.join(missing)} (the state of another optimizer?)")


EXECUTION_OPTIONS = ("foreach", "fused", "capturable", "differentiable")  # how an optimizer computes, not what


def with_execution_options(saved: Mapping, optimizer: torch.optim.Optimizer) -> dict:
    """``saved`` (an optimizer state dict) with ``optimizer``'s execution options in its parameter groups.

    torch's ``load_state_dict`` takes the groups as saved, options included: a checkpoint written on CPU (foreach
    AdamW) would resume on CUDA without the fused kernel, and its step counters would stay on the CPU, where the
    fused kernel does not want them. The options of the optimizer built for this device win; the state is the same.
    """
    groups = [{**group, **{k: current[k] for k in EXECUTION_OPTIONS if k in current}}
              for group, current in zip(saved["param_groups"], optimizer.param_groups)]
    groups += saved["param_groups"][len(groups):]  # a group count that differs is refused by load_state_dict
    return {**saved, "param_groups": groups}


def images_seen(iteration: int, images_per_step: int) -> int:
    """The checkpoint's ``images_seen`` entry: images an epoch had consumed after ``iteration`` steps of
    ``images_per_step`` (batch_size_per_gpu x world size); a resume with another batch size starts from it."""
    return iteration * images_per_step


def resume_position(run_variables: Mapping, *, images_per_step: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, iteration) to start at, from a checkpoint's ``epoch`` and position in it counted in images.

    ``run_variables``: ``epoch``, ``iteration`` and, when the checkpoint has them, ``images_seen`` and ``args``.
    A checkpoint without ``images_seen`` (written before it existed) counted ``iteration`` batches of its own
    ``args`` (ours when it has none). The images already seen are skipped in whole batches of ``images_per_step``
    (rounded down: at most one batch is seen twice); when they fill the epoch at the new batch size, the run goes on
    with the next epoch. Either change of position is printed in one line.
    """
    epoch, iteration = run_variables["epoch"], run_variables["iteration"]
    seen = run_variables.get("images_seen")
    if seen is None:
        saved = run_variables.get("args")
        per_step = getattr(saved, "batch_size_per_gpu", 0) * getattr(saved, "world_size", 0) or images_per_step
        seen = images_seen(iteration, per_step)
    start = seen // images_per_step
    if start >= steps_per_epoch:
        print(f"Notice: epoch {epoch} had already seen {seen} images, a whole epoch at {images_per_step} images per "
              f"iteration ({steps_per_epoch} iterations): going on with epoch {epoch + 1}.")
        return epoch + 1, 0
    if start != iteration:
        print(f"Notice: epoch {epoch} had already seen {seen} images: at {images_per_step} images per iteration it "
              f"resumes at iteration {start} of {steps_per_epoch} (the checkpoint counted {iteration}).")
    return epoch, start


def network_state(model: nn.Module, ddp_prefix: bool) -> dict:
    """State dict of a student/teacher network in the released spelling (``module.`` when ``ddp_prefix``)."""
    return to_released_names(unwrap(model).state_dict(), prefix="module." if ddp_prefix else "")


def backbone_state_dict(ckpt: Mapping, checkpoint_key: str = "teacher", path: str = "") -> dict:
    """The ViT weights of any supported file: a full CrOC/DINO checkpoint (``checkpoint_key`` entry) or a bare
    backbone state dict. Strips ``module.`` and ``backbone.``, drops ``head.*``."""
    if isinstance(ckpt.get(checkpoint_key), Mapping):
        state = ckpt[checkpoint_key]
    elif any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state = ckpt  # a bare state dict (DINO hub style)
    else:
        raise CheckpointError(f"{path}: no '{checkpoint_key}' entry (entries: {sorted(ckpt)[:8]}); "
                              f"set --checkpoint_key")
    state = from_released_names(state, strip=("module.", "backbone."))
    return {k: v for k, v in state.items() if not k.startswith("head.") and isinstance(v, torch.Tensor)}
