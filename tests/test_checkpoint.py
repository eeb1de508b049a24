"""Tests of croc_utils/checkpoint.py: the released layout both ways, safe loads (hostile, damaged and foreign files
told apart), loading into networks, resume (a changed optimizer, the position in images) and saved args."""

import argparse
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from croc_utils.atomic_io import save_checkpoint
from croc_utils.checkpoint import (
    CheckpointError,
    backbone_state_dict,
    load_checkpoint,
    network_state,
    restart_from_checkpoint,
    resume_position,
    saved_args,
)
from croc_utils.optim import build_optimizer, get_params_groups
from models import CrOCHead, CrOCNetwork, vit_small, vit_tiny
from models.pretrained import load_backbone_state

OUT_DIM, OUT_DIM_C, DEPTH = 64, 32, 2


def load_for_eval(model, path, checkpoint_key="teacher"):
    """What the evaluators do with a weights file: read it, take its backbone, load that into ``model``."""
    state = backbone_state_dict(load_checkpoint(path), checkpoint_key, path)
    return load_backbone_state(model, state, path, checkpoint_key)


def make_network(seed=0, arch=vit_tiny):
    torch.manual_seed(seed)
    backbone = arch(depth=DEPTH)
    return CrOCNetwork(backbone, CrOCHead(backbone.embed_dim, OUT_DIM, OUT_DIM_C)).eval()


def released_state(D, depth, generator):
    """The key list of docs/algorithm.md section 8, built by hand with random tensors (old weight-norm names)."""
    r = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    sd = {"backbone.cls_token": r(1, 1, D), "backbone.pos_embed": r(1, 197, D),
          "backbone.patch_embed.proj.weight": r(D, 3, 16, 16), "backbone.patch_embed.proj.bias": r(D),
          "backbone.norm.weight": r(D), "backbone.norm.bias": r(D)}
    for i in range(depth):
        b = f"backbone.blocks.{i}."
        sd.update({b + "norm1.weight": r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
                   b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
                   b + "norm2.weight": r(D), b + "norm2.bias": r(D), b + "mlp.fc1.weight": r(4 * D, D),
                   b + "mlp.fc1.bias": r(4 * D), b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D)})
    sd.update({"head.mlp.0.weight": r(2048, D), "head.mlp.0.bias": r(2048), "head.mlp.2.weight": r(2048, 2048),
               "head.mlp.2.bias": r(2048), "head.mlp.4.weight": r(256, 2048), "head.mlp.4.bias": r(256),
               "head.last_layer.weight_g": torch.ones(OUT_DIM, 1), "head.last_layer.weight_v": r(OUT_DIM, 256),
               "head.last_layer_c.weight_g": torch.ones(OUT_DIM_C, 1),
               "head.last_layer_c.weight_v": r(OUT_DIM_C, 256)})
    return sd


def released_checkpoint(seed=0):
    g = torch.Generator().manual_seed(seed)
    teacher = released_state(192, DEPTH, g)
    student = {"module." + k: v + 0.01 for k, v in teacher.items()}
    return {"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": []}, "epoch": 7,
            "args": argparse.Namespace(arch="vit_tiny", out_dim=OUT_DIM),
            "croc_loss": {"center": torch.zeros(1, OUT_DIM), "center_c": torch.zeros(1, OUT_DIM_C)}}


def forward(net, x):
    with torch.no_grad():
        out = net([x])
    return out.cls_logits, out.backbone.keys


def test_released_layout_loads_and_matches(tmp_path):
    path = str(tmp_path / "released.pth")
    ckpt = released_checkpoint()
    torch.save(ckpt, path)
    teacher, student = make_network(1), make_network(2)
    run = {"epoch": 0}
    assert restart_from_checkpoint(path, run, teacher=teacher, student=student)
    assert run["epoch"] == 7
    # Every released tensor landed in the parameter of the same name (old weight-norm names -> parametrizations).
    own = teacher.state_dict()
    for key, value in ckpt["teacher"].items():
        key = key.replace(".weight_g", ".parametrizations.weight.original0")
        key = key.replace(".weight_v", ".parametrizations.weight.original1")
        torch.testing.assert_close(own[key], value)
    torch.testing.assert_close(student.backbone.norm.weight, ckpt["student"]["module.backbone.norm.weight"])
    # A backbone-only load for evaluation gives the same keys as the full load.
    eval_model = vit_tiny(depth=DEPTH).eval()
    msg = load_for_eval(eval_model, path)
    n = len(eval_model.state_dict())
    assert f"{n}/{n} tensors" in msg
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(eval_model(x).keys, teacher.backbone(x).keys)


