"""DAVIS-2017 semi-supervised video object segmentation by label propagation (DINO's protocol), with J and F.

docs/evaluation.md section 3. Frames are resized so the short side is ``--short_side`` (480) and the long side
is floored to a multiple of 64; last-layer patch tokens (after the final norm) are L2-normalised; the context of a
frame is the first frame with its ground truth plus the ``--n_last_frames`` (7) previous frames with their
propagated soft labels; affinities exp(cos / 0.1) are restricted to a (2r+1)^2-patch neighbourhood
(``--size_mask_neighborhood`` r = 12), the ``--topk`` (5) largest per target patch over all context frames are kept
and normalised; the propagated labels are upsampled x patch size (bilinear), min-max normalised per object, arg-maxed,
resized (nearest) to the original frame size and written as indexed PNGs with the DAVIS palette. The scores (the
official DAVIS-2017 table) go to davis_results.json and to global_results-<split>.csv and
per-sequence_results-<split>.csv, laid out as the official evaluation writes them.

    python -m eval.video_segmentation --pretrained_weights croc_coco.pth --data_path /data/DAVIS \
        --output_dir out/davis
"""

import argparse
import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from croc_utils.cli import (
    OneLineErrorParser,
    UsageError,
    non_negative_int,
    output_dir,
    positive_float,
    positive_int,
    run_cli,
)
from croc_utils.colour import IMAGENET_MEAN, IMAGENET_STD
from eval.features import add_backbone_args, patch_features, write_json
from eval.metrics import DAVIS_MEASURES, davis_scores, sequence_jf
from eval.seg_datasets import DAVIS2017, image_size, read_image
from models.pretrained import load_backbone


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("video_segmentation", description=__doc__.split("\n")[0])
    add_backbone_args(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--data_path", required=True, type=str, help="DAVIS-2017 root (holding ImageSets/2017).")
    data.add_argument("--split", default="val", type=str,
                      help="Sequence list ImageSets/2017/<split>.txt. Default: val.")
    data.add_argument("--short_side", default=480, type=positive_int,
                      help="Frame short side after resizing. Default: 480.")
    protocol = parser.add_argument_group("propagation")
    protocol.add_argument("--n_last_frames", default=7, type=non_negative_int,
                          help="Previous frames in the context. Default: 7.")
    protocol.add_argument("--size_mask_neighborhood", default=12, type=non_negative_int,
                          help="Neighbourhood radius in patches (0: no restriction). Default: 12.")
    protocol.add_argument("--topk", default=5, type=positive_int,
                          help="Source patches kept per target patch. Default: 5.")
    protocol.add_argument("--temperature", default=0.1, type=positive_float,
                          help="Affinity exp(cos / T). Default: 0.1.")
    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", default=".", type=str,
                        help="Indexed PNGs go to <output_dir>/<sequence>/, the scores beside them. "
                             "Default: the current folder.")
    return parser


# ===== DAVIS palette and PNG output =====

def davis_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colour map of DAVIS / Pascal VOC: bit b of the label sets bit (7 - b // 3) of channel b % 3."""
    labels = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.uint8)
    for bit in range(8):  # 8 label bits at most, 3 per round: a fixed-size loop over bits, not over pixels
        for channel in range(3):
            palette[:, channel] |= (((labels >> (3 * bit + channel)) & 1) << (7 - bit)).astype(np.uint8)
    return palette


def write_indexed_png(labels: np.ndarray, path: str | Path) -> None:
    """Save a uint8 label map (H, W) as a palette PNG (DAVIS colours)."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().ravel().tolist())
    image.save(path, format="PNG")


# ===== result files =====

def csv_float(value: float) -> str:
    """A number as the official tables write it (pandas, float_format "%.3f"): NaN is an empty field."""
    return "" if math.isnan(value) else f"{value:.3f}"


def write_official_tables(scores: dict, output_dir: str | Path, split: str) -> tuple[Path, Path]:
    """global_results-<split>.csv and per-sequence_results-<split>.csv, laid out as the official evaluation writes
    them: header row, comma-separated, 3 decimals; the global table is one row of :data:`DAVIS_MEASURES`, the
    per-sequence one a row "<sequence>_<object id>,J-Mean,F-Mean" per object. Recalls and decays per object are in
    davis_results.json (the official per-sequence table has only the two means)."""
    global_path = Path(output_dir) / f"global_results-{split}.csv"
    per_sequence_path = Path(output_dir) / f"per-sequence_results-{split}.csv"
    with open(global_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(DAVIS_MEASURES)
        writer.writerow([csv_float(scores[m]) for m in DAVIS_MEASURES])
    with open(per_sequence_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["Sequence", "J-Mean", "F-Mean"])
        writer.writerows([name, csv_float(obj["J-Mean"]), csv_float(obj["F-Mean"])]
                         for name, obj in scores["per_object"].items())
    return global_path, per_sequence_path


def nan_to_none(value):
    """A copy of nested dicts / lists with NaN floats as None, so the JSON file is standard JSON."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


