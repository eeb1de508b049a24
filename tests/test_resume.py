"""Exact resume from any step: a run stopped by SIGTERM in the middle of an epoch and rerun ends bit-identical to an
uninterrupted run (weights, loss centres, optimizer state), on CPU in float32, with drop path and local crops on,
for 0 and 2 data-loading workers; the skipped batches are never read."""

import os
import random
import signal

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import main_croc
from croc_utils.atomic_io import save_checkpoint
from croc_utils.checkpoint import load_checkpoint
from croc_utils.datasets import build_pretrain_loader
from croc_utils.parser import parse_args
from croc_utils.rng import CHECKPOINT_KEY, restore_rng_states, rng_state, set_rng_state

# vit_pico/8 on 32 px global views and two 16 px local crops, drop path 0.1: 4 steps per epoch, 2 epochs
TINY = ["--dataset_type", "synthetic", "--synthetic_num_images", "8", "--synthetic_size", "48", "--arch", "vit_pico",
        "--patch_size", "8", "--global_crops_size", "32", "--local_crops_number", "2", "--local_crops_size", "16",
        "--out_dim", "64", "--out_dim_c", "32", "--batch_size_per_gpu", "2", "--drop_path_rate", "0.1",
        "--use_fp16", "false", "--warmup_epochs", "1", "--log_freq", "100", "--device", "cpu", "--epochs", "2",
        "--saveckp_freq", "0"]
STEPS_PER_EPOCH = 4


def train(out: str, workers: int, stop_after: int | None = None) -> dict:
    """Train (or resume) the tiny run in ``out``; with ``stop_after``, SIGTERM this process right after that many
    steps, as a scheduler pre-empting the job would. Returns the checkpoint.pth it leaves."""
    steps, update_teacher = [], main_croc.update_teacher

    def counting_update_teacher(*args, **kwargs):
        update_teacher(*args, **kwargs)
        steps.append(1)
        if len(steps) == stop_after:
            os.kill(os.getpid(), signal.SIGTERM)

    main_croc.update_teacher = counting_update_teacher
    try:
        main_croc.train_croc(parse_args(TINY + ["--num_workers", str(workers), "--output_dir", out]))
    finally:
        main_croc.update_teacher = update_teacher
    return load_checkpoint(os.path.join(out, "checkpoint.pth"))


def assert_identical(a: dict, b: dict) -> None:
    """Bit for bit: student, teacher, loss centres, the optimizer's state and settings, the position."""
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"])
    for part in ("student", "teacher", "croc_loss"):
        assert a[part].keys() == b[part].keys()
        unequal = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not unequal, f"{part}: {len(unequal)} tensors differ, e.g. {unequal[:3]}"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i]), f"optimizer state of parameter {i} differs"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    return train(str(tmp_path_factory.mktemp("full") / "run"), workers=0)


def test_two_workers_equal_zero_workers_bit_for_bit(tmp_path, uninterrupted):
    assert_identical(train(str(tmp_path / "w2"), workers=2), uninterrupted)


@pytest.mark.parametrize("workers, stop_after", [(0, 5), (2, 5), (0, 3)])
def test_sigterm_at_any_step_then_resume_is_bit_identical(tmp_path, uninterrupted, workers, stop_after):
    # stop_after 5: in the middle of epoch 1 (saved at iteration 2, having completed the step in flight); 3: at the
    # last step of epoch 0 (the epoch completes and saves as usual)
    out = str(tmp_path / "run")
    stopped = train(out, workers, stop_after=stop_after)
    position = divmod(stop_after + 1, STEPS_PER_EPOCH)
    assert (stopped["epoch"], stopped["iteration"]) == position
    assert len(stopped[CHECKPOINT_KEY]) == 1
    assert_identical(train(out, workers), uninterrupted)


def test_checkpoint_without_rng_states_resumes_with_a_notice(tmp_path, capsys):
    out = str(tmp_path / "run")
    ckpt = train(out, 0, stop_after=2)
    del ckpt[CHECKPOINT_KEY]  # what an older version wrote
    save_checkpoint(ckpt, os.path.join(out, "checkpoint.pth"))
    capsys.readouterr()
    assert train(out, 0)["epoch"] == 2
    assert "holds no random-number states (written by an older version)" in capsys.readouterr().out


