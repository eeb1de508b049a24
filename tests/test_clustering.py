"""Tests for croc_utils/clustering.py: every step alone, then the whole ``cluster_views`` against a slow
per-problem re-statement of docs/algorithm.md section 3 written here in float64 with Python loops."""

import pytest
import torch
import torch.nn.functional as F

from croc_utils.clustering import (
    ClusteringConfig,
    closest_pair,
    cluster_validity,
    cluster_views,
    clustering_cost,
    column_means,
    hard_assign,
    merge_pair,
    normalise_per_view,
    pool_clusters,
    rescale_clusters,
    sample_seeds,
    seed_marginals,
    select_k,
    sinkhorn,
    spatial_cost,
    split_keys,
    student_cluster_tokens,
    token_marginals,
    token_scores,
)


# ----------------------------------------------------------------------------------------------------------------
# Slow reference, one problem at a time (docs/algorithm.md section 3, steps 1-10)
# ----------------------------------------------------------------------------------------------------------------
def ref_sinkhorn(cost, a, b, lam, iterations):
    """Released-style multiplicative Sinkhorn on one (n, k) problem, row by row and column by column."""
    plan = torch.exp(-lam * cost)
    plan = plan / plan.sum()
    for _ in range(iterations):
        for n in range(plan.shape[0]):
            plan[n] = plan[n] * a[n] / plan[n].sum()
        for j in range(plan.shape[1]):
            plan[:, j] = plan[:, j] * b[j] / plan[:, j].sum()
    return plan, (plan * cost).sum()


def ref_merge(plan, tok):
    """Merge the most similar pair of (un-normalised) centroids; kept columns in order, merged one last."""
    centroids = (plan / plan.sum(0)).T @ tok
    k, best, pair = plan.shape[1], -float("inf"), None
    for i in range(k):
        for j in range(k):
            if i != j and float(centroids[i] @ centroids[j]) > best:
                best, pair = float(centroids[i] @ centroids[j]), (i, j)
    columns = [plan[:, c] for c in range(k) if c not in pair] + [plan[:, pair[0]] + plan[:, pair[1]]]
    return torch.stack(columns, 1)


