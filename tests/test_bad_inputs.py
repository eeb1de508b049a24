"""bench/bad_inputs.py: its classification of an outcome, and two real cases run through it."""

from pathlib import Path

import pytest

from bench import bad_inputs
from bench.bad_inputs import Case, Run, classify


def outcome(tmp_path, rc, stderr="", stdout="", expect=("error",), names=("--topk",), tool="video", check=None):
    run = Run(Case("case", "numeric_flags", tool, [], expect, names, check=check), [], rc=rc, stdout=stdout,
              stderr=stderr, case_dir=Path(tmp_path))
    classify(run)
    return run.outcome, run.detail


def test_what_counts_as_clean_and_what_as_defective(tmp_path):
    line = "video_segmentation: error: argument --topk: must be a whole number >= 1, got 0\n"
    assert outcome(tmp_path, 2, line)[0] == "error"
    assert outcome(tmp_path, 1, "warning: 2 files skipped\n" + line)[0] == "error"  # a warning may come first
    traceback = "Traceback (most recent call last):\n  File ...\nRuntimeError: selected index k out of range\n"
    assert outcome(tmp_path, 1, traceback) == ("defective", "traceback: RuntimeError: selected index k out of range")
    assert "names none of" in outcome(tmp_path, 1, "video_segmentation: error: a value is too large\n")[1]
    assert "internal wording" in outcome(tmp_path, 1, "video_segmentation: error: index out of range\n")[1]
    assert "flags the tool lacks (--synthetic_num_images)" in outcome(
        tmp_path, 1, "video_segmentation: error: --synthetic_num_images must be positive\n", names=())[1]
    assert outcome(tmp_path, 2, "usage: video_segmentation [-h]\n" + line)[0] == "defective"  # not one line
    assert outcome(tmp_path, 0, stdout="J&F 0.000\n")[0] == "defective"  # silently ran where an error was due
    assert outcome(tmp_path, 0, expect=("ok",), check=lambda run: None) == ("correct", "ok")
    assert outcome(tmp_path, 0, expect=("ok",), check=lambda run: "J&F-Mean None")[0] == "defective"
    hub = "TypeError: vit_small() got multiple values for keyword argument 'patch_size'\n"
    assert outcome(tmp_path, 1, hub, names=("patch_size",), tool="hub")[0] == "defective"


@pytest.mark.parametrize("case_id", ["device-kmeans-gpu", "valid-plot"])
def test_a_real_case_runs_and_is_clean(tmp_path, case_id):
    assert bad_inputs.main(["--only", f"^{case_id}$", "--keep", str(tmp_path), "--jobs", "1"]) == 0
