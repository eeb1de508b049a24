"""Collapse watch (croc_utils/monitor.py): synthetic per-step values, no host sync, and two tiny end-to-end runs."""

import json
import math
import os

import pytest
import torch

from croc_utils.monitor import CollapseWatch, non_finite_cause, non_finite_message
from croc_utils.parser import parse_args
from main_croc import train_croc
from tests.test_train import SMALL

C, C_C = 256, 64
LN, LN_C = math.log(C), math.log(C_C)  # 5.545, 4.159


def step(watch, ent, kl, ent_c, kl_c):
    t = lambda v: torch.tensor(float(v))  # noqa: E731 - 0-d tensors, as CrOCLoss.diagnostics() returns them
    watch.update(ent=t(ent), kl=t(kl), ent_c=t(ent_c), kl_c=t(kl_c))


def epoch(watch, n, e, rows):
    """Feed ``rows`` (ent, kl, ent_c, kl_c) per step, cycling to ``n`` steps; return the epoch's flags."""
    for i in range(n):
        step(watch, *rows[i % len(rows)])
    return watch.end_epoch(e)


COLLAPSED = (0.995 * LN, 1e-3, 0.999 * LN_C, 2e-4)
HEALTHY = (0.6 * LN, 0.8, 0.5 * LN_C, 0.9)


def test_fires_after_warmup_on_a_collapsed_epoch_and_warns_once_per_head(capsys):
    watch = CollapseWatch(C, C_C, warmup_epochs=2)
    assert epoch(watch, 5, 0, [COLLAPSED]) == {"collapse": 0, "collapse_c": 0}  # warm-up: expected, not flagged
    assert epoch(watch, 5, 1, [COLLAPSED]) == {"collapse": 0, "collapse_c": 0}
    assert capsys.readouterr().out == ""
    assert epoch(watch, 5, 2, [COLLAPSED]) == {"collapse": 1, "collapse_c": 1}
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "CLS head" in out[0] and "cluster head" in out[1]
    assert f"ln({C}) = {LN:.2f}" in out[0] and "--teacher_temp" in out[0] and "--momentum_teacher" in out[0]
    assert "--teacher_temp_c" in out[1] and "--lr" in out[1] and "--batch_size_per_gpu" in out[1]
    assert epoch(watch, 5, 3, [COLLAPSED]) == {"collapse": 1, "collapse_c": 1}  # still logged, not re-printed
    assert capsys.readouterr().out == ""


def test_silent_on_healthy_or_partly_collapsed_epochs(capsys):
    watch = CollapseWatch(C, C_C, warmup_epochs=0)
    assert epoch(watch, 6, 0, [HEALTHY]) == {"collapse": 0, "collapse_c": 0}
    # uniform teacher but a student still far from it (the early phase of a healthy run): not collapse
    assert epoch(watch, 6, 1, [(LN, 0.3, LN_C, 0.2)]) == {"collapse": 0, "collapse_c": 0}
    # one healthy step among collapsed ones: not EVERY step, not flagged
    assert epoch(watch, 6, 2, [COLLAPSED] * 5 + [HEALTHY]) == {"collapse": 0, "collapse_c": 0}
    assert epoch(watch, 0, 3, [COLLAPSED]) == {"collapse": 0, "collapse_c": 0}  # an epoch without steps
    assert capsys.readouterr().out == ""


def test_thresholds_are_2_percent_of_ln_c_and_kl_001():
    watch = CollapseWatch(C, C_C, warmup_epochs=0)
    just_in = (0.981 * LN, 0.0099, 0.981 * LN_C, 0.0099)
    assert epoch(watch, 3, 0, [just_in]) == {"collapse": 1, "collapse_c": 1}
    assert epoch(watch, 3, 1, [(0.979 * LN, 0.0, 0.979 * LN_C, 0.0)]) == {"collapse": 0, "collapse_c": 0}
    assert epoch(watch, 3, 2, [(LN, 0.0101, LN_C, 0.0101)]) == {"collapse": 0, "collapse_c": 0}
    # the heads are judged separately
    assert epoch(watch, 3, 3, [(LN, 0.0, 0.5 * LN_C, 0.5)]) == {"collapse": 1, "collapse_c": 0}


