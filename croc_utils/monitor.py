"""Training-health checks read from the loss diagnostics: the collapse watch and the non-finite-loss message.

Collapse (docs/algorithm.md section 4): DINO-style training has two trivial solutions. Centring alone drives the
teacher towards the uniform distribution over the ``C`` outputs; sharpening (a low teacher temperature) is what
keeps it away. A run that has collapsed onto the uniform solution shows, for the CLS head (``C = out_dim``) or the
cluster head (``C = out_dim_c``):

* teacher entropy ~ ln(C) (11.09 for 65536): the teacher says nothing about the image;
* KL(teacher || student) ~ 0: the student reproduces that uniform target exactly, so the loss sits at ln(C) and its
  gradient carries no signal.

A healthy run can pass close to ln(C) for a while (the entropy rises in the first epochs, see the README demo), but
then the student is still far from the teacher (KL of tenths of a nat); a collapsed run has both, step after step.
"""

import math

import torch
from torch import Tensor

ENTROPY_REL_TOL = 0.02  # "within 2% of ln(C)"
KL_MAX = 0.01  # nats; see CollapseWatch for why

HEADS = (  # log key, entropy key, KL key, what the head is, its temperature flags
    ("collapse", "ent", "kl", "CLS head", "--teacher_temp / --warmup_teacher_temp"),
    ("collapse_c", "ent_c", "kl_c", "cluster head", "--teacher_temp_c / --warmup_teacher_temp_c"),
)


class CollapseWatch:
    """Flags the epochs in which a teacher head sat on the uniform solution at every step.

    A step counts as collapsed for a head when its teacher entropy is >= (1 - 2%) ln(C) AND the KL between teacher
    and student is < 0.01 nat. An epoch is flagged when every step of it was collapsed and the epoch is past the lr
    warm-up (``epoch >= warmup_epochs``): during the warm-up the lr ramps up from 0, so the student and the head
    barely move and a near-uniform teacher (the centre is still settling, the head is at its random init) is
    expected and says nothing yet; after it, the full lr is applied and a teacher that stays uniform is stuck there.

    Why 0.01 nat: KL(uniform || student) ~ var(student logits) / 2 for small spreads, so below 0.01 the student's
    logits (which a working student spreads over +-10) vary by less than ~0.14: it outputs the uniform distribution
    too. A healthy run keeps its student tenths of a nat away from a near-uniform teacher (0.2 at initialisation in
    the tiny test runs, 0.26 or more through the README demo), while a student chasing a uniform teacher (teacher
    temperature 100 on a tiny run) went from 0.21 to 0.012 in 20 steps and was still falling.
    Requiring EVERY step keeps one lucky batch from raising a false alarm.

    Per step, ``update`` only does tensor ops on the diagnostics' device (no host sync); ``end_epoch`` reads the
    result once. The warning is printed once per run and head (collapse does not go away by itself, and a 300-epoch
    log should not repeat a paragraph each epoch); the returned flags go into every epoch's log.txt line.

    Args:
        out_dim, out_dim_c: sizes C of the CLS and cluster heads.
        warmup_epochs: lr warm-up epochs (``--warmup_epochs``); earlier epochs are never flagged.
    """

    def __init__(self, out_dim: int, out_dim_c: int, warmup_epochs: int, rel_tol: float = ENTROPY_REL_TOL,
                 kl_max: float = KL_MAX):
        self.out_dims = {"collapse": out_dim, "collapse_c": out_dim_c}
        self.floors = {key: (1 - rel_tol) * math.log(c) for key, c in self.out_dims.items()}
        self.warmup_epochs, self.rel_tol, self.kl_max = warmup_epochs, rel_tol, kl_max
        self.warned: set = set()
        self._all = None  # (2,) bool on the device: every counted step so far was collapsed, per head
        self._steps = None  # (2,) int64: steps counted per head

    def update(self, ent: Tensor, kl: Tensor, ent_c: Tensor, kl_c: Tensor, **_) -> None:
        """One step's diagnostics (0-d tensors, as ``CrOCLoss.diagnostics()`` returns them)."""
        collapsed = torch.stack([(ent >= self.floors["collapse"]) & (kl < self.kl_max),
                                 (ent_c >= self.floors["collapse_c"]) & (kl_c < self.kl_max)])
        # A step without any valid cluster has ent_c = kl_c = 0 exactly: it says nothing about the cluster head.
        counted = torch.stack([torch.ones_like(collapsed[0]), (ent_c != 0) | (kl_c != 0)])
        ok = collapsed | ~counted
        self._all = ok if self._all is None else self._all & ok
        self._steps = counted.long() if self._steps is None else self._steps + counted.long()

    def end_epoch(self, epoch: int) -> dict:
        """{"collapse": 0/1, "collapse_c": 0/1} for this epoch (prints the warning the first time); then resets."""
        flags = {key: 0 for key, *_ in HEADS}
        if self._all is not None:
            all_collapsed, steps = torch.stack([self._all.long(), self._steps]).tolist()  # the epoch's one sync
            for i, (key, *_rest) in enumerate(HEADS):
                flags[key] = int(bool(all_collapsed[i]) and steps[i] > 0 and epoch >= self.warmup_epochs)
        self._all = self._steps = None
        for key, _ent, _kl, head, temp_flags in HEADS:
            if flags[key] and key not in self.warned:
                self.warned.add(key)
                print(self.warning(epoch, head, self.out_dims[key], temp_flags, key))
        return flags

    def warning(self, epoch: int, head: str, out_dim: int, temp_flags: str, key: str) -> str:
        ln_c = math.log(out_dim)
        return (f"WARNING: the {head} has collapsed in epoch {epoch}: at every step the teacher entropy was within "
                f"{self.rel_tol:.0%} of ln({out_dim}) = {ln_c:.2f} and KL(teacher || student) < {self.kl_max}, i.e. "
                f"the teacher outputs the uniform distribution, the student copies it and the loss (~{ln_c:.2f}) "
                f"teaches nothing. Usual remedies: a lower teacher temperature ({temp_flags}), a lower --lr, a higher "
                f"--momentum_teacher, a larger batch (--batch_size_per_gpu or more GPUs). Printed once per run; "
                f"log.txt records '{key}' every epoch.")


def non_finite_cause(loss: float, ranks: list[int], *, rank: int, world_size: int, iteration: int) -> str:
    """What was not finite and where: the ranks that reported it (every rank learns them at the step sync)."""
    if world_size == 1 and ranks == [rank]:
        return f"loss is {loss} or the teacher's output is not finite, at iteration {iteration}"
    return (f"the loss or the teacher's output is not finite on rank{'s' if len(ranks) > 1 else ''} "
            f"{', '.join(map(str, ranks))} of {world_size} (loss on rank {rank}: {loss}), at iteration {iteration}")


def non_finite_message(err: Exception, epoch: int, ckpt_path: str, fp16: bool) -> str:
    """The one-line error printed when training stops on a non-finite loss (with a resume hint under fp16)."""
    line = f"error: {err} in epoch {epoch}; stopping, the last good checkpoint {ckpt_path} is left intact."
    if fp16:  # fp16 overflows (max 65504) are the usual cause; bf16 has fp32's range
        line += (" Under fp16 this is often an overflow: rerun the same command with --precision bf16 (or "
                 "--use_fp16 false) to resume from the last checkpoint in bf16/fp32.")
    return line
