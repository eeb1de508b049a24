"""The CrOC loss: DINO's CLS term plus the cross-view cluster term (docs/algorithm.md section 4).

The training step calls it as::

    dino_term, cluster_term = croc_loss(student_cls_logits, teacher_cls_logits, epoch,
                                        student_cluster_logits, teacher_cluster_logits, valid)
    # cluster logits (2M, out_dim_c): M view-1 slots then the same M slots in view 2; valid (M,) bool
    loss = dino_term + alpha_s * cluster_term
    logs = croc_loss.diagnostics()  # ent, kl, ent_c, kl_c of that step, over all processes

Both centres are buffers (``center`` (1, out_dim), ``center_c`` (1, out_dim_c)) so they are saved in the state dict
with the released names. Under ``torch.distributed`` the centre updates and the diagnostics use one all-reduce per
step; without a process group they are computed locally.
"""

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from croc_utils.distributed import is_dist


def _all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over all processes when a process group is up; ``t`` itself otherwise."""
    if is_dist():
        dist.all_reduce(t)
    return t


def _temperature_schedule(warmup_temp: float, temp: float, warmup_epochs: int, nepochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: linear from ``warmup_temp`` to ``temp`` over ``warmup_epochs``, then flat."""
    return np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs), np.full(nepochs - warmup_epochs, temp)))


CENTERINGS = ("center", "sinkhorn_knopp")  # --teacher_centering: the released EMA centre, or DINOv2's SK


@torch.no_grad()
def sinkhorn_knopp_log_probs(logits: Tensor, temp: float, weights: Tensor | None = None,
                             n_iterations: int = 3) -> Tensor:
    """Teacher log-probabilities by Sinkhorn-Knopp instead of centring (DINOv2's ``sinkhorn_knopp_teacher``).

    Q = exp(logits / temp) is scaled alternately so that every output receives the same total mass over the global
    batch (all processes) and every row sums to 1 (docs/algorithm.md section 4, "teacher centring"). So the batch
    cannot pile onto a few outputs (the centre's job) and no row can sit on the uniform distribution unless the whole
    batch does: each image or cluster gets a sharp distribution of its own.

    Args:
        logits: (n, C) teacher logits; temp: teacher temperature.
        weights: optional (n,) 1 for the rows that count, 0 for the others (invalid cluster slots): those get no mass
            and count nowhere (their rows come out uniform, and are masked by the caller's weights anyway).
        n_iterations: alternations of output and row scaling (3 as DINOv2).
    Returns:
        (n, C) log-probabilities, every counted row summing to 1.
    """
    x = logits.float() / temp
    # One factor for the whole global batch (a per-row one would change the first output scaling's result), taken
    # over the rows that count (an invalid slot may hold anything).
    counted = x if weights is None else torch.where(weights[:, None] > 0, x, torch.full_like(x, -torch.inf))
    top = counted.max() if x.numel() else x.new_full((), -torch.inf)
    if is_dist():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    q = torch.exp(counted - top.clamp_min(-1e30))  # rows that do not count: 0 (no counted row anywhere: all 0)
    n_out = q.shape[1]
    # DINOv2 also divides by the global row count and the total mass; both scale every row alike and are absorbed
    # by the row normalisation, so one all-reduce per iteration (the output totals) is all that is needed.
    for _ in range(n_iterations):
        q = q / _all_reduce_sum(q.sum(dim=0, keepdim=True)).clamp_min(1e-30)  # every output: the same total mass
        q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-30)  # every row sums to 1
    q = torch.where(q.sum(dim=1, keepdim=True) > 0, q, torch.full_like(q, 1.0 / n_out))
    return torch.log(q.clamp_min(1e-30))


def _entropy(log_probs: Tensor) -> Tensor:
    """Entropy of every row of (n, C) log-probabilities -> (n,)."""
    return -(log_probs.exp() * log_probs).sum(dim=-1)


