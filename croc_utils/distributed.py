"""One place for process-group set-up: no launcher, torch.distributed.launch, torchrun, or SLURM.

docs/algorithm.md section 7. nccl on CUDA, gloo on CPU; every collective elsewhere is guarded with
``is_dist()`` so a single process without a launcher just works.
"""

import builtins
import datetime
import os
import random
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def launch_env(local_rank_flag: int = 0) -> Optional[tuple]:
    """(rank, world_size, local_rank) from torchrun / launch or SLURM variables, None for a plain process.

    ``local_rank_flag`` is the ``--local_rank`` the old launcher passes when it does not set LOCAL_RANK.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local = int(os.environ.get("LOCAL_RANK", local_rank_flag))
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ["SLURM_LOCALID"])
    return None


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``auto`` -> cuda:local_rank when CUDA is available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed_mode(args) -> torch.device:
    """Set ``args.rank``, ``args.world_size``, ``args.gpu``, ``args.distributed``; start the process group when
    launched by torchrun / launch / SLURM; return the device this process computes on."""
    env = launch_env(args.local_rank)
    rank, world_size, local_rank = env if env else (0, 1, 0)
    device = resolve_device(args.device, local_rank)
    args.rank, args.world_size, args.gpu, args.distributed = rank, world_size, local_rank, world_size > 1
    if args.distributed and not is_dist():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        url = args.dist_url
        if url == "env://" and "MASTER_ADDR" not in os.environ:
            raise RuntimeError("--dist_url env:// needs MASTER_ADDR/MASTER_PORT (set by torchrun); under SLURM set "
                               "them or pass --dist_url tcp://HOST:PORT")
        # a stalled rank (stopped, hung I/O) blocks every other rank in the next collective for this long; after
        # it NCCL/gloo raise and the job ends
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=url,
                                world_size=world_size, rank=rank,
                                timeout=datetime.timedelta(minutes=args.dist_timeout))
        dist.barrier()
    setup_for_distributed(rank == 0)
    return device


def setup_for_distributed(is_master: bool) -> None:
    """Silence ``print`` on ranks other than 0 (``print(..., force=True)`` still prints), as DINO does."""
    builtin_print = getattr(builtins.print, "_croc_original", builtins.print)

    def print_(*args, force: bool = False, **kwargs):
        if is_master or force:
            builtin_print(*args, **kwargs)

    print_._croc_original = builtin_print
    builtins.print = print_


def fix_random_seeds(seed: int) -> None:
    """Seed torch, numpy and random (used per epoch so that an epoch depends only on (seed, rank, epoch))."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def local_rank() -> int:
    """This process's rank on its node (0 for a plain process)."""
    env = launch_env()
    return env[2] if env else 0


class StepStatus(NamedTuple):
    """What every process learns at the step's one host sync."""

    unhealthy_ranks: list  # the ranks whose loss or teacher output was not finite (empty: all healthy)
    stop_requested: bool  # some process received SIGTERM


def step_status(healthy: torch.Tensor, stop_requested: bool) -> StepStatus:
    """Every process's health and stop request: the training step's one host sync.

    Args:
        healthy: 0-d bool tensor on the training device (loss and teacher output finite on this process).
        stop_requested: this process received SIGTERM.
    One collective over a (world_size + 1,) vector: slot r holds rank r's "not finite" flag (so every rank learns
    which ranks failed), the last slot the stop request. Every rank then stops or fails together.
    """
    world_size, rank = get_world_size(), get_rank()
    flags = torch.zeros(world_size + 1, device=healthy.device)
    flags[rank] = (~healthy).float()
    flags[world_size] = float(stop_requested)
    if is_dist():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    values = flags.tolist()
    return StepStatus([r for r in range(world_size) if values[r]], bool(values[world_size]))


def broadcast_from_main(obj):
    """Rank 0's ``obj`` on every rank (a start-up decision taken once, e.g. which checkpoint to resume from)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()