def test_our_checkpoint_uses_released_names_and_reloads(tmp_path):
    path = str(tmp_path / "ours.pth")
    net = make_network(3)
    save_checkpoint({"student": network_state(net, ddp_prefix=True), "teacher": network_state(net, False),
                     "epoch": 1, "args": argparse.Namespace(a=1)}, path)
    ckpt = load_checkpoint(path)
    assert "module.head.last_layer.weight_g" in ckpt["student"]
    assert "head.last_layer_c.weight_v" in ckpt["teacher"]
    assert not any("parametrizations" in k for k in ckpt["teacher"])
    assert isinstance(ckpt["args"], argparse.Namespace)
    other = make_network(4)
    restart_from_checkpoint(path, teacher=other)
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(forward(net, x), forward(other, x)):
        torch.testing.assert_close(a, b)


def test_new_weight_norm_spelling_loads(tmp_path):
    path = str(tmp_path / "new.pth")
    net = make_network(5)
    torch.save({"teacher": net.state_dict()}, path)  # parametrizations.* spelling
    other = make_network(6)
    restart_from_checkpoint(path, teacher=other)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(forward(net, x)[0], forward(other, x)[0])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_hostile_pickle_is_refused(tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"teacher": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


def test_truncated_and_foreign_files(tmp_path):
    good = str(tmp_path / "good.pth")
    save_checkpoint({"teacher": make_network().state_dict()}, good)
    data = open(good, "rb").read()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(str(bad))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_checkpoint(str(text))
    tensor_file = str(tmp_path / "tensor.pth")
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tensor_file)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(str(tmp_path / "missing.pth"))


