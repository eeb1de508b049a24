"""End-to-end training on the embedded synthetic data (vit_tiny, 64 px crops, out_dim 256), CPU."""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import main_croc
from croc_utils import distributed as du
from croc_utils.atomic_io import save_checkpoint
from croc_utils.checkpoint import load_checkpoint, restart_from_checkpoint
from croc_utils.clustering import ClusteringConfig
from croc_utils.datasets import build_pretrain_dataset, build_pretrain_loader
from croc_utils.distributed import StepStatus
from croc_utils.optim import cosine_scheduler
from croc_utils.parser import parse_args
from croc_utils.step import Precision, build_loss, forward_step
from croc_utils.transforms import CrOCAugmentation
from main_croc import train_croc
from models.network import build_networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dataset_type", "synthetic", "--synthetic_num_images", "4", "--arch", "vit_tiny", "--global_crops_size",
         "64", "--out_dim", "256", "--out_dim_c", "64", "--batch_size_per_gpu", "4", "--num_workers", "0",
         "--drop_path_rate", "0", "--use_fp16", "false", "--warmup_epochs", "1", "--log_freq", "1", "--device", "cpu",
         "--freeze_last_layer", "1", "--saveckp_freq", "1"]


def run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    args = parse_args(SMALL + ["--output_dir", out, *extra])
    os.makedirs(out, exist_ok=True)
    train_croc(args)
    return out


