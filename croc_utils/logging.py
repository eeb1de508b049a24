"""Console and file logging of training metrics: a line every ``log_freq`` iterations, epoch means, TensorBoard,
and log.txt (one JSON line per epoch): written a whole line at a time, read back skipping a torn line."""

import datetime
import errno
import json
import os
import sys
import time
from collections import defaultdict
from typing import Optional

import torch

from croc_utils.atomic_io import DiskFullError, is_out_of_space, out_of_space_message

CONSOLE_KEYS = ("loss", "d_loss", "s_loss", "mean_k", "lr")


class MetricLogger:
    """Running sums of per-iteration scalars and throughput.

    Scalars may be floats or 0-d tensors; tensors stay on their device until a log line is due, so logging adds
    one host sync per ``log_freq`` iterations (when it prints), none in the other iterations.
    """

    def __init__(self, header: str, log_freq: int, total: int, start: int = 0):
        self.header, self.log_freq, self.total = header, log_freq, total
        self.it = start
        self.count = 0
        self.sums = defaultdict(float)
        self.pending = defaultdict(list)
        self.n_images = 0
        self.t0 = time.time()

    def update(self, n_images: int, **values) -> None:
        for key, value in values.items():
            if torch.is_tensor(value):
                self.pending[key].append(value.detach().float())
            else:
                self.sums[key] += float(value)
        self.n_images += n_images
        self.count += 1
        self.it += 1
        if self.it % self.log_freq == 0 or self.it == self.total:
            print(self.line())

    def _flush(self) -> None:
        for key, values in self.pending.items():
            if values:
                self.sums[key] += torch.stack(values).sum().item()
        self.pending.clear()

    def means(self) -> dict:
        self._flush()
        return {key: value / max(self.count, 1) for key, value in self.sums.items()}

    def images_per_second(self) -> float:
        return self.n_images / max(time.time() - self.t0, 1e-9)

    def line(self) -> str:
        means = self.means()
        elapsed = time.time() - self.t0
        eta = elapsed / max(self.count, 1) * (self.total - self.it)
        parts = [f"{self.header} [{self.it}/{self.total}]", f"eta {datetime.timedelta(seconds=int(eta))}"]
        parts += [f"{k} {means[k]:.4g}" for k in CONSOLE_KEYS if k in means]
        parts.append(f"img/s {self.images_per_second():.1f}")
        return "  ".join(parts)

    def summary(self) -> dict:
        stats = self.means()
        stats["img_per_s"] = self.images_per_second()
        return stats


class TensorboardWriter:
    """Epoch scalars to ``output_dir/tb`` when asked and tensorboard is installed; otherwise does nothing."""

    def __init__(self, output_dir: Optional[str]):
        self.writer = None
        if output_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("Notice: --tensorboard needs the tensorboard package (pip install tensorboard); skipping.")
            return
        self.writer = SummaryWriter(log_dir=f"{output_dir}/tb")

    def scalars(self, stats: dict, epoch: int) -> None:
        if self.writer is not None:
            for key, value in stats.items():
                if isinstance(value, (int, float)):  # not the list of skipped files
                    self.writer.add_scalar(f"train/{key}", value, epoch)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ===== log.txt: one JSON line per epoch =====

def append_log_line(path: str, record: dict) -> None:
    """Append ``record`` to ``path`` as one JSON line, whole: one ``os.write`` with O_APPEND, then fsync.

    A write that fails part-way (a full disk) is cut back off, so the file never ends in a torn line of ours; a
    file that already does (written by something else) gets a newline first. A full disk raises DiskFullError.
    """
    data = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    size = os.fstat(fd).st_size
    try:
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write")
        os.fsync(fd)
    except OSError as err:
        os.ftruncate(fd, size)
        if is_out_of_space(err):
            raise DiskFullError(out_of_space_message(path, len(data), err)) from err
        raise
    finally:
        os.close(fd)


def _epoch_record(line: bytes) -> Optional[dict]:
    """The record of one log.txt line, or None for a line that is not a complete JSON object with an int epoch."""
    try:
        record = json.loads(line)
    except ValueError:  # torn (a kill or full disk mid-line), or not text
        return None
    return record if isinstance(record, dict) and isinstance(record.get("epoch"), int) else None


def read_log(path: str) -> list[dict]:
    """Epoch records of a log.txt, sorted by epoch; a repeated epoch (a rerun) keeps its last line.

    A line that is not a complete epoch record (torn by a kill or a full disk, edited) is skipped and reported in
    one warning line on stderr, so the complete epochs are still read. FileNotFoundError when there is no file;
    ValueError when no line at all is readable.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (give the --output_dir of a training run)")
    by_epoch, skipped = {}, []
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = _epoch_record(line)
            if record is None:
                skipped.append(number)
            else:
                by_epoch[record["epoch"]] = record
    if skipped and not by_epoch:
        raise ValueError(f"{path}: no readable epoch line ({_lines(skipped)} not a JSON epoch record)")
    if skipped:
        print(f"warning: {path}: skipped {_lines(skipped)}, not a complete JSON epoch record (torn by an "
              f"interrupted write?); read the other {len(by_epoch)} epochs", file=sys.stderr)
    return [by_epoch[e] for e in sorted(by_epoch)]


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
    return f"line {shown}" if len(numbers) == 1 else f"{len(numbers)} lines ({shown})"


def trim_log(path: str, start_epoch: int) -> Optional[str]:
    """Make log.txt end where a resumed run starts: cut a torn last line (no newline: an interrupted write) and the
    last lines of epochs >= ``start_epoch`` (the resumed run logs them again), by truncating the file in place (one
    call, no temporary file). Returns a one-line notice of what was cut, None when nothing was."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    end = sum(len(line) for line in lines)
    torn = bool(lines) and not lines[-1].endswith(b"\n")
    if torn:
        end -= len(lines.pop())
    redone = []
    while lines:
        record = _epoch_record(lines[-1])
        if lines[-1].strip() and (record is None or record["epoch"] < start_epoch):
            break
        end -= len(lines.pop())
        if record is not None:
            redone.append(record["epoch"])
    if not torn and not redone:
        return None
    os.truncate(path, end)
    cut = ["a torn last line (an interrupted write)"] if torn else []
    if redone:
        cut.append(f"the lines of epoch(s) {', '.join(map(str, sorted(redone)))}, which this run logs again")
    return f"Notice: {path}: cut {' and '.join(cut)}."
