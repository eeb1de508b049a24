"""Full CrOC training steps: images/s, peak memory, and where the time goes.

Phases of one step (each bracketed by a device synchronisation): data (views + positions of B images of ~500x375,
collated, in this process), data_to_device, teacher_forward, clustering (incl. the teacher's last_layer_c),
student_forward (incl. the loss), student_backward, optimizer (clipping + step), ema.

    python bench/bench_train.py                                  # vit_tiny and vit_small, 224 px, batch 8, CPU fp32
    python bench/bench_train.py --archs vit_small --device cuda --amp fp16 --batch 64   # on a GPU
"""

import argparse
import json
import resource
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate

from croc_utils.loss import CrOCLoss
from croc_utils.optim import build_optimizer, ema_update, get_params_groups
from croc_utils.parser import parse_args
from croc_utils.synthetic import SyntheticScenes
from croc_utils.transforms import CrOCAugmentation
from main_croc import build_network, croc_losses, update_student


class PhaseTimer:
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


def make_images(n: int) -> list:
    scenes = SyntheticScenes("train", n, size=256, seed=0)
    return [scenes[i][0].resize((500, 375), Image.BICUBIC) for i in range(n)]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_arch(arch: str, opts) -> dict:
    args = parse_args(["--arch", arch, "--batch_size_per_gpu", str(opts.batch), "--device", opts.device,
                       "--global_crops_size", str(opts.size), "--out_dim", str(opts.out_dim),
                       "--use_fp16", str(opts.amp == "fp16").lower()])
    args.world_size = 1
    device = torch.device(opts.device)
    student, teacher = build_network(args, args.drop_path_rate).to(device), build_network(args, 0.0).to(device)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    n_heads = student.backbone.num_heads
    loss_fn = CrOCLoss(out_dim=args.out_dim, out_dim_c=args.out_dim_c, ncrops=2, warmup_teacher_temp=0.04,
                       teacher_temp=0.04, warmup_teacher_temp_c=0.04, teacher_temp_c=0.04,
                       warmup_teacher_temp_epochs=0, nepochs=10).to(device)
    optimizer = build_optimizer("adamw", get_params_groups(student))
    for group in optimizer.param_groups:
        group["lr"] = 1e-5
    scaler = torch.amp.GradScaler("cuda") if opts.amp == "fp16" else None
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(opts.amp)
    transform = CrOCAugmentation(args.global_crops_scale, opts.size, 16)
    images = make_images(opts.batch)
    timer = PhaseTimer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(opts.warmup + opts.steps):
        if step == opts.warmup:
            timer.times.clear()
        t_step = time.perf_counter()
        with timer("data"):
            batch = default_collate([transform(img) for img in images])
        amp = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
        loss, *_ = croc_losses(batch, student, teacher, teacher, n_heads, loss_fn, 1, args, device, amp, timer)
        update_student(loss, optimizer, student, scaler, 1, args, timer)
        with timer("ema"):
            ema_update(teacher, student, 0.996)
        timer.sync()
        timer.times["step"].append(time.perf_counter() - t_step)
    ms = {k: 1000 * float(np.mean(v)) for k, v in timer.times.items()}
    return {"arch": arch, "device": str(device), "amp": opts.amp or "fp32", "batch": opts.batch,
            "images_per_s": opts.batch / (ms["step"] / 1000), "peak_mb": peak_memory_mb(device), "ms": ms}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["vit_tiny", "vit_small"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="global crop size")
    parser.add_argument("--out_dim", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["fp16", "bf16"], default=None)
    parser.add_argument("--json", default="", help="also write the results to this file")
    opts = parser.parse_args()
    results = []
    for arch in opts.archs:
        r = bench_arch(arch, opts)
        results.append(r)
        phases = "  ".join(f"{k} {v:.0f}" for k, v in r["ms"].items() if k != "step")
        print(f"{arch} {r['device']} {r['amp']} batch {r['batch']}: {r['images_per_s']:.2f} img/s, "
              f"step {r['ms']['step']:.0f} ms, peak {r['peak_mb']:.0f} MB | ms: {phases}", flush=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
