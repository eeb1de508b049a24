"""Command line of ``main_croc.py``: every flag of the released CLI (same name, type, default, choices) plus ours.

docs/algorithm.md sections 2-7. ``--help`` shows the released flags by topic, then the flags added here (the
sections of ``HELP_GROUPS``); every help text ends with the default. This is the
one home of every default: the clustering's come from ``ClusteringConfig`` and the crops' from
``croc_utils.transforms``, the modules that use them. ``validate_args`` is the one place a run's values are checked:
ranges here, the crop and clustering settings by the objects that own them.
"""

import argparse
import math
import sys
from collections.abc import Mapping

from croc_utils.architectures import ARCH_NAMES, canonical_arch
from croc_utils.cli import OneLineErrorParser, bool_flag
from croc_utils.clustering import ClusteringConfig
from croc_utils.loss import CENTERINGS
from croc_utils.synthetic import SCENE_STYLES
from croc_utils.transforms import (
    GLOBAL_CROPS_SCALE,
    GLOBAL_CROPS_SIZE,
    LOCAL_CROPS_SCALE,
    LOCAL_CROPS_SIZE,
    RELEASED_PIPELINES,
    CrOCAugmentation,
)

CLUSTERING = ClusteringConfig()  # the released clustering defaults


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="vit_small", type=str,
                   choices=ARCH_NAMES,
                   help="ViT to train (deit_* are mapped to vit_* as in the release). Default: vit_small.")
    p.add_argument("--patch_size", default=16, type=int, choices=[8, 16], help="Patch size in pixels. Default: 16.")
    p.add_argument("--out_dim", default=65536, type=int, help="Output dimension of last_layer (CLS). Default: 65536.")
    p.add_argument("--out_dim_c", default=8192, type=int,
                   help="Output dimension of last_layer_c (cluster tokens). Default: 8192.")
    p.add_argument("--norm_last_layer", default=True, type=bool_flag,
                   help="Freeze the weight-norm gains of both output layers at 1. Default: true.")
    p.add_argument("--momentum_teacher", default=0.996, type=float,
                   help="Base EMA momentum of the teacher, raised to 1 with a cosine schedule. Default: 0.996.")
    p.add_argument("--head_hidden_dim", default=2048, type=int,
                   help="Width of the head's two hidden layers. Default: 2048 (released).")
    p.add_argument("--head_bottleneck_dim", default=256, type=int,
                   help="Width of the head's L2-normalised bottleneck (input of both output layers). "
                        "Default: 256 (released).")
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
    p.add_argument("--teacher_centering", default="center", choices=list(CENTERINGS),
                   help="How the teacher outputs are kept from collapsing, for both heads: center (released: "
                        "subtract an EMA centre, then sharpen) or sinkhorn_knopp (DINOv2: 3 Sinkhorn-Knopp "
                        "iterations over the global batch). Default: center.")
    p.add_argument("--student_temp", default=1.0, type=float,
                   help="Accepted for compatibility with the release, where it is handed to the clustering and has "
                        "no effect; the CLS term's student temperature is 0.1 as in DINO. Default: 1.0.")


