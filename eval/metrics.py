"""Segmentation and video metrics: dataset-level mIoU, cluster-to-class matching, DAVIS J and F.

docs/evaluation.md sections 1 (mIoU), 2 (Hungarian / many-to-one matching) and 3 (J, F, J&F).
All functions take torch tensors and work on whatever device the inputs live on.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

IGNORE_INDEX = 255


# ===== confusion matrices and mIoU (docs/evaluation.md section 1) =====

def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel counts (C, C), rows = ground-truth class, columns = predicted class.

    Args:
        pred: (...) integer predictions in [0, num_classes).
        target: (...) integer labels in [0, num_classes) or ``ignore_index``.
        num_classes: C.
    Pixels whose target is ``ignore_index`` are left out.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    valid = target != ignore_index
    pred, target = pred[valid].long(), target[valid].long()
    if bool(((pred < 0) | (pred >= num_classes) | (target < 0) | (target >= num_classes)).any()):  # one host sync
        raise ValueError(f"predictions and labels must lie in [0, {num_classes}) (labels may also be {ignore_index})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """IoU = TP / (TP + FP + FN) per class from a (C, C) confusion matrix; NaN where TP+FP+FN = 0."""
    conf = conf.double()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp  # TP+FP + TP+FN - TP
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(conf: torch.Tensor) -> float:
    """Mean IoU over ALL classes of a dataset-level confusion matrix.

    A class that is neither present nor predicted (TP+FP+FN = 0) counts as IoU 0, as the authors' evaluation
    divides by max(TP+FP+FN, 1e-8) and averages over every class.
    """
    return float(torch.nan_to_num(iou_per_class(conf), nan=0.0).mean())


def segmentation_scores(conf: torch.Tensor, class_names: list[str]) -> dict:
    """JSON-ready summary: mIoU and per-class IoU (None for a class absent from both maps)."""
    iou = iou_per_class(conf)
    per_class = {name: (None if math.isnan(v) else v) for name, v in zip(class_names, iou.tolist())}
    absent = [name for name, v in per_class.items() if v is None]
    return {"miou": mean_iou(conf), "per_class_iou": per_class, "absent_classes": absent,
            "pixel_accuracy": float(conf.diagonal().sum() / conf.sum().clamp_min(1))}


# ===== cluster-to-class matching (docs/evaluation.md section 2) =====

def cluster_class_counts(clusters: torch.Tensor, target: torch.Tensor, n_clusters: int, n_classes: int,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Co-occurrence counts (K, C): pixels of cluster k labelled class c; ``ignore_index`` pixels left out.

    Args:
        clusters: (...) cluster ids in [0, K).
        target: (...) labels in [0, C) or ``ignore_index``.
    """
    if clusters.shape != target.shape:
        raise ValueError(f"cluster map shape {tuple(clusters.shape)} differs from target shape {tuple(target.shape)}")
    valid = target != ignore_index
    k, c = clusters[valid].long(), target[valid].long()
    if bool(((k < 0) | (k >= n_clusters) | (c < 0) | (c >= n_classes)).any()):  # one host sync
        raise ValueError(f"cluster ids must lie in [0, {n_clusters}) and labels in [0, {n_classes}) or be "
                         f"{ignore_index}")
    return torch.bincount(k * n_classes + c, minlength=n_clusters * n_classes).reshape(n_clusters, n_classes)


