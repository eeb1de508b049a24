"""Hooks that record what one step of one side did (loss, gradients, weights, schedules), changing nothing."""

import contextlib
import math
import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch


def released_name(name: str) -> str:
    """A student/teacher parameter or state name of either code in the released spelling, without ``module.``."""
    name = name.removeprefix("module.")
    return name.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v")


class RecordingSchedule:
    """A per-iteration schedule that remembers the values the training loop read."""

    def __init__(self, values):
        self.values, self.read = values, []

    def __getitem__(self, it):
        value = self.values[it]
        self.read.append(float(value))
        return value

    def __len__(self):
        return len(self.values)


@dataclass
class StepRecord:
    """What one step of one side produced."""

    loss: float = math.nan
    dino_term: float = math.nan
    cluster_term: float = math.nan
    grads: dict = field(default_factory=dict)  # released name -> gradient the optimizer received (None: no grad)
    clipped: int = 0  # parameters whose gradient norm exceeded --clip_grad before clipping
    n_grads: int = 0
    lr: float = math.nan
    wd: float = math.nan
    momentum: float = math.nan
    student: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    center: torch.Tensor = None
    center_c: torch.Tensor = None


class Recorder:
    """Hooks on one side's student, optimizer and loss that fill one StepRecord per step."""

    def __init__(self, student_params: dict, optimizer, croc_loss, clip: float):
        self.params, self.clip, self.records, self.current = student_params, clip, [], None
        optimizer.register_step_pre_hook(self._before_optimizer_step)
        croc_loss.register_forward_hook(self._after_loss)

    def start_step(self):
        self.current = StepRecord()
        self.records.append(self.current)

    def _after_loss(self, module, inputs, output):
        self.current.dino_term, self.current.cluster_term = (t.item() for t in output)

    def after_backward(self, loss: torch.Tensor):
        self.current.loss = loss.item()
        norms = [p.grad.norm() for p in self.params.values() if p.grad is not None]
        self.current.n_grads = len(norms)
        self.current.clipped = sum(int(n > self.clip) for n in norms)

    def _before_optimizer_step(self, optimizer, args, kwargs):
        self.current.grads = {name: None if p.grad is None else p.grad.detach().clone()
                              for name, p in self.params.items()}
        self.current.lr = optimizer.param_groups[0]["lr"]
        self.current.wd = optimizer.param_groups[0]["weight_decay"]
        if optimizer.param_groups[1]["lr"] != self.current.lr or optimizer.param_groups[1]["weight_decay"] != 0:
            self.current.wd = math.nan  # the unregularised group must share the lr and have no weight decay


@contextlib.contextmanager
def backward_recorded(recorder: Recorder):
    """Every ``loss.backward()`` in the block reports the loss and the gradients it produced to ``recorder``."""
    original = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        recorder.after_backward(self.detach())
        return out

    torch.Tensor.backward = backward
    try:
        yield
    finally:
        torch.Tensor.backward = original


class StepLoader:
    """The batches of one epoch as the training loops read them (``len``, an iterator with ``len``). Before each
    batch the random state is set from (seed, global step), so both sides draw the same random numbers; after each
    step (when the next batch is asked for, and at the end) ``after_step`` runs."""

    def __init__(self, batches: list, epoch: int, seed: int, before_step, after_step):
        self.batches, self.epoch, self.seed = batches, epoch, seed
        self.before_step, self.after_step = before_step, after_step
        self.dataset = SimpleNamespace(skipped_this_epoch=lambda epoch: {})

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return _StepIterator(self)


class _StepIterator:
    def __init__(self, loader: StepLoader):
        self.loader, self.index = loader, 0

    def __len__(self):
        return len(self.loader.batches)

    def __iter__(self):
        return self

    def __next__(self):
        loader = self.loader
        if self.index > 0:
            loader.after_step()
        if self.index >= len(loader.batches):
            raise StopIteration
        step = loader.epoch * len(loader.batches) + self.index
        torch.manual_seed(loader.seed + step)
        np.random.seed(loader.seed + step)
        random.seed(loader.seed + step)
        loader.before_step()
        self.index += 1
        return loader.batches[self.index - 1]
