"""Does it learn? CrOC vs DINO-only vs random init, equal budget, probed along training (issue 12).

Trains CrOC (``--alpha_s 1``) and DINO-only (``--alpha_s 0``, everything else identical: seed, data, views, images
seen) by running ``main_croc.py`` through its command line, then probes the teacher of every ``--saveckp_freq``
checkpoint of both runs, and a randomly initialised backbone of the same architecture and seed, with
``eval.dense_probe`` (linear probe, K-means K = #classes and K = 100; mean +- std over the probe seeds).
Writes ``learning_evidence.json``, ``learning_evidence.md`` (also printed) and a figure of probe mIoU vs images seen.

    python bench/learning_evidence.py --preset smoke     # CPU, about a minute (tests/test_learning_evidence.py)
    python bench/learning_evidence.py --preset cpu       # <= 30 min on an idle 2-core CPU
    python bench/learning_evidence.py --preset gpu       # <= 8 min on one H200

Rerunning resumes: a finished training run is not repeated (``main_croc.py`` resumes from its checkpoint).
The recipe of each preset lives here; ``main_croc.py``'s defaults stay the released recipe.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from croc_utils.logging import read_log as read_training_log
from eval.dense_probe import ProbeConfig, evaluate_backbone, synthetic_probe_data
from eval.features import default_device, load_backbone

ROOT = Path(__file__).resolve().parents[1]  # the training runs use this checkout: cwd and PYTHONPATH

# Mixed-precision flags of the GPU runs, in one place: switch to ["--precision", "bf16"] once main_croc has it.
GPU_PRECISION_FLAGS = ["--precision", "bf16", "--augment_on", "device"]  # colour operations batched on the card
CPU_PRECISION_FLAGS = ["--use_fp16", "false"]
RUNS = {"croc": "1", "dino": "0"}  # run name -> --alpha_s; nothing else differs
LABELS = {"croc": "CrOC (alpha_s 1)", "dino": "DINO-only (alpha_s 0)", "random": "random init"}

# The small-scale recipe shared by the cpu and gpu presets (see the README section "Does it learn?"): scenes of the
# "large" style drawn at 128 px, 96 px global crops and four 48 px local crops, ViT-Ti/16, small output layers,
# a short warm-up, a fast teacher (momentum 0.99) and no stochastic depth. Chosen a priori (DINO's short-schedule
# practice), never on val: the one alternative tried (--set lr=0.016 momentum_teacher=0.98 out_dim=256
# out_dim_c=256) scored lower on the train-split development set (--eval_split dev) and was not adopted.
RECIPE = {
    "--dataset_type": "synthetic", "--synthetic_style": "large", "--synthetic_size": "128",
    "--synthetic_cache": "true", "--arch": "vit_tiny", "--patch_size": "16", "--global_crops_size": "96",
    "--local_crops_number": "4", "--local_crops_size": "48", "--out_dim": "1024", "--out_dim_c": "512",
    "--warmup_epochs": "1", "--min_lr": "1e-5", "--momentum_teacher": "0.99", "--drop_path_rate": "0",
    "--seed": "0", "--log_freq": "20",
}


@dataclass(frozen=True)
class Preset:
    """One budget: the training flags shared by both runs, the probe's data and settings, how runs are launched."""

    train: dict
    precision: list
    probe_data: dict
    probe: ProbeConfig
    device: str = "cpu"
    parallel: bool = False  # train both runs at once (CPU: one thread each)
    threads: int | None = None  # OMP / torch threads per process (None: torch's default)
    budget: str = ""
    notes: list = field(default_factory=list)