def test_other_architecture_is_a_clear_error(tmp_path):
    path = str(tmp_path / "small.pth")
    torch.save({"teacher": {"backbone." + k: v for k, v in vit_small(depth=DEPTH).state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_for_eval(vit_tiny(depth=DEPTH), path)
    with pytest.raises(CheckpointError, match="another architecture"):
        restart_from_checkpoint(path, teacher=make_network())


def test_bare_backbone_and_missing_key(tmp_path):
    path = str(tmp_path / "bare.pth")
    src = vit_tiny(depth=DEPTH)
    torch.save(src.state_dict(), path)
    dst = vit_tiny(depth=DEPTH)
    load_for_eval(dst, path)
    torch.testing.assert_close(dst.pos_embed, src.pos_embed)
    with pytest.raises(CheckpointError, match="checkpoint_key"):
        torch.save({"student": {}, "epoch": 1}, path)
        load_for_eval(dst, path, checkpoint_key="teacher")


# ===== files that are not checkpoints at all, told apart from hostile ones =====
def write_foreign_files(folder) -> dict:
    """name -> what ``load_checkpoint`` must call it."""
    (folder / "args.json").write_text(json.dumps({"lr": 0.1, "epochs": 3}))
    (folder / "notes.txt").write_text("lr 0.1, 3 epochs\n")
    (folder / "empty.pth").write_bytes(b"")
    with zipfile.ZipFile(folder / "other.zip", "w") as archive:
        archive.writestr("weights/readme.txt", "hello")
    np.save(folder / "array.npy", np.zeros(3))
    (folder / "plain.pkl").write_bytes(pickle.dumps({"teacher": [1, 2]}, protocol=4))
    (folder / "random.bin").write_bytes(bytes(range(256)) * 4)
    return {"args.json": "JSON text", "notes.txt": "text", "empty.pth": "an empty file",
            "other.zip": "a zip archive of other files, e.g. weights/readme.txt", "array.npy": "a NumPy .npy file",
            "plain.pkl": "a pickle that torch.save did not write", "random.bin": "binary data of another format"}


def test_files_that_are_not_checkpoints_are_called_so(tmp_path):
    for name, what in write_foreign_files(tmp_path).items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(str(tmp_path / name))
        assert str(err.value) == f"{tmp_path / name}: not a PyTorch checkpoint ({what})"


@pytest.mark.parametrize("zip_format", [True, False])
def test_hostile_pickles_of_both_formats_keep_the_refusal_naming_the_global(tmp_path, zip_format):
    path = str(tmp_path / "evil.pth")
    torch.save({"teacher": {}, "payload": Evil()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match=r"evil.pth: refused to load, it holds objects that are not tensors or "
                                              r"plain data \((posix|os|nt)\.system\)$"):
        load_checkpoint(path)


# ===== a changed --optimizer on resume =====
def optimizer_checkpoint(tmp_path, name: str, saved_args: bool = True) -> tuple[str, nn.Module]:
    """A checkpoint of a tiny model after one step of optimizer ``name``; its args name it unless not saved_args."""
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    optimizer = build_optimizer(name, get_params_groups(model))
    optimizer.param_groups[0]["lr"] = 0.1
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    path = str(tmp_path / f"{name}.pth")
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}
    if saved_args:
        state["args"] = argparse.Namespace(optimizer=name)
    save_checkpoint(state, path)
    return path, model


def step(model, optimizer):
    optimizer.zero_grad()
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()


@pytest.mark.parametrize("new", ["sgd", "lars"])
def test_a_changed_optimizer_starts_fresh_with_a_notice(tmp_path, capsys, new):
    path, model = optimizer_checkpoint(tmp_path, "adamw")
    optimizer = build_optimizer(new, get_params_groups(model))
    run_variables = {"epoch": 0}
    assert restart_from_checkpoint(path, run_variables, model=model, optimizer=optimizer)
    assert run_variables["epoch"] == 3  # the rest resumes
    notice = capsys.readouterr().out.strip()
    assert notice == (f"Notice: {path} was trained with --optimizer adamw; --optimizer {new} starts from a fresh "
                      f"optimizer state (the networks, loss centres and epoch resume).")
    assert not optimizer.state and "betas" not in optimizer.param_groups[0]
    step(model, optimizer)  # no KeyError ('momentum', 'eta') at the first step


def test_the_same_optimizer_resumes_its_state(tmp_path):
    path, model = optimizer_checkpoint(tmp_path, "sgd")
    optimizer = build_optimizer("sgd", get_params_groups(model))
    restart_from_checkpoint(path, model=model, optimizer=optimizer)
    saved = load_checkpoint(path)["optimizer"]["state"][0]["momentum_buffer"]
    torch.testing.assert_close(optimizer.state[model[0].weight]["momentum_buffer"], saved, rtol=0, atol=0)


@pytest.mark.parametrize("saved_args", [False, True])
def test_an_optimizer_state_that_does_not_fit_is_refused_in_one_line(tmp_path, saved_args):
    path, model = optimizer_checkpoint(tmp_path, "adamw", saved_args=saved_args)
    if saved_args:  # args that claim sgd over an adamw state
        ckpt = load_checkpoint(path)
        ckpt["args"].optimizer = "sgd"
        save_checkpoint(ckpt, path)
    optimizer = build_optimizer("sgd", get_params_groups(model))
    with pytest.raises(CheckpointError) as err:
        restart_from_checkpoint(path, model=model, optimizer=optimizer)
    assert str(err.value) == (f"{path}: its optimizer state does not fit --optimizer sgd: the parameter groups lack "
                              "dampening, momentum (the state of another optimizer?)")  # SGD defaults the others


def test_saved_args_of_an_older_run_get_todays_defaults(tmp_path, capsys):
    path, model = optimizer_checkpoint(tmp_path, "adamw")
    ckpt = load_checkpoint(path)
    ckpt["args"] = argparse.Namespace(arch="vit_tiny")  # an older run: no --optimizer (it was always AdamW) ...
    save_checkpoint(ckpt, path)
    saved = saved_args(load_checkpoint(path))
    assert (saved.arch, saved.optimizer, saved.head_hidden_dim) == ("vit_tiny", "adamw", 2048)
    assert saved_args({"epoch": 1}) is None
    optimizer = build_optimizer("sgd", get_params_groups(model))  # ... so a resume with SGD starts it fresh
    assert restart_from_checkpoint(path, model=model, optimizer=optimizer)
    assert "was trained with --optimizer adamw" in capsys.readouterr().out and not optimizer.state


# ===== the position in an epoch, counted in images =====
def position(capsys, variables, **kwargs):
    out = resume_position(variables, **kwargs)
    return out, capsys.readouterr().out.strip()


def test_resume_position_counts_images_not_batches(capsys):
    saved = {"epoch": 1, "iteration": 3, "images_seen": 6, "args": argparse.Namespace()}
    assert position(capsys, saved, images_per_step=2, steps_per_epoch=4) == ((1, 3), "")  # same batch: silent
    (where, notice) = position(capsys, saved, images_per_step=4, steps_per_epoch=2)
    assert where == (1, 1) and notice == ("Notice: epoch 1 had already seen 6 images: at 4 images per iteration it "
                                          "resumes at iteration 1 of 2 (the checkpoint counted 3).")
    (where, notice) = position(capsys, saved, images_per_step=3, steps_per_epoch=2)  # 6 images fill the epoch
    assert where == (2, 0) and notice == ("Notice: epoch 1 had already seen 6 images, a whole epoch at 3 images per "
                                          "iteration (2 iterations): going on with epoch 2.")
    assert position(capsys, {"epoch": 0, "iteration": 0, "images_seen": None, "args": None},
                    images_per_step=8, steps_per_epoch=5) == ((0, 0), "")  # a fresh start


def test_a_checkpoint_without_images_seen_counts_with_its_own_batch_size():
    older = {"epoch": 1, "iteration": 3, "args": argparse.Namespace(batch_size_per_gpu=4, world_size=2)}
    assert resume_position(older, images_per_step=12, steps_per_epoch=10) == (1, 2)  # 3 * 8 = 24 images
    assert resume_position({"epoch": 1, "iteration": 3, "args": None}, images_per_step=5, steps_per_epoch=10) == (1, 3)
