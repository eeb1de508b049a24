"""One CrOC training step, shared by ``main_croc.py`` and ``bench/bench_train.py`` (docs/algorithm.md sections 2-5).

The step, with the shapes of a batch of B images of two S x S global views (N = (S/p)^2 patches, H heads)::

    crops, positions = batch_to_device(batch, device)     # [v1, v2, *locals] (B, 3, S, S); (B, 2N, 2)
    out = forward_step(batch, student, teacher, croc_loss, epoch, cluster_cfg=..., alpha_s=..., precision=...)
        # teacher(v1, v2) -> keys (2B, H, 1+N, d), tokens (2B, 1+N, D), CLS logits (2B, out_dim)
        # cluster_views -> teacher cluster tokens (2, M, D), M = B*H*n_centroids_max slots, valid (M,)
        # student(v1, v2, *locals) -> CLS logits, and its cluster tokens pooled with the teacher's plan
        # croc_loss -> out.loss = dino_term + alpha_s * cluster_term
    update_student(out.loss, student, optimizer, epoch, precision=..., clip_grad=..., freeze_last_layer=...)
    update_teacher(teacher, student, momentum)

Every tensor keeps a fixed shape, so a step needs no host synchronisation but the caller's one check of
``out.healthy`` (loss and teacher output finite). ``timed_phases(timer)`` lets a benchmark time the phases without
any timing argument in these functions; otherwise each phase is a ``torch.profiler.record_function`` range.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

from croc_utils.checkpoint import unwrap
from croc_utils.clustering import ClusteringConfig, ClusteringResult, cluster_views, student_cluster_tokens
from croc_utils.loss import CrOCLoss
from croc_utils.optim import cancel_gradients_last_layer, clip_gradients, ema_update
from croc_utils.photometric import apply_photometric

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

_phase_timer: Callable[[str], ContextManager] | None = None


def phase(name: str) -> ContextManager:
    """Bracket one phase of the step: the benchmark's timer when one is installed, a profiler range otherwise."""
    return _phase_timer(name) if _phase_timer is not None else torch.profiler.record_function(name)


@contextmanager
def timed_phases(timer: Callable[[str], ContextManager]):
    """Within this block every ``phase(name)`` of the step runs inside ``timer(name)`` (used by bench/)."""
    global _phase_timer
    previous, _phase_timer = _phase_timer, timer
    try:
        yield
    finally:
        _phase_timer = previous


# ===== building =====

def build_loss(args) -> CrOCLoss:
    """The CrOC loss of ``args`` (temperatures, their warm-up, output sizes, number of student crops)."""
    return CrOCLoss(out_dim=args.out_dim, out_dim_c=args.out_dim_c, ncrops=args.local_crops_number + 2,
                    warmup_teacher_temp=args.warmup_teacher_temp, teacher_temp=args.teacher_temp,
                    warmup_teacher_temp_c=args.warmup_teacher_temp_c, teacher_temp_c=args.teacher_temp_c,
                    warmup_teacher_temp_epochs=args.warmup_teacher_temp_epochs, nepochs=args.epochs,
                    student_temp_c=args.student_temp_c, centering=args.teacher_centering)


@dataclass
class Precision:
    """Autocast dtype (None: float32) and, for float16, the gradient scaler."""

    name: str
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def from_args(cls, args, device: torch.device) -> "Precision":
        """``--precision`` when given; else the released ``--use_fp16`` (fp16 on CUDA, fp32 elsewhere)."""
        name = args.precision or ("fp16" if args.use_fp16 and device.type == "cuda" else "fp32")
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        return cls(name, device.type, scaler)

    def autocast(self) -> torch.autocast:
        dtype = PRECISIONS[self.name]
        return torch.autocast(self.device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


# ===== one step =====

@dataclass(frozen=True)
class StepOutput:
    """What ``forward_step`` returns: the loss and its two terms (0-d tensors), the teacher's clustering, and
    ``healthy``, a 0-d bool tensor: the loss and the teacher's CLS output are finite."""

    loss: Tensor
    dino_term: Tensor
    cluster_term: Tensor
    clusters: ClusteringResult
    healthy: Tensor


def batch_to_device(batch: dict, device: torch.device) -> tuple[list[Tensor], Tensor]:
    """The crops [v1, v2, *locals] on ``device``, normalised, and the global views' patch positions (B, 2N, 2).

    A batch made with ``--augment_on device`` holds uint8 crops and each view's drawn colour operations
    ('colour_params'), applied here on the device (docs/algorithm.md section 1).
    """
    crops = [c.to(device, non_blocking=True) for c in batch["crops"]]
    if "colour_params" in batch:
        crops = [apply_photometric(crop, params.to(device, non_blocking=True))
                 for crop, params in zip(crops, batch["colour_params"])]
    positions = torch.cat(batch["patch_positions"][:2], dim=1).to(device, non_blocking=True)
    return crops, positions


def forward_step(batch: dict, student: nn.Module, teacher: nn.Module, croc_loss: CrOCLoss, epoch: int, *,
                 cluster_cfg: ClusteringConfig, alpha_s: float, precision: Precision,
                 device: torch.device) -> StepOutput:
    """Teacher on views 1-2, clustering, student on views 1-2 (+ local crops), loss (docs/algorithm.md 3-4)."""
    with phase("data_to_device"):
        crops, positions = batch_to_device(batch, device)
    with torch.no_grad():
        with precision.autocast(), phase("teacher_forward"):
            teacher_out = teacher(crops[:2])  # the global views; the student sees them and the local crops
        with phase("clustering"):
            clusters = cluster_views(teacher_out.backbone.keys, teacher_out.backbone.tokens, positions, cluster_cfg)
            with precision.autocast():
                teacher_c = teacher.head(clusters.teacher_tokens.flatten(0, 1), cluster=True,
                                         valid=clusters.valid.repeat(2))
    with precision.autocast(), phase("student_forward"):
        student_out = student(crops, cluster_pool=lambda tokens: student_cluster_tokens(clusters, tokens),
                              cluster_valid=clusters.valid)
        dino_term, cluster_term = croc_loss(student_out.cls_logits, teacher_out.cls_logits, epoch,
                                            student_out.cluster_logits, teacher_c, clusters.valid)
        # With no valid cluster the cluster term is 0 but stays attached to last_layer_c, so DDP sees every grad.
        loss = dino_term + alpha_s * cluster_term
    healthy = torch.isfinite(loss) & torch.isfinite(teacher_out.cls_logits).all()
    return StepOutput(loss, dino_term, cluster_term, clusters, healthy)


def update_student(loss: Tensor, student: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, *,
                   precision: Precision, clip_grad: float, freeze_last_layer: int) -> None:
    """Backward, per-parameter clipping, frozen output layers during the first epochs, optimizer step."""
    scaler, student_without_ddp = precision.scaler, unwrap(student)
    optimizer.zero_grad(set_to_none=True)
    with phase("student_backward"):
        (loss if scaler is None else scaler.scale(loss)).backward()
    with phase("optimizer"):
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients
        if clip_grad:
            clip_gradients(student_without_ddp, clip_grad)
        cancel_gradients_last_layer(epoch, student_without_ddp, freeze_last_layer)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()


def update_teacher(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """EMA of the student's weights into the teacher (docs/algorithm.md section 2)."""
    with phase("ema"):
        ema_update(teacher, unwrap(student), momentum)
