"""The cluster picture redraws a run with that run's own clustering settings (its checkpoint's saved args)."""

import argparse

import numpy as np
import pytest
from PIL import Image

from croc_utils.cli import run_cli
from croc_utils.clustering import ClusteringConfig
from croc_utils.parser import parse_args
from eval.visualize_clusters import clustering_config, get_args_parser, load_image, main


def test_settings_come_from_the_checkpoint_then_the_command_line():
    saved = parse_args(["--n_tokens", "7", "--n_centroids_max", "5", "--uniform_marginals", "true",
                        "--marginals_temp_c", "0.5", "--pos_alpha", "1.5"])
    cli = get_args_parser().parse_args(["--sinkhorn_iterations", "3"])
    cfg = clustering_config({"args": saved}, cli)
    assert cfg == ClusteringConfig(n_tokens=7, n_centroids_max=5, uniform_marginals=True, marginals_temp_c=0.5,
                                   pos_alpha=1.5, sinkhorn_iterations=3)


def test_without_saved_args_the_released_defaults_apply():
    cli = get_args_parser().parse_args([])
    assert clustering_config({}, cli) == ClusteringConfig()
    older = argparse.Namespace(n_tokens=6)  # a run whose args predate some settings
    assert clustering_config({"args": older}, cli) == ClusteringConfig(n_tokens=6)


def test_a_16_bit_image_is_read_as_its_8_bit_twin(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # mode I;16
    pictures = [np.asarray(load_image(get_args_parser().parse_args(["--image", str(tmp_path / name)])))
                for name in ("grey8.png", "grey16.png")]
    assert np.array_equal(pictures[0], pictures[1]) and pictures[1].mean() < 200  # not clipped to white


TINY = ["--arch", "vit_pico", "--patch_size", "8", "--global_crops_size", "32", "--synthetic_size", "48",
        "--device", "cpu"]


def test_output_folder_and_inputs(tmp_path, capsys):
    folder = tmp_path / "figs"
    folder.mkdir()
    assert main(get_args_parser().parse_args([*TINY, "--output", str(folder)])) == str(folder / "clusters.png")
    assert Image.open(folder / "clusters.png").format == "PNG"
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (9, 99, 199)).save(image)
    before = image.read_bytes()
    for argv, named in (([*TINY, "--image", str(image), "--output", str(image)], "is the --image file"),
                        ([*TINY, "--output", str(tmp_path / "c.xyz")], ".xyz is not an image format"),
                        ([*TINY, "--image", str(tmp_path / "none.png")], "--image")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, get_args_parser(), argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and err.count("\n") == 1 and named in err, err
    assert image.read_bytes() == before
