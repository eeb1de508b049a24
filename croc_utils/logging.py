"""Console and file logging of training metrics: a line every ``log_freq`` iterations, epoch means, TensorBoard."""

import datetime
import time
from collections import defaultdict
from typing import Optional

import torch

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