PRESETS = {
    "smoke": Preset(
        train={**RECIPE, "--synthetic_num_images": "32", "--synthetic_size": "32", "--global_crops_size": "32",
               "--local_crops_number": "0", "--out_dim": "64", "--out_dim_c": "32", "--batch_size_per_gpu": "8",
               "--epochs": "2", "--warmup_epochs": "0", "--lr": "0.05", "--momentum_teacher": "0.9",
               "--saveckp_freq": "1", "--num_workers": "0", "--log_freq": "1"},
        precision=CPU_PRECISION_FLAGS,
        probe_data={"pool_images": 24, "val_images": 12, "input_size": 32, "style": "large"},
        probe=ProbeConfig(n_train=16, seeds=(0, 1), max_iter=50, n_clusters=(0, 20), pca_dim=16, kmeans_iter=20,
                          kmeans_restarts=1, batch_size=32),
        parallel=True, threads=1, budget="CPU, < 2 min (CI)"),
    "cpu": Preset(
        train={**RECIPE, "--synthetic_num_images": "1536", "--batch_size_per_gpu": "32", "--epochs": "8",
               "--lr": "0.008", "--saveckp_freq": "2", "--num_workers": "1"},
        precision=CPU_PRECISION_FLAGS,
        probe_data={"pool_images": 600, "val_images": 200, "input_size": 128, "style": "large"},
        probe=ProbeConfig(n_train=300, seeds=(0, 1, 2), max_iter=300, n_clusters=(0, 100)),
        parallel=True, threads=1, budget="<= 30 min on an idle 2-core CPU"),
    "gpu": Preset(
        # 196,608 images per run (1,536 steps): sized for ~1,500 img/s of vit_tiny at 96 px on the card, an estimate
        # (the cpu preset's 384 steps did not leave DINO's first phase); not yet measured
        train={**RECIPE, "--synthetic_num_images": "8192", "--batch_size_per_gpu": "128", "--epochs": "24",
               "--lr": "0.004", "--saveckp_freq": "6", "--num_workers": "14"},
        precision=GPU_PRECISION_FLAGS,
        probe_data={"pool_images": 1000, "val_images": 500, "input_size": 128, "style": "large"},
        probe=ProbeConfig(n_train=500, seeds=(0, 1, 2), max_iter=500, n_clusters=(0, 100), batch_size=256),
        device="auto", parallel=False, budget="<= 8 min on one H200"),
}


# ===== training =====

def train_command(preset: Preset, run: str, output_dir: Path) -> list[str]:
    flags = {**preset.train, "--alpha_s": RUNS[run], "--device": preset.device, "--output_dir": str(output_dir)}
    return [sys.executable, "main_croc.py", *[str(x) for kv in flags.items() for x in kv], *preset.precision]


