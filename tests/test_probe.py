"""Tests of eval/probe.py: patch targets, the soft-label loss, L-BFGS convergence, honest weight-decay choice and
the whole backbone evaluation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.probe import (
    LinearProbe,
    ProbeConfig,
    evaluate_backbone,
    fit_linear_probe,
    patch_class_fractions,
    predict_masks,
    run_linear_probe,
    soft_cross_entropy,
)
from eval.probe_data import ProbeData
from models.pretrained import load_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def test_patch_class_fractions_by_hand():
    # one 4x4 mask, 2x2 grid of 2x2 patches; 255 = ignore
    mask = torch.tensor([[[0, 0, 1, 2],
                          [0, 1, 2, 2],
                          [255, 255, 3, 3],
                          [255, 1, 3, 0]]], dtype=torch.uint8)
    fractions, counts = patch_class_fractions(mask, (2, 2), 4)
    expected = torch.tensor([[3 / 4, 1 / 4, 0, 0],    # top-left: 0 0 0 1
                             [0, 1 / 4, 3 / 4, 0],    # top-right: 1 2 2 2
                             [0, 1, 0, 0],            # bottom-left: only one labelled pixel, class 1
                             [1 / 4, 0, 0, 3 / 4]])   # bottom-right: 3 3 3 0
    assert torch.allclose(fractions, expected)
    assert counts.tolist() == [4, 4, 1, 4]


def test_soft_label_loss_equals_pixel_cross_entropy():
    """Patch logits copied to their pixels: the mean pixel CE equals the pixel-weighted soft-label CE."""
    torch.manual_seed(0)
    masks = torch.randint(0, 3, (2, 8, 8), dtype=torch.uint8)
    masks[0, :3, :3] = 255
    logits = torch.randn(2, 3, 2, 2)  # (N, C, h, w), patches of 4x4 pixels
    fractions, counts = patch_class_fractions(masks, (2, 2), 3)
    ours = soft_cross_entropy(logits.permute(0, 2, 3, 1).reshape(-1, 3), fractions, counts)
    pixel_logits = logits.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # nearest upsampling
    reference = F.cross_entropy(pixel_logits, masks.long(), ignore_index=255)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_lbfgs_converges_to_the_optimum():
    """On separable data the fitted probe is exact and its gradient vanishes; the strong-decay fit shrinks W."""
    torch.manual_seed(0)
    centres = torch.randn(3, 5) * 4
    labels = torch.randint(0, 3, (300,))
    x = centres[labels] + 0.3 * torch.randn(300, 5)
    targets = F.one_hot(labels, 3).float()
    weights = torch.ones(300)
    probe = fit_linear_probe(x, targets, weights, weight_decay=1e-4, max_iter=500)
    assert probe.grad_norm < 1e-4
    logits = probe.logits(x.T.reshape(1, 5, 300, 1))[0, :, :, 0].T  # (300, 3)
    assert torch.equal(logits.argmax(1), labels)
    strong = fit_linear_probe(x, targets, weights, weight_decay=10.0, max_iter=500)
    assert strong.weight.norm() < probe.weight.norm()


def test_predictions_upsample_logits_bilinearly():
    probe = LinearProbe(weight=torch.tensor([[1.0], [-1.0]]), bias=torch.zeros(2), mean=torch.zeros(1),
                        std=torch.ones(1))
    feats = torch.tensor([[[[1.0, -1.0]]]])  # (1, 1, 1, 2): left patch class 0, right patch class 1
    pred = predict_masks(probe, feats, (2, 8))
    assert pred[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # the boundary falls halfway


def _toy_data(n_pool=24, n_val=10, size=32, grid=4, seed=0):
    """Feature maps that carry the mask: each patch's feature is a noisy code of its majority class."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, 3, (n_pool + n_val, grid, grid), generator=g)
    codes = torch.randn(3, 6, generator=g) * 3
    feats = codes[masks].permute(0, 3, 1, 2) + 0.5 * torch.randn(n_pool + n_val, 6, grid, grid, generator=g)
    pixel_masks = masks.repeat_interleave(size // grid, 1).repeat_interleave(size // grid, 2).to(torch.uint8)
    return feats[:n_pool], pixel_masks[:n_pool], feats[n_pool:], pixel_masks[n_pool:]


def test_weight_decay_is_chosen_without_looking_at_val():
    pool_f, pool_m, val_f, val_m = _toy_data()
    cfg = ProbeConfig(n_train=20, weight_decays=(1.0, 1e-2, 1e-4), max_iter=100)
    names = ("a", "b", "c")
    a = run_linear_probe(pool_f, pool_m, val_f, val_m, names, seed=3, cfg=cfg)
    b = run_linear_probe(pool_f, pool_m, val_f, 2 - val_m, names, seed=3, cfg=cfg)  # val labels scrambled
    assert a["weight_decay"] == b["weight_decay"] and a["weight_decay_path"] == b["weight_decay_path"]
    assert a["miou"] > 0.7 and b["miou"] < 0.5
    c = run_linear_probe(pool_f, pool_m, val_f, val_m, names, seed=4, cfg=cfg)
    assert c["weight_decay_path"] != a["weight_decay_path"]  # another seed draws other train images


def test_one_weight_decay_is_used_without_a_held_out_fit():
    pool_f, pool_m, val_f, val_m = _toy_data()
    names = ("a", "b", "c")
    one = run_linear_probe(pool_f, pool_m, val_f, val_m, names, seed=3,
                           cfg=ProbeConfig(n_train=20, weight_decays=(1e-2,), max_iter=100))
    assert one["weight_decay"] == 1e-2 and one["weight_decay_path"] == [] and one["miou"] > 0.7
    chosen = run_linear_probe(pool_f, pool_m, val_f, val_m, names, seed=3,
                              cfg=ProbeConfig(n_train=20, weight_decays=(1e-2, 1e3), max_iter=100))
    assert chosen["weight_decay"] == 1e-2 and len(chosen["weight_decay_path"]) == 2
    assert abs(chosen["miou"] - one["miou"]) < 1e-6  # the same final fit: all train images, the same decay


def test_evaluate_backbone_tiny_vit():
    torch.manual_seed(0)
    model = load_backbone("vit_tiny", 16, verbose=False)
    g = torch.Generator().manual_seed(0)
    data = ProbeData(torch.randn(12, 3, 32, 32, generator=g).half(), torch.randint(0, 3, (12, 32, 32), generator=g,
                                                                                   dtype=torch.uint8),
                     torch.randn(6, 3, 32, 32, generator=g).half(), torch.randint(0, 3, (6, 32, 32), generator=g,
                                                                                  dtype=torch.uint8),
                     ("a", "b", "c"))
    cfg = ProbeConfig(n_train=8, seeds=(0, 1, 2), max_iter=20, n_clusters=(0, 5), pca_dim=8, kmeans_iter=10,
                      kmeans_restarts=1)
    out = evaluate_backbone(model, data, cfg, verbose=False)
    assert set(out["kmeans"]) == {"3", "5"}
    for r in (out["linear"], *out["kmeans"].values()):
        assert len(r["mious"]) == 3 and np.isfinite(r["miou_mean"]) and np.isfinite(r["miou_std"])
        assert 0 <= r["miou_mean"] <= 100
        assert r["miou_std"] == pytest.approx(np.std(r["mious"], ddof=1))
    assert out["feature_shape"] == [192, 2, 2]