def _optim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--use_fp16", type=bool_flag, default=True,
                   help="The released switch: mixed precision (torch.amp fp16 + grad scaler) on CUDA; ignored with a "
                        "notice on CPU. --precision, when given, takes precedence. Default: true.")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"],
                   help="Autocast precision on any device (fp16 adds a grad scaler). Default: from --use_fp16 "
                        "(fp16 on CUDA, fp32 on CPU).")
    p.add_argument("--compile", default=False, type=bool_flag,
                   help="torch.compile the student and teacher backbones. Default: false.")
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
    p.add_argument("--global_crops_scale", type=float, nargs="+", default=GLOBAL_CROPS_SCALE,
                   help="Scale range of the two global views' random resized crops. Default: 0.25 1.0.")
    p.add_argument("--global_crops_size", type=int, default=GLOBAL_CROPS_SIZE,
                   help="Side of the global views in pixels (multiple of --patch_size). Default: 224.")
    p.add_argument("--local_crops_number", type=int, default=0,
                   help="Number of DINO-style local crops for the student (the release ignores this; ours makes "
                        "them). Default: 0.")
    p.add_argument("--local_crops_scale", type=float, nargs="+", default=LOCAL_CROPS_SCALE,
                   help="Scale range of the local crops. Default: 0.05 0.4.")
    p.add_argument("--local_crops_size", type=int, default=LOCAL_CROPS_SIZE,
                   help="Side of the local crops in pixels (multiple of --patch_size). Default: 96.")
    p.add_argument("--dataset_type", default="coco", type=str,
                   choices=["imagenet1k", "coco", "coco+", "imagefolder", "synthetic"],
                   help="Training data: imagenet1k (--imagenet1k_path), coco / coco+ (--coco_path), imagefolder "
                        "(--data_path), or synthetic (added: the embedded scene generator). Default: coco.")
    p.add_argument("--imagenet1k_path", default="", type=str,
                   help="Root of ImageNet-1k holding ILSVRC2012_img_train (a .tar is extracted to --untar_path). "
                        "Default: empty (needed with --dataset_type imagenet1k).")
    p.add_argument("--coco_path", default="/path/to/coco/", type=str,
                   help="Root of COCO holding images/train2017 (and images/unlabeled2017 for coco+); a .tar is "
                        "extracted to --untar_path. Default: /path/to/coco/ (a placeholder, as in the release).")
    p.add_argument("--data_path", default="", type=str,
                   help="Image folder used with --dataset_type imagefolder. Default: empty.")
    p.add_argument("--untar_path", default="", type=str,
                   help="Where an archive given as a data path is extracted. Default: empty.")
    p.add_argument("--synthetic_num_images", default=1000, type=int,
                   help="Number of training images of --dataset_type synthetic. Default: 1000.")
    p.add_argument("--synthetic_size", default=224, type=int,
                   help="Side in pixels of the synthetic scenes (the crops are then taken from them). "
                        "Default: 224.")
    p.add_argument("--synthetic_cache", default=False, type=bool_flag,
                   help="Draw the synthetic scenes once, in parallel, and serve them from memory "
                        "(num_images x size^2 x 4 bytes). Default: false (drawn on the fly).")
    p.add_argument("--synthetic_style", default="default", type=str, choices=list(SCENE_STYLES),
                   help="Layout of the synthetic scenes (croc_utils.synthetic.SCENE_STYLES): default, or large "
                        "(fewer, bigger objects, coarser textures: for small-scale runs). Default: default.")
    p.add_argument("--num_workers", default=4, type=int, help="Data-loading workers per process. Default: 4.")
    p.add_argument("--prefetch_factor", default=2, type=int,
                   help="Batches each loader worker prepares ahead. Default: 2.")
    pipelines = RELEASED_PIPELINES  # the defaults of the colour flags: (view 1, view 2, local crops)
    per_view = "one value for every view, or three: view 1, view 2, local crops"
    p.add_argument("--blur_p", type=float, nargs="+", default=[pl.blur_p for pl in pipelines], metavar="P",
                   help=f"Gaussian-blur probability; {per_view}. Default: 1.0 0.1 0.5 (released).")
    p.add_argument("--solarize_p", type=float, nargs="+", default=[pl.solarize_p for pl in pipelines], metavar="P",
                   help=f"Solarisation probability; {per_view}. Default: 0 0.2 0 (released).")
    p.add_argument("--jitter_p", type=float, nargs="+", default=[pl.jitter_p for pl in pipelines], metavar="P",
                   help=f"Colour-jitter probability; {per_view}. Default: 0.8 (released).")
    p.add_argument("--grayscale_p", type=float, nargs="+", default=[pl.grayscale_p for pl in pipelines], metavar="P",
                   help=f"Grayscale probability; {per_view}. Default: 0.2 (released).")
    p.add_argument("--hue_jitter", type=float, nargs="+", default=[pl.hue for pl in pipelines], metavar="H",
                   help=f"Largest hue shift of the colour jitter, in [0, 0.5]; {per_view}. Default: 0.1 "
                        "(released).")
    p.add_argument("--jitter_strength", type=float, nargs="+", default=[pl.strength for pl in pipelines], metavar="S",
                   help=f"Scale of the brightness, contrast and saturation jitter (factors 1 +- 0.4 S, "
                        f"1 +- 0.4 S, 1 +- 0.2 S; SimCLR's is about S = 2), in [0, 2.5]; {per_view}. Default: 1 "
                        "(released).")
    p.add_argument("--augment_on", default="cpu", choices=["cpu", "device"],
                   help="Where the photometric augmentation runs: cpu (in the loader workers, PIL, as "
                        "released) or device (batched on the training device; the workers do the geometry only). "
                        "Default: cpu.")


