"""Tests of models/network.py: the student and teacher of a run's flags; the DDP wrap of the student keeps the released
buffer behaviour without torch's deprecation."""

import inspect
import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn

from croc_utils.parser import parse_args
from models import network
from models.network import build_networks

FLAGS = ["--arch", "vit_pico", "--patch_size", "8", "--out_dim", "32", "--out_dim_c", "16", "--head_hidden_dim", "24",
         "--head_bottleneck_dim", "8", "--drop_path_rate", "0.2", "--which_features", "q"]


def networks(*extra):
    args = parse_args(FLAGS + list(extra))
    args.distributed = False
    torch.manual_seed(0)
    return build_networks(args, torch.device("cpu"))


def test_student_and_teacher_start_equal_and_only_the_student_learns():
    student, teacher = networks()
    assert student.state_dict().keys() == teacher.state_dict().keys()
    for key, value in student.state_dict().items():
        assert torch.equal(value, teacher.state_dict()[key]), key
    frozen = {name for name, p in student.named_parameters() if not p.requires_grad}
    # the gains of both output layers are fixed by --norm_last_layer
    assert frozen == {f"head.{layer}.parametrizations.weight.original0" for layer in ("last_layer", "last_layer_c")}
    assert not any(p.requires_grad for p in teacher.parameters())
    # stochastic depth in the student only
    assert student.backbone.blocks[-1].drop_path1.drop_prob > 0
    assert not hasattr(teacher.backbone.blocks[-1].drop_path1, "drop_prob")


def test_the_flags_shape_the_networks():
    student, teacher = networks()
    for net in (student, teacher):
        assert (net.backbone.embed_dim, net.backbone.patch_size, net.backbone.which_features) == (128, 8, "q")
        assert net.head.mlp[0].out_features == 24 and net.head.last_layer.in_features == 8
        assert net.head.last_layer.out_features == 32 and net.head.last_layer_c.out_features == 16


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
