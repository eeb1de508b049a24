"""bench/bad_inputs: its classification of an outcome, its table of cases, and two real cases run through it."""

from pathlib import Path

import pytest

from bench.bad_inputs.case import CAUSES, TOOLS, Case, Run
from bench.bad_inputs.cases import cases
from bench.bad_inputs.classify import classify
from bench.bad_inputs.cli import main


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
    assert main(["--only", f"^{case_id}$", "--keep", str(tmp_path), "--jobs", "1"]) == 0


def test_the_table_is_whole_and_every_package_file_is_short():
    table = cases()
    assert len({c.id for c in table}) == len(table) >= 370  # unique ids, no group of causes lost
    assert {c.cause for c in table} == set(CAUSES) and {c.tool for c in table} == set(TOOLS)
    assert all(c.ref in {r.id for r in table} for c in table if c.ref)
    package = Path(__file__).resolve().parents[1] / "bench" / "bad_inputs"
    assert {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py") if
            len(p.read_text().splitlines()) > 300} == {}
