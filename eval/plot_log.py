"""Training curves of a run: ``python -m eval.plot_log OUTPUT_DIR`` draws ``OUTPUT_DIR/curves.png`` from its log.txt.

log.txt holds one JSON line per epoch (``train_loss``, ``train_d_loss``, ``train_s_loss``, ``train_ent``,
``train_ent_batch``, ``train_kl``, ``train_ent_c``, ``train_ent_batch_c``, ``train_kl_c``, ``train_mean_k``,
``train_lr``, ``train_wd``, ``train_img_per_s``,
``epoch``, and ``train_collapse`` / ``train_collapse_c`` from the collapse watch); args.json gives out_dim and
out_dim_c, whose logarithms are the entropies of a uniform teacher (the collapse level, croc_utils/monitor.py).
The entropy panels show the mean per-sample teacher entropy beside the entropy of the batch-mean teacher
distribution: training has left DINO's first phase when the first falls well below the second
(croc_utils/loss.CrOCLoss.diagnostics).

    python -m eval.plot_log demo_output                  # -> demo_output/curves.png
    python -m eval.plot_log runs/croc_coco --output curves_coco.png
"""

import argparse
import json
import math
import os

from croc_utils.atomic_io import atomic_write
from croc_utils.cli import OneLineErrorParser, UsageError, output_file, run_cli
from croc_utils.logging import read_log
from croc_utils.monitor import ENTROPY_REL_TOL, KL_MAX

# (title, [(log key, legend)], name of the args.json size whose ln is drawn as the uniform level, or None)
PANELS = [
    ("loss", [("train_loss", "total"), ("train_d_loss", "DINO (CLS)"), ("train_s_loss", "cluster")], None),
    ("teacher entropy, CLS head", [("train_ent", "per sample"), ("train_ent_batch", "of the batch mean")], "out_dim"),
    ("teacher entropy, cluster head", [("train_ent_c", "per sample"), ("train_ent_batch_c", "of the batch mean")],
     "out_dim_c"),
    ("KL(teacher || student)", [("train_kl", "CLS"), ("train_kl_c", "cluster")], None),
    ("mean number of clusters k", [("train_mean_k", "mean k")], None),
    ("learning rate", [("train_lr", "lr")], None),
    ("weight decay", [("train_wd", "wd")], None),
    ("throughput (img/s)", [("train_img_per_s", "img/s")], None),
]
COLLAPSE_KEYS = {"out_dim": "train_collapse", "out_dim_c": "train_collapse_c"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("plot_log", description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", help="A training --output_dir (holding log.txt and args.json).")
    parser.add_argument("--output", default="",
                        help="Figure path (.png, .pdf, .svg, ...; a folder: curves.png in it; no extension: .png "
                             "added). Default: OUTPUT_DIR/curves.png.")
    return parser


def read_sizes(path: str) -> dict:
    """out_dim and out_dim_c from args.json ({} when the file is absent or holds no settings object)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            args = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not JSON ({getattr(err, 'msg', err)})") from None
    if not isinstance(args, dict):
        return {}
    return {key: args[key] for key in ("out_dim", "out_dim_c") if isinstance(args.get(key), int) and args[key] > 0}


def figure_formats() -> set[str]:
    """File extensions matplotlib can write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return set(FigureCanvasAgg(Figure()).get_supported_filetypes())


def read_records(log: str) -> list[dict]:
    """The epochs of ``log`` (a torn line is skipped with a warning); UsageError when there is none."""
    if not os.path.isfile(log):
        raise UsageError(f"{log}: no such file; OUTPUT_DIR must be the folder of a training run")
    try:
        records = read_log(log)
    except ValueError as err:  # read_log's one reason: no line of the file is an epoch record
        raise UsageError(str(err)) from None
    if not records:
        raise UsageError(f"{log}: no epoch line yet")
    return records


def draw_curves(records: list[dict], sizes: dict, title: str = ""):
    """A 2x4 matplotlib Figure of the log's per-epoch values (epochs flagged by the collapse watch shaded red).

    Drawn with the Agg canvas and no pyplot, so it needs no display and leaves no global figure state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(18, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4)
    epochs = [r["epoch"] for r in records]
    for ax, (panel, series, size_key) in zip(axes.flat, PANELS):
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        drawn = False
        for key, label in series:
            points = [(e, r[key]) for e, r in zip(epochs, records) if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
                drawn = True
        if size_key in sizes:
            _draw_uniform_level(ax, sizes[size_key], [e for e, r in zip(epochs, records)
                                                      if r.get(COLLAPSE_KEYS[size_key])])
        if panel.startswith("KL"):
            ax.axhline(KL_MAX, color="red", linestyle=":", label=f"collapse watch: KL < {KL_MAX}")
        if not drawn:
            ax.text(0.5, 0.5, "not in this log", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif len(series) > 1 or size_key in sizes:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _draw_uniform_level(ax, out_dim: int, flagged: list) -> None:
    """ln(out_dim) (the entropy of a uniform teacher), the collapse watch's band below it, flagged epochs."""
    level = math.log(out_dim)
    ax.axhline(level, color="red", linestyle="--", label=f"ln({out_dim}) = {level:.2f} (uniform)")
    ax.axhspan((1 - ENTROPY_REL_TOL) * level, level, color="red", alpha=0.08, lw=0,
               label=f"within {ENTROPY_REL_TOL:.0%} of ln({out_dim})")
    for e in flagged:
        ax.axvspan(e - 0.5, e + 0.5, color="red", alpha=0.2, lw=0)
    if flagged:
        ax.plot([], [], color="red", alpha=0.4, lw=6, label="collapse flagged")


def main(args: argparse.Namespace) -> str:
    log, settings = os.path.join(args.output_dir, "log.txt"), os.path.join(args.output_dir, "args.json")
    records = read_records(log)
    sizes = read_sizes(settings)
    try:
        formats = figure_formats()
    except ImportError:
        raise UsageError("drawing needs matplotlib: pip install matplotlib") from None
    output = output_file(args.output or os.path.join(args.output_dir, "curves.png"), default_name="curves.png",
                         formats=formats, inputs={"log.txt": log, "args.json": settings})
    run_name = os.path.basename(os.path.normpath(args.output_dir))
    fig = draw_curves(records, sizes, title=f"{run_name}: {len(records)} epochs")
    atomic_write(str(output), lambda f: fig.savefig(f, dpi=100, format=output.suffix[1:].lower()), size=0)
    note = "" if sizes else "; no out_dim in args.json" if os.path.isfile(settings) else "; no args.json"
    print(f"wrote {output} ({len(records)} epochs{note + ': no ln(out_dim) lines' if note else ''})")
    return str(output)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
