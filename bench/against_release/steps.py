"""Whole training steps: both sides train from one checkpoint on the same batches; a row of differences per step."""

import time

from bench.against_release.batches import Batch, released_augmentation_batches
from bench.against_release.compare import (
    KEY_SLICE,
    KEY_SLICE_NOISE,
    TOLERANCES,
    Row,
    max_rel_diff,
    rel_diff,
    scalar_rel,
    split_key_slice,
    training_failures,
)
from bench.against_release.recording import StepRecord
from bench.against_release.sides import Side, start_sides

# The training settings of the whole-step comparison (flags of both command lines, which share their names).
STEP_FLAGS = dict(
    arch="vit_tiny", patch_size=16, out_dim=4096, out_dim_c=1024, epochs=3, warmup_epochs=2, freeze_last_layer=1,
    clip_grad=0.3, lr=0.064, min_lr=1e-6, weight_decay=0.04, weight_decay_end=0.4, momentum_teacher=0.9,
    warmup_teacher_temp=0.02, teacher_temp=0.04, warmup_teacher_temp_c=0.02, teacher_temp_c=0.04,
    warmup_teacher_temp_epochs=2, batch_size_per_gpu=2, drop_path_rate=0.0, use_fp16="false", num_workers=0,
    norm_last_layer="true", alpha_s=1.0,
)
STEPS_PER_EPOCH = 2


def compare_step(label: str, ref: StepRecord, cand: StepRecord, lr_sum: float) -> Row:
    """Compare one step of the two sides (``lr_sum``: the lrs used so far, the bound on the key-slice weights)."""
    diffs, where = {}, {}
    for q in ("loss", "dino_term", "cluster_term"):
        diffs[q] = scalar_rel(getattr(ref, q), getattr(cand, q))
    grads_ref, keys_ref = split_key_slice(ref.grads)
    grads_cand, keys_cand = split_key_slice(cand.grads)
    diffs["grads"], where["grads"] = max_rel_diff(grads_ref, grads_cand)
    failures = []
    key_weight_diff = 0.0
    for who in ("student", "teacher"):
        rest_ref, kw_ref = split_key_slice(getattr(ref, who))
        rest_cand, kw_cand = split_key_slice(getattr(cand, who))
        diffs[who], where[who] = max_rel_diff(rest_ref, rest_cand)
        key_weight_diff = max([key_weight_diff] + [(kw_ref[n] - kw_cand[n]).abs().max().item()
                                                   for n in kw_ref if n in kw_cand])
    for q in ("center", "center_c"):
        diffs[q] = rel_diff(getattr(ref, q), getattr(cand, q))
    diffs["schedule"] = max(scalar_rel(getattr(ref, q), getattr(cand, q)) for q in ("lr", "wd", "momentum"))
    key_noise = 0.0
    for grads, keys in ((ref.grads, keys_ref), (cand.grads, keys_cand)):
        for name, k in keys.items():
            scale = grads[name].abs().max().item()
            key_noise = max(key_noise, k.abs().max().item() / scale if scale > 0 else 0.0)
    if key_noise > KEY_SLICE_NOISE:
        failures.append(f"{KEY_SLICE} gradient {key_noise:.1e} of the qkv-bias gradient: not noise")
    if key_weight_diff > lr_sum:
        failures.append(f"{KEY_SLICE} weights differ by {key_weight_diff:.1e} > the lrs so far {lr_sum:.1e}")
    if ref.clipped != cand.clipped or ref.n_grads != cand.n_grads:
        failures.append(f"clipped {ref.clipped}/{ref.n_grads} vs {cand.clipped}/{cand.n_grads} gradients")
    facts = {"lr": ref.lr, "loss": ref.loss, "clipped": f"{cand.clipped}/{cand.n_grads}", "key_noise": key_noise,
             "key_weights": key_weight_diff, "failures": failures}
    return Row(label, diffs, where, facts)


