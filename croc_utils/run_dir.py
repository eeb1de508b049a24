"""The output folder of a training run: one run at a time, what to resume from, and the files written on resume.

Global rank 0 does all of it; the other ranks learn its decisions through one broadcast at start-up, so a refusal
stops every rank with the same one-line error. The rules:

- **One run per folder.** Rank 0 creates ``croc.lock`` atomically (O_CREAT | O_EXCL) before it cleans or writes
  anything; it holds host, pid, start time and command. A second run is refused in one line naming the holder. A
  lock from a dead process of this host (same machine, same boot, same pid namespace) is stale and taken over with
  a notice; one from another host cannot be checked and is refused with what to do. The lock goes at the end of the
  run, after SIGTERM and on errors (``RunDir.close``), and only by the run that holds it.
- **Resume.** From ``checkpoint.pth``; when it is missing or unreadable, from the newest readable snapshot
  ``checkpointNNNN.pth`` (by the epoch in its name, newest first), saying which and why.
- **Never start over on top of a run.** When there is nothing to resume from but the folder holds snapshots or a
  log.txt with lines, the run is refused: a fresh start happens only in a folder without history, so it cannot
  overwrite a snapshot. A resumed run replaces the snapshots of the epochs it trains again, with a notice first.
- **Files of an accepted resume only.** args.json is written (atomically), and log.txt cut back to the resumed
  epoch (``croc_utils.logging.trim_log``), once the checkpoint has been restored: a refused resume changes nothing.
"""

import errno
import fcntl
import json
import os
import re
import secrets
import socket
import sys
import time
from typing import Optional

from croc_utils import distributed as du
from croc_utils.atomic_io import (
    DiskFullError,
    atomic_write,
    is_out_of_space,
    out_of_space_message,
    remove_partial_saves,
)
from croc_utils.checkpoint import CheckpointError, load_checkpoint
from croc_utils.logging import trim_log

LOCK_NAME = "croc.lock"
CHECKPOINT = "checkpoint.pth"
SNAPSHOT = re.compile(r"^checkpoint(\d{4,})\.pth$")  # checkpoint{epoch:04}.pth, saved after that (0-based) epoch


class OutputDirError(RuntimeError):
    """The run cannot use its --output_dir (in use, no usable checkpoint but a history, not a folder); one line."""

    def __init__(self, message: str, from_rank0: bool = False):
        super().__init__(message)
        self.from_rank0 = from_rank0  # rank 0's refusal, re-raised on another rank: rank 0 prints it


# ===== the lock =====

def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def this_process() -> dict:
    """Who holds a lock: enough to tell later whether that process still lives (on the same host only)."""
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")  # containers on one host may share a hostname
    except OSError:
        pid_namespace = ""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": pid_namespace,
            "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
            "token": secrets.token_hex(8)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    stat = _read_text(f"/proc/{pid}/stat")
    return not stat or stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has ended


def _read_lock(path: str) -> Optional[dict]:
    """The holder recorded in a lock file; None when it is gone, empty (being written) or not ours."""
    try:
        holder = json.loads(_read_text(path) or "null")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and {"host", "pid"} <= set(holder) else None


def _describe(holder: dict) -> str:
    return (f"host {holder['host']}, pid {holder['pid']}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")


def _stale(holder: dict, me: dict) -> Optional[bool]:
    """True: the holder is dead; False: alive; None: cannot tell (another host or pid namespace)."""
    if holder["host"] != me["host"] or holder.get("pid_namespace", "") != me["pid_namespace"]:
        return None
    if holder.get("boot_id") and me["boot_id"] and holder["boot_id"] != me["boot_id"]:
        return True  # the machine rebooted since
    return not _pid_alive(int(holder["pid"]))


