"""Full CrOC training steps: compute-only and end-to-end images/s, peak memory, and where the time goes.

For each architecture and each ``--augment_on`` value:
- compute-only: one batch is made beforehand (views of B ~500x375 images, pinned on CUDA) and every step copies it
  to the device and trains on it; the phases of the step (``croc_utils.step``) are timed with a device
  synchronisation around each, in separate steps from the throughput ones, which run unsynchronised like training;
- end to end (``--workers N``): a folder of 500x375 JPEGs is read by the real loader (``build_pretrain_dataset``
  imagefolder, N workers, pinned memory on CUDA, prefetch) and trained on; images/s is measured over the steps after
  a warm-up (so worker start-up and the first batches are excluded), steady state.

    python bench/bench_train.py                       # vit_tiny and vit_small, 224 px, batch 8, CPU fp32, both paths
    python bench/bench_train.py --archs vit_small --precision bf16 --batch 8 --augment_on cpu --workers 0
    python bench/bench_train.py --archs vit_small --device cuda --precision bf16 --batch 128 --workers 14 \\
        --e2e_images 2560 --json bench_train_gpu.json       # the GPU target setting (docs/benchmarks.md)
"""

import argparse
import json
import os
import resource
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from itertools import count, islice

import numpy as np
import torch
from torch.utils.data import default_collate

from croc_utils import distributed as du
from croc_utils.clustering import ClusteringConfig
from croc_utils.datasets import build_pretrain_dataset, build_pretrain_loader
from croc_utils.optim import build_optimizer, get_params_groups
from croc_utils.parser import parse_args
from croc_utils.step import (
    Precision,
    build_loss,
    forward_step,
    timed_phases,
    update_student,
    update_teacher,
)
from croc_utils.synthetic import SyntheticScenes
from croc_utils.transforms import CrOCAugmentation
from models.network import build_networks


class PhaseTimer:
    """``timer(name)`` context: wall time of the block with a device synchronisation on both sides."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, defaultdict(list)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, name: str):
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.times[name].append(time.perf_counter() - t0)


def make_jpegs(folder: str, count: int) -> None:
    """``count`` 500x375 JPEGs (quality 90) of synthetic scenes, as a stand-in for COCO-sized photographs."""
    scenes = SyntheticScenes("train", count, size=500, seed=0, cache=True)
    for i in range(count):
        scenes[i][0].crop((0, 0, 500, 375)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def run_args(arch: str, opts, augment_on: str) -> argparse.Namespace:
    """The training flags of one setting, through the real parser (so its checks and defaults apply)."""
    argv = ["--arch", arch, "--batch_size_per_gpu", str(opts.batch), "--device", opts.device,
            "--global_crops_size", str(opts.size), "--out_dim", str(opts.out_dim), "--out_dim_c", str(opts.out_dim_c),
            "--precision", opts.precision, "--augment_on", augment_on, "--num_workers", str(opts.workers),
            "--prefetch_factor", str(opts.prefetch), "--compile", str(opts.compile).lower(),
            "--dataset_type", "imagefolder", "--data_path", opts.jpeg_dir]
    args = parse_args(argv)
    args.distributed, args.world_size, args.rank = False, 1, 0
    return args


class Trainer:
    """The training objects of one setting and its step (the loop body of ``main_croc.train_one_epoch``)."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        self.student, self.teacher = build_networks(args, device)
        self.croc_loss = build_loss(args).to(device)
        self.optimizer = build_optimizer("adamw", get_params_groups(self.student), device)
        for group in self.optimizer.param_groups:
            group["lr"] = 1e-5
        self.optimizer.param_groups[0]["weight_decay"] = 0.04
        self.precision = Precision.from_args(args, device)
        self.cluster_cfg = ClusteringConfig.from_args(args)

    def step(self, batch: dict) -> None:
        out = forward_step(batch, self.student, self.teacher, self.croc_loss, 1, cluster_cfg=self.cluster_cfg,
                           alpha_s=self.args.alpha_s, precision=self.precision, device=self.device)
        status = du.step_status(out.healthy, False)  # the step's one host sync, as in training
        assert not status.unhealthy_ranks, "non-finite loss in the benchmark"
        update_student(out.loss, self.student, self.optimizer, 1, precision=self.precision, clip_grad=3.0,
                       freeze_last_layer=0)
        update_teacher(self.teacher, self.student, 0.996)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_only(trainer: Trainer, opts) -> dict:
    """Images/s on a batch made beforehand, then the phase breakdown (ms) from separately timed steps."""
    transform = CrOCAugmentation.from_args(trainer.args)
    dataset = build_pretrain_dataset(trainer.args, transform)
    batch = default_collate([dataset[(i, i)] for i in range(opts.batch)])
    if trainer.device.type == "cuda":
        batch = {key: [t.pin_memory() for t in value] for key, value in batch.items()}
    for _ in range(opts.warmup):
        trainer.step(batch)
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(opts.steps):
        trainer.step(batch)
    sync(trainer.device)
    seconds = (time.perf_counter() - t0) / opts.steps
    timer = PhaseTimer(trainer.device)
    with timed_phases(timer):
        for _ in range(opts.phase_steps):
            trainer.step(batch)
    with timer("data_in_process"):  # what one process would spend making a batch itself
        default_collate([dataset[(i, i)] for i in range(opts.batch)])
    phases = {name: 1000 * float(np.mean(t)) for name, t in timer.times.items()}
    return {"images_per_s": opts.batch / seconds, "step_ms": 1000 * seconds, "phases_ms": phases}


