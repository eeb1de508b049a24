"""K-means on frozen patch features and its scoring against ground-truth masks (docs/evaluation.md section 2).

Standardise and PCA (``standardize_pca``), k-means++ seeding and Lloyd iterations with the best of several
restarts kept (``kmeans``), cluster maps compared with the masks at a common size (``resize_nearest``) and matched
to classes over the whole set (``score_clusters``: Hungarian on IoU when K <= #classes, many-to-one on precision
above). ``eval.kmeans_segmentation`` is the command line over it; ``eval.probe`` uses it too.
"""

import torch
import torch.nn.functional as F

from eval.metrics import cluster_class_counts, confusion_matrix, hungarian_match, many_to_one_match, segmentation_scores

__all__ = ["CHUNK", "assign", "kmeans", "kmeans_plus_plus", "lloyd", "resize_nearest", "score_clusters",
           "standardize_pca"]

CHUNK = 65536  # rows per distance block: bounds memory at CHUNK x K floats


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
