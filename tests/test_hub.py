"""hubconf.py / models.hub: released-layout files built here, loaded through torch.hub (no network)."""

import argparse
import os
import shutil
import urllib.error

import pytest
import torch

import models
from croc_utils.checkpoint import CheckpointError, from_released_names
from models import croc_vit, croc_vits16, croc_vits16_full
from models.hub import RELEASED_WEIGHTS
from tests.test_checkpoint import OUT_DIM, OUT_DIM_C, released_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def released_file(path, depth=12, seed=0, D=384):
    """A full checkpoint in the released layout (spec section 8): ViT-S/16 names and shapes, old weight-norm names,
    ``module.`` on the student, args Namespace, croc_loss; the head is small (64 / 32 outputs) to stay light."""
    teacher = released_state(D, depth, torch.Generator().manual_seed(seed))
    ckpt = {"student": {"module." + k: v + 1.0 for k, v in teacher.items()}, "teacher": teacher,
            "optimizer": {"state": {}, "param_groups": []}, "epoch": 300,
            "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=OUT_DIM, out_dim_c=OUT_DIM_C),
            "croc_loss": {"center": torch.zeros(1, OUT_DIM), "center_c": torch.zeros(1, OUT_DIM_C)}}
    torch.save(ckpt, path)
    return ckpt


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A 2-block ViT-S/16 file in the released layout, shared by the tests (building one is the slow part)."""
    path = str(tmp_path_factory.mktemp("hub") / "croc_small.pth")
    return path, released_file(path, depth=2)


def backbone_of(network_state, prefix=""):
    return {k[len(prefix + "backbone."):]: v for k, v in network_state.items() if k.startswith(prefix + "backbone.")}


def assert_same_state(model_state, expected):
    assert sorted(model_state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(model_state[key], value), key


def test_hub_load_local_gives_the_teacher_backbone_of_a_released_file(small_file):
    path, ckpt = small_file
    # depth=2 reaches vit_small through the hub's kwargs: the released names and shapes with 2 of the 12 blocks
    model = torch.hub.load(ROOT, "croc_vits16", source="local", weights=path, depth=2)
    assert isinstance(model, models.CrOCViT) and not model.training
    assert (model.embed_dim, model.num_heads, model.patch_size, len(model.blocks)) == (384, 6, 16, 2)
    assert_same_state(model.state_dict(), backbone_of(ckpt["teacher"]))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 48))
    assert tuple(out.cls.shape) == (1, 384) and tuple(out.keys.shape) == (1, 6, 1 + 2 * 3, 64)


def test_student_and_full_network_with_its_head_sizes(small_file):
    path, ckpt = small_file
    student = croc_vits16(weights=path, checkpoint_key="student", depth=2)
    assert_same_state(student.state_dict(), backbone_of(ckpt["student"], "module."))
    net = croc_vits16_full(weights=path, depth=2)
    assert isinstance(net, models.CrOCNetwork) and not net.training
    assert net.head.last_layer.weight.shape == (OUT_DIM, 256) and net.head.last_layer_c.weight.shape == (OUT_DIM_C, 256)
    assert_same_state(net.state_dict(), from_released_names(ckpt["teacher"]))
    random_net = croc_vits16_full(pretrained=False, depth=1)
    assert random_net.head.last_layer.weight.shape == (65536, 256)
    assert random_net.head.last_layer_c.weight.shape == (8192, 256)


def test_a_name_downloads_once_into_the_hub_cache(tmp_path, monkeypatch, small_file):
    source, ckpt = small_file
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append((url, dst))
        shutil.copy(source, dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    cached = str(tmp_path / "hub" / "checkpoints" / "croc_vits16_in1k_full.pth")
    model = croc_vits16(weights="in1k", depth=2)
    assert calls == [(RELEASED_WEIGHTS["in1k"][0], cached)]
    assert_same_state(model.state_dict(), backbone_of(ckpt["teacher"]))
    torch.hub.load(ROOT, "croc_vits16", source="local", weights="in1k", depth=2)  # cached: no second download
    torch.hub.load(ROOT, "croc_vits16_full", source="local", weights="coco+", depth=2)
    assert [dst for _, dst in calls] == [cached, str(tmp_path / "hub" / "checkpoints" /
                                                    "croc_vits16_coco_plus_full.pth")]
    assert {url for url, _ in RELEASED_WEIGHTS.values()} == {
        "https://rdr.kuleuven.be/api/access/datafile/31383", "https://rdr.kuleuven.be/api/access/datafile/31400",
        "https://rdr.kuleuven.be/api/access/datafile/28925"}  # README's released-checkpoints table

    with open(cached, "r+b") as f:  # a damaged download is named, with the way out
        f.truncate(1000)
    with pytest.raises(CheckpointError, match="truncated.*delete it to download it again"):
        croc_vits16(weights="in1k", depth=2)


def test_pretrained_false_needs_no_file(monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    model = croc_vits16(pretrained=False, depth=1)
    assert not model.training and model.embed_dim == 384


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_bad_names_paths_and_files_are_one_line(tmp_path, small_file):
    with pytest.raises(ValueError, match=r"weights='cocoo': neither a released name \(coco, coco\+, in1k\) nor"):
        croc_vits16(weights="cocoo")
    with pytest.raises(ValueError, match="nor an existing file"):
        croc_vits16(weights=str(tmp_path / "missing.pth"))
    evil = str(tmp_path / "evil.pth")
    torch.save({"teacher": {}, "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        croc_vits16(weights=evil, depth=1)
    bare = str(tmp_path / "bare.pth")
    backbone = backbone_of(small_file[1]["teacher"])
    torch.save(dict(backbone, **{"patch_embed.proj.weight": torch.zeros(384, 3, 8, 8)}), bare)  # a ViT-S/8's
    with pytest.raises(CheckpointError, match="another architecture: patch_embed.proj.weight is"):
        croc_vits16(weights=bare, depth=2)
    torch.save(backbone, bare)
    croc_vits16(weights=bare, depth=2)  # a bare backbone state dict is fine for the backbone
    with pytest.raises(CheckpointError, match="needs a full checkpoint"):
        croc_vits16_full(weights=bare, depth=2)
    torch.save({k: v for k, v in backbone.items() if not k.startswith("norm.")}, bare)
    with pytest.raises(CheckpointError, match=r"holds \d+ of the \d+ tensors of the backbone .*lacks e.g. \['norm"):
        croc_vits16(weights=bare, depth=2)


def test_croc_vit_builds_the_saved_architecture_of_any_checkpoint(tmp_path):
    """A vit_pico/8 run's checkpoint (our layout: network_state, args Namespace) through the generic hub entry."""
    from croc_utils.checkpoint import network_state
    from models import CrOCHead, CrOCNetwork, build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("vit_pico", patch_size=8)
    teacher = CrOCNetwork(backbone, CrOCHead(backbone.embed_dim, 16, 8))
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": network_state(teacher, ddp_prefix=False),
                "args": argparse.Namespace(arch="vit_pico", patch_size=8)}, path)
    model = torch.hub.load(ROOT, "croc_vit", source="local", weights=str(path))
    assert (model.embed_dim, model.num_heads, model.patch_size, len(model.blocks)) == (128, 2, 8, 4)
    assert_same_state(model.state_dict(), backbone.state_dict())
    bare = tmp_path / "bare.pth"
    torch.save(backbone.state_dict(), bare)
    with pytest.raises(CheckpointError, match="pass arch= and patch_size="):
        models.croc_vit(str(bare))
    assert_same_state(models.croc_vit(str(bare), arch="vit_pico", patch_size=8).state_dict(), backbone.state_dict())
    with pytest.raises(CheckpointError, match="cannot build arch='vit_huge'"):
        models.croc_vit(str(bare), arch="vit_huge", patch_size=8)


