"""This repository's training step against the authors' released code, side by side, on a CPU, in one command.

    git clone https://github.com/stegmuel/CrOC /tmp/CrOC          # the released code, unmodified
    pip install einops                                            # the one package it needs that we do not
    python bench/against_release.py --release_dir /tmp/CrOC       # about 270 s of CPU time in all

The released code is imported from ``--release_dir`` at run time (its packages ``croc_utils``, ``models``, ``utils``
share names with ours, so it is loaded into a separate namespace) and made to run on a CPU without editing its
files: its ``.cuda()`` calls and tensors created on ``device='cuda'`` stay on the CPU, a one-process gloo group
serves its ``torch.distributed`` calls, and the 10000 x 10000 coordinate grid its crop transform allocates (800 MB)
is built only as large as the images. Then:

1. **Whole steps.** One checkpoint in the released layout (a student perturbed away from the teacher, random
   centres) is loaded by each side's own loading code; each side's own ``train_one_epoch`` then trains 3 epochs of
   2 steps on the same batches (made by the released augmentation) with the same random state at every step:
   lr warm-up from 0, ``--freeze_last_layer 1``, per-parameter clipping that clips, EMA, both centres, teacher
   temperature warm-up. After every step the maximum relative difference of the loss and its two terms, the
   gradients the optimizer receives, the student and teacher weights, both centres and the lr / wd / momentum used
   is printed; past its tolerance, the command exits 1 naming the quantity.
2. **Clustering alone.** Random problems (several k, merging, narrow plans, uniform marginals) through both
   clusterings from the same random state: chosen k, hard assignments, valid clusters and cluster tokens.
3. **Speed.** One training step of each side (vit_small, 224 px, batch 8, float32, the batch already in memory),
   alternated, median of ``--speed_repeats``; ms and the ratio.

Relative difference of two tensors: ||a - b|| / ||a|| (L2 over the tensor), then the maximum over the tensors of a
quantity (e.g. every weight of the student); of two numbers |a - b| / |a|. The known
slice: the key third of every ``qkv`` bias has a gradient of exactly 0 (a key bias adds the same amount to every
logit of a query, which the softmax removes); both codes compute it as float rounding noise, which AdamW then
normalises into updates of up to about lr per step. That slice is compared separately: its gradient must stay
noise (below 1e-4 of the qkv-bias gradient) and its weights may differ by at most the sum of the lrs.
"""

import argparse
import contextlib
import importlib.util
import io
import math
import os
import random
import statistics
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # "ours" is the checkout this file lies in, not an installed copy
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

import main_croc  # noqa: E402
from croc_utils.checkpoint import network_state, restart_from_checkpoint  # noqa: E402
from croc_utils.clustering import ClusteringConfig, cluster_views  # noqa: E402
from croc_utils.optim import Schedules, build_optimizer, get_params_groups  # noqa: E402
from croc_utils.parser import parse_args  # noqa: E402
from croc_utils.step import Precision, build_loss  # noqa: E402
from models.network import build_networks  # noqa: E402

RELEASE_PACKAGES = ("croc_utils", "models", "utils", "datasets")  # top-level names of the released code
RELEASE_FILES = ("main_croc.py", "utils/utils.py", "models/vision_transformer.py", "croc_utils/data_transforms.py",
                 "croc_utils/parser.py")
KEY_SLICE = "qkv.bias[key third]"

# Tolerances on the maximum relative difference (float32, eps = 1.2e-7). Same math in another order of operations
# differs by a few eps per reduction; the differences grow through 12 blocks, sharp softmaxes (teacher temperature
# 0.04: x25) and Sinkhorn's exponentials (lambda 20), and the weights inherit them through AdamW.
# Measured on this comparison: at most about 1e-5 (loss terms, gradients, weights), 2e-6 (centres); 1e-4 leaves a
# margin of 10 and stays far below what a change of the math moves (the planted bugs of docs/against_release.md move
# their quantity by 1e-3 or more). The schedules are the same numpy arithmetic on both sides: equal to the last bit.
TOLERANCES = {
    "loss": 1e-4, "dino_term": 1e-4, "cluster_term": 1e-4,
    "grads": 1e-4,
    "student": 1e-4, "teacher": 1e-4,
    "center": 1e-4, "center_c": 1e-4,
    "schedule": 1e-12,
}
KEY_SLICE_NOISE = 1e-4  # the key-bias gradient relative to the whole qkv-bias gradient: noise, not a gradient

# The training settings of the whole-step comparison (flags of both command lines, which share their names).
STEP_FLAGS = dict(
    arch="vit_tiny", patch_size=16, out_dim=4096, out_dim_c=1024, epochs=3, warmup_epochs=2, freeze_last_layer=1,
    clip_grad=0.3, lr=0.064, min_lr=1e-6, weight_decay=0.04, weight_decay_end=0.4, momentum_teacher=0.9,
    warmup_teacher_temp=0.02, teacher_temp=0.04, warmup_teacher_temp_c=0.02, teacher_temp_c=0.04,
    warmup_teacher_temp_epochs=2, batch_size_per_gpu=2, drop_path_rate=0.0, use_fp16="false", num_workers=0,
    norm_last_layer="true", alpha_s=1.0,
)
STEPS_PER_EPOCH = 2
SPEED_FLAGS = dict(STEP_FLAGS, out_dim=65536, out_dim_c=8192, batch_size_per_gpu=8, drop_path_rate=0.1, epochs=10,
                   warmup_epochs=0, freeze_last_layer=0, clip_grad=3.0, momentum_teacher=0.996, lr=0.0005,
                   warmup_teacher_temp_epochs=0)


