"""Does training learn? The ``ci`` preset of bench/learning_evidence (texture scenes, ViT-Pico/8, 192 CrOC steps,
about 2-3 min on 2 idle CPU cores): the linear probe of the trained teacher must beat the probe of the random init it
started from by at least 5 times the larger of the two probe-seed stds, on the dev split.

Broken on purpose in a scratch copy, it fails: a teacher that is never updated is the random init itself (gap 0), a
flipped loss sign drives the teacher away from anything the probe can use (see docs/small_scale_evidence.md)."""

import pytest

from tests.test_learning_evidence import run_bench_preset

MARGIN_IN_STDS = 5


def check_learning(out: dict) -> None:
    """Assert that the bench's result shows learning: CrOC's final linear probe beats random init by the margin."""
    gap, std = out["gaps"]["croc_minus_random"], out["gaps"]["croc_minus_random_max_std"]
    finals = out["gaps"]["linear_final"]
    assert out["eval_split"] == "dev" and out["training"]["croc"]["returncode"] == 0
    assert gap >= MARGIN_IN_STDS * max(std, 0.02), (
        f"CrOC's linear probe {finals['croc']:.2f} mIoU does not beat random init {finals['random']:.2f} by "
        f"{MARGIN_IN_STDS} x the probe std {std:.3f} (gap {gap:+.2f})")


@pytest.mark.slow
def test_croc_beats_random_init_by_five_probe_stds(tmp_path):
    _, out = run_bench_preset("ci", tmp_path, timeout=900)
    check_learning(out)


def _result(croc: float, random: float, std: float) -> dict:
    return {"eval_split": "dev", "training": {"croc": {"returncode": 0}},
            "gaps": {"croc_minus_random": croc - random, "croc_minus_random_max_std": std,
                     "linear_final": {"croc": croc, "random": random}}}


def test_the_check_fails_without_learning():
    check_learning(_result(croc=20.0, random=15.0, std=0.5))  # 5 points over 5 x 0.5: learning
    for broken in (_result(15.0, 15.0, 0.3),  # a teacher never updated: the random init itself
                   _result(12.0, 15.0, 0.3),  # a flipped loss: below random init
                   _result(16.0, 15.0, 0.5)):  # a gap inside the probe's noise
        with pytest.raises(AssertionError, match="does not beat random init"):
            check_learning(broken)
