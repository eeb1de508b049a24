"""The student and teacher networks of a run's arguments (docs/algorithm.md section 2)."""

import inspect
import warnings

import torch
from torch import nn

from croc_utils.checkpoint import unwrap

from .head import CrOCHead, CrOCNetwork
from .vision_transformer import build_backbone


def build_network(args, *, drop_path_rate: float) -> CrOCNetwork:
    """Backbone (``--arch``, ``--patch_size``, ``--which_features``) + head (``--out_dim``, ``--out_dim_c``, ...).

    ``args``: parsed flags, or a checkpoint's saved args after ``croc_utils.parser.upgrade_args``.
    """
    backbone = build_backbone(args.arch, patch_size=args.patch_size, drop_path_rate=drop_path_rate,
                              which_features=args.which_features)
    head = CrOCHead(backbone.embed_dim, args.out_dim, args.out_dim_c, use_bn=args.use_bn_in_head,
                    norm_last_layer=args.norm_last_layer, hidden_dim=args.head_hidden_dim,
                    bottleneck_dim=args.head_bottleneck_dim)
    return CrOCNetwork(backbone, head)


def wrap_ddp(student: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """The student in DDP, its buffers (BatchNorm statistics with --use_bn_in_head) not broadcast at each forward, as
    released. torch >= 2.13 names that ``forward_sync_buffers=False`` and warns on ``broadcast_buffers``; older
    torch only has ``broadcast_buffers``. The two differ only at construction, where the former syncs the buffers
    once: they are equal on every rank there (a fresh BatchNorm's), so the training is the same."""
    ddp = nn.parallel.DistributedDataParallel
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                      else {"broadcast_buffers": False})
    return ddp(student, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)


def build_networks(args, device: torch.device) -> tuple[nn.Module, CrOCNetwork]:
    """Student (wrapped in DDP when ``args.distributed``) and teacher: equal weights, the teacher frozen.

    DDP broadcasts rank 0's weights when it wraps the student, so the teacher is copied afterwards. With
    ``--compile`` both backbones are compiled in place (their state-dict names do not change).
    """
    student = build_network(args, drop_path_rate=args.drop_path_rate).to(device)
    teacher = build_network(args, drop_path_rate=0.0).to(device)
    if args.distributed and args.use_bn_in_head:
        if device.type == "cuda":
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
            teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
        else:  # torch's SyncBatchNorm runs on GPUs only
            warnings.warn("--use_bn_in_head on a CPU process group: the head's BatchNorm uses each process's own "
                          "batch statistics (SyncBatchNorm needs GPUs)", stacklevel=2)
    if args.distributed:
        student = wrap_ddp(student, device)
    teacher.load_state_dict(unwrap(student).state_dict(), strict=True)
    teacher.requires_grad_(False)
    if args.compile:
        unwrap(student).backbone.compile()
        teacher.backbone.compile()
    return student, teacher