def child_env(threads: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def train_runs(preset: Preset, output_dir: Path) -> dict:
    """Both training runs (at once when ``preset.parallel``); returns run -> {command, seconds, returncode}."""
    procs, info = {}, {}
    for run in RUNS:
        run_dir = output_dir / run
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = train_command(preset, run, run_dir)
        info[run] = {"command": " ".join(cmd[1:]), "t0": time.time()}
        log = open(run_dir / "train.log", "a")
        procs[run] = (subprocess.Popen(cmd, cwd=ROOT, env=child_env(preset.threads), stdout=log,
                                       stderr=subprocess.STDOUT), log)
        print(f"[{run}] started: python {info[run]['command']}", flush=True)
        if not preset.parallel:
            _wait(run, procs, info, output_dir)
    for run in RUNS:
        if "seconds" not in info[run]:
            _wait(run, procs, info, output_dir)
    return info


def _wait(run: str, procs: dict, info: dict, output_dir: Path) -> None:
    proc, log = procs[run]
    code = proc.wait()
    log.close()
    info[run]["seconds"] = time.time() - info[run].pop("t0")
    info[run]["returncode"] = code
    if code != 0:
        tail = (output_dir / run / "train.log").read_text().splitlines()[-5:]
        raise RuntimeError(f"training run {run} failed (exit {code}); last lines of its train.log:\n"
                           + "\n".join(tail))
    print(f"[{run}] finished in {info[run]['seconds']:.0f} s", flush=True)


def read_log(run_dir: Path) -> list[dict]:
    """Per-epoch training statistics (log.txt: teacher entropy, KL, mean k, losses; torn lines skipped)."""
    path = run_dir / "log.txt"
    return read_training_log(str(path)) if path.exists() else []


def checkpoints(run_dir: Path) -> list[Path]:
    """The periodic checkpoints ``checkpoint{epoch:04}.pth`` of a run, in training order."""
    return sorted(p for p in run_dir.glob("checkpoint[0-9]*.pth"))


def images_seen(preset: Preset, epochs_done: int) -> int:
    """Images through the student after ``epochs_done`` epochs (drop_last batches, one process)."""
    n, batch = int(preset.train["--synthetic_num_images"]), int(preset.train["--batch_size_per_gpu"])
    return epochs_done * (n // batch) * batch


# ===== evaluation =====

def evaluate_runs(preset: Preset, output_dir: Path, data) -> dict:
    """Probe random init once, then every periodic checkpoint (teacher) of both runs."""
    arch, patch = preset.train["--arch"], int(preset.train["--patch_size"])
    torch.manual_seed(int(preset.train["--seed"]))  # main_croc builds its student right after seeding with --seed
    model = load_backbone(arch, patch, device=preset.device, verbose=False)
    print("[random] ", end="", flush=True)
    curves = {"random": [{"images_seen": 0, "epoch": 0, **evaluate_backbone(model, data, preset.probe,
                                                                            preset.device)}]}
    for run in RUNS:
        curves[run] = []
        for ckpt in checkpoints(output_dir / run):
            epochs_done = int(ckpt.stem.removeprefix("checkpoint")) + 1  # checkpoint{epoch:04}: 0-based epoch
            model = load_backbone(arch, patch, str(ckpt), "teacher", preset.device, verbose=False)
            print(f"[{run} {ckpt.name}] ", end="", flush=True)
            result = evaluate_backbone(model, data, preset.probe, preset.device)
            curves[run].append({"images_seen": images_seen(preset, epochs_done), "epoch": epochs_done,
                                "checkpoint": str(ckpt), **result})
    return curves


# ===== outputs =====

METRICS = [("linear", "linear probe"), ("kmeans_classes", "K-means K=#classes"), ("kmeans_over", "K-means K=100")]


def metric(point: dict, key: str) -> tuple[float, float]:
    """(mean, std) in mIoU points of one metric of one evaluated point."""
    if key == "linear":
        r = point["linear"]
    else:
        ks = sorted(point["kmeans"], key=int)
        r = point["kmeans"][ks[0] if key == "kmeans_classes" else ks[-1]]
    return r["miou_mean"], r["miou_std"]


def markdown_table(curves: dict) -> str:
    ks = sorted(curves["random"][0]["kmeans"], key=int)
    head = ["backbone", "images seen", "linear probe mIoU", f"K-means K={ks[0]}", f"K-means K={ks[-1]}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in ("random", *RUNS):
        for point in curves[run]:
            cells = [LABELS[run], f"{point['images_seen']:,}"]
            cells += ["{:.2f} +- {:.2f}".format(*metric(point, key)) for key, _ in METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gaps(curves: dict) -> dict:
    """Final-point differences of the linear-probe means (the issue's targets), in mIoU points."""
    final = {run: metric(curves[run][-1], "linear")[0] for run in curves if curves[run]}
    out = {"linear_final": final}
    if "croc" in final:
        out["croc_minus_random"] = final["croc"] - final["random"]
        if "dino" in final:
            out["croc_minus_dino"] = final["croc"] - final["dino"]
            out["dino_minus_random"] = final["dino"] - final["random"]
    return out


def plot(curves: dict, path: Path, title: str) -> None:
    """Probe mIoU vs images seen: one panel per metric, three curves with +- std bands (random drawn flat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.8))
    x_max = max([p["images_seen"] for run in RUNS for p in curves[run]] + [1])
    colours = {"croc": "tab:red", "dino": "tab:blue", "random": "tab:gray"}
    for ax, (key, name) in zip(axes, METRICS):
        for run in ("random", *RUNS):
            points = curves[run]
            if not points:
                continue
            mean, std = np.array([metric(p, key) for p in points]).T
            x = np.array([p["images_seen"] for p in points], dtype=float)
            if run == "random":
                x, mean, std = np.array([0.0, x_max]), np.repeat(mean, 2), np.repeat(std, 2)
            style = "--" if run == "random" else "-o"
            ax.plot(x, mean, style, color=colours[run], label=LABELS[run], markersize=4)
            ax.fill_between(x, mean - std, mean + std, color=colours[run], alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("images seen")
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def strip_runs(curves: dict) -> dict:
    """The curves without per-class detail of every seed (kept: per-seed mIoU and chosen weight decays)."""
    def slim(r):
        return {k: v for k, v in r.items() if k != "runs"} | {
            "per_seed": [{k: v for k, v in run.items() if k in ("seed", "miou", "weight_decay", "n_iter",
                                                                  "converged", "pixel_accuracy")}
                         for run in r["runs"]]}
    out = {}
    for name, points in curves.items():
        out[name] = [{**p, "linear": slim(p["linear"]), "kmeans": {k: slim(v) for k, v in p["kmeans"].items()}}
                     for p in points]
    return out


# ===== main =====

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("learning_evidence", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--output_dir", default="", type=str,
                        help="Runs, JSON and table go here. Default: learning_evidence_<preset>.")
    parser.add_argument("--figure", default="", type=str,
                        help="Figure path. Default: figures/learning_evidence_<preset>.png (smoke: in --output_dir).")
    parser.add_argument("--device", default="", type=str, help="Override the preset's device (cpu, cuda, ...).")
    parser.add_argument("--num_workers", default=-1, type=int, help="Override the preset's data workers.")
    parser.add_argument("--sequential", action="store_true", help="Train the two runs one after the other.")
    parser.add_argument("--set", default=[], nargs="+", metavar="FLAG=VALUE",
                        help="Override main_croc.py flags of BOTH runs, e.g. --set lr=0.016 momentum_teacher=0.98 "
                             "(recipe development: pair it with --eval_split dev).")
    parser.add_argument("--eval_split", default="val", choices=["val", "dev"],
                        help="Score on the val split (reported numbers) or on the train-split development set "
                             "(choosing settings). Default: val.")
    return parser


def resolve(args) -> Preset:
    preset = PRESETS[args.preset]
    if args.device:
        preset = replace(preset, device=args.device)
    if preset.device == "auto":  # the run's device: CUDA where there is one (the gpu preset's card), else the CPU
        preset = replace(preset, device=default_device())
    if args.num_workers >= 0:
        preset = replace(preset, train={**preset.train, "--num_workers": str(args.num_workers)})
    if args.sequential:
        preset = replace(preset, parallel=False)
    overrides = {}
    for item in args.set:
        flag, sep, value = item.partition("=")
        if not sep or not flag.strip("-"):
            raise SystemExit(f"learning_evidence: error: --set takes FLAG=VALUE, got {item!r}")
        overrides["--" + flag.strip("-")] = value
    if "--alpha_s" in overrides:
        raise SystemExit("learning_evidence: error: --set alpha_s would break the CrOC / DINO-only pairing")
    if overrides:
        preset = replace(preset, train={**preset.train, **overrides})
    return replace(preset, probe_data={**preset.probe_data, "eval_split": args.eval_split})


def main(argv=None) -> dict:
    args = get_args_parser().parse_args(argv)
    preset = resolve(args)
    output_dir = Path(args.output_dir or f"learning_evidence_{args.preset}").resolve()
    in_repo = args.preset != "smoke" and args.eval_split == "val" and not args.set  # only the presets' own results
    figure = Path(args.figure or (ROOT / "figures" / f"learning_evidence_{args.preset}.png" if in_repo
                                  else output_dir / "learning_evidence.png"))
    output_dir.mkdir(parents=True, exist_ok=True)
    if preset.threads:
        torch.set_num_threads(preset.threads)
    t0 = time.time()
    training = train_runs(preset, output_dir)
    t_train = time.time() - t0
    data = synthetic_probe_data(**preset.probe_data)
    curves = evaluate_runs(preset, output_dir, data)
    for run in RUNS:
        for point, stats in zip(curves[run], _epoch_stats(output_dir / run, curves[run])):
            point["train_stats"] = stats
    seconds = {"train": t_train, "evaluate": time.time() - t0 - t_train, "total": time.time() - t0}
    table = markdown_table(curves)
    result = {"preset": args.preset, "overrides": args.set, "eval_split": args.eval_split,
              "budget": preset.budget, "machine": machine(), "seconds": seconds,
              "training": training, "gaps": gaps(curves), "probe_data": data.description,
              "probe_config": asdict(preset.probe), "preset_settings": asdict(preset),
              "curves": strip_runs(curves), "logs": {run: read_log(output_dir / run) for run in RUNS}}
    with open(output_dir / "learning_evidence.json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    title = (f"{args.preset} preset{' (modified)' if args.set else ''}: {preset.train['--arch']}/"
             f"{preset.train['--patch_size']}, synthetic '{preset.probe_data['style']}' {args.eval_split}, "
             f"probe mean +- std over {len(preset.probe.seeds)} seeds")
    try:
        plot(curves, figure, title)
    except ImportError:  # e.g. a lent GPU machine without matplotlib: the JSON holds everything the figure shows
        figure = "not drawn (no matplotlib here)"
    summary = (f"{table}\n\nlinear-probe gaps at the last point (mIoU points): "
               + ", ".join(f"{k} {v:+.2f}" for k, v in result["gaps"].items() if k != "linear_final")
               + f"\ntime: train {seconds['train']:.0f} s, evaluate {seconds['evaluate']:.0f} s, "
               f"total {seconds['total']:.0f} s; figure {figure}")
    (output_dir / "learning_evidence.md").write_text(summary + "\n")
    print(summary)
    return result


def _epoch_stats(run_dir: Path, points: list[dict]) -> list[dict]:
    """log.txt's line of the epoch that ended at each evaluated checkpoint (teacher entropy, KL, mean k...)."""
    log = {int(r["epoch"]): r for r in read_log(run_dir)}
    keys = ("train_loss", "train_d_loss", "train_s_loss", "train_ent", "train_kl", "train_ent_c", "train_kl_c",
            "train_mean_k", "train_img_per_s")
    return [{k: log.get(p["epoch"] - 1, {}).get(k) for k in keys} for p in points]


if __name__ == "__main__":
    main()