# ===== the sampler's skip =====

class CountingDataset(Dataset):
    """Items are (index, augmentation seed); every read is counted in shared memory (workers included)."""

    def __init__(self, n: int):
        self.reads = torch.zeros(n, dtype=torch.int32).share_memory_()

    def __len__(self) -> int:
        return len(self.reads)

    def __getitem__(self, item):
        index, seed = item
        self.reads[index] += 1
        return torch.tensor([index, seed % 2**31])


@pytest.mark.parametrize("workers", [0, 2])
def test_sampler_skips_without_reading_and_keeps_the_rest(workers):
    dataset = CountingDataset(40)
    loader, sampler = build_pretrain_loader(dataset, 4, workers, seed=3, distributed=False)
    sampler.set_epoch(2)
    whole = [batch for batch in loader]
    dataset.reads.zero_()
    sampler.set_epoch(2, start=7 * 4)  # a resume at iteration 7 of 10
    rest = [batch for batch in loader]
    assert len(loader) == 10 and len(rest) == 3
    assert all(torch.equal(a, b) for a, b in zip(whole[7:], rest))  # same samples, same augmentation seeds
    assert int(dataset.reads.sum()) == 12  # only the 3 remaining batches were read
    assert [batch for batch in loader][0].shape == (4, 2)  # the next epoch starts at its beginning again
    assert int(dataset.reads.sum()) == 12 + 40


def test_sampler_start_outside_the_epoch_is_refused():
    _, sampler = build_pretrain_loader(CountingDataset(8), 2, 0, seed=0, distributed=False)
    with pytest.raises(ValueError, match="outside the epoch"):
        sampler.set_epoch(0, start=9)


# ===== the generator states =====

def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_state_survives_a_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    draws()
    path = str(tmp_path / "c.pth")
    save_checkpoint({CHECKPOINT_KEY: [rng_state()]}, path)
    expected = draws()
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    assert restore_rng_states(load_checkpoint(path), path)  # loads with weights_only=True
    assert draws() == expected


def test_rng_states_of_another_world_size_are_not_used(capsys):
    state = rng_state()
    expected = draws()
    set_rng_state(state)
    assert not restore_rng_states({CHECKPOINT_KEY: [state, state]}, "c.pth")
    assert "states of 2 processes, this run has 1" in capsys.readouterr().out
    assert draws() == expected  # untouched


# ===== the optimizer's execution options =====

def test_a_checkpoint_of_another_device_resumes_with_this_devices_adamw_kernel(tmp_path):
    """A CPU checkpoint (foreach AdamW) resumed where build_optimizer picks the fused kernel (CUDA) must run fused,
    with its step counters where the fused kernel wants them. CUDA is not available here: the fused CPU kernel
    stands in for it; the device move itself is not tested."""
    from croc_utils.checkpoint import load_optimizer_state

    model = torch.nn.Linear(4, 3)
    cpu = torch.optim.AdamW(model.parameters(), foreach=True)  # what build_optimizer gives on CPU
    model(torch.randn(2, 4)).sum().backward()
    cpu.step()
    ckpt = {"optimizer": cpu.state_dict()}
    fused = torch.optim.AdamW(model.parameters(), fused=True)  # what build_optimizer gives on CUDA
    load_optimizer_state(fused, ckpt, "checkpoint.pth")
    group = fused.param_groups[0]
    assert (group["fused"], group["foreach"]) == (True, None)
    assert all(s["step"].dtype == torch.float32 for s in fused.state.values())  # as the fused kernel keeps it
    assert torch.equal(fused.state[model.weight]["exp_avg"], cpu.state[model.weight]["exp_avg"])
    fused.step()  # runs
    load_optimizer_state(cpu, {"optimizer": fused.state_dict()}, "checkpoint.pth")  # and back
    assert (cpu.param_groups[0]["fused"], cpu.param_groups[0]["foreach"]) == (None, True)