def compare_start(ref: Side, cand: Side) -> Row:
    """Both sides right after loading the checkpoint: every weight and centre must be identical."""
    s1, t1, c1, cc1 = ref.state()
    s2, t2, c2, cc2 = cand.state()
    diffs, where = {}, {}
    diffs["student"], where["student"] = max_rel_diff(s1, s2)
    diffs["teacher"], where["teacher"] = max_rel_diff(t1, t2)
    diffs["center"], diffs["center_c"] = rel_diff(c1, c2), rel_diff(cc1, cc2)
    failures = [f"{q} differs after loading ({d:.1e})" for q, d in diffs.items() if d != 0]
    return Row("load", diffs, where, {"failures": failures})


COLUMNS = ("loss", "dino_term", "cluster_term", "grads", "student", "teacher", "center", "center_c", "schedule")
HEADERS = ("loss", "d_term", "s_term", "grads", "student", "teacher", "center", "center_c", "lr/wd/m")


def format_table(rows: list[Row]) -> str:
    """Markdown table: one row per step, the max relative difference of each quantity."""
    head = ["step", "lr", *HEADERS, "clipped", "k-bias grad", "k-bias w"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.label, f"{row.facts['lr']:.1e}" if "lr" in row.facts else ""]
        cells += [f"{row.diffs[q]:.1e}" if q in row.diffs else "" for q in COLUMNS]
        cells += [row.facts.get("clipped", ""),
                  f"{row.facts['key_noise']:.0e}" if "key_noise" in row.facts else "",
                  f"{row.facts['key_weights']:.0e}" if "key_weights" in row.facts else ""]
        lines.append("| " + " | ".join(cells) + " |")
    tol = ["tolerance", ""] + [f"{TOLERANCES[q]:.0e}" for q in COLUMNS] + ["", f"{KEY_SLICE_NOISE:.0e}", "sum lr"]
    lines.append("| " + " | ".join(tol) + " |")
    return "\n".join(lines)


def compare_training(ref: Side, cand: Side, batches: list[Batch], seed: int, epochs: int) -> list[Row]:
    """Train both sides epoch by epoch on the same batches; a Row per step (the first row: right after loading)."""
    rows = [compare_start(ref, cand)]
    per_epoch = len(batches) // epochs
    lr_sum = 0.0
    for epoch in range(epochs):
        chunk = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
        ref_records = ref.run_epoch(epoch, chunk, seed)
        cand_records = cand.run_epoch(epoch, chunk, seed)
        for i, (a, b) in enumerate(zip(ref_records, cand_records)):
            lr_sum += a.lr
            rows.append(compare_step(f"{epoch}.{i}", a, b, lr_sum))
            a.student = a.teacher = b.student = b.teacher = a.grads = b.grads = None  # free the memory
        if len(ref_records) != len(cand_records) or len(ref_records) != len(chunk):
            raise RuntimeError(f"epoch {epoch}: {len(ref_records)} vs {len(cand_records)} steps recorded")
    return rows


def whole_steps(release, seed: int) -> tuple[str, list[str]]:
    """The whole-step section: both sides from one checkpoint through ``STEP_FLAGS["epochs"]`` epochs on batches of
    the released augmentation; (the table with its heading, one failure line per quantity past its tolerance)."""
    t0 = time.perf_counter()
    ref, cand = start_sides(release, STEP_FLAGS, STEPS_PER_EPOCH, seed)
    n_batches = STEP_FLAGS["epochs"] * STEPS_PER_EPOCH
    batches = released_augmentation_batches(release, n_batches, STEP_FLAGS["batch_size_per_gpu"],
                                            STEP_FLAGS["patch_size"], seed)
    rows = compare_training(ref, cand, batches, seed, STEP_FLAGS["epochs"])
    del ref, cand
    text = (f"\n## Whole training steps ({time.perf_counter() - t0:.0f} s): max relative difference, released "
            f"code vs ours\n\n" + ", ".join(f"--{k} {v}" for k, v in STEP_FLAGS.items()) + "\n" + format_table(rows))
    return text, training_failures(rows)