class RunLock:
    """``croc.lock`` in a run folder, held by global rank 0 of the run that uses the folder (see the module doc)."""

    def __init__(self, path: str, holder: dict):
        self.path, self.holder = path, holder
        self.mtime = os.stat(path).st_mtime  # the folder's clock (NFS: the server's), to date other files by

    @classmethod
    def acquire(cls, folder: str) -> "RunLock":
        path = os.path.join(folder, LOCK_NAME)
        me = this_process()
        for _ in range(3):  # a lock released or taken over meanwhile: look again
            try:
                if _create_exclusive(path, me):
                    return cls(path, me)
            except DiskFullError:
                raise
            except OSError as err:  # e.g. a read-only folder
                raise OutputDirError(f"--output_dir {folder}: cannot create its lock file {path} "
                                     f"({err.strerror})") from None
            holder = _read_lock(path)
            if holder is None:
                if not os.path.exists(path):
                    continue
                raise OutputDirError(f"--output_dir {folder} has a lock file {path} that is empty or not ours (a run "
                                     f"may be starting); if no run uses this folder, delete {path} and rerun")
            stale = _stale(holder, me)
            if stale is None:
                raise OutputDirError(
                    f"--output_dir {folder} is used by a run on another host ({_describe(holder)}); its lock "
                    f"{path} cannot be checked from here: if no run is alive there, delete {path} and rerun")
            if not stale:
                raise OutputDirError(f"--output_dir {folder} is used by a running training ({_describe(holder)}); "
                                     "wait for it to end or choose another --output_dir")
            try:
                taken = _remove_if_holder(path, holder)
            except OSError as err:
                raise OutputDirError(f"--output_dir {folder}: the lock {path} of a run that is no longer alive "
                                     f"({_describe(holder)}) cannot be taken over safely here ({err.strerror}); "
                                     f"delete {path} and rerun") from None
            if taken:
                print(f"Notice: took over the stale lock {path} of a run that is no longer alive "
                      f"({_describe(holder)}).")
        raise OutputDirError(f"--output_dir {folder}: could not take its lock {path} (other runs starting there?)")

    def release(self) -> None:
        """Remove the lock file if it is still ours (never another run's)."""
        holder = _read_lock(self.path)
        if holder is not None and holder.get("token") == self.holder["token"]:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


def _create_exclusive(path: str, holder: dict) -> bool:
    """Create the lock file holding ``holder``; False when one exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    data = json.dumps(holder).encode()
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write")
        os.fsync(fd)
    except OSError as err:
        os.close(fd)
        os.remove(path)
        if is_out_of_space(err):
            raise DiskFullError(out_of_space_message(path, len(data), err)) from err
        raise
    os.close(fd)
    return True


def _remove_if_holder(path: str, holder: dict) -> bool:
    """Remove the lock file if it still names ``holder``; False when it is gone or names another run.

    The check and the removal happen under an exclusive ``flock`` of that very file (held for a few system calls),
    so two runs taking over the same stale lock are serialised, and the file removed is the one that named
    ``holder``: a lock file only ever appears where none is (O_EXCL), and only a taker removes a dead run's. Nothing
    is renamed nor put back, so no other run's fresh lock can be removed or overwritten. OSError when the file system
    offers no such lock (or the file is another user's).
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            here = os.stat(path)
        except FileNotFoundError:  # removed by the taker before us
            return False
        mine = os.fstat(fd)
        if (here.st_ino, here.st_dev) != (mine.st_ino, mine.st_dev) or _read_lock_fd(fd) != holder:
            return False
        os.remove(path)
        return True
    finally:
        os.close(fd)  # and with it the flock


def _read_lock_fd(fd: int) -> Optional[dict]:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    try:
        holder = json.loads(b"".join(chunks).decode() or "null")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


# ===== what to resume from =====

def snapshots(folder: str) -> list[str]:
    """The snapshots ``checkpointNNNN.pth`` of ``folder``, newest (highest epoch in the name) first."""
    found = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := SNAPSHOT.match(name))]
    return [os.path.join(folder, name) for _, name in sorted(found, reverse=True)]


