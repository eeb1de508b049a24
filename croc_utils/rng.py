"""The random-number states of a training process, saved with every checkpoint so that a run resumed in the middle
of an epoch draws the same numbers as an uninterrupted one.

What the main process draws from during training: torch's CPU generator (drop path and the clustering's seed
sampling on CPU), the CUDA generators (the same on a GPU), numpy's and Python's global generators (seeded with the
others; nothing in the step uses them today, saved so that nothing can drift). The data's randomness is not here: a
sample's views depend only on (seed, epoch, index) (croc_utils.datasets.EpochSampler).

A checkpoint holds ``rng_states``: one entry per process (global rank), each a dict of tensors and plain numbers, so
that it loads with ``weights_only=True``. The released layout has no such entry; nothing else reads it.
"""

import random

import numpy as np
import torch
import torch.distributed as dist

from croc_utils.distributed import get_rank, get_world_size, is_dist

CHECKPOINT_KEY = "rng_states"


def rng_state() -> dict:
    """This process's generator states: ``torch`` (ByteTensor), ``cuda`` (one ByteTensor per visible GPU, only when
    CUDA is initialised), ``numpy`` (MT19937 keys as an int64 tensor of 624 values and its position, cached
    Gaussian) and ``random`` (Python's 625 state words and cached Gaussian)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "random": {"version": version, "words": torch.tensor(words, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what ``rng_state`` returned (the CUDA states only when both sides have CUDA)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["random"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def gather_rng_states() -> list[dict]:
    """Every process's ``rng_state()``, indexed by global rank (a collective under torch.distributed: every rank
    calls it; only rank 0 writes the checkpoint)."""
    state = rng_state()
    if not is_dist():
        return [state]
    states = [None] * get_world_size()
    dist.all_gather_object(states, state)
    return states


def restore_rng_states(ckpt: dict, path: str) -> bool:
    """Set this process's generators from ``ckpt[CHECKPOINT_KEY]``; False (and a one-line notice) when the
    checkpoint has none (older checkpoints, the released layout) or was written by another number of processes."""
    states = ckpt.get(CHECKPOINT_KEY)
    if not states:
        print(f"Notice: {path} holds no random-number states (written by an older version): the rest of this epoch "
              "draws other drop-path and cluster-seed numbers than an uninterrupted run would (the data are the "
              "same).")
        return False
    if len(states) != get_world_size():
        print(f"Notice: {path} holds the random-number states of {len(states)} processes, this run has "
              f"{get_world_size()}: the rest of this epoch draws other drop-path and cluster-seed numbers than an "
              "uninterrupted run would (the data are the same).")
        return False
    set_rng_state(states[get_rank()])
    return True
