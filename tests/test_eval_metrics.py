"""eval/metrics.py: mIoU, cluster matching and the DAVIS measures, hand-computed values and slow reference
versions."""

import math

import numpy as np
import pytest
import torch

from eval.metrics import (
    boundary_f_measure,
    boundary_map,
    cluster_class_counts,
    confusion_matrix,
    davis_scores,
    decay_bins,
    first_frame_objects,
    frame_statistics,
    hungarian_match,
    iou_per_class,
    many_to_one_match,
    mean_iou,
    region_similarity,
    segmentation_scores,
    sequence_jf,
)

# ===== mIoU =====


def test_confusion_and_iou_hand_computed_with_ignored_and_absent_classes():
    # 4 classes; class 2 is predicted only on an ignored pixel, class 3 appears nowhere.
    target = torch.tensor([0, 0, 0, 1, 1, 255, 255, 1])
    pred = torch.tensor([0, 1, 0, 1, 0, 2, 0, 1])
    conf = confusion_matrix(pred, target, 4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[1, 0] = 2, 1, 2, 1
    assert torch.equal(conf, expected)
    iou = iou_per_class(conf)
    assert iou[0] == pytest.approx(2 / 4) and iou[1] == pytest.approx(2 / 4)  # TP 2, FP 1, FN 1
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx(1.0 / 4)  # absent classes count 0, mean over all 4
    scores = segmentation_scores(conf, ["a", "b", "c", "d"])
    assert scores["absent_classes"] == ["c", "d"] and scores["per_class_iou"]["c"] is None
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)


def test_predicted_but_absent_class_scores_zero():
    conf = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2)
    assert iou_per_class(conf).tolist() == [0.5, 0.0]
    assert mean_iou(conf) == pytest.approx(0.25)


def test_miou_is_dataset_level_not_mean_of_images():
    # image A: 1 pixel of class 1, predicted 0; image B: 9 pixels of class 1, all correct.
    ta, pa = torch.tensor([[1, 0]]), torch.tensor([[0, 0]])
    tb, pb = torch.ones(3, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.long)
    conf = confusion_matrix(pa, ta, 2) + confusion_matrix(pb, tb, 2)
    # class 0: TP 1, FP 1 -> 1/2; class 1: TP 9, FN 1 -> 9/10
    assert mean_iou(conf) == pytest.approx((0.5 + 0.9) / 2)
    per_image = (mean_iou(confusion_matrix(pa, ta, 2)) + mean_iou(confusion_matrix(pb, tb, 2))) / 2
    assert per_image != pytest.approx(mean_iou(conf))


def test_iou_matches_slow_per_class_loop():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (3, 20, 20), generator=g)
    target[target == 5] = 255
    pred = torch.randint(0, 5, (3, 20, 20), generator=g)
    iou = iou_per_class(confusion_matrix(pred, target, 5))
    valid = target != 255
    for c in range(5):  # the authors' TP / FP / FN loop
        tp = ((target == c) & (pred == c) & valid).sum().item()
        fp = ((target != c) & (pred == c) & valid).sum().item()
        fn = ((target == c) & (pred != c) & valid).sum().item()
        assert iou[c].item() == pytest.approx(tp / (tp + fp + fn))


def test_confusion_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(torch.tensor([5]), torch.tensor([0]), 3)
    assert confusion_matrix(torch.tensor([5]), torch.tensor([255]), 3).sum() == 0  # ignored: not checked
    with pytest.raises(ValueError, match="cluster ids"):
        cluster_class_counts(torch.tensor([4]), torch.tensor([0]), 3, 3)


# ===== matching =====


def test_hungarian_recovers_a_permutation():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (2, 10, 10), generator=g)
    perm = torch.tensor([2, 0, 3, 1])  # class c -> cluster perm[c]
    clusters = perm[target]
    target[0, 0, :3] = 255  # ignored pixels do not matter
    mapping = hungarian_match(cluster_class_counts(clusters, target, 4, 4))
    assert torch.equal(mapping[perm], torch.arange(4))


