"""eval/kmeans.py: standardise + PCA against numpy's SVD, K-means on known blobs and degenerate data."""

import numpy as np
import pytest
import torch

from eval.kmeans import kmeans, standardize_pca
from eval.metrics import cluster_class_counts, hungarian_match


def test_standardize_pca_matches_numpy_svd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g) @ torch.randn(6, 6, generator=g) * 3 + 5
    ours = standardize_pca(x.half(), 3).numpy()  # float16 storage, as the CPU cache holds features
    xs = x.half().double().numpy()
    z = (xs - xs.mean(0)) / xs.std(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    ref = z @ vt[:3].T
    signs = np.sign((ours * ref).sum(0))  # principal axes are defined up to sign
    np.testing.assert_allclose(ours, ref * signs, atol=1e-3, rtol=1e-3)


def test_kmeans_separates_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(50)
    x = centres[truth] + torch.randn(150, 2, generator=g)
    labels = kmeans(x, 3, n_iter=50, n_restarts=2, seed=0)
    mapping = hungarian_match(cluster_class_counts(labels, truth, 3, 3))
    assert torch.equal(mapping[labels], truth)


def test_kmeans_keeps_k_clusters_and_rejects_too_many():
    x = torch.tensor([[0.0], [0.0], [0.0], [1.0]])
    labels = kmeans(x, 2, n_iter=10, n_restarts=1, seed=0)
    assert labels[3] != labels[0]
    with pytest.raises(ValueError, match="clusters"):
        kmeans(x, 5)
