"""The output folder of a run (croc_utils/run_dir.py): one run per folder, what a rerun resumes from, what a refused
start leaves untouched. Lock and choice rules on bare folders; then tiny CPU trainings through the
command line (``main_croc.main``), in this process."""

import json
import os
import subprocess

import pytest
import torch

import main_croc
from croc_utils.atomic_io import save_checkpoint
from croc_utils.checkpoint import load_checkpoint
from croc_utils.run_dir import LOCK_NAME, OutputDirError, RunDir, RunLock, choose_resume, this_process
from tests.test_distributed import _join_group, _run_two
from tests.test_train import SMALL

FAST = SMALL + ["--global_crops_size", "32", "--synthetic_size", "64", "--warmup_epochs", "0"]  # 1 step an epoch


def write_lock(folder, **changes):
    holder = {**this_process(), "command": "main_croc.py --output_dir elsewhere", **changes}
    with open(os.path.join(folder, LOCK_NAME), "w") as f:
        json.dump(holder, f)
    return holder


@pytest.fixture
def live_pid():
    proc = subprocess.Popen(["sleep", "120"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ===== the lock =====

def test_lock_holds_who_and_goes_only_with_its_owner(tmp_path):
    lock = RunLock.acquire(str(tmp_path))
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and {"host", "started", "command", "token"} <= set(holder)
    with pytest.raises(OutputDirError, match=f"is used by a running training \\(host {holder['host']}, pid "
                                             f"{os.getpid()}, started"):
        RunLock.acquire(str(tmp_path))  # a second run, even in this process
    write_lock(str(tmp_path), token="another run's")  # e.g. the folder was taken over after we were thought dead
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()  # not ours: left alone
    os.remove(tmp_path / LOCK_NAME)
    RunLock.acquire(str(tmp_path)).release()
    assert os.listdir(tmp_path) == []


def test_a_live_holder_refuses_in_one_line(tmp_path, live_pid):
    before = json.dumps(write_lock(str(tmp_path), pid=live_pid))
    with pytest.raises(OutputDirError) as err:
        RunLock.acquire(str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and f"pid {live_pid}" in message and "main_croc.py --output_dir elsewhere" in message
    assert message.startswith(f"--output_dir {tmp_path} is used by a running training")
    assert json.dumps(json.loads((tmp_path / LOCK_NAME).read_text())) == before


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(tmp_path, dead_pid, capsys):
    write_lock(str(tmp_path), pid=dead_pid)
    lock = RunLock.acquire(str(tmp_path))
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"Notice: took over the stale lock {tmp_path / LOCK_NAME}")
    assert f"pid {dead_pid}" in out
    lock.release()
    write_lock(str(tmp_path), pid=os.getpid(), boot_id="a boot before the last reboot")
    RunLock.acquire(str(tmp_path)).release()  # same pid, but from before a reboot: stale too
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("changes", [{"host": "node017"}, {"pid_namespace": "pid:[4026532999]"}],
                         ids=["other host", "other container"])
def test_a_lock_that_cannot_be_checked_is_refused_with_what_to_do(tmp_path, dead_pid, changes):
    write_lock(str(tmp_path), pid=dead_pid, **changes)
    lock_file = str(tmp_path / LOCK_NAME)
    with pytest.raises(OutputDirError, match=f"cannot be checked from here: if no run is alive there, delete "
                                             f"{lock_file} and rerun"):
        RunLock.acquire(str(tmp_path))
    (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(OutputDirError, match="empty or not ours"):
        RunLock.acquire(str(tmp_path))


# ===== what a rerun resumes from =====

def save(folder, name, epoch):
    save_checkpoint({"epoch": epoch, "teacher": {}}, os.path.join(folder, name))


def test_resume_prefers_checkpoint_pth_then_the_newest_readable_snapshot(tmp_path, capsys):
    folder = str(tmp_path)
    assert choose_resume(folder) == (None, None)  # an empty folder: a fresh start
    save(folder, "checkpoint0001.pth", 2)
    save(folder, "checkpoint0009.pth", 10)
    save(folder, "checkpoint0010.pth", 11)  # newer than 0009: by number, not by name order
    (tmp_path / "checkpoint0011.pth").write_bytes(b"PK\x03\x04 torn")
    save(folder, "checkpoint.pth", 12)
    assert choose_resume(folder)[1]["epoch"] == 12 and capsys.readouterr().out == ""
    (tmp_path / "checkpoint.pth").write_bytes(b"PK\x03\x04 torn")
    path, ckpt = choose_resume(folder)
    assert path == os.path.join(folder, "checkpoint0010.pth") and ckpt["epoch"] == 11
    assert capsys.readouterr().out == (
        f"Notice: {folder}/checkpoint.pth: truncated or damaged PyTorch checkpoint (RuntimeError); resuming from "
        f"{path}, the newest readable snapshot (epoch 11); skipped unreadable checkpoint0011.pth.\n")
    os.remove(tmp_path / "checkpoint.pth")
    assert choose_resume(folder)[0] == path
    assert capsys.readouterr().out.startswith(f"Notice: {folder}/checkpoint.pth is missing; resuming from {path}")


@pytest.mark.parametrize("files, history", [
    ({"log.txt": b'{"epoch": 0}\n'}, "log.txt"),
    ({"checkpoint0000.pth": b"torn", "log.txt": b""}, "checkpoint0000.pth"),
    ({"checkpoint.pth": b"torn"}, "checkpoint.pth"),
])
def test_no_usable_checkpoint_in_a_folder_with_history_is_refused(tmp_path, files, history):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(OutputDirError, match=f"holds an earlier run \\({history}\\); refusing to start over"):
        choose_resume(str(tmp_path))
    assert {name: (tmp_path / name).read_bytes() for name in files} == files


def test_open_removes_only_partial_saves_older_than_its_lock(tmp_path):
    old, live = tmp_path / "checkpoint.pth.croc-partial-old12345.tmp", tmp_path / "args.json.croc-partial-live1234.tmp"
    old.write_text("left by a killed run")
    live.write_text("being written")
    os.utime(old, (0, 0))
    os.utime(live, (2**33, 2**33))  # modified after the lock was taken: a live writer's
    run_dir = RunDir.open(str(tmp_path))
    assert run_dir.resume_path is None and sorted(os.listdir(tmp_path)) == [live.name, LOCK_NAME]
    run_dir.close()
    run_dir.close()
    assert os.listdir(tmp_path) == [live.name]


def _open_worker(rank, port, results, folder):
    _join_group(rank, port, dist_timeout=1.0)
    try:
        RunDir.open(folder)
        results.put((rank, "opened"))
    except OutputDirError as err:
        results.put((rank, err.from_rank0, str(err)))


def test_every_rank_stops_with_rank_0s_refusal_which_rank_0_alone_prints(tmp_path, live_pid):
    """Two gloo processes: rank 1 does not touch the folder; it learns rank 0's refusal and stops too (instead of
    waiting for rank 0 in the next collective until --dist_timeout)."""
    write_lock(str(tmp_path), pid=live_pid)
    results = sorted(_run_two(_open_worker, str(tmp_path)))
    assert [r[:2] for r in results] == [(0, False), (1, True)]
    assert results[0][2] == results[1][2] and f"pid {live_pid}" in results[0][2]


# ===== through the command line =====

def cli(capsys, out, *extra):
    """main_croc.main in this process; (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        main_croc.main(FAST + ["--output_dir", str(out), *extra])
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def epochs_in_log(out):
    return [json.loads(line)["epoch"] for line in open(os.path.join(out, "log.txt"))]


def test_missing_checkpoint_resumes_from_the_newest_snapshot_and_overwrites_nothing(tmp_path, capsys):
    """Before: checkpoint.pth deleted, snapshots and log.txt kept; the rerun used to start from epoch 0."""
    out = tmp_path / "run"
    assert cli(capsys, out, "--epochs", "1")[0] == 0
    os.remove(out / "checkpoint.pth")
    snapshot = (out / "checkpoint0000.pth").read_bytes()
    status, stdout, _ = cli(capsys, out, "--epochs", "2")
    assert status == 0
    assert (f"Notice: {out}/checkpoint.pth is missing; resuming from {out}/checkpoint0000.pth, the newest readable "
            "snapshot (epoch 1).") in stdout.splitlines()
    assert f"Resumed from {out}/checkpoint0000.pth at epoch 1, iteration 0." in stdout
    assert (out / "checkpoint0000.pth").read_bytes() == snapshot
    assert epochs_in_log(out) == [0, 1] and load_checkpoint(str(out / "checkpoint.pth"))["epoch"] == 2
    assert sorted(os.listdir(out)) == ["args.json", "checkpoint.pth", "checkpoint0000.pth", "checkpoint0001.pth",
                                       "log.txt"]  # the lock went at the end


def test_a_second_run_on_a_used_folder_is_refused_and_touches_nothing(tmp_path, capsys, live_pid):
    """Before: the second run deleted the first one's temp file at start-up."""
    out = tmp_path / "busy"
    out.mkdir()
    write_lock(str(out), pid=live_pid)
    (out / "checkpoint.pth.croc-partial-abcd1234.tmp").write_text("the first run is saving")
    (out / "args.json").write_text("{}")
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    status, stdout, stderr = cli(capsys, out, "--epochs", "1")
    assert status == 1 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith(f"error: --output_dir {out} is used by a running training")
    assert f"pid {live_pid}" in stderr
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_refused_resume_leaves_args_json_and_the_lock_as_they_were(tmp_path, capsys):
    """Before: a resume refused for a changed --out_dim had already rewritten args.json."""
    out = tmp_path / "run"
    assert cli(capsys, out, "--epochs", "1", "--saveckp_freq", "0")[0] == 0
    before = (out / "args.json").read_bytes()
    status, _, stderr = cli(capsys, out, "--epochs", "2", "--out_dim", "128", "--saveckp_freq", "0")
    assert status == 1 and stderr.count("\n") == 1 and "student is another architecture" in stderr
    assert (out / "args.json").read_bytes() == before and json.loads(before)["out_dim"] == 256
    assert not (out / LOCK_NAME).exists()


def test_a_torn_last_log_line_is_cut_when_the_run_resumes(tmp_path, capsys):
    """Before: the resumed run glued its next epoch onto the torn line, losing that epoch too."""
    out = tmp_path / "run"
    assert cli(capsys, out, "--epochs", "1", "--saveckp_freq", "0")[0] == 0
    with open(out / "log.txt", "a") as f:
        f.write('{"train_loss": 8.1, "train_d_l')  # what a full disk left of the next line
    status, stdout, _ = cli(capsys, out, "--epochs", "2", "--saveckp_freq", "0")
    assert status == 0 and f"Notice: {out}/log.txt: cut a torn last line (an interrupted write)." in stdout
    assert epochs_in_log(out) == [0, 1]


def test_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    """Before: a FileExistsError traceback."""
    (tmp_path / "notes").write_text("mine")
    status, _, stderr = cli(capsys, tmp_path / "notes", "--epochs", "1")
    assert status == 1 and stderr == f"error: --output_dir {tmp_path / 'notes'} is an existing file, not a folder\n"
    assert (tmp_path / "notes").read_text() == "mine"


def test_full_disk_in_training_is_one_line_and_the_rerun_resumes(tmp_path, capsys, monkeypatch):
    """Before: the RuntimeError 'unexpected pos' traceback said nothing about space."""
    out = tmp_path / "run"
    assert cli(capsys, out, "--epochs", "1", "--saveckp_freq", "0")[0] == 0
    before = (out / "checkpoint.pth").read_bytes()

    def full_disk(obj, f):
        f.write(b"PK\x03\x04" + bytes(1 << 20))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    status, _, stderr = cli(capsys, out, "--epochs", "2", "--saveckp_freq", "0")
    monkeypatch.undo()
    assert status == 1 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"error: no space left to write {out}/checkpoint.pth: ")
    assert f"free in {out}, the file needs about " in stderr and "the previous checkpoint.pth is intact" in stderr
    assert (out / "checkpoint.pth").read_bytes() == before
    assert sorted(os.listdir(out)) == ["args.json", "checkpoint.pth", "log.txt"]
    status, stdout, _ = cli(capsys, out, "--epochs", "2", "--saveckp_freq", "0")  # space freed: it resumes
    assert status == 0 and "cut the lines of epoch(s) 1, which this run logs again" in stdout
    assert epochs_in_log(out) == [0, 1] and load_checkpoint(str(out / "checkpoint.pth"))["epoch"] == 2


def test_two_takeovers_of_one_stale_lock_never_leave_two_holders(tmp_path, dead_pid, monkeypatch):
    """Runs B and A both find the lock of a dead run. A takes it over first; B, going on with its own takeover,
    must neither remove A's fresh lock nor put back a lock over the one a third run C creates meanwhile: in the end
    exactly one run holds the folder, and the lock file names it."""
    from croc_utils import run_dir

    folder, path = str(tmp_path), str(tmp_path / LOCK_NAME)
    write_lock(folder, pid=dead_pid)
    holders, events = [], []
    stale, read_lock = run_dir._stale, run_dir._read_lock

    def acquire(name):
        try:
            holders.append((name, RunLock.acquire(folder)))
        except OutputDirError:
            events.append(f"{name} refused")

    def b_sees_stale_then_a_takes_over(holder, me):
        result = stale(holder, me)
        if result and not events:
            events.append("A starts")
            acquire("A")  # A takes the stale lock over while B is deciding
            events.append("A done")
        return result

    def c_starts_while_the_lock_file_is_away(lock_path):
        if lock_path != path and "A done" in events and "C starts" not in events and not os.path.exists(path):
            events.append("C starts")
            acquire("C")  # a third run finds no lock file at all
        return read_lock(lock_path)

    monkeypatch.setattr(run_dir, "_stale", b_sees_stale_then_a_takes_over)
    monkeypatch.setattr(run_dir, "_read_lock", c_starts_while_the_lock_file_is_away)
    acquire("B")
    monkeypatch.undo()
    if "C starts" not in events:
        acquire("C")
    on_disk = run_dir._read_lock(path)
    assert len(holders) == 1, f"{[name for name, _ in holders]} all believe they hold the folder ({events})"
    assert on_disk["token"] == holders[0][1].holder["token"]
    assert not [name for name in os.listdir(folder) if name != LOCK_NAME]  # nothing set aside is left behind
