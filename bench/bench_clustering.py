"""Milliseconds per ``cluster_views`` call for ViT-S/16 shapes, next to the teacher forward of the same batch.

    python bench/bench_clustering.py                      # B = 16 and 64, CPU, default torch threads
    python bench/bench_clustering.py --batch_sizes 16 --repeats 5 --device cuda

Shapes: H=6 heads, N=196 patches per view, d=64 head dim, D=384 embed dim; the teacher sees 2B images of 224 px
without gradient. The clustering inputs are random (its cost does not depend on the values); every call samples
its own seeds, as in training.
"""

import argparse
import statistics
import sys
import time
from functools import partial

import torch

from croc_utils.clustering import ClusteringConfig, cluster_views

CONFIG = ClusteringConfig()  # the released settings


def get_args():
    parser = argparse.ArgumentParser("bench_clustering", description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 64], help="images per process B")
    parser.add_argument("--repeats", type=int, default=5, help="timed clustering calls per batch size")
    parser.add_argument("--teacher_repeats", type=int, default=1, help="timed teacher forwards per batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no_teacher", action="store_true", help="time the clustering only")
    return parser.parse_args()


def build_teacher(device: torch.device) -> tuple[torch.nn.Module, str]:
    """The project's ViT-S/16 when ``models`` imports, else timm's stock one."""
    try:
        from models import vit_small

        return vit_small(patch_size=16).to(device).eval(), "models.vit_small"
    except Exception as error:  # noqa: BLE001 - any import/build failure falls back to timm
        import timm

        print(f"models.vit_small unavailable ({type(error).__name__}: {error}); using timm", file=sys.stderr)
        return timm.create_model("vit_small_patch16_224", num_classes=0).to(device).eval(), "timm vit_small_patch16_224"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """(min, median) wall time of ``fn()`` in ms over ``repeats`` calls, after one warm-up call. The minimum is the
    number to compare on a shared machine: other processes only ever add time."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def clustering_inputs(batch: int, device: torch.device, heads=6, patches=196, head_dim=64, dim=384):
    keys = torch.randn(2 * batch, heads, 1 + patches, head_dim, device=device)
    last_tokens = torch.randn(2 * batch, 1 + patches, dim, device=device)
    positions = torch.rand(batch, 2 * patches, 2, device=device) * 500
    return keys, last_tokens, positions


def main():
    args = get_args()
    device = torch.device(args.device)
    teacher, teacher_name = (None, "-") if args.no_teacher else build_teacher(device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, teacher {teacher_name}")
    print(f"{'B':>4} {'cluster min ms':>15} {'median':>8} {'teacher min ms':>15} {'median':>8} {'ratio':>7} "
          f"{'mean k':>7} {'valid':>6}")
    for batch in args.batch_sizes:
        keys, last_tokens, positions = clustering_inputs(batch, device)
        result = cluster_views(keys, last_tokens, positions, CONFIG)
        cluster = time_ms(partial(cluster_views, keys, last_tokens, positions, CONFIG), args.repeats, device)
        teacher_times = (float("nan"), float("nan"))
        if teacher is not None:
            images = torch.randn(2 * batch, 3, 224, 224, device=device)
            with torch.no_grad():
                teacher_times = time_ms(partial(teacher, images), args.teacher_repeats, device)
        print(f"{batch:>4} {cluster[0]:>15.1f} {cluster[1]:>8.1f} {teacher_times[0]:>15.1f} {teacher_times[1]:>8.1f} "
              f"{cluster[0] / teacher_times[0]:>7.4f} {result.n_clusters.float().mean():>7.2f} "
              f"{result.valid.float().sum() / (result.n_clusters.sum()):>6.2f}")


if __name__ == "__main__":
    main()
