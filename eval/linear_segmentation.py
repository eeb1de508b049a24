"""Linear-probe semantic segmentation on a frozen backbone: the authors' LC protocol and Leopart's.

docs/evaluation.md sections 1 (LC, default) and 1b (``--protocol leopart``).

    # LC on Pascal VOC 2012 (trainaug -> val), released CrOC checkpoint, one GPU
    python -m eval.linear_segmentation --pretrained_weights croc_coco.pth --dataset voc \
        --data_path /data/VOCdevkit --output_dir out/lc_voc
    # Leopart protocol on COCO-Things
    python -m eval.linear_segmentation --pretrained_weights croc_coco.pth --protocol leopart \
        --dataset coco_things --data_path /data/coco --output_dir out/leopart_things
    # a CPU run on the embedded synthetic scenes (a minute or two)
    python -m eval.linear_segmentation --arch vit_tiny --dataset synthetic --input_size 112 --epochs 5 \
        --synthetic_train_images 200 --synthetic_val_images 50 --output_dir out/lc_synthetic

Resampling follows each protocol's own code (eval/seg_transforms.py): LC as the authors' evaluation fork (OpenCV
bicubic / nearest, train affine border labelled 0 unless ``--border_label 255``, COCO masks resized before the
augmentation), Leopart with PIL bilinear / nearest. Feature cache: val features are computed once and kept (CPU,
``--cache_dtype``, float32 by default) whenever they fit in ``--cache_max_gb``; train features are cached only with
``--train_aug false``, because both protocols augment the training images (LC: flip/scale/rotate, Leopart: random
resized crop/flip) and so need a backbone pass per image and epoch.
"""

import argparse
import math
import os
import time

import cv2
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from croc_utils.atomic_io import save_checkpoint
from croc_utils.cli import (
    OneLineErrorParser,
    UsageError,
    bool_flag,
    bounded,
    fraction,
    non_negative_float,
    non_negative_int,
    output_dir,
    positive_float,
    positive_int,
    run_cli,
)
from croc_utils.distributed import fix_random_seeds
from eval.features import (
    add_backbone_args,
    check_input_size,
    check_n_last_blocks,
    extract_features,
    feature_cache_gb,
    patch_features,
    write_json,
)
from eval.metrics import IGNORE_INDEX, confusion_matrix, segmentation_scores
from eval.seg_datasets import DATASETS, build_segmentation_dataset, mask_fix_warning, mask_fixes
from eval.seg_transforms import EvalTransform, LCTrainTransform, LeopartEvalTransform, LeopartTrainTransform
from models.pretrained import load_backbone

