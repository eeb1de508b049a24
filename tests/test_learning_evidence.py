"""bench/learning_evidence, end to end (smoke preset: both training runs through main_croc.py's command line,
probes of random init and of every checkpoint, JSON, markdown table and figure; a few minutes on 2 CPU cores), and
the presets: every one is a valid main_croc.py command line whose CrOC and DINO-only runs differ in --alpha_s only."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench.learning_evidence import presets
from croc_utils.parser import parse_args

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


@pytest.mark.slow
def test_smoke_preset_writes_three_curves(tmp_path):
    proc, out = run_bench_preset("smoke", tmp_path, timeout=900)  # minutes on 2 busy cores
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
            assert 0 <= p["retrieval"]["miou_mean"] <= p["retrieval"]["miou_hungarian"] <= 100
            assert p["retrieval"]["memory_patches"] == 24 * 16  # the whole pool: 24 scenes of 4 x 4 patches
    # the two runs differ only in --alpha_s
    cmds = {run: out["training"][run]["command"].split() for run in ("croc", "dino")}
    diff = [(a, b) for a, b in zip(cmds["croc"], cmds["dino"]) if a != b]
    assert sorted(diff) == sorted([("1", "0"), (str(tmp_path / "croc"), str(tmp_path / "dino"))])
    assert all(math.isfinite(x) for x in _finite_numbers(out["curves"]))
    assert {"croc_minus_random", "croc_minus_dino"} <= set(out["gaps"])
    assert [panel["title"] for panel in out["figure"]] == ["linear probe", "K-means K=#classes", "K-means K=100",
                                                           "NN retrieval (k=30)"]
    table = (tmp_path / "learning_evidence.md").read_text()
    assert table.count("| CrOC (alpha_s 1) |") == 2 and table.count("| random init |") == 1
    assert "| CrOC (alpha_s 1) |" in proc.stdout  # the table is also printed
    assert (tmp_path / "learning_evidence.png").stat().st_size > 10_000
    assert not (ROOT / "figures" / "learning_evidence_smoke.png").exists()  # nothing written into the repository


def test_every_preset_parses_and_runs_differ_only_in_alpha_s():
    for name, preset in presets.PRESETS.items():
        commands = {run: preset.command(run, Path("/tmp/x") / run) for run in ("croc", "dino")}
        assert commands["croc"][1] == "main_croc.py"
        parsed = {run: vars(parse_args(cmd[2:])) for run, cmd in commands.items()}
        assert parsed["croc"]["alpha_s"] == 1 and parsed["dino"]["alpha_s"] == 0, name
        differing = {k for k in parsed["croc"] if parsed["croc"][k] != parsed["dino"][k]}
        assert differing == {"alpha_s", "output_dir"}, name
        assert parsed["croc"]["synthetic_style"] == preset.probe_data.style, name
        assert parsed["croc"]["saveckp_freq"] <= parsed["croc"]["epochs"], name
        for flag, value in (("epochs", preset.train.epochs), ("lr", preset.train.lr),
                            ("batch_size_per_gpu", preset.train.batch_size_per_gpu)):
            assert parsed["croc"][flag] == value, (name, flag)  # the typed field is what main_croc.py reads
    assert presets.PRESETS["gpu_texture"].train.precision == "bf16"
    assert parse_args(presets.PRESETS["smoke"].command("croc", Path("/tmp/x"))[2:]).use_fp16 is False
    for name, flags in presets.SWEEP.items():  # every sweep configuration is a valid command line
        preset = replace(presets.PRESETS["dev"], train=presets.PRESETS["dev"].train.with_flags(**flags))
        parsed = parse_args(preset.command("sweep", Path("/tmp/x"))[2:])
        assert parsed.output_dir == "/tmp/x", name
        for flag, value in flags.items():
            assert getattr(parsed, flag) == (list(value) if isinstance(value, tuple) else value), (name, flag)


def test_ceiling_budget_follows_the_runs():
    cpu = presets.PRESETS["cpu"]
    assert cpu.train.images_after(2) == 2 * 4096
    assert (cpu.supervised.steps, cpu.supervised.batch_size, cpu.supervised.crop_size) == (10 * 4096 // 32, 32, 48)
    bigger = replace(cpu, train=cpu.train.with_flags(batch_size_per_gpu=64, epochs=3))
    assert (bigger.supervised.steps, bigger.supervised.batch_size) == (3 * 4096 // 64, 64)
    assert presets.PRESETS["dev"].supervised is None
    smoke = presets.PRESETS["smoke"]
    assert smoke.train.images_after(smoke.train.epochs) == smoke.supervised.steps * smoke.supervised.batch_size == 64


def test_output_outside_the_repository_and_publish_only_the_reported_presets(monkeypatch, tmp_path):
    from bench.learning_evidence import cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.default_output("smoke") == tmp_path / "croc" / "learning_evidence" / "smoke"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ROOT not in cli.default_output("cpu").parents
    for argv in (["--preset", "smoke", "--publish"], ["--preset", "cpu", "--publish", "--eval_split", "dev"],
                 ["--preset", "cpu", "--publish", "--set", "lr=0.004"]):
        with pytest.raises(SystemExit, match="--publish writes the val-split results"):
            cli.main(argv)
    with pytest.raises(SystemExit, match="--set lr='fast': not a valid float"):
        cli.main(["--preset", "ci", "--set", "lr=fast"])
