"""Does it learn? CrOC vs DINO-only vs random init, equal budget, probed along training, with floors and a ceiling.

Trains CrOC (``--alpha_s 1``) and DINO-only (``--alpha_s 0``, everything else identical: seed, data, views, images
seen) by running ``main_croc.py`` through its command line, then probes the teacher of every ``--saveckp_freq``
checkpoint of both runs with ``eval.dense_probe`` (linear probe, K-means; mean +- std over the probe seeds), beside
references probed the same way on the same scenes (``eval.probe_baselines``): random init (same architecture and
seed), the floors (majority class, mean colour, raw pixels, |FFT| of each patch) and the supervised ceiling (the same
ViT trained with the patch labels for the same number of images). Writes ``learning_evidence.json``,
``learning_evidence.md`` (also printed) and a figure of probe mIoU vs images seen.

    python bench/learning_evidence.py --preset smoke     # CPU, about a minute (tests/test_learning_evidence.py)
    python bench/learning_evidence.py --preset ci        # one CrOC run, <= 3 min on 2 cores (tests/test_learning.py)
    python bench/learning_evidence.py --preset dev       # one CrOC run, <= 5 min on 2 cores, dev split (recipes)
    python bench/learning_evidence.py --preset cpu       # <= 30 min on an idle 2-core CPU, val split
    python bench/learning_evidence.py --preset gpu       # <= 8 min on one H200: the texture and the shape style
    python bench/learning_evidence.py --sweep            # the dev preset for every SWEEP configuration, tabulated

Rerunning resumes: a finished training run is not repeated (``main_croc.py`` resumes from its checkpoint), and a
finished sweep configuration is read back from its JSON.
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

from croc_utils.cli import default_device
from croc_utils.logging import read_log as read_training_log
from croc_utils.synthetic import SyntheticScenes
from eval.probe import ProbeConfig, evaluate_backbone, evaluate_features
from eval.probe_baselines import FLOORS, SupervisedConfig, floor_features, train_supervised
from eval.probe_data import synthetic_probe_data
from models.pretrained import load_backbone

ROOT = Path(__file__).resolve().parents[1]  # the training runs use this checkout: cwd and PYTHONPATH

GPU_PRECISION_FLAGS = ["--precision", "bf16", "--augment_on", "device"]  # colour operations batched on the card
CPU_PRECISION_FLAGS = ["--use_fp16", "false"]
ALPHA_S = {"croc": "1", "dino": "0"}  # run name -> --alpha_s; nothing else differs
LABELS = {"croc": "CrOC (alpha_s 1)", "dino": "DINO-only (alpha_s 0)", "random": "random init",
          "majority": "floor: majority class", "mean_colour": "floor: mean colour per patch",
          "raw_pixels": "floor: raw patch pixels", "fft": "floor: \\|FFT\\| of each patch",
          "supervised": "ceiling: supervised, same budget"}

# The small-scale recipe on the texture scenes (README "Does it learn?", "How the recipe was chosen"): Voronoi
# texture mosaics drawn at 64 px and served from memory, ViT-Pico/8 on 48 px global crops, no blur (it erases the
# textures that define the classes), strong colour augmentation (hue over the whole circle, frequent grayscale: colour
# is the easy shortcut between two views), a narrow head and small output layers.
TEXTURE_RECIPE = {
    "--dataset_type": "synthetic", "--synthetic_style": "texture", "--synthetic_size": "64",
    "--synthetic_cache": "true", "--arch": "vit_pico", "--patch_size": "8", "--global_crops_size": "48",
    "--local_crops_number": "0", "--local_crops_size": "24",
    "--blur_p": ["0", "0", "0"], "--solarize_p": ["0", "0.2", "0"], "--hue_jitter": "0.5", "--grayscale_p": "0.3",
    "--head_hidden_dim": "512", "--out_dim": "512", "--out_dim_c": "256", "--norm_last_layer": "false",
    "--teacher_temp": "0.02", "--warmup_teacher_temp": "0.02", "--teacher_temp_c": "0.02",
    "--warmup_teacher_temp_c": "0.02", "--momentum_teacher": "0.99", "--drop_path_rate": "0",
    "--warmup_epochs": "1", "--min_lr": "1e-5", "--batch_size_per_gpu": "32", "--lr": "0.002", "--seed": "0",
    "--log_freq": "50",
}
# The earlier recipe on the shape-defined "large" scenes (ViT-Ti/16, 96 px crops): the gpu preset's shape variant.
SHAPE_RECIPE = {
    "--dataset_type": "synthetic", "--synthetic_style": "large", "--synthetic_size": "128",
    "--synthetic_cache": "true", "--arch": "vit_tiny", "--patch_size": "16", "--global_crops_size": "96",
    "--local_crops_number": "4", "--local_crops_size": "48", "--out_dim": "1024", "--out_dim_c": "512",
    "--warmup_epochs": "1", "--min_lr": "1e-5", "--momentum_teacher": "0.99", "--drop_path_rate": "0",
    "--seed": "0", "--log_freq": "20",
}
TEXTURE_PROBE = {"style": "texture", "input_size": 64}
SHAPE_PROBE = {"style": "large", "input_size": 128}


@dataclass(frozen=True)
class Preset:
    """One budget: the training flags shared by the runs, the probe's data and settings, the references, how runs
    are launched."""

    train: dict
    precision: list
    probe_data: dict
    probe: ProbeConfig
    runs: tuple = ("croc", "dino")
    floors: bool = True
    supervised: SupervisedConfig | None = None  # None: no ceiling
    device: str = "cpu"
    parallel: bool = False  # train the runs at once (CPU: one thread each)
    threads: int | None = None  # OMP / torch threads per training process (None: torch's default)
    eval_split: str = "val"
    budget: str = ""


def supervised_budget(train: dict, **kwargs) -> SupervisedConfig:
    """The ceiling's training: as many images as one pretraining run sees (epochs x full batches), same crops."""
    batch = int(train["--batch_size_per_gpu"])
    steps = int(train["--epochs"]) * (int(train["--synthetic_num_images"]) // batch)
    return SupervisedConfig(steps=steps, batch_size=batch, crop_size=int(train["--global_crops_size"]), **kwargs)


SMOKE_TRAIN = {**TEXTURE_RECIPE, "--synthetic_num_images": "32", "--synthetic_size": "32", "--global_crops_size": "32",
               "--head_hidden_dim": "64", "--out_dim": "64", "--out_dim_c": "32", "--batch_size_per_gpu": "8",
               "--epochs": "2", "--warmup_epochs": "0", "--lr": "0.05", "--momentum_teacher": "0.9",
               "--saveckp_freq": "1", "--num_workers": "0", "--log_freq": "1"}
DEV_TRAIN = {**TEXTURE_RECIPE, "--synthetic_num_images": "2048", "--epochs": "5", "--saveckp_freq": "5",
             "--num_workers": "0"}
CPU_TRAIN = {**TEXTURE_RECIPE, "--synthetic_num_images": "4096", "--epochs": "10", "--saveckp_freq": "5",
             "--num_workers": "0"}
GPU_TEXTURE_TRAIN = {**TEXTURE_RECIPE, "--synthetic_num_images": "16384", "--batch_size_per_gpu": "256",
                     "--epochs": "60", "--lr": "0.002", "--warmup_epochs": "3", "--saveckp_freq": "10",
                     "--num_workers": "14"}
GPU_SHAPE_TRAIN = {**SHAPE_RECIPE, "--synthetic_num_images": "8192", "--batch_size_per_gpu": "128", "--epochs": "24",
                   "--lr": "0.004", "--saveckp_freq": "6", "--num_workers": "14"}
CI_TRAIN = {**TEXTURE_RECIPE, "--synthetic_num_images": "1024", "--epochs": "8", "--saveckp_freq": "8",
            "--num_workers": "0"}
CPU_PROBE = ProbeConfig(n_train=300, seeds=(0, 1, 2), max_iter=300, n_clusters=(0, 100))

PRESETS = {
    "smoke": Preset(
        train=SMOKE_TRAIN, precision=CPU_PRECISION_FLAGS,
        probe_data={"pool_images": 24, "val_images": 12, "input_size": 32, "style": "texture"},
        probe=ProbeConfig(n_train=16, seeds=(0, 1), max_iter=50, n_clusters=(0, 20), pca_dim=16, kmeans_iter=20,
                          kmeans_restarts=1, batch_size=32),
        supervised=supervised_budget(SMOKE_TRAIN), parallel=True, threads=1, budget="CPU, < 2 min (CI)"),
    "ci": Preset(
        train=CI_TRAIN, precision=CPU_PRECISION_FLAGS, runs=("croc",), floors=False,
        probe_data={"pool_images": 2400, "val_images": 400, **TEXTURE_PROBE},
        probe=replace(CPU_PROBE, n_train=1600, max_iter=200, n_clusters=(), weight_decays=(1e-5,)), threads=2, eval_split="dev",
        budget="<= 3 min on 2 cores (tests/test_learning.py: CrOC's probe beats random init)"),
    "dev": Preset(
        train=DEV_TRAIN, precision=CPU_PRECISION_FLAGS, runs=("croc",), floors=False,
        probe_data={"pool_images": 600, "val_images": 200, **TEXTURE_PROBE},
        probe=replace(CPU_PROBE, n_clusters=()), parallel=True, threads=1, eval_split="dev",
        budget="<= 5 min per configuration with two side by side on 2 cores (the sweep)"),
    "cpu": Preset(
        train=CPU_TRAIN, precision=CPU_PRECISION_FLAGS,
        probe_data={"pool_images": 600, "val_images": 200, **TEXTURE_PROBE}, probe=CPU_PROBE,
        supervised=supervised_budget(CPU_TRAIN), parallel=True, threads=1,
        budget="<= 30 min on an idle 2-core CPU"),
    "gpu_texture": Preset(
        train=GPU_TEXTURE_TRAIN, precision=GPU_PRECISION_FLAGS,
        probe_data={"pool_images": 1000, "val_images": 500, **TEXTURE_PROBE},
        probe=replace(CPU_PROBE, n_train=500, max_iter=500, batch_size=256),
        supervised=supervised_budget(GPU_TEXTURE_TRAIN), device="auto", budget="<= 4 min on one H200 (estimate)"),
    "gpu_shape": Preset(
        train=GPU_SHAPE_TRAIN, precision=GPU_PRECISION_FLAGS,
        probe_data={"pool_images": 1000, "val_images": 500, **SHAPE_PROBE},
        probe=replace(CPU_PROBE, n_train=500, max_iter=500, batch_size=256),
        device="auto", budget="<= 4 min on one H200 (estimate)"),
}
PRESET_GROUPS = {"gpu": ("gpu_texture", "gpu_shape")}  # one command, one sub-folder per preset

# The dev-preset configurations of ``--sweep``: name -> main_croc.py flags overriding the dev preset. Read the table
# (README "How the recipe was chosen") before adding one; every configuration is scored on the dev split only.
SWEEP = {
    "base": {},
    "dino_only": {"--alpha_s": "0"},
    "teacher_temp_0.04": {"--teacher_temp": "0.04", "--warmup_teacher_temp": "0.04", "--teacher_temp_c": "0.04",
                          "--warmup_teacher_temp_c": "0.04"},
    "teacher_temp_warmup": {"--warmup_teacher_temp": "0.04", "--warmup_teacher_temp_c": "0.04",
                            "--warmup_teacher_temp_epochs": "3"},
    "norm_last_layer_true": {"--norm_last_layer": "true"},
    "lr_x4": {"--lr": "0.008"},
    "lr_div4": {"--lr": "0.0005"},
    "momentum_0.996": {"--momentum_teacher": "0.996"},
    "local_crops_4": {"--local_crops_number": "4"},
    "alpha_s_3": {"--alpha_s": "3"},
    "pos_alpha_0": {"--pos_alpha": "0"},
    "n_tokens_8": {"--n_tokens": "8", "--n_centroids_max": "6"},
    "sinkhorn_knopp": {"--teacher_centering": "sinkhorn_knopp"},
    "colour_released": {"--hue_jitter": "0.1", "--grayscale_p": "0.2"},
}


# ===== training =====

def flag_list(flags: dict) -> list[str]:
    """{flag: value or [values]} -> argv."""
    argv = []
    for flag, value in flags.items():
        argv += [flag, *(value if isinstance(value, list) else [value])]
    return [str(x) for x in argv]


def train_command(preset: Preset, run: str, output_dir: Path) -> list[str]:
    flags = {**preset.train, "--device": preset.device, "--output_dir": str(output_dir)}
    if run in ALPHA_S and "--alpha_s" not in preset.train:  # a one-run preset may set it (the dev preset, the sweep)
        flags["--alpha_s"] = ALPHA_S[run]
    return [sys.executable, "main_croc.py", *flag_list(flags), *preset.precision]


def child_env(threads: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def train_runs(jobs: dict, *, parallel: bool, threads: int | None) -> dict:
    """Training processes {name: (command, run folder)}, all at once when ``parallel``; returns name -> {command,
    seconds, returncode}. Raises RuntimeError (with the tail of its train.log) when one fails."""
    procs, info = {}, {}
    for name, (cmd, run_dir) in jobs.items():
        run_dir.mkdir(parents=True, exist_ok=True)
        info[name] = {"command": " ".join(cmd[1:]), "t0": time.time()}
        log = open(run_dir / "train.log", "a")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=child_env(threads), stdout=log,
                                        stderr=subprocess.STDOUT), log, run_dir)
        print(f"[{name}] started: python {info[name]['command']}", flush=True)
        if not parallel:
            _wait(name, procs, info)
    for name in jobs:
        if "seconds" not in info[name]:
            _wait(name, procs, info)
    return info


