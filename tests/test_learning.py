"""Does training learn? The ``ci`` preset of bench/learning_evidence.py (texture scenes, ViT-Pico/8, 192 CrOC steps,
about 2-3 min on 2 CPU cores): the linear probe of the trained teacher must beat the probe of the random init it
started from by at least 5 times the larger of the two probe-seed stds, on the dev split.

Broken on purpose in a scratch copy, it fails: a teacher that is never updated is the random init itself (gap 0), a
flipped loss sign drives the teacher away from anything the probe can use (see the closing note of issue 19 and the
README, "Does it learn?")."""

from tests.test_learning_evidence import run_bench_preset

MARGIN_IN_STDS = 5


def test_croc_beats_random_init_by_five_probe_stds(tmp_path):
    _, out = run_bench_preset("ci", tmp_path, timeout=900)
    gap, std = out["gaps"]["croc_minus_random"], out["gaps"]["croc_minus_random_max_std"]
    finals = out["gaps"]["linear_final"]
    assert out["eval_split"] == "dev" and out["training"]["croc"]["returncode"] == 0
    assert gap >= MARGIN_IN_STDS * max(std, 0.02), (
        f"CrOC's linear probe {finals['croc']:.2f} mIoU does not beat random init {finals['random']:.2f} by "
        f"{MARGIN_IN_STDS} x the probe std {std:.3f} (gap {gap:+.2f})")
