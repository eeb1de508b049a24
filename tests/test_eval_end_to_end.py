"""End to end on tiny inputs: every evaluator script on the synthetic scenes / a miniature DAVIS, and the shared
checkpoint-loading path on a file in the released layout."""

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from croc_utils.checkpoint import CheckpointError, load_checkpoint
from croc_utils.cli import run_cli
from croc_utils.synthetic import SYNTHETIC_CLASSES
from eval import kmeans_segmentation, linear_segmentation, video_segmentation, visualize_clusters
from eval.features import extract_features, feature_cache_gb, patch_features
from models import vit_small, vit_tiny
from models.pretrained import load_backbone
from tests.trees import blank_first_annotation, make_davis, make_vocdevkit, save_png, voc_mask

SYNTHETIC = ["--arch", "vit_tiny", "--dataset", "synthetic", "--input_size", "64", "--num_workers", "0",
             "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run(module, argv):
    return run_cli(module.main, module.get_args_parser(), argv)


# ===== linear probe =====


def test_linear_probe_lc_on_synthetic(tmp_path):
    out = run(linear_segmentation, [*SYNTHETIC, "--epochs", "2", "--batch_size", "4", "--synthetic_train_images",
                                    "12", "--synthetic_val_images", "6", "--output_dir", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["last"]["epoch"] == 1 and len(saved["history"]) == 2
    assert 0.0 <= saved["last"]["miou"] <= 1.0 and saved["best"]["miou"] >= saved["last"]["miou"]
    assert list(saved["last"]["per_class_iou"]) == list(SYNTHETIC_CLASSES)
    assert out["best"]["miou"] == max(h["miou"] for h in saved["history"])
    head = load_checkpoint(str(tmp_path / "head_best.pth"))
    assert head["head"]["weight"].shape == (len(SYNTHETIC_CLASSES), 2 * 192, 1, 1)  # 2 blocks of vit_tiny


def test_linear_probe_leopart_with_cached_train_features(tmp_path, capsys):
    out = run(linear_segmentation, [*SYNTHETIC, "--protocol", "leopart", "--epochs", "1", "--batch_size", "6",
                                    "--train_aug", "false", "--synthetic_train_images", "6", "--cache_dtype",
                                    "float16", "--synthetic_val_images", "4", "--output_dir", str(tmp_path)])
    assert "caching train features (0.00 GiB, float16)" in capsys.readouterr().out
    assert out["args"]["n_last_blocks"] == 1 and out["args"]["lr"] == 0.01
    assert 0.0 <= out["last"]["miou"] <= 1.0


def test_feature_cache_holds_the_on_the_fly_features():
    from torch.utils.data import DataLoader

    from eval.linear_segmentation import backbone_batches, cached_batches
    from eval.seg_datasets import SyntheticSegmentation
    from eval.seg_transforms import EvalTransform

    torch.manual_seed(0)
    model = load_backbone("vit_tiny", verbose=False)
    loader = DataLoader(SyntheticSegmentation("val", 5, 32, transform=EvalTransform(32)), batch_size=2)
    feats, masks = extract_features(model, loader, 2, "cpu")  # float32 on the CPU by default
    direct = list(backbone_batches(model, loader, 2, "cpu"))
    assert feats.shape == (5, 2 * 192, 2, 2) and masks.shape == (5, 32, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, torch.cat([f for f, _ in direct]))
    half, _ = extract_features(model, loader, 2, "cpu", torch.float16)  # --cache_dtype float16
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), feats, atol=1e-2, rtol=1e-2)
    assert feature_cache_gb(5, 384, (2, 2)) == 2 * feature_cache_gb(5, 384, (2, 2), torch.float16)
    replay = list(cached_batches(feats, masks, 2, "cpu"))
    assert [len(f) for f, _ in replay] == [2, 2, 1]
    assert torch.equal(torch.cat([m for _, m in replay]), torch.cat([m for _, m in direct]))
    assert [len(f) for f, _ in cached_batches(feats, masks, 2, "cpu", shuffle=True, drop_last=True)] == [2, 2]


def test_linear_probe_on_a_voc_tree_mends_masks_with_one_warning(tmp_path, capsys):
    names = [(f"2007_{i:06d}", 1 + i) for i in range(4)]
    base = make_vocdevkit(tmp_path, names=names, val=[n for n, _ in names[:2]])
    save_png(base / "SegmentationClassAug" / "2007_000003.png", voc_mask(4, h=6, w=8))  # half the image size
    save_png(base / "SegmentationClass" / "2007_000000.png", voc_mask(1, h=24, w=32), palette=True)
    out = run(linear_segmentation, ["--arch", "vit_tiny", "--dataset", "voc", "--data_path", str(tmp_path),
                                    "--input_size", "32", "--num_workers", "0", "--device", "cpu", "--epochs", "2",
                                    "--batch_size", "2", "--border_label", "255", "--output_dir", str(tmp_path)])
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1  # one line per run, however many epochs read the masks
    assert "train: 1 mask(s) of another size" in warnings[0] and "val: 1 mask(s)" in warnings[0]
    assert out["mask_fixes"]["train"]["resized"] == 1 and out["args"]["border_label"] == 255
    with pytest.raises(SystemExit):
        run(linear_segmentation, ["--border_label", "300", "--output_dir", str(tmp_path)])


def test_leopart_evaluation_resizes_tokens_once_to_the_input():
    """Leopart's final evaluation: tokens bilinearly resized 28 -> 448, then the head (here 4 -> 64)."""
    torch.manual_seed(0)
    head, feats = torch.nn.Conv2d(8, 3, 1), torch.randn(2, 8, 4, 4)
    leopart = head(torch.nn.functional.interpolate(feats, size=(64, 64), mode="bilinear", align_corners=False))
    ours = linear_segmentation.head_logits(head, feats, 64)
    torch.testing.assert_close(ours, leopart, atol=1e-5, rtol=1e-5)
    via_100 = torch.nn.functional.interpolate(linear_segmentation.head_logits(head, feats, 16), size=(64, 64),
                                              mode="bilinear", align_corners=False)  # the former 28 -> 100 -> 448
    assert (via_100 - leopart).abs().max() > 1e-2


# ===== checkpoint loading =====


def released_checkpoint(backbone_state, out_dim=64, out_dim_c=32, hidden=48):
    """A dict in the released CrOC layout (docs/algorithm.md section 8), small head sizes."""
    d = next(iter(v for k, v in backbone_state.items() if k == "cls_token")).shape[-1]
    head = {"mlp.0.weight": torch.randn(hidden, d), "mlp.0.bias": torch.zeros(hidden),
            "mlp.2.weight": torch.randn(hidden, hidden), "mlp.2.bias": torch.zeros(hidden),
            "mlp.4.weight": torch.randn(256, hidden), "mlp.4.bias": torch.zeros(256),
            "last_layer.weight_g": torch.ones(out_dim, 1), "last_layer.weight_v": torch.randn(out_dim, 256),
            "last_layer_c.weight_g": torch.ones(out_dim_c, 1), "last_layer_c.weight_v": torch.randn(out_dim_c, 256)}
    network = {**{f"backbone.{k}": v for k, v in backbone_state.items()}, **{f"head.{k}": v for k, v in head.items()}}
    student = {f"module.{k}": v + 1.0 for k, v in network.items()}  # differs from the teacher on purpose
    args = argparse.Namespace(arch="vit_tiny", patch_size=16, out_dim=out_dim, out_dim_c=out_dim_c)
    return {"student": student, "teacher": network, "optimizer": {"state": {}, "param_groups": []}, "epoch": 300,
            "args": args, "croc_loss": {"center": torch.zeros(1, out_dim), "center_c": torch.zeros(1, out_dim_c)}}


def assert_same_weights(model, state, offset=0.0):
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(own[key], value + offset, rtol=0, atol=0)


def test_loading_a_released_layout_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = vit_tiny().state_dict()
    path = tmp_path / "checkpoint0300.pth"
    torch.save(released_checkpoint(source), path)
    assert_same_weights(load_backbone("vit_tiny", pretrained_weights=str(path), verbose=False), source)
    student = load_backbone("vit_tiny", pretrained_weights=str(path), checkpoint_key="student", verbose=False)
    assert_same_weights(student, source, offset=1.0)
    bare = tmp_path / "dino_hub_style.pth"
    torch.save(source, bare)
    assert_same_weights(load_backbone("vit_tiny", pretrained_weights=str(bare), verbose=False), source)


def test_loaded_weights_change_the_features(tmp_path):
    torch.manual_seed(0)
    trained = vit_tiny()
    path = tmp_path / "ckpt.pth"
    torch.save(released_checkpoint(trained.state_dict()), path)
    x = torch.randn(1, 3, 32, 32)
    loaded = load_backbone("vit_tiny", pretrained_weights=str(path), verbose=False)
    torch.testing.assert_close(patch_features(loaded, x, 2), patch_features(trained.eval(), x, 2))


def test_checkpoint_trained_at_another_crop_size(tmp_path):
    torch.manual_seed(0)
    trained = vit_tiny(img_size=64)  # e.g. the synthetic demo: pos_embed (1, 1 + 4*4, D)
    path = tmp_path / "ckpt64.pth"
    torch.save(released_checkpoint(trained.state_dict()), path)
    loaded = load_backbone("vit_tiny", pretrained_weights=str(path), verbose=False)
    assert_same_weights(loaded, trained.state_dict())
    x = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(patch_features(loaded, x, 1), patch_features(trained.eval(), x, 1))


def test_bad_checkpoints_give_one_line_errors(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_backbone("vit_tiny", pretrained_weights=str(text), verbose=False)
    small = tmp_path / "small.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in vit_small().state_dict().items()}}, small)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_backbone("vit_tiny", pretrained_weights=str(small), verbose=False)
    with pytest.raises(SystemExit) as exit_info:
        run(linear_segmentation, [*SYNTHETIC, "--pretrained_weights", str(text), "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "notes.txt" in err


# ===== K-means, DAVIS, cluster picture =====


def test_kmeans_segmentation_on_synthetic(tmp_path):
    out = run(kmeans_segmentation, [*SYNTHETIC, "--synthetic_val_images", "4", "--n_clusters", "0", "12",
                                    "--n_seeds", "2", "--n_restarts", "1", "--n_iter", "10", "--pca_dim", "8",
                                    "--mask_size", "32", "--output_dir", str(tmp_path)])
    k = len(SYNTHETIC_CLASSES)
    assert set(out["results"]) == {str(k), "12"}
    assert out["results"][str(k)]["runs"][0]["matching"] == "hungarian"
    assert out["results"]["12"]["runs"][0]["matching"] == "many-to-one"
    assert len(out["results"]["12"]["runs"]) == 2
    assert 0.0 <= out["results"][str(k)]["miou_mean"] <= 1.0
    assert (tmp_path / "kmeans_results.json").is_file()


def test_video_segmentation_on_miniature_davis(tmp_path, capsys):
    make_davis(tmp_path / "DAVIS", seqs=("dog", "empty", "short"), n_frames=4)
    blank_first_annotation(tmp_path / "DAVIS", "empty")  # only 0 and 255: the official code counts no object
    for kind in ("JPEGImages", "Annotations"):
        for frame in sorted((tmp_path / "DAVIS" / kind / "480p" / "short").iterdir())[2:]:
            frame.unlink()  # 2 frames: nothing left once the first and last are excluded
    out_dir = tmp_path / "out"
    result = run(video_segmentation, ["--arch", "vit_tiny", "--device", "cpu", "--data_path",
                                      str(tmp_path / "DAVIS"), "--short_side", "64", "--output_dir", str(out_dir),
                                      "--size_mask_neighborhood", "1", "--topk", "2"])
    pngs = sorted((out_dir / "dog").glob("*.png"))
    assert [p.name for p in pngs] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    first = Image.open(pngs[0])
    assert first.mode == "P" and first.size == (10, 8)
    assert first.getpalette()[3:6] == [128, 0, 0]
    gt = np.asarray(Image.open(tmp_path / "DAVIS" / "Annotations" / "480p" / "dog" / "00000.png"))
    assert np.array_equal(np.asarray(first), gt)
    assert not any(np.asarray(Image.open(p)).any() for p in sorted((out_dir / "empty").glob("*.png"))[1:])
    assert 0.0 <= result["J&F-Mean"] <= 1.0 and set(result["per_sequence"]) == {"dog"}
    assert list(result["per_object"]) == ["dog_1", "dog_2"] and result["sequences_without_objects"] == ["empty"]
    printed = capsys.readouterr().out
    assert "empty: no object in the first annotation" in printed and "short: 2 frame(s)" in printed

    def no_nan(name):
        raise ValueError(f"non-standard JSON constant {name}")
    saved = json.loads((out_dir / "davis_results.json").read_text(), parse_constant=no_nan)
    assert saved["J-Recall"] == result["J-Recall"] and saved["per_object"] == result["per_object"]
    table = (out_dir / "global_results-val.csv").read_text().splitlines()
    assert table[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    assert table[1].split(",") == [f"{result[m]:.3f}" for m in table[0].split(",")]
    rows = (out_dir / "per-sequence_results-val.csv").read_text().splitlines()
    assert rows == ["Sequence,J-Mean,F-Mean", *(f"dog_{i},{result['per_object'][f'dog_{i}']['J-Mean']:.3f},"
                                                f"{result['per_object'][f'dog_{i}']['F-Mean']:.3f}" for i in (1, 2))]


def test_visualize_clusters_writes_a_png(tmp_path):
    out = tmp_path / "clusters.png"
    run(visualize_clusters, ["--arch", "vit_tiny", "--device", "cpu", "--global_crops_size", "64",
                             "--synthetic_size", "96", "--output", str(out)])
    picture = Image.open(out)
    assert picture.size[0] > 4 * 64 and picture.size[1] > 3 * 64  # 4 tiles per row, one row per head (3)
    run(visualize_clusters, ["--arch", "vit_tiny", "--device", "cpu", "--global_crops_size", "64", "--head", "1",
                             "--synthetic_size", "96", "--output", str(out)])
    assert Image.open(out).size[1] < 2 * 64 + 40  # a single head: one row


# ===== bad input: one line, a warning with a count, or the right result =====


def one_line_error(capsys, module, argv, code=1):
    with pytest.raises(SystemExit) as exit_info:
        run(module, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code and err.count("\n") == 1 and "error:" in err, err
    return err


def test_kmeans_warns_about_mended_masks_and_counts_them(tmp_path, capsys):
    names = [(f"2007_{i:06d}", 1 + i) for i in range(3)]
    base = make_vocdevkit(tmp_path, names=names, val=[n for n, _ in names])
    save_png(base / "SegmentationClass" / "2007_000001.png", voc_mask(2, h=16, w=12), palette=True)  # transposed
    out = run(kmeans_segmentation, ["--arch", "vit_pico", "--patch_size", "8", "--dataset", "voc", "--data_path",
                                    str(tmp_path), "--input_size", "32", "--num_workers", "0", "--device", "cpu",
                                    "--n_last_blocks", "1", "--pca_dim", "4", "--n_seeds", "1", "--n_restarts", "1",
                                    "--n_iter", "5", "--mask_size", "16", "--output_dir", str(tmp_path / "out")])
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "val: 1 mask(s) of another size than the image resized" in warning[0]
    saved = json.loads((tmp_path / "out" / "kmeans_results.json").read_text())
    assert saved["mask_fixes"] == out["mask_fixes"] == {"val": {"resized": 1, "unknown_ids": 0}}


PICO = ["--arch", "vit_pico", "--patch_size", "8", "--device", "cpu", "--input_size", "32", "--num_workers", "0"]


@pytest.mark.parametrize("module, argv, named", [
    (kmeans_segmentation, ["--device", "gpu"], "argument --device: 'gpu' is not a torch device"),
    (linear_segmentation, ["--device", "cuda:99"], "argument --device: cuda:99:"),
    (kmeans_segmentation, ["--n_restarts", "0"], "argument --n_restarts: must be a whole number >= 1, got 0"),
    (kmeans_segmentation, ["--mask_size", "0"], "argument --mask_size"),
    (kmeans_segmentation, ["--input_size", "0"], "argument --input_size"),
    (linear_segmentation, ["--lr", "-1"], "argument --lr: must be a number > 0, got -1"),
    (linear_segmentation, ["--coco_train_fraction", "1.5"], "argument --coco_train_fraction"),
    (linear_segmentation, ["--dataset", "imagenet"], "argument --dataset: invalid choice"),
])
def test_flags_out_of_range_stop_in_one_line_before_any_work(capsys, module, argv, named):
    assert named in one_line_error(capsys, module, [*PICO, *argv], code=2)


@pytest.mark.parametrize("module, argv, named", [
    (kmeans_segmentation, ["--dataset", "synthetic", "--synthetic_val_images", "2", "--n_last_blocks", "5"],
     "--n_last_blocks 5 is not in 1..4"),
    (kmeans_segmentation, ["--dataset", "synthetic", "--synthetic_val_images", "1", "--n_last_blocks", "1",
                           "--pca_dim", "4", "--n_clusters", "17"], "--n_clusters 17 exceeds the 16 feature vectors"),
    (kmeans_segmentation, ["--dataset", "synthetic", "--input_size", "8"], "--input_size 8 is below 16 px"),
    (linear_segmentation, ["--dataset", "synthetic", "--n_last_blocks", "5"], "--n_last_blocks 5 is not in 1..4"),
])
def test_flags_that_depend_on_the_model_or_data_name_the_flag(tmp_path, capsys, module, argv, named):
    assert named in one_line_error(capsys, module, [*PICO, *argv, "--output_dir", str(tmp_path)])


@pytest.mark.parametrize("module", [kmeans_segmentation, linear_segmentation])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_unusable_output_dir_stops_before_the_backbone(tmp_path, capsys, module, where):
    taken = tmp_path / "taken"
    taken.write_text("x")
    out = taken if where == "a file" else taken / "sub"
    err = one_line_error(capsys, module, [*PICO, "--dataset", "synthetic", "--output_dir", str(out)])
    assert f"--output_dir {out}:" in err and "loaded" not in capsys.readouterr().out


def test_files_that_fill_part_of_the_backbone_or_hold_nan_are_refused(tmp_path):
    state = vit_tiny().state_dict()
    half = tmp_path / "half.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in list(state.items())[:20]}}, half)
    with pytest.raises(CheckpointError, match=rf"half.pth: holds 20 of the {len(state)} tensors of the backbone"):
        load_backbone("vit_tiny", pretrained_weights=str(half), verbose=False)
    diverged = tmp_path / "diverged.pth"
    torch.save({k: torch.full_like(v, float("nan")) if k == "norm.weight" else v for k, v in state.items()}, diverged)
    with pytest.raises(CheckpointError, match="diverged.pth: 1 backbone tensors hold NaN or inf"):
        load_backbone("vit_tiny", pretrained_weights=str(diverged), verbose=False)
    extra = tmp_path / "extra.pth"
    torch.save({**state, "head.weight": torch.zeros(2)}, extra)
    assert load_backbone("vit_tiny", pretrained_weights=str(extra), verbose=False) is not None
