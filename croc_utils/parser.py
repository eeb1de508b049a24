"""Command line of ``main_croc.py``: every flag of the released CLI (same name, type, default, choices) plus ours.

Spec: ``croc-algorithm.md`` sections 2-7. Flags added here (not in the release) are marked "[new]" in their help.
"""

import argparse
import sys

from croc_utils.cli import OneLineErrorParser, bool_flag


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="vit_small", type=str,
                   choices=["vit_tiny", "vit_small", "vit_base", "deit_tiny", "deit_small"],
                   help="ViT to train (deit_* are mapped to vit_* as in the release). Default: vit_small.")
    p.add_argument("--patch_size", default=16, type=int, choices=[8, 16], help="Patch size in pixels. Default: 16.")
    p.add_argument("--out_dim", default=65536, type=int, help="Output dimension of last_layer (CLS). Default: 65536.")
    p.add_argument("--out_dim_c", default=8192, type=int,
                   help="Output dimension of last_layer_c (cluster tokens). Default: 8192.")
    p.add_argument("--norm_last_layer", default=True, type=bool_flag,
                   help="Freeze the weight-norm gains of both output layers at 1. Default: true.")
    p.add_argument("--momentum_teacher", default=0.996, type=float,
                   help="Base EMA momentum of the teacher, raised to 1 with a cosine schedule. Default: 0.996.")
    p.add_argument("--use_bn_in_head", default=False, type=bool_flag,
                   help="BatchNorm after the hidden linears of the head. Default: false.")
    p.add_argument("--drop_path_rate", type=float, default=0.1, help="Student stochastic depth. Default: 0.1.")
    p.add_argument("--which_features", type=str, default="k", choices=["last", "k", "q", "v"],
                   help="Last-block features the clustering uses: keys (k), queries (q), values (v), or the "
                        "last-layer tokens split per head (last). Default: k.")


def _temperature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warmup_teacher_temp", default=0.04, type=float,
                   help="Initial teacher temperature of the CLS term. Default: 0.04.")
    p.add_argument("--teacher_temp", default=0.04, type=float,
                   help="Teacher temperature of the CLS term after warm-up. Default: 0.04.")
    p.add_argument("--warmup_teacher_temp_epochs", default=0, type=int,
                   help="Epochs of linear warm-up of both teacher temperatures. Default: 0.")
    p.add_argument("--warmup_teacher_temp_c", default=0.04, type=float,
                   help="Initial teacher temperature of the cluster term. Default: 0.04.")
    p.add_argument("--teacher_temp_c", default=0.04, type=float,
                   help="Teacher temperature of the cluster term after warm-up. Default: 0.04.")
    p.add_argument("--student_temp_c", default=0.1, type=float,
                   help="Student temperature of the cluster term. Default: 0.1.")
    p.add_argument("--student_temp", default=1.0, type=float,
                   help="Accepted for compatibility with the release, where it is handed to the clustering and has "
                        "no effect; the CLS term's student temperature is 0.1 as in DINO. Default: 1.0.")


