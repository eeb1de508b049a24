"""Dense nearest-neighbour retrieval side by side: ``eval.nn_retrieval`` and the public reproduction's own code.

Both implementations see the same backbone, the same memory images and the same val images (batches prepared
once, without augmentation, so that no random draw differs), and for a bounded memory the same seed of the
rare-class draws. Compared: the memory (features and labels), the label maps, the plain mIoU and the
Hungarian-matched mIoU.

The reproduction (open-hummingbird-eval) is not part of this repository: point ``--reference_dir`` at a checkout
of it. Its ``HbirdEvaluation`` runs as it is, given our backbone through its ``FeatureExtractorSimple``; an observer
wrapped around its metric class records its label maps and its plain mIoU (``compute(linear_probe=True)``). Its
data modules are not used (pytorch_lightning, which they import, is replaced by an empty module when missing).
Its nearest-neighbour backends:

* ``scann``: ScaNN with its default settings (approximate: tree of 512 leaves, 32 searched, 120 candidates
  re-scored exactly);
* ``scann_exact``: ScaNN with every leaf searched and every memory patch re-scored (exact up to rounding);
* ``faiss_flat``: its faiss code, which builds GPU flat inner-product indexes only, with the GPU index swapped for
  faiss's CPU flat inner-product index (``IndexFlatIP``, exact); needs faiss-cpu.

    python bench/against_hummingbird.py --reference_dir /path/to/open-hummingbird-eval \
        --arch vit_pico --patch_size 8 --synthetic_style texture --input_size 64 --output against_hummingbird.json
"""

import argparse
import json
import sys
import time
import types

import torch
from torch.utils.data import DataLoader

from eval.nn_retrieval import (
    Memory,
    RetrievalConfig,
    RetrievalEvalTransform,
    build_memory,
    evaluate_retrieval,
    flat_patch_features,
)
from eval.probe_data import DEV_OFFSET, POOL_OFFSET
from eval.seg_datasets import SyntheticSegmentation
from models.pretrained import load_backbone

BACKENDS = ("scann", "scann_exact", "faiss_flat")


def import_reference(reference_dir: str):
    """The reproduction's evaluation module and its metric class, imported from ``reference_dir``."""
    if reference_dir not in sys.path:
        sys.path.insert(0, reference_dir)
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:  # only its data modules need it, and they subclass one class of it
        sys.modules["pytorch_lightning"] = types.SimpleNamespace(LightningDataModule=object)
    import hbird.hbird_eval as hbird_eval
    import hbird.utils.eval_metrics as metrics

    return hbird_eval, metrics.PredsmIoU


def cpu_flat_faiss():
    """Let the reproduction's faiss code (GPU flat indexes only) build faiss's CPU flat inner-product index."""
    import faiss

    faiss.get_num_gpus = lambda: 1
    faiss.StandardGpuResources = lambda: None
    faiss.GpuIndexFlatConfig = types.SimpleNamespace
    faiss.GpuIndexFlatIP = lambda resources, d, config: faiss.IndexFlatIP(d)


def run_reference(hbird_eval, metric_class, model, memory_batches, val_batches, n_classes: int, grid: int,
                  *, k: int, memory_size: int, backend: str, seed: int) -> dict:
    """The reproduction's HbirdEvaluation on prepared batches: its memory, label maps and both mIoUs."""
    seen = {}

    class Observed(metric_class):
        def update(self, gt, pred):
            seen["gt"], seen["pred"] = gt.clone(), pred.clone()
            super().update(gt, pred)

    hbird_eval.PredsmIoU = Observed
    extractor = hbird_eval.FeatureExtractorSimple(
        model, ftr_extr_fn=lambda m, x: (flat_patch_features(m, x), None), eval_spatial_resolution=grid,
        d_model=model.embed_dim)
    # its masks arrive as ToTensor makes them from a label PNG: (B, 1, S, S) floats, class / 255
    as_theirs = [(x, y[:, None].to(torch.uint8).float().div(255)) for x, y in memory_batches]
    val_theirs = [(x, y[:, None].to(torch.uint8).float().div(255)) for x, y in val_batches]
    method, params = "scann", {}
    if backend == "scann_exact":
        n = sum(x.shape[0] for x, _ in memory_batches) * grid * grid
        params = {"num_leaves": 16, "num_leaves_to_search": 16, "num_reordering_candidates": n}
    elif backend == "faiss_flat":
        cpu_flat_faiss()
        method = "faiss"
    torch.manual_seed(seed)  # its rare-class draws come from the global generator
    evaluator = hbird_eval.HbirdEvaluation(
        extractor, as_theirs, n_classes, n_neighbours=k, augmentation_epoch=1, device="cpu", nn_method=method,
        nn_params=params, memory_size=memory_size or None, dataset_size=sum(x.shape[0] for x, _ in memory_batches))
    hungarian = float(evaluator.evaluate(val_theirs, eval_spatial_resolution=grid, ignore_index=255))
    plain = metric_class(n_classes, n_classes, ignore_index=255, prefer_cuda=False)
    plain.update(seen["gt"], seen["pred"])
    return {"miou": float(plain.compute(True, linear_probe=True)[0]), "miou_hungarian": hungarian,
            "predictions": seen["pred"][:, 0], "memory": Memory(evaluator.feature_memory, evaluator.label_memory)}


