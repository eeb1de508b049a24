"""Tests of eval/nn_retrieval.py against slow, independent re-statements of the retrieval protocol (the public
reproduction's memory labels, rare-class choice, label transfer, bilinear upsampling and Hungarian matching), and
end to end on the synthetic scenes and a VOC-layout tree."""

import itertools
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from croc_utils.cli import run_cli
from eval import nn_retrieval
from eval.metrics import confusion_matrix
from eval.nn_retrieval import (
    Memory,
    RetrievalConfig,
    build_memory,
    evaluate_retrieval,
    knn,
    memory_labels,
    predict,
    rare_first,
    retrieval_scores,
    transfer_labels,
)
from tests.trees import make_ade20k, make_vocdevkit

pytestmark = pytest.mark.usefixtures("one_thread")


# ===== slow re-statements =====

def slow_patch_labels(mask: np.ndarray, p: int, n_classes: int) -> list[list[float]]:
    """Per patch (row-major), the mean one-hot label of its pixels, 255 read as class 0."""
    rows = []
    for i in range(0, mask.shape[0], p):
        for j in range(0, mask.shape[1], p):
            pixels = [0 if v == 255 else int(v) for v in mask[i:i + p, j:j + p].ravel()]
            rows.append([pixels.count(c) / len(pixels) for c in range(n_classes)])
    return rows


