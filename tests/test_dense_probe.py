"""Tests of eval/dense_probe.py, the command line of the dense probe (the method: tests/test_probe.py)."""

import json

import pytest
import torch

from croc_utils.cli import run_cli
from eval import dense_probe


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; 2 threads spin against each other on the shared CI machine
    yield
    torch.set_num_threads(threads)


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
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
