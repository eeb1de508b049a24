"""The metric logger (means of floats and device tensors, console lines every log_freq iterations, throughput) and
log.txt: lines written whole, read back skipping a torn line, cut back for a resume."""

import errno
import json
import os
import re

import pytest
import torch

from croc_utils.atomic_io import DiskFullError
from croc_utils.logging import MetricLogger, append_log_line, read_log, trim_log


def test_means_of_floats_and_tensors(capsys):
    logger = MetricLogger(header="Epoch [0/1]", log_freq=2, total=4)
    for i in range(4):
        logger.update(n_images=8, loss=torch.tensor(float(i)), lr=0.5 * i, mean_k=torch.tensor(3.0))
    stats = logger.summary()
    assert stats["loss"] == pytest.approx(1.5) and stats["lr"] == pytest.approx(0.75) and stats["mean_k"] == 3.0
    assert stats["img_per_s"] > 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert [re.search(r"\[(\d+)/4\]", line).group(1) for line in lines] == ["2", "4"]  # every log_freq, and the end
    assert "loss 0.5" in lines[0] and "loss 1.5" in lines[1]


def test_resumed_epoch_counts_from_its_start(capsys):
    logger = MetricLogger(header="Epoch [3/5]", log_freq=10, total=12, start=9)
    logger.update(n_images=1, loss=2.0)
    logger.update(n_images=1, loss=4.0)
    logger.update(n_images=1, loss=6.0)
    assert logger.summary()["loss"] == pytest.approx(4.0)  # the iterations run in this process only
    out = capsys.readouterr().out
    assert "[10/12]" in out and "[12/12]" in out and "[11/12]" not in out


def test_tensors_wait_on_their_device_until_a_line_is_due():
    logger = MetricLogger(header="", log_freq=100, total=1000)
    value = torch.tensor(1.0)
    logger.update(n_images=1, loss=value)
    assert logger.pending["loss"][0] is not value and float(logger.pending["loss"][0]) == 1.0  # kept, not read
    assert "loss" not in logger.sums
    assert logger.means()["loss"] == 1.0 and not logger.pending


# ===== log.txt =====

def write_log(path, epochs, tail=""):
    path.write_text("".join(json.dumps({"train_loss": 10.0 - e, "epoch": e}) + "\n" for e in epochs) + tail)


def test_log_lines_are_appended_whole_and_read_back(tmp_path):
    path = str(tmp_path / "log.txt")
    for epoch in range(3):
        append_log_line(path, {"train_loss": 1.0 / (epoch + 1), "epoch": epoch})
    assert [json.loads(line)["epoch"] for line in open(path)] == [0, 1, 2]
    assert [r["train_loss"] for r in read_log(path)] == [1.0, 0.5, 1 / 3]


def test_a_failed_append_leaves_no_torn_line(tmp_path, monkeypatch):
    """A full disk that lets half a line through: that half is cut back off, and the error is one line."""
    path = tmp_path / "log.txt"
    write_log(path, [0])
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFullError, match=rf"no space left to write {re.escape(str(path))}: .* free in"):
        append_log_line(str(path), {"train_loss": 1.0, "epoch": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_append_after_a_foreign_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "log.txt"
    write_log(path, [0], tail='{"train_loss": 9')
    append_log_line(str(path), {"train_loss": 8.0, "epoch": 1})
    assert path.read_text().splitlines()[-1] == '{"train_loss": 8.0, "epoch": 1}'


def test_reader_skips_a_torn_line_with_one_warning_and_keeps_the_last_line_per_epoch(tmp_path, capsys):
    path = tmp_path / "log.txt"
    write_log(path, [0, 1, 2, 1], tail='{"train_loss": 7.0, "ep')
    records = read_log(str(path))
    assert [(r["epoch"], r["train_loss"]) for r in records] == [(0, 10.0), (1, 9.0), (2, 8.0)]
    err = capsys.readouterr().err
    assert err == (f"warning: {path}: skipped line 5, not a complete JSON epoch record (torn by an interrupted "
                   "write?); read the other 3 epochs\n")
    write_log(path, [0])
    read_log(str(path))
    assert capsys.readouterr().err == ""


def test_reader_without_any_readable_line(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text('[1]\n{"epoch": "one"}\n{"epo')
    with pytest.raises(ValueError, match=r"no readable epoch line \(3 lines \(1, 2, 3\) not a JSON epoch record\)"):
        read_log(str(path))
    path.write_text("")
    assert read_log(str(path)) == []
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_log(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("epochs, tail, start, kept, notice", [
    ([0, 1, 2], "", 3, [0, 1, 2], None),  # resumed where the log ends: nothing to cut
    ([0, 1, 2], "", 1, [0], "cut the lines of epoch(s) 1, 2, which this run logs again"),
    ([0, 1], '{"train_loss": 8', 2, [0, 1], "cut a torn last line (an interrupted write)"),
    ([0, 1], '{"train_loss": 8', 1, [0], "cut a torn last line (an interrupted write) and the lines of epoch(s) 1"),
    ([0, 1, 0, 1], "", 2, [0, 1, 0, 1], None),  # what the old silent restart left: the reader keeps the last lines
])
def test_trim_log_cuts_a_torn_line_and_the_epochs_a_resume_trains_again(tmp_path, epochs, tail, start, kept, notice):
    path = tmp_path / "log.txt"
    write_log(path, epochs, tail)
    said = trim_log(str(path), start)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == kept
    assert path.read_text().endswith("\n")
    assert (said is None) if notice is None else (notice in said and said.startswith(f"Notice: {path}: cut"))
    assert trim_log(str(tmp_path / "missing.txt"), 0) is None