def subprocess_env():
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def test_two_epochs_train_and_write_the_released_layout(tmp_path):
    out = run(tmp_path, "a", "--epochs", "2")
    assert sorted(os.listdir(out)) == ["args.json", "checkpoint.pth", "checkpoint0000.pth", "checkpoint0001.pth",
                                       "log.txt"]
    lines = [json.loads(line) for line in open(os.path.join(out, "log.txt"))]
    assert [line["epoch"] for line in lines] == [0, 1]
    for key in ("train_d_loss", "train_s_loss", "train_ent", "train_kl", "train_ent_c", "train_kl_c", "train_lr",
                "train_wd", "train_img_per_s", "train_mean_k"):
        assert all(key in line and line[key] == line[key] for line in lines), key  # present and not NaN
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert {"student", "teacher", "optimizer", "epoch", "args", "croc_loss"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and "fp16_scaler" not in ckpt
    assert all(k.startswith("module.") for k in ckpt["student"])
    assert "head.last_layer_c.weight_g" in ckpt["teacher"]
    assert set(ckpt["croc_loss"]) >= {"center", "center_c"}

    assert_teacher_is_the_ema_of_the_student(out)


def assert_teacher_is_the_ema_of_the_student(out):
    """Student and teacher moved away from their common start, the teacher by the EMA of a 2-epoch run of one
    iteration per epoch: teacher_2 = m * teacher_1 + (1 - m) * student_2, with m the schedule at iteration 1."""
    first, last = (load_checkpoint(os.path.join(out, name)) for name in ("checkpoint0000.pth", "checkpoint.pth"))
    key = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(first["teacher"][key], last["teacher"][key])
    assert not torch.equal(first["student"]["module." + key], last["student"]["module." + key])
    m = cosine_scheduler(last["args"].momentum_teacher, 1.0, 2, 1)[1]
    for name, t2 in last["teacher"].items():
        if t2.is_floating_point() and "weight_g" not in name:
            expected = m * first["teacher"][name] + (1 - m) * last["student"]["module." + name]
            torch.testing.assert_close(t2, expected, rtol=1e-5, atol=1e-6)


def recompute_the_last_step(out):
    """The forward step of the last epoch of a run of one iteration per epoch, recomputed from the checkpoint written
    before it: the same batch (an epoch's views depend only on (seed, epoch)), the same global seed (the clustering's
    draws), that checkpoint's networks and loss centres. Returns its StepOutput."""
    saved = load_checkpoint(os.path.join(out, "checkpoint.pth"))["args"]
    epoch, device = saved.epochs - 1, torch.device("cpu")
    student, teacher = build_networks(saved, device)
    croc_loss = build_loss(saved)
    restart_from_checkpoint(os.path.join(out, f"checkpoint{epoch - 1:04}.pth"), student=student, teacher=teacher,
                            croc_loss=croc_loss)
    dataset = build_pretrain_dataset(saved, CrOCAugmentation.from_args(saved))
    loader, sampler = build_pretrain_loader(dataset, saved.batch_size_per_gpu, 0, saved.seed, distributed=False)
    assert len(loader) == 1
    sampler.set_epoch(epoch)
    du.fix_random_seeds(saved.seed + 1000 * epoch + saved.rank)  # as main_croc.train before the epoch
    batch = next(iter(loader))
    return forward_step(batch, student, teacher, croc_loss, epoch, cluster_cfg=ClusteringConfig.from_args(saved),
                        alpha_s=saved.alpha_s, precision=Precision.from_args(saved, device), device=device)


def assert_the_logged_loss_is_recomputed(out):
    line = [json.loads(line) for line in open(os.path.join(out, "log.txt"))][-1]
    step = recompute_the_last_step(out)
    for key, value in (("loss", step.loss), ("d_loss", step.dino_term), ("s_loss", step.cluster_term),
                       ("mean_k", step.clusters.n_clusters.float().mean())):
        assert math.isclose(line[f"train_{key}"], float(value.detach()), rel_tol=1e-5), key


def test_resume_equals_uninterrupted_run(tmp_path):
    full = run(tmp_path, "full", "--epochs", "4")
    # What a run killed after its second epoch leaves behind: checkpoint.pth at epoch 2.
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    shutil.copy(os.path.join(full, "checkpoint0001.pth"), os.path.join(resumed, "checkpoint.pth"))
    run(tmp_path, "resumed", "--epochs", "4")
    a = load_checkpoint(os.path.join(full, "checkpoint.pth"))
    b = load_checkpoint(os.path.join(resumed, "checkpoint.pth"))
    assert a["epoch"] == b["epoch"] == 4
    for part in ("student", "teacher"):
        for name in a[part]:
            torch.testing.assert_close(a[part][name], b[part][name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["croc_loss"]["center_c"], b["croc_loss"]["center_c"], rtol=1e-5, atol=1e-6)


def test_non_finite_loss_exits_nonzero_and_keeps_checkpoint(tmp_path):
    out = run(tmp_path, "nan", "--epochs", "1")
    before = open(os.path.join(out, "checkpoint.pth"), "rb").read()
    proc = subprocess.run([sys.executable, "main_croc.py", *SMALL, "--output_dir", out, "--epochs", "3",
                           "--lr", "1e38", "--warmup_epochs", "0", "--synthetic_num_images", "8",
                           "--batch_size_per_gpu", "2"],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    message = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(message) == 1 and ("loss is nan" in message[0] or "not finite" in message[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert open(os.path.join(out, "checkpoint.pth"), "rb").read() == before
    assert not os.path.exists(os.path.join(out, "croc.lock"))  # released on the error exit


def test_non_finite_on_another_rank_is_named_in_the_stop_line(tmp_path, monkeypatch, capsys):
    """Before: rank 0's line printed its own (finite) loss and did not say that rank 1 reported the NaN."""
    monkeypatch.setattr(main_croc.du, "step_status", lambda healthy, stop: StepStatus([1], False))
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, "nan_elsewhere", "--epochs", "1", "--saveckp_freq", "0")
    assert exit_info.value.code == 1
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the loss or the teacher's output is not finite on rank 1 of 1 (loss on rank 0: ")


def test_missing_dataset_is_one_line_pointing_at_the_demo(tmp_path):
    proc = subprocess.run([sys.executable, "main_croc.py", "--output_dir", str(tmp_path)], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "\n" not in err and "/path/to/coco" in err and "README" in err, err


def test_sigterm_saves_and_exits_then_resumes(tmp_path):
    out = str(tmp_path / "term")
    cmd = [sys.executable, "main_croc.py", *SMALL, "--output_dir", out, "--epochs", "3", "--synthetic_num_images",
           "64", "--batch_size_per_gpu", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:
        if "Epoch [0/3] [3/32]" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, rest[-2000:]
    assert "SIGTERM received" in rest
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert ckpt["epoch"] == 0 and 3 <= ckpt["iteration"] < 32
    assert not os.path.exists(os.path.join(out, "croc.lock"))  # released when SIGTERM ended the run
    proc = subprocess.run(cmd + ["--epochs", "1"], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"iteration {ckpt['iteration']}" in proc.stdout
    assert load_checkpoint(os.path.join(out, "checkpoint.pth"))["epoch"] == 1


def test_two_process_ddp_on_gloo(tmp_path):
    out, dump = str(tmp_path / "ddp"), str(tmp_path / "dump")
    os.makedirs(dump)
    env = subprocess_env()
    env["CROC_TEST_DUMP"] = dump
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "tests/ddp_worker.py", *SMALL, "--output_dir", out, "--epochs", "1",
                           "--synthetic_num_images", "8", "--batch_size_per_gpu", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    t0 = torch.load(os.path.join(dump, "teacher_rank0.pt"), weights_only=True)
    t1 = torch.load(os.path.join(dump, "teacher_rank1.pt"), weights_only=True)
    for name in t0:
        torch.testing.assert_close(t0[name], t1[name], rtol=0, atol=0)
    # only rank 0 wrote: one log line, one set of files
    assert sorted(os.listdir(out)) == ["args.json", "checkpoint.pth", "checkpoint0000.pth", "log.txt"]
    assert len(open(os.path.join(out, "log.txt")).readlines()) == 1
    assert json.load(open(os.path.join(out, "args.json")))["world_size"] == 2
    assert time.time() - start < 300


def test_bn_in_head_under_ddp_on_cpu_trains_with_a_warning(tmp_path):
    """SyncBatchNorm runs on GPUs only: on a CPU process group the head keeps per-process BatchNorm and says so
    (it used to end in a traceback)."""
    out = str(tmp_path / "ddp_bn")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "main_croc.py", *SMALL, "--output_dir", out, "--epochs", "1", "--use_bn_in_head", "true",
                           "--synthetic_num_images", "8", "--batch_size_per_gpu", "2"],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "SyncBatchNorm needs GPUs" in proc.stderr
    assert load_checkpoint(os.path.join(out, "checkpoint.pth"))["epoch"] == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_sharing_one_output_dir_train_and_resume(tmp_path):
    """Two ``torchrun --nnodes 2`` on this machine (one process each, gloo) and one --output_dir, as on a cluster
    whose nodes share a file system: only global rank 0 locks the folder and writes; both ranks resume from the
    checkpoint it chose (here one written by a one-process run) and train the next epoch."""
    out = run(tmp_path, "shared", "--epochs", "1", "--saveckp_freq", "0", "--global_crops_size", "32",
              "--synthetic_size", "64", "--batch_size_per_gpu", "2")
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
                               str(node), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port",
                               str(port), "main_croc.py", *SMALL, "--output_dir", out, "--epochs", "2",
                               "--saveckp_freq", "0", "--global_crops_size", "32", "--synthetic_size", "64",
                               "--batch_size_per_gpu", "2"],
                              cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for node in (0, 1)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert f"Resumed from {out}/checkpoint.pth at epoch 1, iteration 0." in logs[0]
    assert "Epoch [1/2] [1/1]" in logs[0]  # 4 images, 2 per process: one step of both ranks
    assert json.load(open(os.path.join(out, "args.json")))["world_size"] == 2
    assert [json.loads(line)["epoch"] for line in open(os.path.join(out, "log.txt"))] == [0, 1]
    assert load_checkpoint(os.path.join(out, "checkpoint.pth"))["epoch"] == 2
    assert sorted(os.listdir(out)) == ["args.json", "checkpoint.pth", "log.txt"]  # no lock left


def test_local_crops_and_which_features_last_train(tmp_path):
    out = run(tmp_path, "multicrop", "--epochs", "2", "--local_crops_number", "2", "--local_crops_size", "32",
              "--which_features", "last")
    assert_the_logged_loss_is_recomputed(out)  # the student's loss covers the local crops
    assert_teacher_is_the_ema_of_the_student(out)


def test_bf16_trains_on_cpu_and_a_run_can_switch_precision_on_resume(tmp_path):
    out = run(tmp_path, "mixed", "--epochs", "1", "--precision", "bf16")
    line = json.loads(open(os.path.join(out, "log.txt")).readline())
    assert line["train_loss"] == line["train_loss"]  # finite, not NaN
    assert "fp16_scaler" not in load_checkpoint(os.path.join(out, "checkpoint.pth"))
    run(tmp_path, "mixed", "--epochs", "2", "--precision", "fp16")  # resumes with a fresh grad scaler
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert ckpt["epoch"] == 2 and "fp16_scaler" in ckpt


def test_augment_on_device_trains_on_cpu(tmp_path):
    out = run(tmp_path, "device_aug", "--epochs", "2", "--augment_on", "device", "--local_crops_number", "1",
              "--local_crops_size", "32")
    assert_the_logged_loss_is_recomputed(out)  # the colour operations drawn by the loader, applied in the step
    assert_teacher_is_the_ema_of_the_student(out)


def test_resume_with_another_optimizer_starts_it_fresh_and_trains(tmp_path, capsys):
    out = run(tmp_path, "opt", "--epochs", "1", "--global_crops_size", "32")  # adamw
    capsys.readouterr()
    run(tmp_path, "opt", "--epochs", "2", "--global_crops_size", "32", "--optimizer", "sgd")
    assert "was trained with --optimizer adamw; --optimizer sgd starts from a fresh optimizer state" in \
        capsys.readouterr().out
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert ckpt["epoch"] == 2 and ckpt["args"].optimizer == "sgd" and "momentum" in ckpt["optimizer"]["param_groups"][0]
    lines = [json.loads(line) for line in open(os.path.join(out, "log.txt"))]
    assert [line["epoch"] for line in lines] == [0, 1] and lines[1]["train_loss"] == lines[1]["train_loss"]


def sigterm_after(monkeypatch, steps: int) -> None:
    """SIGTERM to this process right after training step number ``steps`` (counted over epochs), as a scheduler
    pre-empting the job would send it: the run saves where it is and returns."""
    done = []

    def update_teacher(*args, **kwargs):
        main_croc_update_teacher(*args, **kwargs)
        done.append(1)
        if len(done) == steps:
            os.kill(os.getpid(), signal.SIGTERM)

    main_croc_update_teacher = main_croc.update_teacher
    monkeypatch.setattr(main_croc, "update_teacher", update_teacher)


def test_mid_epoch_resume_with_another_batch_size_goes_by_images_seen(tmp_path, monkeypatch, capsys):
    # 8 images, batch 2: 4 iterations per epoch; stopped at (epoch 0, iteration 3), after 6 images of the epoch
    eight = ["--synthetic_num_images", "8", "--epochs", "2", "--global_crops_size", "32", "--saveckp_freq", "0"]
    with monkeypatch.context() as patch:
        sigterm_after(patch, steps=2)  # the step in flight when the signal comes (iteration 2) is completed
        out = run(tmp_path, "a", *eight, "--batch_size_per_gpu", "2")
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert (ckpt["epoch"], ckpt["iteration"], ckpt["images_seen"]) == (0, 3, 6)
    other = str(tmp_path / "b")
    shutil.copytree(out, other)
    del ckpt["images_seen"]  # the layout before images_seen: the batch size comes from the saved args
    save_checkpoint(ckpt, os.path.join(other, "checkpoint.pth"))
    capsys.readouterr()

    run(tmp_path, "a", *eight, "--batch_size_per_gpu", "4")  # 2 iterations per epoch: epoch 0 resumes at 1
    assert "resumes at iteration 1 of 2 (the checkpoint counted 3)" in capsys.readouterr().out
    lines = [json.loads(line) for line in open(os.path.join(out, "log.txt"))]
    assert [line["epoch"] for line in lines] == [0, 1]
    assert all(line["train_img_per_s"] > 0 and line["train_loss"] == line["train_loss"] for line in lines)

    run(tmp_path, "b", *eight, "--batch_size_per_gpu", "3")  # 2 iterations of 3 = 6 images: epoch 0 is over
    assert "a whole epoch at 3 images per iteration (2 iterations): going on with epoch 1" in capsys.readouterr().out
    lines = [json.loads(line) for line in open(os.path.join(other, "log.txt"))]
    assert [line["epoch"] for line in lines] == [1] and lines[0]["train_img_per_s"] > 0
    assert load_checkpoint(os.path.join(other, "checkpoint.pth"))["epoch"] == 2


def test_an_epoch_that_runs_no_step_reports_no_stats(tmp_path, capsys):
    args = parse_args(SMALL + ["--output_dir", str(tmp_path)])
    class Exhausted(list):  # what the loader is when its sampler skipped the whole epoch: 2 batches long, none left
        def __len__(self):
            return 2

    stats, stopped_at = main_croc.train_one_epoch(None, None, None, Exhausted(), None, None, 0, None, args,
                                                  device=torch.device("cpu"), stop={}, start_iter=2)
    assert (stats, stopped_at) == ({}, None)
    assert "Notice: epoch 0 ran no iteration (it starts at 2 of 2)." in capsys.readouterr().out


def test_an_internal_error_while_setting_up_the_data_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the data flags' own errors become the one-line "no dataset" message; a bug is not disguised as one."""
    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(main_croc, "build_pretrain_loader", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        run(tmp_path, "bug", "--epochs", "1")
    monkeypatch.undo()
    with pytest.raises(SystemExit, match=f"--data_path: {tmp_path / 'nope'} does not exist .*--dataset_type synthetic"):
        run(tmp_path, "flag", "--epochs", "1", "--dataset_type", "imagefolder", "--data_path", str(tmp_path / "nope"))
