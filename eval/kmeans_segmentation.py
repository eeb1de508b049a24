"""Unsupervised semantic segmentation by K-means on frozen patch features.

docs/evaluation.md section 2. Val split only, 448x448 inputs, patch tokens of the last 4 blocks (after the
final norm) concatenated, standardised, PCA to 50 dims, K-means (100 iterations, 5 restarts, k-means++ seeding)
for 5 seeds, scores averaged. K <= #classes: Hungarian matching on IoU (unmatched clusters -> background);
K > #classes (overclustering): each cluster to the class of highest precision. Cluster maps and masks are compared
at 100x100 (nearest); mIoU is dataset-level.

    python -m eval.kmeans_segmentation --pretrained_weights croc_coco.pth --dataset voc \
        --data_path /data/VOCdevkit --n_clusters 0 100 300 500 --output_dir out/kmeans_voc
    python -m eval.kmeans_segmentation --arch vit_tiny --dataset synthetic --input_size 112 \
        --synthetic_val_images 50 --output_dir out/kmeans_synthetic

``--n_clusters 0`` means "the number of classes". The features of the val set are computed once (no augmentation).
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from eval.features import add_backbone_args, extract_features, load_backbone, run_cli
from eval.metrics import cluster_class_counts, confusion_matrix, hungarian_match, many_to_one_match, segmentation_scores
from eval.seg_datasets import DATASETS, build_segmentation_dataset
from eval.seg_transforms import EvalTransform

CHUNK = 65536  # rows per distance block: bounds memory at CHUNK x K floats


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("kmeans_segmentation", description=__doc__.split("\n")[0])
    add_backbone_args(parser)
    parser.add_argument("--dataset", default="voc", choices=DATASETS)
    parser.add_argument("--data_path", default="", type=str)
    parser.add_argument("--input_size", default=448, type=int)
    parser.add_argument("--n_last_blocks", default=4, type=int)
    parser.add_argument("--pca_dim", default=50, type=int)
    parser.add_argument("--n_clusters", default=[0], type=int, nargs="+",
                        help="K values to evaluate; 0 = number of classes (Hungarian). Default: 0.")
    parser.add_argument("--n_seeds", default=5, type=int, help="K-means runs averaged. Default: 5.")
    parser.add_argument("--n_iter", default=100, type=int)
    parser.add_argument("--n_restarts", default=5, type=int, help="Restarts per run, lowest inertia kept.")
    parser.add_argument("--mask_size", default=100, type=int, help="Side of the comparison grid. Default: 100.")
    parser.add_argument("--batch_size", default=32, type=int)
    parser.add_argument("--num_workers", default=4, type=int)
    parser.add_argument("--synthetic_val_images", default=50, type=int)
    parser.add_argument("--seed", default=0, type=int, help="Base seed: run i uses seed + i.")
    parser.add_argument("--output_dir", default=".", type=str)
    return parser


# ===== standardise + PCA =====

def standardize_pca(x: torch.Tensor, dim: int, device: str | torch.device | None = None) -> torch.Tensor:
    """Rows (N, D) -> (N, dim) float32 on ``device``: each column standardised (zero mean, unit variance), then
    projected on the ``dim`` leading principal axes (largest eigenvalue first).

    Moments are accumulated in float64 over row chunks, so ``x`` may stay on the CPU in float16 while the work runs
    on the accelerator; the standardised matrix is never materialised in full.
    """
    device = x.device if device is None else device
    n, d = x.shape
    s1 = torch.zeros(d, dtype=torch.float64, device=device)
    s2 = torch.zeros(d, d, dtype=torch.float64, device=device)
    for chunk in x.split(CHUNK):
        chunk = chunk.to(device, torch.float64)
        s1 += chunk.sum(0)
        s2 += chunk.T @ chunk
    mean = s1 / n
    cov = s2 / n - torch.outer(mean, mean)
    std = cov.diagonal().clamp_min(0).sqrt().clamp_min(1e-8)
    _, vecs = torch.linalg.eigh(cov / torch.outer(std, std))  # correlation = covariance of the standardised data
    axes = (vecs[:, -dim:].flip(1) / std[:, None]).float()  # eigh sorts ascending; fold 1/std into the axes
    shift = (mean.float() @ axes)
    return torch.cat([chunk.to(device, torch.float32) @ axes - shift for chunk in x.split(CHUNK)])


# ===== K-means =====

def assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row: (labels (N,), squared distance (N,)), in row chunks."""
    c_sq = (centroids * centroids).sum(1)
    labels, dists = [], []
    for chunk in x.split(CHUNK):
        d = (chunk * chunk).sum(1, keepdim=True) - 2 * chunk @ centroids.T + c_sq  # (n, K)
        dist, lab = d.min(1)
        labels.append(lab)
        dists.append(dist.clamp_min(0))
    return torch.cat(labels), torch.cat(dists)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: first centre uniform, each next one drawn with probability ~ squared distance to the
    nearest centre chosen so far. ``generator`` lives on ``x``'s device. Returns (k, D)."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centroids = [x[first[0]]]
    closest = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        weights = closest if closest.sum() > 0 else torch.ones_like(closest)  # all points on centres: uniform
        idx = torch.multinomial(weights, 1, generator=generator)
        centroids.append(x[idx[0]])
        closest = torch.minimum(closest, ((x - centroids[-1]) ** 2).sum(1))
    return torch.stack(centroids)


