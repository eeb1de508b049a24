"""bench/learning_evidence.py, smoke preset, end to end: both training runs through main_croc.py's command line,
probes of random init and of every checkpoint, JSON, markdown table and figure (about a minute on 2 CPU cores)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _finite_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _finite_numbers(v)
    elif isinstance(obj, float):
        yield obj


def run_bench_preset(preset: str, output_dir: Path, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict]:
    """``python bench/learning_evidence.py --preset PRESET`` in a child process with this checkout on its path; the
    process (asserted successful) and its learning_evidence.json."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "bench/learning_evidence.py", "--preset", preset, "--output_dir",
                           str(output_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, json.loads((output_dir / "learning_evidence.json").read_text())


def test_smoke_preset_writes_three_curves(tmp_path):
    proc, out = run_bench_preset("smoke", tmp_path)
    curves = out["curves"]
    assert set(curves) == {"random", "croc", "dino", "majority", "mean_colour", "raw_pixels", "fft", "supervised"}
    assert len(curves["random"]) == 1 and curves["random"][0]["images_seen"] == 0
    for run in ("croc", "dino"):
        seen = [p["images_seen"] for p in curves[run]]
        assert seen == [32, 64]  # 32 scenes, batch 8, one checkpoint per epoch, 2 epochs
        assert out["training"][run]["returncode"] == 0
        assert len(out["logs"][run]) == 2 and all("train_mean_k" in line for line in out["logs"][run])
    for points in curves.values():
        for p in points:
            for r in (p["linear"], *p["kmeans"].values()):
                assert len(r["mious"]) == 2 and 0 <= r["miou_mean"] <= 100 and r["miou_std"] >= 0
    # the two runs differ only in --alpha_s
    cmds = {run: out["training"][run]["command"].split() for run in ("croc", "dino")}
    diff = [(a, b) for a, b in zip(cmds["croc"], cmds["dino"]) if a != b]
    assert sorted(diff) == sorted([("1", "0"), (str(tmp_path / "croc"), str(tmp_path / "dino"))])
    assert all(math.isfinite(x) for x in _finite_numbers(out["curves"]))
    assert {"croc_minus_random", "croc_minus_dino"} <= set(out["gaps"])
    table = (tmp_path / "learning_evidence.md").read_text()
    assert table.count("| CrOC (alpha_s 1) |") == 2 and table.count("| random init |") == 1
    assert "| CrOC (alpha_s 1) |" in proc.stdout  # the table is also printed
    assert (tmp_path / "learning_evidence.png").stat().st_size > 10_000


def test_every_preset_parses_and_runs_differ_only_in_alpha_s(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import learning_evidence as le

    from croc_utils.parser import parse_args

    for name, preset in le.PRESETS.items():
        commands = {run: le.train_command(preset, run, Path("/tmp/x") / run) for run in ("croc", "dino")}
        parsed = {run: vars(parse_args(cmd[2:])) for run, cmd in commands.items()}
        assert parsed["croc"]["alpha_s"] == 1 and parsed["dino"]["alpha_s"] == 0, name
        differing = {k for k in parsed["croc"] if parsed["croc"][k] != parsed["dino"][k]}
        assert differing == {"alpha_s", "output_dir"}, name
        assert parsed["croc"]["synthetic_style"] == preset.probe_data["style"], name
        assert parsed["croc"]["saveckp_freq"] <= parsed["croc"]["epochs"], name
    assert le.PRESETS["gpu_texture"].precision == le.GPU_PRECISION_FLAGS
    assert le.images_seen(le.PRESETS["cpu"], 2) == 2 * 4096
    for name, flags in le.SWEEP.items():  # every sweep configuration is a valid command line
        preset = le.replace(le.PRESETS["dev"], train={**le.PRESETS["dev"].train, **flags})
        assert parse_args(le.train_command(preset, "sweep", Path("/tmp/x"))[2:]).output_dir == "/tmp/x", name