# ===== frames and features =====

def target_size(height: int, width: int, short_side: int = 480) -> tuple[int, int]:
    """(h, w) with the short side ``short_side`` and the long side floored to a multiple of 64 (DINO's rule)."""
    if height > width:
        return int((short_side * height / width) // 64 * 64), short_side
    return short_side, int((short_side * width / height) // 64 * 64)


def read_frame(path: Path, short_side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Frame -> (normalised image (1, 3, h, w) at the target size, original (H, W))."""
    image = read_image(path)  # 8-bit RGB, 16-bit greyscale scaled; an unreadable frame is named in one line
    h, w = target_size(image.height, image.width, short_side)
    if min(h, w) < 64:
        raise UsageError(f"{path}: {image.width}x{image.height} frame resized to short side {short_side} leaves a "
                         f"side under 64 px ({w}x{h}); raise --short_side")
    x = torch.from_numpy(np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0)
    x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return x.permute(2, 0, 1)[None], (image.height, image.width)


def frame_features(model, image: torch.Tensor) -> torch.Tensor:
    """L2-normalised last-layer patch tokens (D, h*w) of one frame (1, 3, H, W)."""
    return F.normalize(patch_features(model, image, n_last_blocks=1)[0].flatten(1), dim=0)


def one_hot(labels: np.ndarray, n_labels: int) -> torch.Tensor:
    """Label map (h, w) -> (n_labels, h*w) float one-hot."""
    return F.one_hot(torch.from_numpy(labels.astype(np.int64)).flatten(), n_labels).T.float()


# ===== propagation =====

def neighborhood_mask(h: int, w: int, radius: int, device=None) -> torch.Tensor:
    """(h*w, h*w) bool: source patch within ``radius`` patches of the target in both rows and columns."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)


def propagate(target: torch.Tensor, context_feats: torch.Tensor, context_labels: torch.Tensor, topk: int = 5,
              temperature: float = 0.1, neighborhood: torch.Tensor | None = None) -> torch.Tensor:
    """Soft labels of a target frame from its context frames.

    Args:
        target: (D, N) L2-normalised target patch features.
        context_feats: (M, D, N) L2-normalised features of M context frames.
        context_labels: (M, L, N) soft labels of the context frames.
        neighborhood: (N, N) bool, target x source patches allowed to match.
    Returns:
        (L, N): per target patch, the affinity-weighted mean of the labels of its ``topk`` best source patches over
        all context frames (ties with the k-th value are kept), affinity = exp(cos / temperature).
    """
    m, _, n = context_feats.shape
    aff = torch.exp(torch.einsum("dt,mds->mts", target, context_feats) / temperature)  # (M, N_tgt, N_src)
    if neighborhood is not None:
        aff = aff * neighborhood
    aff = aff.permute(1, 0, 2).reshape(n, m * n)  # (N_tgt, M*N_src)
    kth = aff.topk(topk, dim=1).values[:, -1:]
    aff = torch.where(aff >= kth, aff, torch.zeros_like(aff))
    aff = aff / aff.sum(1, keepdim=True)
    labels = context_labels.permute(1, 0, 2).reshape(-1, m * n)  # (L, M*N_src)
    return labels @ aff.T


def labels_to_mask(soft: torch.Tensor, grid: tuple[int, int], patch_size: int, size: tuple[int, int]) -> np.ndarray:
    """Soft labels (L, h*w) -> uint8 label map at the original ``size`` (H, W).

    Upsampled x ``patch_size`` (bilinear), each label channel min-max normalised (as DINO does before its argmax),
    argmax, then resized to the frame's original size with nearest neighbour.
    """
    up = F.interpolate(soft.reshape(1, -1, *grid), scale_factor=patch_size, mode="bilinear", align_corners=False)[0]
    flat = up.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    up = torch.where(hi > 0, (up - lo) / (hi - lo).clamp_min(1e-12), up)
    pred = up.argmax(0).to(torch.uint8).cpu().numpy()
    return np.asarray(Image.fromarray(pred).resize((size[1], size[0]), Image.NEAREST))


def nothing_to_propagate(seq: str, first_mask: np.ndarray, frames: list[Path],
                         grid: tuple[int, int]) -> list[np.ndarray]:
    """All-background label maps for ``frames`` of a sequence whose first annotation has no object on the feature
    grid: propagating only background gives background everywhere, so the backbone is not run."""
    reason = (f"the first annotation's objects vanish on the {grid[0]}x{grid[1]} feature grid"
              if (first_mask % 255).any() else "the first annotation has no object")
    print(f"{seq}: {reason}; nothing to propagate, every frame is background")
    return [np.zeros(image_size(frame), dtype=np.uint8) for frame in frames]  # image_size reads the header only


@torch.no_grad()
def segment_sequence(model, dataset: DAVIS2017, seq: str, args) -> list[np.ndarray]:
    """Propagate the first frame's annotation through one sequence; returns a label map (H, W) per frame."""
    frames = dataset.frames(seq)
    p = model.patch_size
    image, size = read_frame(frames[0], args.short_side)
    grid = (image.shape[-2] // p, image.shape[-1] // p)
    if args.topk > grid[0] * grid[1]:
        raise UsageError(f"--topk {args.topk} exceeds the {grid[0] * grid[1]} patches of a frame of {seq} at "
                         f"--short_side {args.short_side}")
    first_mask = dataset.read_mask(seq, frames[0])
    small = np.asarray(Image.fromarray(first_mask).resize((grid[1], grid[0]), Image.NEAREST))
    small = np.where(small == 255, 0, small)  # void (if any) propagates as background, not as a 256th label
    n_labels = int(small.max()) + 1
    if n_labels == 1:
        return [first_mask, *nothing_to_propagate(seq, first_mask, frames[1:], grid)]
    first = (frame_features(model, image.to(args.device)), one_hot(small, n_labels).to(args.device))
    radius = args.size_mask_neighborhood
    mask = neighborhood_mask(*grid, radius, device=args.device) if radius > 0 else None
    queue, outputs = [], [first_mask]
    for frame in frames[1:]:
        image, size = read_frame(frame, args.short_side)
        feat = frame_features(model, image.to(args.device))
        context = [first, *queue]
        soft = propagate(feat, torch.stack([c[0] for c in context]), torch.stack([c[1] for c in context]),
                         args.topk, args.temperature, mask)
        queue = [*queue, (feat, soft)][-args.n_last_frames:] if args.n_last_frames > 0 else []
        outputs.append(labels_to_mask(soft, grid, p, size))
    return outputs


def main(args: argparse.Namespace) -> dict:
    t0 = time.time()
    dataset = DAVIS2017(args.data_path, args.split)  # the whole tree checked before any work
    output_dir(args.output_dir, protect=[dataset.mask_root, dataset.image_root])
    torch.manual_seed(0)  # a random-init backbone is then reproducible too
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, args.checkpoint_key, args.device)
    per_sequence = {}
    for seq in tqdm(dataset.sequences, desc="sequences", disable=None):
        preds = segment_sequence(model, dataset, seq, args)
        scored = len(preds) >= 3 and dataset.has_all_masks(seq)
        gt = [dataset.read_mask(seq, f) for f in dataset.frames(seq)] if scored else []  # read before any write
        out_dir = Path(args.output_dir) / seq
        out_dir.mkdir(parents=True, exist_ok=True)
        for frame, pred in zip(dataset.frames(seq), preds):
            write_indexed_png(pred, out_dir / f"{frame.stem}.png")
        if len(preds) < 3:  # the official evaluation fails on such a sequence; NaNs would void every mean
            print(f"{seq}: {len(preds)} frame(s), none left once the first and last are excluded, J/F skipped")
        elif scored:
            per_sequence[seq] = sequence_jf(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gt)))
        else:
            print(f"{seq}: not every frame is annotated, J/F skipped")
    result = {"seconds": time.time() - t0, "args": vars(args)}
    if per_sequence:
        result.update(davis_scores(per_sequence))
        for seq in result["sequences_without_objects"]:
            print(f"{seq}: no object in the first annotation, so no object to score (as the official evaluation)")
        print("  ".join(f"{m} {result[m]:.4f}" for m in DAVIS_MEASURES))
        print("tables:", *write_official_tables(result, args.output_dir, args.split))
    write_json(os.path.join(args.output_dir, "davis_results.json"), nan_to_none(result))
    return result


if __name__ == "__main__":
    run_cli(main, get_args_parser())
