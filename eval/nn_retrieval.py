"""Dense nearest-neighbour retrieval: segmentation by label transfer from a memory of labelled train patches.

docs/evaluation.md "Dense nearest-neighbour retrieval". The in-context scene understanding protocol of Balazevic et
al. (NeurIPS 2023), run as its public reproduction (open-hummingbird-eval) runs it. Nothing is trained:

* memory: patch features (last block, after the final norm) of every train image, seen in ``augmentation_epochs``
  augmented versions (colour jitter, random resized crop of area scale .5..2), L2-normalised. The label of a memory
  patch is the fraction of its pixels in each class, ignore pixels counted as class 0 (as the reproduction does);
* bounded memory (``memory_size``): each augmented image keeps ``memory_size // (images * augmentation_epochs)``
  patches, rare classes first: a patch scores the sum, over the classes present in it, of how many of the image's
  patches contain that class, times a uniform draw; the lowest scores are kept;
* retrieval: the k = 30 memory patches of highest cosine similarity, exact (chunked matrix products in torch, or
  faiss's flat inner-product index when installed and asked for);
* label transfer: softmax(cosine / 0.02) over the k neighbours weights their label vectors; the patch-grid map is
  upsampled bilinearly to the mask and the argmax taken; ignore pixels are left out of the scores;
* scores: the plain mIoU (predicted class ids as they are) and the Hungarian-matched mIoU (predicted classes matched
  one-to-one to true classes on IoU first), the number the reproduction reports.

    python -m eval.nn_retrieval --pretrained_weights croc_coco.pth --dataset voc --data_path /data/VOCdevkit \
        --input_size 512 --memory_size 10240000 --output_dir out/retrieval_voc
    python -m eval.nn_retrieval --arch vit_pico --patch_size 8 --dataset synthetic --synthetic_style texture \
        --input_size 64 --memory_images 600 --eval_split dev --output_dir out/retrieval_synthetic

ADE20K (``--dataset ade20k``) has the reproduction's 151 classes: "other" (mask 0) is class 0 of the memory and
left out of the scores (docs/evaluation.md). Writes ``retrieval.json`` in ``--output_dir``.
"""

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import ColorJitter, InterpolationMode, RandomResizedCrop
from tqdm import tqdm

from croc_utils.atomic_io import atomic_write
from croc_utils.cli import OneLineErrorParser, UsageError, non_negative_int, positive_float, positive_int, run_cli
from croc_utils.synthetic import SCENE_STYLES
from eval.features import add_backbone_args, check_input_size, patch_features
from eval.metrics import IGNORE_INDEX, confusion_matrix, hungarian_match, segmentation_scores
from eval.probe import cache_features, patch_class_fractions
from eval.probe_data import DEV_OFFSET, POOL_OFFSET
from eval.seg_datasets import DATASETS, SyntheticSegmentation, build_segmentation_dataset
from eval.seg_transforms import LeopartEvalTransform, to_tensors
from models.pretrained import load_backbone

__all__ = ["Memory", "RetrievalConfig", "RetrievalTrainTransform", "build_memory", "evaluate_on_features",
           "evaluate_on_tensors", "evaluate_retrieval", "hungarian_confusion", "knn", "memory_labels", "predict",
           "rare_first", "retrieval_scores", "retrieve", "transfer_labels"]

# The val transform is the reproduction's: a PIL resize to S x S, bilinear (antialiased) image, nearest mask.
RetrievalEvalTransform = LeopartEvalTransform


@dataclass
class RetrievalConfig:
    """The protocol's settings (the reproduction's defaults)."""

    n_neighbours: int = 30
    temperature: float = 0.02
    memory_size: int = 0  # 0: every patch of every augmented image (unbounded)
    augmentation_epochs: int = 1
    seed: int = 0  # the uniform draws of the rare-class preference
    query_chunk: int = 4096  # query patches per similarity block
    key_chunk: int = 32768  # memory patches per similarity block: a block holds query_chunk x key_chunk floats
    knn_backend: str = "torch"  # torch | faiss
    batch_size: int = 32


# ===== augmentation of the memory images =====