def _clustering_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sinkhorn_lambda", default=CLUSTERING.sinkhorn_lambda, type=float,
                   help="Entropic regularisation lambda of Sinkhorn-Knopp, T = exp(-lambda C). Default: 20.")
    p.add_argument("--sinkhorn_iterations", default=CLUSTERING.sinkhorn_iterations, type=int,
                   help="Sinkhorn-Knopp iterations. Default: 5.")
    p.add_argument("--alpha_s", default=1, type=float, help="Weight of the cluster term in the loss. Default: 1.")
    p.add_argument("--pos_alpha", default=CLUSTERING.pos_alpha, type=float,
                   help="Weight of the spatial cost. Default: 4.0.")
    p.add_argument("--n_tokens", default=CLUSTERING.n_tokens, type=int,
                   help="Seeds K per (image, head); at least 2. Default: 5.")
    p.add_argument("--n_centroids_max", default=CLUSTERING.n_centroids_max, type=int,
                   help="k is chosen among the last n_centroids_max-1 merge steps (k <= n_centroids_max); "
                        "2 <= n_centroids_max <= n_tokens. Default: 4.")
    p.add_argument("--uniform_marginals", default=CLUSTERING.uniform_marginals, type=bool_flag,
                   help="Uniform token and seed marginals instead of CLS-attention ones. Default: false.")
    p.add_argument("--marginals_temp_r", default=CLUSTERING.marginals_temp_r, type=float,
                   help="Temperature of the token marginals. Default: 2.0.")
    p.add_argument("--marginals_temp_c", default=CLUSTERING.marginals_temp_c, type=float,
                   help="Temperature of the seed marginals. Default: 2.0.")


def _misc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", default="output", type=str, help="Checkpoints and logs. Default: output.")
    p.add_argument("--saveckp_freq", default=50, type=int,
                   help="Also keep checkpoint{epoch:04}.pth every this many epochs (0 disables). Default: 50.")
    p.add_argument("--seed", default=0, type=int, help="Random seed. Default: 0.")
    p.add_argument("--dist_url", default="env://", type=str, help="torch.distributed init URL. Default: env://.")
    p.add_argument("--dist_timeout", default=30.0, type=float,
                   help="Minutes a process waits in a collective for the others before NCCL/gloo raise and "
                        "the job ends (a stalled rank hangs the whole job this long). Default: 30.")
    p.add_argument("--local_rank", "--local-rank", default=0, type=int,
                   help="Set by torch.distributed.launch; do not set it yourself. Default: 0.")
    p.add_argument("--device", default="auto", type=str,
                   help="cuda, cpu, cuda:N ... ; auto picks CUDA when available. Default: auto.")
    p.add_argument("--tensorboard", default=False, type=bool_flag,
                   help="Also write TensorBoard scalars to output_dir/tb (needs tensorboard). Default: false.")
    p.add_argument("--log_freq", default=10, type=int, help="Console line every this many iterations. "
                                                            "Default: 10.")