def test_steps_without_clusters_do_not_count_for_the_cluster_head():
    watch = CollapseWatch(C, C_C, warmup_epochs=0)
    no_clusters = (0.5 * LN, 0.5, 0.0, 0.0)  # what diagnostics() gives when no cluster is valid
    assert epoch(watch, 4, 0, [COLLAPSED, (*COLLAPSED[:2], 0.0, 0.0)]) == {"collapse": 1, "collapse_c": 1}
    assert epoch(watch, 4, 1, [no_clusters]) == {"collapse": 0, "collapse_c": 0}


def test_update_never_reads_the_device(monkeypatch):
    watch = CollapseWatch(C, C_C, warmup_epochs=0)
    values = [torch.tensor(v) for v in COLLAPSED]

    def no_sync(*args, **kwargs):
        raise AssertionError("host sync in CollapseWatch.update")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    for _ in range(3):
        watch.update(ent=values[0], kl=values[1], ent_c=values[2], kl_c=values[3], extra=values[0])
    monkeypatch.undo()
    assert watch.end_epoch(0) == {"collapse": 1, "collapse_c": 1}


def test_non_finite_message_points_to_bf16_or_fp32_only_under_fp16():
    err = RuntimeError("loss is nan at epoch 3, iteration 7")
    line = non_finite_message(err, 3, "out/checkpoint.pth", fp16=True)
    assert "\n" not in line and line.startswith("error: loss is nan")
    assert "--precision bf16" in line and "--use_fp16 false" in line and "out/checkpoint.pth" in line
    assert "--precision" not in non_finite_message(err, 3, "out/checkpoint.pth", fp16=False)


def test_non_finite_cause_names_the_ranks_that_reported_it():
    single = non_finite_cause(float("nan"), [0], rank=0, world_size=1, iteration=4)
    assert single == "loss is nan or the teacher's output is not finite, at iteration 4"
    other = non_finite_cause(7.25, [1], rank=0, world_size=2, iteration=4)
    assert other == ("the loss or the teacher's output is not finite on rank 1 of 2 (loss on rank 0: 7.25), at "
                     "iteration 4")
    assert "on ranks 0, 3 of 4" in non_finite_cause(float("inf"), [0, 3], rank=0, world_size=4, iteration=0)


def run_tiny(tmp_path, name, *extra):
    out = str(tmp_path / name)
    os.makedirs(out)
    # 32 px views from 64 px scenes: 2 x 4 patch tokens, enough for the 5 seeds, and quick
    train_croc(parse_args(SMALL + ["--output_dir", out, "--saveckp_freq", "0", "--global_crops_size", "32",
                                   "--synthetic_size", "64", *extra]))
    return [json.loads(line) for line in open(os.path.join(out, "log.txt"))]


def test_normal_tiny_run_is_silent(tmp_path, capsys):
    lines = run_tiny(tmp_path, "normal", "--epochs", "2")  # <= 2 epochs: no warm-up, both epochs are judged
    assert [(line["train_collapse"], line["train_collapse_c"]) for line in lines] == [(0, 0), (0, 0)]
    assert "WARNING" not in capsys.readouterr().out


def test_run_built_to_collapse_warns_and_logs(tmp_path, capsys):
    # No sharpening on either side of the cluster term: teacher AND student cluster distributions are uniform
    # (entropy ln(out_dim_c), KL ~ 0), the uniform collapse of DINO (centring without sharpening). The CLS term
    # keeps its default temperatures, so its head must stay unflagged.
    lines = run_tiny(tmp_path, "collapse", "--epochs", "3", "--warmup_epochs", "1", "--teacher_temp_c", "1000",
                     "--warmup_teacher_temp_c", "1000", "--student_temp_c", "1000")
    assert [line["train_ent_c"] for line in lines] == pytest.approx([LN_C] * 3, rel=1e-4)
    assert all(abs(line["train_kl_c"]) < 1e-4 for line in lines)
    assert [(line["train_collapse"], line["train_collapse_c"]) for line in lines] == [(0, 0), (0, 1), (0, 1)]
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "the cluster head has collapsed in epoch 1" in warnings[0]
