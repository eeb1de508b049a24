"""Checkpoints in the released layout: atomic saves, safe loads (docs/algorithm.md section 8).

Layout of a full checkpoint: ``student`` (keys prefixed ``module.``), ``teacher`` (no prefix), ``optimizer``,
``epoch``, ``args`` (argparse.Namespace), ``croc_loss`` (``center``, ``center_c``) and ``fp16_scaler`` when mixed
precision was on; ours add ``iteration`` and ``images_seen`` (the position in the epoch where SIGTERM saved).
Below the prefix: ``backbone.`` + DINO ViT names and ``head.`` + the head, whose weight-normed output layers are
written with the old names ``weight_g`` / ``weight_v`` so that the released files and the DINO-ecosystem evaluators
read ours and we read theirs.
"""

import argparse
import codecs
import errno
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from croc_utils.optim import optimizer_name

TEMP_MARKER = ".croc-partial-"  # temp files of atomic_write: <target>.croc-partial-<8 random chars>.tmp
RUN_FILES = r"checkpoint(?:\d{4,})?\.pth|args\.json"  # the files main_croc.py writes through atomic_write
_TEMP_NAME = re.compile(rf"^(?:{RUN_FILES}){re.escape(TEMP_MARKER)}[a-z0-9_]{{8}}\.tmp$")  # mkstemp's 8 characters
NEW_WN = (".parametrizations.weight.original0", ".parametrizations.weight.original1")
OLD_WN = (".weight_g", ".weight_v")
SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class DiskFullError(OSError):
    """A write that failed for want of space (or quota); the message is one line naming the file, the free space
    and about how much was needed."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


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


def save_checkpoint(obj: dict, path: str) -> None:
    """torch.save ``obj`` to ``path`` atomically (see ``atomic_write``); a full disk raises DiskFullError."""
    atomic_write(path, lambda f: torch.save(obj, f), size=state_nbytes(obj))


def atomic_write(path: str, write: Callable, *, size: int) -> None:
    """``write(f)`` into a temporary file in the same folder, fsync, then atomically replace ``path``.

    A crash at any moment leaves either the previous file or the new one, never a partial file at ``path``. A kill
    (SIGKILL, pre-emption) during the write leaves the temporary file, ``<name>.croc-partial-XXXXXXXX.tmp``, which
    ``remove_partial_saves`` recognises by that name and deletes at the next start. Any failure removes the
    temporary file; a full disk or quota (ENOSPC / EDQUOT, or the RuntimeError torch raises when its write fails)
    becomes a DiskFullError naming the folder, its free space and ``size``, the bytes about needed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + TEMP_MARKER, suffix=".tmp", dir=folder)
    try:
        # mkstemp creates the file readable by its owner only; give it the mode any other new file would get
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if is_out_of_space(err):
            raise DiskFullError(out_of_space_message(path, size, err, intact=os.path.exists(path))) from err
        raise


def state_nbytes(obj) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about the size of its file."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, Mapping):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed")  # what torch.save raises when its writes fail


def is_out_of_space(err: BaseException) -> bool:
    """True when ``err`` or an exception it arose from is ENOSPC / EDQUOT or torch's failed-write RuntimeError."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(err, RuntimeError) and any(text in str(err) for text in _TORCH_WRITE_FAILED):
            return True
        err = err.__cause__ or err.__context__
    return False


def out_of_space_message(path: str, size: int, err: BaseException, intact: bool = False) -> str:
    """One line: which file, which folder, how much is free there and about how much the write needed (``intact``:
    an atomic write, whose previous file is untouched)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = _size(shutil.disk_usage(folder).free)
    except OSError:
        free = "unknown"
    quota = " or the disk quota is exceeded" if _errno_in_chain(err) == errno.EDQUOT else ""
    kept = f"; the previous {os.path.basename(path)} is intact" if intact else ""
    return (f"no space left to write {path}{quota}: {free} free in {folder}, the file needs about {_size(size)}{kept}"
            "; free some space (or choose another --output_dir) and rerun the same command to resume")


def _errno_in_chain(err: Optional[BaseException]) -> Optional[int]:
    while err is not None:
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno
        err = err.__cause__ or err.__context__
    return None


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_partial_save(folder: str, name: str) -> bool:
    """True for a temporary file that ``atomic_write`` makes for a file of a training run: a regular file, not a
    link, named ``<target>.croc-partial-XXXXXXXX.tmp`` with mkstemp's 8 characters [a-z0-9_], where ``<target>`` is
    a name main_croc.py writes that way (``RUN_FILES``: checkpoint.pth, checkpointNNNN.pth, args.json). Any other
    name, e.g. ``mynotes.croc-partial-12345678.tmp`` or ``log.txt.croc-partial-...`` (log.txt is appended to, never
    written through a temporary file), is not ours."""
    path = os.path.join(folder, name)
    return bool(_TEMP_NAME.match(name)) and os.path.isfile(path) and not os.path.islink(path)


