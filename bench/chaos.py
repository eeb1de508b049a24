"""Chaos test of pre-emption: start a tiny training run, hit it with SIGTERM or kill -9 at a random moment, rerun
the same command, again and again, then check what it ends with.

A round: a fresh output folder; cycles of "start the run, wait a random time, send the fault, wait for the exit"
until a run finishes on its own; then a clean rerun (which must have nothing to do) and the checks. Rounds repeat
until ``--cycles`` faults have been injected. The tiny run: vit_pico/8, 32 px global views, 2 local crops, drop
path 0.1, float32 on CPU, 3 epochs of 8 steps (``--epochs``, ``--images``), a snapshot every epoch.

Checked after every fault (a failure is printed and makes the exit status 1):
- ``checkpoint.pth``, once a save has happened, is always there and loads (weights_only) -- never damaged nor lost;
- its position (epoch, iteration) never moves back, and a SIGTERM handled by the run (exit status 0) saved a
  position ahead of the previous one (the step in flight is completed);
- the next start resumes from exactly that position (at most the work since the last save is done again), takes
  over the lock of a killed run and removes the temporary file of an interrupted save.
Checked at the end of a round: the final checkpoint is bit-identical to an uninterrupted run's (student, teacher,
loss centres, optimizer state); log.txt has one line per epoch; no temporary file, lock or other leftover remains.

    python bench/chaos.py                       # 12 faults, a few minutes on 2 CPU cores
    python bench/chaos.py --cycles 30 --kill_fraction 0.5 --num_workers 2 --seed 1
    python bench/chaos.py --cycles 3 --json chaos.json
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from croc_utils.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

TINY = ["--dataset_type", "synthetic", "--synthetic_size", "48", "--arch", "vit_pico",
        "--patch_size", "8", "--global_crops_size", "32", "--local_crops_number", "2", "--local_crops_size", "16",
        "--out_dim", "64", "--out_dim_c", "32", "--batch_size_per_gpu", "2", "--drop_path_rate", "0.1",
        "--use_fp16", "false", "--warmup_epochs", "1", "--log_freq", "1", "--device", "cpu", "--saveckp_freq", "1"]
EXPECTED_FILES = {"args.json", "checkpoint.pth", "log.txt"}
SNAPSHOT = re.compile(r"^checkpoint\d{4}\.pth$")
RESUMED = re.compile(r"Resumed from \S+ at epoch (\d+), iteration (\d+)\.")


SIZE = {"epochs": 3, "images": 16}  # of the tiny run: 3 epochs of 8 steps (set from the command line)


def command(out: str, workers: int) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "main_croc.py"), *TINY, "--num_workers", str(workers),
            "--epochs", str(SIZE["epochs"]), "--synthetic_num_images", str(SIZE["images"]), "--output_dir", out]


def environment() -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(name, None)
    return env


class Run:
    """One start of the training command; its output is collected by a thread."""

    def __init__(self, out: str, workers: int):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command(out, workers), cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.training = threading.Event()  # set at the line "Starting CrOC training"
        self.training_since: float | None = None
        self.training_until: float | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("Starting CrOC training"):
                self.training_since = time.monotonic()
                self.training.set()
            if line.startswith("Training time"):
                self.training_until = time.monotonic()
        self.training.set()  # the process ended: stop waiting for the line

    def wait(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def resumed_at(self) -> tuple[int, int] | None:
        found = RESUMED.search(self.output)
        return (int(found[1]), int(found[2])) if found else None


def position(folder: str) -> tuple[tuple[int, int] | None, str | None]:
    """((epoch, iteration) of checkpoint.pth, None) or (None, why it is unusable); (None, None) when absent."""
    path = os.path.join(folder, "checkpoint.pth")
    if not os.path.exists(path):
        return None, None
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        return None, str(err)
    return (ckpt["epoch"], ckpt.get("iteration", 0)), None


def leftovers(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name not in EXPECTED_FILES and not SNAPSHOT.match(name))


def differences(a: dict, b: dict) -> list[str]:
    """Names of the tensors that are not bit-identical (student, teacher, loss centres, optimizer state)."""
    diff = [f"{part}.{k}" for part in ("student", "teacher", "croc_loss") for k in a[part]
            if not torch.equal(a[part][k], b[part][k])]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    diff += [f"optimizer.{i}.{k}" for i in sa for k in sa[i] if not torch.equal(sa[i][k], sb[i][k])]
    return diff + (["position"] if (a["epoch"], a["iteration"]) != (b["epoch"], b["iteration"]) else [])


def reference(folder: str, workers: int) -> tuple[dict, float, float]:
    """The uninterrupted run: its final checkpoint, its start-up and its training durations (seconds)."""
    run = Run(folder, workers)
    if run.wait() != 0 or run.training_since is None or run.training_until is None:
        sys.exit(f"chaos: the uninterrupted reference run failed:\n{run.output[-3000:]}")
    return (load_checkpoint(os.path.join(folder, "checkpoint.pth")), run.training_since - run.started,
            run.training_until - run.training_since)


START_UP_SHARE = 0.2  # of the faults, those sent during start-up (imports, lock, resume); the others in training


def fault_cycle(folder: str, workers: int, rng: random.Random, durations: tuple[float, float], kill_fraction: float,
                last: tuple | None) -> dict:
    """Start, inject one fault at a random moment (of the start-up, or of the training as long as the reference
    run's), wait for the exit; returns the cycle's record."""
    fault = "kill -9" if rng.random() < kill_fraction else "SIGTERM"
    phase = "start-up" if rng.random() < START_UP_SHARE else "training"
    delay = rng.uniform(0.0, durations[0] if phase == "start-up" else durations[1])
    run = Run(folder, workers)
    problems = []
    if phase == "training":
        run.training.wait(timeout=600)
    try:
        rc = run.wait(timeout=delay)
        fault = "none (finished first)"
    except subprocess.TimeoutExpired:
        run.proc.send_signal(signal.SIGKILL if fault == "kill -9" else signal.SIGTERM)
        rc = run.wait()
        if rc == 0 and fault == "kill -9":  # it exited between the timeout and the signal: nothing was sent
            fault = "none (finished first)"
    if last is not None and run.resumed_at is not None and run.resumed_at != last:
        problems.append(f"resumed at {run.resumed_at}, the last save was {last}")
    if "Traceback" in run.output or (rc not in (0, -signal.SIGKILL, -signal.SIGTERM)):
        problems.append(f"exit status {rc}: {run.output.strip().splitlines()[-1:]}")
    now, unusable = position(folder)
    if unusable:
        problems.append(f"damaged checkpoint: {unusable}")
    elif now is None and last is not None:
        problems.append("checkpoint.pth lost")
    elif now is not None and last is not None and now < last:
        problems.append(f"position moved back from {last} to {now}")
    handled = fault == "SIGTERM" and rc == 0 and "SIGTERM received" in run.output
    if handled and last is not None and now is not None and not now > last:
        problems.append(f"a handled SIGTERM saved no progress ({last} -> {now})")
    return {"fault": fault, "phase": phase, "delay_s": round(delay, 2), "exit": rc, "handled": handled,
            "resumed_from": run.resumed_at,
            "position": now, "finished": "Training time" in run.output and not handled and rc == 0,
            "problems": problems}


def finish_round(folder: str, workers: int, expected: dict) -> list[str]:
    """The clean rerun after the last fault, then the end-state checks."""
    run = Run(folder, workers)
    problems = [] if run.wait() == 0 else [f"the final rerun failed: {run.output.strip().splitlines()[-1:]}"]
    if not problems:
        diff = differences(load_checkpoint(os.path.join(folder, "checkpoint.pth")), expected)
        if diff:
            problems.append(f"{len(diff)} tensors differ from the uninterrupted run, e.g. {diff[:3]}")
        epochs = [json.loads(line)["epoch"] for line in open(os.path.join(folder, "log.txt"))]
        if epochs != list(range(expected["epoch"])):
            problems.append(f"log.txt lists epochs {epochs}")
        if leftovers(folder):
            problems.append(f"left over: {leftovers(folder)}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cycles", type=int, default=12, help="Faults to inject in all (default 12).")
    p.add_argument("--kill_fraction", type=float, default=0.5, help="Share of the faults that are kill -9.")
    p.add_argument("--num_workers", type=int, default=0, help="Data-loading workers of the tiny run.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the fault moments and kinds.")
    p.add_argument("--epochs", type=int, default=3, help="Epochs of the tiny run (default 3).")
    p.add_argument("--images", type=int, default=16, help="Its images, 2 per step (default 16).")
    p.add_argument("--workdir", default=None, help="Where the runs go (default: a temporary folder, removed).")
    p.add_argument("--json", default=None, help="Also write the table and summary to this file.")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    SIZE.update(epochs=args.epochs, images=args.images)
    work = args.workdir or tempfile.mkdtemp(prefix="croc-chaos-")
    os.makedirs(work, exist_ok=True)
    try:
        expected, *durations = reference(os.path.join(work, "reference"), args.num_workers)
        print(f"uninterrupted reference: start-up {durations[0]:.1f} s, training {durations[1]:.1f} s, ends at epoch "
              f"{expected['epoch']}; each fault at a random moment of the start-up ({START_UP_SHARE:.0%} of them) or "
              "of the training (counted from its first line)")
        records, rounds = [], 0
        while sum(r["fault"] != "none (finished first)" for r in records) < args.cycles:
            rounds += 1
            folder, last = os.path.join(work, f"round{rounds}"), None
            while True:
                record = fault_cycle(folder, args.num_workers, rng, durations, args.kill_fraction, last)
                record["round"], record["cycle"] = rounds, len(records) + 1
                records.append(record)
                last = record["position"] or last
                injected = sum(r["fault"] != "none (finished first)" for r in records)
                if record["finished"] or injected >= args.cycles:
                    break
            records[-1]["end_state"] = finish_round(folder, args.num_workers, expected)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return report(records, args)


def report(records: list[dict], args) -> int:
    print("| cycle | round | fault | when | at (s) | exit | resumed from | saved (epoch, it) after | outcome |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        outcome = "; ".join(r["problems"]) or ("ok, SIGTERM saved" if r["handled"] else "ok")
        if "end_state" in r:
            outcome += " | end of round: " + ("; ".join(r["end_state"]) or "bit-identical to the uninterrupted run")
        print(f"| {r['cycle']} | {r['round']} | {r['fault']} | {r['phase']} | {r['delay_s']} | {r['exit']} | "
              f"{r['resumed_from']} | "
              f"{r['position']} | {outcome} |")
    faults = [r for r in records if r["fault"] != "none (finished first)"]
    failed = [r for r in records if r["problems"] or r.get("end_state")]
    rounds = [r for r in records if "end_state" in r]
    summary = {"cycles": len(records), "faults": len(faults),
               "sigterm": sum(r["fault"] == "SIGTERM" for r in faults),
               "sigterm_handled": sum(r["handled"] for r in faults),
               "kill9": sum(r["fault"] == "kill -9" for r in faults), "rounds": len(rounds),
               "rounds_bit_identical": sum(not r["end_state"] for r in rounds), "failures": len(failed)}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": records, "summary": summary}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
