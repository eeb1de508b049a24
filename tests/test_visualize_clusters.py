"""The cluster picture redraws a run with that run's own clustering settings (its checkpoint's saved args)."""

import argparse

from croc_utils.clustering import ClusteringConfig
from croc_utils.parser import parse_args
from eval.visualize_clusters import clustering_config, get_args_parser


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