# Per-protocol defaults; the CLI overrides epochs / lr / batch_size / n_last_blocks.
PROTOCOLS = {
    "lc": {"epochs": 60, "lr": 0.1, "batch_size": 16, "n_last_blocks": 2, "train_fraction": 1.0, "logit_size": None},
    "leopart": {"epochs": 25, "lr": 0.01, "batch_size": 120, "n_last_blocks": 1, "train_fraction": 0.1,
                "logit_size": 100, "momentum": 0.9, "weight_decay": 1e-4, "drop_at": 20, "gamma": 0.1},
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("linear_segmentation", description=__doc__.split("\n")[0])
    add_backbone_args(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="voc", choices=DATASETS, help="Evaluation dataset. Default: voc.")
    data.add_argument("--data_path", default="", type=str,
                      help="Dataset root (not needed for synthetic). Default: empty.")
    data.add_argument("--input_size", default=448, type=positive_int, help="Square input side in pixels. Default: 448.")
    data.add_argument("--coco_train_fraction", default=None, type=fraction,
                      help="Fraction of COCO train2017 used (fixed subset, seed 400). Default: 1 (lc), 0.1 "
                           "(leopart).")
    data.add_argument("--synthetic_train_images", default=200, type=positive_int,
                      help="Train scenes of --dataset synthetic. Default: 200.")
    data.add_argument("--synthetic_val_images", default=50, type=positive_int,
                      help="Val scenes of --dataset synthetic. Default: 50.")
    data.add_argument("--num_workers", default=4, type=non_negative_int, help="Data-loading processes. Default: 4.")
    probe = parser.add_argument_group("protocol and probe")
    probe.add_argument("--protocol", default="lc", choices=sorted(PROTOCOLS),
                       help="lc: the authors' protocol (docs/evaluation.md section 1, default); leopart: section 1b.")
    probe.add_argument("--n_last_blocks", default=None, type=positive_int,
                       help="Concatenate the patch tokens of the last n blocks. Default: 2 (lc), 1 (leopart).")
    probe.add_argument("--epochs", default=None, type=positive_int, help="Default: 60 (lc), 25 (leopart).")
    probe.add_argument("--lr", default=None, type=positive_float, help="Default: 0.1 Adam (lc), 0.01 SGD (leopart).")
    probe.add_argument("--batch_size", default=None, type=positive_int, help="Default: 16 (lc), 120 (leopart).")
    probe.add_argument("--train_aug", default=True, type=bool_flag,
                       help="Protocol's train augmentation (true, faithful; default). false: plain resize, which lets "
                            "the train features be cached (faster, not the protocol).")
    probe.add_argument("--border_label", default=0, type=bounded(int, 0, 255),
                       help="LC train: label of the pixels the scale/rotation brings in from outside the image. 0 "
                            "(default) as the authors' fork (VOC background, COCO's first super-category); 255 "
                            "ignores them in the loss.")
    speed = parser.add_argument_group("feature cache")
    speed.add_argument("--cache_max_gb", default=16.0, type=non_negative_float,
                       help="Largest feature cache (CPU) to keep; 0 disables caching. Default: 16.")
    speed.add_argument("--cache_dtype", default="float32", choices=["float32", "float16"],
                       help="Precision of cached features. float32 (default) keeps the features as computed; "
                            "float16 halves the memory.")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", default=0, type=int,
                     help="Seed of the run (head, data order, views, synthetic scenes). Default: 0.")
    run.add_argument("--output_dir", default=".", type=str,
                     help="Where results.json and the heads go. Default: the current folder.")
    return parser


def resolve_protocol(args: argparse.Namespace) -> dict:
    """Protocol constants with the CLI overrides applied (also written back into ``args`` for the JSON)."""
    cfg = dict(PROTOCOLS[args.protocol])
    for key in ("epochs", "lr", "batch_size", "n_last_blocks"):
        if getattr(args, key) is None:
            setattr(args, key, cfg[key])
        cfg[key] = getattr(args, key)
    if args.coco_train_fraction is not None:
        cfg["train_fraction"] = args.coco_train_fraction
    check_input_size(args.input_size, args.patch_size)  # each flag's own range is its argparse type
    if args.dataset == "synthetic" and args.input_size < 16:
        raise UsageError(f"--input_size {args.input_size} is below 16 px, the smallest synthetic scene")
    return cfg


# ===== head, logits, optimiser =====

def head_logits(head: nn.Conv2d, feats: torch.Tensor, size: int) -> torch.Tensor:
    """Class logits (B, C, size, size) from token features (B, C_in, h, w): the 1x1 head, then one bilinear resize.

    Both protocols resize once: LC its logits 28 -> 448 (the fork), Leopart its tokens 28 -> 100 in training and
    28 -> 448 in the final evaluation. A 1x1 convolution commutes with bilinear resizing (each output is a convex
    combination of inputs), so the head runs on the token grid in every case.
    """
    logits = head(feats.float())
    if logits.shape[-2:] != (size, size):
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    return logits


def build_optimizer(head: nn.Module, protocol: str, cfg: dict):
    """LC: Adam, constant lr. Leopart: SGD (momentum .9, wd 1e-4), lr x0.1 at epoch 20 (per-epoch scheduler)."""
    if protocol == "lc":
        return torch.optim.Adam(head.parameters(), lr=cfg["lr"]), None
    opt = torch.optim.SGD(head.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=cfg["drop_at"], gamma=cfg["gamma"])