def remove_partial_saves(folder: str, older_than: Optional[float] = None) -> list[str]:
    """Delete the temporary files that an interrupted save of a training run left in ``folder`` (not subfolders).

    Only names made by ``atomic_write`` for a run's files are touched (see ``is_partial_save``); anything else,
    including similar-looking user files, stays. Call it from the process that holds the folder's lock
    (croc_utils.run_dir), at start-up, before resuming; ``older_than`` (a modification time, e.g. the lock's) spares
    a file written since, which can only belong to a live writer. Prints one line naming what was removed (nothing
    when there was nothing). Returns the removed names.
    """
    if not os.path.isdir(folder):
        return []
    removed, freed = [], 0
    for name in sorted(os.listdir(folder)):
        if is_partial_save(folder, name):
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
                if older_than is not None and stat.st_mtime >= older_than:
                    continue
                os.remove(path)
            except FileNotFoundError:  # gone meanwhile
                continue
            removed.append(name)
            freed += stat.st_size
    if removed:
        print(f"Removed {len(removed)} temporary file(s) left by an interrupted checkpoint save in {folder} "
              f"({freed / 2**20:.1f} MiB): {', '.join(removed)}")
    return removed


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``, only argparse.Namespace allowed besides tensors).

    Raises CheckpointError (one line naming the file) for a missing, truncated or hostile file, and for a file that is
    not a PyTorch checkpoint at all (text, JSON, another zip archive, an empty file: see ``foreign_format``).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign pickle; reported below
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged, foreign or hostile file
        raise CheckpointError(_load_failure(path, err)) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, expected a dict)")
    return obj


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


def load_optimizer_state(optimizer: torch.optim.Optimizer, ckpt: Mapping, path: str) -> None:
    """Restore ``optimizer`` from ``ckpt["optimizer"]``, or keep its fresh state when the checkpoint's saved args
    name another ``--optimizer``.

    A changed ``--optimizer`` is taken as deliberate: one notice, a fresh state (the moments of AdamW mean nothing to
    SGD or LARS); the networks, loss centres and epoch still resume. A state whose parameter groups lack this
    optimizer's settings (another optimizer's state, e.g. in a file without saved args) is refused in one line
    instead of a KeyError at the first step.
    """
    saved, current = getattr(ckpt.get("args"), "optimizer", None), optimizer_name(optimizer)
    if saved is not None and saved != current:
        print(f"Notice: {path} was trained with --optimizer {saved}; --optimizer {current} starts from a fresh "
              f"optimizer state (the networks, loss centres and epoch resume).")
        return
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot restore 'optimizer': {str(err).splitlines()[0]}") from None
    missing = sorted({key for group in optimizer.param_groups for key in optimizer.defaults if key not in group})
    if missing:
        raise CheckpointError(f"{path}: its optimizer state does not fit --optimizer {current}: the parameter groups "
                              f"lack {', '.join(missing)} (the state of another optimizer?)")


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


def load_backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str,
                        checkpoint_key: str = "teacher") -> str:
    """Load a ``backbone_state_dict`` into ``model``; returns a one-line load message.

    Raises CheckpointError when no weight fits or an architecture differs (e.g. vit_small weights into vit_tiny).
    """
    _check_shapes(model, state, path, "the backbone")
    own = model.state_dict()
    if not any(key in own for key in state):
        raise CheckpointError(f"{path}: no ViT weights found (checkpoint_key '{checkpoint_key}'; keys like "
                              f"{list(state)[:3]})")
    missing, unexpected = model.load_state_dict(state, strict=False)
    return (f"loaded {path} [{checkpoint_key}]: {len(own) - len(missing)}/{len(own)} tensors, missing {missing}, "
            f"unexpected {unexpected}")


def load_pretrained_backbone(model: nn.Module, path: str, checkpoint_key: str = "teacher") -> str:
    """Load a ViT from ``path`` (see ``backbone_state_dict`` and ``load_backbone_state``)."""
    state = backbone_state_dict(load_checkpoint(path), checkpoint_key, path)
    return load_backbone_state(model, state, path, checkpoint_key)