class BenchError(RuntimeError):
    """A setup problem (missing release, missing package): one line, exit 2."""


# ===================================================================== the released code, on a CPU

def _pop_modules(names) -> dict:
    popped = {}
    for key in list(sys.modules):
        if key.split(".")[0] in names:
            popped[key] = sys.modules.pop(key)
    return popped


def load_release(release_dir: str) -> SimpleNamespace:
    """Import the released ``main_croc.py`` (and the packages it imports) from ``release_dir`` under a separate
    namespace: ours stay what ``croc_utils`` / ``models`` mean to everything else in this process."""
    root = Path(release_dir).resolve()
    missing = [f for f in RELEASE_FILES if not (root / f).is_file()]
    if missing:
        raise BenchError(f"--release_dir {release_dir}: not a clone of the released CrOC code (missing "
                         f"{', '.join(missing)})")
    if importlib.util.find_spec("einops") is None:
        raise BenchError("the released code needs einops, which this repository does not: pip install einops")
    ours = _pop_modules(RELEASE_PACKAGES)
    try:
        for name in RELEASE_PACKAGES:  # its packages, found by their folder whatever sys.path and installs say
            package = types.ModuleType(name)
            package.__path__ = [str(root / name)]
            sys.modules[name] = package
        spec = importlib.util.spec_from_file_location("released_main_croc", root / "main_croc.py")
        main = importlib.util.module_from_spec(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.loader.exec_module(main)
        theirs = _pop_modules(RELEASE_PACKAGES)
    finally:
        _pop_modules(RELEASE_PACKAGES)
        sys.modules.update(ours)
    return SimpleNamespace(root=root, main=main, utils=theirs["utils.utils"],
                           vits=theirs["models.vision_transformer"], transforms=theirs["croc_utils.data_transforms"],
                           parser=theirs["croc_utils.parser"], datasets=theirs["croc_utils.datasets"])


def _stay_on_cpu(fn):
    def wrapper(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def released_code_on_cpu():
    """While the released code runs: ``.cuda()`` is a no-op, tensors asked for on 'cuda' are made on the CPU,
    ``torch.cuda.synchronize`` does nothing, and its deprecated ``torch.cuda.amp.autocast(False)`` stays quiet."""
    saved = (torch.Tensor.cuda, nn.Module.cuda, torch.tensor, torch.cuda.synchronize)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.tensor = _stay_on_cpu(saved[2])
    torch.cuda.synchronize = lambda *args, **kwargs: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda, torch.tensor, torch.cuda.synchronize = saved


@contextlib.contextmanager
def one_process_group():
    """A gloo process group of one process (the released loss all-reduces its centres), removed afterwards."""
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


@contextlib.contextmanager
def small_coordinate_grid(release, size: int):
    """The released crop transform allocates a 10000 x 10000 grid of pixel coordinates (800 MB) when built; build it
    ``size`` x ``size`` instead (the same values for images up to that size)."""
    cls = release.transforms.RandomResizedCropWithPos
    original = cls.__init__

    def init(self, *args, **kwargs):
        release.transforms.RandomResizedCrop.__init__(self, *args, **kwargs)
        x = torch.arange(size).repeat(size, 1)[None, :]
        cls._pos = torch.cat((x, x.permute(0, 2, 1)), dim=0).float()

    cls.__init__ = init
    try:
        yield
    finally:
        cls.__init__ = original


# ===================================================================== settings and batches

def flag_list(flags: dict) -> list[str]:
    return [item for key, value in flags.items() for item in (f"--{key}", str(value))]


def release_args(release, flags: dict) -> argparse.Namespace:
    parser = argparse.ArgumentParser("released", parents=[release.parser.get_args_parser()])
    args = parser.parse_args(flag_list(flags))
    args.rank, args.world_size, args.gpu = 0, 1, 0
    return args


def our_args(flags: dict) -> argparse.Namespace:
    with contextlib.redirect_stdout(io.StringIO()):
        args = parse_args(flag_list({**flags, "device": "cpu"}))
    args.rank, args.world_size, args.gpu, args.distributed = 0, 1, 0, False
    return args


def patch_means(position_map: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 2, S, S) pixel-coordinate map -> (B, N, 2) patch means, computed in the released code's order of
    operations (patches of the rows then columns, mean over the p*p pixels of each)."""
    b, d, height, width = position_map.shape
    h, w = height // patch_size, width // patch_size
    patches = position_map.reshape(b, d, h, patch_size, w, patch_size).permute(0, 1, 2, 4, 3, 5)
    return patches.reshape(b, d, h * w, patch_size * patch_size).mean(dim=-1).transpose(1, 2)


def random_position_map(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, S, S) original-image (x, y) coordinates of the pixels of random crops (some flipped)."""
    maps = []
    for _ in range(batch):
        width, height = (torch.randint(size, 3 * size, (2,), generator=generator)).tolist()
        w, h = (torch.rand(2, generator=generator) * 0.75 + 0.25).tolist()
        w, h = w * width, h * height
        left, top = (torch.rand(2, generator=generator) * torch.tensor([width - w, height - h])).tolist()
        xs = left + (torch.arange(size) + 0.5) * w / size - 0.5
        ys = top + (torch.arange(size) + 0.5) * h / size - 0.5
        if torch.rand(1, generator=generator).item() < 0.5:
            xs = xs.flip(0)
        maps.append(torch.stack([xs[None, :].expand(size, size), ys[:, None].expand(size, size)]))
    return torch.stack(maps).float()


@dataclass
class Batch:
    """One batch in both codes' formats: ``release`` ((crops, positions), targets) as the released loader yields it,
    ``ours`` the dict our loader yields."""

    release: tuple
    ours: dict


def make_batch(views: list[torch.Tensor], maps: list[torch.Tensor], patch_size: int) -> Batch:
    """From the two views (B, 3, S, S) and their coordinate maps (B, 2, S, S): the released format repeats the views
    (its student sees ``images[2:]``) and ours takes patch-mean positions."""
    release = ([[*views, *views], [*maps, *maps]], torch.zeros(len(views[0])))
    ours = {"crops": list(views), "patch_positions": [patch_means(m, patch_size) for m in maps]}
    return Batch(release, ours)


def released_augmentation_batches(release, n_batches: int, batch_size: int, patch_size: int,
                                  seed: int) -> list[Batch]:
    """Batches made by the released ``DataAugmentationCrOC`` (224 px crops and their coordinate maps) from random
    images of 240-400 px."""
    with small_coordinate_grid(release, 400):
        augment = release.main.DataAugmentationCrOC(global_crops_scale=(0.25, 1.0))
    from PIL import Image

    rng = np.random.default_rng(seed)
    batches = []
    for b in range(n_batches):
        torch.manual_seed(seed + b)
        random.seed(seed + b)
        views, maps = [[], []], [[], []]
        for _ in range(batch_size):
            height, width = rng.integers(240, 400, size=2)
            pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
            pixels[: height // 2] //= 2  # some structure: a darker top half
            crops, positions = augment(Image.fromarray(pixels))
            for v in range(2):
                views[v].append(crops[v])
                maps[v].append(positions[v])
        batches.append(make_batch([torch.stack(v) for v in views], [torch.stack(m) for m in maps], patch_size))
    return batches


def synthetic_batches(n_batches: int, batch_size: int, size: int, patch_size: int, seed: int) -> list[Batch]:
    """Random images and random crop coordinate maps (when the released augmentation is not at hand)."""
    generator = torch.Generator().manual_seed(seed)
    return [make_batch([torch.randn(batch_size, 3, size, size, generator=generator) for _ in range(2)],
                       [random_position_map(batch_size, size, generator) for _ in range(2)], patch_size)
            for _ in range(n_batches)]


# ===================================================================== recording a step

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


# ===================================================================== the two sides

class Side:
    """One code base training from a released-layout checkpoint, step by step, with its own functions."""

    name = "side"

    def state(self) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
        """(student, teacher) state dicts in released names, and both centres, cloned."""
        raise NotImplementedError

    def run_epoch(self, epoch: int, batches: list[Batch], seed: int) -> list[StepRecord]:
        raise NotImplementedError

    def _loader(self, batches, epoch, seed, pick):
        def after_step():
            record = self.recorder.current
            record.student, record.teacher, record.center, record.center_c = self.state()
            record.momentum = self.momentum.read[-1] if self.momentum.read else math.nan

        return StepLoader([pick(b) for b in batches], epoch, seed, self.recorder.start_step, after_step)

    def _run(self, train):
        first = len(self.recorder.records)
        with backward_recorded(self.recorder), contextlib.redirect_stdout(io.StringIO()):
            train()
        return self.recorder.records[first:]


class ReleaseSide(Side):
    """The released code: its networks, loss, clustering, optimizer, schedules, checkpoint loading and
    ``train_one_epoch``, wired as its ``train_croc`` wires them (which itself needs CUDA and a dataset)."""

    name = "release"

    def __init__(self, release, flags: dict, checkpoint: str, steps_per_epoch: int):
        self.release = release
        args = self.args = release_args(release, flags)
        utils, vits, main = release.utils, release.vits, release.main
        with released_code_on_cpu():
            student = vits.__dict__[args.arch](patch_size=args.patch_size, drop_path_rate=args.drop_path_rate,
                                               is_teacher=False)
            teacher = vits.__dict__[args.arch](patch_size=args.patch_size)
            embed_dim = student.embed_dim
            student = utils.MultiCropWrapperCrOC(student, vits.CrOCHead(
                embed_dim, args.out_dim, args.out_dim_c, use_bn=args.use_bn_in_head,
                norm_last_layer=args.norm_last_layer), args.which_features)
            teacher = utils.MultiCropWrapperCrOC(teacher, vits.CrOCHead(
                embed_dim, args.out_dim, args.out_dim_c, args.use_bn_in_head), args.which_features)
            self.clustering = main.Clustering(
                args, n_tokens=args.n_tokens, sinkhorn_lambda=args.sinkhorn_lambda,
                sinkhorn_iterations=args.sinkhorn_iterations, student_temp=args.student_temp,
                uniform_marginals=args.uniform_marginals, marginals_temp_r=args.marginals_temp_r,
                marginals_temp_c=args.marginals_temp_c, pos_alpha=args.pos_alpha, n_heads=teacher.backbone.num_heads)
            self.student = nn.parallel.DistributedDataParallel(student, find_unused_parameters=False,
                                                               broadcast_buffers=False)
            teacher.load_state_dict(self.student.module.state_dict(), strict=False)
            teacher.requires_grad_(False)
            self.teacher = teacher
            self.croc_loss = main.CrOCLoss(
                out_dim=args.out_dim, out_dim_c=args.out_dim_c, ncrops=args.local_crops_number + 2,
                warmup_teacher_temp=args.warmup_teacher_temp, warmup_teacher_temp_c=args.warmup_teacher_temp_c,
                teacher_temp=args.teacher_temp, teacher_temp_c=args.teacher_temp_c,
                warmup_teacher_temp_epochs=args.warmup_teacher_temp_epochs, nepochs=args.epochs,
                student_temp_c=args.student_temp_c)
            self.optimizer = torch.optim.AdamW(utils.get_params_groups(self.student))
            self.lr = utils.cosine_scheduler(args.lr * args.batch_size_per_gpu / 256.0, args.min_lr, args.epochs,
                                             steps_per_epoch, warmup_epochs=args.warmup_epochs)
            self.wd = utils.cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, steps_per_epoch)
            self.momentum = RecordingSchedule(utils.cosine_scheduler(args.momentum_teacher, 1, args.epochs,
                                                                     steps_per_epoch))
            with contextlib.redirect_stdout(io.StringIO()):
                utils.restart_from_checkpoint(checkpoint, run_variables={"epoch": 0}, student=self.student,
                                              teacher=self.teacher, croc_loss=self.croc_loss)
        params = {released_name(n): p for n, p in self.student.module.named_parameters() if p.requires_grad}
        self.recorder = Recorder(params, self.optimizer, self.croc_loss, args.clip_grad)

    def state(self):
        return ({released_name(k): v.detach().clone() for k, v in self.student.module.state_dict().items()},
                {released_name(k): v.detach().clone() for k, v in self.teacher.state_dict().items()},
                self.croc_loss.center.detach().clone(), self.croc_loss.center_c.detach().clone())

    def run_epoch(self, epoch, batches, seed):
        loader = self._loader(batches, epoch, seed, lambda b: b.release)

        def train():
            with released_code_on_cpu():
                self.release.main.train_one_epoch(
                    self.student, self.teacher, self.teacher, self.croc_loss, loader, self.optimizer, self.lr,
                    self.wd, self.momentum, self.args.alpha_s, epoch, None, self.clustering, self.args)

        return self._run(train)


class OursSide(Side):
    """This repository: ``croc_utils.step``'s builders, ``restart_from_checkpoint`` and ``main_croc.train_one_epoch``
    as ``main_croc.train`` calls them. ``train_one_epoch`` may be another function of the same signature (tests)."""

    name = "ours"

    def __init__(self, flags: dict, checkpoint: str, steps_per_epoch: int, train_one_epoch=None):
        args = self.args = our_args(flags)
        self.device = torch.device("cpu")
        self.train_one_epoch = train_one_epoch or main_croc.train_one_epoch
        self.student, self.teacher = build_networks(args, self.device)
        self.croc_loss = build_loss(args)
        self.optimizer = build_optimizer(args.optimizer, get_params_groups(self.student), self.device)
        schedules = Schedules.from_args(args, steps_per_epoch, 1)
        self.momentum = RecordingSchedule(schedules.momentum)
        self.schedules = replace(schedules, momentum=self.momentum)
        self.precision = Precision.from_args(args, self.device)
        restart_from_checkpoint(checkpoint, {"epoch": 0}, student=self.student, teacher=self.teacher,
                                croc_loss=self.croc_loss)
        params = {released_name(n): p for n, p in self.student.named_parameters() if p.requires_grad}
        self.recorder = Recorder(params, self.optimizer, self.croc_loss, args.clip_grad)

    def state(self):
        return ({k: v.detach().clone() for k, v in network_state(self.student, False).items()},
                {k: v.detach().clone() for k, v in network_state(self.teacher, False).items()},
                self.croc_loss.center.detach().clone(), self.croc_loss.center_c.detach().clone())

    def run_epoch(self, epoch, batches, seed):
        loader = self._loader(batches, epoch, seed, lambda b: b.ours)

        def train():
            self.train_one_epoch(self.student, self.teacher, self.croc_loss, loader, self.optimizer, self.schedules,
                                 epoch, self.precision, self.args, device=self.device, stop={"requested": False})

        return self._run(train)


def write_start_checkpoint(student: dict, path: str, seed: int, noise: float = 0.05) -> None:
    """A checkpoint in the released layout whose teacher is ``student`` (released names, no ``module.``) and whose
    student is that plus noise (``noise`` x the mean magnitude of each tensor; the frozen weight-norm gains stay 1),
    with random centres: so that EMA, both centres and every loss term move from the first step."""
    generator = torch.Generator().manual_seed(seed)
    teacher = {k: v.detach().clone() for k, v in student.items()}
    perturbed = {}
    for key, value in teacher.items():
        if key.endswith("weight_g"):
            perturbed[key] = value.clone()
            continue
        scale = noise * (value.abs().mean().item() + 1e-2)
        perturbed[key] = value + scale * torch.randn(value.shape, generator=generator)
    out_dim = teacher["head.last_layer.weight_v"].shape[0]
    out_dim_c = teacher["head.last_layer_c.weight_v"].shape[0]
    centres = {"center": 0.05 * torch.randn(1, out_dim, generator=generator),
               "center_c": 0.05 * torch.randn(1, out_dim_c, generator=generator)}
    torch.save({"student": {f"module.{k}": v for k, v in perturbed.items()}, "teacher": teacher,
                "croc_loss": centres, "epoch": 0}, path)


# ===================================================================== comparing

def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||a|| (L2 over the whole tensor; 0 when both are 0)."""
    a, b = a.double(), b.double()
    scale = a.norm().item()
    diff = (a - b).norm().item()
    return 0.0 if diff == 0 else diff / scale if scale > 0 else math.inf


def split_key_slice(tensors: dict) -> tuple[dict, dict]:
    """Cut the key third out of every ``qkv.bias``: (the tensors with q and v thirds only, the key thirds)."""
    rest, keys = {}, {}
    for name, value in tensors.items():
        if name.endswith("attn.qkv.bias") and value is not None:
            third = value.shape[0] // 3
            rest[name] = torch.cat([value[:third], value[2 * third:]])
            keys[name] = value[third:2 * third]
        else:
            rest[name] = value
    return rest, keys


def max_rel_diff(ref: dict, cand: dict) -> tuple[float, str]:
    """Largest ``rel_diff`` over the tensors of two dicts, and the name where it occurs; a name missing on one side
    or a gradient present on one side only counts as infinite."""
    worst, where = 0.0, ""
    for name in sorted(set(ref) | set(cand)):
        a, b = ref.get(name), cand.get(name)
        if a is None and b is None and name in ref and name in cand:
            continue
        d = math.inf if a is None or b is None or a.shape != b.shape else rel_diff(a, b)
        if d > worst or not where:
            worst, where = d, name
    return worst, where


def scalar_rel(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / abs(a) if a != 0 else math.inf


@dataclass
class Row:
    """One step's comparison: the difference per quantity, where the largest tensor difference lies, and facts."""

    label: str
    diffs: dict
    where: dict
    facts: dict

    def failures(self) -> list[str]:
        out = [f"{q} {d:.1e} > {TOLERANCES[q]:.0e}" + (f" ({self.where[q]})" if self.where.get(q) else "")
               for q, d in self.diffs.items() if not d <= TOLERANCES[q]]
        return out + self.facts.get("failures", [])


def compare_step(label: str, ref: StepRecord, cand: StepRecord, lr_sum: float) -> Row:
    """Compare one step of the two sides (``lr_sum``: the lrs used so far, the bound on the key-slice weights)."""
    diffs, where = {}, {}
    for q in ("loss", "dino_term", "cluster_term"):
        diffs[q] = scalar_rel(getattr(ref, q), getattr(cand, q))
    grads_ref, keys_ref = split_key_slice(ref.grads)
    grads_cand, keys_cand = split_key_slice(cand.grads)
    diffs["grads"], where["grads"] = max_rel_diff(grads_ref, grads_cand)
    failures = []
    key_weight_diff = 0.0
    for who in ("student", "teacher"):
        rest_ref, kw_ref = split_key_slice(getattr(ref, who))
        rest_cand, kw_cand = split_key_slice(getattr(cand, who))
        diffs[who], where[who] = max_rel_diff(rest_ref, rest_cand)
        key_weight_diff = max([key_weight_diff] + [(kw_ref[n] - kw_cand[n]).abs().max().item()
                                                   for n in kw_ref if n in kw_cand])
    for q in ("center", "center_c"):
        diffs[q] = rel_diff(getattr(ref, q), getattr(cand, q))
    diffs["schedule"] = max(scalar_rel(getattr(ref, q), getattr(cand, q)) for q in ("lr", "wd", "momentum"))
    key_noise = 0.0
    for grads, keys in ((ref.grads, keys_ref), (cand.grads, keys_cand)):
        for name, k in keys.items():
            scale = grads[name].abs().max().item()
            key_noise = max(key_noise, k.abs().max().item() / scale if scale > 0 else 0.0)
    if key_noise > KEY_SLICE_NOISE:
        failures.append(f"{KEY_SLICE} gradient {key_noise:.1e} of the qkv-bias gradient: not noise")
    if key_weight_diff > lr_sum:
        failures.append(f"{KEY_SLICE} weights differ by {key_weight_diff:.1e} > the lrs so far {lr_sum:.1e}")
    if ref.clipped != cand.clipped or ref.n_grads != cand.n_grads:
        failures.append(f"clipped {ref.clipped}/{ref.n_grads} vs {cand.clipped}/{cand.n_grads} gradients")
    facts = {"lr": ref.lr, "loss": ref.loss, "clipped": f"{cand.clipped}/{cand.n_grads}", "key_noise": key_noise,
             "key_weights": key_weight_diff, "failures": failures}
    return Row(label, diffs, where, facts)


def compare_start(ref: Side, cand: Side) -> Row:
    """Both sides right after loading the checkpoint: every weight and centre must be identical."""
    s1, t1, c1, cc1 = ref.state()
    s2, t2, c2, cc2 = cand.state()
    diffs, where = {}, {}
    diffs["student"], where["student"] = max_rel_diff(s1, s2)
    diffs["teacher"], where["teacher"] = max_rel_diff(t1, t2)
    diffs["center"], diffs["center_c"] = rel_diff(c1, c2), rel_diff(cc1, cc2)
    failures = [f"{q} differs after loading ({d:.1e})" for q, d in diffs.items() if d != 0]
    return Row("load", diffs, where, {"failures": failures})


COLUMNS = ("loss", "dino_term", "cluster_term", "grads", "student", "teacher", "center", "center_c", "schedule")
HEADERS = ("loss", "d_term", "s_term", "grads", "student", "teacher", "center", "center_c", "lr/wd/m")


def format_table(rows: list[Row]) -> str:
    """Markdown table: one row per step, the max relative difference of each quantity."""
    head = ["step", "lr", *HEADERS, "clipped", "k-bias grad", "k-bias w"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.label, f"{row.facts['lr']:.1e}" if "lr" in row.facts else ""]
        cells += [f"{row.diffs[q]:.1e}" if q in row.diffs else "" for q in COLUMNS]
        cells += [row.facts.get("clipped", ""),
                  f"{row.facts['key_noise']:.0e}" if "key_noise" in row.facts else "",
                  f"{row.facts['key_weights']:.0e}" if "key_weights" in row.facts else ""]
        lines.append("| " + " | ".join(cells) + " |")
    tol = ["tolerance", ""] + [f"{TOLERANCES[q]:.0e}" for q in COLUMNS] + ["", f"{KEY_SLICE_NOISE:.0e}", "sum lr"]
    lines.append("| " + " | ".join(tol) + " |")
    return "\n".join(lines)


def compare_training(ref: Side, cand: Side, batches: list[Batch], seed: int, epochs: int) -> list[Row]:
    """Train both sides epoch by epoch on the same batches; a Row per step (the first row: right after loading)."""
    rows = [compare_start(ref, cand)]
    per_epoch = len(batches) // epochs
    lr_sum = 0.0
    for epoch in range(epochs):
        chunk = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
        ref_records = ref.run_epoch(epoch, chunk, seed)
        cand_records = cand.run_epoch(epoch, chunk, seed)
        for i, (a, b) in enumerate(zip(ref_records, cand_records)):
            lr_sum += a.lr
            rows.append(compare_step(f"{epoch}.{i}", a, b, lr_sum))
            a.student = a.teacher = b.student = b.teacher = a.grads = b.grads = None  # free the memory
        if len(ref_records) != len(cand_records) or len(ref_records) != len(chunk):
            raise RuntimeError(f"epoch {epoch}: {len(ref_records)} vs {len(cand_records)} steps recorded")
    return rows


# ===================================================================== clustering alone

def clustering_problem(seed: int) -> tuple[dict, dict]:
    """Random clustering settings and inputs with some structure (tokens drawn around a few directions)."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    n_tokens = rng.randint(3, 8)
    cfg = dict(n_tokens=n_tokens, n_centroids_max=rng.randint(2, n_tokens), sinkhorn_lambda=rng.choice([5, 20, 50]),
               sinkhorn_iterations=rng.choice([1, 3, 5, 8]), pos_alpha=rng.choice([0.0, 1.0, 4.0, 10.0]),
               uniform_marginals=rng.random() < 0.25, marginals_temp_r=rng.choice([0.5, 2.0]),
               marginals_temp_c=rng.choice([0.5, 2.0]))
    batch, heads, grid, dim, patch = rng.randint(1, 3), rng.choice([2, 3, 6]), rng.choice([4, 6, 8]), 16, 16
    n = grid * grid
    directions = torch.nn.functional.normalize(torch.randn(heads, 4, dim, generator=generator), dim=-1)
    labels = torch.randint(0, 4, (2 * batch, 1 + n), generator=generator)
    keys = directions[torch.arange(heads)[None, :, None], labels[:, None, :]]  # (2B, H, 1+N, d)
    keys = keys + rng.choice([0.1, 0.5, 1.0]) * torch.randn(keys.shape, generator=generator)
    tokens = torch.randn(2 * batch, 1 + n, 8 * heads, generator=generator)
    maps = [random_position_map(batch, grid * patch, generator) for _ in range(2)]
    inputs = dict(keys=keys, tokens=tokens, maps=maps, patch_size=patch, batch=batch, heads=heads)
    return cfg, inputs


def release_clustering(release, cfg: dict, inputs: dict, seed: int):
    args = SimpleNamespace(patch_size=inputs["patch_size"], n_centroids_max=cfg["n_centroids_max"])
    clustering = release.main.Clustering(
        args, n_tokens=cfg["n_tokens"], sinkhorn_lambda=cfg["sinkhorn_lambda"],
        sinkhorn_iterations=cfg["sinkhorn_iterations"], uniform_marginals=cfg["uniform_marginals"],
        marginals_temp_r=cfg["marginals_temp_r"], marginals_temp_c=cfg["marginals_temp_c"],
        pos_alpha=cfg["pos_alpha"], n_heads=inputs["heads"])
    torch.manual_seed(seed)
    with released_code_on_cpu():
        (c1, c2), valid, assignments, _ = clustering.compute_teacher_centroids(
            inputs["tokens"], inputs["keys"].flatten(0, 1), inputs["maps"])
    return (c1, c2), valid, assignments


def compare_clustering_problem(release, seed: int) -> dict:
    """One random problem through both clusterings; a dict of what agreed (or ``skipped``: the release cannot
    run it, e.g. exactly one valid cluster)."""
    cfg, inputs = clustering_problem(seed)
    try:
        (c1, c2), valid_r, assign_r = release_clustering(release, cfg, inputs, seed)
    except TypeError as err:  # 'int' object is not iterable: a single valid cluster
        return {"seed": seed, "skipped": str(err)}
    torch.manual_seed(seed)
    positions = torch.cat([patch_means(m, inputs["patch_size"]) for m in inputs["maps"]], dim=1)
    try:
        ours = cluster_views(inputs["keys"], inputs["tokens"], positions, ClusteringConfig(**cfg))
    except Exception as err:  # noqa: BLE001 - reported as a failure of ours, with the settings
        return {"seed": seed, "cfg": cfg, "error": f"ours raised {type(err).__name__}: {err}"}
    k_max, k_release = cfg["n_centroids_max"], assign_r.shape[-1]
    assign_r = torch.nn.functional.pad(assign_r, (0, k_max - k_release))
    hard_equal = bool(torch.equal(assign_r > 0, ours.assignments > 0))
    chosen_r = (assign_r.sum(dim=(0, 2)) > 0).sum(dim=1)  # clusters holding a token, per problem
    chosen_o = (ours.assignments.sum(dim=(0, 2)) > 0).sum(dim=1)
    valid_o = ours.valid.nonzero().flatten().tolist()
    valid_r_mapped = [(i // k_release) * k_max + i % k_release for i in valid_r]
    order = torch.tensor(valid_r_mapped, dtype=torch.long)
    tokens_diff = max(rel_diff(c1, ours.teacher_tokens[0][order]), rel_diff(c2, ours.teacher_tokens[1][order]))
    return {"seed": seed, "cfg": cfg, "problems": inputs["batch"] * inputs["heads"], "hard_equal": hard_equal,
            "k_equal": bool(torch.equal(chosen_r, chosen_o)), "valid_equal": sorted(valid_r_mapped) == valid_o,
            "plan_diff": rel_diff(assign_r, ours.assignments), "tokens_diff": tokens_diff,
            "ks": sorted(set(ours.n_clusters.tolist())), "n_valid": len(valid_o)}


def compare_clusterings(release, n_problems: int, seed: int) -> tuple[list[dict], list[str]]:
    """``n_problems`` random settings through both clusterings; the results and one failure line per kind of
    disagreement (with how many settings show it and the first of them)."""
    results, s = [], seed
    while len([r for r in results if "skipped" not in r]) < n_problems:
        results.append(compare_clustering_problem(release, s))
        s += 1
    done = [r for r in results if "skipped" not in r]
    kinds = {"error": ("our clustering raised an error", lambda r: "error" in r),
             "hard": ("hard assignments differ", lambda r: "error" not in r and not r["hard_equal"]),
             "k": ("chosen k differs", lambda r: "error" not in r and not r["k_equal"]),
             "valid": ("valid clusters differ", lambda r: "error" not in r and not r["valid_equal"]),
             "tokens": (f"cluster tokens differ by more than {TOLERANCES['student']:.0e}",
                        lambda r: "error" not in r and not r["tokens_diff"] <= TOLERANCES["student"])}
    failures = []
    for what, test in kinds.values():
        bad = [r for r in done if test(r)]
        if bad:
            detail = f": {bad[0]['error']}" if "error" in bad[0] else ""
            failures.append(f"clustering: {what} in {len(bad)} of {len(done)} settings (first: setting "
                            f"{bad[0]['seed']}{detail})")
    return [r for r in done if "error" not in r] + [r for r in results if "skipped" in r], failures


def clustering_summary(results: list[dict]) -> str:
    done = [r for r in results if "skipped" not in r]
    skipped = [r for r in results if "skipped" in r]
    lines = [f"{len(done)} random settings completed, {sum(r['problems'] for r in done)} problems"]
    if done:
        lines.append(f"hard assignments equal: {sum(r['hard_equal'] for r in done)}/{len(done)}; chosen k equal: "
                     f"{sum(r['k_equal'] for r in done)}/{len(done)}; valid clusters equal: "
                     f"{sum(r['valid_equal'] for r in done)}/{len(done)}; max relative difference of the plans "
                     f"{max(r['plan_diff'] for r in done):.1e}, of the cluster tokens "
                     f"{max(r['tokens_diff'] for r in done):.1e}")
        lines.append(f"k chosen: {sorted({k for r in done for k in r['ks']})}; lambda: "
                     f"{sorted({r['cfg']['sinkhorn_lambda'] for r in done})}; n_tokens: "
                     f"{sorted({r['cfg']['n_tokens'] for r in done})}; Sinkhorn iterations: "
                     f"{sorted({r['cfg']['sinkhorn_iterations'] for r in done})}; uniform marginals in "
                     f"{sum(r['cfg']['uniform_marginals'] for r in done)}")
    if skipped:
        lines.append(f"{len(skipped)} drawn setting(s) skipped: the released code fails on them "
                     f"({skipped[0]['skipped']})")
    return "\n".join(lines)


# ===================================================================== speed

def time_steps(release, repeats: int, seed: int) -> dict:
    """Median ms of one training step of each side (batch in memory), alternating sides, after one warm-up each."""
    flags = SPEED_FLAGS
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "start.pth")
        ours = None
        torch.manual_seed(seed)
        ref = ReleaseSide(release, flags, "", 1)
        write_start_checkpoint(ref.state()[1], checkpoint, seed)
        ref = ReleaseSide(release, flags, checkpoint, 1)
        ours = OursSide(flags, checkpoint, 1)
    batch = synthetic_batches(1, flags["batch_size_per_gpu"], 224, flags["patch_size"], seed)
    times = {"release": [], "ours": []}
    for i in range(repeats + 1):
        for side in (ref, ours):
            start = time.perf_counter()
            side.run_epoch(0, batch, seed + i)
            if i > 0:
                times[side.name].append(1000 * (time.perf_counter() - start))
            side.recorder.records.clear()
    return times


# ===================================================================== the command

def get_args(argv=None):
    parser = argparse.ArgumentParser("against_release", description=__doc__.splitlines()[0])
    parser.add_argument("--release_dir", required=True, help="an unmodified clone of github.com/stegmuel/CrOC")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clustering_problems", type=int, default=24)
    parser.add_argument("--speed_repeats", type=int, default=3, help="timed steps per side (0: no speed test)")
    return parser.parse_args(argv)


def run(args) -> int:
    """The three comparisons; returns the exit status (0: every quantity within its tolerance)."""
    release = load_release(args.release_dir)
    print(f"released code: {release.root}\nours: {ROOT}\ntorch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, CPU float32")
    failures = []
    with one_process_group(), tempfile.TemporaryDirectory() as folder:
        # ---- whole steps
        t0 = time.perf_counter()
        checkpoint = os.path.join(folder, "start.pth")
        torch.manual_seed(args.seed)
        initial = ReleaseSide(release, STEP_FLAGS, "", STEPS_PER_EPOCH)  # the released initialisation
        write_start_checkpoint(initial.state()[1], checkpoint, args.seed)
        del initial
        ref = ReleaseSide(release, STEP_FLAGS, checkpoint, STEPS_PER_EPOCH)
        cand = OursSide(STEP_FLAGS, checkpoint, STEPS_PER_EPOCH)
        n_batches = STEP_FLAGS["epochs"] * STEPS_PER_EPOCH
        batches = released_augmentation_batches(release, n_batches, STEP_FLAGS["batch_size_per_gpu"],
                                                STEP_FLAGS["patch_size"], args.seed)
        rows = compare_training(ref, cand, batches, args.seed, STEP_FLAGS["epochs"])
        del ref, cand
        print(f"\n## Whole training steps ({time.perf_counter() - t0:.0f} s): max relative difference, released "
              f"code vs ours\n")
        print(", ".join(f"--{k} {v}" for k, v in STEP_FLAGS.items()))
        print(format_table(rows))
        failures += training_failures(rows)

        # ---- clustering alone
        if args.clustering_problems:
            t0 = time.perf_counter()
            results, clustering_failures = compare_clusterings(release, args.clustering_problems, args.seed)
            failures += clustering_failures
            print(f"\n## Clustering alone ({time.perf_counter() - t0:.0f} s)\n")
            print(clustering_summary(results))

        # ---- speed
        if args.speed_repeats:
            t0 = time.perf_counter()
            times = time_steps(release, args.speed_repeats, args.seed)
            rel, ours = statistics.median(times["release"]), statistics.median(times["ours"])
            print(f"\n## Speed ({time.perf_counter() - t0:.0f} s): one training step, vit_small, 224 px, batch 8, "
                  f"CPU float32, median of {args.speed_repeats}\n")
            print(f"| code | ms per step | runs |\n|---|---|---|\n| released | {rel:.0f} | "
                  f"{' '.join(f'{t:.0f}' for t in times['release'])} |\n| ours | {ours:.0f} | "
                  f"{' '.join(f'{t:.0f}' for t in times['ours'])} |\n\nspeed-up: {rel / ours:.2f}x")
    return verdict(failures)


def training_failures(rows: list[Row]) -> list[str]:
    """One line per quantity past its tolerance: the first step where it is, and in how many later steps."""
    first, count = {}, {}
    for row in rows:
        for failure in row.failures():
            quantity = failure.split(" ")[0]
            count[quantity] = count.get(quantity, 0) + 1
            first.setdefault(quantity, f"step {row.label}: {failure}")
    return [line + (f" (and in {count[q] - 1} later steps)" if count[q] > 1 else "") for q, line in first.items()]


def verdict(failures: list[str]) -> int:
    """Print the failures (or OK) and return the exit status."""
    print()
    if failures:
        print("FAILED:\n" + "\n".join(f"  {f}" for f in failures))
        return 1
    print("OK: every quantity within its tolerance")
    return 0


def main(argv=None) -> None:
    args = get_args(argv)
    try:
        sys.exit(run(args))
    except BenchError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
