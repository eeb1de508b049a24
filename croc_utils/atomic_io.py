"""Atomic file writes for a training run: temporary file + fsync + rename, full-disk messages, partial-save clean-up.

A checkpoint (``save_checkpoint``) or ``args.json`` is written next to its target under a recognisable temporary name
and renamed over it only once complete, so a crash never leaves a partial file at the target; ``remove_partial_saves``
deletes what a killed write left behind. A full disk or quota becomes a ``DiskFullError`` whose one-line message names
the file, the free space and about how much was needed.
"""

import errno
import os
import re
import secrets
import shutil
from typing import Callable, Mapping, Optional

import torch

TEMP_MARKER = ".croc-partial-"  # temp files of atomic_write: <target>.croc-partial-<8 random chars>.tmp
RUN_FILES = r"checkpoint(?:\d{4,})?\.pth|args\.json"  # the files main_croc.py writes through atomic_write
_TEMP_NAME = re.compile(rf"^(?:{RUN_FILES}){re.escape(TEMP_MARKER)}[a-z0-9_]{{8}}\.tmp$")  # atomic_write's 8 characters


class DiskFullError(OSError):
    """A write that failed for want of space (or quota); the message is one line naming the file, the free space
    and about how much was needed."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def save_checkpoint(obj: dict, path: str) -> None:
    """torch.save ``obj`` to ``path`` atomically (see ``atomic_write``); a full disk raises DiskFullError."""
    atomic_write(path, lambda f: torch.save(obj, f), size=state_nbytes(obj))


def atomic_write(path: str, write: Callable, *, size: int) -> None:
    """``write(f)`` into a temporary file in the same folder, fsync, atomically replace ``path``, fsync the folder.

    A crash at any moment leaves either the previous file or the new one, never a partial file at ``path``; the
    folder's fsync makes the rename itself durable (without it a power loss can bring the old file back). A kill
    (SIGKILL, pre-emption) during the write leaves the temporary file, ``<name>.croc-partial-XXXXXXXX.tmp``, which
    ``remove_partial_saves`` recognises by that name and deletes at the next start. The file is created with mode
    0o666 less the umask, as any new file (the umask is never changed). Any failure removes the temporary file; a
    full disk or quota (ENOSPC / EDQUOT, or the RuntimeError torch raises when its write fails) becomes a
    DiskFullError naming the folder, its free space and ``size``, the bytes about needed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _create_temporary(folder, os.path.basename(path))
    try:
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
    fsync_folder(folder)


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """Create ``<name>.croc-partial-XXXXXXXX.tmp`` (8 random characters of [a-z0-9_]) exclusively; (fd, path).

    Our own names, not tempfile's (whose naming is private), so that ``is_partial_save`` always knows them."""
    for _ in range(100):
        tmp = os.path.join(folder, f"{name}{TEMP_MARKER}{''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {name} in {folder}")


def fsync_folder(folder: str) -> None:
    """Make the entries of ``folder`` (a rename into it) durable; a no-op where folders cannot be opened or
    synced (some network and Windows file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


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


def is_partial_save(folder: str, name: str) -> bool:
    """True for a temporary file that ``atomic_write`` makes for a file of a training run: a regular file, not a
    link, named ``<target>.croc-partial-XXXXXXXX.tmp`` with 8 random characters [a-z0-9_], where ``<target>`` is
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
