"""bench/learning_evidence flags and runner: typed flags write main_croc.py's argv; the runner stops every run it
started when one fails; the children get the thread count, the parent's torch keeps its own."""

import sys
import time
from dataclasses import replace

import pytest
import torch

from bench.learning_evidence import presets, runner
from bench.learning_evidence.flags import TrainFlags, format_value, parse_flag


def test_flags_write_typed_values_and_leave_none_out():
    flags = TrainFlags(synthetic_style="texture", synthetic_size=32, synthetic_num_images=64, arch="vit_pico",
                       patch_size=8, global_crops_size=32, batch_size_per_gpu=8, epochs=2, saveckp_freq=1,
                       lr=0.002, min_lr=1e-5, blur_p=(0.0, 0.5, 1.0), norm_last_layer=False)
    argv = flags.argv()
    assert argv[argv.index("--lr") + 1] == "0.002" and argv[argv.index("--min_lr") + 1] == "1e-05"
    assert argv[argv.index("--blur_p") + 1:argv.index("--blur_p") + 4] == ["0", "0.5", "1"]
    assert argv[argv.index("--norm_last_layer") + 1] == "false"
    assert "--alpha_s" not in argv and "--hue_jitter" not in argv  # None: main_croc.py's default
    more = flags.with_flags(lr=0.01, clip_grad="3.0")  # a field and a flag without one
    assert more.lr == 0.01 and more.argv()[-2:] == ["--clip_grad", "3.0"] and flags.lr == 0.002
    assert flags.images_after(3) == 3 * 64
    assert replace(flags, synthetic_num_images=70).images_after(1) == 64  # full batches only
    assert [format_value(v) for v in (True, 0.0, 3.0, 0.25, 7, "x")] == ["true", "0", "3", "0.25", "7", "x"]


def test_parse_flag_uses_the_field_type_and_names_the_flag_on_error():
    assert parse_flag("lr", "0.004") == 0.004 and isinstance(parse_flag("epochs", "3"), int)
    assert parse_flag("norm_last_layer", "true") is True and parse_flag("blur_p", "0 0.1 1") == (0.0, 0.1, 1.0)
    assert parse_flag("teacher_centering", "sinkhorn_knopp") == "sinkhorn_knopp"
    assert parse_flag("clip_grad", "3") == "3" and parse_flag("unknown_list", "a b") == ("a", "b")
    for name, text in (("lr", "fast"), ("epochs", "2.5"), ("norm_last_layer", "maybe"), ("epochs", "1 2")):
        with pytest.raises(ValueError, match=f"--set {name}="):
            parse_flag(name, text)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_failing_run_stops_its_sibling(tmp_path):
    jobs = {"slow": (_python("import time; time.sleep(120)"), tmp_path / "slow"),
            "bad": (_python("import sys; print('boom'); sys.exit(3)"), tmp_path / "bad")}
    t0 = time.time()
    with pytest.raises(runner.RunFailed, match=r"training run bad failed \(exit 3\)[\s\S]*boom"):
        runner.train_runs(jobs, parallel=True, threads=1, cwd=tmp_path)
    assert time.time() - t0 < 60  # the sleeping sibling was stopped, not waited for
    assert (tmp_path / "slow" / "train.log").exists()


def test_runs_in_sequence_report_seconds_and_children_get_the_threads(tmp_path):
    code = "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])"
    before = torch.get_num_threads()
    info = runner.train_runs({"a": (_python(code), tmp_path / "a"), "b": (_python("pass"), tmp_path / "b")},
                             parallel=False, threads=1, cwd=tmp_path)
    assert info["a"]["returncode"] == info["b"]["returncode"] == 0 and info["a"]["seconds"] > 0
    assert info["a"]["command"].startswith("-c import os")
    assert (tmp_path / "a" / "train.log").read_text().split() == ["1", "1"]
    assert torch.get_num_threads() == before  # the parent's own torch is left alone


def test_run_folder_readers(tmp_path):
    for epoch in (9, 4):
        (tmp_path / f"checkpoint{epoch:04}.pth").write_bytes(b"")
    (tmp_path / "checkpoint.pth").write_bytes(b"")
    found = runner.checkpoints(tmp_path)
    assert [p.name for p in found] == ["checkpoint0004.pth", "checkpoint0009.pth"]
    assert [runner.epochs_done(p) for p in found] == [5, 10]
    assert runner.training_log(tmp_path) == []
    (tmp_path / "log.txt").write_text('{"epoch": 0, "train_loss": 1.5}\n')
    assert runner.training_log(tmp_path)[0]["train_loss"] == 1.5
    assert presets.PRESETS["smoke"].command("croc", tmp_path)[:2] == [sys.executable, "main_croc.py"]
