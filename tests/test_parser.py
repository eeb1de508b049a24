import argparse

import pytest

from croc_utils.parser import get_args_parser, parse_args, upgrade_args

RELEASED_DEFAULTS = {
    "arch": "vit_small", "patch_size": 16, "out_dim": 65536, "out_dim_c": 8192, "norm_last_layer": True,
    "momentum_teacher": 0.996, "use_bn_in_head": False, "warmup_teacher_temp": 0.04, "teacher_temp": 0.04,
    "warmup_teacher_temp_epochs": 0, "warmup_teacher_temp_c": 0.04, "teacher_temp_c": 0.04, "student_temp_c": 0.1,
    "use_fp16": True, "weight_decay": 0.04, "weight_decay_end": 0.4, "clip_grad": 3.0, "batch_size_per_gpu": 16,
    "epochs": 300, "freeze_last_layer": 1, "lr": 0.0005, "warmup_epochs": 10, "min_lr": 1e-6, "optimizer": "adamw",
    "drop_path_rate": 0.1, "global_crops_scale": (0.25, 1.0), "local_crops_number": 0, "local_crops_scale": (0.05, 0.4),
    "output_dir": "output", "saveckp_freq": 50, "seed": 0, "num_workers": 4, "dist_url": "env://", "local_rank": 0,
    "sinkhorn_lambda": 20, "sinkhorn_iterations": 5, "alpha_s": 1, "student_temp": 1.0, "dataset_type": "coco",
    "imagenet1k_path": "", "coco_path": "/path/to/coco/", "data_path": "", "untar_path": "", "pos_alpha": 4.0,
    "which_features": "k", "n_tokens": 5, "n_centroids_max": 4, "uniform_marginals": False, "marginals_temp_r": 2.0,
    "marginals_temp_c": 2.0,
}


def test_every_released_flag_has_its_released_default():
    args = parse_args([])
    for name, default in RELEASED_DEFAULTS.items():
        assert getattr(args, name) == default, name
        assert type(getattr(args, name)) is type(default) or isinstance(default, (int, float)), name


def test_released_choices():
    actions = {a.dest: a for a in get_args_parser()._actions}
    assert set(actions["optimizer"].choices) == {"adamw", "sgd", "lars"}
    assert set(actions["which_features"].choices) == {"last", "k", "q", "v"}
    assert {"imagenet1k", "coco", "coco+", "imagefolder"} <= set(actions["dataset_type"].choices)


def test_launcher_and_aliases():
    assert parse_args(["--local_rank", "3"]).local_rank == 3
    assert parse_args(["--local-rank=2"]).local_rank == 2
    assert parse_args(["--arch", "deit_small"]).arch == "vit_small"
    assert parse_args(["--dataset_type", "coco+"]).dataset_type == "coco+"
    assert parse_args(["--use_fp16", "false", "--norm_last_layer", "0"]).use_fp16 is False


@pytest.mark.parametrize("argv,flag", [
    (["--n_tokens", "3", "--n_centroids_max", "4"], "--n_centroids_max"),
    (["--n_tokens", "1"], "--n_tokens"),
    (["--global_crops_scale", "0.9", "0.2"], "--global_crops_scale"),
    (["--local_crops_scale", "0.1"], "--local_crops_scale"),
    (["--global_crops_size", "100"], "--global_crops_size"),
    (["--batch_size_per_gpu", "0"], "--batch_size_per_gpu"),
    (["--optimizer", "adam"], "--optimizer"),
    (["--lr", "-1"], "--lr"),
    (["--min_lr", "-1e-6"], "--min_lr"),
    (["--weight_decay", "-0.1"], "--weight_decay"),
    (["--weight_decay_end", "nan"], "--weight_decay_end"),
    (["--momentum_teacher", "1.5"], "--momentum_teacher"),
    (["--momentum_teacher", "-0.1"], "--momentum_teacher"),
    (["--teacher_temp", "0"], "--teacher_temp"),
    (["--warmup_teacher_temp_c", "-0.04"], "--warmup_teacher_temp_c"),
    (["--student_temp_c", "0"], "--student_temp_c"),
    (["--drop_path_rate", "1.0"], "--drop_path_rate"),
    (["--clip_grad", "-3"], "--clip_grad"),
    (["--alpha_s", "-1"], "--alpha_s"),
    (["--sinkhorn_lambda", "0"], "--sinkhorn_lambda"),
    (["--marginals_temp_r", "0"], "--marginals_temp_r"),
    (["--pos_alpha", "-4"], "--pos_alpha"),
    (["--sinkhorn_iterations", "0"], "--sinkhorn_iterations"),
    (["--n_tokens", "500", "--global_crops_size", "64"], "--n_tokens"),
    (["--warmup_epochs", "20", "--epochs", "10"], "--warmup_epochs"),
    (["--synthetic_size", "8"], "--synthetic_size"),
    (["--prefetch_factor", "0"], "--prefetch_factor"),
    (["--precision", "fp8"], "--precision"),
    (["--augment_on", "gpu"], "--augment_on"),
    (["--blur_p", "1", "0.1", "1.5"], "--blur_p"),
    (["--solarize_p", "0", "-0.2", "0"], "--solarize_p"),
    (["--grayscale_p", "1.2"], "--grayscale_p"),
    (["--jitter_p", "-1"], "--jitter_p"),
    (["--hue_jitter", "0.6"], "--hue_jitter"),
    (["--jitter_strength", "3"], "--jitter_strength"),
    (["--hue_jitter", "0.1", "0.2"], "--hue_jitter"),
    (["--head_hidden_dim", "0"], "--head_hidden_dim"),
    (["--dist_timeout", "0"], "--dist_timeout"),
    (["--dist_timeout", "nan"], "--dist_timeout"),
])
def test_impossible_values_are_refused_in_one_line(argv, flag, capsys):
    with pytest.raises(SystemExit) as err:
        parse_args(argv)
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert flag in message and "\n" not in message


