"""Clustering alone: random problems through the released clustering and ours, from the same random state."""

import random
from types import SimpleNamespace

import torch

from bench.against_release.batches import patch_means, random_position_map
from bench.against_release.compare import TOLERANCES, rel_diff
from bench.against_release.release import released_code_on_cpu
from croc_utils.clustering import ClusteringConfig, cluster_views


def clustering_problem(seed: int) -> tuple[dict, dict]:
    """Random clustering settings and inputs with some structure (tokens drawn around a few directions)."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    n_tokens = rng.randint(3, 8)
    cfg = dict(n_tokens=n_tokens, n_centroids_max=rng.randint(2, n_tokens), sinkhorn_lambda=rng.choice([5, 20, 50]),
               sinkhorn_iterations=rng.choice([1, 3, 5, 8]), pos_alpha=rng.choice([0.0, 1.0, 4.0, 10.0]),
               uniform_marginals=rng.random() < 0.25, marginals_temp_r=rng.choice([0.5, 2.0]),
               marginals_temp_c=rng.choice([0.5, 2.0]))
    batch, heads, grid, dim, patch = rng.randint(1, 3), rng.choice([2, 3, 6]), rng.choice([4, 6, 8]), 16, 16
    n = grid * grid
    directions = torch.nn.functional.normalize(torch.randn(heads, 4, dim, generator=generator), dim=-1)
    labels = torch.randint(0, 4, (2 * batch, 1 + n), generator=generator)
    keys = directions[torch.arange(heads)[None, :, None], labels[:, None, :]]  # (2B, H, 1+N, d)
    keys = keys + rng.choice([0.1, 0.5, 1.0]) * torch.randn(keys.shape, generator=generator)
    tokens = torch.randn(2 * batch, 1 + n, 8 * heads, generator=generator)
    maps = [random_position_map(batch, grid * patch, generator) for _ in range(2)]
    inputs = dict(keys=keys, tokens=tokens, maps=maps, patch_size=patch, batch=batch, heads=heads)
    return cfg, inputs


def release_clustering(release, cfg: dict, inputs: dict, seed: int):
    args = SimpleNamespace(patch_size=inputs["patch_size"], n_centroids_max=cfg["n_centroids_max"])
    clustering = release.main.Clustering(
        args, n_tokens=cfg["n_tokens"], sinkhorn_lambda=cfg["sinkhorn_lambda"],
        sinkhorn_iterations=cfg["sinkhorn_iterations"], uniform_marginals=cfg["uniform_marginals"],
        marginals_temp_r=cfg["marginals_temp_r"], marginals_temp_c=cfg["marginals_temp_c"],
        pos_alpha=cfg["pos_alpha"], n_heads=inputs["heads"])
    torch.manual_seed(seed)
    with released_code_on_cpu():
        (c1, c2), valid, assignments, _ = clustering.compute_teacher_centroids(
            inputs["tokens"], inputs["keys"].flatten(0, 1), inputs["maps"])
    return (c1, c2), valid, assignments


def compare_clustering_problem(release, seed: int) -> dict:
    """One random problem through both clusterings; a dict of what agreed (or ``skipped``: the release cannot
    run it, e.g. exactly one valid cluster)."""
    cfg, inputs = clustering_problem(seed)
    try:
        (c1, c2), valid_r, assign_r = release_clustering(release, cfg, inputs, seed)
    except TypeError as err:  # 'int' object is not iterable: a single valid cluster
        return {"seed": seed, "skipped": str(err)}
    torch.manual_seed(seed)
    positions = torch.cat([patch_means(m, inputs["patch_size"]) for m in inputs["maps"]], dim=1)
    try:
        ours = cluster_views(inputs["keys"], inputs["tokens"], positions, ClusteringConfig(**cfg))
    except Exception as err:  # noqa: BLE001 - reported as a failure of ours, with the settings
        return {"seed": seed, "cfg": cfg, "error": f"ours raised {type(err).__name__}: {err}"}
    k_max, k_release = cfg["n_centroids_max"], assign_r.shape[-1]
    assign_r = torch.nn.functional.pad(assign_r, (0, k_max - k_release))
    hard_equal = bool(torch.equal(assign_r > 0, ours.assignments > 0))
    chosen_r = (assign_r.sum(dim=(0, 2)) > 0).sum(dim=1)  # clusters holding a token, per problem
    chosen_o = (ours.assignments.sum(dim=(0, 2)) > 0).sum(dim=1)
    valid_o = ours.valid.nonzero().flatten().tolist()
    valid_r_mapped = [(i // k_release) * k_max + i % k_release for i in valid_r]
    order = torch.tensor(valid_r_mapped, dtype=torch.long)
    tokens_diff = max(rel_diff(c1, ours.teacher_tokens[0][order]), rel_diff(c2, ours.teacher_tokens[1][order]))
    return {"seed": seed, "cfg": cfg, "problems": inputs["batch"] * inputs["heads"], "hard_equal": hard_equal,
            "k_equal": bool(torch.equal(chosen_r, chosen_o)), "valid_equal": sorted(valid_r_mapped) == valid_o,
            "plan_diff": rel_diff(assign_r, ours.assignments), "tokens_diff": tokens_diff,
            "ks": sorted(set(ours.n_clusters.tolist())), "n_valid": len(valid_o)}


def compare_clusterings(release, n_problems: int, seed: int) -> tuple[list[dict], list[str]]:
    """``n_problems`` random settings through both clusterings; the results and one failure line per kind of
    disagreement (with how many settings show it and the first of them)."""
    results, s = [], seed
    while len([r for r in results if "skipped" not in r]) < n_problems:
        results.append(compare_clustering_problem(release, s))
        s += 1
    done = [r for r in results if "skipped" not in r]
    kinds = {"error": ("our clustering raised an error", lambda r: "error" in r),
             "hard": ("hard assignments differ", lambda r: "error" not in r and not r["hard_equal"]),
             "k": ("chosen k differs", lambda r: "error" not in r and not r["k_equal"]),
             "valid": ("valid clusters differ", lambda r: "error" not in r and not r["valid_equal"]),
             "tokens": (f"cluster tokens differ by more than {TOLERANCES['student']:.0e}",
                        lambda r: "error" not in r and not r["tokens_diff"] <= TOLERANCES["student"])}
    failures = []
    for what, test in kinds.values():
        bad = [r for r in done if test(r)]
        if bad:
            detail = f": {bad[0]['error']}" if "error" in bad[0] else ""
            failures.append(f"clustering: {what} in {len(bad)} of {len(done)} settings (first: setting "
                            f"{bad[0]['seed']}{detail})")
    return [r for r in done if "error" not in r] + [r for r in results if "skipped" in r], failures


def clustering_summary(results: list[dict]) -> str:
    done = [r for r in results if "skipped" not in r]
    skipped = [r for r in results if "skipped" in r]
    lines = [f"{len(done)} random settings completed, {sum(r['problems'] for r in done)} problems"]
    if done:
        lines.append(f"hard assignments equal: {sum(r['hard_equal'] for r in done)}/{len(done)}; chosen k equal: "
                     f"{sum(r['k_equal'] for r in done)}/{len(done)}; valid clusters equal: "
                     f"{sum(r['valid_equal'] for r in done)}/{len(done)}; max relative difference of the plans "
                     f"{max(r['plan_diff'] for r in done):.1e}, of the cluster tokens "
                     f"{max(r['tokens_diff'] for r in done):.1e}")
        lines.append(f"k chosen: {sorted({k for r in done for k in r['ks']})}; lambda: "
                     f"{sorted({r['cfg']['sinkhorn_lambda'] for r in done})}; n_tokens: "
                     f"{sorted({r['cfg']['n_tokens'] for r in done})}; Sinkhorn iterations: "
                     f"{sorted({r['cfg']['sinkhorn_iterations'] for r in done})}; uniform marginals in "
                     f"{sum(r['cfg']['uniform_marginals'] for r in done)}")
    if skipped:
        lines.append(f"{len(skipped)} drawn setting(s) skipped: the released code fails on them "
                     f"({skipped[0]['skipped']})")
    return "\n".join(lines)
