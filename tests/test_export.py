"""Tests of models/export.py: the safetensors file loads into timm offline and gives our features."""

import json

import pytest
import torch

from croc_utils.cli import run_cli
from models import build_backbone
from models.export import export, get_args_parser, infer_architecture, main, timm_call

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_download(monkeypatch):
    """Every way timm could fetch weights raises: the file must be the only source."""
    import huggingface_hub
    from timm.models import _builder

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args[:2]}")

    for name in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file", "load_custom_from_hf"):
        monkeypatch.setattr(_builder, name, refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def training_checkpoint(path, model):
    """A file in the training layout: teacher and student with ``backbone.`` prefixes and a head."""
    backbone = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    head = {"head.mlp.0.weight": torch.zeros(4, 4)}
    torch.save({"teacher": backbone | head, "student": {f"module.{k}": torch.zeros_like(v) for k, v in
                                                        backbone.items()}, "epoch": 3}, path)


def timm_model(file, metadata):
    import timm

    return timm.create_model(metadata["timm_model"], pretrained=True, num_classes=0,
                             pretrained_cfg_overlay=dict(file=str(file)), **json.loads(metadata["timm_kwargs"]))


@pytest.mark.parametrize("arch,patch,size,timm_name", [
    ("vit_small", 16, 224, "vit_small_patch16_224"),  # the default grid: the timm call needs no img_size
    ("vit_small", 8, 32, "vit_small_patch8_224"),  # smaller grids keep the other cases fast on a CPU
    ("vit_tiny", 16, 32, "vit_tiny_patch16_224"),
    ("vit_base", 16, 32, "vit_base_patch16_224"),
    ("vit_tiny", 8, 32, "vit_tiny_patch16_224"),  # no timm name: built from the nearest one
    ("vit_pico", 8, 32, "vit_tiny_patch16_224"),
])
def test_timm_loads_the_export_offline_and_gives_our_features(tmp_path, no_download, arch, patch, size, timm_name):
    torch.manual_seed(0)
    ours = build_backbone(arch, patch_size=patch, img_size=size).eval()
    training_checkpoint(tmp_path / "checkpoint.pth", ours)
    metadata = export(str(tmp_path / "checkpoint.pth"), str(tmp_path / "backbone.safetensors"))
    assert metadata["timm_model"] == timm_name and metadata["arch"] == arch
    assert ("img_size" in json.loads(metadata["timm_kwargs"])) == (size != 224)
    theirs = timm_model(tmp_path / "backbone.safetensors", metadata).eval()
    for key, value in ours.state_dict().items():  # every tensor arrived (timm's load is not strict here)
        assert torch.equal(theirs.state_dict()[key], value), key
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(theirs.forward_features(x), ours.get_intermediate_layers(x)[0],
                                   rtol=0, atol=1e-5)


def test_a_backbone_made_for_another_grid_keeps_its_position_embedding(tmp_path, no_download):
    torch.manual_seed(0)
    ours = build_backbone("vit_pico", patch_size=8, img_size=64).eval()  # 8 x 8 grid, as a 64 px training run
    torch.save(ours.state_dict(), tmp_path / "bare.pth")  # a bare backbone state dict
    metadata = export(str(tmp_path / "bare.pth"), str(tmp_path / "pico.safetensors"))
    assert json.loads(metadata["timm_kwargs"])["img_size"] == 64
    theirs = timm_model(tmp_path / "pico.safetensors", metadata).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs.forward_features(x), ours.get_intermediate_layers(x)[0],
                                   rtol=0, atol=1e-5)


def test_student_key_and_command_line(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_backbone("vit_pico", patch_size=16)
    training_checkpoint(tmp_path / "c.pth", model)
    out = tmp_path / "student.safetensors"
    run_cli(main, get_args_parser(), ["--pretrained_weights", str(tmp_path / "c.pth"), "--checkpoint_key", "student",
                                      "--output", str(out)])
    assert 'timm.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=0' in capsys.readouterr().out
    from safetensors.torch import load_file

    saved = load_file(str(out))
    assert set(saved) == set(model.state_dict()) and all(v.abs().sum() == 0 for v in saved.values())  # the student


def test_infer_architecture_and_timm_arguments():
    state = build_backbone("vit_pico", patch_size=8, img_size=96).state_dict()
    assert infer_architecture(state) == ("vit_pico", 8, 12)
    assert timm_call("vit_pico", 8, 12) == ("vit_tiny_patch16_224", {"patch_size": 8, "embed_dim": 128,
                                                                     "num_heads": 2, "depth": 4, "img_size": 96})
    assert timm_call("vit_base", 8, 28) == ("vit_base_patch8_224", {})  # as ViT-B/16, tested with timm above


@pytest.mark.parametrize("case", ["missing", "not_safetensors_name", "not_a_vit"])
def test_bad_inputs_end_in_one_line(tmp_path, capsys, case):
    torch.save({"teacher": {"backbone.fc.weight": torch.zeros(2, 2)}}, tmp_path / "notvit.pth")
    argv = {"missing": ["--pretrained_weights", str(tmp_path / "none.pth"), "--output",
                        str(tmp_path / "o.safetensors")],
            "not_safetensors_name": ["--pretrained_weights", str(tmp_path / "notvit.pth"), "--output",
                                     str(tmp_path / "o.pth")],
            "not_a_vit": ["--pretrained_weights", str(tmp_path / "notvit.pth"), "--output",
                          str(tmp_path / "o.safetensors")]}[case]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, get_args_parser(), argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1 and err.startswith(get_args_parser().prog)
    assert not (tmp_path / "o.safetensors").exists()


# ===== our loaders read the exported file =====

def test_evaluators_and_hub_load_the_exported_file(tmp_path):
    from croc_utils.checkpoint import CheckpointError, load_checkpoint
    from models.hub import croc_vit
    from models.pretrained import load_backbone

    torch.manual_seed(0)
    ours = build_backbone("vit_pico", patch_size=8).eval()  # trained at 224 px: the hub builds that grid
    training_checkpoint(tmp_path / "c.pth", ours)
    file = tmp_path / "pico.safetensors"
    export(str(tmp_path / "c.pth"), str(file))
    assert load_checkpoint(str(file))["args"] == {"arch": "vit_pico", "patch_size": 8}  # from the metadata
    x = torch.randn(2, 3, 64, 64)
    expected = ours.get_intermediate_layers(x)[0]
    loaded = load_backbone("vit_pico", 8, str(file), verbose=False)  # the evaluators' loader
    hub = croc_vit(str(file))  # arch and patch size from the file's metadata
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_intermediate_layers(x)[0], expected, rtol=0, atol=0)
        torch.testing.assert_close(hub.get_intermediate_layers(x)[0], expected, rtol=0, atol=0)
    file.write_bytes(file.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match="pico.safetensors: truncated, damaged or not a safetensors file"):
        load_checkpoint(str(file))