def _wait(name: str, procs: dict, info: dict) -> None:
    proc, log, run_dir = procs[name]
    code = proc.wait()
    log.close()
    info[name]["seconds"] = time.time() - info[name].pop("t0")
    info[name]["returncode"] = code
    if code != 0:
        tail = (run_dir / "train.log").read_text().splitlines()[-5:]
        raise RuntimeError(f"training run {name} failed (exit {code}); last lines of its train.log:\n"
                           + "\n".join(tail))
    print(f"[{name}] finished in {info[name]['seconds']:.0f} s", flush=True)


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

def evaluate_random(preset: Preset, data) -> dict:
    """Random init of the runs' architecture, seeded as main_croc seeds its student."""
    arch, patch = preset.train["--arch"], int(preset.train["--patch_size"])
    torch.manual_seed(int(preset.train["--seed"]))  # main_croc builds its student right after seeding with --seed
    model = load_backbone(arch, patch, device=preset.device, verbose=False)
    print("[random] ", end="", flush=True)
    return {"images_seen": 0, "epoch": 0, **evaluate_backbone(model, data, preset.probe, preset.device)}


def evaluate_run(preset: Preset, run_dir: Path, data, name: str, last_only: bool = False) -> list[dict]:
    """The probe of every periodic checkpoint (teacher) of one run, or of its last one."""
    arch, patch = preset.train["--arch"], int(preset.train["--patch_size"])
    points = []
    for ckpt in checkpoints(run_dir)[-1:] if last_only else checkpoints(run_dir):
        epochs_done = int(ckpt.stem.removeprefix("checkpoint")) + 1  # checkpoint{epoch:04}: 0-based epoch
        model = load_backbone(arch, patch, str(ckpt), "teacher", preset.device, verbose=False)
        print(f"[{name} {ckpt.name}] ", end="", flush=True)
        result = evaluate_backbone(model, data, preset.probe, preset.device)
        points.append({"images_seen": images_seen(preset, epochs_done), "epoch": epochs_done,
                       "checkpoint": str(ckpt), **result})
    return points


