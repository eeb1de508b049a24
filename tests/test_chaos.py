"""The chaos test of pre-emption, short: 3 faults (SIGTERM and kill -9 at random moments) on a tiny CPU run
(bench/chaos.py), each rerun checked; the end state must be bit-identical to the uninterrupted run's."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sigterm_and_kill_at_random_moments_end_bit_identical_and_lose_no_checkpoint():
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "chaos.py"), "--cycles", "3", "--epochs", "2",
                           "--images", "8", "--seed", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["faults"] == 3 and summary["failures"] == 0
    assert summary["sigterm"] >= 1 and summary["kill9"] >= 1  # seed 1 draws both kinds
    assert summary["rounds"] >= 1 and summary["rounds_bit_identical"] == summary["rounds"]
