"""Launcher detection (plain process, torch.distributed.launch, torchrun, SLURM) and the step's status sync."""

import argparse

import pytest
import torch

from croc_utils import distributed as du

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


@pytest.fixture
def env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))

    return set_env


def test_plain_process(env):
    assert du.launch_env() is None and du.local_rank() == 0


def test_torchrun_sets_rank_world_size_and_local_rank(env):
    env(RANK=5, WORLD_SIZE=8, LOCAL_RANK=1)
    assert du.launch_env(local_rank_flag=0) == (5, 8, 1) and du.local_rank() == 1


def test_old_launcher_passes_local_rank_as_a_flag(env):
    env(RANK=3, WORLD_SIZE=4)  # torch.distributed.launch without --use_env: no LOCAL_RANK variable
    assert du.launch_env(local_rank_flag=3) == (3, 4, 3)


def test_slurm_with_several_tasks(env):
    env(SLURM_PROCID=9, SLURM_NTASKS=16, SLURM_LOCALID=1)
    assert du.launch_env() == (9, 16, 1) and du.local_rank() == 1


def test_slurm_single_task_is_a_plain_process(env):
    env(SLURM_PROCID=0, SLURM_NTASKS=1, SLURM_LOCALID=0)
    assert du.launch_env() is None


def test_torchrun_wins_over_slurm(env):
    env(SLURM_PROCID=9, SLURM_NTASKS=16, SLURM_LOCALID=1, RANK=2, WORLD_SIZE=4, LOCAL_RANK=2)
    assert du.launch_env() == (2, 4, 2)


def test_init_without_launcher_runs_on_the_chosen_device(env):
    args = argparse.Namespace(local_rank=0, device="cpu", dist_url="env://")
    assert du.init_distributed_mode(args) == torch.device("cpu")
    assert (args.rank, args.world_size, args.gpu, args.distributed) == (0, 1, 0, False)


def test_distributed_launch_without_master_address_is_one_clear_error(env):
    env(RANK=0, WORLD_SIZE=2, LOCAL_RANK=0)
    args = argparse.Namespace(local_rank=0, device="cpu", dist_url="env://")
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        du.init_distributed_mode(args)


@pytest.mark.parametrize("healthy, stop", [(True, False), (False, False), (True, True), (False, True)])
def test_step_status_without_process_group(healthy, stop):
    assert du.step_status(torch.tensor(healthy), stop) == (healthy, stop)