def _optim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--use_fp16", type=bool_flag, default=True,
                   help="Mixed precision (torch.amp fp16 + grad scaler) on CUDA; ignored with a notice on CPU. "
                        "Default: true.")
    p.add_argument("--weight_decay", type=float, default=0.04, help="Initial weight decay. Default: 0.04.")
    p.add_argument("--weight_decay_end", type=float, default=0.4,
                   help="Final weight decay (cosine schedule). Default: 0.4.")
    p.add_argument("--clip_grad", type=float, default=3.0,
                   help="Maximal gradient norm of EACH parameter (0 disables). Default: 3.0.")
    p.add_argument("--batch_size_per_gpu", default=16, type=int, help="Images per process. Default: 16.")
    p.add_argument("--epochs", default=300, type=int, help="Training epochs. Default: 300.")
    p.add_argument("--freeze_last_layer", default=1, type=int,
                   help="Epochs during which last_layer and last_layer_c are not updated. Default: 1.")
    p.add_argument("--lr", default=0.0005, type=float,
                   help="Peak learning rate for a global batch of 256 (scaled linearly). Default: 0.0005.")
    p.add_argument("--warmup_epochs", default=10, type=int, help="Epochs of linear lr warm-up. Default: 10.")
    p.add_argument("--min_lr", type=float, default=1e-6, help="Final learning rate (cosine). Default: 1e-6.")
    p.add_argument("--optimizer", default="adamw", type=str, choices=["adamw", "sgd", "lars"],
                   help="Optimizer. Default: adamw.")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--global_crops_scale", type=float, nargs="+", default=(0.25, 1.0),
                   help="Scale range of the two global views' random resized crops. Default: 0.25 1.0.")
    p.add_argument("--global_crops_size", type=int, default=224,
                   help="[new] Side of the global views in pixels (multiple of --patch_size). Default: 224.")
    p.add_argument("--local_crops_number", type=int, default=0,
                   help="Number of DINO-style local crops for the student (the release ignores this; ours makes "
                        "them). Default: 0.")
    p.add_argument("--local_crops_scale", type=float, nargs="+", default=(0.05, 0.4),
                   help="Scale range of the local crops. Default: 0.05 0.4.")
    p.add_argument("--local_crops_size", type=int, default=96,
                   help="[new] Side of the local crops in pixels (multiple of --patch_size). Default: 96.")
    p.add_argument("--dataset_type", default="coco", type=str,
                   choices=["imagenet1k", "coco", "coco+", "imagefolder", "synthetic"],
                   help="Training data: imagenet1k (--imagenet1k_path), coco / coco+ (--coco_path), imagefolder "
                        "(--data_path), or synthetic ([new] the embedded scene generator). Default: coco.")
    p.add_argument("--imagenet1k_path", default="", type=str,
                   help="Root of ImageNet-1k holding ILSVRC2012_img_train (a .tar is extracted to --untar_path).")
    p.add_argument("--coco_path", default="/path/to/coco/", type=str,
                   help="Root of COCO holding images/train2017 (and images/unlabeled2017 for coco+); a .tar is "
                        "extracted to --untar_path. Default: /path/to/coco/ (a placeholder, as in the release).")
    p.add_argument("--data_path", default="", type=str, help="Image folder used with --dataset_type imagefolder.")
    p.add_argument("--untar_path", default="", type=str, help="Where an archive given as a data path is extracted.")
    p.add_argument("--synthetic_num_images", default=1000, type=int,
                   help="[new] Number of training images of --dataset_type synthetic. Default: 1000.")
    p.add_argument("--synthetic_size", default=224, type=int,
                   help="[new] Side in pixels of the synthetic scenes (the crops are then taken from them). "
                        "Default: 224.")
    p.add_argument("--synthetic_cache", default=False, type=bool_flag,
                   help="[new] Draw the synthetic scenes once, in parallel, and serve them from memory "
                        "(num_images x size^2 x 4 bytes). Default: false (drawn on the fly).")
    p.add_argument("--synthetic_style", default="default", type=str, choices=["default", "large"],
                   help="[new] Layout of the synthetic scenes (croc_utils.synthetic.SCENE_STYLES): default, or large "
                        "(fewer, bigger objects, coarser textures: for small-scale runs). Default: default.")
    p.add_argument("--num_workers", default=4, type=int, help="Data-loading workers per process. Default: 4.")


def _clustering_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sinkhorn_lambda", default=20, type=float,
                   help="Entropic regularisation lambda of Sinkhorn-Knopp, T = exp(-lambda C). Default: 20.")
    p.add_argument("--sinkhorn_iterations", default=5, type=int, help="Sinkhorn-Knopp iterations. Default: 5.")
    p.add_argument("--alpha_s", default=1, type=float, help="Weight of the cluster term in the loss. Default: 1.")
    p.add_argument("--pos_alpha", default=4.0, type=float, help="Weight of the spatial cost. Default: 4.0.")
    p.add_argument("--n_tokens", default=5, type=int, help="Seeds K per (image, head); at least 2. Default: 5.")
    p.add_argument("--n_centroids_max", default=4, type=int,
                   help="k is chosen among the last n_centroids_max-1 merge steps (k <= n_centroids_max); "
                        "2 <= n_centroids_max <= n_tokens. Default: 4.")
    p.add_argument("--uniform_marginals", default=False, type=bool_flag,
                   help="Uniform token and seed marginals instead of CLS-attention ones. Default: false.")
    p.add_argument("--marginals_temp_r", default=2.0, type=float, help="Temperature of the token marginals. "
                                                                         "Default: 2.0.")
    p.add_argument("--marginals_temp_c", default=2.0, type=float, help="Temperature of the seed marginals. "
                                                                         "Default: 2.0.")


