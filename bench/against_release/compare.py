"""Relative differences, the tolerances they are held to, and the verdict."""

import math
from dataclasses import dataclass

import torch

KEY_SLICE = "qkv.bias[key third]"

# Tolerances on the maximum relative difference (float32, eps = 1.2e-7). Same math in another order of operations
# differs by a few eps per reduction; the differences grow through 12 blocks, sharp softmaxes (teacher temperature
# 0.04: x25) and Sinkhorn's exponentials (lambda 20), and the weights inherit them through AdamW.
# Measured on this comparison: at most about 1e-5 (loss terms, gradients, weights), 2e-6 (centres); 1e-4 leaves a
# margin of 10 and stays far below what a change of the math moves (the planted bugs of docs/against_release.md move
# their quantity by 1e-3 or more). The schedules are the same numpy arithmetic on both sides: equal to the last bit.
TOLERANCES = {
    "loss": 1e-4, "dino_term": 1e-4, "cluster_term": 1e-4,
    "grads": 1e-4,
    "student": 1e-4, "teacher": 1e-4,
    "center": 1e-4, "center_c": 1e-4,
    "schedule": 1e-12,
}
KEY_SLICE_NOISE = 1e-4  # the key-bias gradient relative to the whole qkv-bias gradient: noise, not a gradient


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||a|| (L2 over the whole tensor; 0 when both are 0)."""
    a, b = a.double(), b.double()
    scale = a.norm().item()
    diff = (a - b).norm().item()
    return 0.0 if diff == 0 else diff / scale if scale > 0 else math.inf


def split_key_slice(tensors: dict) -> tuple[dict, dict]:
    """Cut the key third out of every ``qkv.bias``: (the tensors with q and v thirds only, the key thirds)."""
    rest, keys = {}, {}
    for name, value in tensors.items():
        if name.endswith("attn.qkv.bias") and value is not None:
            third = value.shape[0] // 3
            rest[name] = torch.cat([value[:third], value[2 * third:]])
            keys[name] = value[third:2 * third]
        else:
            rest[name] = value
    return rest, keys


def max_rel_diff(ref: dict, cand: dict) -> tuple[float, str]:
    """Largest ``rel_diff`` over the tensors of two dicts, and the name where it occurs; a name missing on one side
    or a gradient present on one side only counts as infinite."""
    worst, where = 0.0, ""
    for name in sorted(set(ref) | set(cand)):
        a, b = ref.get(name), cand.get(name)
        if a is None and b is None and name in ref and name in cand:
            continue
        d = math.inf if a is None or b is None or a.shape != b.shape else rel_diff(a, b)
        if d > worst or not where:
            worst, where = d, name
    return worst, where


def scalar_rel(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / abs(a) if a != 0 else math.inf


@dataclass
class Row:
    """One step's comparison: the difference per quantity, where the largest tensor difference lies, and facts."""

    label: str
    diffs: dict
    where: dict
    facts: dict

    def failures(self) -> list[str]:
        out = [f"{q} {d:.1e} > {TOLERANCES[q]:.0e}" + (f" ({self.where[q]})" if self.where.get(q) else "")
               for q, d in self.diffs.items() if not d <= TOLERANCES[q]]
        return out + self.facts.get("failures", [])


def training_failures(rows: list[Row]) -> list[str]:
    """One line per quantity past its tolerance: the first step where it is, and in how many later steps."""
    first, count = {}, {}
    for row in rows:
        for failure in row.failures():
            quantity = failure.split(" ")[0]
            count[quantity] = count.get(quantity, 0) + 1
            first.setdefault(quantity, f"step {row.label}: {failure}")
    return [line + (f" (and in {count[q] - 1} later steps)" if count[q] > 1 else "") for q, line in first.items()]


def verdict(failures: list[str]) -> int:
    """Print the failures (or OK) and return the exit status."""
    print()
    if failures:
        print("FAILED:\n" + "\n".join(f"  {f}" for f in failures))
        return 1
    print("OK: every quantity within its tolerance")
    return 0
