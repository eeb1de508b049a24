"""Draw the method in one picture: figures/croc_method.png (shown at the top of README.md).

    python figures/draw_method.py [--out figures/croc_method.png]

An image and two overlapping views; each patch keeps its position in the image; the teacher clusters the patches
of both views jointly, so that a cluster spans both views; the student's tokens are pooled with the teacher's
assignment into cluster tokens, and each cluster token of one view predicts the same cluster's token in the other
view, next to DINO's image-level objective. The scene is one of the embedded synthetic scenes and the clusters
shown are its ground-truth regions, seen through the patch grid of each view: an illustration of what the joint
clustering aims at, not the output of a trained network (``python -m eval.visualize_clusters`` draws that).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

from croc_utils.synthetic import SyntheticScenes  # noqa: E402

SIZE = 224  # side of the scene, pixels
GRID = 8  # patches per side of a view in the picture
VIEWS = ((12, 20, 150), (66, 58, 150))  # (x0, y0, side) of view 1 and view 2 in the scene
VIEW_COLOURS = ("#d95f02", "#1b9e77")
CLUSTER_COLOURS = plt.get_cmap("tab10").colors


def scene_with_clusters(min_clusters: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The first val scene whose two views each hold at least ``min_clusters`` regions: image (S, S, 3), mask."""
    scenes = SyntheticScenes("val", num_images=64, size=SIZE, seed=0)
    for index in range(len(scenes)):
        image, mask = scenes[index]
        if all(len(np.unique(patch_labels(mask, view))) >= min_clusters for view in VIEWS):
            return np.asarray(image), mask
    raise RuntimeError("no scene with enough regions in both views")


def patch_labels(mask: np.ndarray, view: tuple[int, int, int]) -> np.ndarray:
    """(GRID, GRID) region of each patch of a view: the most frequent mask value in its cell."""
    x0, y0, side = view
    crop = mask[y0:y0 + side, x0:x0 + side]
    cells = crop[: side // GRID * GRID, : side // GRID * GRID].reshape(GRID, side // GRID, GRID, side // GRID)
    cells = cells.transpose(0, 2, 1, 3).reshape(GRID, GRID, -1)
    return np.array([[np.bincount(c).argmax() for c in row] for row in cells])


def cluster_map(labels: np.ndarray, colour_of: dict[int, int]) -> np.ndarray:
    """(GRID, GRID, 3) colours of the clusters, the same colour for the same region in both views."""
    return np.array([[CLUSTER_COLOURS[colour_of[v]] for v in row] for row in labels])


def box(fig, x, y, w, h, text, colour="#eeeeee", size=9):
    fig.patches.append(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.006", transform=fig.transFigure,
                                      facecolor=colour, edgecolor="#555555", linewidth=0.8))
    fig.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)


def arrow(fig, start, end, colour="#444444", style="-|>", rad=0.0):
    fig.patches.append(FancyArrowPatch(start, end, transform=fig.transFigure, arrowstyle=style, mutation_scale=10,
                                       color=colour, linewidth=1.0, connectionstyle=f"arc3,rad={rad}"))


def image_axes(fig, rect, picture, title, edge=None):
    ax = fig.add_axes(rect)
    ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if edge:
        for spine in ax.spines.values():
            spine.set_edgecolor(edge)
            spine.set_linewidth(2)
    return ax