def slow_transfer(query: list[float], neighbours: list[list[float]], labels: list[list[float]],
                  temperature: float) -> list[float]:
    """softmax over the neighbours of cos(query, neighbour) / temperature, weighting their label vectors."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    logits = [cos(query, n) / temperature for n in neighbours]
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    total = sum(weights)
    return [sum(w * lab[c] for w, lab in zip(weights, labels)) / total for c in range(len(labels[0]))]


def slow_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (C, size, size), half-pixel centres (align_corners False), edges clamped."""
    c, h, w = grid.shape
    out = np.zeros((c, size, size))
    for y in range(size):
        sy = max((y + 0.5) * h / size - 0.5, 0.0)
        y0 = min(int(sy), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for x in range(size):
            sx = max((x + 0.5) * w / size - 0.5, 0.0)
            x0 = min(int(sx), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[:, y, x] = ((1 - fy) * ((1 - fx) * grid[:, y0, x0] + fx * grid[:, y0, x1])
                            + fy * ((1 - fx) * grid[:, y1, x0] + fx * grid[:, y1, x1]))
    return out


def slow_miou(pred: np.ndarray, target: np.ndarray, n_classes: int, mapping=None) -> float:
    """Mean over all classes of TP / (TP + FP + FN) (0 when empty), predicted class k read as mapping[k]."""
    keep = target != 255
    pred, target = pred[keep], target[keep]
    if mapping is not None:
        pred = np.array([mapping[k] for k in pred])
    ious = []
    for c in range(n_classes):
        tp = int(((pred == c) & (target == c)).sum())
        union = int(((pred == c) | (target == c)).sum())
        ious.append(tp / union if union else 0.0)
    return sum(ious) / n_classes


def best_matching_miou(pred: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """The Hungarian-matched mIoU by trying every one-to-one mapping of predicted to true classes."""
    return max(slow_miou(pred, target, n_classes, perm) for perm in itertools.permutations(range(n_classes)))


# ===== memory =====

def test_memory_labels_restated():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (2, 8, 12)).astype(np.uint8)
    masks[0, :3, :5] = 255
    ours = memory_labels(torch.from_numpy(masks), (2, 3), 4)
    for b in range(2):
        torch.testing.assert_close(ours[b], torch.tensor(slow_patch_labels(masks[b], 4, 4)))


def test_rare_first_by_hand():
    # one image, 4 patches: classes {0}, {0}, {0, 1}, {2}. Class 0 is in 3 patches, classes 1 and 2 in one each, so
    # the patch scores before the draw are 3, 3, 3 + 1, 1.
    labels = torch.tensor([[[1, 0, 0], [1, 0, 0], [.5, .5, 0], [0, 0, 1]]], dtype=torch.float32)
    for seed in range(10):
        draw = torch.rand(1, 4, generator=torch.Generator().manual_seed(seed))[0]
        expected = sorted(range(4), key=lambda p: [3.0, 3.0, 4.0, 1.0][p] * float(draw[p]))[:2]
        ours = rare_first(labels, 2, torch.Generator().manual_seed(seed))[0].tolist()
        assert sorted(ours) == sorted(expected)


def test_bounded_memory_keeps_its_share_per_image():
    class Grey(nn.Module):  # patch features = mean of each 4 x 4 patch of channel 0 and a constant
        patch_size = 4

        def get_intermediate_layers(self, x, n=1):
            f = nn.functional.avg_pool2d(x[:, :1], 4).flatten(2).transpose(1, 2)  # (B, N, 1)
            tokens = torch.cat([f, torch.ones_like(f)], 2)  # (B, N, 2)
            return [torch.cat([torch.zeros_like(tokens[:, :1]), tokens], 1)]  # a CLS slot first

    images = torch.rand(6, 3, 16, 16)
    masks = torch.randint(0, 3, (6, 16, 16))
    batches = [(images[:4], masks[:4]), (images[4:], masks[4:])]
    cfg = RetrievalConfig(memory_size=6 * 5 + 3, seed=1)  # 5 of 16 patches per image
    memory = build_memory(Grey(), batches, 3, cfg, n_images=6)
    assert len(memory) == 30 and memory.labels.shape == (30, 3)
    torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(30))
    unbounded = build_memory(Grey(), batches, 3, RetrievalConfig(), n_images=6)
    assert len(unbounded) == 6 * 16
    # every kept row is one of the image's patches, with its own label
    for row in range(30):
        image = row // 5
        hits = [(unbounded.features[i] - memory.features[row]).abs().max() < 1e-6 and
                torch.equal(unbounded.labels[i], memory.labels[row]) for i in range(16 * image, 16 * image + 16)]
        assert any(hits)


# ===== retrieval =====

def test_chunked_knn_equals_a_full_sort():
    torch.manual_seed(0)
    keys = nn.functional.normalize(torch.randn(101, 8), dim=1)
    queries = torch.randn(23, 8)
    scores, idx = knn(queries, keys, 5, query_chunk=7, key_chunk=13)
    full = queries @ keys.T
    ref_scores, ref_idx = full.sort(dim=1, descending=True)
    torch.testing.assert_close(scores, ref_scores[:, :5])
    assert torch.equal(idx, ref_idx[:, :5])
    with pytest.raises(ValueError, match="from a memory of 101"):
        knn(queries, keys, 102)


def test_faiss_index_when_installed():
    pytest.importorskip("faiss")
    torch.manual_seed(0)
    keys = nn.functional.normalize(torch.randn(200, 16), dim=1)
    queries = nn.functional.normalize(torch.randn(30, 16), dim=1)
    scores, idx = nn_retrieval.FaissIndex(keys).search(queries, 10)
    ref_scores, ref_idx = knn(queries, keys, 10)
    torch.testing.assert_close(scores, ref_scores)
    assert torch.equal(idx, ref_idx)


def test_label_transfer_restated():
    torch.manual_seed(0)
    memory = Memory(nn.functional.normalize(torch.randn(50, 6), dim=1), torch.rand(50, 4).softmax(1))
    queries = torch.randn(9, 6)
    scores, idx = knn(nn.functional.normalize(queries, dim=1), memory.features, 30)
    ours = transfer_labels(scores, idx, memory.labels, 0.02)
    for q in range(9):
        neighbours = [memory.features[i].tolist() for i in idx[q]]
        expected = slow_transfer(queries[q].tolist(), neighbours, [memory.labels[i].tolist() for i in idx[q]], 0.02)
        torch.testing.assert_close(ours[q], torch.tensor(expected), atol=1e-5, rtol=1e-4)


class TokenModel(nn.Module):
    """A stand-in backbone: the patch tokens are given (B, N, D), whatever the images."""

    patch_size = 4

    def __init__(self, tokens):
        super().__init__()
        self.tokens = tokens

    def get_intermediate_layers(self, x, n=1):
        return [torch.cat([self.tokens[:, :1], self.tokens], 1)]  # a CLS slot first


def test_predictions_and_both_mious_restated_on_random_data():
    torch.manual_seed(0)
    n_classes, b, h, size = 4, 3, 3, 12
    memory = Memory(nn.functional.normalize(torch.randn(80, 5), dim=1), torch.rand(80, n_classes).softmax(1))
    tokens = torch.randn(b, h * h, 5)
    cfg = RetrievalConfig(n_neighbours=30, temperature=0.02)
    pred = predict(TokenModel(tokens), torch.zeros(b, 3, h * 4, h * 4), memory, cfg, (size, size))
    for i in range(b):
        patch_labels = []
        for p in range(h * h):
            sims = (memory.features @ nn.functional.normalize(tokens[i, p], dim=0)).tolist()
            near = sorted(range(80), key=lambda j: -sims[j])[:30]
            patch_labels.append(slow_transfer(tokens[i, p].tolist(), [memory.features[j].tolist() for j in near],
                                              [memory.labels[j].tolist() for j in near], 0.02))
        grid = np.array(patch_labels).T.reshape(n_classes, h, h)
        assert np.array_equal(pred[i].numpy(), slow_bilinear(grid, size).argmax(0))
    target = torch.randint(0, n_classes, (b, size, size))
    target[0, :4] = 255
    scores = retrieval_scores(confusion_matrix(pred, target, n_classes), [str(c) for c in range(n_classes)])
    assert scores["miou"] == pytest.approx(slow_miou(pred.numpy(), target.numpy(), n_classes))
    assert scores["miou_hungarian"] == pytest.approx(best_matching_miou(pred.numpy(), target.numpy(), n_classes))
    assert scores["miou_hungarian"] >= scores["miou"]


def test_hungarian_matching_undoes_a_permutation_of_the_classes():
    target = torch.randint(0, 5, (2, 10, 10))
    pred = torch.tensor([3, 0, 4, 1, 2])[target]  # a perfect segmentation under other class ids
    scores = retrieval_scores(confusion_matrix(pred, target, 5), list("abcde"))
    assert scores["miou_hungarian"] == 1.0 and scores["miou"] < 1.0
    assert scores["hungarian"]["mapping"] == [1, 3, 4, 0, 2]


def test_class_informative_features_give_a_perfect_segmentation():
    """Patches whose features are their class: every neighbour carries the right label. Classes change from column
    to column only: bilinear upsampling then keeps each pixel with its own patch (at a corner shared by three
    patches of another class it would not)."""
    torch.manual_seed(0)
    classes = torch.randint(0, 3, (6, 1, 4)).expand(-1, 4, -1)  # (B, h, w) patch classes, constant in columns
    masks = classes.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (B, 16, 16)
    tokens = nn.functional.one_hot(classes.flatten(1), 3).float() + 0.01 * torch.randn(6, 16, 3)
    model = TokenModel(tokens[:3])
    memory = build_memory(model, [(torch.zeros(3, 3, 16, 16), masks[:3])], 3, RetrievalConfig(), n_images=3)
    model.tokens = tokens[3:]
    out = evaluate_retrieval(model, None, [(torch.zeros(3, 3, 16, 16), masks[3:])], ["a", "b", "c"],
                             RetrievalConfig(n_neighbours=5), memory=memory, return_predictions=True)
    assert out["miou"] == 1.0 and out["miou_hungarian"] == 1.0 and torch.equal(out["predictions"].long(), masks[3:])


# ===== end to end =====

SYNTHETIC = ["--arch", "vit_pico", "--patch_size", "8", "--dataset", "synthetic", "--input_size", "32",
             "--memory_images", "12", "--val_images", "4", "--batch_size", "6", "--num_workers", "0",
             "--device", "cpu", "--augmentation_epochs", "2"]


def test_command_line_on_synthetic_scenes(tmp_path):
    out = run_cli(nn_retrieval.main, nn_retrieval.get_args_parser(),
                  [*SYNTHETIC, "--memory_size", "120", "--output_dir", str(tmp_path)])
    saved = json.loads((tmp_path / "retrieval.json").read_text())
    assert saved["memory_patches"] == 12 * 2 * 5  # 120 // (12 images x 2 passes) patches of 16 per image
    assert 0 <= saved["miou"] <= saved["miou_hungarian"] <= 1  # the identity is one of the matchings
    assert saved["miou"] == out["miou"] and len(saved["class_names"]) == len(saved["per_class_iou"])
    assert saved["config"]["n_neighbours"] == 30 and saved["config"]["temperature"] == 0.02


def test_command_line_on_a_voc_tree(tmp_path):
    names = [(f"2007_{i:06d}", 1 + i) for i in range(6)]
    make_vocdevkit(tmp_path, names=names, val=[n for n, _ in names[:2]])
    out = run_cli(nn_retrieval.main, nn_retrieval.get_args_parser(),
                  ["--arch", "vit_pico", "--dataset", "voc", "--data_path", str(tmp_path), "--input_size", "32",
                   "--n_neighbours", "5", "--num_workers", "0", "--device", "cpu", "--output_dir", str(tmp_path)])
    assert out["memory_patches"] == 6 * 2 * 4  # trainaug: 6 images, 2 passes, 2 x 2 patches each
    assert len(out["class_names"]) == 21 and os.path.isfile(tmp_path / "retrieval.json")


def test_command_line_on_an_ade20k_tree(tmp_path):
    """ADE20K's 0 ("other") is a memory class, as in the public reproduction, and is left out of the scores."""
    make_ade20k(tmp_path, train=(1, 13, 150, 13), val=(13, 150), h=32, w=32)
    memory_set = nn_retrieval.build_datasets(nn_retrieval.get_args_parser().parse_args(
        ["--dataset", "ade20k", "--data_path", str(tmp_path), "--input_size", "32"]))[1]
    _, mask = memory_set[0]  # val transform: 32 x 32, left half "other" (255), right half class 13
    labels = memory_labels(mask[None], (2, 2), 151)[0]  # 2 x 2 patches of 16 pixels
    assert labels[[0, 2], 0].tolist() == [1.0, 1.0] and labels[[1, 3], 13].tolist() == [1.0, 1.0]
    out = run_cli(nn_retrieval.main, nn_retrieval.get_args_parser(),
                  ["--arch", "vit_pico", "--dataset", "ade20k", "--data_path", str(tmp_path), "--input_size", "32",
                   "--n_neighbours", "5", "--num_workers", "0", "--device", "cpu", "--output_dir", str(tmp_path)])
    conf = torch.tensor(out["confusion"])
    assert out["memory_patches"] == 4 * 2 * 4 and out["class_names"][:2] == ["other", "wall"]
    assert conf.shape == (151, 151) and conf[0].sum() == 0  # no true "other" pixel is scored
    assert conf.sum() == 2 * 32 * 16  # only the labelled right halves of the two val images
    iou = [v or 0.0 for v in out["per_class_iou"].values()]
    assert out["miou"] == pytest.approx(sum(iou) / 151)  # the mean runs over all 151 entries, "other" included


@pytest.mark.parametrize("flags,message", [
    (["--input_size", "30"], "multiple of --patch_size"),
    (["--n_neighbours", "0"], "argument --n_neighbours: must be a whole number >= 1, got 0"),
    (["--input_size", "0"], "argument --input_size: must be a whole number >= 1, got 0"),  # was a traceback
    (["--memory_images", "-1"], "argument --memory_images: must be a whole number >= 0"),  # was a traceback
    (["--input_size", "8"], "below 16 px, the smallest synthetic scene"),  # was a traceback naming another tool's flag
    (["--temperature", "0"], "argument --temperature: must be a number > 0"),
    (["--n_neighbours", "1000"], "from a memory of"),
])
def test_bad_settings_end_in_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        run_cli(nn_retrieval.main, nn_retrieval.get_args_parser(), [*SYNTHETIC, *flags, "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(not os.environ.get("HUMMINGBIRD_REFERENCE_DIR"),
                    reason="set HUMMINGBIRD_REFERENCE_DIR to a checkout of open-hummingbird-eval (with faiss-cpu)")
def test_side_by_side_with_the_public_reproduction(tmp_path):
    pytest.importorskip("faiss")
    from bench.against_hummingbird import main as side_by_side

    out = side_by_side(["--reference_dir", os.environ["HUMMINGBIRD_REFERENCE_DIR"], "--memory_images", "20",
                        "--val_images", "6", "--batch_size", "10", "--memory_sizes", "0", "320", "--backends",
                        "faiss_flat", "--output", str(tmp_path / "side.json")])
    for row in out["rows"]:
        assert row["memory_labels_equal"] and row["memory_features_max_abs_diff"] == 0
        assert row["label_maps_equal_fraction"] == 1.0
        assert row["ours"] == row["reference"]


def test_retrieval_on_prepared_tensors_is_one_unaugmented_pass():
    torch.manual_seed(0)
    tokens = torch.randn(10, 16, 5)
    images, masks = torch.zeros(10, 3, 16, 16, dtype=torch.float16), torch.randint(0, 3, (10, 16, 16)).to(torch.uint8)
    cfg = RetrievalConfig(n_neighbours=4, augmentation_epochs=2, batch_size=6)
    model = TokenModel(tokens[:6])
    memory = build_memory(model, [(images[:6].float(), masks[:6].long())], 3, RetrievalConfig(), n_images=6)
    model.tokens = tokens[6:]
    expected = evaluate_retrieval(model, None, [(images[6:].float(), masks[6:].long())], list("abc"), cfg,
                                  memory=memory)
    calls = iter([tokens[:6], tokens[6:]])  # the memory batch, then the val batch
    model.get_intermediate_layers = lambda x, n=1: [torch.cat([torch.zeros(x.shape[0], 1, 5), next(calls)], 1)]
    out = nn_retrieval.evaluate_on_tensors(model, images[:6], masks[:6], images[6:], masks[6:], list("abc"), cfg)
    assert out["memory_patches"] == 6 * 16 and out["confusion"] == expected["confusion"]
    assert out["miou"] == expected["miou"] and out["miou_hungarian"] == expected["miou_hungarian"]


def test_constant_features_retrieve_without_nan():
    """A floor's constant feature (all similarities equal): the label transfer averages, nothing is NaN."""
    masks = torch.randint(0, 3, (5, 8, 8)).to(torch.uint8)
    out = nn_retrieval.evaluate_on_features(torch.zeros(3, 1, 2, 2), masks[:3], torch.zeros(2, 1, 2, 2), masks[3:],
                                            list("abc"), RetrievalConfig(n_neighbours=5))
    assert out["memory_patches"] == 12 and 0 <= out["miou"] <= out["miou_hungarian"] <= 1