# --help's sections: (title, description, flags). The released flags by topic first, then the flags we add. Parsing
# does not depend on the sections; every flag must be in exactly one.
HELP_GROUPS = (
    ("model", None, ("arch", "patch_size", "out_dim", "out_dim_c", "norm_last_layer", "momentum_teacher",
                     "use_bn_in_head", "drop_path_rate", "which_features")),
    ("temperatures", None, ("warmup_teacher_temp", "teacher_temp", "warmup_teacher_temp_epochs",
                            "warmup_teacher_temp_c", "teacher_temp_c", "student_temp_c", "student_temp")),
    ("optimisation", None, ("use_fp16", "weight_decay", "weight_decay_end", "clip_grad", "batch_size_per_gpu",
                            "epochs", "freeze_last_layer", "lr", "warmup_epochs", "min_lr", "optimizer")),
    ("crops and augmentation", None, ("global_crops_scale", "local_crops_number", "local_crops_scale")),
    ("data", None, ("dataset_type", "imagenet1k_path", "coco_path", "data_path", "untar_path", "num_workers")),
    ("clustering", None, ("sinkhorn_lambda", "sinkhorn_iterations", "alpha_s", "pos_alpha", "n_tokens",
                          "n_centroids_max", "uniform_marginals", "marginals_temp_r", "marginals_temp_c")),
    ("run", None, ("output_dir", "saveckp_freq", "seed", "dist_url", "local_rank")),
    ("added: precision and speed", "Not in the released code; the defaults keep the released behaviour.",
     ("precision", "compile", "augment_on", "prefetch_factor", "device")),
    ("added: reliability and monitoring", "Not in the released code.", ("dist_timeout", "log_freq", "tensorboard")),
    ("added: small-scale experiments", "Not in the released code; the defaults are the released values.",
     ("head_hidden_dim", "head_bottleneck_dim", "teacher_centering", "global_crops_size", "local_crops_size",
      "blur_p", "solarize_p", "jitter_p", "grayscale_p", "hue_jitter", "jitter_strength")),
    ("added: synthetic data", "The embedded scene generator (--dataset_type synthetic; docs/synthetic.md).",
     ("synthetic_num_images", "synthetic_size", "synthetic_cache", "synthetic_style")),
)


