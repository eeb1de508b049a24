"""eval/linear_segmentation.py: the linear head on the token grid."""

import torch

from eval.linear_segmentation import head_logits


def test_head_commutes_with_bilinear_resizing():
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Conv2d(6, 3, 1)
    feats = torch.randn(2, 6, 4, 4, generator=g)
    via_grid = head_logits(head, feats, 100)
    upsampled_first = head(torch.nn.functional.interpolate(feats, size=(100, 100), mode="bilinear"))
    torch.testing.assert_close(via_grid, upsampled_first, atol=1e-5, rtol=1e-5)
