"""What a resume in the middle of an epoch costs: seconds from the start of the rerun to its first training step.

A folder of JPEGs (made once with ``--make``), a tiny model (vit_pico/16 at 96 px, so that the time is the data's),
``--num_workers 2``: a run stopped by SIGTERM after one step leaves a checkpoint, whose position is then moved to
``--at`` of the epoch (its ``iteration`` and ``images_seen``: exactly what a run stopped there would have saved, but
the weights, which do not change the cost). Each repeat reruns from that checkpoint and times, from its start, the
line "Starting CrOC training" and the console line of its first step. The code that skips the trained batches
decides the difference: a loader that replays them reads and decodes every skipped image first.

    python bench/resume_cost.py --make /tmp/jpegs --images 2000      # 500x375 JPEGs
    python bench/resume_cost.py --data /tmp/jpegs --at 0.9 --repeats 3
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from croc_utils.atomic_io import save_checkpoint  # noqa: E402
from croc_utils.checkpoint import load_checkpoint  # noqa: E402

BATCH = 16


def make_jpegs(folder: str, count: int) -> None:
    """``count`` 500x375 JPEGs of smooth colour fields with grain (about 60 KB each, as photos)."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        base = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        grain = np.asarray(base).astype(np.int16) + rng.integers(-20, 21, (375, 500, 3))
        Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:05d}.jpg"),
                                                                      quality=90)


def command(data: str, out: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "main_croc.py"), "--dataset_type", "imagefolder", "--data_path", data,
            "--arch", "vit_pico", "--patch_size", "16", "--global_crops_size", "96", "--out_dim", "256",
            "--out_dim_c", "64", "--batch_size_per_gpu", str(BATCH), "--num_workers", "2", "--epochs", "1",
            "--use_fp16", "false", "--device", "cpu", "--log_freq", "1", "--saveckp_freq", "0", "--output_dir", out]


def environment() -> dict:
    return {k: v for k, v in dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1").items()
            if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def checkpoint_at(data: str, out: str, fraction: float) -> int:
    """A checkpoint in ``out`` positioned at ``fraction`` of the epoch; returns that iteration."""
    proc = subprocess.Popen(command(data, out), cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if re.search(r"\[\d+/\d+\]", line):  # the first step's line: stop the run there
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=600)
    path = os.path.join(out, "checkpoint.pth")
    ckpt = load_checkpoint(path)
    steps = len([n for n in os.listdir(data) if n.lower().endswith(".jpg")]) // BATCH
    ckpt["iteration"] = int(fraction * steps)
    ckpt["images_seen"] = ckpt["iteration"] * BATCH
    save_checkpoint(ckpt, path)
    return ckpt["iteration"]


def time_resume(data: str, template: str, work: str, iteration: int) -> tuple[float, float]:
    """(seconds to "Starting CrOC training", seconds to the first step's line) of one rerun from the checkpoint."""
    out = os.path.join(work, "rerun")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(template, out)
    started = time.monotonic()
    proc = subprocess.Popen(command(data, out), cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ready = first = None
    for line in proc.stdout:
        if ready is None and line.startswith("Starting CrOC training"):
            ready = time.monotonic() - started
        if re.search(rf"\[{iteration + 1}/\d+\]", line):
            first = time.monotonic() - started
            proc.kill()
            break
    proc.wait()
    if first is None:
        sys.exit("resume_cost: the rerun did not reach its first step")
    return ready, first


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--make", default=None, help="Write --images JPEGs into this folder and stop.")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--data", default=None, help="The folder of JPEGs.")
    p.add_argument("--at", type=float, default=0.9, help="Where in the epoch the resume starts (default 0.9).")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.make:
        make_jpegs(args.make, args.images)
        return
    work = tempfile.mkdtemp(prefix="croc-resume-cost-")
    try:
        template = os.path.join(work, "template")
        iteration = checkpoint_at(args.data, template, args.at)
        print(f"resume at iteration {iteration} ({iteration * BATCH} images skipped), --num_workers 2")
        for repeat in range(args.repeats):
            ready, first = time_resume(args.data, template, work, iteration)
            print(f"repeat {repeat}: start-up {ready:.1f} s, first training step after {first:.1f} s "
                  f"(skip + first batch: {first - ready:.1f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