def evaluate_references(preset: Preset, data, output_dir: Path) -> dict:
    """Floors (fixed features) and the supervised ceiling, probed like the backbones: name -> [point]."""
    out = {}
    patch = int(preset.train["--patch_size"])
    if preset.floors:
        for name in FLOORS:
            print(f"[{name}] ", end="", flush=True)
            pool, val = (floor_features(name, images, patch) for images in (data.pool_images, data.val_images))
            out[name] = [{"images_seen": 0, "epoch": 0, **evaluate_features(pool, val, data, preset.probe)}]
    if preset.supervised is not None:
        train = preset.train
        scenes = SyntheticScenes("train", int(train["--synthetic_num_images"]), int(train["--synthetic_size"]),
                                 int(train["--seed"]), cache=True, style=train["--synthetic_style"])
        model, info = train_supervised(train["--arch"], patch, scenes, preset.supervised, device=preset.device,
                                       log_every=max(1, preset.supervised.steps // 5))
        torch.save({"teacher": model.state_dict()}, output_dir / "supervised.pth")
        print("[supervised] ", end="", flush=True)
        out["supervised"] = [{"images_seen": info["images_seen"], "epoch": 0, "training": info,
                              **evaluate_backbone(model, data, preset.probe, preset.device)}]
    return out


# ===== outputs =====

METRICS = [("linear", "linear probe"), ("kmeans_classes", "K-means K=#classes"), ("kmeans_over", "K-means K=100")]
RUN_ORDER = ("random", "croc", "dino", *FLOORS, "supervised")


def metric(point: dict, key: str) -> tuple[float, float]:
    """(mean, std) in mIoU points of one metric of one evaluated point (NaN when it was not measured)."""
    if key == "linear":
        r = point["linear"]
    else:
        ks = sorted(point["kmeans"], key=int)
        if not ks:
            return float("nan"), float("nan")
        r = point["kmeans"][ks[0] if key == "kmeans_classes" else ks[-1]]
    return r["miou_mean"], r["miou_std"]


def _cell(mean: float, std: float) -> str:
    return "-" if np.isnan(mean) else f"{mean:.2f} +- {std:.2f}"


def run_labels(preset: Preset) -> dict:
    """LABELS, with CrOC's alpha_s as the preset trains it (a one-run preset may set it, e.g. --set alpha_s=3)."""
    alpha_s = preset.train.get("--alpha_s")
    return {**LABELS, "croc": f"CrOC (alpha_s {alpha_s})"} if alpha_s not in (None, "1") else LABELS


def markdown_table(curves: dict, labels: dict = LABELS) -> str:
    head = ["backbone", "images seen", "linear probe mIoU", "K-means K=#classes", "K-means K=100"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in (r for r in RUN_ORDER if r in curves):
        for point in curves[run]:
            cells = [labels[run], f"{point['images_seen']:,}"]
            cells += [_cell(*metric(point, key)) for key, _ in METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gaps(curves: dict) -> dict:
    """Final-point differences of the linear-probe means (the issue's targets), in mIoU points, and the larger
    probe std of each compared pair (a gap counts when it is several times that std)."""
    final = {run: metric(points[-1], "linear") for run, points in curves.items() if points}
    out = {"linear_final": {run: mean for run, (mean, _) in final.items()}}
    for a, b in (("croc", "random"), ("croc", "dino"), ("dino", "random"), ("supervised", "croc")):
        if a in final and b in final:
            out[f"{a}_minus_{b}"] = final[a][0] - final[b][0]
            out[f"{a}_minus_{b}_max_std"] = max(final[a][1], final[b][1])
    return out


def plot(curves: dict, path: Path, title: str, labels: dict = LABELS) -> None:
    """Probe mIoU vs images seen: one panel per metric, CrOC and DINO-only curves with +- std bands; random init,
    the best floor and the supervised ceiling drawn flat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [run for run in ("croc", "dino") if curves.get(run)]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.8))
    x_max = max([p["images_seen"] for run in trained for p in curves[run]] + [1])
    floors = [f for f in FLOORS if f in curves]
    best_floor = max(floors, key=lambda f: metric(curves[f][0], "linear")[0]) if floors else None
    colours = {"croc": "tab:red", "dino": "tab:blue", "random": "tab:gray", "supervised": "tab:green",
               best_floor: "tab:olive"}
    for ax, (key, name) in zip(axes, METRICS):
        for run in ("random", best_floor, "supervised", *trained):
            points = curves.get(run)
            if not points or np.isnan(metric(points[0], key)[0]):
                continue
            mean, std = np.array([metric(p, key) for p in points]).T
            x = np.array([p["images_seen"] for p in points], dtype=float)
            if run not in trained:
                x, mean, std = np.array([0.0, x_max]), np.repeat(mean[-1], 2), np.repeat(std[-1], 2)
            elif curves.get("random") and x[0] > 0:  # both runs start from the random init probed at 0 images
                start = metric(curves["random"][0], key)
                x, mean, std = np.r_[0.0, x], np.r_[start[0], mean], np.r_[start[1], std]
            style = "-o" if run in trained else "--"
            label = labels[run].replace("\\|", "|")  # the table's escaped bars
            ax.plot(x, mean, style, color=colours[run], label=label, markersize=4)
            ax.fill_between(x, mean - std, mean + std, color=colours[run], alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("images seen")
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
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


def epoch_stats(run_dir: Path, points: list[dict]) -> list[dict]:
    """log.txt's line of the epoch that ended at each evaluated checkpoint (teacher entropies, KL, mean k...)."""
    log = {int(r["epoch"]): r for r in read_log(run_dir)}
    keys = ("train_loss", "train_d_loss", "train_s_loss", "train_ent", "train_ent_batch", "train_kl",
            "train_ent_c", "train_ent_batch_c", "train_kl_c", "train_mean_k", "train_img_per_s", "train_collapse",
            "train_collapse_c")
    return [{k: log.get(p["epoch"] - 1, {}).get(k) for k in keys} for p in points]


# ===== one preset =====

def run_preset(name: str, preset: Preset, output_dir: Path, figure: Path | None, overrides: list) -> dict:
    """Train the preset's runs, probe them and the references, write JSON, table and figure; returns the result."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if preset.threads:
        torch.set_num_threads(preset.threads)
    t0 = time.time()
    jobs = {run: (train_command(preset, run, output_dir / run), output_dir / run) for run in preset.runs}
    training = train_runs(jobs, parallel=preset.parallel, threads=preset.threads)
    t_train = time.time() - t0
    torch.set_num_threads(os.cpu_count() or 1)  # the runs are done: the probes may use every core
    data = synthetic_probe_data(**preset.probe_data, eval_split=preset.eval_split)
    curves = {"random": [evaluate_random(preset, data)]}
    for run in preset.runs:
        curves[run] = evaluate_run(preset, output_dir / run, data, run)
        for point, stats in zip(curves[run], epoch_stats(output_dir / run, curves[run])):
            point["train_stats"] = stats
    curves.update(evaluate_references(preset, data, output_dir))
    seconds = {"train": t_train, "evaluate": time.time() - t0 - t_train, "total": time.time() - t0}
    table = markdown_table(curves, run_labels(preset))
    result = {"preset": name, "overrides": overrides, "eval_split": preset.eval_split, "budget": preset.budget,
              "machine": machine(), "seconds": seconds, "training": training, "gaps": gaps(curves),
              "probe_data": data.description, "probe_config": asdict(preset.probe),
              "preset_settings": asdict(preset), "curves": strip_runs(curves),
              "logs": {run: read_log(output_dir / run) for run in preset.runs}}
    with open(output_dir / "learning_evidence.json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    drawn = "not drawn"
    if figure is not None:
        title = (f"{name} preset{' (modified)' if overrides else ''}: {preset.train['--arch']}/"
                 f"{preset.train['--patch_size']}, synthetic '{preset.probe_data['style']}' {preset.eval_split}, "
                 f"probe mean +- std over {len(preset.probe.seeds)} seeds")
        try:
            plot(curves, figure, title, run_labels(preset))
            drawn = str(figure)
        except ImportError:  # e.g. a lent GPU machine without matplotlib: the JSON holds everything the figure shows
            drawn = "not drawn (no matplotlib here)"
    summary = (f"{table}\n\nlinear-probe gaps at the last point (mIoU points): "
               + ", ".join(f"{k} {v:+.2f}" for k, v in result["gaps"].items() if k != "linear_final"
                           and not k.endswith("_max_std"))
               + f"\ntime: train {seconds['train']:.0f} s, evaluate {seconds['evaluate']:.0f} s, "
               f"total {seconds['total']:.0f} s; figure {drawn}")
    (output_dir / "learning_evidence.md").write_text(summary + "\n")
    print(summary)
    return result


# ===== the sweep =====

def sweep_row(name: str, flags: dict, result: dict) -> dict:
    """One configuration's line of the sweep table, from its run's probe and last log line."""
    point = result["point"]
    stats = point.get("train_stats", {})
    mean, std = metric(point, "linear")
    return {"config": name, "flags": " ".join(flag_list(flags)) or "(dev preset)", "linear": mean, "std": std,
            "minus_random": mean - result["random"], "ent": stats.get("train_ent"),
            "ent_batch": stats.get("train_ent_batch"), "ent_c": stats.get("train_ent_c"),
            "ent_batch_c": stats.get("train_ent_batch_c"), "collapse": stats.get("train_collapse"),
            "collapse_c": stats.get("train_collapse_c"), "train_s": result["train_seconds"]}


def sweep_table(rows: list[dict], random: tuple[float, float]) -> str:
    def num(v, fmt=".2f"):
        return "-" if v is None else format(v, fmt)

    head = ["config", "flags (over the dev preset)", "dev linear probe mIoU", "minus random", "CLS ent / batch ent",
            "cluster ent / batch ent", "collapse CLS / cluster", "train s"]
    lines = [f"random init: {random[0]:.2f} +- {random[1]:.2f}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["config"], f"`{r['flags']}`", f"{r['linear']:.2f} +- {r['std']:.2f}", f"{r['minus_random']:+.2f}",
            f"{num(r['ent'])} / {num(r['ent_batch'])}", f"{num(r['ent_c'])} / {num(r['ent_batch_c'])}",
            f"{num(r['collapse'], 'd')} / {num(r['collapse_c'], 'd')}", f"{r['train_s']:.0f}"]) + " |")
    return "\n".join(lines)


def run_sweep(configs: dict, output_dir: Path, preset: Preset) -> list[dict]:
    """The dev preset for every configuration (two at a time, one thread each), each probed at its last checkpoint
    on the dev split; returns the table rows and writes sweep.json / sweep.md. Finished configurations are read
    back from their result.json."""
    output_dir.mkdir(parents=True, exist_ok=True)
    pending = {name: flags for name, flags in configs.items() if not (output_dir / name / "result.json").exists()}
    names = list(pending)
    for i in range(0, len(names), 2 if preset.parallel else 1):
        batch = names[i:i + 2] if preset.parallel else names[i:i + 1]
        jobs = {}
        for name in batch:
            run_preset_ = replace(preset, train={**preset.train, **pending[name]})
            jobs[name] = (train_command(run_preset_, "sweep", output_dir / name / "run"), output_dir / name / "run")
        info = train_runs(jobs, parallel=preset.parallel, threads=preset.threads)
        for name in batch:
            (output_dir / name / "training.json").write_text(json.dumps(info[name], indent=1))
    torch.set_num_threads(os.cpu_count() or 1)
    data = synthetic_probe_data(**preset.probe_data, eval_split=preset.eval_split)
    random_path = output_dir / "random.json"
    if not random_path.exists():
        random_path.write_text(json.dumps(evaluate_random(preset, data)["linear"], default=str))
    random = json.loads(random_path.read_text())
    rows = []
    for name, flags in configs.items():
        path = output_dir / name / "result.json"
        if not path.exists():
            run_preset_ = replace(preset, train={**preset.train, **flags})
            point = evaluate_run(run_preset_, output_dir / name / "run", data, name, last_only=True)[-1]
            point["train_stats"] = epoch_stats(output_dir / name / "run", [point])[0]
            training = json.loads((output_dir / name / "training.json").read_text())
            path.write_text(json.dumps({"flags": flags, "point": strip_runs({"x": [point]})["x"][0],
                                        "random": random["miou_mean"], "train_seconds": training["seconds"]},
                                       default=str))
        rows.append(sweep_row(name, flags, json.loads(path.read_text())))
    table = sweep_table(rows, (random["miou_mean"], random["miou_std"]))
    (output_dir / "sweep.md").write_text(table + "\n")
    (output_dir / "sweep.json").write_text(json.dumps({"rows": rows, "random": random["miou_mean"],
                                                       "machine": machine()}, indent=1, default=str))
    print(table)
    return rows


# ===== main =====

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("learning_evidence", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted([*PRESETS, *PRESET_GROUPS]))
    parser.add_argument("--sweep", nargs="*", default=None, metavar="CONFIG",
                        help="Run the dev preset for the SWEEP configurations (all, or those named) and tabulate them.")
    parser.add_argument("--output_dir", default="", type=str,
                        help="Runs, JSON and table go here. Default: learning_evidence_<preset> (or _sweep).")
    parser.add_argument("--figure", default="", type=str,
                        help="Figure path. Default: figures/learning_evidence_<preset>.png for the val-split presets "
                             "(the smoke preset and modified runs: in --output_dir).")
    parser.add_argument("--device", default="", type=str, help="Override the preset's device (cpu, cuda, ...).")
    parser.add_argument("--num_workers", default=-1, type=int, help="Override the preset's data workers.")
    parser.add_argument("--sequential", action="store_true", help="Train the runs one after the other.")
    parser.add_argument("--set", default=[], nargs="+", metavar="FLAG=VALUE",
                        help="Override main_croc.py flags of every run, e.g. --set lr=0.004 momentum_teacher=0.996 "
                             "(recipe development: pair it with --eval_split dev).")
    parser.add_argument("--eval_split", default="", choices=["", "val", "dev"],
                        help="Score on the val split (reported numbers) or on the train-split development set "
                             "(choosing settings). Default: the preset's (dev for dev and the sweep, val otherwise).")
    return parser


def resolve(args, name: str) -> Preset:
    preset = PRESETS[name]
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
        overrides["--" + flag.strip("-")] = value.split() if " " in value.strip() else value
    if "--alpha_s" in overrides and len(preset.runs) > 1:
        raise SystemExit("learning_evidence: error: --set alpha_s would break the CrOC / DINO-only pairing")
    if overrides:
        preset = replace(preset, train={**preset.train, **overrides})
        if preset.supervised is not None:  # the ceiling keeps the runs' budget
            preset = replace(preset, supervised=supervised_budget(preset.train))
    if args.eval_split:
        preset = replace(preset, eval_split=args.eval_split)
    return preset


def main(argv=None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args.sweep is not None:
        unknown = [c for c in args.sweep if c not in SWEEP]
        if unknown:
            raise SystemExit(f"learning_evidence: error: unknown sweep configuration(s) {unknown}; "
                             f"choose from {list(SWEEP)}")
        configs = {name: SWEEP[name] for name in (args.sweep or SWEEP)}
        output_dir = Path(args.output_dir or "learning_evidence_sweep").resolve()
        return {"rows": run_sweep(configs, output_dir, resolve(args, "dev"))}
    names = PRESET_GROUPS.get(args.preset, (args.preset,))
    base = Path(args.output_dir or f"learning_evidence_{args.preset}").resolve()
    results = {}
    for name in names:
        preset = resolve(args, name)
        output_dir = base / name if len(names) > 1 else base
        in_repo = name != "smoke" and preset.eval_split == "val" and not args.set  # only the presets' own results
        figure = Path(args.figure) if args.figure and len(names) == 1 else (
            ROOT / "figures" / f"learning_evidence_{name}.png" if in_repo else output_dir / "learning_evidence.png")
        results[name] = run_preset(name, preset, output_dir, figure, args.set)
    return results[names[0]] if len(names) == 1 else results


if __name__ == "__main__":
    main()