def test_hungarian_is_optimal_not_greedy():
    # Greedy per cluster would send both clusters to class 0; the best one-to-one matching is 0->1, 1->0:
    # IoU(0,0)=6/16, IoU(0,1)=5/11, IoU(1,0)=5/11, IoU(1,1)=0.
    counts = torch.tensor([[6, 5], [5, 0]])
    assert hungarian_match(counts).tolist() == [1, 0]


def test_hungarian_unmatched_clusters_go_to_background():
    counts = torch.tensor([[0, 10], [0, 0], [10, 1]])  # 3 clusters, 2 classes
    assert hungarian_match(counts).tolist() == [1, 0, 0]


def test_many_to_one_uses_precision_not_iou():
    # cluster 0 holds 2 pixels of the huge class 0 and the single pixel of class 1: precision picks class 0
    # (2/3), IoU would pick class 1 (1/3 vs 2/101).
    target = torch.tensor([0] * 100 + [1])
    clusters = torch.tensor([0, 0] + [1] * 98 + [0])
    counts = cluster_class_counts(clusters, target, 3, 2)
    assert counts.tolist() == [[2, 1], [98, 0], [0, 0]]
    assert many_to_one_match(counts).tolist() == [0, 0, 0]  # empty cluster 2 -> background
    assert many_to_one_match(torch.tensor([[1, 5, 2], [3, 3, 0]])).tolist() == [1, 0]  # tie -> lowest class


# ===== J and F =====


def square(size, top, left, side):
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[0, top:top + side, left:left + side] = True
    return m


def test_region_similarity_known_values():
    a = square(20, 5, 5, 4)
    assert region_similarity(a, a).item() == 1.0
    assert region_similarity(a, square(20, 12, 12, 4)).item() == 0.0
    assert region_similarity(a, square(20, 5, 6, 4)).item() == pytest.approx(12 / 20)
    assert region_similarity(a, square(20, 5, 7, 4)).item() == pytest.approx(8 / 24)
    empty = torch.zeros(1, 20, 20, dtype=torch.bool)
    assert region_similarity(empty, empty).item() == 1.0


def test_boundary_map_of_a_square_is_the_shifted_perimeter():
    # seg2bmap puts the boundary half a pixel towards the origin: a 4x4 square at rows/cols 5..8 has the
    # 16-pixel perimeter of the 5x5 square at rows/cols 4..8 as its boundary.
    b = boundary_map(square(20, 5, 5, 4))[0]
    ring = torch.zeros(20, 20, dtype=torch.bool)
    ring[4:9, 4:9] = True
    ring[5:8, 5:8] = False
    assert torch.equal(b, ring)


def test_boundary_f_known_values():
    a = square(20, 5, 5, 4)
    assert boundary_f_measure(a, a).item() == 1.0
    assert boundary_f_measure(a, square(20, 13, 13, 4)).item() == 0.0
    # 20x20 image: radius ceil(0.008 * 28.3) = 1 (a 5-pixel cross). Shifted by 2 columns, 10 of the 16 boundary
    # pixels of each mask lie within the cross of the other's boundary: P = R = 10/16.
    assert boundary_f_measure(square(20, 5, 7, 4), a).item() == pytest.approx(10 / 16)
    empty = torch.zeros(1, 20, 20, dtype=torch.bool)
    assert boundary_f_measure(empty, empty).item() == 1.0
    assert boundary_f_measure(empty, a).item() == 0.0 and boundary_f_measure(a, empty).item() == 0.0


def slow_f(pred, gt, radius):
    """Boundary F with explicit loops: seg2bmap by its definition, matching by disk distance."""
    def bmap(m):
        h, w = m.shape
        b = np.zeros_like(m)
        for i in range(h):
            for j in range(w):
                nbrs = [(i, j + 1), (i + 1, j), (i + 1, j + 1)]
                if i == h - 1:
                    nbrs = [(i, j + 1)]
                if j == w - 1:
                    nbrs = [(i + 1, j)] if i < h - 1 else []
                b[i, j] = any(m[i, j] != (m[y, x] if y < h and x < w else False) for y, x in nbrs)
        return b

    def matched(src, other):
        pts = np.argwhere(other)
        return sum(any((p - q) @ (p - q) <= radius ** 2 for q in pts) for p in np.argwhere(src))

    bp, bg = bmap(pred), bmap(gt)
    if bp.sum() == 0 or bg.sum() == 0:
        return float(bp.sum() == 0 and bg.sum() == 0)
    p, r = matched(bp, bg) / bp.sum(), matched(bg, bp) / bg.sum()
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_boundary_f_matches_slow_loops_on_random_blobs():
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        pred = torch.rand(1, 14, 14, generator=g) > 0.6
        gt = torch.rand(1, 14, 14, generator=g) > 0.6
        fast = boundary_f_measure(pred, gt, bound_th=2).item()
        assert fast == pytest.approx(slow_f(pred[0].numpy(), gt[0].numpy(), 2))


