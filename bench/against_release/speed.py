"""Speed: one training step of each side, the batch already in memory, alternated; the median of a few."""

import statistics
import time

from bench.against_release.batches import synthetic_batches
from bench.against_release.sides import start_sides
from bench.against_release.steps import STEP_FLAGS

SPEED_FLAGS = dict(STEP_FLAGS, out_dim=65536, out_dim_c=8192, batch_size_per_gpu=8, drop_path_rate=0.1, epochs=10,
                   warmup_epochs=0, freeze_last_layer=0, clip_grad=3.0, momentum_teacher=0.996, lr=0.0005,
                   warmup_teacher_temp_epochs=0)


def time_steps(release, repeats: int, seed: int) -> dict:
    """Median ms of one training step of each side (batch in memory), alternating sides, after one warm-up each."""
    flags = SPEED_FLAGS
    ref, ours = start_sides(release, flags, 1, seed)
    batch = synthetic_batches(1, flags["batch_size_per_gpu"], 224, flags["patch_size"], seed)
    times = {"release": [], "ours": []}
    for i in range(repeats + 1):
        for side in (ref, ours):
            start = time.perf_counter()
            side.run_epoch(0, batch, seed + i)
            if i > 0:
                times[side.name].append(1000 * (time.perf_counter() - start))
            side.recorder.records.clear()
    return times


def speed_report(release, repeats: int, seed: int) -> str:
    """The speed section: ``time_steps`` as a table of ms per step, and the ratio."""
    t0 = time.perf_counter()
    times = time_steps(release, repeats, seed)
    rel, ours = statistics.median(times["release"]), statistics.median(times["ours"])
    return (f"\n## Speed ({time.perf_counter() - t0:.0f} s): one training step, vit_small, 224 px, batch 8, "
            f"CPU float32, median of {repeats}\n\n"
            f"| code | ms per step | runs |\n|---|---|---|\n| released | {rel:.0f} | "
            f"{' '.join(f'{t:.0f}' for t in times['release'])} |\n| ours | {ours:.0f} | "
            f"{' '.join(f'{t:.0f}' for t in times['ours'])} |\n\nspeed-up: {rel / ours:.2f}x")
