"""Dense probe for small-scale evidence: frozen patch features, a converged linear classifier, K-means.

The authors' LC protocol (``eval/linear_segmentation.py``) stays the protocol for the real datasets. At the scale
of a CPU or few-minute GPU pretraining it cannot tell backbones apart: an augmented, mini-batch Adam probe on a few
hundred images wanders by more than the gaps to measure. This probe removes every source of noise that is not the
backbone (docs/evaluation.md section 4):

* features are computed once per backbone, without augmentation, and cached (last block, after the final norm);
* the classifier is linear on the patch tokens and trained to convergence: full-batch L-BFGS on the convex,
  L2-regularised cross-entropy. Targets are the class FRACTIONS of each patch's labelled pixels (no patch is
  dropped): with the patch's logits copied to its p x p pixels, this soft-label cross-entropy is exactly the
  per-pixel cross-entropy, so mixed patches (object boundaries, most of the signal at 6x6 grids) count with the
  weight of their pixels, and nothing is discarded;
* the weight decay is chosen on a held-out part of the TRAIN images (never on val), then the probe is refitted on
  all train images;
* mIoU is pixel-level on a fixed val set: logits upsampled bilinearly to the mask size (as the LC protocol does),
  dataset-level TP/FP/FN (``eval.metrics``);
* K-means on the val features (standardised, PCA; ``eval.kmeans``): K = #classes matched one-to-one
  (Hungarian), and over-clustering (K = 100, many-to-one);
* a SEED draws the probe's train images from a fixed pool (and the held-out part among them) and seeds K-means;
  the val set is the same for every seed. Mean and sample std (ddof 1) over the seeds are reported.

The pool and val images (and on the synthetic scenes, which streams of the generator they are) come from
``eval.probe_data``; ``eval.dense_probe`` is the command line.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eval.features import patch_features
from eval.kmeans import kmeans, resize_nearest, score_clusters, standardize_pca
from eval.metrics import IGNORE_INDEX, confusion_matrix, segmentation_scores
from eval.probe_data import ProbeData

DEFAULT_WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


@dataclass
class ProbeConfig:
    """What the probe does with a backbone's features (the data is in :class:`ProbeData`)."""

    n_train: int = 300  # probe train images per seed, drawn from the pool
    holdout_fraction: float = 0.25  # of those, held out to choose the weight decay
    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS
    seeds: tuple[int, ...] = (0, 1, 2)
    max_iter: int = 500  # L-BFGS iterations per fit (converged in ~450 on the cpu preset's checkpoints)
    n_clusters: tuple[int, ...] = (0, 100)  # 0 = number of classes (Hungarian); above = many-to-one
    pca_dim: int = 50
    kmeans_iter: int = 100
    kmeans_restarts: int = 3
    n_last_blocks: int = 1
    batch_size: int = 64