# ===== batches of features: computed on the fly or read from a cache =====

def backbone_batches(model, loader, n_last_blocks: int, device):
    """(features (B, C, h, w), masks (B, S, S)) computed per batch (the path augmentation needs)."""
    for images, masks in loader:
        yield patch_features(model, images.to(device, non_blocking=True), n_last_blocks), masks.to(device)


def cached_batches(feats: torch.Tensor, masks: torch.Tensor, batch_size: int, device, shuffle: bool = False,
                   drop_last: bool = False):
    """The same pairs read from a CPU cache (N, C, h, w) / (N, S, S) in ``batch_size`` slices."""
    order = torch.randperm(len(feats)) if shuffle else torch.arange(len(feats))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield feats[idx].to(device).float(), masks[idx].to(device).long()


# ===== train / evaluate =====

def train_one_epoch(head: nn.Conv2d, batches, optimizer, out_size: int, logit_size: int | None) -> float:
    """One pass of cross-entropy (ignore 255) training of the head; returns the mean loss."""
    head.train()
    total, count = 0.0, 0
    for feats, masks in batches:
        target_size = logit_size or out_size
        logits = head_logits(head, feats, target_size)
        if masks.shape[-1] != target_size:  # Leopart trains against masks resized (nearest) to the logit size
            masks = F.interpolate(masks[:, None].float(), size=(target_size, target_size), mode="nearest")[:, 0]
        loss = F.cross_entropy(logits, masks.long(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item(), count + 1
    if count == 0:
        raise UsageError("no training batch: the train set is smaller than --batch_size")
    if not math.isfinite(total):
        raise UsageError(f"the probe's train loss is {total / count} (diverged): lower --lr")
    return total / count


@torch.no_grad()
def evaluate(head: nn.Conv2d, batches, num_classes: int, out_size: int) -> torch.Tensor:
    """Dataset-level confusion matrix (C, C) of argmax predictions at ``out_size`` against the masks."""
    head.eval()
    conf = None
    for feats, masks in batches:
        pred = head_logits(head, feats, out_size).argmax(1)
        batch_conf = confusion_matrix(pred, masks.to(pred.device), num_classes)
        conf = batch_conf if conf is None else conf + batch_conf
    return conf.cpu()


# ===== main =====

def build_transforms(args) -> tuple:
    """(train, val) paired transforms of the protocol; ``--train_aug false`` trains on the val transform."""
    size = args.input_size
    if args.protocol == "lc":
        # the fork's COCO reader resizes the mask to 448 x 448 before the augmentation; its VOC reader does not
        train_tf = LCTrainTransform(size, border_label=args.border_label, mask_first=args.dataset.startswith("coco"))
        val_tf = EvalTransform(size)
    else:
        train_tf, val_tf = LeopartTrainTransform(size), LeopartEvalTransform(size)
    return (train_tf if args.train_aug else val_tf), val_tf


def build_data(args, cfg: dict):
    """Train and val datasets with the protocol's paired transforms."""
    train_tf, val_tf = build_transforms(args)
    size = args.input_size
    common = {"train_fraction": cfg["train_fraction"], "seed": args.seed,
              "synthetic_size": size if args.dataset == "synthetic" else 224}
    train = build_segmentation_dataset(args.dataset, args.data_path, "train", train_tf,
                                       synthetic_images=args.synthetic_train_images, **common)
    val = build_segmentation_dataset(args.dataset, args.data_path, "val", val_tf,
                                     synthetic_images=args.synthetic_val_images, **common)
    return train, val, train_tf


def feature_source(model, dataset, args, cfg: dict, cacheable: bool, train: bool):
    """A zero-argument callable returning one epoch's batches, from a cache when allowed and small enough."""
    grid = (args.input_size // args.patch_size,) * 2
    dtype = getattr(torch, args.cache_dtype)
    gb = feature_cache_gb(len(dataset), cfg["n_last_blocks"] * model.embed_dim, grid, dtype)
    name, drop_last = ("train" if train else "val"), train and len(dataset) > cfg["batch_size"]
    loader_args = {"batch_size": cfg["batch_size"], "num_workers": args.num_workers,
                   "pin_memory": args.device != "cpu"}
    if cacheable and gb <= args.cache_max_gb:
        print(f"caching {name} features ({gb:.2f} GiB, {args.cache_dtype})")
        loader = DataLoader(dataset, shuffle=False, **loader_args)  # every image once, nothing dropped
        feats, masks = extract_features(model, loader, cfg["n_last_blocks"], args.device, dtype,
                                        desc=f"{name} features")
        return lambda: cached_batches(feats, masks, cfg["batch_size"], args.device, shuffle=train,
                                      drop_last=drop_last)
    reason = "augmented every epoch" if not cacheable else f"{gb:.1f} GiB > --cache_max_gb"
    print(f"{name} features recomputed each epoch ({reason})")
    loader = DataLoader(dataset, shuffle=train, drop_last=drop_last, persistent_workers=args.num_workers > 0,
                        **loader_args)
    return lambda: backbone_batches(model, loader, cfg["n_last_blocks"], args.device)


def main(args: argparse.Namespace) -> dict:
    cfg = resolve_protocol(args)
    cv2.setNumThreads(1)  # as the fork: the DataLoader workers parallelise, OpenCV threads would oversubscribe
    fix_random_seeds(args.seed)
    output_dir(args.output_dir)
    t0 = time.time()
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, args.checkpoint_key, args.device)
    check_n_last_blocks(model, cfg["n_last_blocks"])
    train_set, val_set, train_tf = build_data(args, cfg)
    class_names = list(val_set.class_names)
    print(f"{args.dataset}: {len(train_set)} train / {len(val_set)} val images, {len(class_names)} classes, "
          f"protocol {args.protocol}")
    train_batches = feature_source(model, train_set, args, cfg, train_tf.deterministic, train=True)
    val_batches = feature_source(model, val_set, args, cfg, True, train=False)

    head = nn.Conv2d(cfg["n_last_blocks"] * model.embed_dim, len(class_names), kernel_size=1).to(args.device)
    optimizer, scheduler = build_optimizer(head, args.protocol, cfg)
    history, best = [], None
    for epoch in tqdm(range(cfg["epochs"]), desc="epochs", disable=None):
        loss = train_one_epoch(head, train_batches(), optimizer, args.input_size, cfg["logit_size"])
        if scheduler is not None:
            scheduler.step()
        scores = segmentation_scores(evaluate(head, val_batches(), len(class_names), args.input_size), class_names)
        history.append({"epoch": epoch, "train_loss": loss, "miou": scores["miou"]})
        print(f"epoch {epoch}: train loss {loss:.4f}, val mIoU {100 * scores['miou']:.2f}")
        if best is None or scores["miou"] > best["miou"]:
            best = {"epoch": epoch, **scores}
            save_head(head, os.path.join(args.output_dir, "head_best.pth"), epoch, scores["miou"], args)
    save_head(head, os.path.join(args.output_dir, "head_last.pth"), epoch, scores["miou"], args)
    fixes = {"train": train_set, "val": val_set}
    warning = mask_fix_warning(fixes)  # read once all epochs ran, so the counts are complete
    if warning:
        print(warning)
    result = {"protocol": args.protocol, "dataset": args.dataset, "class_names": class_names,
              "last": {"epoch": epoch, **scores}, "best": best, "history": history,
              "mask_fixes": {name: mask_fixes(ds) for name, ds in fixes.items()},
              "seconds": time.time() - t0, "args": vars(args)}
    write_json(os.path.join(args.output_dir, "results.json"), result)
    print(f"mIoU last epoch ({epoch}): {100 * scores['miou']:.2f}; best epoch ({best['epoch']}): "
          f"{100 * best['miou']:.2f} (the released numbers are best-epoch)")
    return result


def save_head(head: nn.Module, path: str, epoch: int, miou: float, args) -> None:
    save_checkpoint({"head": head.state_dict(), "epoch": epoch, "miou": miou, "args": vars(args)}, path)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