class RetrievalTrainTransform:
    """The memory's augmentation: brightness, contrast, saturation and hue jitter (each by up to .1, each applied with
    probability .5, in that order) on the image, then one random resized crop (area scale .5..2, aspect 3/4..4/3;
    torchvision falls back to a central crop when no box of the drawn area fits) with the same box for the image
    (bilinear) and the mask (nearest), resized to ``size`` x ``size``. No flip."""

    deterministic = False

    def __init__(self, size: int = 224, scale=(0.5, 2.0), jitter: float = 0.1, p: float = 0.5):
        self.size, self.scale, self.p = size, scale, p
        self.jitters = [ColorJitter(brightness=jitter), ColorJitter(contrast=jitter), ColorJitter(saturation=jitter),
                        ColorJitter(hue=jitter)]

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.convert("RGB")
        for jitter in self.jitters:
            if torch.rand(1).item() < self.p:
                image = jitter(image)
        top, left, h, w = RandomResizedCrop.get_params(image, self.scale, (3 / 4, 4 / 3))
        size = [self.size, self.size]
        image = TF.resized_crop(image, top, left, h, w, size, InterpolationMode.BILINEAR, antialias=True)
        mask = TF.resized_crop(Image.fromarray(mask), top, left, h, w, size, InterpolationMode.NEAREST)
        return to_tensors(image, mask)


# ===== memory =====

