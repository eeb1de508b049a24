"""Tests of eval/probe_data.py: the dense probe's pool, val and dev images."""

import torch

from eval.probe_data import DEV_OFFSET, synthetic_probe_data


def test_dev_split_is_disjoint_from_val_and_pool():
    val = synthetic_probe_data(pool_images=2, val_images=2, input_size=32, eval_split="val")
    dev = synthetic_probe_data(pool_images=2, val_images=2, input_size=32, eval_split="dev")
    assert torch.equal(val.pool_images, dev.pool_images)
    assert not torch.equal(val.val_images, dev.val_images)
    assert not torch.equal(dev.val_images, dev.pool_images)
    assert dev.description["val_split"] == "train" and dev.description["val_first_index"] == DEV_OFFSET
