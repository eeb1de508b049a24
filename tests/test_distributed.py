"""Launcher detection (plain process, torch.distributed.launch, torchrun, SLURM) and the step's status sync."""

import argparse
import multiprocessing
import os
import socket

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
    assert du.step_status(torch.tensor(healthy), stop) == ([] if healthy else [0], stop)


# ===== two gloo processes (forked: no re-import, a few seconds) =====

def _join_group(rank: int, port: int, dist_timeout: float) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    du.init_distributed_mode(argparse.Namespace(local_rank=0, device="cpu", dist_url="env://",
                                                dist_timeout=dist_timeout))


def _status_worker(rank: int, port: int, results) -> None:
    _join_group(rank, port, dist_timeout=1.0)
    first = du.step_status(torch.tensor(rank != 1), stop_requested=False)  # rank 1 not finite
    second = du.step_status(torch.tensor(True), stop_requested=rank == 0)  # rank 0 got SIGTERM
    results.put((rank, first, second, du.broadcast_from_main(f"decided by rank {rank}")))


def _stalled_worker(rank: int, port: int, results, rank0_failed) -> None:
    _join_group(rank, port, dist_timeout=0.05)  # 3 s
    if rank == 1:  # stalled: joins the step sync only when rank 0 has given up on it, or after 60 s
        rank0_failed.wait(timeout=60)
        if not rank0_failed.is_set():
            du.step_status(torch.tensor(True), False)
        return
    try:
        du.step_status(torch.tensor(True), False)
        results.put("rank 0 waited for the stalled rank")
    except RuntimeError as err:
        rank0_failed.set()
        results.put(f"rank 0 gave up: {err}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two(target, *extra) -> list:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=target, args=(rank, port, results, *extra)) for rank in range(2)]
    for proc in procs:
        proc.start()
    try:
        out = [results.get(timeout=120) for _ in range(1 if target is _stalled_worker else 2)]
    finally:
        for proc in procs:
            proc.join(timeout=120)
            if proc.is_alive():
                proc.kill()
    return out


def test_step_status_names_the_non_finite_ranks_on_every_rank_in_one_collective():
    for rank, first, second, decided in sorted(_run_two(_status_worker)):
        assert first == du.StepStatus([1], False), rank  # every rank learns that rank 1 failed
        assert second == du.StepStatus([], True), rank  # and that some rank was asked to stop
        assert decided == "decided by rank 0"


def test_dist_timeout_ends_the_wait_for_a_stalled_rank():
    """--dist_timeout reaches the process group: rank 0 gives up on a stalled rank after it (here 3 s) instead of
    the 30 minutes that used to be hard-coded (then it would wait until rank 1 joins, up to 60 s later)."""
    ctx = multiprocessing.get_context("fork")
    [outcome] = _run_two(_stalled_worker, ctx.Event())
    assert outcome.startswith("rank 0 gave up") and "Timed out" in outcome, outcome