@torch.no_grad()
def cache_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64, n_last_blocks: int = 1,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Frozen patch features (N, n_last_blocks * D, S/p, S/p) float32 on the CPU for images (N, 3, S, S)."""
    feats = [patch_features(model, batch.to(device, torch.float32), n_last_blocks).float().cpu()
             for batch in images.split(batch_size)]
    return torch.cat(feats)


def patch_class_fractions(masks: torch.Tensor, grid: tuple[int, int], n_classes: int) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """Per patch: the fraction of its labelled pixels in each class, and how many pixels are labelled.

    Args:
        masks: (N, S, S') class ids in [0, n_classes) or 255; S, S' multiples of the grid (h, w).
    Returns:
        fractions (N*h*w, n_classes) (rows of unlabelled patches are 0) and counts (N*h*w,), row order
        (image, row, column) as features (N, D, h, w) flattened by ``permute(0, 2, 3, 1)``.
    """
    n, s, s2 = masks.shape
    h, w = grid
    if s % h or s2 % w:
        raise ValueError(f"mask size {s}x{s2} is not a multiple of the feature grid {h}x{w}")
    ys = torch.arange(s) // (s // h)
    xs = torch.arange(s2) // (s2 // w)
    patch = (torch.arange(n)[:, None, None] * h + ys[None, :, None]) * w + xs[None, None, :]  # (N, S, S')
    labels = masks.long()
    valid = labels != IGNORE_INDEX
    if bool((labels[valid] >= n_classes).any()):
        raise ValueError(f"mask labels must lie in [0, {n_classes}) or be {IGNORE_INDEX}")
    counts = torch.bincount(patch[valid] * n_classes + labels[valid], minlength=n * h * w * n_classes)
    counts = counts.reshape(n * h * w, n_classes).float()
    total = counts.sum(1)
    return counts / total.clamp_min(1)[:, None], total


# ===== linear probe =====

@dataclass
class LinearProbe:
    """Logits = ((x - mean) / std) @ weight.T + bias for patch features x (M, D)."""

    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    n_iter: int = 0
    loss: float = float("nan")
    grad_norm: float = float("nan")

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature maps (N, D, h, w) -> logits (N, C, h, w)."""
        x = (feats.permute(0, 2, 3, 1) - self.mean) / self.std
        return (x @ self.weight.T + self.bias).permute(0, 3, 1, 2)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_m w_m * CE(targets_m, softmax(logits_m)) / sum_m w_m for logits and targets (M, C), weights (M,).

    With targets = a patch's class fractions and w = its labelled pixels, this is the mean per-pixel cross-entropy
    of the patch logits copied to every pixel of the patch.
    """
    return -(weights * (targets * F.log_softmax(logits, dim=1)).sum(1)).sum() / weights.sum()


def fit_linear_probe(x: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, *, weight_decay: float,
                     max_iter: int = 300, init: LinearProbe | None = None) -> LinearProbe:
    """Full-batch L-BFGS on sum_m w_m * CE(targets_m, softmax(z_m)) / sum w + weight_decay / 2 * |W|^2.

    Args:
        x: (M, D) patch features; targets: (M, C) class fractions; weights: (M,) labelled pixels per patch.
        init: a probe to start from (warm start along a weight-decay path); its mean and std are reused.
    The features are standardised with their own mean and std, so one weight-decay grid suits every backbone.
    """
    if init is None:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        weight = torch.zeros(targets.shape[1], x.shape[1])
        bias = torch.zeros(targets.shape[1])
    else:
        mean, std, weight, bias = init.mean, init.std, init.weight.clone(), init.bias.clone()
    xs = (x - mean) / std
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = soft_cross_entropy(xs @ weight.T + bias, targets, weights) + 0.5 * weight_decay * (weight ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = closure().detach()
    grad_norm = float(torch.cat([weight.grad.flatten(), bias.grad]).norm())
    n_iter = int(optimizer.state[weight].get("n_iter", 0))
    return LinearProbe(weight.detach(), bias.detach(), mean, std, n_iter, float(loss), grad_norm)


def predict_masks(probe: LinearProbe, feats: torch.Tensor, size: tuple[int, int], chunk: int = 64) -> torch.Tensor:
    """Pixel predictions (N, S, S') from features (N, D, h, w): logits upsampled bilinearly, then argmax."""
    preds = [F.interpolate(probe.logits(f), size=size, mode="bilinear", align_corners=False).argmax(1)
             for f in feats.split(chunk)]
    return torch.cat(preds)


def probe_scores(probe: LinearProbe, feats: torch.Tensor, masks: torch.Tensor, class_names) -> dict:
    """Dataset-level pixel mIoU of ``probe`` on features (N, D, h, w) against masks (N, S, S')."""
    pred = predict_masks(probe, feats, tuple(masks.shape[-2:]))
    return segmentation_scores(confusion_matrix(pred, masks.long(), len(class_names)), list(class_names))


def _flat(feats: torch.Tensor, masks: torch.Tensor, n_classes: int):
    """Rows for fitting: features (N*h*w, D), class fractions (N*h*w, C), labelled pixels (N*h*w,)."""
    fractions, counts = patch_class_fractions(masks, tuple(feats.shape[-2:]), n_classes)
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]), fractions, counts


def _choose_weight_decay(pool_feats: torch.Tensor, pool_masks: torch.Tensor, chosen: torch.Tensor, class_names,
                         cfg: ProbeConfig) -> tuple[float, list[dict]]:
    """The weight decay that scores best on a held-out ``holdout_fraction`` of the ``chosen`` train images (ties: the
    stronger decay), and the path of fits that chose it; val is never seen."""
    n_hold = max(1, round(cfg.n_train * cfg.holdout_fraction))
    hold, fit = chosen[:n_hold], chosen[n_hold:]
    x, y, c = _flat(pool_feats[fit], pool_masks[fit], len(class_names))
    path, probe = [], None
    for wd in sorted(cfg.weight_decays, reverse=True):  # strong to weak: each fit starts from the previous one
        probe = fit_linear_probe(x, y, c, weight_decay=wd, max_iter=cfg.max_iter, init=probe)
        miou = probe_scores(probe, pool_feats[hold], pool_masks[hold], class_names)["miou"]
        path.append({"weight_decay": wd, "heldout_miou": miou, "n_iter": probe.n_iter, "loss": probe.loss,
                     "grad_norm": probe.grad_norm})
    best = max(path, key=lambda r: (r["heldout_miou"], r["weight_decay"]))
    return best["weight_decay"], path