def ref_problem_state(keys, positions, p, b_prime, n_patches, n_heads, seeds, uniform, temp_r, temp_c):
    view_keys = [F.normalize(keys[m * b_prime + p], dim=-1) for m in range(2)]
    tok = torch.cat([view_keys[0][1:], view_keys[1][1:]])
    r = torch.stack([tok[n] @ view_keys[n // n_patches][0] for n in range(2 * n_patches)])
    k = seeds.shape[1]
    a = torch.full((2 * n_patches,), 1 / (2 * n_patches), dtype=tok.dtype) if uniform else torch.softmax(r / temp_r, 0)
    b = torch.full((k,), 1 / k, dtype=tok.dtype) if uniform else torch.softmax(r[seeds[p]] / temp_c, 0)
    pos = positions[p // n_heads]
    return dict(tok=tok, a=a, b=b, pos=pos, cent=tok[seeds[p]], cpos=pos[seeds[p]], costs=[], plans=[])


def reference_cluster_views(keys, last_tokens, positions, n_heads, seeds, n_centroids_max=4, lam=20.0, iterations=5,
                            alpha=4.0, uniform=False, temp_r=2.0, temp_c=2.0):
    keys, last_tokens, positions = keys.double(), last_tokens.double(), positions.double()
    batch, n_patches = last_tokens.shape[0] // 2, last_tokens.shape[1] - 1
    b_prime, n_seeds = batch * n_heads, seeds.shape[1]
    states = [ref_problem_state(keys, positions, p, b_prime, n_patches, n_heads, seeds, uniform, temp_r, temp_c)
              for p in range(b_prime)]
    for k in range(n_seeds, 1, -1):
        raw = []
        for st in states:
            similarity = st["tok"] @ F.normalize(st["cent"], dim=-1).T
            distance = (st["pos"][:, None] - st["cpos"][None]).norm(dim=-1)
            raw.append(-similarity + alpha * distance / distance.max())
        low, high = min(c.min() for c in raw), max(c.max() for c in raw)  # one min-max for the whole batch
        for st, cost in zip(states, raw):
            cost = (cost - low) / (high - low)
            plan, total = ref_sinkhorn(cost, st["a"], st["b"], lam, iterations)
            st["costs"].append(float(total))
            per_view = plan.clone()
            for m in range(2):
                rows = slice(m * n_patches, (m + 1) * n_patches)
                per_view[rows] = per_view[rows] / per_view[rows].sum(0)
            st["plans"].append(per_view)
            if k > 2:
                merged = ref_merge(plan, st["tok"])
                weights = merged / merged.sum(0)
                st["cent"], st["cpos"] = weights.T @ st["tok"], weights.T @ st["pos"]
                st["b"] = (st["a"] @ weights) / (st["a"] @ weights).sum()
    chosen = []
    for st in states:
        candidates = list(zip(st["costs"], st["plans"], range(n_seeds, 1, -1)))[-(n_centroids_max - 1):]
        best = min(range(len(candidates)), key=lambda i: candidates[i][0])  # first minimum wins
        chosen.append(candidates[best])
    kmax = max(c[2] for c in chosen)
    assignments = torch.zeros(2, b_prime, n_patches, kmax, dtype=torch.float64)
    for p, (_, plan, k) in enumerate(chosen):
        for n in range(2 * n_patches):
            for j in range(k):
                if plan[n, j] == plan[n].max():
                    assignments[n // n_patches, p, n % n_patches, j] = plan[n, j]
    cls_norm = sum(last_tokens[i, 0].norm() for i in range(2 * batch)) / (2 * batch)
    valid, rows = [], ([], [])
    for p in range(b_prime):
        for j in range(kmax):
            ok = all(bool((assignments[m, p, :, j] > 0).any()) for m in range(2))
            valid.append(ok)
            for m in range(2):
                if ok:
                    pooled = (assignments[m, p, :, j, None] * last_tokens[m * batch + p // n_heads, 1:]).sum(0)
                    rows[m].append(cls_norm * pooled / pooled.norm())
    dim = last_tokens.shape[-1]
    tokens = tuple(torch.stack(r) if r else torch.zeros(0, dim, dtype=torch.float64) for r in rows)
    costs = torch.tensor([st["costs"] for st in states], dtype=torch.float64)
    return dict(assignments=assignments, valid=torch.tensor(valid), tokens=tokens,
                n_clusters=torch.tensor([c[2] for c in chosen]), costs=costs)


def random_inputs(batch=2, n_heads=3, n_patches=16, head_dim=8, dim=12, n_tokens=5, seed=0):
    """Keys scattered around 2 (even rows) or 3 (odd rows) random centres, so that the chosen k varies."""
    g = torch.Generator().manual_seed(seed)
    rows = 2 * batch * n_heads
    centres = torch.randn(rows, 3, head_dim, generator=g)
    which = torch.randint(0, 3, (rows, 1 + n_patches), generator=g)
    which = torch.where(torch.arange(rows)[:, None] % 2 == 0, which % 2, which)
    keys = centres.gather(1, which[..., None].expand(-1, -1, head_dim))
    keys = keys + 0.3 * torch.randn(rows, 1 + n_patches, head_dim, generator=g)
    last_tokens = torch.randn(2 * batch, 1 + n_patches, dim, generator=g)
    positions = torch.rand(batch, 2 * n_patches, 2, generator=g) * 100
    seeds = torch.stack([torch.randperm(2 * n_patches, generator=g)[:n_tokens] for _ in range(batch * n_heads)])
    return keys, last_tokens, positions, seeds


# ----------------------------------------------------------------------------------------------------------------
# Steps alone
# ----------------------------------------------------------------------------------------------------------------
def test_split_keys_and_scores_follow_view_image_head_layout():
    batch, n_heads, n_patches = 2, 3, 4
    keys = torch.randn(2 * batch * n_heads, 1 + n_patches, 5)
    cls_keys, patch_keys = split_keys(keys, batch * n_heads)
    scores = token_scores(cls_keys, patch_keys)
    for view in range(2):
        for image in range(batch):
            for head in range(n_heads):
                p = image * n_heads + head
                raw = keys[view * batch * n_heads + p]
                for n in range(n_patches):
                    token = F.normalize(raw[1 + n], dim=0)
                    torch.testing.assert_close(patch_keys[p, view * n_patches + n], token)
                    torch.testing.assert_close(scores[p, view * n_patches + n], token @ F.normalize(raw[0], dim=0))


def test_marginals():
    scores = torch.randn(3, 10)
    a = token_marginals(scores, temp_r=2.0)
    torch.testing.assert_close(a, torch.exp(scores / 2) / torch.exp(scores / 2).sum(1, keepdim=True))
    torch.testing.assert_close(token_marginals(scores, uniform=True), torch.full((3, 10), 0.1))
    seeds = torch.tensor([[0, 4], [9, 1], [2, 3]])
    b = seed_marginals(scores, seeds, temp_c=0.5)
    for p in range(3):
        expected = torch.exp(scores[p, seeds[p]] / 0.5)
        torch.testing.assert_close(b[p], expected / expected.sum())
    torch.testing.assert_close(seed_marginals(scores, seeds, uniform=True), torch.full((3, 2), 0.5))


def test_sample_seeds_distinct_and_follow_marginal():
    marginals = torch.tensor([0.97, 0.01, 0.01, 0.01]).repeat(2000, 1)
    seeds = sample_seeds(marginals, 3, torch.Generator().manual_seed(0))
    assert seeds.shape == (2000, 3)
    assert all(len(set(row)) == 3 for row in seeds.tolist())
    assert 0.94 < (seeds[:, 0] == 0).float().mean() < 0.995
    again = sample_seeds(marginals, 3, torch.Generator().manual_seed(0))
    assert torch.equal(seeds, again)


def test_spatial_cost_hand_computed():
    positions = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]])
    centroids = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    expected = torch.tensor([[[0.0, 5.0], [5.0, 0.0], [10.0, 5.0]]]) / 10.0
    torch.testing.assert_close(spatial_cost(positions, centroids), expected)


def test_clustering_cost_min_max_over_whole_batch():
    keys = F.normalize(torch.randn(2, 6, 4), dim=-1)
    centroids = torch.randn(2, 3, 4)
    spatial = torch.rand(2, 6, 3)
    spatial[1] *= 0.1  # problem 1 has a much smaller range than problem 0
    cost = clustering_cost(keys, centroids, spatial, pos_alpha=4.0)
    raw = 4.0 * spatial - keys @ F.normalize(centroids, dim=-1).transpose(1, 2)
    torch.testing.assert_close(cost, (raw - raw.min()) / (raw.max() - raw.min()))
    assert cost.min() == 0 and cost.max() == 1
    assert cost[1].max() < 1 or cost[1].min() > 0  # not rescaled per problem


def test_sinkhorn_marginals_and_reference():
    torch.manual_seed(0)
    cost = torch.rand(3, 12, 4)
    a = torch.softmax(torch.randn(3, 12), 1)
    b = torch.softmax(torch.randn(3, 4), 1)
    plan, total = sinkhorn(cost, a, b, sinkhorn_lambda=20.0, n_iterations=5)
    torch.testing.assert_close(plan.sum(1), b, rtol=1e-6, atol=1e-7)
    for p in range(3):
        ref_plan, ref_total = ref_sinkhorn(cost[p].double(), a[p].double(), b[p].double(), 20.0, 5)
        torch.testing.assert_close(plan[p].double(), ref_plan, rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(total[p].double(), ref_total, rtol=1e-4, atol=1e-9)
    row_error = [(sinkhorn(cost, a, b, 20.0, it)[0].sum(2) - a).abs().max() for it in (1, 5, 50)]
    assert row_error[2] < row_error[1] < row_error[0]
    assert row_error[2] < 1e-3 * a.max()


def test_sinkhorn_extreme_costs_stay_finite():
    cost = torch.tensor([[[0.0, 1e4], [1e4, 1e4], [-1e4, 3e3]]])
    a, b = torch.full((1, 3), 1 / 3), torch.tensor([[0.5, 0.5]])
    for lam in (20.0, 1e3):
        plan, total = sinkhorn(cost, a, b, lam, 5)
        assert torch.isfinite(plan).all() and torch.isfinite(total).all()
        torch.testing.assert_close(plan.sum(1), b)


def test_normalise_per_view():
    plan = torch.rand(2, 8, 3)
    out = normalise_per_view(plan)
    torch.testing.assert_close(out[:, :4].sum(1), torch.ones(2, 3))
    torch.testing.assert_close(out[:, 4:].sum(1), torch.ones(2, 3))
    torch.testing.assert_close(out[:, :4], plan[:, :4] / plan[:, :4].sum(1, keepdim=True))


def merge_plan(plan, keys):
    """Vectorised step 7f on the plan itself: (b', 2N, k) -> (b', 2N, k-1)."""
    pair = closest_pair(column_means(plan, keys))
    return merge_pair(plan.transpose(1, 2), pair).transpose(1, 2)


def test_merge_hand_built():
    # Four clusters over four tokens; clusters 1 and 3 sit on the same key direction, so they merge.
    keys = torch.eye(4)[:, :3].clone()
    keys[3] = keys[1]
    plan = torch.tensor([[0.9, 0.0, 0.1, 0.0], [0.0, 0.5, 0.0, 0.5], [0.1, 0.0, 0.9, 0.0], [0.0, 0.4, 0.0, 0.6]])
    centroids = column_means(plan[None], keys[None])[0]
    torch.testing.assert_close(centroids[1], plan[:, 1] @ keys / plan[:, 1].sum())
    assert closest_pair(centroids[None]).tolist() == [[1, 3]]
    merged = merge_plan(plan[None], keys[None])[0]
    expected = torch.stack([plan[:, 0], plan[:, 2], plan[:, 1] + plan[:, 3]], 1)
    torch.testing.assert_close(merged, expected)
    torch.testing.assert_close(merged, ref_merge(plan, keys))


def test_closest_pair_excludes_diagonal():
    # Centroid 0 has by far the largest norm, so its self-similarity would win if the diagonal counted.
    centroids = torch.tensor([[[10.0, 0.0], [0.1, 0.2], [0.2, 0.1]]])
    assert closest_pair(centroids).tolist() == [[0, 2]]


def test_merge_matches_reference_and_merged_means_equal_means_of_merged_plan():
    torch.manual_seed(1)
    plan, keys = torch.rand(6, 10, 5), F.normalize(torch.randn(6, 10, 4), dim=-1)
    merged = merge_plan(plan, keys)
    for p in range(6):
        torch.testing.assert_close(merged[p], ref_merge(plan[p], keys[p]))
    values = torch.randn(6, 10, 3)
    pair = closest_pair(column_means(plan, keys))
    shortcut = merge_pair(column_means(plan, values), pair, weights=plan.sum(dim=1))
    torch.testing.assert_close(shortcut, column_means(merged, values))


def test_select_k_last_steps_only():
    costs = torch.tensor([[0.0, 5.0, 3.0, 4.0], [9.0, 1.0, 2.0, 3.0], [9.0, 3.0, 3.0, 1.0]])  # k = 5, 4, 3, 2
    step, k = select_k(costs, n_centroids_max=4)
    assert step.tolist() == [1, 0, 2] and k.tolist() == [3, 4, 2]  # k = 5 is never a candidate
    _, k = select_k(costs, n_centroids_max=3)
    assert k.tolist() == [3, 3, 2]


def test_hard_assign_keeps_ties():
    plan = torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.1, 0.4]])
    torch.testing.assert_close(hard_assign(plan), torch.tensor([[0.0, 0.5, 0.0], [0.4, 0.0, 0.4]]))


def test_pool_validity_rescale_against_loops():
    batch, n_heads, n_patches, k, dim = 2, 3, 4, 3, 5
    assignments = torch.rand(2, batch * n_heads, n_patches, k) * (torch.rand(2, batch * n_heads, n_patches, k) > 0.6)
    tokens = torch.randn(2, batch, n_patches, dim)
    pooled = pool_clusters(assignments, tokens, n_heads)
    valid = cluster_validity(assignments)
    for m in range(2):
        for p in range(batch * n_heads):
            for j in range(k):
                expected = sum(assignments[m, p, n, j] * tokens[m, p // n_heads, n] for n in range(n_patches))
                torch.testing.assert_close(pooled[m, p, j], expected)
    for p in range(batch * n_heads):
        for j in range(k):
            assert bool(valid[p * k + j]) == bool((assignments[0, p, :, j] > 0).any() and
                                                   (assignments[1, p, :, j] > 0).any())
    rescaled = rescale_clusters(pooled, valid, torch.tensor(3.0))
    assert rescaled.shape == (2, batch * n_heads * k, dim)
    first = rescaled[0, valid]
    torch.testing.assert_close(first.norm(dim=1), torch.full((len(first),), 3.0))
    torch.testing.assert_close(first, 3.0 * F.normalize(pooled[0].flatten(0, 1)[valid], dim=-1))
    assert rescaled[:, ~valid].eq(0).all()


@pytest.mark.parametrize("n_valid", [0, 1])
def test_validity_and_rescale_with_zero_or_one_valid_cluster(n_valid):
    assignments = torch.zeros(2, 2, 3, 2)
    assignments[0, :, 0, 0] = 1.0  # view 1 only: never valid
    if n_valid:
        assignments[:, 1, 2, 1] = 0.5
    valid = cluster_validity(assignments)
    assert int(valid.sum()) == n_valid
    rescaled = rescale_clusters(pool_clusters(assignments, torch.randn(2, 2, 3, 4), 1), valid, torch.tensor(2.0))
    assert rescaled.shape == (2, 4, 4) and rescaled.ne(0).any(-1).sum().item() == 2 * n_valid


# ----------------------------------------------------------------------------------------------------------------
def run(keys, last_tokens, positions, n_heads, seeds=None, generator=None, **settings):
    """``cluster_views`` on keys laid out (2*B*H, 1+N, d) as the reference takes them."""
    return cluster_views(keys.unflatten(0, (-1, n_heads)), last_tokens, positions, ClusteringConfig(**settings),
                         seeds=seeds, generator=generator)


# The whole cluster_views
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(),
    dict(uniform_marginals=True),
    dict(pos_alpha=0.0, n_centroids_max=5, marginals_temp_r=1.0, marginals_temp_c=0.5),
    dict(n_tokens=4, n_centroids_max=3, sinkhorn_iterations=3, sinkhorn_lambda=10.0),
])
def test_cluster_views_matches_reference(options):
    n_tokens = options.get("n_tokens", 5)
    keys, last_tokens, positions, seeds = random_inputs(n_tokens=n_tokens)
    result = run(keys, last_tokens, positions, 3, seeds=seeds, **options)
    ref = reference_cluster_views(
        keys, last_tokens, positions, 3, seeds, n_centroids_max=options.get("n_centroids_max", 4),
        lam=options.get("sinkhorn_lambda", 20.0), iterations=options.get("sinkhorn_iterations", 5),
        alpha=options.get("pos_alpha", 4.0), uniform=options.get("uniform_marginals", False),
        temp_r=options.get("marginals_temp_r", 2.0), temp_c=options.get("marginals_temp_c", 2.0))
    torch.testing.assert_close(result.costs.double(), ref["costs"], rtol=1e-4, atol=1e-8)
    assert torch.equal(result.n_clusters, ref["n_clusters"])
    # fixed width K = n_centroids_max: the reference's kmax columns, then empty ones
    width, kmax = options.get("n_centroids_max", 4), ref["assignments"].shape[-1]
    assert result.assignments.shape == ref["assignments"].shape[:-1] + (width,)
    torch.testing.assert_close(result.assignments[..., :kmax].double(), ref["assignments"], rtol=1e-4, atol=1e-7)
    assert result.assignments[..., kmax:].eq(0).all()
    valid = result.valid.reshape(-1, width)
    assert torch.equal(valid[:, :kmax].flatten(), ref["valid"]) and not valid[:, kmax:].any()
    assert result.teacher_tokens.dtype == torch.float32 and result.teacher_tokens[:, ~result.valid].eq(0).all()
    for mine, theirs in zip(result.teacher_tokens[:, result.valid], ref["tokens"]):
        torch.testing.assert_close(mine.double(), theirs, rtol=1e-4, atol=1e-5)
    assert torch.equal(result.seeds, seeds)


def test_reference_inputs_exercise_padding():
    keys, last_tokens, positions, seeds = random_inputs()
    n_clusters = run(keys, last_tokens, positions, 3, seeds=seeds).n_clusters
    assert n_clusters.min() < n_clusters.max()  # so that padding with empty columns is covered above


def group_problem(view_groups, seeds, n_groups, noise=0.0):
    """One image, one head; token n of view m belongs to group view_groups[m][n] with key e_group."""
    n_patches = len(view_groups[0])
    basis = torch.eye(n_groups + 1)
    keys = torch.zeros(2, 1 + n_patches, n_groups + 1)
    for m in range(2):
        keys[m, 0] = basis[:n_groups].sum(0)  # CLS key equally similar to every group
        keys[m, 1:] = basis[torch.tensor(view_groups[m])] + noise * torch.randn(n_patches, n_groups + 1)
    last_tokens = torch.randn(2, 1 + n_patches, 6)
    positions = torch.rand(1, 2 * n_patches, 2) * 50
    return keys, last_tokens, positions, torch.tensor([seeds])


@pytest.mark.parametrize("uniform", [True, False])
def test_three_groups_over_both_views_give_k3_and_memberships(uniform):
    groups = [[0] * 4 + [1] * 4 + [2] * 4, [2] * 4 + [1] * 4 + [0] * 4]
    keys, last_tokens, positions, seeds = group_problem(groups, [0, 1, 4, 5, 8], 3)
    result = run(keys, last_tokens, positions, 1, seeds=seeds, pos_alpha=0.0, uniform_marginals=uniform)
    assert result.n_clusters.tolist() == [3]
    owner = result.assignments.argmax(-1)[:, 0]  # (2, N) cluster of every token
    assert (result.assignments[:, 0] > 0).sum(-1).eq(1).all()  # exactly one cluster per token
    cluster_of_group = {g: {int(owner[m, n]) for m in range(2) for n in range(12) if groups[m][n] == g}
                        for g in range(3)}
    assert all(len(c) == 1 for c in cluster_of_group.values())
    assert len(set.union(*cluster_of_group.values())) == 3
    assert result.valid.tolist() == [True] * 3 + [False]  # k = 3 of n_centroids_max = 4 slots


def test_group_in_one_view_only_is_invalid():
    groups = [[0] * 8 + [1] * 2 + [2] * 2, [1] * 6 + [2] * 6]
    keys, last_tokens, positions, seeds = group_problem(groups, [0, 1, 8, 9, 10], 3)
    result = run(keys, last_tokens, positions, 1, seeds=seeds, pos_alpha=0.0, uniform_marginals=True)
    assert result.n_clusters.tolist() == [3]
    cluster_of_group0 = int(result.assignments[0, 0, 0].argmax())
    assert not result.valid[cluster_of_group0] and int(result.valid.sum()) == 2
    assert result.teacher_tokens.shape == (2, 4, 6) and result.teacher_tokens[:, ~result.valid].eq(0).all()


@pytest.mark.parametrize("n_valid", [0, 1])
def test_batch_with_zero_or_one_valid_cluster(n_valid):
    if n_valid:  # group 0 in both views, groups 1 and 2 in one view each
        groups, seeds, n_groups = [[0] * 4 + [1] * 8, [0] * 4 + [2] * 8], [0, 1, 4, 5, 16], 3
    else:  # four groups, each in one view only
        groups, seeds, n_groups = [[0] * 6 + [1] * 6, [2] * 6 + [3] * 6], [0, 1, 6, 12, 18], 4
    keys, last_tokens, positions, seeds = group_problem(groups, seeds, n_groups)
    result = run(keys, last_tokens, positions, 1, seeds=seeds, pos_alpha=0.0, uniform_marginals=True)
    assert int(result.valid.sum()) == n_valid
    student = last_tokens.clone().requires_grad_(True)
    tokens = student_cluster_tokens(result, student)
    assert tokens.shape == result.teacher_tokens.shape == (2, 4, 6)
    assert tokens.ne(0).any(-1).sum().item() == 2 * n_valid
    tokens.sum().backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_gradients_reach_student_tokens_never_teacher():
    keys, last_tokens, positions, seeds = random_inputs()
    keys.requires_grad_(True)
    last_tokens.requires_grad_(True)
    result = run(keys, last_tokens, positions, 3, seeds=seeds)
    assert not result.teacher_tokens.requires_grad and not result.assignments.requires_grad
    student = torch.randn_like(last_tokens, requires_grad=True)
    tokens = student_cluster_tokens(result, student)
    assert tokens.requires_grad and tokens.shape == result.teacher_tokens.shape
    (tokens[0].square().sum() + tokens[1].sum()).backward()
    assert student.grad[:, 1:].abs().sum() > 0 and student.grad[:, 0].abs().sum() > 0  # CLS via the norm
    assert keys.grad is None and last_tokens.grad is None
    s1 = tokens[0, result.valid]
    torch.testing.assert_close(s1.norm(dim=1), student[:, 0].norm(dim=1).mean().detach().expand(len(s1)))


def test_student_tokens_equal_teacher_tokens_for_same_network():
    keys, last_tokens, positions, seeds = random_inputs()
    result = run(keys, last_tokens, positions, 3, seeds=seeds)
    torch.testing.assert_close(student_cluster_tokens(result, last_tokens), result.teacher_tokens)


def test_float32_under_autocast_and_half_inputs():
    keys, last_tokens, positions, seeds = random_inputs()
    plain = run(keys, last_tokens, positions, 3, seeds=seeds)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run(keys, last_tokens, positions, 3, seeds=seeds)
    assert mixed.teacher_tokens.dtype == torch.float32
    torch.testing.assert_close(mixed.assignments, plain.assignments)
    half = run(keys.bfloat16(), last_tokens.bfloat16(), positions, 3, seeds=seeds)
    assert half.assignments.dtype == torch.float32


def test_sampled_seeds_reproducible_and_valid():
    keys, last_tokens, positions, _ = random_inputs()
    first = run(keys, last_tokens, positions, 3, generator=torch.Generator().manual_seed(3))
    second = run(keys, last_tokens, positions, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.seeds, second.seeds) and torch.equal(first.assignments, second.assignments)
    assert first.seeds.shape == (6, 5) and all(len(set(row)) == 5 for row in first.seeds.tolist())
    assert first.seeds.min() >= 0 and first.seeds.max() < 32


@pytest.mark.parametrize("change, message", [
    (dict(keys=torch.zeros(4, 3, 16, 8)), "keys must be"),
    (dict(patch_positions=torch.zeros(2, 16, 2)), "patch_positions"),
    (dict(last_tokens=torch.zeros(3, 17, 12)), "last_tokens"),
    (dict(cfg=ClusteringConfig(n_tokens=40)), "n_tokens"),
    (dict(seeds=torch.zeros(6, 4, dtype=torch.long)), "seeds"),
    (dict(seeds=torch.full((6, 5), 32)), r"seeds must lie"),
])
def test_bad_inputs_raise_value_error(change, message):
    keys, last_tokens, positions, _ = random_inputs()
    kwargs = dict(keys=keys.unflatten(0, (4, 3)), last_tokens=last_tokens, patch_positions=positions,
                  cfg=ClusteringConfig()) | change
    with pytest.raises(ValueError, match=message):
        cluster_views(**kwargs)


@pytest.mark.parametrize("settings, flag", [
    (dict(n_centroids_max=6), "--n_centroids_max"),
    (dict(n_centroids_max=1), "--n_centroids_max"),
    (dict(n_tokens=1, n_centroids_max=1), "--n_tokens"),
    (dict(sinkhorn_iterations=0), "--sinkhorn_iterations"),
    (dict(sinkhorn_lambda=0.0), "--sinkhorn_lambda"),
    (dict(marginals_temp_r=-1.0), "--marginals_temp_r"),
    (dict(pos_alpha=float("nan")), "--pos_alpha"),
])
def test_config_refuses_impossible_settings_naming_the_flag(settings, flag):
    with pytest.raises(ValueError, match=flag):
        ClusteringConfig(**settings)


def test_config_from_args_reads_the_eight_settings():
    import argparse

    args = argparse.Namespace(n_tokens=6, n_centroids_max=3, sinkhorn_lambda=10.0, sinkhorn_iterations=2,
                              pos_alpha=1.0, uniform_marginals=True, marginals_temp_r=1.5, marginals_temp_c=0.5,
                              unrelated="ignored")
    cfg = ClusteringConfig.from_args(args)
    assert (cfg.n_tokens, cfg.n_centroids_max, cfg.sinkhorn_lambda, cfg.sinkhorn_iterations, cfg.pos_alpha,
            cfg.uniform_marginals, cfg.marginals_temp_r, cfg.marginals_temp_c) == (6, 3, 10.0, 2, 1.0, True, 1.5, 0.5)
    with pytest.raises(AttributeError):
        cfg.n_tokens = 4  # frozen


def test_student_shape_mismatch_raises():
    keys, last_tokens, positions, seeds = random_inputs()
    result = run(keys, last_tokens, positions, 3, seeds=seeds)
    with pytest.raises(ValueError, match="student_last_tokens"):
        student_cluster_tokens(result, last_tokens[:, :10])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_empty_slots_stay_finite_in_half_precision(dtype):
    keys, last_tokens, positions, seeds = random_inputs()
    result = run(keys, last_tokens, positions, 3, seeds=seeds)
    assert not result.valid.all()  # some empty slots to normalise
    student = last_tokens.to(dtype).requires_grad_(True)
    tokens = student_cluster_tokens(result, student)
    assert torch.isfinite(tokens).all() and tokens[:, ~result.valid].eq(0).all()
    tokens.sum().backward()
    assert torch.isfinite(student.grad).all()


def test_seeds_are_those_of_torch_multinomial_without_its_host_checks():
    marginals = torch.softmax(torch.randn(6, 32), dim=1)
    ours = sample_seeds(marginals, 5, torch.Generator().manual_seed(11))
    reference = torch.multinomial(marginals, 5, replacement=False, generator=torch.Generator().manual_seed(11))
    assert torch.equal(ours, reference)
    broken = sample_seeds(torch.full((2, 32), float("nan")), 5)  # a diverged teacher still gets distinct seeds
    assert all(len(set(row)) == 5 for row in broken.tolist())
