import numpy as np
import torch
from torch import nn

from croc_utils.optim import (
    LARS,
    cancel_gradients_last_layer,
    clip_gradients,
    cosine_scheduler,
    ema_update,
    get_params_groups,
)
from models import CrOCHead


def test_cosine_schedule_warmup_and_ends():
    s = cosine_scheduler(1.0, 0.1, epochs=4, niter_per_ep=5, warmup_epochs=1)
    assert len(s) == 20
    np.testing.assert_allclose(s[:5], np.linspace(0, 1, 5))
    assert s[5] == 1.0 and abs(s[-1] - (0.1 + 0.45 * (1 + np.cos(np.pi * 14 / 15)))) < 1e-12
    assert np.all(np.diff(s[5:]) <= 0)


def test_param_groups_follow_dino():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
    decayed, free = get_params_groups(model)
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model.pos_embed)}
    assert len(free["params"]) == 3 and free["weight_decay"] == 0.0
    head = CrOCHead(8, 16, 8)  # frozen weight-norm gains are not optimised
    names = {id(p): n for n, p in head.named_parameters()}
    assert not any("original0" in names[id(p)] for g in get_params_groups(head) for p in g["params"])


def test_clip_gradients_is_per_parameter():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])  # norms 5 and 0.5
    model = nn.Module()
    model.a, model.b = a, b
    clip_gradients(model, 1.0)
    torch.testing.assert_close(a.grad.norm(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))  # untouched: below the threshold


def test_frozen_last_layers_and_ema():
    head = CrOCHead(8, 16, 8, norm_last_layer=False)
    head(torch.randn(4, 8)).sum().backward()
    head(torch.randn(4, 8), cluster=True).sum().backward()
    cancel_gradients_last_layer(0, head, 1)
    assert all(p.grad is None for n, p in head.named_parameters() if "last_layer" in n)
    assert head.mlp[0].weight.grad is not None
    teacher, student = nn.Linear(3, 3), nn.Linear(3, 3)
    t0 = teacher.weight.detach().clone()
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight, 0.9 * t0 + 0.1 * student.weight.detach())


def test_lars_step_moves_against_gradient():
    w = nn.Parameter(torch.ones(2, 2))
    opt = LARS([{"params": [w]}], lr=0.1, weight_decay=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    assert torch.all(w < 1)