def run_linear_probe(pool_feats: torch.Tensor, pool_masks: torch.Tensor, val_feats: torch.Tensor,
                     val_masks: torch.Tensor, class_names, *, seed: int, cfg: ProbeConfig) -> dict:
    """One seed: draw the train images, choose the weight decay on their held-out part, refit on all, score val."""
    n_classes = len(class_names)
    if cfg.n_train > pool_feats.shape[0]:
        raise ValueError(f"the probe needs {cfg.n_train} train images but the pool holds {pool_feats.shape[0]}")
    chosen = torch.randperm(pool_feats.shape[0], generator=torch.Generator().manual_seed(seed))[:cfg.n_train]
    weight_decay, path = cfg.weight_decays[0], []  # one candidate: nothing to choose, no held-out fit
    if len(cfg.weight_decays) > 1:
        weight_decay, path = _choose_weight_decay(pool_feats, pool_masks, chosen, class_names, cfg)
    x, y, c = _flat(pool_feats[chosen], pool_masks[chosen], n_classes)
    probe = fit_linear_probe(x, y, c, weight_decay=weight_decay, max_iter=cfg.max_iter)
    scores = probe_scores(probe, val_feats, val_masks, class_names)
    return {**scores, "seed": seed, "weight_decay": weight_decay, "weight_decay_path": path,
            "n_iter": probe.n_iter, "loss": probe.loss, "grad_norm": probe.grad_norm,
            "converged": probe.n_iter < cfg.max_iter}


# ===== K-means =====

def run_kmeans_seed(x: torch.Tensor, grid: tuple[int, int], val_masks: torch.Tensor, class_names, *, k: int,
                    seed: int, cfg: ProbeConfig) -> dict:
    """K-means on PCA'd val features x (V*h*w, pca_dim), cluster maps upsampled (nearest) to the masks, scored."""
    labels = kmeans(x, k, cfg.kmeans_iter, cfg.kmeans_restarts, seed=seed)
    maps = resize_nearest(labels.reshape(val_masks.shape[0], *grid), val_masks.shape[-1])  # masks are square
    scores = score_clusters(maps, val_masks.long(), k, list(class_names))
    return {key: scores[key] for key in ("miou", "per_class_iou", "pixel_accuracy", "matching")} | {"seed": seed}


# ===== one backbone =====

def summarise(runs: list[dict]) -> dict:
    """Mean and sample std (ddof 1; 0 for one run) of the runs' mIoU, in mIoU points (x100)."""
    mious = np.array([100 * r["miou"] for r in runs])
    std = float(mious.std(ddof=1)) if len(mious) > 1 else 0.0
    return {"miou_mean": float(mious.mean()), "miou_std": std, "mious": mious.tolist(), "runs": runs}


def evaluate_backbone(model: nn.Module, data: ProbeData, cfg: ProbeConfig,
                      device: str | torch.device = "cpu", verbose: bool = True) -> dict:
    """Linear probe and K-means of one frozen backbone over every seed of ``cfg``. mIoU values are in points."""
    t0 = time.time()
    pool = cache_features(model, data.pool_images, batch_size=cfg.batch_size, n_last_blocks=cfg.n_last_blocks,
                          device=device)
    val = cache_features(model, data.val_images, batch_size=cfg.batch_size, n_last_blocks=cfg.n_last_blocks,
                         device=device)
    return evaluate_features(pool, val, data, cfg, verbose=verbose, seconds_features=time.time() - t0)


def evaluate_features(pool: torch.Tensor, val: torch.Tensor, data: ProbeData, cfg: ProbeConfig, *,
                      verbose: bool = True, seconds_features: float = 0.0) -> dict:
    """Linear probe and K-means of cached feature maps, pool (P, D, h, w) and val (V, D, h, w), of ``data``'s images.

    K-means is skipped (an empty "kmeans" entry) when the features have fewer dimensions than ``cfg.pca_dim``.
    """
    t0 = time.time()
    names = data.class_names
    probe_runs = [run_linear_probe(pool, data.pool_masks, val, data.val_masks, names, seed=s, cfg=cfg)
                  for s in cfg.seeds]
    kmeans_results = {}
    if cfg.pca_dim <= val.shape[1]:
        x = standardize_pca(val.permute(0, 2, 3, 1).reshape(-1, val.shape[1]), cfg.pca_dim)
        for k in cfg.n_clusters:
            k = k or len(names)
            runs = [run_kmeans_seed(x, tuple(val.shape[-2:]), data.val_masks, names, k=k, seed=s, cfg=cfg)
                    for s in cfg.seeds]
            kmeans_results[str(k)] = summarise(runs)
    out = {"linear": summarise(probe_runs), "kmeans": kmeans_results, "feature_shape": list(val.shape[1:]),
           "seconds": {"features": seconds_features, "total": seconds_features + time.time() - t0}}
    if verbose:
        print(format_result(out))
    return out


def format_result(result: dict) -> str:
    """One line: linear probe and K-means mIoU, mean +- std over seeds."""
    parts = [f"linear {result['linear']['miou_mean']:.2f} +- {result['linear']['miou_std']:.2f}"]
    parts += [f"K-means K={k} {r['miou_mean']:.2f} +- {r['miou_std']:.2f}" for k, r in result["kmeans"].items()]
    return " | ".join(parts) + f"  ({result['seconds']['total']:.1f} s)"
