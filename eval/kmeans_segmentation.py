"""Unsupervised semantic segmentation by K-means on frozen patch features.

docs/evaluation.md section 2. Val split only, 448x448 inputs, patch tokens of the last 4 blocks (after the
final norm) concatenated, standardised, PCA to 50 dims, K-means (100 iterations, 5 restarts, k-means++ seeding)
for 5 seeds, scores averaged. K <= #classes: Hungarian matching on IoU (unmatched clusters -> background);
K > #classes (overclustering): each cluster to the class of highest precision. Cluster maps and masks are compared
at 100x100 (nearest); mIoU is dataset-level.

    python -m eval.kmeans_segmentation --pretrained_weights croc_coco.pth --dataset voc \
        --data_path /data/VOCdevkit --n_clusters 0 100 300 500 --output_dir out/kmeans_voc
    python -m eval.kmeans_segmentation --arch vit_tiny --dataset synthetic --input_size 112 \
        --synthetic_val_images 50 --output_dir out/kmeans_synthetic

``--n_clusters 0`` means "the number of classes". The features of the val set are computed once (no augmentation).
"""

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from croc_utils.cli import (
    OneLineErrorParser,
    UsageError,
    non_negative_int,
    output_dir,
    positive_int,
    run_cli,
)
from eval.features import (
    add_backbone_args,
    check_input_size,
    check_n_last_blocks,
    extract_features,
    write_json,
)
from eval.kmeans import kmeans, resize_nearest, score_clusters, standardize_pca
from eval.seg_datasets import DATASETS, build_segmentation_dataset, mask_fix_warning, mask_fixes
from eval.seg_transforms import EvalTransform
from models.pretrained import load_backbone


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("kmeans_segmentation", description=__doc__.split("\n")[0])
    add_backbone_args(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="voc", choices=DATASETS, help="Dataset. Default: voc.")
    data.add_argument("--data_path", default="", type=str,
                      help="Root of the dataset (not for synthetic). Default: empty.")
    data.add_argument("--input_size", default=448, type=positive_int, help="Side of the val inputs. Default: 448.")
    data.add_argument("--synthetic_val_images", default=50, type=positive_int,
                      help="Val scenes of --dataset synthetic. Default: 50.")
    data.add_argument("--batch_size", default=32, type=positive_int, help="Images per feature batch. Default: 32.")
    data.add_argument("--num_workers", default=4, type=non_negative_int, help="Data loader workers. Default: 4.")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--n_last_blocks", default=4, type=positive_int,
                          help="Blocks whose patch tokens are concatenated. Default: 4.")
    protocol.add_argument("--pca_dim", default=50, type=positive_int,
                          help="PCA dimensions after standardising. Default: 50.")
    protocol.add_argument("--n_clusters", default=[0], type=non_negative_int, nargs="+",
                          help="K values to evaluate; 0 = number of classes (Hungarian). Default: 0.")
    protocol.add_argument("--n_seeds", default=5, type=positive_int, help="K-means runs averaged. Default: 5.")
    protocol.add_argument("--n_iter", default=100, type=positive_int, help="Lloyd iterations per run. Default: 100.")
    protocol.add_argument("--n_restarts", default=5, type=positive_int,
                          help="Restarts per run, lowest inertia kept. Default: 5.")
    protocol.add_argument("--mask_size", default=100, type=positive_int,
                          help="Side of the comparison grid. Default: 100.")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", default=0, type=int, help="Base seed: run i uses seed + i. Default: 0.")
    run.add_argument("--output_dir", default=".", type=str,
                     help="Where kmeans_results.json goes. Default: the current folder.")
    return parser


def run_kmeans_eval(feats: torch.Tensor, masks: torch.Tensor, class_names: list[str], n_clusters: list[int],
                    args) -> dict:
    """All (K, seed) runs on cached features (N, C, h, w) and masks (N, S, S); mean and std over seeds per K."""
    n, c, h, w = feats.shape
    x = standardize_pca(feats.permute(0, 2, 3, 1).reshape(-1, c), args.pca_dim, args.device)  # (N*h*w, pca_dim)
    small_masks = resize_nearest(masks.to(args.device), args.mask_size)
    results = {}
    for k in n_clusters:
        k = k or len(class_names)
        runs = []
        for i in range(args.n_seeds):
            labels = kmeans(x, k, args.n_iter, args.n_restarts, seed=args.seed + i)
            maps = resize_nearest(labels.reshape(n, h, w), args.mask_size)
            runs.append(score_clusters(maps, small_masks, k, class_names))
            print(f"K={k} seed {args.seed + i}: mIoU {100 * runs[-1]['miou']:.2f} ({runs[-1]['matching']})")
        mious = [r["miou"] for r in runs]
        results[str(k)] = {"miou_mean": float(np.mean(mious)), "miou_std": float(np.std(mious)), "runs": runs}
        print(f"K={k}: mIoU {100 * np.mean(mious):.2f} +- {100 * np.std(mious):.2f} over {len(mious)} seeds")
    return results


def check_args(args: argparse.Namespace) -> None:
    """What the flags' own ranges cannot say (each flag's range is its argparse type)."""
    check_input_size(args.input_size, args.patch_size)
    if args.dataset == "synthetic" and args.input_size < 16:
        raise UsageError(f"--input_size {args.input_size} is below 16 px, the smallest synthetic scene")


def main(args: argparse.Namespace) -> dict:
    check_args(args)
    output_dir(args.output_dir)
    t0 = time.time()
    torch.manual_seed(args.seed)
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, args.checkpoint_key, args.device)
    check_n_last_blocks(model, args.n_last_blocks)
    dim = model.embed_dim * args.n_last_blocks
    if args.pca_dim > dim:
        raise UsageError(f"--pca_dim {args.pca_dim} exceeds the feature dimension {dim}")
    val = build_segmentation_dataset(args.dataset, args.data_path, "val", EvalTransform(args.input_size),
                                     synthetic_images=args.synthetic_val_images,
                                     synthetic_size=args.input_size if args.dataset == "synthetic" else 224,
                                     seed=args.seed)
    vectors = len(val) * (args.input_size // args.patch_size) ** 2
    most = max(k or val.num_classes for k in args.n_clusters)
    if most > vectors:
        raise UsageError(f"--n_clusters {most} exceeds the {vectors} feature vectors of the val set (0 stands for the "
                         f"{val.num_classes} classes)")
    loader = DataLoader(val, batch_size=args.batch_size, num_workers=args.num_workers)
    # float16 on the CPU: 4 blocks of VOC val at 448 px would take ~7 GB in float32; the moments below are float64
    feats, masks = extract_features(model, loader, args.n_last_blocks, args.device, dtype=torch.float16)
    warning = mask_fix_warning({"val": val})
    if warning:
        print(warning)
    results = run_kmeans_eval(feats, masks, list(val.class_names), args.n_clusters, args)
    out = {"dataset": args.dataset, "class_names": list(val.class_names), "results": results,
           "mask_fixes": {"val": mask_fixes(val)}, "seconds": time.time() - t0, "args": vars(args)}
    write_json(f"{args.output_dir}/kmeans_results.json", out)
    return out


if __name__ == "__main__":
    run_cli(main, get_args_parser())
