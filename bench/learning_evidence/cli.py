"""The command line: one preset (or group) end to end, or the sweep. See the package's docstring for the presets."""

import argparse
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

from croc_utils.cli import default_device
from eval.probe_data import synthetic_probe_data

from . import figure, probes, report
from .flags import parse_flag
from .presets import PRESET_GROUPS, PRESETS, PUBLISHED, SWEEP, Preset
from .runner import ROOT, machine, train_runs, training_log
from .sweep import run_sweep, write_json

PROG = "learning_evidence"


def default_output(name: str) -> Path:
    """Outside the repository: ``$XDG_CACHE_HOME/croc/learning_evidence/<name>`` (``~/.cache`` without it)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "croc" / "learning_evidence" / name


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(PROG, description="Does it learn? CrOC vs DINO-only vs random init, equal "
                                     "budget, probed along training, with floors and a ceiling.")
    parser.add_argument("--preset", default="cpu", choices=sorted([*PRESETS, *PRESET_GROUPS]))
    parser.add_argument("--sweep", nargs="*", default=None, metavar="CONFIG",
                        help="Run the dev preset for the SWEEP configurations (all, or those named) and tabulate them.")
    parser.add_argument("--output_dir", default="", type=str,
                        help="Runs, JSON, table and figure go here. Default: ~/.cache/croc/learning_evidence/<preset> "
                             "(or sweep; $XDG_CACHE_HOME replaces ~/.cache).")
    parser.add_argument("--figure", default="", type=str, help="Figure path. Default: in --output_dir.")
    parser.add_argument("--publish", action="store_true",
                        help="Also write the figure, JSON and table to the repository's figures/ "
                             f"(learning_evidence_<preset>.*; presets {', '.join(PUBLISHED)} on the val split, "
                             "unmodified).")
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


def fail(message: str):
    raise SystemExit(f"{PROG}: error: {message}")


def parse_overrides(items: list[str]) -> dict:
    """``["lr=0.004", "blur_p=0 0 0"]`` -> typed ``{"lr": 0.004, "blur_p": (0.0, 0.0, 0.0)}``."""
    out = {}
    for item in items:
        flag, sep, text = item.partition("=")
        name = flag.strip().lstrip("-")
        if not sep or not name:
            fail(f"--set takes FLAG=VALUE, got {item!r}")
        try:
            out[name] = parse_flag(name, text)
        except ValueError as e:
            fail(str(e))
    return out


def resolve(args, name: str) -> Preset:
    """The preset ``name`` with the command line's overrides."""
    preset = PRESETS[name]
    if args.device:
        preset = replace(preset, device=args.device)
    if preset.device == "auto":  # the run's device: CUDA where there is one (the gpu preset's card), else the CPU
        preset = replace(preset, device=default_device())
    if args.num_workers >= 0:
        preset = replace(preset, train=replace(preset.train, num_workers=args.num_workers))
    if args.sequential:
        preset = replace(preset, parallel=False)
    overrides = parse_overrides(args.set)
    if "alpha_s" in overrides and len(preset.runs) > 1:
        fail("--set alpha_s would break the CrOC / DINO-only pairing")
    if overrides:  # the ceiling follows: its budget is computed from the runs' flags
        preset = replace(preset, train=preset.train.with_flags(**overrides))
    if args.eval_split:
        preset = replace(preset, eval_split=args.eval_split)
    return preset


def publish(name: str, output_dir: Path, figure_path: Path | None) -> list[Path]:
    """Copy a preset's figure, JSON and table into figures/ as learning_evidence_<name>.*; returns the copies."""
    figures, out = ROOT / "figures", []
    for source, suffix in ((figure_path, ".png"), (output_dir / "learning_evidence.json", ".json"),
                           (output_dir / "learning_evidence.md", ".md")):
        if source is not None and source.exists():
            target = figures / f"learning_evidence_{name}{suffix}"
            shutil.copyfile(source, target)
            out.append(target)
    return out


def run_preset(name: str, preset: Preset, output_dir: Path, figure_path: Path | None, overrides: list) -> dict:
    """Train the preset's runs, measure them and the references, write JSON, table and figure; returns the result."""
    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    jobs = {run: (preset.command(run, output_dir / run), output_dir / run) for run in preset.runs}
    training = train_runs(jobs, parallel=preset.parallel, threads=preset.threads)
    t_train = time.time() - t0
    data = synthetic_probe_data(**asdict(preset.probe_data), eval_split=preset.eval_split)
    curves = {"random": [probes.probe_random(preset, data)]}
    for run in preset.runs:
        curves[run] = probes.probe_run(preset, output_dir / run, data, run)
        for point, stats in zip(curves[run], report.epoch_stats(training_log(output_dir / run), curves[run])):
            point["train_stats"] = stats
    curves.update(probes.probe_references(preset, data, output_dir))
    seconds = {"train": t_train, "evaluate": time.time() - t0 - t_train, "total": time.time() - t0}
    labels = report.run_labels(preset.train.alpha_s)
    result = {"preset": name, "overrides": overrides, "eval_split": preset.eval_split, "budget": preset.budget,
              "machine": machine(), "seconds": seconds, "training": training, "gaps": report.gaps(curves),
              "probe_data": data.description, "probe_config": asdict(preset.probe),
              "preset_settings": preset.settings(), "curves": report.strip_runs(curves),
              "logs": {run: training_log(output_dir / run) for run in preset.runs},
              "figure": figure.panels(curves, labels)}
    write_json(output_dir / "learning_evidence.json", result)
    drawn = "not drawn"
    if figure_path is not None:
        title = (f"{name} preset{' (modified)' if overrides else ''}: {preset.train.arch}/{preset.train.patch_size}, "
                 f"synthetic '{preset.probe_data.style}' {preset.eval_split}, probe mean +- std over "
                 f"{len(preset.probe.seeds)} seeds")
        try:
            figure.draw(result["figure"], figure_path, title)
            drawn = figure_path.name
        except ImportError:  # e.g. a lent GPU machine without matplotlib: the JSON holds what the figure shows
            drawn = "not drawn (no matplotlib here)"
    text = report.summary(report.markdown_table(curves, labels), result["gaps"], seconds, drawn)
    (output_dir / "learning_evidence.md").write_text(text + "\n")
    print(text)
    return result


def main(argv=None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args.sweep is not None:
        unknown = [c for c in args.sweep if c not in SWEEP]
        if unknown:
            fail(f"unknown sweep configuration(s) {unknown}; choose from {list(SWEEP)}")
        configs = {name: SWEEP[name] for name in (args.sweep or SWEEP)}
        output_dir = Path(args.output_dir).resolve() if args.output_dir else default_output("sweep")
        return {"rows": run_sweep(configs, output_dir, resolve(args, "dev"))}
    names = PRESET_GROUPS.get(args.preset, (args.preset,))
    base = Path(args.output_dir).resolve() if args.output_dir else default_output(args.preset)
    if args.publish and (args.set or any(n not in PUBLISHED or resolve(args, n).eval_split != "val" for n in names)):
        fail(f"--publish writes the val-split results of the presets {', '.join(PUBLISHED)} only (no --set)")
    results = {}
    for name in names:
        output_dir = base / name if len(names) > 1 else base
        figure_path = Path(args.figure) if args.figure and len(names) == 1 else output_dir / "learning_evidence.png"
        results[name] = run_preset(name, resolve(args, name), output_dir, figure_path, args.set)
        if args.publish:
            print("published: " + ", ".join(str(p.relative_to(ROOT)) for p in publish(name, output_dir, figure_path)))
    return results[names[0]] if len(names) == 1 else results