def end_to_end(trainer: Trainer, opts) -> dict:
    """Images/s from the JPEG folder through the real loader, steady state after ``opts.warmup`` steps."""
    dataset = build_pretrain_dataset(trainer.args, CrOCAugmentation.from_args(trainer.args))
    loader, sampler = build_pretrain_loader(dataset, opts.batch, opts.workers, 0, distributed=False,
                                            pin_memory=trainer.device.type == "cuda", prefetch_factor=opts.prefetch)
    batches = cycle_epochs(loader, sampler)
    for batch in islice(batches, opts.warmup):
        trainer.step(batch)
    sync(trainer.device)
    t0 = time.perf_counter()
    for batch in islice(batches, opts.e2e_steps):
        trainer.step(batch)
    sync(trainer.device)
    return {"images_per_s": opts.batch * opts.e2e_steps / (time.perf_counter() - t0), "workers": opts.workers}


def cycle_epochs(loader, sampler):
    """Batches of epoch 0, 1, ... without end (persistent workers carry over)."""
    for epoch in count():
        sampler.set_epoch(epoch)
        yield from loader


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; the process's peak so far


def bench_setting(arch: str, augment_on: str, opts) -> dict:
    device = torch.device(opts.device)
    torch.manual_seed(0)
    args = run_args(arch, opts, augment_on)
    trainer = Trainer(args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"arch": arch, "augment_on": augment_on, "device": str(device), "precision": trainer.precision.name,
              "batch": opts.batch, "size": opts.size, "compile": opts.compile,
              "compute_only": compute_only(trainer, opts)}
    if opts.e2e_steps:
        result["end_to_end"] = end_to_end(trainer, opts)
    result["peak_mb"] = peak_memory_mb(device)
    return result


def report(r: dict) -> str:
    c = r["compute_only"]
    phases = "  ".join(f"{k} {v:.1f}" for k, v in c["phases_ms"].items())
    e2e = r.get("end_to_end")
    e2e_text = (f"end-to-end {e2e['images_per_s']:.1f} img/s with {e2e['workers']} workers "
                f"({100 * e2e['images_per_s'] / c['images_per_s']:.0f}% of compute-only)") if e2e else "no end-to-end"
    return (f"{r['arch']} augment_on={r['augment_on']} {r['device']} {r['precision']} batch {r['batch']} "
            f"{r['size']}px: compute-only {c['images_per_s']:.1f} img/s (step {c['step_ms']:.0f} ms), {e2e_text}, "
            f"peak {r['peak_mb']:.0f} MB\n    phases ms: {phases}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["vit_tiny", "vit_small"])
    parser.add_argument("--augment_on", nargs="+", default=["cpu", "device"], choices=["cpu", "device"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="global crop size")
    parser.add_argument("--out_dim", type=int, default=65536)
    parser.add_argument("--out_dim_c", type=int, default=8192)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones (--compile true)")
    parser.add_argument("--steps", type=int, default=5, help="timed compute-only steps")
    parser.add_argument("--phase_steps", type=int, default=3, help="steps timed phase by phase")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the end-to-end run")
    parser.add_argument("--prefetch", type=int, default=2, help="batches prefetched per worker")
    parser.add_argument("--e2e_steps", type=int, default=5, help="timed end-to-end steps (0: skip end to end)")
    parser.add_argument("--e2e_images", type=int, default=64, help="JPEGs in the end-to-end folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="", help="also write the results to this file")
    opts = parser.parse_args()
    print(f"torch {torch.__version__}, device {opts.device}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        opts.jpeg_dir = folder
        make_jpegs(folder, max(opts.e2e_images, opts.batch))
        for arch in opts.archs:
            for augment_on in opts.augment_on:
                results.append(bench_setting(arch, augment_on, opts))
                print(report(results[-1]), flush=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