def _misc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", default="output", type=str, help="Checkpoints and logs. Default: output.")
    p.add_argument("--saveckp_freq", default=50, type=int,
                   help="Also keep checkpoint{epoch:04}.pth every this many epochs (0 disables). Default: 50.")
    p.add_argument("--seed", default=0, type=int, help="Random seed. Default: 0.")
    p.add_argument("--dist_url", default="env://", type=str, help="torch.distributed init URL. Default: env://.")
    p.add_argument("--local_rank", "--local-rank", default=0, type=int,
                   help="Set by torch.distributed.launch; do not set it yourself.")
    p.add_argument("--device", default="auto", type=str,
                   help="[new] cuda, cpu, cuda:N ... ; auto picks CUDA when available. Default: auto.")
    p.add_argument("--tensorboard", default=False, type=bool_flag,
                   help="[new] Also write TensorBoard scalars to output_dir/tb (needs tensorboard). Default: false.")
    p.add_argument("--log_freq", default=10, type=int, help="[new] Console line every this many iterations. "
                                                            "Default: 10.")


def get_args_parser() -> argparse.ArgumentParser:
    """All flags, as a parent parser (add_help=False), like DINO's ``get_args_parser``."""
    parser = argparse.ArgumentParser("CrOC", add_help=False)
    for add in (_model_args, _temperature_args, _optim_args, _data_args, _clustering_args, _misc_args):
        add(parser)
    return parser


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """Normalise (deit_* -> vit_*, scales to tuples) and refuse values that cannot work (ValueError, one line)."""
    args.arch = args.arch.replace("deit", "vit")
    for flag in ("global_crops_scale", "local_crops_scale"):
        scale = getattr(args, flag)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"--{flag} needs two values 0 < min <= max <= 1, got {' '.join(map(str, scale))}")
        setattr(args, flag, tuple(scale))
    for flag in ("global_crops_size", "local_crops_size"):
        if getattr(args, flag) % args.patch_size:
            raise ValueError(f"--{flag} {getattr(args, flag)} is not a multiple of --patch_size {args.patch_size}")
    if args.n_tokens < 2:
        raise ValueError(f"--n_tokens must be at least 2, got {args.n_tokens}")
    if not 2 <= args.n_centroids_max <= args.n_tokens:
        raise ValueError(f"--n_centroids_max must be in [2, --n_tokens={args.n_tokens}], got {args.n_centroids_max}")
    n_patches = 2 * (args.global_crops_size // args.patch_size) ** 2
    if args.n_tokens > n_patches:
        raise ValueError(f"--n_tokens {args.n_tokens} exceeds the {n_patches} patch tokens of the two views")
    positive = ("batch_size_per_gpu", "epochs", "sinkhorn_iterations", "out_dim", "out_dim_c", "log_freq")
    for flag in positive:
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    for flag in ("local_crops_number", "num_workers", "saveckp_freq", "warmup_epochs", "freeze_last_layer"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.epochs <= 2:  # spec section 5: a run this short has no warm-up
        args.warmup_epochs = args.warmup_teacher_temp_epochs = 0
    return args


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and validate ``argv``; a bad value exits with status 2 and one line naming the flag."""
    parser = OneLineErrorParser("CrOC", parents=[get_args_parser()])
    args = parser.parse_args(argv)
    try:
        return validate_args(args)
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":  # pragma: no cover - quick look at the resolved flags
    print(parse_args(sys.argv[1:]))