def test_dist_timeout_is_minutes_default_30():
    assert parse_args([]).dist_timeout == 30 and parse_args(["--dist_timeout", "0.5"]).dist_timeout == 0.5


def test_help_mentions_true_defaults(capsys):
    with pytest.raises(SystemExit) as err:
        parse_args(["--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    assert "Default: 65536" in text and "Default: 0.996" in text


def released_saved_args() -> argparse.Namespace:
    """The ``args`` entry of a checkpoint written by the released code: its flags only (non-default values for
    some), plus what its launcher set at run time."""
    saved = dict(RELEASED_DEFAULTS, out_dim=4096, n_tokens=8, sinkhorn_iterations=3, optimizer="sgd")
    return argparse.Namespace(**saved, world_size=8, rank=3, gpu=3)


def test_upgrade_args_gives_old_args_todays_defaults():
    old = released_saved_args()
    before = dict(vars(old))
    new = upgrade_args(old)
    assert vars(old) == before  # not changed in place
    today = vars(parse_args([]))
    assert set(new.__dict__) == set(today) | {"world_size", "rank", "gpu"}
    for flag, value in vars(new).items():
        assert value == (before[flag] if flag in before else today[flag]), flag
    assert (new.out_dim, new.n_tokens, new.optimizer, new.world_size) == (4096, 8, "sgd", 8)
    assert (new.head_hidden_dim, new.augment_on, new.teacher_centering) == (2048, "cpu", "center")
    assert vars(upgrade_args(before)) == vars(new)  # a mapping (e.g. vars() of saved args) works the same


def test_the_run_objects_of_upgraded_old_args_are_the_released_ones():
    from croc_utils.clustering import ClusteringConfig
    from croc_utils.transforms import RELEASED_PIPELINES, CrOCAugmentation
    from models.network import build_network

    old = released_saved_args()
    # no silent default on the way: old args go through upgrade_args
    with pytest.raises(AttributeError, match="blur_p"):
        CrOCAugmentation.from_args(old)
    with pytest.raises(AttributeError, match="head_hidden_dim"):
        build_network(argparse.Namespace(**dict(vars(old), arch="vit_pico")), drop_path_rate=0.0)
    new = upgrade_args(old)
    assert CrOCAugmentation.from_args(new).pipelines == RELEASED_PIPELINES
    assert ClusteringConfig.from_args(new) == ClusteringConfig(n_tokens=8, sinkhorn_iterations=3)
    new.arch, new.out_dim_c = "vit_pico", 16
    head = build_network(new, drop_path_rate=0.0).head
    assert head.mlp[0].out_features == 2048 and head.last_layer.in_features == 256  # the released head


def test_short_run_zeroes_the_warmups_with_a_notice(capsys):
    args = parse_args(["--epochs", "2", "--warmup_epochs", "1", "--warmup_teacher_temp_epochs", "1"])
    assert args.warmup_epochs == 0 and args.warmup_teacher_temp_epochs == 0
    assert "--warmup_epochs (1)" in capsys.readouterr().out
    parse_args(["--epochs", "2", "--warmup_epochs", "0"])
    assert capsys.readouterr().out == ""  # nothing changed, nothing said


def test_colour_flags_default_to_the_released_pipelines():
    from croc_utils.transforms import RELEASED_PIPELINES, CrOCAugmentation

    assert CrOCAugmentation.from_args(parse_args([])).pipelines == RELEASED_PIPELINES
    aug = CrOCAugmentation.from_args(parse_args(["--blur_p", "0", "0", "0.3", "--solarize_p", "0", "0", "0",
                                                 "--grayscale_p", "0.5", "--jitter_p", "1", "--hue_jitter", "0.5"]))
    assert [p.blur_p for p in aug.pipelines] == [0, 0, 0.3] and all(p.solarize_p == 0 for p in aug.pipelines)
    assert all((p.grayscale_p, p.jitter_p, p.hue) == (0.5, 1, 0.5) for p in aug.pipelines)
    per_view = CrOCAugmentation.from_args(parse_args(["--hue_jitter", "0.1", "0.5", "0.4", "--grayscale_p", "0", "0.5",
                                                      "0.3"])).pipelines
    assert [(p.hue, p.grayscale_p) for p in per_view] == [(0.1, 0), (0.5, 0.5), (0.4, 0.3)]


def test_clustering_and_crop_defaults_have_one_home():
    from croc_utils.clustering import ClusteringConfig
    from croc_utils.transforms import CrOCAugmentation

    args = parse_args([])
    assert ClusteringConfig.from_args(args) == ClusteringConfig()
    aug = CrOCAugmentation()
    assert (aug.global_crops_scale, aug.local_crops_scale, aug.global_crops_size, aug.local_crops_size) == (
        args.global_crops_scale, args.local_crops_scale, args.global_crops_size, args.local_crops_size)