class _Sections:
    """Hands each ``add_argument`` to the --help section (argument group) that lists the flag's dest."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.groups = {dest: group for title, description, dests in HELP_GROUPS
                       for group in [parser.add_argument_group(title, description)] for dest in dests}

    def add_argument(self, *names, **kwargs):
        dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
        if dest not in self.groups:
            raise KeyError(f"--{dest} is in no section of croc_utils.parser.HELP_GROUPS")
        return self.groups[dest].add_argument(*names, **kwargs)


def get_args_parser() -> argparse.ArgumentParser:
    """All flags, as a parent parser (add_help=False), like DINO's ``get_args_parser``; --help shows them in the
    sections of ``HELP_GROUPS``."""
    parser = argparse.ArgumentParser("CrOC", add_help=False)
    sections = _Sections(parser)
    for add in (_model_args, _temperature_args, _optim_args, _data_args, _clustering_args, _misc_args):
        add(sections)
    return parser


# Ranges of the numeric flags the objects below do not own: (lowest, highest, highest included).
AT_LEAST = {
    "batch_size_per_gpu": 1, "epochs": 1, "out_dim": 1, "out_dim_c": 1, "head_hidden_dim": 1, "head_bottleneck_dim": 1,
    "log_freq": 1, "prefetch_factor": 1,
    "synthetic_num_images": 1, "synthetic_size": 16, "local_crops_number": 0, "num_workers": 0, "saveckp_freq": 0,
    "warmup_epochs": 0, "freeze_last_layer": 0, "warmup_teacher_temp_epochs": 0,
    "lr": 0.0, "min_lr": 0.0, "weight_decay": 0.0, "weight_decay_end": 0.0, "clip_grad": 0.0, "alpha_s": 0.0,
}
POSITIVE = ("warmup_teacher_temp", "teacher_temp", "warmup_teacher_temp_c", "teacher_temp_c", "student_temp_c",
            "student_temp", "dist_timeout")
UNIT_INTERVAL = {"momentum_teacher": True, "drop_path_rate": False}  # [0, 1] or [0, 1)


def check_ranges(args: argparse.Namespace) -> None:
    """ValueError naming the first flag outside its range (NaN is outside every range)."""
    for flag, low in AT_LEAST.items():
        if not getattr(args, flag) >= low:
            raise ValueError(f"--{flag} must be >= {low}, got {getattr(args, flag)}")
    for flag in POSITIVE:
        if not getattr(args, flag) > 0:
            raise ValueError(f"--{flag} must be > 0, got {getattr(args, flag)}")
    for flag, closed in UNIT_INTERVAL.items():
        value = getattr(args, flag)
        if not (0 <= value <= 1 if closed else 0 <= value < 1):
            raise ValueError(f"--{flag} must be in [0, 1{']' if closed else ')'}, got {value}")
    for flag in ("warmup_epochs", "warmup_teacher_temp_epochs"):
        if getattr(args, flag) > args.epochs:
            raise ValueError(f"--{flag} {getattr(args, flag)} exceeds --epochs {args.epochs}")
    if not all(math.isfinite(v) for v in vars(args).values() if isinstance(v, float)):
        raise ValueError("every numeric flag must be finite")


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """Check a run's values (ValueError, one line naming the flag) and normalise them (deit_* -> vit_*, scales to
    tuples). The crop flags are checked by ``CrOCAugmentation``, the clustering flags by ``ClusteringConfig``."""
    args.arch = canonical_arch(args.arch)
    args.global_crops_scale, args.local_crops_scale = tuple(args.global_crops_scale), tuple(args.local_crops_scale)
    if args.epochs <= 2 and (args.warmup_epochs or args.warmup_teacher_temp_epochs):
        # docs/algorithm.md section 5: the released code runs so short a training without warm-up
        print(f"Notice: --epochs {args.epochs} <= 2, so --warmup_epochs ({args.warmup_epochs}) and "
              f"--warmup_teacher_temp_epochs ({args.warmup_teacher_temp_epochs}) are set to 0, as released.")
        args.warmup_epochs = args.warmup_teacher_temp_epochs = 0
    check_ranges(args)
    CrOCAugmentation.from_args(args)
    ClusteringConfig.from_args(args).check_patches((args.global_crops_size // args.patch_size) ** 2)
    return args


def upgrade_args(args: argparse.Namespace | Mapping) -> argparse.Namespace:
    """A run's saved arguments with today's default for every flag they lack: the one place that reads the args of a
    checkpoint written by the released code or by an older version of this one.

    Returns a new Namespace (``args`` is not changed): every flag of ``get_args_parser``, its saved value where there
    is one, else its default (each flag added since defaults to the released behaviour); saved entries that are not
    flags (``world_size``, ``rank``, flags since removed) are kept as they are. Values are not checked.
    """
    saved = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return argparse.Namespace(**{**vars(get_args_parser().parse_args([])), **saved})


DESCRIPTION = ("Pretrain a ViT with CrOC (Cross-View Online Clustering, CVPR 2023). The released flags come first, by "
               "topic, with the released defaults; the sections named 'added' hold the flags the released code does "
               "not have. Boolean flags take true/false. docs/training.md describes the options.")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and validate ``argv``; a bad value exits with status 2 and one line naming the flag."""
    parser = OneLineErrorParser("CrOC", usage="python main_croc.py [-h] [--flag VALUE ...]", description=DESCRIPTION,
                                parents=[get_args_parser()])
    args = parser.parse_args(argv)
    try:
        return validate_args(args)
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":  # pragma: no cover - quick look at the resolved flags
    print(parse_args(sys.argv[1:]))
