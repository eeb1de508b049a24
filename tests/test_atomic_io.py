"""Tests of croc_utils/atomic_io.py: an interrupted or failed write keeps the previous file, a full disk is one line
naming the folder, its free space and the size needed, new files get the ordinary mode, and the temporary file of a
save killed mid-write is recognised and removed at the next start (nothing else is)."""

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import pytest
import torch

from croc_utils.atomic_io import (
    DiskFullError,
    atomic_write,
    is_out_of_space,
    is_partial_save,
    remove_partial_saves,
    save_checkpoint,
)
from croc_utils.checkpoint import load_checkpoint
from tests.test_train import ROOT, run, subprocess_env


# ===== atomic writes, full disks =====
def test_atomic_save_keeps_previous_file_when_interrupted(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pth")
    save_checkpoint({"epoch": 1}, path)

    def dying_save(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def full_disk_after(n_bytes, error):
    """A torch.save that writes ``n_bytes`` of the file, then fails the way a full disk makes it fail."""

    def save(obj, f):
        f.write(b"PK\x03\x04" + bytes(n_bytes))
        raise error

    return save


def torch_write_failure():
    """What torch.save really raises on a full disk: its RuntimeError, during the handling of the OSError."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 132557056 vs 132556948")
        except RuntimeError as err:
            return err


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), torch_write_failure(),
                                   OSError(errno.EDQUOT, "Disk quota exceeded")], ids=["ENOSPC", "torch", "quota"])
def test_full_disk_keeps_the_previous_file_and_says_where_and_how_much(tmp_path, monkeypatch, error):
    path = str(tmp_path / "checkpoint.pth")
    save_checkpoint({"epoch": 1}, path)
    state = {"epoch": 2, "teacher": {"w": torch.zeros(256, 1024)}}  # 1 MiB of tensors
    monkeypatch.setattr(torch, "save", full_disk_after(1 << 19, error))
    asked = []
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: asked.append(folder) or SimpleNamespace(free=300 << 10))
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(state, path)
    monkeypatch.undo()
    message = str(err.value)
    quota = " or the disk quota is exceeded" if getattr(error, "errno", None) == errno.EDQUOT else ""
    assert message == (f"no space left to write {path}{quota}: 0.3 MiB free in {tmp_path}, the file needs about "
                       "1.0 MiB; the previous checkpoint.pth is intact; free some space (or choose another "
                       "--output_dir) and rerun the same command to resume")
    assert asked == [str(tmp_path)]
    assert err.value.errno == errno.ENOSPC
    assert load_checkpoint(path)["epoch"] == 1 and os.listdir(tmp_path) == ["checkpoint.pth"]


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", full_disk_after(10, PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(PermissionError):
        save_checkpoint({"epoch": 2}, str(tmp_path / "checkpoint.pth"))
    assert os.listdir(tmp_path) == []
    assert not is_out_of_space(RuntimeError("CUDA out of memory")) and is_out_of_space(torch_write_failure())


def test_atomic_write_of_text(tmp_path):
    atomic_write(str(tmp_path / "args.json"), lambda f: f.write(b"{}"), size=2)
    assert (tmp_path / "args.json").read_text() == "{}" and os.listdir(tmp_path) == ["args.json"]


def test_saved_checkpoint_has_the_mode_of_an_ordinary_new_file(tmp_path):
    """Colleagues on a shared cluster read checkpoints: not mkstemp's owner-only 0600 but 0666 minus the umask."""
    previous = os.umask(0o022)
    try:
        save_checkpoint({"epoch": 1}, str(tmp_path / "checkpoint.pth"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "checkpoint.pth").st_mode) == 0o644


# ===== partial saves left by a killed write =====
QUICK = ["--saveckp_freq", "0", "--global_crops_size", "32", "--synthetic_size", "64"]

# A real save_checkpoint in a real process, SIGKILLed once part of the file is on disk (what kill -9 or a
# pre-emption does to main_croc.py during a save).
KILLED_SAVE = """
import os, signal, sys
import torch
from croc_utils.atomic_io import save_checkpoint

def dying_save(obj, f):
    f.write(b"PK\\x03\\x04" + bytes(1 << 20))  # the start of a zip, as torch.save writes it
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dying_save
save_checkpoint({"epoch": 99}, sys.argv[1])
"""

LOOK_ALIKES = [  # a user's files and folders whose names resemble ours: none may go
    "checkpoint.pth.abcd1234.tmp",  # the generic mkstemp naming (also what older versions of this code wrote)
    "checkpoint.pth.croc-partial-mine.tmp",  # not 8 characters
    "checkpoint.pth.croc-partial-ABCD1234.tmp",  # the saver never writes capitals
    "checkpoint.pth.croc-partial-abcd1234.tmp.bak",
    "croc-partial-abcd1234.tmp",  # no target name
    "mynotes.croc-partial-12345678.tmp",  # a target the saver never writes
    "log.txt.croc-partial-zzzzzzzz.tmp",  # log.txt is appended to, never written through a temporary file
    "head_best.pth.croc-partial-abcd1234.tmp",  # the linear probe's saves are not a training run's files
    "notes.txt",
]


def make_look_alikes(out):
    for name in LOOK_ALIKES:
        with open(os.path.join(out, name), "w") as f:
            f.write("user data")
    os.mkdir(os.path.join(out, "dir.croc-partial-abcd1234.tmp"))  # a folder with our pattern
    os.symlink(os.path.join(out, "notes.txt"), os.path.join(out, "link.croc-partial-abcd1234.tmp"))  # a link
    os.mkdir(os.path.join(out, "sub"))  # subfolders are not searched
    with open(os.path.join(out, "sub", "checkpoint.pth.croc-partial-abcd1234.tmp"), "w") as f:
        f.write("user data")


def test_killed_save_leaves_a_temp_that_the_next_start_removes_then_resumes(tmp_path, capsys):
    out = run(tmp_path, "run", "--epochs", "1", *QUICK)
    ckpt = os.path.join(out, "checkpoint.pth")
    before = open(ckpt, "rb").read()
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, ckpt], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [n for n in os.listdir(out) if n.startswith("checkpoint.pth.")]
    assert len(leftovers) == 1 and is_partial_save(out, leftovers[0]), os.listdir(out)
    assert os.path.getsize(os.path.join(out, leftovers[0])) > 1 << 20
    assert open(ckpt, "rb").read() == before  # the atomic save kept the previous checkpoint
    make_look_alikes(out)
    capsys.readouterr()

    run(tmp_path, "run", "--epochs", "2", *QUICK)  # the same command, one more epoch

    lines = capsys.readouterr().out.splitlines()
    removed = [i for i, line in enumerate(lines) if line.startswith("Removed ")]
    resumed = [i for i, line in enumerate(lines) if line.startswith(f"Resumed from {ckpt} at epoch 1")]
    assert len(removed) == 1 and len(resumed) == 1 and removed[0] < resumed[0], lines
    assert lines[removed[0]] == (f"Removed 1 temporary file(s) left by an interrupted checkpoint save in {out} "
                                 f"(1.0 MiB): {leftovers[0]}")
    assert not os.path.exists(os.path.join(out, leftovers[0]))
    for name in LOOK_ALIKES + ["dir.croc-partial-abcd1234.tmp", "link.croc-partial-abcd1234.tmp",
                               "sub/checkpoint.pth.croc-partial-abcd1234.tmp"]:
        assert os.path.lexists(os.path.join(out, name)), name
    assert open(os.path.join(out, "checkpoint.pth.croc-partial-ABCD1234.tmp")).read() == "user data"
    assert load_checkpoint(ckpt)["epoch"] == 2
    assert not [n for n in os.listdir(out) if is_partial_save(out, n)]


def test_only_the_temp_files_of_a_runs_files_and_older_than_the_lock_go(tmp_path, capsys):
    ours = ["checkpoint.pth.croc-partial-ab_d1234.tmp", "checkpoint0007.pth.croc-partial-abcd1234.tmp",
            "checkpoint12345.pth.croc-partial-abcd1234.tmp", "args.json.croc-partial-abcd1234.tmp"]
    for name in ours + ["checkpoint.pth.croc-partial-live1234.tmp"]:
        (tmp_path / name).write_text("partial")
    make_look_alikes(str(tmp_path))
    lock_time = os.stat(tmp_path / "notes.txt").st_mtime + 10
    os.utime(tmp_path / "checkpoint.pth.croc-partial-live1234.tmp", (lock_time + 1, lock_time + 1))  # being written
    assert remove_partial_saves(str(tmp_path), older_than=lock_time) == sorted(ours)
    assert "Removed 4 temporary file(s)" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == sorted(LOOK_ALIKES + ["checkpoint.pth.croc-partial-live1234.tmp", "sub",
                                                                 "dir.croc-partial-abcd1234.tmp",
                                                                 "link.croc-partial-abcd1234.tmp"])


def test_nothing_to_remove_prints_nothing(tmp_path, capsys):
    make_look_alikes(str(tmp_path))
    assert remove_partial_saves(str(tmp_path)) == []
    assert remove_partial_saves(str(tmp_path / "missing")) == []
    assert capsys.readouterr().out == ""
    assert sorted(os.listdir(tmp_path)) == sorted(LOOK_ALIKES + ["dir.croc-partial-abcd1234.tmp",
                                                                 "link.croc-partial-abcd1234.tmp", "sub"])


# ===== durable renames, our own temporary names, the umask left alone =====
def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    """Without an fsync of the folder the rename itself can be lost on a crash (the old file comes back)."""
    events, fsync, replace = [], os.fsync, os.replace

    def recording_fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        fsync(fd)

    def recording_replace(src, dst):
        events.append("replace")
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    atomic_write(str(tmp_path / "args.json"), lambda f: f.write(b"{}"), size=2)
    assert events == ["fsync file", "replace", "fsync folder"]
    assert (tmp_path / "args.json").read_bytes() == b"{}"


def test_temporary_names_do_not_depend_on_tempfile_internals(tmp_path, monkeypatch):
    """A leftover must be recognised by remove_partial_saves whatever names tempfile would make (its naming is
    private: another Python may change it)."""
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(["NotOurs_Name_42", "AnotherOne_43"]))
    seen = []

    def write(f):
        seen.extend((name, is_partial_save(str(tmp_path), name)) for name in os.listdir(tmp_path)
                    if name != "checkpoint.pth")
        f.write(b"x")

    for _ in range(3):
        atomic_write(str(tmp_path / "checkpoint.pth"), write, size=1)
    assert len(seen) == 3 and all(recognised for _, recognised in seen), seen
    assert len(set(seen)) == 3 and os.listdir(tmp_path) == ["checkpoint.pth"]


def test_the_process_umask_is_never_changed_and_applies_to_the_file(tmp_path, monkeypatch):
    """Changing the umask, even for a moment, is seen by every other thread of the process."""
    calls = []
    umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or umask(mask))
    previous = umask(0o027)
    try:
        atomic_write(str(tmp_path / "args.json"), lambda f: f.write(b"{}"), size=2)
    finally:
        umask(previous)
    assert calls == []
    assert stat.S_IMODE(os.stat(tmp_path / "args.json").st_mode) == 0o640