def draw(out: str) -> None:
    image, mask = scene_with_clusters()
    labels = [patch_labels(mask, view) for view in VIEWS]
    regions = sorted(set(np.unique(labels[0])) | set(np.unique(labels[1])))
    colour_of = {region: i for i, region in enumerate(regions)}
    fig = plt.figure(figsize=(13, 4.4))

    # 1. the image and the two views' boxes
    ax = image_axes(fig, (0.005, 0.22, 0.16, 0.6), image, "image")
    for (x0, y0, side), colour in zip(VIEWS, VIEW_COLOURS):
        ax.add_patch(Rectangle((x0, y0), side, side, fill=False, edgecolor=colour, linewidth=2))
    fig.text(0.085, 0.14, "two random crops,\nflips, colour changes", ha="center", fontsize=8)

    # 2. the views with their patch grids and positions
    for i, ((x0, y0, side), colour) in enumerate(zip(VIEWS, VIEW_COLOURS)):
        crop = image[y0:y0 + side, x0:x0 + side]
        ax = image_axes(fig, (0.19, 0.53 - 0.45 * i, 0.1, 0.36), crop, f"view {i + 1}", edge=colour)
        step = side / GRID
        for k in range(1, GRID):
            ax.axhline(k * step - 0.5, color="white", linewidth=0.4, alpha=0.7)
            ax.axvline(k * step - 0.5, color="white", linewidth=0.4, alpha=0.7)
        arrow(fig, (0.14, 0.55), (0.19, 0.71 - 0.45 * i), colour=colour)
    fig.text(0.24, 0.005, "N patches per view, each with\nits (x, y) in the image", ha="center", fontsize=8)

    # 3. the teacher and the joint clustering
    box(fig, 0.33, 0.6, 0.12, 0.2, "teacher (EMA)\nlast-block keys\nper head")
    box(fig, 0.33, 0.2, 0.12, 0.2, "student\ntokens of\nevery view")
    for i in range(2):
        arrow(fig, (0.295, 0.71 - 0.45 * i), (0.33, 0.7), colour=VIEW_COLOURS[i])
        arrow(fig, (0.295, 0.71 - 0.45 * i), (0.33, 0.3), colour=VIEW_COLOURS[i])
    for i in range(2):
        image_axes(fig, (0.49 + 0.085 * i, 0.58, 0.075, 0.26), cluster_map(labels[i], colour_of),
                   f"view {i + 1}", edge=VIEW_COLOURS[i])
    fig.text(0.57, 0.9, "joint clustering of both views", ha="center", fontsize=10, weight="bold")
    fig.text(0.555, 0.49, "Sinkhorn-Knopp on keys\n+ positions, merge clusters\nuntil the best k",
             ha="center", va="center", fontsize=8)
    arrow(fig, (0.45, 0.7), (0.49, 0.7))

    # 4. pooling the student's tokens with the teacher's assignment
    box(fig, 0.49, 0.2, 0.16, 0.2, "pool each view's tokens\nwith the teacher's\nassignment")
    arrow(fig, (0.45, 0.3), (0.49, 0.3))
    arrow(fig, (0.635, 0.58), (0.635, 0.4))

    # 5. cluster tokens and the loss
    fig.text(0.8, 0.9, "cluster tokens", ha="center", fontsize=10, weight="bold")
    ax = fig.add_axes((0.675, 0.33, 0.3, 0.5))
    ax.set_xlim(-1.6, len(regions))
    ax.set_ylim(-0.8, 2.0)
    ax.set_aspect("equal")
    ax.axis("off")
    for i, colour in enumerate(VIEW_COLOURS):
        ax.text(-0.7, 1.2 - 1.2 * i, f"view {i + 1}", ha="right", va="center", fontsize=9, color=colour, weight="bold")
        for j, region in enumerate(regions):
            ax.add_patch(Circle((j, 1.2 - 1.2 * i), 0.28, facecolor=CLUSTER_COLOURS[colour_of[region]],
                                edgecolor="#333333"))
    for j in range(len(regions)):
        ax.annotate("", xy=(j, 0.32), xytext=(j, 0.88), arrowprops=dict(arrowstyle="<|-|>", color="#444444"))
    arrow(fig, (0.65, 0.3), (0.715, 0.47))
    fig.text(0.81, 0.2, "loss: each cluster token of one view predicts the\nsame cluster's token of the other view "
             "(teacher\ntargets, student predictions), plus DINO's loss\non the image-level [CLS] tokens",
             ha="center", va="center", fontsize=8)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("croc_method.png")),
                        help="PNG to write. Default: figures/croc_method.png.")
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
