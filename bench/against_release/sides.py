"""The two sides: the released code and this repository, each training from one released-layout checkpoint with its
own builders, checkpoint loading and ``train_one_epoch``."""

import argparse
import contextlib
import io
import math
import os
import tempfile
from dataclasses import replace

import torch
from torch import nn

import main_croc
from bench.against_release.batches import Batch
from bench.against_release.recording import (
    Recorder,
    RecordingSchedule,
    StepLoader,
    StepRecord,
    backward_recorded,
    released_name,
)
from bench.against_release.release import flag_list, release_args, released_code_on_cpu
from croc_utils.checkpoint import network_state, restart_from_checkpoint
from croc_utils.optim import Schedules, build_optimizer, get_params_groups
from croc_utils.parser import parse_args
from croc_utils.step import Precision, build_loss
from models.network import build_networks


def our_args(flags: dict) -> argparse.Namespace:
    with contextlib.redirect_stdout(io.StringIO()):
        args = parse_args(flag_list({**flags, "device": "cpu"}))
    args.rank, args.world_size, args.gpu, args.distributed = 0, 1, 0, False
    return args


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


def start_sides(release, flags: dict, steps_per_epoch: int, seed: int) -> tuple["ReleaseSide", "OursSide"]:
    """Both sides loaded from one checkpoint (``write_start_checkpoint`` of the released initialisation drawn from
    ``seed``)."""
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "start.pth")
        torch.manual_seed(seed)
        initial = ReleaseSide(release, flags, "", steps_per_epoch)  # the released initialisation
        write_start_checkpoint(initial.state()[1], checkpoint, seed)
        del initial
        return ReleaseSide(release, flags, checkpoint, steps_per_epoch), OursSide(flags, checkpoint, steps_per_epoch)
