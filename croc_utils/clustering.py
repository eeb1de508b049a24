"""Cross-view online clustering of the teacher's tokens (docs/algorithm.md section 3).

Every (image, head) pair is one clustering problem over the 2N patch tokens of BOTH views, so a batch of B images
seen by H heads holds b' = B*H problems. Layout conventions used throughout:

- problem index p = image*H + head, in [0, b');
- token index n in [0, 2N): view 1's N patches, then view 2's;
- ``keys`` (2*b', 1+N, d) is ordered view, image, head (index view*b' + p), which is what ``keys.flatten(0, 1)``
  gives for backbone keys (2B, H, 1+N, d) of the batch [view-1 images..., view-2 images...].

The training step uses the two entry points like this::

    cfg = ClusteringConfig.from_args(args)                              # the 8 --flags, checked once
    with torch.no_grad():
        t_out = teacher_backbone(torch.cat([v1, v2]))                   # keys (2B, H, 1+N, d)
    res = cluster_views(t_out.keys, t_out.tokens, patch_positions, cfg)
    s_out = student_backbone(torch.cat([v1, v2]))
    s_tokens = student_cluster_tokens(res, s_out.tokens)                # (2, M, D), with gradient
    t_tokens = res.teacher_tokens                                       # (2, M, D), no gradient
    # M = B*H*n_centroids_max cluster slots; res.valid (M,) marks the real clusters, the others are 0

Every output has a fixed shape (no host synchronisation): a problem whose chosen k is below n_centroids_max has
empty columns, and the clusters that are not valid (step 10) are kept as zero rows with ``valid`` False, so the loss
averages over the valid rows only (``croc_utils.loss``).

The small functions below are pure tensor-in / tensor-out steps of the algorithm; each cites its spec step.
"""

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class ClusteringConfig:
    """The clustering's eight settings, with the released defaults (docs/algorithm.md section 3).

    The one home of these defaults and bounds: the parser takes its defaults from here and ``from_args`` builds
    the config the training step, the benchmarks and the visualiser use.
    """

    n_tokens: int = 5
    n_centroids_max: int = 4
    sinkhorn_lambda: float = 20.0
    sinkhorn_iterations: int = 5
    pos_alpha: float = 4.0
    uniform_marginals: bool = False
    marginals_temp_r: float = 2.0
    marginals_temp_c: float = 2.0

    def __post_init__(self):
        if self.n_tokens < 2:
            raise ValueError(f"--n_tokens must be at least 2, got {self.n_tokens}")
        if not 2 <= self.n_centroids_max <= self.n_tokens:
            raise ValueError(f"--n_centroids_max must be in [2, --n_tokens={self.n_tokens}], got "
                             f"{self.n_centroids_max}")
        if self.sinkhorn_iterations < 1:
            raise ValueError(f"--sinkhorn_iterations must be at least 1, got {self.sinkhorn_iterations}")
        for name in ("sinkhorn_lambda", "marginals_temp_r", "marginals_temp_c"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        if not self.pos_alpha >= 0:
            raise ValueError(f"--pos_alpha must be >= 0, got {self.pos_alpha}")

    @classmethod
    def from_args(cls, args) -> "ClusteringConfig":
        """The config of a run's arguments: parsed flags, or a checkpoint's saved args after
        ``croc_utils.parser.upgrade_args`` (which gives an older run's args the settings it lacks)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def check_patches(self, n_patches: int) -> None:
        """Refuse more seeds than the 2N patch tokens of the two views (N = ``n_patches``)."""
        if self.n_tokens > 2 * n_patches:
            raise ValueError(f"--n_tokens {self.n_tokens} exceeds the {2 * n_patches} patch tokens of the two views")


@dataclass(frozen=True)
class ClusteringResult:
    """What ``cluster_views`` returns; K = n_centroids_max, b' = B*H problems, M = b'*K cluster slots.

    assignments: (2, b', N, K) hard-masked, per-view column-normalised plan of the chosen k (step 9); columns
        k..K-1 of a problem whose chosen k is below K are empty.
    valid: (M,) bool, slot p*K + j holds a cluster with at least one token in both views (step 10).
    teacher_tokens: (2, M, D) teacher cluster tokens of view 1 and view 2, L2-normalised and rescaled to the mean
        CLS norm where valid, zero elsewhere; row m of both views is the same cluster.
    n_clusters: (b',) long, the chosen k of every problem (step 8).
    seeds: (b', K_seeds) long, the seed token indices used (step 4).
    costs: (b', K_seeds-1) float, the transport cost of every k = K_seeds, ..., 2 (step 7d).
    n_heads: H, so that the student's tokens are pooled per head the same way.
    """

    assignments: Tensor
    valid: Tensor
    teacher_tokens: Tensor
    n_clusters: Tensor
    seeds: Tensor
    costs: Tensor
    n_heads: int


def split_keys(keys: Tensor, n_problems: int) -> tuple[Tensor, Tensor]:
    """L2-normalise the keys and separate CLS from patches (step 2).

    Args:
        keys: (2*b', 1+N, d) ordered view, image, head.
        n_problems: b'.
    Returns:
        cls_keys (2, b', d) and patch_keys (b', 2N, d), view 1's patches first.
    """
    keys = F.normalize(keys.reshape(2, n_problems, *keys.shape[1:]), dim=-1)  # (2, b', 1+N, d)
    return keys[:, :, 0], keys[:, :, 1:].transpose(0, 1).flatten(1, 2)


def token_scores(cls_keys: Tensor, patch_keys: Tensor) -> Tensor:
    """Cosine of every patch key with the CLS key of the same view and head (step 3).

    Args:
        cls_keys: (2, b', d); patch_keys: (b', 2N, d), both unit norm.
    Returns:
        r: (b', 2N).
    """
    per_view = patch_keys.unflatten(1, (2, -1))  # (b', 2, N, d)
    return torch.einsum("bmnd,mbd->bmn", per_view, cls_keys).flatten(1)


def token_marginals(scores: Tensor, temp_r: float = 2.0, uniform: bool = False) -> Tensor:
    """Token marginal a (step 3): softmax(r / temp_r) over the 2N tokens, or 1/(2N).

    Args:
        scores: (b', 2N).
    Returns:
        (b', 2N), every row sums to 1.
    """
    if uniform:
        return torch.full_like(scores, 1.0 / scores.shape[1])
    return F.softmax(scores / temp_r, dim=1)


def sample_seeds(marginals: Tensor, n_tokens: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw K distinct seed tokens per problem from the token marginal (step 4).

    Sampling without replacement as ``torch.multinomial`` does it (the top K of a / E with E ~ Exp(1), the
    exponential form of the Gumbel top-k trick), drawing the same numbers from ``generator``, so the seeds are those
    ``torch.multinomial(marginals, K, replacement=False, generator=...)`` returns; but without its input checks,
    which read the tensor back to the host (two synchronisations per step on CUDA). Non-finite marginals (a
    diverged teacher) still give K distinct indices, so the step reaches its own finiteness check.

    Args:
        marginals: (b', 2N) token marginal a.
    Returns:
        (b', K) long indices in [0, 2N).
    """
    exponential = torch.empty_like(marginals).exponential_(1, generator=generator)
    return (marginals / exponential).topk(n_tokens, dim=1).indices


def seed_marginals(scores: Tensor, seeds: Tensor, temp_c: float = 2.0, uniform: bool = False) -> Tensor:
    """Initial cluster marginal b (step 4): softmax over the seeds of r_seed / temp_c, or 1/K.

    Args:
        scores: (b', 2N); seeds: (b', K).
    Returns:
        (b', K), every row sums to 1.
    """
    if uniform:
        return torch.full(seeds.shape, 1.0 / seeds.shape[1], dtype=scores.dtype, device=scores.device)
    return F.softmax(scores.gather(1, seeds) / temp_c, dim=1)


def gather_tokens(values: Tensor, index: Tensor) -> Tensor:
    """Rows of ``values`` (b', 2N, c) at ``index`` (b', K) -> (b', K, c): seed keys and positions (steps 5-6)."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def spatial_cost(positions: Tensor, centroid_positions: Tensor) -> Tensor:
    """Euclidean token-centroid distance divided by its maximum over (n, k) per problem (step 7b).

    Args:
        positions: (b', 2N, 2) token positions in original-image pixels.
        centroid_positions: (b', k, 2).
    Returns:
        (b', 2N, k) in [0, 1].
    """
    # hypot of the x and y differences: exact like the textbook formula, 8x faster on CPU than a reduction over a
    # size-2 last dim, and without cdist's matmul shortcut that loses digits for near-identical points.
    distance = torch.hypot(positions[:, :, :1] - centroid_positions[:, None, :, 0],
                           positions[:, :, 1:] - centroid_positions[:, None, :, 1])
    return distance / distance.amax(dim=(1, 2), keepdim=True).clamp_min(_TINY)


def clustering_cost(patch_keys: Tensor, centroids: Tensor, spatial: Tensor, pos_alpha: float = 4.0) -> Tensor:
    """Cost C = -cos(key, centroid) + pos_alpha * spatial, min-max rescaled to [0, 1] (steps 7a, 7c).

    The min and max are taken over the WHOLE batch (all b' problems at once), as the released code does.

    Args:
        patch_keys: (b', 2N, d) unit keys; centroids: (b', k, d), normalised here; spatial: (b', 2N, k).
    Returns:
        (b', 2N, k).
    """
    similarity = patch_keys @ F.normalize(centroids, dim=-1).transpose(1, 2)
    cost = pos_alpha * spatial - similarity
    low, high = cost.amin(), cost.amax()
    return (cost - low) / (high - low).clamp_min(_TINY)


def sinkhorn(cost: Tensor, row_marginals: Tensor, col_marginals: Tensor, sinkhorn_lambda: float = 20.0,
             n_iterations: int = 5) -> tuple[Tensor, Tensor]:
    """Sinkhorn-Knopp transport plan and its cost (step 7d).

    The released code rescales T = exp(-lambda * C) / total in place, ``n_iterations`` rounds of: rows to sum to a,
    then columns to sum to b; so column sums are exact and row sums approximate. The same iterates are computed here
    as T = diag(u) K diag(v) with row scalings u and column scalings v, where K = exp(-lambda * (C - row min of C)):
    the first row step absorbs both the division by the total and the row shift, which keeps a 1 in every row of K
    so that no row underflows to 0 for extreme costs; denominators are clamped away from 0 for the same reason.
    NaN entries become 1e-8 as in the release.

    Args:
        cost: (b', n, k); row_marginals: (b', n); col_marginals: (b', k); n_iterations >= 1.
    Returns:
        plan (b', n, k) and transport cost sum(T * C) per problem (b',).
    """
    # Element-wise products and sums rather than bmm: full float32 precision even where TF32 matmuls are enabled.
    kernel = torch.exp(-sinkhorn_lambda * (cost - cost.amin(dim=2, keepdim=True)))
    col_scale = torch.ones_like(col_marginals)
    for _ in range(n_iterations):
        row_scale = row_marginals / (kernel * col_scale[:, None, :]).sum(dim=2).clamp_min(_TINY)
        col_scale = col_marginals / (kernel * row_scale[:, :, None]).sum(dim=1).clamp_min(_TINY)
    plan = (row_scale[:, :, None] * kernel * col_scale[:, None, :]).nan_to_num(nan=1e-8)
    return plan, (plan * cost).sum(dim=(1, 2))


def normalise_per_view(plan: Tensor) -> Tensor:
    """Re-normalise every column to sum 1 within each view separately (step 7e).

    Args:
        plan: (b', 2N, k).
    Returns:
        (b', 2N, k); for each view m, the rows m*N..(m+1)*N-1 of every column sum to 1.
    """
    views = plan.unflatten(1, (2, -1))  # (b', 2, N, k)
    return (views / views.sum(dim=2, keepdim=True).clamp_min(_TINY)).flatten(1, 2)


def column_means(plan: Tensor, values: Tensor) -> Tensor:
    """Means of ``values`` (b', 2N, c) weighted by every column of ``plan`` (b', 2N, k), each column normalised to
    sum 1 over all 2N tokens (step 7f) -> (b', k, c)."""
    weights = plan / plan.sum(dim=1, keepdim=True).clamp_min(_TINY)
    return weights.transpose(1, 2) @ values


def closest_pair(centroids: Tensor) -> Tensor:
    """The pair (i, j), i != j, of largest dot product between centroids (step 7f).

    Args:
        centroids: (b', k, d), not re-normalised.
    Returns:
        (b', 2) long with i < j (on ties, the first pair in row-major order, as the released flattened argmax).
    """
    k = centroids.shape[1]
    similarity = (centroids @ centroids.transpose(1, 2)).flatten(1)  # (b', k*k)
    diagonal = torch.eye(k, dtype=torch.bool, device=centroids.device).flatten()
    flat = similarity.masked_fill(diagonal, float("-inf")).argmax(dim=1)
    return torch.stack([flat // k, flat % k], dim=1).sort(dim=1).values


def merge_pair(values: Tensor, pair: Tensor, weights: Tensor | None = None) -> Tensor:
    """Replace rows i and j of every problem by one row placed last; the other rows keep their order (step 7f).

    Merging plan columns (``values`` = plan transposed, no ``weights``) adds them. Merging column means with the
    columns' masses as ``weights`` gives their weighted mean, which equals the mean under the merged column: so the
    loop never builds the merged plan.

    Args:
        values: (b', k, c); pair: (b', 2) from ``closest_pair``; weights: optional (b', k).
    Returns:
        (b', k-1, c).
    """
    k, channels = values.shape[1:]
    merged = torch.zeros(values.shape[:2], dtype=torch.bool, device=values.device).scatter_(1, pair, True)
    # A stable sort on the merged flag lists the kept rows in their order, then i and j.
    kept = torch.argsort(merged.to(torch.uint8), dim=1, stable=True)[:, : k - 2]
    kept = values.gather(1, kept[:, :, None].expand(-1, -1, channels))
    joined = values.gather(1, pair[:, :, None].expand(-1, -1, channels))  # (b', 2, c)
    if weights is None:
        return torch.cat([kept, joined.sum(dim=1, keepdim=True)], dim=1)
    pair_weights = weights.gather(1, pair)[:, :, None]  # (b', 2, 1)
    joined = (pair_weights * joined).sum(dim=1, keepdim=True) / pair_weights.sum(dim=1, keepdim=True).clamp_min(_TINY)
    return torch.cat([kept, joined], dim=1)


def online_clustering(patch_keys: Tensor, positions: Tensor, row_marginals: Tensor, col_marginals: Tensor,
                      seeds: Tensor, *, n_centroids_max: int = 4, sinkhorn_lambda: float = 20.0,
                      sinkhorn_iterations: int = 5, pos_alpha: float = 4.0) -> tuple[Tensor, Tensor]:
    """The k = K, K-1, ..., 2 loop of step 7, for all problems at once.

    Args:
        patch_keys: (b', 2N, d) unit keys; positions: (b', 2N, 2); row_marginals: (b', 2N) token marginal a;
        col_marginals: (b', K) seed marginal b; seeds: (b', K) seed token indices.
    Returns:
        costs (b', K-1) for k = K..2, and plans (n_centroids_max-1, b', 2N, n_centroids_max): the per-view
        normalised plans of the last n_centroids_max-1 steps (k = n_centroids_max..2), zero-padded to
        n_centroids_max columns.
    """
    centroids, centroid_positions = gather_tokens(patch_keys, seeds), gather_tokens(positions, seeds)
    positions_and_mass = torch.cat([positions, row_marginals[:, :, None]], dim=2)  # (b', 2N, 3)
    costs, plans = [], []
    for k in range(seeds.shape[1], 1, -1):
        cost = clustering_cost(patch_keys, centroids, spatial_cost(positions, centroid_positions), pos_alpha)
        plan, transport_cost = sinkhorn(cost, row_marginals, col_marginals, sinkhorn_lambda, sinkhorn_iterations)
        costs.append(transport_cost)
        if k <= n_centroids_max:
            plans.append(F.pad(normalise_per_view(plan), (0, n_centroids_max - k)))
        if k == 2:
            break
        centroids = column_means(plan, patch_keys)  # (b', k, d)
        pair = closest_pair(centroids)
        means = torch.cat([centroids, column_means(plan, positions_and_mass)], dim=2)  # (b', k, d+3)
        means = merge_pair(means, pair, weights=plan.sum(dim=1))  # (b', k-1, d+3)
        centroids, centroid_positions, mass = means.split([patch_keys.shape[2], 2, 1], dim=2)
        col_marginals = mass.squeeze(2) / mass.sum(dim=(1, 2))[:, None]
    return torch.stack(costs, dim=1), torch.stack(plans)


def select_k(costs: Tensor, n_centroids_max: int) -> tuple[Tensor, Tensor]:
    """Choose k by the smallest transport cost among the last n_centroids_max-1 steps (step 8).

    Args:
        costs: (b', K-1) for k = K..2.
    Returns:
        step (b',) index into those last steps (0 <-> k = n_centroids_max) and the chosen k (b',).
    """
    step = costs[:, -(n_centroids_max - 1):].argmin(dim=1)
    return step, n_centroids_max - step


def hard_assign(plan: Tensor) -> Tensor:
    """Keep, for every token, only its largest entry (ties keep all maxima) (step 9).

    Args:
        plan: (..., k).
    Returns:
        (..., k) with all other entries 0.
    """
    return plan * (plan == plan.amax(dim=-1, keepdim=True))


def pool_clusters(assignments: Tensor, patch_tokens: Tensor, n_heads: int) -> Tensor:
    """Per-view sum of (plan weight x token) over the tokens, every head using its image's tokens (steps 10-11).

    Args:
        assignments: (2, B*H, N, k) masked per-view plan; patch_tokens: (2, B, N, D) last-layer patch outputs.
    Returns:
        (2, B*H, k, D).
    """
    per_image = assignments.unflatten(1, (-1, n_heads))  # (2, B, H, N, k)
    return torch.einsum("mbhnk,mbnd->mbhkd", per_image, patch_tokens).flatten(1, 2)


def cluster_validity(assignments: Tensor) -> Tensor:
    """A cluster is valid when it holds at least one token in BOTH views (step 10).

    Args:
        assignments: (2, b', N, k) masked per-view plan.
    Returns:
        (b'*k,) bool, index p*k + j.
    """
    return (assignments.sum(dim=2) > 0).all(dim=0).flatten()


def rescale_clusters(pooled: Tensor, valid: Tensor, cls_norm: Tensor) -> Tensor:
    """L2-normalise the valid clusters and scale them to the mean CLS norm; invalid slots become 0 (steps 10-11).

    In float32 whatever the input: an empty slot is a zero vector, and normalising it in float16 divides 0 by an
    epsilon that float16 rounds to 0 (NaN), which the zero weight of the slot would not remove.

    Args:
        pooled: (2, b', K, D); valid: (b'*K,) bool; cls_norm: () scalar tensor.
    Returns:
        (2, b'*K, D) float32.
    """
    return F.normalize(pooled.flatten(1, 2).float(), dim=-1) * (cls_norm.float() * valid)[None, :, None]


def _check_inputs(keys: Tensor, last_tokens: Tensor, patch_positions: Tensor, cfg: ClusteringConfig,
                  seeds: Tensor | None) -> tuple[int, int, int]:
    """Validate the shapes of ``cluster_views``'s inputs; return (B, H, N)."""
    if last_tokens.dim() != 3 or last_tokens.shape[0] % 2:
        raise ValueError(f"last_tokens must be (2B, 1+N, D), got {tuple(last_tokens.shape)}")
    batch, n_patches = last_tokens.shape[0] // 2, last_tokens.shape[1] - 1
    if keys.dim() != 4 or keys.shape[0] != 2 * batch or keys.shape[2] != 1 + n_patches:
        raise ValueError(f"keys must be (2B, H, 1+N, d) = ({2 * batch}, H, {1 + n_patches}, d), "
                         f"got {tuple(keys.shape)}")
    n_heads = keys.shape[1]
    if tuple(patch_positions.shape) != (batch, 2 * n_patches, 2):
        raise ValueError(f"patch_positions must be (B, 2N, 2) = ({batch}, {2 * n_patches}, 2), "
                         f"got {tuple(patch_positions.shape)}")
    cfg.check_patches(n_patches)
    if seeds is not None:
        if tuple(seeds.shape) != (batch * n_heads, cfg.n_tokens) or seeds.is_floating_point():
            raise ValueError(f"seeds must be integer (B*H, n_tokens) = ({batch * n_heads}, {cfg.n_tokens}), "
                             f"got {seeds.dtype} {tuple(seeds.shape)}")
        if seeds.numel() and (seeds.min() < 0 or seeds.max() >= 2 * n_patches):  # host sync, seeds given only
            raise ValueError(f"seeds must lie in [0, 2N) = [0, {2 * n_patches})")
    return batch, n_heads, n_patches


def cluster_views(keys: Tensor, last_tokens: Tensor, patch_positions: Tensor, cfg: ClusteringConfig, *,
                  seeds: Tensor | None = None, generator: torch.Generator | None = None) -> ClusteringResult:
    """Cluster the teacher's tokens of both views jointly and pool the teacher cluster tokens (docs/algorithm.md
    section 3).

    Runs without gradient in float32 whatever the autocast state, with fixed output shapes: no host sync.

    Args:
        keys: (2B, H, 1+N, d) last-block per-head keys of the batch [view-1 images..., view-2 images...].
        last_tokens: (2B, 1+N, D) all teacher tokens after the final norm, CLS first, same image order.
        patch_positions: (B, 2N, 2) patch centres (x, y) in original-image pixels, view 1's N then view 2's.
        cfg: the clustering settings.
        seeds: optional (B*H, n_tokens) seed token indices in [0, 2N) to use instead of sampling.
        generator: optional ``torch.Generator`` (on the inputs' device) for the seed sampling.
    Returns:
        ClusteringResult (see its docstring).
    """
    batch, n_heads, n_patches = _check_inputs(keys, last_tokens, patch_positions, cfg, seeds)
    n_problems = batch * n_heads
    with torch.no_grad(), torch.autocast(keys.device.type, enabled=False):
        keys, last_tokens, positions = keys.float().flatten(0, 1), last_tokens.float(), patch_positions.float()
        cls_keys, patch_keys = split_keys(keys, n_problems)
        scores = token_scores(cls_keys, patch_keys)
        row_marginals = token_marginals(scores, cfg.marginals_temp_r, cfg.uniform_marginals)
        seeds = sample_seeds(row_marginals, cfg.n_tokens, generator) if seeds is None else seeds.long()
        col_marginals = seed_marginals(scores, seeds, cfg.marginals_temp_c, cfg.uniform_marginals)
        positions = positions.repeat_interleave(n_heads, dim=0)  # (b', 2N, 2), shared by the heads
        costs, plans = online_clustering(patch_keys, positions, row_marginals, col_marginals, seeds,
                                         n_centroids_max=cfg.n_centroids_max, sinkhorn_lambda=cfg.sinkhorn_lambda,
                                         sinkhorn_iterations=cfg.sinkhorn_iterations, pos_alpha=cfg.pos_alpha)
        step, n_clusters = select_k(costs, cfg.n_centroids_max)
        plan = plans[step, torch.arange(n_problems, device=step.device)]  # (b', 2N, K)
        assignments = hard_assign(plan).unflatten(1, (2, n_patches)).transpose(0, 1)  # (2, b', N, K)
        valid = cluster_validity(assignments)
        pooled = pool_clusters(assignments, last_tokens[:, 1:].unflatten(0, (2, batch)), n_heads)
        cls_norm = last_tokens[:, 0].norm(dim=-1).mean()
        teacher_tokens = rescale_clusters(pooled, valid, cls_norm)
    return ClusteringResult(assignments, valid, teacher_tokens, n_clusters, seeds, costs, n_heads)


def student_cluster_tokens(result: ClusteringResult, student_last_tokens: Tensor) -> Tensor:
    """Pool the student's patch outputs with the TEACHER's masked plan (step 11); gradients reach the student.

    The rescaling norm is the mean L2 norm of the student's CLS outputs (not detached, as in the released code).

    Args:
        result: the teacher's ``ClusteringResult``.
        student_last_tokens: (2B, 1+N, D) student tokens after the final norm for the two global views (view-1
            images first), CLS first.
    Returns:
        (2, M, D), rows matching ``result.teacher_tokens`` (zero where not valid).
    """
    _, n_problems, n_patches, _ = result.assignments.shape
    expected = (2 * n_problems // result.n_heads, 1 + n_patches)
    if student_last_tokens.dim() != 3 or tuple(student_last_tokens.shape[:2]) != expected:
        raise ValueError(f"student_last_tokens must be (2B, 1+N, D) = {expected + ('D',)}, "
                         f"got {tuple(student_last_tokens.shape)}")
    patch_tokens = student_last_tokens[:, 1:].unflatten(0, (2, -1))  # (2, B, N, D)
    pooled = pool_clusters(result.assignments.to(patch_tokens.dtype), patch_tokens, result.n_heads)
    cls_norm = student_last_tokens[:, 0].norm(dim=-1).mean()
    return rescale_clusters(pooled, result.valid, cls_norm)
