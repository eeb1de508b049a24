"""The figure: probe mIoU vs images seen, one panel per column. ``panels`` computes what is drawn (pure, tested);
``draw`` only hands it to matplotlib."""

import math
from pathlib import Path

from eval.probe_baselines import FLOORS

from .probes import COLUMNS, Column
from .report import LABELS

TRAINED = ("croc", "dino")
COLOURS = {"croc": "tab:red", "dino": "tab:blue", "random": "tab:gray", "supervised": "tab:green",
           "floor": "tab:olive"}


def best_floor(curves: dict, column: Column = COLUMNS[0]) -> str | None:
    """The floor with the highest linear-probe mean (drawn as the one floor line)."""
    floors = [f for f in FLOORS if curves.get(f)]
    return max(floors, key=lambda f: column.read(curves[f][0])[0]) if floors else None


def panels(curves: dict, labels: dict = LABELS, columns: tuple[Column, ...] = COLUMNS) -> list[dict]:
    """One panel per column: {title, lines}; a line is {run, label, colour, style, x, mean, std} (lists).

    The trained runs are curves over their checkpoints, started at random init's value at 0 images when it was
    measured; random init, the best floor and the ceiling are flat lines over the trained runs' range."""
    trained = [run for run in TRAINED if curves.get(run)]
    x_max = max([p["images_seen"] for run in trained for p in curves[run]] + [1])
    floor = best_floor(curves)
    out = []
    for column in columns:
        lines = []
        for run in ("random", floor, "supervised", *trained):
            points = curves.get(run) if run else None
            if not points or math.isnan(column.read(points[0])[0]):
                continue
            mean, std = (list(v) for v in zip(*(column.read(p) for p in points)))
            x = [float(p["images_seen"]) for p in points]
            if run not in trained:
                x, mean, std = [0.0, float(x_max)], [mean[-1]] * 2, [std[-1]] * 2
            elif curves.get("random") and x[0] > 0:  # both runs start from the random init measured at 0 images
                start = column.read(curves["random"][0])
                x, mean, std = [0.0, *x], [start[0], *mean], [start[1], *std]
            lines.append({"run": run, "label": labels[run].replace("\\|", "|"),  # the table's escaped bars
                          "colour": COLOURS["floor" if run == floor else run],
                          "style": "-o" if run in trained else "--", "x": x, "mean": mean, "std": std})
        out.append({"title": column.title, "lines": lines})
    return out


def draw(figure: list[dict], path: Path, title: str) -> None:
    """Draw ``panels(...)`` side by side with +- std bands and save a PNG (ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(figure), figsize=(5 * len(figure), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], figure):
        for line in panel["lines"]:
            mean, std = np.array(line["mean"]), np.array(line["std"])
            ax.plot(line["x"], mean, line["style"], color=line["colour"], label=line["label"], markersize=4)
            ax.fill_between(line["x"], mean - std, mean + std, color=line["colour"], alpha=0.2)
        ax.set_title(panel["title"])
        ax.set_xlabel("images seen")
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