def test_sequence_jf_skips_first_and_last_frames_and_averages_objects():
    gt = torch.zeros(4, 8, 8, dtype=torch.uint8)
    gt[:, 0:4, 0:4] = 1
    gt[:, 4:8, 4:8] = 2
    pred = gt.clone()
    pred[0] = 0  # first and last frames are garbage: must not count
    pred[3] = 2
    pred[1, 4:8, 4:6] = 0  # object 2 half found in frame 1: J = 8/16
    j, f = sequence_jf(pred, gt)
    assert j.shape == (2, 2)
    assert j.tolist() == [[1.0, 1.0], [0.5, 1.0]]
    scores = davis_scores({"seq": (j, f)})
    assert scores["J-Mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert scores["J&F-Mean"] == pytest.approx((scores["J-Mean"] + scores["F-Mean"]) / 2)


def slow_statistics(row):
    """Mean, recall and decay of one object's per-frame scores, re-stated with loops from the official definitions:
    bin edges round(1 + i (T'-1) / 4) - 1 with halves rounded up, bins inclusive of both edges, NaN frames left out
    of means, counted as misses by the recall."""
    def nanmean(vals):
        kept = [v for v in vals if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    n = len(row)
    edges = [math.floor(1 + i * (n - 1) / 4 + 0.5) - 1 for i in range(5)]
    hits = sum(1 for v in row if v > 0.5)
    return (nanmean(row), hits / n,
            nanmean(row[edges[0]:edges[1] + 1]) - nanmean(row[edges[3]:edges[4] + 1]))


def test_statistics_match_slow_loops_on_random_scores():
    g = torch.Generator().manual_seed(5)
    for n_frames in [*range(1, 41), 103, 300]:  # 300 > 256: past the official code's uint8 index cast
        values = torch.rand(3, n_frames, generator=g, dtype=torch.float64)
        values[values < 0.05] = math.nan
        values[1, :] = (values[1, :] > 0.5).double() * 0.5 + 0.25  # exactly 0.25 / 0.75: the threshold is strict
        stats = frame_statistics(values)
        for i, row in enumerate(values.tolist()):
            expected = slow_statistics(row)
            for key, want in zip(("Mean", "Recall", "Decay"), expected):
                got = stats[key][i].item()
                assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12), \
                    (n_frames, i, key)


def test_statistics_hand_computed():
    # T' = 7: edges round(1, 2.5, 4, 5.5, 7) - 1 = 0, 2, 3, 5, 6 (halves up): first bin frames 0-2, last 5-6.
    stats = frame_statistics(torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]))
    assert stats["Decay"].item() == pytest.approx(2 / 3)  # banker's rounding (edge 1 = 1) would give 1
    assert stats["Recall"].item() == pytest.approx(2 / 7)
    assert decay_bins(7) == (slice(0, 3), slice(5, 7))
    assert decay_bins(2) == (slice(0, 1), slice(1, 2)) and decay_bins(1) == (slice(0, 1), slice(0, 1))
    stats = frame_statistics(torch.tensor([[0.5, math.nan, 0.9]]))
    assert stats["Recall"].item() == pytest.approx(1 / 3)  # 0.5 is not > 0.5, NaN is a miss
    assert stats["Mean"].item() == pytest.approx(0.7)
    assert all(bool(v.isnan().all()) for v in frame_statistics(torch.zeros(2, 0)).values())


