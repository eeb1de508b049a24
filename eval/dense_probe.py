"""Dense probe for small-scale evidence, from the command line: frozen patch features, a converged linear
classifier, K-means (the method is ``eval.probe``'s, the data ``eval.probe_data``'s; docs/evaluation.md section 4).

    python -m eval.dense_probe --pretrained_weights run/checkpoint.pth --arch vit_tiny --patch_size 16 \
        --input_size 96 --output_dir out/probe          # writes out/probe/dense_probe.json
"""

import argparse
from dataclasses import asdict

import torch

from croc_utils.cli import (
    OneLineErrorParser,
    UsageError,
    bounded,
    non_negative_float,
    non_negative_int,
    open_fraction,
    output_dir,
    positive_int,
    run_cli,
)
from croc_utils.synthetic import SCENE_STYLES
from eval.features import add_backbone_args, check_input_size, check_n_last_blocks, write_json
from eval.probe import DEFAULT_WEIGHT_DECAYS, ProbeConfig, evaluate_backbone
from eval.probe_data import dataset_probe_data, synthetic_probe_data
from eval.seg_datasets import DATASETS, mask_fix_warning
from models.pretrained import load_backbone


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("dense_probe", description=__doc__.split("\n")[0])
    add_backbone_args(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic", choices=DATASETS, help="Dataset. Default: synthetic.")
    data.add_argument("--data_path", default="", type=str,
                      help="Root of a real dataset (not for synthetic). Default: empty.")
    data.add_argument("--input_size", default=96, type=positive_int, help="Side of the probe's inputs. Default: 96.")
    data.add_argument("--synthetic_size", default=0, type=non_negative_int,
                      help="Side at which synthetic scenes are drawn (0: --input_size). Default: 0.")
    data.add_argument("--eval_split", default="val", choices=["val", "dev"],
                      help="Synthetic only: score on the val split, or on the train-split development set "
                           "(for choosing settings). Default: val.")
    data.add_argument("--data_seed", default=0, type=int, help="Seed of the synthetic scenes. Default: 0.")
    data.add_argument("--synthetic_style", default="default", choices=list(SCENE_STYLES),
                      help="Layout of the synthetic scenes (croc_utils.synthetic.SCENE_STYLES). Default: default.")
    data.add_argument("--pool_images", default=600, type=non_negative_int,
                      help="Train images the seeds draw from. Default: 600.")
    data.add_argument("--val_images", default=200, type=non_negative_int,
                      help="Fixed val images (0: all, real datasets). Default: 200.")
    data.add_argument("--batch_size", default=64, type=positive_int, help="Images per feature batch. Default: 64.")
    data.add_argument("--num_workers", default=0, type=non_negative_int, help="Data loader workers. Default: 0.")
    probe = parser.add_argument_group("probe")
    probe.add_argument("--n_last_blocks", default=1, type=positive_int,
                       help="Blocks whose patch tokens are concatenated. Default: 1.")
    probe.add_argument("--train_images", default=300, type=bounded(int, 2),
                       help="Probe train images per seed. Default: 300.")
    probe.add_argument("--holdout_fraction", default=0.25, type=open_fraction,
                       help="Part of the train images held out to choose the weight decay. Default: 0.25.")
    probe.add_argument("--weight_decays", default=list(DEFAULT_WEIGHT_DECAYS), type=non_negative_float, nargs="+",
                       help="Candidate weight decays (one: no choice, no held-out fit). Default: "
                            + " ".join(f"{wd:g}" for wd in DEFAULT_WEIGHT_DECAYS) + ".")
    probe.add_argument("--max_iter", default=500, type=positive_int, help="L-BFGS iterations per fit. Default: 500.")
    kmeans = parser.add_argument_group("K-means")
    kmeans.add_argument("--n_clusters", default=[0, 100], type=non_negative_int, nargs="+",
                        help="K-means K values; 0 = number of classes. Default: 0 100.")
    kmeans.add_argument("--pca_dim", default=50, type=positive_int,
                        help="PCA dimensions after standardising. Default: 50.")
    kmeans.add_argument("--kmeans_restarts", default=3, type=positive_int,
                        help="Restarts per K-means run, lowest inertia kept. Default: 3.")
    run = parser.add_argument_group("run")
    run.add_argument("--n_seeds", default=3, type=positive_int, help="Seeds 0..n-1 (plus --seed). Default: 3.")
    run.add_argument("--seed", default=0, type=int, help="First probe seed. Default: 0.")
    run.add_argument("--output_dir", default=".", type=str,
                     help="Where dense_probe.json goes. Default: the current folder.")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What the flags' own ranges cannot say (each flag's range is its argparse type)."""
    check_input_size(args.input_size, args.patch_size)
    n_hold = max(1, round(args.train_images * args.holdout_fraction))
    if len(args.weight_decays) > 1 and args.train_images - n_hold < 1:
        raise UsageError(f"--holdout_fraction {args.holdout_fraction} of --train_images {args.train_images} holds out "
                         f"{n_hold} and leaves no image to fit the probe on")
    if args.dataset != "synthetic":
        return
    if args.pool_images < 1 or args.val_images < 1:
        raise UsageError("--pool_images and --val_images must be at least 1 for --dataset synthetic (0 means all "
                         "images only for a real dataset)")
    if args.train_images > args.pool_images:
        raise UsageError(f"--train_images {args.train_images} exceeds --pool_images {args.pool_images}")
    if (args.synthetic_size or args.input_size) < 16:
        flag = "--synthetic_size" if args.synthetic_size else "--input_size"
        raise UsageError(f"{flag} {args.synthetic_size or args.input_size} is below 16 px, the smallest synthetic "
                         "scene")


def check_data(data, args: argparse.Namespace) -> None:
    """The flags that depend on what the dataset holds."""
    if args.train_images > len(data.pool_images):
        raise UsageError(f"--train_images {args.train_images} exceeds the {len(data.pool_images)} train images there "
                         "are (--pool_images)")
    vectors = len(data.val_images) * (args.input_size // args.patch_size) ** 2
    most = max(k or len(data.class_names) for k in args.n_clusters)
    if most > vectors:
        raise UsageError(f"--n_clusters {most} exceeds the {vectors} feature vectors of the val set (0 stands for the "
                         f"{len(data.class_names)} classes)")


def config_from_args(args: argparse.Namespace) -> ProbeConfig:
    return ProbeConfig(n_train=args.train_images, holdout_fraction=args.holdout_fraction,
                       weight_decays=tuple(args.weight_decays), seeds=tuple(args.seed + i for i in range(args.n_seeds)),
                       max_iter=args.max_iter, n_clusters=tuple(args.n_clusters), pca_dim=args.pca_dim,
                       kmeans_restarts=args.kmeans_restarts, n_last_blocks=args.n_last_blocks,
                       batch_size=args.batch_size)


def main(args: argparse.Namespace) -> dict:
    check_args(args)
    cfg = config_from_args(args)
    output_dir(args.output_dir)
    torch.manual_seed(args.seed)  # a random-init backbone is then reproducible
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, args.checkpoint_key, args.device)
    check_n_last_blocks(model, args.n_last_blocks)
    feature_dim = model.embed_dim * args.n_last_blocks
    if args.pca_dim > feature_dim:
        raise UsageError(f"--pca_dim {args.pca_dim} exceeds the feature dimension {feature_dim}")
    if args.dataset == "synthetic":
        data = synthetic_probe_data(pool_images=args.pool_images, val_images=args.val_images,
                                    input_size=args.input_size, synthetic_size=args.synthetic_size or None,
                                    seed=args.data_seed, eval_split=args.eval_split, style=args.synthetic_style,
                                    num_workers=args.num_workers)
    else:
        data = dataset_probe_data(args.dataset, args.data_path, pool_images=args.pool_images,
                                  val_images=args.val_images, input_size=args.input_size,
                                  num_workers=args.num_workers)
    check_data(data, args)
    fixes = data.description.get("mask_fixes", {})
    warning = mask_fix_warning(fixes)
    if warning:
        print(warning)
    result = evaluate_backbone(model, data, cfg, args.device)
    out = {**result, "data": data.description, "class_names": list(data.class_names), "config": asdict(cfg),
           "mask_fixes": fixes, "args": vars(args)}
    path = f"{args.output_dir}/dense_probe.json"
    write_json(path, out, indent=1)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    run_cli(main, get_args_parser())
