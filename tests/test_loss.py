"""Tests for croc_utils/loss.py against hand-written cross-entropies, entropies and KLs (docs/algorithm.md section 4),
including a 2-process gloo group whose centres must equal the single-process result on the concatenated batch."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from croc_utils.loss import CrOCLoss, sinkhorn_knopp_log_probs

OUT, OUT_C = 7, 5


def make_loss(ncrops=2, nepochs=4, warmup_epochs=3, centering="center"):
    return CrOCLoss(out_dim=OUT, out_dim_c=OUT_C, ncrops=ncrops, warmup_teacher_temp=0.04, teacher_temp=0.07,
                    warmup_teacher_temp_c=0.02, teacher_temp_c=0.05, warmup_teacher_temp_epochs=warmup_epochs,
                    nepochs=nepochs, student_temp=0.1, student_temp_c=0.2, center_momentum=0.9, centering=centering)


def softmax(row):
    exps = [math.exp(v - max(row)) for v in row]
    return [e / sum(exps) for e in exps]


def cross_entropy(p, q_logits):
    """-sum_c p_c log softmax(q)_c for one sample, with plain Python floats."""
    log_norm = max(q_logits) + math.log(sum(math.exp(v - max(q_logits)) for v in q_logits))
    return -sum(pc * (qc - log_norm) for pc, qc in zip(p, q_logits))


def entropy(p):
    return -sum(pc * math.log(pc) for pc in p if pc > 0)


def batch_mean_entropy(probs):
    """Entropy of the mean of a list of distributions."""
    return entropy([sum(column) / len(probs) for column in zip(*probs)])


def teacher_probs(logits, center, temp):
    return [softmax([(v - c) / temp for v, c in zip(row, center)]) for row in logits.tolist()]


def hand_dino(student, teacher, center, t_temp, s_temp, ncrops):
    batch = teacher.shape[0] // 2
    probs = teacher_probs(teacher, center, t_temp)
    s_rows = (student / s_temp).tolist()
    terms, kls = [], []
    for i in range(2):
        for v in range(ncrops):
            if v != i:
                ce = [cross_entropy(probs[i * batch + b], s_rows[v * batch + b]) for b in range(batch)]
                terms.append(sum(ce) / batch)
                kls.append(sum(c - entropy(probs[i * batch + b]) for b, c in enumerate(ce)) / batch)
    return sum(terms) / len(terms), sum(kls) / len(kls), sum(entropy(p) for p in probs) / len(probs)


def hand_clusters(student, teacher, center, t_temp, s_temp):
    n = teacher.shape[0] // 2
    probs = teacher_probs(teacher, center, t_temp)
    s_rows = (student / s_temp).tolist()
    ce_1 = [cross_entropy(probs[j], s_rows[n + j]) for j in range(n)]  # teacher view 1, student view 2
    ce_2 = [cross_entropy(probs[n + j], s_rows[j]) for j in range(n)]
    ent = sum(entropy(p) for p in probs) / len(probs)
    return (sum(ce_1) / n + sum(ce_2) / n) / 2, (sum(ce_1) / n + sum(ce_2) / n) / 2 - ent, ent


def random_batch(batch=3, n_clusters=4, ncrops=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(ncrops * batch, OUT, generator=g), torch.randn(2 * batch, OUT, generator=g),
            torch.randn(2 * n_clusters, OUT_C, generator=g), torch.randn(2 * n_clusters, OUT_C, generator=g))


@pytest.mark.parametrize("ncrops, epoch", [(2, 0), (2, 1), (4, 3)])
def test_terms_equal_hand_written_cross_entropy(ncrops, epoch):
    loss = make_loss(ncrops=ncrops)
    loss.center.copy_(torch.randn(1, OUT))
    loss.center_c.copy_(torch.randn(1, OUT_C))
    center, center_c = loss.center[0].tolist(), loss.center_c[0].tolist()
    s_cls, t_cls, s_c, t_c = random_batch(ncrops=ncrops)
    t_temp, t_temp_c = (0.04 + 0.03 * epoch / 2, 0.02 + 0.03 * epoch / 2) if epoch < 3 else (0.07, 0.05)
    dino, cluster = loss(s_cls, t_cls, epoch, s_c, t_c)
    ref_dino, ref_kl, ref_ent = hand_dino(s_cls, t_cls, center, t_temp, 0.1, ncrops)
    ref_cluster, ref_kl_c, ref_ent_c = hand_clusters(s_c, t_c, center_c, t_temp_c, 0.2)
    assert dino.item() == pytest.approx(ref_dino, rel=1e-5)
    assert cluster.item() == pytest.approx(ref_cluster, rel=1e-5)
    logs = loss.diagnostics()
    assert set(logs) == {"ent", "ent_batch", "kl", "ent_c", "ent_batch_c", "kl_c"}
    ref_ent_batch = batch_mean_entropy(teacher_probs(t_cls, center, t_temp))
    ref_ent_batch_c = batch_mean_entropy(teacher_probs(t_c, center_c, t_temp_c))
    assert ref_ent_batch >= ref_ent  # entropy is concave: the mean distribution is at least as uncertain
    for key, expected in dict(ent=ref_ent, kl=ref_kl, ent_c=ref_ent_c, kl_c=ref_kl_c, ent_batch=ref_ent_batch,
                              ent_batch_c=ref_ent_batch_c).items():
        assert logs[key].item() == pytest.approx(expected, rel=1e-4, abs=1e-6), key


def test_centres_move_as_specified():
    loss = make_loss()
    s_cls, t_cls, s_c, t_c = random_batch()
    old, old_c = torch.randn(1, OUT), torch.randn(1, OUT_C)
    loss.center.copy_(old)
    loss.center_c.copy_(old_c)
    loss(s_cls, t_cls, 0, s_c, t_c)
    for j in range(OUT):
        expected = 0.9 * old[0, j].item() + 0.1 * sum(t_cls[:, j].tolist()) / len(t_cls)
        assert loss.center[0, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for j in range(OUT_C):
        expected = 0.9 * old_c[0, j].item() + 0.1 * sum(t_c[:, j].tolist()) / len(t_c)
        assert loss.center_c[0, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert set(loss.state_dict()) == {"center", "center_c"}


def test_no_valid_cluster_gives_zero_term_and_keeps_center_c():
    loss = make_loss()
    loss.center_c.copy_(torch.randn(1, OUT_C))
    before = loss.center_c.clone()
    s_cls, t_cls, _, _ = random_batch()
    s_cls.requires_grad_(True)
    s_c = torch.zeros(0, OUT_C, requires_grad=True)
    dino, cluster = loss(s_cls, t_cls, 0, s_c, torch.zeros(0, OUT_C))
    assert cluster.item() == 0.0 and math.isfinite(dino.item())
    assert torch.equal(loss.center_c, before)
    (dino + cluster).backward()
    assert torch.isfinite(s_cls.grad).all()
    logs = loss.diagnostics()
    assert logs["ent_c"].item() == 0.0 and logs["kl_c"].item() == 0.0 and math.isfinite(logs["kl"].item())


def test_invalid_slots_count_nowhere():
    """Slots marked invalid (any values) change neither the terms, the centres nor the diagnostics."""
    s_cls, t_cls, s_c, t_c = random_batch(n_clusters=4)
    valid = torch.tensor([True, False, True, False])
    keep = valid.repeat(2)
    compact, masked = make_loss(), make_loss()
    garbage = torch.randn(2 * 4, OUT_C) * 50
    s_masked, t_masked = torch.where(keep[:, None], s_c, garbage), torch.where(keep[:, None], t_c, -garbage)
    expected = compact(s_cls, t_cls, 1, s_c[keep], t_c[keep])
    got = masked(s_cls, t_cls, 1, s_masked, t_masked, valid)
    for mine, theirs in zip(got, expected):
        assert mine.item() == pytest.approx(theirs.item(), rel=1e-6)
    torch.testing.assert_close(masked.center_c, compact.center_c)
    for key, value in compact.diagnostics().items():
        assert masked.diagnostics()[key].item() == pytest.approx(value.item(), rel=1e-5), key
    none_valid = make_loss()
    none_valid.center_c.copy_(torch.ones(1, OUT_C))
    _, cluster = none_valid(s_cls, t_cls, 1, s_masked, t_masked, torch.zeros(4, dtype=torch.bool))
    assert cluster.item() == 0.0 and none_valid.center_c.eq(1).all()


def test_gradients_reach_student_only():
    loss = make_loss()
    s_cls, t_cls, s_c, t_c = (t.requires_grad_(True) for t in random_batch())
    dino, cluster = loss(s_cls, t_cls, 0, s_c, t_c)
    (dino + cluster).backward()
    assert s_cls.grad.abs().sum() > 0 and s_c.grad.abs().sum() > 0
    assert t_cls.grad is None and t_c.grad is None
    assert not loss.center.requires_grad and not loss.center_c.requires_grad


def test_half_precision_logits():
    loss = make_loss()
    s_cls, t_cls, s_c, t_c = random_batch()
    full = make_loss()(s_cls, t_cls, 0, s_c, t_c)
    half = loss(*(t.bfloat16() for t in (s_cls, t_cls)), 0, *(t.bfloat16() for t in (s_c, t_c)))
    assert all(h.dtype == torch.float32 for h in half)
    for h, f in zip(half, full):
        assert h.item() == pytest.approx(f.item(), rel=0.1)


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(6, OUT), torch.zeros(5, OUT), 0, torch.zeros(2, OUT_C), torch.zeros(2, OUT_C)), "teacher_cls"),
    ((torch.zeros(4, OUT), torch.zeros(6, OUT), 0, torch.zeros(2, OUT_C), torch.zeros(2, OUT_C)), "student_cls"),
    ((torch.zeros(6, OUT), torch.zeros(6, OUT), 0, torch.zeros(2, OUT_C), torch.zeros(4, OUT_C)), "clusters"),
    ((torch.zeros(6, OUT), torch.zeros(6, OUT), 0, torch.zeros(3, OUT_C), torch.zeros(3, OUT_C)), "clusters"),
    ((torch.zeros(6, OUT), torch.zeros(6, OUT), 4, torch.zeros(2, OUT_C), torch.zeros(2, OUT_C)), "epoch"),
])
def test_bad_inputs_raise_value_error(args, message):
    with pytest.raises(ValueError, match=message):
        make_loss()(*args)


def test_bad_construction_and_early_diagnostics():
    with pytest.raises(ValueError, match="warmup_teacher_temp_epochs"):
        make_loss(nepochs=2, warmup_epochs=3)
    with pytest.raises(RuntimeError, match="forward"):
        make_loss().diagnostics()


def hand_sinkhorn_knopp(logits, temp, iterations=3):
    """DINOv2's teacher Sinkhorn-Knopp restated with Python lists: Q = exp(logits / temp) transposed to (C, n),
    divided by its total, then per iteration each output row divided by its sum and by C, each sample column by its
    sum and by n; finally multiplied by n (each sample's column sums to 1)."""
    rows = [[math.exp(v / temp) for v in row] for row in logits.tolist()]  # (n, C)
    n, c = len(rows), len(rows[0])
    total = sum(map(sum, rows))
    q = [[v / total for v in row] for row in rows]
    for _ in range(iterations):
        out_sums = [sum(q[i][k] for i in range(n)) for k in range(c)]
        q = [[q[i][k] / out_sums[k] / c for k in range(c)] for i in range(n)]
        q = [[v / sum(row) / n for v in row] for row in q]
    return [[v * n for v in row] for row in q]


def test_sinkhorn_knopp_equals_dinov2_restated_and_balances_outputs():
    logits = torch.randn(6, OUT, generator=torch.Generator().manual_seed(4))
    probs = sinkhorn_knopp_log_probs(logits, 0.3).exp()
    torch.testing.assert_close(probs, torch.tensor(hand_sinkhorn_knopp(logits, 0.3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(1), torch.ones(6))
    balance = sinkhorn_knopp_log_probs(logits, 0.3, n_iterations=50).exp().sum(0)
    torch.testing.assert_close(balance, torch.full((OUT,), 6 / OUT), rtol=1e-3, atol=1e-4)


def test_sinkhorn_knopp_leaves_invalid_rows_out():
    logits = torch.randn(8, OUT, generator=torch.Generator().manual_seed(5))
    valid = torch.tensor([1.0, 1, 0, 1, 0, 1, 1, 1])
    garbage = torch.where(valid[:, None] > 0, logits, logits * 100)
    masked = sinkhorn_knopp_log_probs(garbage, 0.1, valid).exp()
    torch.testing.assert_close(masked[valid > 0], sinkhorn_knopp_log_probs(logits[valid > 0], 0.1).exp())


def test_sinkhorn_knopp_centering_feeds_both_terms():
    s_cls, t_cls, s_c, t_c = random_batch()
    loss = make_loss(centering="sinkhorn_knopp")
    dino, cluster = loss(s_cls, t_cls, 3, s_c, t_c)
    probs = torch.tensor(hand_sinkhorn_knopp(t_cls, 0.07))  # epoch 3: past the warm-up, teacher_temp 0.07
    ref = sum(cross_entropy(probs[i].tolist(), (s_cls[(i + 3) % 6] / 0.1).tolist()) for i in range(6)) / 6
    assert dino.item() == pytest.approx(ref, rel=1e-5)  # teacher view i meets student view 1 - i
    probs_c = torch.tensor(hand_sinkhorn_knopp(t_c, 0.05))
    ref_c = sum(cross_entropy(probs_c[i].tolist(), (s_c[(i + 4) % 8] / 0.2).tolist()) for i in range(8)) / 8
    assert cluster.item() == pytest.approx(ref_c, rel=1e-5)
    with pytest.raises(ValueError, match="--teacher_centering"):
        make_loss(centering="mean")


# ----------------------------------------------------------------------------------------------------------------
# Two processes (gloo)
# ----------------------------------------------------------------------------------------------------------------
def _gloo_worker(rank, world_size, init_file, batches, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        loss = make_loss()
        dino, cluster = loss(*batches[rank][:2], 1, *batches[rank][2:])
        torch.save(dict(center=loss.center, center_c=loss.center_c, logs=loss.diagnostics(), dino=dino.detach(),
                        cluster=cluster.detach()), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _concat_views(parts):
    """Per-rank (view 1 rows, then view 2 rows) -> one batch ordered [view 1 of all ranks, view 2 of all ranks]."""
    halves = [p.chunk(2) for p in parts]
    return torch.cat([h[0] for h in halves] + [h[1] for h in halves])


def test_two_process_centres_equal_single_process_on_concatenated_batch(tmp_path):
    # Rank 0 has no valid cluster at all, rank 1 has three: the cluster centre must use the global count.
    batches = [random_batch(batch=2, n_clusters=0, seed=1), random_batch(batch=3, n_clusters=3, seed=2)]
    batches[0] = (batches[0][0], batches[0][1], torch.zeros(0, OUT_C), torch.zeros(0, OUT_C))
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), batches, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    single = make_loss()
    single(*(_concat_views([b[i] for b in batches]) for i in range(2)), 1,
           *(_concat_views([b[i] for b in batches]) for i in range(2, 4)))
    for out in ranks:
        torch.testing.assert_close(out["center"], ranks[0]["center"], rtol=0, atol=0)
        torch.testing.assert_close(out["center_c"], ranks[0]["center_c"], rtol=0, atol=0)
        torch.testing.assert_close(out["center"], single.center)
        torch.testing.assert_close(out["center_c"], single.center_c)
        for key, value in single.diagnostics().items():
            torch.testing.assert_close(out["logs"][key], value, msg=key)
    assert ranks[0]["cluster"].item() == 0.0 and ranks[1]["cluster"].item() > 0


def _gloo_sinkhorn_worker(rank, world_size, init_file, parts, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        logits, weights = parts[rank]
        torch.save(sinkhorn_knopp_log_probs(logits, 0.1, weights), f"{out_dir}/sk{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_sinkhorn_knopp_equals_single_process_on_concatenated_rows(tmp_path):
    g = torch.Generator().manual_seed(6)
    parts = [(torch.randn(3, OUT, generator=g), torch.tensor([1.0, 0, 1])),
             (torch.randn(5, OUT, generator=g), torch.ones(5))]
    mp.spawn(_gloo_sinkhorn_worker, args=(2, str(tmp_path / "init"), parts, str(tmp_path)), nprocs=2, join=True)
    got = torch.cat([torch.load(tmp_path / f"sk{r}.pt", weights_only=True) for r in range(2)])
    single = sinkhorn_knopp_log_probs(torch.cat([p[0] for p in parts]), 0.1, torch.cat([p[1] for p in parts]))
    keep = torch.cat([p[1] for p in parts]) > 0
    torch.testing.assert_close(got[keep], single[keep])
