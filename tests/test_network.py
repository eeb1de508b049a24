"""models/network.py: the DDP wrap of the student keeps the released buffer behaviour without torch's deprecation."""

import inspect
import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn

from models import network


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def small_student() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def test_the_wrap_prints_no_warning_and_does_not_sync_buffers_in_forward(one_process_group):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ddp = network.wrap_ddp(small_student(), torch.device("cpu"))
    assert not [w for w in caught if "buffers" in str(w.message)], [str(w.message) for w in caught]
    syncs = getattr(ddp, "forward_sync_buffers", None)
    assert (syncs if syncs is not None else ddp.broadcast_buffers) is False
    ddp(torch.randn(3, 4)).sum().backward()  # it trains


def test_older_torch_without_forward_sync_buffers_gets_broadcast_buffers(monkeypatch):
    """Before torch 2.13 DDP has no forward_sync_buffers: the released broadcast_buffers=False is passed."""
    received = {}

    class OlderDDP(nn.Module):
        def __init__(self, module, device_ids=None, broadcast_buffers=True, find_unused_parameters=False):
            super().__init__()
            received.update(device_ids=device_ids, broadcast_buffers=broadcast_buffers)

    assert "forward_sync_buffers" not in inspect.signature(OlderDDP).parameters
    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", OlderDDP)
    network.wrap_ddp(small_student(), torch.device("cpu"))
    assert received == {"device_ids": None, "broadcast_buffers": False}