class CrOCLoss(nn.Module):
    """DINO term on the CLS logits and cross-view term on the cluster logits, with centring and sharpening.

    Args:
        out_dim, out_dim_c: sizes of the CLS and cluster logits.
        ncrops: number of student crops (2 global + local crops); the teacher always sees the 2 global views.
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_c, teacher_temp_c: teacher temperatures, warmed up
            linearly over ``warmup_teacher_temp_epochs`` of ``nepochs``.
        student_temp, student_temp_c: student temperatures.
        center_momentum: EMA momentum of both centres.
        centering: "center" (released: subtract the EMA centre, then sharpen) or "sinkhorn_knopp" (DINOv2: three
            Sinkhorn-Knopp iterations on the sharpened teacher logits; the centres are still updated and saved).
    """

    def __init__(self, out_dim: int, out_dim_c: int, ncrops: int, *, warmup_teacher_temp: float, teacher_temp: float,
                 warmup_teacher_temp_c: float, teacher_temp_c: float, warmup_teacher_temp_epochs: int, nepochs: int,
                 student_temp: float = 0.1, student_temp_c: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "center"):
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"--teacher_centering must be one of {', '.join(CENTERINGS)}, got {centering!r}")
        self.centering = centering
        if ncrops < 2:
            raise ValueError(f"ncrops must be >= 2 (the two global views), got {ncrops}")
        if not 0 <= warmup_teacher_temp_epochs <= nepochs:
            raise ValueError(f"warmup_teacher_temp_epochs ({warmup_teacher_temp_epochs}) must lie in [0, nepochs "
                             f"({nepochs})]")
        self.ncrops = ncrops
        self.student_temp, self.student_temp_c = student_temp, student_temp_c
        self.center_momentum = center_momentum
        self.teacher_temp_schedule = _temperature_schedule(warmup_teacher_temp, teacher_temp,
                                                           warmup_teacher_temp_epochs, nepochs)
        self.teacher_temp_schedule_c = _temperature_schedule(warmup_teacher_temp_c, teacher_temp_c,
                                                             warmup_teacher_temp_epochs, nepochs)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_c", torch.zeros(1, out_dim_c))
        self._diagnostics = None

    def forward(self, student_cls: Tensor, teacher_cls: Tensor, epoch: int, student_clusters: Tensor,
                teacher_clusters: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Both loss terms; then the centres move and the diagnostics are recorded.

        Args:
            student_cls: (ncrops*B, out_dim) student CLS logits, global views first.
            teacher_cls: (2B, out_dim) teacher CLS logits, view 1 then view 2.
            epoch: current epoch (selects the teacher temperatures).
            student_clusters: (2M, out_dim_c) student cluster logits, view-1 rows then view-2 rows.
            teacher_clusters: (2M, out_dim_c) teacher cluster logits, same order.
            valid: (M,) bool, the slots that hold a cluster (the others count nowhere); None: all M.
        Returns:
            (dino_term, cluster_term), scalars; cluster_term is 0 when no cluster is valid.
        """
        self._check_inputs(student_cls, teacher_cls, epoch, student_clusters, teacher_clusters)
        n_slots = student_clusters.shape[0] // 2
        weights = (torch.ones(n_slots, device=student_clusters.device) if valid is None else valid.float()).repeat(2)
        teacher_logp, teacher_logp_c = self._teacher_log_probs(teacher_cls, teacher_clusters, epoch, weights)
        student_logp = F.log_softmax(student_cls.float() / self.student_temp, dim=-1)
        student_logp_c = F.log_softmax(student_clusters.float() / self.student_temp_c, dim=-1)
        dino_term = self._dino_term(student_logp, teacher_logp.exp())
        cluster_term = self._cluster_term(student_logp_c, teacher_logp_c.exp(), weights)
        sums = self._diagnostic_sums(teacher_logp, teacher_logp_c, weights, dino_term.detach(), cluster_term.detach())
        self._diagnostics = self.update_center(teacher_cls, teacher_clusters, weights, sums)
        return dino_term, cluster_term

    def _check_inputs(self, student_cls: Tensor, teacher_cls: Tensor, epoch: int, student_clusters: Tensor,
                      teacher_clusters: Tensor) -> None:
        """One-line errors for shapes that would otherwise be silently mis-chunked."""
        out_dim, out_dim_c = self.center.shape[1], self.center_c.shape[1]
        if teacher_cls.dim() != 2 or teacher_cls.shape[0] % 2 or teacher_cls.shape[1] != out_dim:
            raise ValueError(f"teacher_cls must be (2B, {out_dim}), got {tuple(teacher_cls.shape)}")
        if tuple(student_cls.shape) != (self.ncrops * teacher_cls.shape[0] // 2, out_dim):
            raise ValueError(f"student_cls must be (ncrops*B, {out_dim}) with ncrops={self.ncrops} and "
                             f"B={teacher_cls.shape[0] // 2}, got {tuple(student_cls.shape)}")
        if (teacher_clusters.dim() != 2 or teacher_clusters.shape[0] % 2 or teacher_clusters.shape[1] != out_dim_c
                or student_clusters.shape != teacher_clusters.shape):
            raise ValueError(f"student_clusters and teacher_clusters must both be (2M, {out_dim_c}), got "
                             f"{tuple(student_clusters.shape)} and {tuple(teacher_clusters.shape)}")
        if not 0 <= epoch < len(self.teacher_temp_schedule):
            raise ValueError(f"epoch {epoch} outside the temperature schedule [0, {len(self.teacher_temp_schedule)})")

    @torch.no_grad()
    def _teacher_log_probs(self, teacher_cls: Tensor, teacher_clusters: Tensor, epoch: int,
                           weights: Tensor) -> tuple[Tensor, Tensor]:
        """Centred and sharpened teacher log-probabilities, (2B, out_dim) and (2M, out_dim_c)."""
        temp, temp_c = self.teacher_temp_schedule[epoch], self.teacher_temp_schedule_c[epoch]
        if self.centering == "sinkhorn_knopp":
            return (sinkhorn_knopp_log_probs(teacher_cls, temp),
                    sinkhorn_knopp_log_probs(teacher_clusters, temp_c, weights))
        return (F.log_softmax((teacher_cls.float() - self.center) / temp, dim=-1),
                F.log_softmax((teacher_clusters.float() - self.center_c) / temp_c, dim=-1))

    def _dino_term(self, student_logp: Tensor, teacher_probs: Tensor) -> Tensor:
        """CE(teacher view i, student crop v) for every i != v, averaged over images and pairs (section 4).

        Args:
            student_logp: (ncrops*B, C); teacher_probs: (2B, C).
        """
        student = student_logp.unflatten(0, (self.ncrops, -1))  # (ncrops, B, C)
        teacher = teacher_probs.unflatten(0, (2, -1))  # (2, B, C)
        # Teacher view i meets every student crop except crop i: the sum over all crops minus crop i.
        others = student.sum(dim=0, keepdim=True) - student[:2]
        n_pairs = 2 * (self.ncrops - 1)
        return -(teacher * others).sum() / (n_pairs * teacher.shape[1])

    @staticmethod
    def _cluster_term(student_logp_c: Tensor, teacher_probs_c: Tensor, weights: Tensor) -> Tensor:
        """(CE(teacher view 1, student view 2) + CE(teacher view 2, student view 1)) / 2, each a mean over the
        valid clusters.

        Args:
            student_logp_c, teacher_probs_c: (2M, C); weights: (2M,) 1 for a valid slot, 0 otherwise.
        Returns 0 (still attached to the student graph) when no slot is valid.
        """
        student = student_logp_c.unflatten(0, (2, -1))  # (2, M, C)
        teacher = teacher_probs_c.unflatten(0, (2, -1))
        per_row = -(teacher * student.flip(0)).sum(dim=-1).flatten()  # (2M,) CE of every (teacher row, student row)
        return (weights * per_row).sum() / weights.sum().clamp_min(1)

    @torch.no_grad()
    def _diagnostic_sums(self, teacher_logp: Tensor, teacher_logp_c: Tensor, weights: Tensor, dino_term: Tensor,
                         cluster_term: Tensor) -> Tensor:
        """Per-process sums behind the diagnostics: (4 + out_dim + out_dim_c,) = [sum H(teacher), n teacher rows x
        dino term, sum H(teacher cluster) over valid rows, n valid cluster rows x cluster term, sum of the teacher
        CLS distributions (out_dim), sum of the valid teacher cluster distributions (out_dim_c)]."""
        n_rows, n_rows_c = teacher_logp.shape[0], weights.sum()
        teacher_probs, teacher_probs_c = teacher_logp.exp(), teacher_logp_c.exp()
        scalars = torch.stack([_entropy(teacher_logp).sum(), n_rows * dino_term,
                               (weights * _entropy(teacher_logp_c)).sum(), n_rows_c * cluster_term])
        return torch.cat([scalars, teacher_probs.sum(0), weights @ teacher_probs_c])

    @torch.no_grad()
    def update_center(self, teacher_cls: Tensor, teacher_clusters: Tensor, weights: Tensor | None = None,
                      extra: Tensor | None = None) -> Tensor:
        """EMA of both centres towards the mean teacher logits of the global batch (section 4).

        ``center`` moves towards the mean of the teacher CLS logits of all processes; ``center_c`` towards the mean
        of the teacher cluster logits over the total number of clusters of all processes, and stays as it was when
        that number is 0. One all-reduce carries the sums, the counts and ``extra``.

        Args:
            teacher_cls: (2B, out_dim); teacher_clusters: (2M, out_dim_c), M may be 0.
            weights: optional (2M,) 1 for the valid cluster rows, 0 for the others (None: all valid).
            extra: optional (e,) per-process sums reduced in the same collective.
        Returns:
            ``extra`` summed over processes, and then the two global row counts: (e + 2,).
        """
        if extra is None:
            extra = self.center.new_zeros(0)
        if weights is None:
            weights = torch.ones(teacher_clusters.shape[0], device=self.center.device)
        counts = torch.stack([torch.tensor(float(teacher_cls.shape[0]), device=self.center.device), weights.sum()])
        cluster_sum = weights @ teacher_clusters.float()
        local = torch.cat([teacher_cls.float().sum(0), cluster_sum, extra.float(), counts])
        total = _all_reduce_sum(local)
        cls_sum, cluster_sum, rest = total.split([self.center.shape[1], self.center_c.shape[1], total.numel()
                                                  - self.center.shape[1] - self.center_c.shape[1]])
        n_rows, n_rows_c = rest[-2], rest[-1]
        momentum = self.center_momentum
        self.center.mul_(momentum).add_(cls_sum[None] / n_rows, alpha=1 - momentum)
        center_c = self.center_c * momentum + cluster_sum[None] / n_rows_c.clamp_min(1) * (1 - momentum)
        self.center_c.copy_(torch.where(n_rows_c > 0, center_c, self.center_c))
        return rest

    def diagnostics(self) -> dict[str, Tensor]:
        """Logged quantities of the last forward, over all processes (0-dim tensors, no host sync).

        ent: mean entropy of the teacher CLS distribution softmax((t - center) / T_t) (centre before the update).
        ent_batch: entropy of the batch-mean teacher CLS distribution. Together they tell DINO's phases apart:
            both near ln(out_dim) = a uniform teacher (the first phase, or collapse onto the uniform solution);
            ent low and ent_batch high = every image gets a sharp and different distribution (learning);
            both low = every image gets the same sharp distribution (collapse onto one output).
        kl: mean KL(teacher || student) over the pairs of the DINO term = dino term - ent.
        ent_c, ent_batch_c: the same two entropies for the teacher cluster distribution, over the valid clusters
            (0 without any cluster).
        kl_c: mean KL(teacher view i || student view j != i) over the clusters = cluster term - ent_c.
        """
        if self._diagnostics is None:
            raise RuntimeError("CrOCLoss.diagnostics() needs a forward first")
        out_dim, out_dim_c = self.center.shape[1], self.center_c.shape[1]
        scalars, probs_sum, probs_sum_c, counts = self._diagnostics.split([4, out_dim, out_dim_c, 2])
        (ent_sum, dino_sum, ent_c_sum, cluster_sum), (n_rows, n_rows_c) = scalars.unbind(), counts.unbind()
        ent, ent_c = ent_sum / n_rows, ent_c_sum / n_rows_c.clamp_min(1)
        return {"ent": ent, "ent_batch": _entropy_of_probs(probs_sum / n_rows), "kl": dino_sum / n_rows - ent,
                "ent_c": ent_c, "ent_batch_c": _entropy_of_probs(probs_sum_c / n_rows_c.clamp_min(1)),
                "kl_c": cluster_sum / n_rows_c.clamp_min(1) - ent_c}


def _entropy_of_probs(probs: Tensor) -> Tensor:
    """Entropy of one distribution (C,) given as probabilities (0 log 0 = 0; an all-zero vector gives 0)."""
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum()