def choose_resume(folder: str) -> tuple[Optional[str], Optional[dict]]:
    """(path, loaded checkpoint) to resume from, or (None, None) for a fresh start; see the module doc.

    Raises OutputDirError when there is nothing readable to resume from but the folder holds an earlier run.
    """
    main = os.path.join(folder, CHECKPOINT)
    if os.path.exists(main):
        try:
            return main, load_checkpoint(main)
        except CheckpointError as err:
            why = str(err)
    else:
        why = f"{main} is missing"
    unreadable = []
    for path in snapshots(folder):
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            unreadable.append(os.path.basename(path))
            continue
        skipped = f"; skipped unreadable {', '.join(unreadable)}" if unreadable else ""
        print(f"Notice: {why}; resuming from {path}, the newest readable snapshot (epoch {ckpt.get('epoch')})"
              f"{skipped}.")
        return path, ckpt
    log = os.path.join(folder, "log.txt")
    history = ([CHECKPOINT] if os.path.exists(main) else []) + unreadable
    history += ["log.txt"] if os.path.isfile(log) and os.path.getsize(log) else []
    if history:
        raise OutputDirError(f"{why}, and no snapshot checkpointNNNN.pth is readable, but {folder} holds an earlier "
                             f"run ({', '.join(history)}); refusing to start over on top of it: move those files "
                             "away, or choose another --output_dir")
    return None, None


# ===== the folder =====

def prepare_output_dir(path: str) -> None:
    """Create --output_dir; a file in its place or a folder that cannot be made is a one-line OutputDirError."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputDirError(f"--output_dir {path} is an existing file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OutputDirError(f"--output_dir {path}: cannot create it ({err.strerror})") from None


class RunDir:
    """--output_dir as a run uses it. ``open`` on every rank; rank 0 holds the lock until ``close`` (or the end of a
    ``with`` block).

    ``resume_path``: the checkpoint to resume from (the same on every rank), None for a fresh start.
    """

    def __init__(self, path: str, resume_path: Optional[str], lock: Optional[RunLock] = None,
                 loaded: Optional[dict] = None):
        self.path, self.resume_path, self.lock, self._loaded = path, resume_path, lock, loaded

    @classmethod
    def open(cls, path: str) -> "RunDir":
        """Rank 0: create the folder, lock it, remove the temp files of interrupted saves older than the lock, choose
        the checkpoint to resume from. Every rank gets that choice, or the same one-line refusal."""
        run_dir, error = None, None
        if du.is_main_process():
            try:
                run_dir = cls._take(path)
            except Exception as err:  # every rank must learn it, or they would wait for rank 0 until the timeout
                error = err
        shared = du.broadcast_from_main((None if error is None else f"{error}",
                                         None if run_dir is None else run_dir.resume_path))
        if error is not None:
            raise error
        if shared[0] is not None:
            raise OutputDirError(shared[0], from_rank0=True)
        return run_dir or cls(path, shared[1])

    @classmethod
    def _take(cls, path: str) -> "RunDir":
        prepare_output_dir(path)
        lock = RunLock.acquire(path)
        try:
            remove_partial_saves(path, older_than=lock.mtime)  # a partial save younger than the lock is a live one's
            resume_path, loaded = choose_resume(path)
        except BaseException:
            lock.release()
            raise
        return cls(path, resume_path, lock, loaded)

    def take_loaded(self) -> Optional[dict]:
        """The resume checkpoint rank 0 already read to choose it (None elsewhere: read it from ``resume_path``)."""
        loaded, self._loaded = self._loaded, None
        return loaded

    def accept(self, args, start_epoch: int) -> None:
        """The resume (or fresh start) went through: rank 0 writes args.json, cuts log.txt back to ``start_epoch``
        and says which snapshots this run will replace."""
        if self.lock is None:
            return
        again = [os.path.basename(p) for p in snapshots(self.path) if int(SNAPSHOT.match(os.path.basename(p))[1])
                 >= start_epoch]
        if again:
            print(f"Notice: resuming at epoch {start_epoch}; this run replaces {', '.join(sorted(again))} (saved "
                  "after the epochs it trains again) as it reaches them.")
        notice = trim_log(os.path.join(self.path, "log.txt"), start_epoch)
        if notice:
            print(notice)
        data = json.dumps(vars(args), indent=1).encode()
        atomic_write(os.path.join(self.path, "args.json"), lambda f: f.write(data), size=len(data))

    def close(self) -> None:
        """Release the lock (rank 0); safe to call twice."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:  # the normal end, SIGTERM's exit and errors alike
        self.close()