# ===== bad input: one clear exception naming the argument or file =====


def test_a_download_without_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, progress=True):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConnectionError, match=r"cannot download the released CrOC in1k checkpoint from https://"):
        croc_vits16(weights="in1k")
    assert not os.listdir(tmp_path / "hub" / "checkpoints")  # nothing half-written left in the cache


def test_croc_vits16_refuses_another_patch_size(small_file):
    path, _ = small_file
    with pytest.raises(ValueError, match="croc_vits16 is the ViT-S/16.*croc_vit"):
        croc_vits16(weights=path, depth=2, patch_size=8)


def test_croc_vit_takes_a_file_of_another_grid_as_the_evaluators_do(tmp_path):
    trained = models.build_backbone("vit_pico", patch_size=8, img_size=64)  # trained on 64 px crops: 8x8 grid
    path = tmp_path / "grid64.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in trained.state_dict().items()},
                "args": argparse.Namespace(arch="vit_pico", patch_size=8)}, path)
    model = croc_vit(weights=str(path))
    assert_same_state(model.state_dict(), trained.state_dict())
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 96, 96)).tokens.shape == (1, 1 + 12 * 12, 128)


def test_a_file_filling_part_of_the_backbone_is_refused(tmp_path):
    state = models.build_backbone("vit_pico", patch_size=8).state_dict()
    path = tmp_path / "one_tensor.pth"
    torch.save({"teacher": {"backbone.cls_token": state["cls_token"]}}, path)
    with pytest.raises(CheckpointError, match=r"one_tensor.pth: holds 1 of the 54 tensors"):
        croc_vit(weights=str(path), arch="vit_pico", patch_size=8)