def lloyd(x: torch.Tensor, centroids: torch.Tensor, n_iter: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd iterations from ``centroids`` until ``n_iter`` or no label changes.

    An emptied cluster is moved onto the point currently farthest from its centre, so K stays K.
    Returns (labels (N,), centroids (K, D), inertia).
    """
    k = centroids.shape[0]
    labels, dist = assign(x, centroids)
    for _ in range(n_iter):
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            centroids[empty] = x[dist.topk(empty.numel()).indices]
        new_labels, dist = assign(x, centroids)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels, centroids, float(dist.sum())


def kmeans(x: torch.Tensor, k: int, n_iter: int = 100, n_restarts: int = 5, seed: int = 0) -> torch.Tensor:
    """Cluster labels (N,) of the best (lowest inertia) of ``n_restarts`` k-means++ / Lloyd runs."""
    if k > x.shape[0]:
        raise ValueError(f"cannot make {k} clusters from {x.shape[0]} feature vectors")
    generator = torch.Generator(device=x.device).manual_seed(seed)  # on the data's device: no host round trips
    best_labels, best_inertia = None, float("inf")
    for _ in range(n_restarts):
        labels, _, inertia = lloyd(x, kmeans_plus_plus(x, k, generator), n_iter)
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


# ===== scoring =====

def resize_nearest(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Label maps (N, h, w) -> (N, size, size), nearest neighbour."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def score_clusters(cluster_maps: torch.Tensor, masks: torch.Tensor, k: int, class_names: list[str]) -> dict:
    """Match clusters to classes over the whole set and score: cluster maps and masks (N, S, S) at the same size.

    Hungarian (one-to-one on IoU) when k <= #classes, precision-based many-to-one otherwise.
    """
    n_classes = len(class_names)
    counts = cluster_class_counts(cluster_maps, masks, k, n_classes)
    mapping = hungarian_match(counts) if k <= n_classes else many_to_one_match(counts)
    pred = mapping.to(cluster_maps.device)[cluster_maps]
    scores = segmentation_scores(confusion_matrix(pred, masks, n_classes), class_names)
    return {**scores, "matching": "hungarian" if k <= n_classes else "many-to-one", "mapping": mapping.tolist()}


def run_kmeans_eval(feats: torch.Tensor, masks: torch.Tensor, class_names: list[str], n_clusters: list[int],
                    args) -> dict:
    """All (K, seed) runs on cached features (N, C, h, w) and masks (N, S, S); mean and std over seeds per K."""
    n, c, h, w = feats.shape
    x = standardize_pca(feats.permute(0, 2, 3, 1).reshape(-1, c), args.pca_dim, args.device)  # (N*h*w, pca_dim)
    small_masks = resize_nearest(masks.to(args.device), args.mask_size)
    results = {}
    for k in n_clusters:
        k = k or len(class_names)
        runs = []
        for i in range(args.n_seeds):
            labels = kmeans(x, k, args.n_iter, args.n_restarts, seed=args.seed + i)
            maps = resize_nearest(labels.reshape(n, h, w), args.mask_size)
            runs.append(score_clusters(maps, small_masks, k, class_names))
            print(f"K={k} seed {args.seed + i}: mIoU {100 * runs[-1]['miou']:.2f} ({runs[-1]['matching']})")
        mious = [r["miou"] for r in runs]
        results[str(k)] = {"miou_mean": float(np.mean(mious)), "miou_std": float(np.std(mious)), "runs": runs}
        print(f"K={k}: mIoU {100 * np.mean(mious):.2f} +- {100 * np.std(mious):.2f} over {len(mious)} seeds")
    return results


def main(args: argparse.Namespace) -> dict:
    if args.input_size % args.patch_size:
        raise ValueError(f"--input_size {args.input_size} must be a multiple of --patch_size {args.patch_size}")
    if args.pca_dim < 1 or args.n_seeds < 1 or min(args.n_clusters) < 0:
        raise ValueError("--pca_dim and --n_seeds must be positive and --n_clusters non-negative")
    os.makedirs(args.output_dir, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(args.seed)
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, args.checkpoint_key, args.device)
    val = build_segmentation_dataset(args.dataset, args.data_path, "val", EvalTransform(args.input_size),
                                     synthetic_images=args.synthetic_val_images,
                                     synthetic_size=args.input_size if args.dataset == "synthetic" else 224,
                                     seed=args.seed)
    if len(val) == 0:
        raise ValueError(f"--dataset {args.dataset} at {args.data_path!r}: empty val split")
    loader = DataLoader(val, batch_size=args.batch_size, num_workers=args.num_workers)
    # float16 on the CPU: 4 blocks of VOC val at 448 px would take ~7 GB in float32; the moments below are float64
    feats, masks = extract_features(model, loader, args.n_last_blocks, args.device, dtype=torch.float16)
    if args.pca_dim > feats.shape[1]:
        raise ValueError(f"--pca_dim {args.pca_dim} exceeds the feature dimension {feats.shape[1]}")
    results = run_kmeans_eval(feats, masks, list(val.class_names), args.n_clusters, args)
    out = {"dataset": args.dataset, "class_names": list(val.class_names), "results": results,
           "seconds": time.time() - t0, "args": vars(args)}
    with open(os.path.join(args.output_dir, "kmeans_results.json"), "w") as f:
        json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    run_cli(main, get_args_parser())