def hungarian_match(counts: torch.Tensor, unmatched_class: int = 0) -> torch.Tensor:
    """One-to-one cluster -> class map (K,) maximising the summed IoU between matched pairs.

    IoU(k, c) = n_kc / (|k| + |c| - n_kc). Clusters left without a class (K > C) go to ``unmatched_class``
    (background), as docs/evaluation.md section 2 says.
    """
    counts = counts.double().cpu()
    union = counts.sum(1, keepdim=True) + counts.sum(0, keepdim=True) - counts
    iou = (counts / union.clamp_min(1)).numpy()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    mapping = torch.full((counts.shape[0],), unmatched_class, dtype=torch.long)
    mapping[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    return mapping


def many_to_one_match(counts: torch.Tensor, empty_class: int = 0) -> torch.Tensor:
    """Many-to-one cluster -> class map (K,): each cluster takes the class of highest precision n_kc / |k|.

    Precision shares its denominator within a cluster, so this is the majority class; ties go to the lowest class
    index. A cluster with no labelled pixel goes to ``empty_class``.
    """
    mapping = counts.argmax(1).cpu()
    mapping[counts.sum(1).cpu() == 0] = empty_class
    return mapping


# ===== DAVIS J and F (docs/evaluation.md section 3) =====

def region_similarity(pred: torch.Tensor, gt: torch.Tensor, void: torch.Tensor | None = None) -> torch.Tensor:
    """Jaccard J per frame (T,) for binary masks (T, H, W); 1 where both masks are empty (DAVIS convention)."""
    keep = torch.ones_like(gt, dtype=torch.bool) if void is None else ~void.bool()
    pred, gt = pred.bool() & keep, gt.bool() & keep
    inter = (pred & gt).flatten(1).sum(1).double()
    union = (pred | gt).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def boundary_map(mask: torch.Tensor) -> torch.Tensor:
    """One-pixel boundaries (T, H, W) of binary masks (T, H, W), DAVIS's ``seg2bmap`` convention.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour; the last row only
    looks east, the last column only south, and the bottom-right pixel is never a boundary. This puts the boundary
    half a pixel towards the origin, which the F measure of the DAVIS benchmark depends on.
    """
    m = mask.bool()
    e, s, se = torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(m)
    e[:, :, :-1], s[:, :-1, :], se[:, :-1, :-1] = m[:, :, 1:], m[:, 1:, :], m[:, 1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[:, -1, :] = m[:, -1, :] ^ e[:, -1, :]
    b[:, :, -1] = m[:, :, -1] ^ s[:, :, -1]
    b[:, -1, -1] = False
    return b


def _disk(radius: int, device) -> torch.Tensor:
    """Disk structuring element (2r+1, 2r+1): x^2 + y^2 <= r^2, as skimage's ``disk``."""
    r = torch.arange(-radius, radius + 1, device=device)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).float()


def _dilate(b: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of (T, H, W) maps by a disk of ``radius`` pixels."""
    kernel = _disk(radius, b.device)[None, None]
    return F.conv2d(b.float()[:, None], kernel, padding=radius)[:, 0] > 0.5


def boundary_f_measure(pred: torch.Tensor, gt: torch.Tensor, void: torch.Tensor | None = None,
                       bound_th: float = 0.008) -> torch.Tensor:
    """Boundary F-measure per frame (T,) for binary masks (T, H, W), as the DAVIS benchmark defines it.

    Boundary pixels match when they lie within ``ceil(bound_th * image diagonal)`` pixels (a disk) of the other
    mask's boundary (``bound_th`` >= 1 is taken as pixels). Precision over predicted boundary pixels, recall over
    ground-truth ones; empty boundaries follow DAVIS: both empty -> F = 1, exactly one empty -> F = 0.
    """
    keep = torch.ones_like(gt, dtype=torch.bool) if void is None else ~void.bool()
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape[-2:])))
    fg_b, gt_b = boundary_map(pred.bool() & keep), boundary_map(gt.bool() & keep)
    n_fg, n_gt = fg_b.flatten(1).sum(1).double(), gt_b.flatten(1).sum(1).double()
    fg_match = (fg_b & _dilate(gt_b, radius)).flatten(1).sum(1).double()
    gt_match = (gt_b & _dilate(fg_b, radius)).flatten(1).sum(1).double()
    precision, recall = fg_match / n_fg.clamp_min(1), gt_match / n_gt.clamp_min(1)
    f = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    # DAVIS: both boundaries empty -> P = R = 1; exactly one empty -> P or R is 0, so F = 0.
    f = torch.where((n_fg == 0) | (n_gt == 0), torch.zeros_like(f), f)
    return torch.where((n_fg == 0) & (n_gt == 0), torch.ones_like(f), f)


def sequence_jf(pred: torch.Tensor, gt: torch.Tensor,
                n_objects: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-object, per-frame J and F (n_obj, T') for label maps (T, H, W) of one sequence.

    Object ids are 1..n_objects (default: the largest id of the first ground-truth frame other than 255, void).
    As in the DAVIS semi-supervised benchmark, the first and last frames are left out (T' = T - 2) and void pixels
    are not masked out.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}")
    if n_objects is None:
        first = gt[0][gt[0] != IGNORE_INDEX]
        n_objects = int(first.max()) if first.numel() else 0
    pred, gt = pred[1:-1], gt[1:-1]
    ids = torch.arange(1, n_objects + 1, device=gt.device)[:, None, None, None]  # (n_obj, 1, 1, 1)
    pred_m = (pred[None] == ids).flatten(0, 1)  # (n_obj*T', H, W)
    gt_m = (gt[None] == ids).flatten(0, 1)
    j = region_similarity(pred_m, gt_m).reshape(n_objects, -1)
    f = boundary_f_measure(pred_m, gt_m).reshape(n_objects, -1)
    return j, f


def davis_scores(per_sequence: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """J-Mean, F-Mean and J&F-Mean: per-object means over frames, then the mean over all objects of all sequences.

    Args:
        per_sequence: name -> (J (n_obj, T'), F (n_obj, T')) from :func:`sequence_jf`.
    """
    j_obj = [v for j, _ in per_sequence.values() for v in np.nanmean(j.cpu().numpy(), axis=1).tolist()]
    f_obj = [v for _, f in per_sequence.values() for v in np.nanmean(f.cpu().numpy(), axis=1).tolist()]
    j_mean, f_mean = float(np.mean(j_obj)), float(np.mean(f_obj))
    per_seq = {name: {"J": float(np.nanmean(j.cpu().numpy())), "F": float(np.nanmean(f.cpu().numpy()))}
               for name, (j, f) in per_sequence.items()}
    return {"J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "F-Mean": f_mean, "per_sequence": per_seq}