def test_first_frame_without_objects_adds_no_object():
    gt = torch.zeros(5, 8, 8, dtype=torch.uint8)
    gt[:, 0, :] = 255  # void only
    gt[2:, 3:6, 3:6] = 1  # an object that appears later is not scored: the count comes from the first frame
    assert first_frame_objects(gt[0]) == 0
    j, f = sequence_jf(torch.zeros_like(gt), gt)
    assert j.shape == (0, 3) and f.shape == (0, 3)
    full = torch.zeros(5, 8, 8, dtype=torch.uint8)
    full[:, 0:4, 0:4] = 1
    full[:, 5:8, 5:8] = 3  # ids 1 and 3: three objects, object 2 absent everywhere
    assert first_frame_objects(full[0]) == 3
    pred = full.clone()
    pred[1:3, 0:4, 0:2] = 0
    scores = davis_scores({"empty": (j, f), "full": sequence_jf(pred, full)})
    alone = davis_scores({"full": sequence_jf(pred, full)})
    assert scores["sequences_without_objects"] == ["empty"] and alone["sequences_without_objects"] == []
    assert list(scores["per_object"]) == ["full_1", "full_2", "full_3"] and list(scores["per_sequence"]) == ["full"]
    for m in ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"):
        assert scores[m] == alone[m]
    assert scores["per_object"]["full_1"]["J-Mean"] == pytest.approx(0.5 * 2 / 3 + 1 / 3)
    assert scores["per_object"]["full_2"]["J-Mean"] == 1.0  # absent from both: J = 1 on every frame
    nothing = davis_scores({"empty": (j, f)})
    assert math.isnan(nothing["J&F-Mean"]) and nothing["per_object"] == {}


def test_overall_statistics_average_objects_not_sequences():
    g = torch.Generator().manual_seed(2)
    one = (torch.rand(1, 9, generator=g, dtype=torch.float64), torch.rand(1, 9, generator=g, dtype=torch.float64))
    three = (torch.rand(3, 9, generator=g, dtype=torch.float64), torch.rand(3, 9, generator=g, dtype=torch.float64))
    scores = davis_scores({"a": one, "b": three})
    assert list(scores["per_object"]) == ["a_1", "b_1", "b_2", "b_3"]
    for measure, index in (("J", 0), ("F", 1)):
        rows = [one[index][0], *three[index]]
        for key, position in (("Mean", 0), ("Recall", 1), ("Decay", 2)):
            want = sum(slow_statistics(r.tolist())[position] for r in rows) / 4
            assert scores[f"{measure}-{key}"] == pytest.approx(want, abs=1e-12)
    assert scores["J&F-Mean"] == pytest.approx((scores["J-Mean"] + scores["F-Mean"]) / 2)
    # an object without scored frames has NaN statistics, and a NaN is not skipped by the overall means (np.mean)
    with_nan = davis_scores({"a": one, "short": (torch.zeros(1, 0), torch.zeros(1, 0))})
    assert math.isnan(with_nan["per_object"]["short_1"]["J-Mean"]) and math.isnan(with_nan["J-Mean"])


def test_sequence_jf_scores_long_sequences_in_chunks_with_identical_numbers(monkeypatch):
    """Memory: the masks of every object in every frame are never allocated at once (here at most 3 frames of 2
    objects per chunk); the chunked scores equal the one-piece ones exactly."""
    from eval import metrics

    gen = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 3, (11, 24, 20), generator=gen)
    gt[0, :2, :2] = 2  # the first frame names objects 1 and 2
    pred = torch.where(torch.rand(gt.shape, generator=gen) < 0.2, torch.randint(0, 3, gt.shape, generator=gen), gt)
    whole = sequence_jf(pred, gt, max_pixels=2**40)
    sizes, boundary = [], metrics.boundary_f_measure

    def recording(pred_m, gt_m, *args, **kwargs):
        sizes.append(pred_m.numel())
        return boundary(pred_m, gt_m, *args, **kwargs)

    monkeypatch.setattr(metrics, "boundary_f_measure", recording)
    chunked = sequence_jf(pred, gt, max_pixels=3 * 2 * 24 * 20)
    assert max(sizes) <= 3 * 2 * 24 * 20 and len(sizes) == 3  # 9 scored frames, 3 per chunk
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    assert whole[0].shape == (2, 9)
    assert sequence_jf(pred[:2], gt[:2], max_pixels=10)[0].shape == (2, 0)  # no scored frame
