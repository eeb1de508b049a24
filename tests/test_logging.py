"""The metric logger: means of floats and device tensors, console lines every log_freq iterations, throughput."""

import re

import pytest
import torch

from croc_utils.logging import MetricLogger


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
