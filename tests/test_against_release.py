"""bench/against_release: the harness without the released code (this repository standing in for it gives zero
difference; planted differences are reported and make the verdict 1), the command's one-line error, and the whole
bench against a clone of the released code when CROC_RELEASE_DIR points at one (skipped otherwise)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_croc
from bench.against_release.batches import patch_means, synthetic_batches
from bench.against_release.compare import (
    TOLERANCES,
    max_rel_diff,
    rel_diff,
    split_key_slice,
    training_failures,
    verdict,
)
from bench.against_release.release import BenchError, load_release
from bench.against_release.sides import OursSide, write_start_checkpoint
from bench.against_release.steps import STEP_FLAGS, STEPS_PER_EPOCH, compare_training, format_table

ROOT = Path(__file__).resolve().parents[1]

# A small run: the same schedule as the bench (3 epochs of 2 steps, warm-up, frozen last layer, clipping), tiny sizes.
FLAGS = dict(STEP_FLAGS, arch="vit_pico", out_dim=64, out_dim_c=32, global_crops_size=32, n_tokens=4,
             n_centroids_max=3, head_hidden_dim=64, head_bottleneck_dim=16)
EPOCHS, STEPS = FLAGS["epochs"], STEPS_PER_EPOCH


def _ours_twice(tmp_path, **cand_kwargs):
    """Two copies of our side from the same released-layout checkpoint, and the batches."""
    torch.manual_seed(0)
    first = OursSide(FLAGS, str(tmp_path / "none.pth"), STEPS)
    checkpoint = str(tmp_path / "start.pth")
    write_start_checkpoint(first.state()[1], checkpoint, seed=0)
    ref = OursSide(FLAGS, checkpoint, STEPS)
    cand = OursSide(FLAGS, checkpoint, STEPS, **cand_kwargs)
    batches = synthetic_batches(EPOCHS * STEPS, FLAGS["batch_size_per_gpu"], 32, FLAGS["patch_size"], seed=0)
    return ref, cand, batches


def test_same_code_on_both_sides_gives_zero_difference(tmp_path, capsys):
    ref, cand, batches = _ours_twice(tmp_path)
    rows = compare_training(ref, cand, batches, seed=0, epochs=EPOCHS)
    assert [r.label for r in rows] == ["load", "0.0", "0.1", "1.0", "1.1", "2.0", "2.1"]
    for row in rows:
        assert all(d == 0 for d in row.diffs.values()), (row.label, row.diffs)
        assert row.failures() == []
    steps = rows[1:]
    assert steps[0].facts["lr"] == 0 and steps[-1].facts["lr"] > 0  # the warm-up starts from 0
    assert all(int(r.facts["clipped"].split("/")[0]) > 0 for r in steps)  # clipping clips
    assert all(r.facts["loss"] > 0 for r in steps)
    assert verdict(training_failures(rows)) == 0
    assert "OK" in capsys.readouterr().out
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 2 and "| 2.1 |" in table


def test_a_changed_centre_momentum_is_reported(tmp_path, capsys):
    ref, cand, batches = _ours_twice(tmp_path)
    cand.croc_loss.center_momentum = 0.91  # planted: the released 0.9 changed
    rows = compare_training(ref, cand, batches[:STEPS], seed=0, epochs=1)
    failures = training_failures(rows)
    assert any(f.startswith("step 0.0: center ") and "later steps" in f for f in failures), failures
    assert verdict(failures) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_changed_ema_momentum_moves_the_teacher_only(tmp_path):
    ref, cand, batches = _ours_twice(tmp_path)
    cand.momentum.values = cand.momentum.values - 1e-3  # planted: the teacher's EMA momentum off by 1e-3
    rows = compare_training(ref, cand, batches[:STEPS], seed=0, epochs=1)
    first = rows[1]
    assert first.diffs["teacher"] > TOLERANCES["teacher"] and first.diffs["student"] == 0
    assert first.diffs["loss"] == 0 and first.diffs["schedule"] > 0
    assert any("teacher" in f for f in first.failures())


def test_a_different_gradient_is_reported_with_its_tensor(tmp_path):
    def train_one_epoch(student, *args, **kwargs):  # planted: the gradient of one tensor dropped before the step
        def scale_pos_embed_grad(optimizer, hook_args, hook_kwargs):
            student.backbone.pos_embed.grad.zero_()

        handle = args[3].register_step_pre_hook(scale_pos_embed_grad)  # args[3]: the optimizer
        try:
            return main_croc.train_one_epoch(student, *args, **kwargs)
        finally:
            handle.remove()

    ref, cand, batches = _ours_twice(tmp_path, train_one_epoch=train_one_epoch)
    # the recorder's hook was registered first, so it sees the gradient before the planted change: the weights move
    rows = compare_training(ref, cand, batches[:STEPS], seed=0, epochs=1)
    assert rows[2].where["student"] == "backbone.pos_embed" and rows[2].diffs["student"] > TOLERANCES["student"]


def test_key_third_of_qkv_bias_is_split_off():
    bias = torch.arange(12.0)
    rest, keys = split_key_slice({"backbone.blocks.0.attn.qkv.bias": bias, "x": torch.ones(2)})
    assert torch.equal(keys["backbone.blocks.0.attn.qkv.bias"], torch.tensor([4.0, 5.0, 6.0, 7.0]))
    assert torch.equal(rest["backbone.blocks.0.attn.qkv.bias"], torch.tensor([0.0, 1, 2, 3, 8, 9, 10, 11]))
    assert torch.equal(rest["x"], torch.ones(2))


def test_relative_difference():
    a = torch.tensor([3.0, 4.0])
    assert rel_diff(a, a.clone()) == 0
    assert rel_diff(a, a + torch.tensor([0.0, 5e-3])) == pytest.approx(1e-3, rel=1e-4)
    assert rel_diff(torch.zeros(2), torch.tensor([0.0, 1.0])) == float("inf")
    diff, where = max_rel_diff({"a": a, "g": None}, {"a": a, "g": torch.ones(1)})
    assert diff == float("inf") and where == "g"  # a gradient present on one side only


def test_patch_means_follow_the_released_patch_order():
    size, patch = 32, 16
    xs = torch.arange(size).float()
    grid = torch.stack([xs[None, :].expand(size, size), xs[:, None].expand(size, size)])[None]  # (1, 2, S, S)
    means = patch_means(grid, patch)  # (1, 4, 2): patches row by row, (x, y)
    assert torch.equal(means[0], torch.tensor([[7.5, 7.5], [23.5, 7.5], [7.5, 23.5], [23.5, 23.5]]))


def test_not_a_release_folder_is_one_line(tmp_path):
    with pytest.raises(BenchError, match="not a clone of the released CrOC code"):
        load_release(str(tmp_path))


def test_no_file_of_the_bench_is_over_300_lines():
    files = [ROOT / "bench" / "against_release.py", *(ROOT / "bench" / "against_release").glob("*.py")]
    assert len(files) >= 10
    assert {p.name: n for p in files if (n := len(p.read_text().splitlines())) > 300} == {}


def test_the_command_reports_a_wrong_release_dir_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}  # the entry file finds its own checkout
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "against_release.py"), "--release_dir", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --release_dir {tmp_path}: not a clone of the released "
                                                   "CrOC code (missing main_croc.py"), proc.stderr


@pytest.mark.skipif(not os.environ.get("CROC_RELEASE_DIR"), reason="set CROC_RELEASE_DIR to a clone of the "
                    "released CrOC code (github.com/stegmuel/CrOC) to run the whole comparison")
def test_whole_bench_against_the_released_code():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "bench/against_release.py", "--release_dir", os.environ["CROC_RELEASE_DIR"],
                           "--speed_repeats", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "| 2.1 |" in proc.stdout and "hard assignments equal" in proc.stdout and "speed-up" in proc.stdout
