"""Tests of eval/dense_probe.py, the command line of the dense probe (the method: tests/test_probe.py)."""

import json

import pytest

from croc_utils.cli import run_cli
from eval import dense_probe
from tests.trees import make_vocdevkit, save_png, voc_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_writes_json_and_refuses_bad_input(tmp_path, capsys):
    argv = ["--arch", "vit_tiny", "--patch_size", "16", "--input_size", "32", "--pool_images", "8",
            "--train_images", "6", "--val_images", "4", "--n_seeds", "2", "--max_iter", "10", "--n_clusters", "0",
            "4", "--pca_dim", "8", "--kmeans_restarts", "1", "--synthetic_style", "large", "--device", "cpu",
            "--output_dir", str(tmp_path)]
    run_cli(dense_probe.main, dense_probe.get_args_parser(), argv)
    out = json.loads((tmp_path / "dense_probe.json").read_text())
    assert out["data"]["val_split"] == "val" and out["data"]["style"] == "large"
    assert len(out["linear"]["mious"]) == 2 and set(out["kmeans"]) == {"8", "4"}
    with pytest.raises(SystemExit) as exit_info:
        run_cli(dense_probe.main, dense_probe.get_args_parser(), argv + ["--pretrained_weights",
                                                                         str(tmp_path / "missing.pth")])
    assert exit_info.value.code == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


TINY = ["--arch", "vit_pico", "--patch_size", "8", "--input_size", "32", "--device", "cpu", "--n_seeds", "1",
        "--max_iter", "5", "--n_clusters", "0", "--pca_dim", "4", "--kmeans_restarts", "1"]


def test_mended_masks_are_warned_about_and_counted(tmp_path, capsys):
    names = [(f"2007_{i:06d}", 1 + i) for i in range(4)]
    base = make_vocdevkit(tmp_path, names=names, val=[n for n, _ in names[:2]])
    save_png(base / "SegmentationClass" / "2007_000001.png", voc_mask(2, h=6, w=8), palette=True)  # half size
    out = run_cli(dense_probe.main, dense_probe.get_args_parser(),
                  [*TINY, "--dataset", "voc", "--data_path", str(tmp_path), "--pool_images", "0", "--val_images", "0",
                   "--train_images", "3", "--output_dir", str(tmp_path / "out")])
    assert "WARNING: mended as the authors' evaluation fork does: val: 1 mask(s) of another size" in \
        capsys.readouterr().out
    assert out["mask_fixes"]["val"] == {"resized": 1, "unknown_ids": 0}
    assert json.loads((tmp_path / "out" / "dense_probe.json").read_text())["mask_fixes"] == out["mask_fixes"]


@pytest.mark.parametrize("argv, named, code", [
    (["--weight_decays", "0.1", "-0.1"], "argument --weight_decays: must be a number >= 0", 2),
    (["--weight_decays", "nan"], "argument --weight_decays", 2),
    (["--holdout_fraction", "0.9"], "--holdout_fraction 0.9 of --train_images 4 holds out 4 and leaves no image", 1),
    (["--pool_images", "0"], "--pool_images and --val_images must be at least 1 for --dataset synthetic", 1),
    (["--train_images", "9"], "--train_images 9 exceeds --pool_images 8", 1),
    (["--n_last_blocks", "5"], "--n_last_blocks 5 is not in 1..4", 1),
])
def test_flags_out_of_range_name_the_flag_in_one_line(tmp_path, capsys, argv, named, code):
    base = [*TINY, "--pool_images", "8", "--train_images", "4", "--val_images", "4", "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(dense_probe.main, dense_probe.get_args_parser(), [*base, *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == code and err.count("\n") == 1 and named in err, err
