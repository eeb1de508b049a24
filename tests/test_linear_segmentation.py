"""eval/linear_segmentation.py: the linear head on the token grid."""

import pytest
import torch

from croc_utils.cli import UsageError
from eval.linear_segmentation import head_logits, train_one_epoch


def test_head_commutes_with_bilinear_resizing():
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Conv2d(6, 3, 1)
    feats = torch.randn(2, 6, 4, 4, generator=g)
    via_grid = head_logits(head, feats, 100)
    upsampled_first = head(torch.nn.functional.interpolate(feats, size=(100, 100), mode="bilinear"))
    torch.testing.assert_close(via_grid, upsampled_first, atol=1e-5, rtol=1e-5)


def test_a_diverged_probe_stops_with_the_flag_to_change():
    head = torch.nn.Conv2d(6, 3, 1)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    batches = [(torch.full((2, 6, 2, 2), float("nan")), torch.zeros(2, 8, 8, dtype=torch.long))]
    with pytest.raises(UsageError, match="lower --lr"):
        train_one_epoch(head, batches, optimizer, 8, None)
