"""The sweep: the dev preset for each configuration of ``presets.SWEEP``, each probed at its last checkpoint on the dev
split, tabulated. Results are cached under keys of everything that decides them, so an edited configuration trains and
probes afresh: ``OUTPUT/<config>/<training key>/`` (the training argv and device) holds its run and training.json,
and ``result-<probe key>.json`` per probe setting (the probe, its scenes and split)."""

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from eval.probe_data import synthetic_probe_data

from . import probes, report
from .presets import Preset, override_words
from .runner import machine, train_runs, training_log

RUN = "sweep"  # the run name of a configuration (not croc / dino: --alpha_s is the configuration's or the default)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def probe_key(preset: Preset) -> str:
    """The cache key of a probe result besides the backbone: the probe, its scenes and split, the device."""
    return digest({"probe": asdict(preset.probe), "probe_data": asdict(preset.probe_data),
                   "eval_split": preset.eval_split, "device": preset.device})


def train_key(preset: Preset) -> str:
    """The cache key of one configuration's training run: its argv (without the run folder) and device."""
    return digest({"argv": preset.run_flags(RUN).argv(), "device": preset.device})


def random_key(preset: Preset) -> str:
    """The cache key of random init's probe: the architecture, the seed and the probe's settings."""
    t = preset.train
    return digest({"arch": t.arch, "patch_size": t.patch_size, "seed": t.seed, "probe": probe_key(preset)})


def result_path(folder: Path, preset: Preset) -> Path:
    return folder / f"result-{probe_key(preset)}.json"


def cached(folder: Path, preset: Preset) -> dict | None:
    """The result of ``preset``'s probe cached in ``folder`` (``<config>/<train key>``), or None when there is none
    or the file holds another configuration's."""
    path = result_path(folder, preset)
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("key") == [folder.name, probe_key(preset)] else None


def configurations(configs: dict, preset: Preset, output_dir: Path) -> dict[str, tuple[Preset, Path]]:
    """name -> (the preset with the configuration's flags, its run's cache folder)."""
    out = {}
    for name, values in configs.items():
        config = replace(preset, train=preset.train.with_flags(**values))
        out[name] = (config, output_dir / name / train_key(config))
    return out


def _train(pending: dict, preset: Preset) -> None:
    """Train the pending configurations, two at a time (one thread each) when the preset runs in parallel."""
    names, step = list(pending), 2 if preset.parallel else 1
    for i in range(0, len(names), step):
        jobs = {name: (pending[name][0].command(RUN, pending[name][1] / "run"), pending[name][1] / "run")
                for name in names[i:i + step]}
        info = train_runs(jobs, parallel=preset.parallel, threads=preset.threads)
        for name in jobs:
            write_json(pending[name][1] / "training.json", info[name])


def _random(preset: Preset, data, output_dir: Path) -> dict:
    path = output_dir / f"random-{random_key(preset)}.json"
    if not path.exists():
        write_json(path, probes.probe_random(preset, data)["linear"])
    return json.loads(path.read_text())


def run_sweep(configs: dict, output_dir: Path, preset: Preset) -> list[dict]:
    """Every configuration ``name -> {flag: value}`` over ``preset``: trained (unless cached), probed at its last
    checkpoint; returns the table rows and writes sweep.json / sweep.md into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    todo = configurations(configs, preset, output_dir)
    pending = {name: cf for name, cf in todo.items() if cached(cf[1], cf[0]) is None}
    _train({name: cf for name, cf in pending.items() if not (cf[1] / "training.json").exists()}, preset)
    data = synthetic_probe_data(**asdict(preset.probe_data), eval_split=preset.eval_split)
    random = _random(preset, data, output_dir)
    rows = []
    for name, (config, folder) in todo.items():
        if name in pending:
            point = probes.probe_run(config, folder / "run", data, name, last_only=True)[-1]
            point["train_stats"] = report.epoch_stats(training_log(folder / "run"), [point])[0]
            training = json.loads((folder / "training.json").read_text())
            write_json(result_path(folder, config), {
                "key": [folder.name, probe_key(config)], "argv": config.run_flags(RUN).argv(), "flags": configs[name],
                "point": report.strip_runs({"x": [point]})["x"][0], "random": random["miou_mean"],
                "train_seconds": training["seconds"]})
        rows.append(report.sweep_row(name, override_words(configs[name]), cached(folder, config)))
    table = report.sweep_table(rows, (random["miou_mean"], random["miou_std"]))
    (output_dir / "sweep.md").write_text(table + "\n")
    write_json(output_dir / "sweep.json", {"rows": rows, "random": random["miou_mean"], "machine": machine()})
    print(table)
    return rows

