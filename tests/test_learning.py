"""Does training learn? The ``ci`` preset of bench/learning_evidence.py (texture scenes, ViT-Pico/8, 192 CrOC steps,
about 2-3 min on 2 CPU cores): the linear probe of the trained teacher must beat the probe of the random init it
started from by at least 5 times the larger of the two probe-seed stds, on the dev split.

Broken on purpose in a scratch copy, it fails: a teacher that is never updated is the random init itself (gap 0), a
flipped loss sign drives the teacher away from anything the probe can use (see the closing note of issue 19 and the
README, "Does it learn?")."""

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
MARGIN_IN_STDS = 5


def test_croc_beats_random_init_by_five_probe_stds(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "bench/learning_evidence.py", "--preset", "ci", "--output_dir",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads((tmp_path / "learning_evidence.json").read_text())
    gap, std = out["gaps"]["croc_minus_random"], out["gaps"]["croc_minus_random_max_std"]
    finals = out["gaps"]["linear_final"]
    assert out["eval_split"] == "dev" and out["training"]["croc"]["returncode"] == 0
    assert gap >= MARGIN_IN_STDS * max(std, 0.02), (
        f"CrOC's linear probe {finals['croc']:.2f} mIoU does not beat random init {finals['random']:.2f} by "
        f"{MARGIN_IN_STDS} x the probe std {std:.3f} (gap {gap:+.2f})")