@dataclass
class Memory:
    """L2-normalised patch features (M, D) and their class fractions (M, C), on one device."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]


def memory_labels(masks: torch.Tensor, grid: tuple[int, int], n_classes: int) -> torch.Tensor:
    """Class fractions of each patch, ignore pixels counted as class 0 (the reproduction's rule).

    Args:
        masks: (B, S, S') class ids in [0, n_classes) or 255; S, S' multiples of the grid (h, w).
    Returns:
        (B, h * w, n_classes) on the CPU: row p is the mean one-hot label of patch p's pixels (row-major order).
    """
    masks = torch.where(masks == IGNORE_INDEX, torch.zeros_like(masks), masks).cpu()
    fractions, _ = patch_class_fractions(masks, grid, n_classes)
    return fractions.reshape(masks.shape[0], grid[0] * grid[1], n_classes)


def rare_first(labels: torch.Tensor, keep: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (B, keep) of the patches each image keeps in a bounded memory, rarest classes first.

    A patch's score is sum_c [c in patch] * f_c, with f_c the number of the image's patches that contain class c,
    multiplied by a uniform draw (B, N) from ``generator`` (on the CPU, so the choice does not depend on the
    device); a patch without any labelled pixel scores 1e6. The ``keep`` lowest scores are kept.

    Args:
        labels: (B, N, C) class fractions of the patches.
    """
    present = (labels > 0).float()  # (B, N, C)
    freq = present.sum(1)  # (B, C): patches of the image holding each class
    score = torch.einsum("bnc,bc->bn", present, freq)
    draw = torch.rand(score.shape, generator=generator).to(score.device)
    score = torch.where(present.any(-1), score * draw, torch.full_like(score, 1e6))
    return score.topk(keep, dim=1, largest=False).indices


def flat_patch_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Patch tokens of the last block after the final norm, (B, h * w, D) in row-major patch order."""
    return patch_features(model, images).flatten(2).transpose(1, 2)


@torch.no_grad()
def build_memory(model: nn.Module, loader, n_classes: int, cfg: RetrievalConfig,
                 device: str | torch.device = "cpu", n_images: int | None = None) -> Memory:
    """Memory of ``cfg.augmentation_epochs`` passes over ``loader`` (batches of (images (B, 3, S, S), masks
    (B, S, S))), on ``device``. ``n_images``: images per pass (default ``len(loader.dataset)``), for the per-image
    share of a bounded memory; a share above the patches of an image keeps them all."""
    n_images = n_images if n_images is not None else len(loader.dataset)
    generator = torch.Generator().manual_seed(cfg.seed)
    keep = max(1, cfg.memory_size // max(1, n_images * cfg.augmentation_epochs)) if cfg.memory_size else 0
    features, labels = [], []
    for _ in tqdm(range(cfg.augmentation_epochs), desc="memory passes", disable=None):
        for images, masks in tqdm(loader, desc="memory", leave=False, disable=None):
            feats = flat_patch_features(model, images.to(device, non_blocking=True))  # (B, N, D)
            grid = (images.shape[-2] // model.patch_size, images.shape[-1] // model.patch_size)
            lab = memory_labels(masks, grid, n_classes).to(device)  # (B, N, C)
            if keep and keep < feats.shape[1]:
                idx = rare_first(lab, keep, generator)  # (B, keep)
                feats = feats.gather(1, idx[..., None].expand(-1, -1, feats.shape[-1]))
                lab = lab.gather(1, idx[..., None].expand(-1, -1, n_classes))
            features.append(F.normalize(feats.flatten(0, 1), dim=1))
            labels.append(lab.flatten(0, 1))
    return Memory(torch.cat(features), torch.cat(labels))


# ===== retrieval =====

def knn(queries: torch.Tensor, keys: torch.Tensor, k: int, query_chunk: int = 4096,
        key_chunk: int = 32768) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k inner products, in blocks of at most ``query_chunk`` x ``key_chunk`` scores.

    Args:
        queries: (Q, D); keys: (M, D) on the same device (the memory: normalised rows, so scores are cosines when
            the queries are normalised too).
    Returns:
        scores (Q, k) in decreasing order and their key indices (Q, k).
    """
    if k > keys.shape[0]:
        raise ValueError(f"cannot retrieve {k} neighbours from a memory of {keys.shape[0]} patches")
    scores, indices = [], []
    for q in queries.split(query_chunk):
        best_s = q.new_empty(q.shape[0], 0)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)
        for start in range(0, keys.shape[0], key_chunk):
            s = q @ keys[start:start + key_chunk].T  # (q, key_chunk)
            top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
            best_s, pos = torch.cat([best_s, top_s], 1).topk(min(k, best_s.shape[1] + top_s.shape[1]), dim=1)
            best_i = torch.cat([best_i, top_i + start], 1).gather(1, pos)
        scores.append(best_s)
        indices.append(best_i)
    return torch.cat(scores), torch.cat(indices)


class FaissIndex:
    """faiss's exact inner-product index (IndexFlatIP) over the memory, on the CPU."""

    def __init__(self, keys: torch.Tensor):
        import faiss

        self.index = faiss.IndexFlatIP(keys.shape[1])
        self.index.add(keys.detach().float().cpu().contiguous().numpy())

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores, idx = self.index.search(queries.detach().float().cpu().contiguous().numpy(), k)
        return torch.from_numpy(scores).to(queries.device), torch.from_numpy(idx).to(queries.device)


def transfer_labels(scores: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor,
                    temperature: float = 0.02) -> torch.Tensor:
    """Label of each query (Q, C) = sum_j softmax(scores / temperature)_j * labels[indices_j].

    Args:
        scores: (Q, k) cosine similarities of the neighbours; indices: (Q, k) their rows in ``labels`` (M, C).
    """
    weights = torch.softmax(scores / temperature, dim=1)  # (Q, k)
    return torch.einsum("qk,qkc->qc", weights, labels[indices])


@torch.no_grad()
def retrieve(feats: torch.Tensor, grid: tuple[int, int], memory: Memory, cfg: RetrievalConfig,
             out_size: tuple[int, int], index: "FaissIndex | None" = None) -> torch.Tensor:
    """Label maps (B, H, W) of patch features (B, h * w, D) (row-major patches of an h x w grid): retrieved patch
    labels (B, C, h, w) upsampled bilinearly to ``out_size``, argmax over classes."""
    b, n, d = feats.shape
    queries = F.normalize(feats.reshape(b * n, d), dim=1)
    if index is not None:
        scores, idx = index.search(queries, cfg.n_neighbours)
    else:
        scores, idx = knn(queries, memory.features, cfg.n_neighbours, cfg.query_chunk, cfg.key_chunk)
    patch_labels = transfer_labels(scores, idx, memory.labels, cfg.temperature)  # (B*N, C)
    patch_labels = patch_labels.reshape(b, *grid, -1).permute(0, 3, 1, 2)  # (B, C, h, w)
    return F.interpolate(patch_labels, size=out_size, mode="bilinear", align_corners=False).argmax(1)


def predict(model: nn.Module, images: torch.Tensor, memory: Memory, cfg: RetrievalConfig,
            out_size: tuple[int, int], index: "FaissIndex | None" = None) -> torch.Tensor:
    """Label maps (B, H, W) of images (B, 3, S, S'), see ``retrieve``."""
    grid = (images.shape[-2] // model.patch_size, images.shape[-1] // model.patch_size)
    return retrieve(flat_patch_features(model, images), grid, memory, cfg, out_size, index)


# ===== scores =====

def hungarian_confusion(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Confusion matrix (C, C) after matching predicted classes one-to-one to true classes on IoU.

    Returns the matched matrix (column j holds the pixels predicted as the class matched to true class j) and the
    mapping (C,) predicted class -> true class.
    """
    mapping = hungarian_match(conf.T)  # rows of conf.T: predicted classes, columns: true classes
    matched = torch.zeros_like(conf).index_add_(1, mapping.to(conf.device), conf)
    return matched, mapping


def retrieval_scores(conf: torch.Tensor, class_names: list[str]) -> dict:
    """Plain scores of a (true x predicted) confusion matrix, and the Hungarian-matched ones under "hungarian"."""
    matched, mapping = hungarian_confusion(conf)
    hungarian = segmentation_scores(matched, class_names) | {"mapping": mapping.tolist()}
    return segmentation_scores(conf, class_names) | {"miou_hungarian": hungarian["miou"], "hungarian": hungarian}


@torch.no_grad()
def evaluate_retrieval(model: nn.Module, memory_loader, val_loader, class_names, cfg: RetrievalConfig,
                       device: str | torch.device = "cpu", *, memory: Memory | None = None,
                       return_predictions: bool = False) -> dict:
    """Build the memory from ``memory_loader`` (unless given), label every val image, score both mIoUs.

    mIoU values are fractions in [0, 1]. ``return_predictions``: also return the label maps (V, H, W) under
    "predictions" (CPU, uint8 when the classes fit) for comparisons.
    """
    n_classes = len(class_names)
    t0 = time.time()
    if memory is None:
        memory = build_memory(model, memory_loader, n_classes, cfg, device)
    if cfg.n_neighbours > len(memory):
        raise UsageError(f"--n_neighbours {cfg.n_neighbours}: cannot retrieve that many neighbours from a memory of "
                             f"{len(memory)} patches")
    t_memory = time.time() - t0
    index = FaissIndex(memory.features) if cfg.knn_backend == "faiss" else None
    conf = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device)
    predictions = []
    for images, masks in tqdm(val_loader, desc="retrieval", disable=None):
        masks = masks.to(device)
        pred = predict(model, images.to(device), memory, cfg, tuple(masks.shape[-2:]), index)
        conf += confusion_matrix(pred, masks, n_classes)
        if return_predictions:
            predictions.append(pred.to("cpu", torch.uint8 if n_classes <= 256 else torch.long))
    out = retrieval_scores(conf, list(class_names)) | {
        "memory_patches": len(memory), "confusion": conf.tolist(),
        "seconds": {"memory": t_memory, "total": time.time() - t0}}
    if return_predictions:
        out["predictions"] = torch.cat(predictions)
    return out


@torch.no_grad()
def evaluate_on_features(memory_feats: torch.Tensor, memory_masks: torch.Tensor, val_feats: torch.Tensor,
                         val_masks: torch.Tensor, class_names, cfg: RetrievalConfig,
                         device: str | torch.device = "cpu") -> dict:
    """Retrieval on feature maps computed once, without augmentation and keeping every memory patch (as the dense
    probe's cached features, or the fixed features of its floors): memory (M, D, h, w) and val (V, D, h, w) with
    masks (M | V, S, S') uint8. mIoU in [0, 1]."""
    n_classes, grid = len(class_names), tuple(val_feats.shape[-2:])

    def rows(feats):  # (N, D, h, w) -> (N, h * w, D)
        return feats.flatten(2).transpose(1, 2)

    memory = Memory(F.normalize(rows(memory_feats).flatten(0, 1).float(), dim=1).to(device),
                    memory_labels(memory_masks, grid, n_classes).flatten(0, 1).to(device))
    if cfg.n_neighbours > len(memory):
        raise UsageError(f"--n_neighbours {cfg.n_neighbours}: cannot retrieve that many neighbours from a memory of "
                             f"{len(memory)} patches")
    conf = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device)
    for feats, masks in zip(val_feats.split(cfg.batch_size), val_masks.split(cfg.batch_size)):
        masks = masks.to(device).long()
        pred = retrieve(rows(feats).to(device).float(), grid, memory, cfg, tuple(masks.shape[-2:]))
        conf += confusion_matrix(pred, masks, n_classes)
    return retrieval_scores(conf, list(class_names)) | {"memory_patches": len(memory), "confusion": conf.tolist()}


def evaluate_on_tensors(model: nn.Module, memory_images: torch.Tensor, memory_masks: torch.Tensor,
                        val_images: torch.Tensor, val_masks: torch.Tensor, class_names, cfg: RetrievalConfig,
                        device: str | torch.device = "cpu") -> dict:
    """Retrieval on images prepared once, as the dense probe's data (``eval.probe_data.ProbeData``): images
    (N, 3, S, S), masks (N, S, S) uint8; one unaugmented pass, every memory patch kept. mIoU in [0, 1]."""
    feats = [cache_features(model, images, batch_size=cfg.batch_size, device=device)
             for images in (memory_images, val_images)]
    return evaluate_on_features(feats[0], memory_masks, feats[1], val_masks, class_names, cfg, device)


# ===== command line =====

def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("nn_retrieval", description=__doc__.split("\n")[0])
    add_backbone_args(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="voc", choices=DATASETS, help="Dataset. Default: voc.")
    data.add_argument("--data_path", default="", type=str,
                      help="Root of the dataset (not for synthetic). Default: empty.")
    data.add_argument("--input_size", default=512, type=positive_int,
                      help="Side of the memory and val inputs (512 in the reproduction's ViT/16 table). Default: 512.")
    data.add_argument("--memory_images", default=0, type=non_negative_int,
                      help="Use the first N train images (0: all; synthetic: 0 means 600 scenes). Default: 0.")
    data.add_argument("--val_images", default=0, type=non_negative_int,
                      help="Score the first N val images (0: all; synthetic: 0 means 200 scenes). Default: 0.")
    data.add_argument("--eval_split", default="val", choices=["val", "dev"],
                      help="Synthetic only: the val split or the train-split development set. Default: val.")
    data.add_argument("--synthetic_size", default=0, type=non_negative_int,
                      help="Side at which synthetic scenes are drawn (0: --input_size). Default: 0.")
    data.add_argument("--synthetic_style", default="default", choices=list(SCENE_STYLES),
                      help="Layout of the synthetic scenes. Default: default.")
    data.add_argument("--data_seed", default=0, type=int, help="Seed of the synthetic scenes. Default: 0.")
    data.add_argument("--batch_size", default=32, type=positive_int, help="Images per batch. Default: 32.")
    data.add_argument("--num_workers", default=4, type=non_negative_int, help="Data loader workers. Default: 4.")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--memory_size", default=10240000, type=non_negative_int,
                          help="Patches kept in the memory (rare classes first); 0 keeps every patch. "
                               "Default: 10240000 (1024 x 10^4, the largest reported).")
    protocol.add_argument("--augmentation_epochs", default=2, type=positive_int,
                          help="Augmented passes over the train images (2 in the reproduction's table). Default: 2.")
    protocol.add_argument("--n_neighbours", default=30, type=positive_int,
                          help="Neighbours per patch (k). Default: 30.")
    protocol.add_argument("--temperature", default=0.02, type=positive_float,
                          help="Softmax temperature of the label transfer. Default: 0.02.")
    search = parser.add_argument_group("search")
    search.add_argument("--knn_backend", default="torch", choices=["torch", "faiss"],
                        help="Exact search: chunked torch matrix products on --device, or faiss's flat "
                             "inner-product index on the CPU (needs faiss installed). Default: torch.")
    search.add_argument("--query_chunk", default=4096, type=positive_int,
                        help="Query patches per similarity block. Default: 4096.")
    search.add_argument("--key_chunk", default=32768, type=positive_int,
                        help="Memory patches per similarity block. Default: 32768.")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", default=0, type=int,
                     help="Seed of the augmentation and of the memory's draws. Default: 0.")
    run.add_argument("--output_dir", default=".", type=str,
                     help="Where retrieval.json goes. Default: the current folder.")
    return parser


def build_datasets(args: argparse.Namespace):
    """(memory dataset with the augmentation, val dataset), each limited to its image count."""
    train_tf, val_tf = RetrievalTrainTransform(args.input_size), RetrievalEvalTransform(args.input_size)
    if args.dataset == "synthetic":
        size = args.synthetic_size or args.input_size
        split, first = ("val", 0) if args.eval_split == "val" else ("train", DEV_OFFSET)
        memory = SyntheticSegmentation("train", args.memory_images or 600, size, args.data_seed, train_tf,
                                       first_index=POOL_OFFSET, cache=True, style=args.synthetic_style)
        val = SyntheticSegmentation(split, args.val_images or 200, size, args.data_seed, val_tf, first_index=first,
                                    cache=True, style=args.synthetic_style)
        return memory, val
    memory, val = (build_segmentation_dataset(args.dataset, args.data_path, split, tf)
                   for split, tf in (("train", train_tf), ("val", val_tf)))
    limit = [torch.utils.data.Subset(ds, range(min(n, len(ds)))) if n else ds
             for ds, n in ((memory, args.memory_images), (val, args.val_images))]
    return limit[0], limit[1]


def config_from_args(args: argparse.Namespace) -> RetrievalConfig:
    check_input_size(args.input_size, args.patch_size)  # the ranges of the numeric flags: their argparse types
    if args.dataset == "synthetic" and (args.synthetic_size or args.input_size) < 16:
        flag = "--synthetic_size" if args.synthetic_size else "--input_size"
        size = args.synthetic_size or args.input_size
        raise UsageError(f"{flag} {size} is below 16 px, the smallest synthetic scene")
    if args.knn_backend == "faiss":
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise UsageError("--knn_backend faiss needs the faiss package (pip install faiss-cpu)") from None
    return RetrievalConfig(n_neighbours=args.n_neighbours, temperature=args.temperature,
                           memory_size=args.memory_size, augmentation_epochs=args.augmentation_epochs,
                           seed=args.seed, query_chunk=args.query_chunk, key_chunk=args.key_chunk,
                           knn_backend=args.knn_backend, batch_size=args.batch_size)


def main(args: argparse.Namespace) -> dict:
    cfg = config_from_args(args)
    os.makedirs(args.output_dir, exist_ok=True)
    torch.manual_seed(args.seed)  # the random-init backbone and the augmentation draws
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, args.checkpoint_key, args.device)
    memory_set, val_set = build_datasets(args)
    if len(memory_set) == 0 or len(val_set) == 0:
        raise UsageError(f"--dataset {args.dataset}: empty train or val split")
    memory_loader = DataLoader(memory_set, batch_size=args.batch_size, num_workers=args.num_workers)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, num_workers=args.num_workers)
    names = list(getattr(val_set, "class_names", None) or val_set.dataset.class_names)
    result = evaluate_retrieval(model, memory_loader, val_loader, names, cfg, args.device)
    print(f"retrieval mIoU {100 * result['miou']:.2f} (Hungarian-matched {100 * result['miou_hungarian']:.2f}), "
          f"memory {result['memory_patches']} patches, {result['seconds']['total']:.1f} s")
    out = result | {"dataset": args.dataset, "class_names": names, "config": asdict(cfg), "args": vars(args)}
    path = os.path.join(args.output_dir, "retrieval.json")
    text = json.dumps(out, indent=1).encode()
    atomic_write(path, lambda f: f.write(text), size=len(text))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    run_cli(main, get_args_parser())