def compare(ours: dict, theirs: dict, our_memory: Memory) -> dict:
    same_rows = our_memory.features.shape == theirs["memory"].features.shape
    return {
        "ours": {"miou": 100 * ours["miou"], "miou_hungarian": 100 * ours["miou_hungarian"]},
        "reference": {"miou": 100 * theirs["miou"], "miou_hungarian": 100 * theirs["miou_hungarian"]},
        "memory_patches": len(our_memory),
        "memory_features_max_abs_diff": float((our_memory.features - theirs["memory"].features).abs().max())
        if same_rows else None,
        "memory_labels_equal": bool(same_rows and torch.equal(our_memory.labels, theirs["memory"].labels)),
        "label_maps_equal_fraction": float((ours["predictions"].long() == theirs["predictions"].long())
                                           .float().mean()),
    }


def prepare(args) -> tuple[list, list, tuple[str, ...]]:
    transform = RetrievalEvalTransform(args.input_size)
    split, first = ("val", 0) if args.eval_split == "val" else ("train", DEV_OFFSET)
    memory = SyntheticSegmentation("train", args.memory_images, args.input_size, args.data_seed, transform,
                                   first_index=POOL_OFFSET, cache=True, style=args.synthetic_style)
    val = SyntheticSegmentation(split, args.val_images, args.input_size, args.data_seed, transform,
                                first_index=first, cache=True, style=args.synthetic_style)
    batches = [list(DataLoader(ds, batch_size=args.batch_size)) for ds in (memory, val)]
    return batches[0], batches[1], val.class_names


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser("against_hummingbird", description=__doc__.split("\n")[0])
    parser.add_argument("--reference_dir", required=True, help="A checkout of open-hummingbird-eval.")
    parser.add_argument("--pretrained_weights", default="")
    parser.add_argument("--arch", default="vit_pico")
    parser.add_argument("--patch_size", default=8, type=int)
    parser.add_argument("--synthetic_style", default="texture")
    parser.add_argument("--input_size", default=64, type=int)
    parser.add_argument("--memory_images", default=200, type=int)
    parser.add_argument("--val_images", default=50, type=int)
    parser.add_argument("--eval_split", default="dev", choices=["val", "dev"])
    parser.add_argument("--data_seed", default=0, type=int)
    parser.add_argument("--memory_sizes", default=[0, 3200], type=int, nargs="+",
                        help="0: unbounded. Default: 0 3200 (16 patches per image of 200).")
    parser.add_argument("--backends", default=list(BACKENDS), nargs="+", choices=BACKENDS)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--batch_size", default=25, type=int)
    parser.add_argument("--output", default="against_hummingbird.json")
    args = parser.parse_args(argv)
    hbird_eval, metric_class = import_reference(args.reference_dir)
    torch.manual_seed(args.seed)
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, verbose=False)
    memory_batches, val_batches, names = prepare(args)
    grid = args.input_size // args.patch_size
    rows = []
    for memory_size in args.memory_sizes:
        cfg = RetrievalConfig(memory_size=memory_size, seed=args.seed)
        our_memory = build_memory(model, memory_batches, len(names), cfg, n_images=args.memory_images)
        t0 = time.time()
        ours = evaluate_retrieval(model, None, val_batches, names, cfg, memory=our_memory, return_predictions=True)
        t_ours = time.time() - t0
        for backend in args.backends:
            t0 = time.time()
            theirs = run_reference(hbird_eval, metric_class, model, memory_batches, val_batches, len(names), grid,
                                   k=cfg.n_neighbours, memory_size=memory_size, backend=backend, seed=args.seed)
            row = {"memory_size": memory_size, "backend": backend, **compare(ours, theirs, our_memory),
                   "seconds": {"ours": t_ours, "reference": time.time() - t0}}
            rows.append(row)
            print(json.dumps(row))
    out = {"args": vars(args), "class_names": list(names), "rows": rows}
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
