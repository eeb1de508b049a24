"""Segmentation and video metrics: dataset-level mIoU, cluster-to-class matching, DAVIS J and F.

docs/evaluation.md sections 1 (mIoU), 2 (Hungarian / many-to-one matching) and 3 (J, F and the official DAVIS
table: means, recalls, decays).
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


def first_frame_objects(first: torch.Tensor) -> int:
    """Object count of a sequence: the largest id of its first annotation (H, W) other than 255 (void).

    0 when the first annotation holds only background and void: the official DAVIS-2017 evaluation then scores the
    sequence as one with no objects (docs/evaluation.md section 3).
    """
    ids = first[first != IGNORE_INDEX]
    return int(ids.max()) if ids.numel() else 0


def sequence_jf(pred: torch.Tensor, gt: torch.Tensor, n_objects: int | None = None,
                max_pixels: int = 2**24) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-object, per-frame J and F (n_obj, T') for label maps (T, H, W) of one sequence.

    Object ids are 1..n_objects (default: :func:`first_frame_objects` of the first ground-truth frame; ids above it
    in later frames are not scored). As in the DAVIS semi-supervised benchmark, the first and last frames are left
    out (T' = T - 2) and void pixels are not masked out. A sequence without objects gives (0, T') tensors.

    The frames are scored in chunks of at most ``max_pixels`` object-pixels (n_obj x frames x H x W; the boundary
    dilation holds 4 bytes each): a long 480p sequence no longer needs one allocation of all of them. Every score
    is per frame, so the chunking does not change any number.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}")
    if n_objects is None:
        n_objects = first_frame_objects(gt[0])
    pred, gt = pred[1:-1], gt[1:-1]
    ids = torch.arange(1, n_objects + 1, device=gt.device)[:, None, None, None]  # (n_obj, 1, 1, 1)
    step = max(1, max_pixels // max(1, n_objects * gt[0].numel())) if len(gt) else 1  # frames per chunk
    parts = [_chunk_jf(pred[a:a + step], gt[a:a + step], ids) for a in range(0, len(gt), step)]
    if not parts:  # no scored frame: (n_obj, 0)
        return _chunk_jf(pred, gt, ids)
    return torch.cat([j for j, _ in parts], 1), torch.cat([f for _, f in parts], 1)


def _chunk_jf(pred: torch.Tensor, gt: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """J and F (n_obj, t) of label maps (t, H, W) for the object ids (n_obj, 1, 1, 1)."""
    n_objects, n_frames = ids.shape[0], gt.shape[0]  # explicit shapes keep a sequence without objects (0, t)
    pred_m = (pred[None] == ids).flatten(0, 1)  # (n_obj*t, H, W)
    gt_m = (gt[None] == ids).flatten(0, 1)
    j = region_similarity(pred_m, gt_m).reshape(n_objects, n_frames)
    f = boundary_f_measure(pred_m, gt_m).reshape(n_objects, n_frames)
    return j, f


# The official table's columns, in the order of its global_results-<set>.csv.
DAVIS_MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def decay_bins(n_frames: int) -> tuple[slice, slice]:
    """First and last of the 4 temporal bins of the official decay, for T' scored frames.

    The official edges are round(1 + i (T'-1) / 4) - 1, i = 0..4, with halves rounded up, and bin i runs from edge
    i to edge i+1 inclusive (neighbouring bins share a frame). In integers: edge i = (i (T'-1) + 2) // 4.
    """
    edges = [(i * (n_frames - 1) + 2) // 4 for i in range(5)]
    return slice(edges[0], edges[1] + 1), slice(edges[3], edges[4] + 1)


def frame_statistics(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, Recall and Decay per object (n_obj,) of per-frame scores (n_obj, T'), as the official evaluation.

    Mean: mean over frames, NaN frames left out. Recall: fraction of ALL frames scoring > 0.5 (a NaN frame counts
    as a miss). Decay: mean of the first temporal bin minus mean of the last (:func:`decay_bins`), NaN left out.
    Every statistic is NaN when T' = 0.
    """
    values = values.double()
    first, last = decay_bins(values.shape[1])
    return {"Mean": values.nanmean(1), "Recall": (values > 0.5).double().mean(1),
            "Decay": values[:, first].nanmean(1) - values[:, last].nanmean(1)}


def _mean(values: list[float]) -> float:
    """Plain mean (a NaN propagates, as np.mean in the official code); NaN for no values."""
    return float(np.mean(values)) if values else float("nan")


def davis_scores(per_sequence: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The official DAVIS-2017 table: overall statistics, per object, per sequence.

    Args:
        per_sequence: name -> (J (n_obj, T'), F (n_obj, T')) from :func:`sequence_jf`.
    Returns:
        the 7 :data:`DAVIS_MEASURES` overall (each the mean over all objects of all sequences, J&F-Mean the mean of
        J-Mean and F-Mean); ``per_object``: "<sequence>_<id>" -> its J/F Mean, Recall and Decay; ``per_sequence``:
        name -> J and F, the means over its objects; ``sequences_without_objects``: sequences whose first annotation
        holds no object, which add no object anywhere (the official evaluation skips them the same way).
    """
    per_object, per_seq = {}, {}
    for name, (j, f) in per_sequence.items():
        stats = {f"{measure}-{k}": v.cpu().tolist() for measure, values in (("J", j), ("F", f))
                 for k, v in frame_statistics(values).items()}
        for i in range(j.shape[0]):
            per_object[f"{name}_{i + 1}"] = {k: v[i] for k, v in stats.items()}
        if j.shape[0]:
            per_seq[name] = {"J": _mean(stats["J-Mean"]), "F": _mean(stats["F-Mean"])}
    overall = {m: _mean([obj[m] for obj in per_object.values()]) for m in DAVIS_MEASURES if m != "J&F-Mean"}
    return {"J&F-Mean": (overall["J-Mean"] + overall["F-Mean"]) / 2, **overall, "per_object": per_object,
            "per_sequence": per_seq,
            "sequences_without_objects": [name for name, (j, _) in per_sequence.items() if j.shape[0] == 0]}
