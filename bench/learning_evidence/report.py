"""Pure functions from measured curves to what the bench writes: the markdown table, the gaps, the JSON-ready
curves, the summary and the sweep table. ``curves``: run name -> list of points (``probes.probe_*``)."""

import math

from eval.probe_baselines import FLOORS

from .flags import format_value
from .probes import COLUMNS, Column

LABELS = {"croc": "CrOC (alpha_s 1)", "dino": "DINO-only (alpha_s 0)", "random": "random init",
          "majority": "floor: majority class", "mean_colour": "floor: mean colour per patch",
          "raw_pixels": "floor: raw patch pixels", "fft": "floor: \\|FFT\\| of each patch",
          "supervised": "ceiling: supervised, same budget"}
RUN_ORDER = ("random", "croc", "dino", *FLOORS, "supervised")
GAP_PAIRS = (("croc", "random"), ("croc", "dino"), ("dino", "random"), ("supervised", "croc"))
LINEAR = COLUMNS[0]  # the gaps and the sweep compare linear-probe means
STAT_KEYS = ("train_loss", "train_d_loss", "train_s_loss", "train_ent", "train_ent_batch", "train_kl", "train_ent_c",
             "train_ent_batch_c", "train_kl_c", "train_mean_k", "train_img_per_s", "train_collapse", "train_collapse_c")


def run_labels(alpha_s: float | None) -> dict:
    """LABELS, with CrOC's alpha_s as the preset trains it (a one-run preset may set it, e.g. --set alpha_s=3)."""
    if alpha_s is None or alpha_s == 1:
        return LABELS
    return {**LABELS, "croc": f"CrOC (alpha_s {format_value(alpha_s)})"}


def cell(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{mean:.2f} +- {std:.2f}"


def markdown_table(curves: dict, labels: dict = LABELS, columns: tuple[Column, ...] = COLUMNS) -> str:
    """One line per evaluated point, runs in RUN_ORDER, one column per measurement: mean +- std in mIoU points."""
    head = ["backbone", "images seen", *(c.header for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in (r for r in RUN_ORDER if r in curves):
        for point in curves[run]:
            cells = [labels[run], f"{point['images_seen']:,}", *(cell(*c.read(point)) for c in columns)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gaps(curves: dict, column: Column = LINEAR) -> dict:
    """Final-point differences of the linear-probe means, in mIoU points, and the larger probe std of each compared
    pair (a gap counts when it is several times that std)."""
    final = {run: column.read(points[-1]) for run, points in curves.items() if points}
    out = {"linear_final": {run: mean for run, (mean, _) in final.items()}}
    for a, b in GAP_PAIRS:
        if a in final and b in final:
            out[f"{a}_minus_{b}"] = final[a][0] - final[b][0]
            out[f"{a}_minus_{b}_max_std"] = max(final[a][1], final[b][1])
    return out


def strip_runs(curves: dict) -> dict:
    """The curves without per-class detail of every seed (kept: per-seed mIoU and chosen weight decays)."""
    def slim(r):
        return {k: v for k, v in r.items() if k != "runs"} | {
            "per_seed": [{k: v for k, v in run.items() if k in ("seed", "miou", "weight_decay", "n_iter",
                                                                  "converged", "pixel_accuracy")}
                         for run in r["runs"]]}
    return {name: [{**p, "linear": slim(p["linear"]), "kmeans": {k: slim(v) for k, v in p["kmeans"].items()}}
                   for p in points] for name, points in curves.items()}


def epoch_stats(log: list[dict], points: list[dict]) -> list[dict]:
    """The training-log line of the epoch that ended at each evaluated checkpoint (teacher entropies, KL, mean k...):
    ``log`` holds log.txt's records, a point's ``epoch`` counts finished epochs (the log's epochs are 0-based)."""
    by_epoch = {int(r["epoch"]): r for r in log}
    return [{k: by_epoch.get(p["epoch"] - 1, {}).get(k) for k in STAT_KEYS} for p in points]


def summary(table: str, gap: dict, seconds: dict, figure: str) -> str:
    """The table, the gaps at the last point and the times: learning_evidence.md (also printed)."""
    shown = ", ".join(f"{k} {v:+.2f}" for k, v in gap.items() if k != "linear_final" and not k.endswith("_max_std"))
    return (f"{table}\n\nlinear-probe gaps at the last point (mIoU points): {shown}"
            f"\ntime: train {seconds['train']:.0f} s, evaluate {seconds['evaluate']:.0f} s, "
            f"total {seconds['total']:.0f} s; figure {figure}")


def sweep_row(name: str, flags: str, result: dict) -> dict:
    """One configuration's line of the sweep table, from its cached result (probe point, random init's mean)."""
    point = result["point"]
    stats = point.get("train_stats", {})
    mean, std = LINEAR.read(point)
    return {"config": name, "flags": flags or "(dev preset)", "linear": mean, "std": std,
            "minus_random": mean - result["random"], "ent": stats.get("train_ent"),
            "ent_batch": stats.get("train_ent_batch"), "ent_c": stats.get("train_ent_c"),
            "ent_batch_c": stats.get("train_ent_batch_c"), "collapse": stats.get("train_collapse"),
            "collapse_c": stats.get("train_collapse_c"), "train_s": result["train_seconds"]}


def sweep_table(rows: list[dict], random: tuple[float, float]) -> str:
    def num(v, fmt=".2f"):
        return "-" if v is None else format(v, fmt)

    head = ["config", "flags (over the dev preset)", "dev linear probe mIoU", "minus random", "CLS ent / batch ent",
            "cluster ent / batch ent", "collapse CLS / cluster", "train s"]
    lines = [f"random init: {random[0]:.2f} +- {random[1]:.2f}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["config"], f"`{r['flags']}`", f"{r['linear']:.2f} +- {r['std']:.2f}", f"{r['minus_random']:+.2f}",
            f"{num(r['ent'])} / {num(r['ent_batch'])}", f"{num(r['ent_c'])} / {num(r['ent_batch_c'])}",
            f"{num(r['collapse'], 'd')} / {num(r['collapse_c'], 'd')}", f"{r['train_s']:.0f}"]) + " |")
    return "\n".join(lines)
