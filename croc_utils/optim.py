"""The DINO optimisation recipe (docs/algorithm.md section 5): parameter groups, per-iteration cosine schedules,
per-parameter gradient clipping, frozen output layers, LARS, and the teacher's EMA."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def get_params_groups(model: nn.Module) -> list[dict]:
    """Two groups: weights (decayed) and biases / 1-D parameters (no weight decay). Frozen parameters are left out.

    Unlike timm's ``no_weight_decay()``, ``pos_embed`` and ``cls_token`` ARE decayed, as in DINO.
    """
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (not_regularized if name.endswith(".bias") or param.ndim == 1 else regularized).append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def cosine_scheduler(base_value: float, final_value: float, epochs: int, niter_per_ep: int, warmup_epochs: int = 0,
                     start_warmup_value: float = 0.0) -> np.ndarray:
    """Per-iteration values (epochs * niter_per_ep,): linear warm-up from ``start_warmup_value`` to ``base_value``
    over ``warmup_epochs``, then a cosine from ``base_value`` to ``final_value``."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    return np.concatenate((warmup, cosine))


@dataclass(frozen=True)
class Schedules:
    """Per-iteration values of the learning rate, the weight decay and the teacher momentum (length epochs*niter)."""

    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray

    @classmethod
    def from_args(cls, args, niter_per_epoch: int, world_size: int = 1) -> "Schedules":
        """``--lr`` scaled by the global batch / 256 with ``--warmup_epochs``, then cosine to ``--min_lr``; weight
        decay cosine from ``--weight_decay`` to ``--weight_decay_end``; momentum cosine from ``--momentum_teacher``
        to 1."""
        peak_lr = args.lr * args.batch_size_per_gpu * world_size / 256.0
        return cls(cosine_scheduler(peak_lr, args.min_lr, args.epochs, niter_per_epoch, args.warmup_epochs),
                   cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, niter_per_epoch),
                   cosine_scheduler(args.momentum_teacher, 1.0, args.epochs, niter_per_epoch))

    def apply(self, optimizer: torch.optim.Optimizer, it: int) -> None:
        """Set iteration ``it``'s lr on every group and its weight decay on the regularised (first) group.

        Python floats, so that the optimizer state loads with ``weights_only=True``.
        """
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = float(self.lr[it])
            if i == 0:
                group["weight_decay"] = float(self.wd[it])


@torch.no_grad()
def clip_gradients(model: nn.Module, clip: float) -> None:
    """Scale EACH parameter's gradient to norm <= ``clip`` separately (DINO's rule, not the global norm).

    Vectorised with foreach kernels; no host sync.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or clip <= 0:
        return
    scales = torch._foreach_add(torch._foreach_norm(grads, 2), 1e-6)  # one kernel per op for all parameters
    torch._foreach_reciprocal_(scales)
    torch._foreach_mul_(scales, clip)
    torch._foreach_clamp_max_(scales, 1.0)
    torch._foreach_mul_(grads, scales)


def cancel_gradients_last_layer(epoch: int, model: nn.Module, freeze_last_layer: int) -> None:
    """Drop the gradients of both output layers (names containing ``last_layer``) for the first epochs."""
    if epoch >= freeze_last_layer:
        return
    for name, param in model.named_parameters():
        if "last_layer" in name:
            param.grad = None


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher = m * teacher + (1 - m) * student, over matching parameters (buffers are not averaged, as DINO)."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al., 2017); 1-D parameters (biases, norms) are updated
    without weight decay nor trust ratio, as in DINO's convnet recipe."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 eta: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    p_norm, u_norm = torch.norm(p), torch.norm(update)
                    trust = torch.where((p_norm > 0) & (u_norm > 0), group["eta"] * p_norm / u_norm,
                                        torch.ones_like(p_norm))
                    update = update.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"].mul_(group["momentum"]).add_(update)
                p.add_(mu, alpha=-group["lr"])
        return None


def build_optimizer(name: str, params_groups: list[dict], device: torch.device | None = None) -> torch.optim.Optimizer:
    """adamw (ViTs, default), sgd (momentum .9) or lars; lr and weight decay are set by the schedules.

    AdamW is the fused kernel on CUDA (one launch for all parameters) and the foreach one elsewhere.
    """
    if name == "adamw":
        fused = device is not None and device.type == "cuda"
        return torch.optim.AdamW(params_groups, fused=fused or None, foreach=None if fused else True)
    if name == "sgd":
        return torch.optim.SGD(params_groups, lr=0, momentum=0.9)
    if name == "lars":
        return LARS(params_groups)
    raise ValueError(f"--optimizer: unknown optimizer {name!r}")


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """The ``--optimizer`` name that ``build_optimizer`` gives for ``optimizer``'s class (its class name otherwise)."""
    names = {torch.optim.AdamW: "adamw", torch.optim.SGD: "sgd", LARS: "lars"}
    return names.get(type(optimizer), type(optimizer).__name__.lower())
