"""Picture of the clusters CrOC finds jointly across two views of one image, with last-layer attention maps.

docs/algorithm.md sections 1 and 3 (the views, their positions and the teacher-side clustering). The
backbone runs on both views; ``croc_utils.clustering.cluster_views`` clusters the patch tokens of the two views
together for every head; a token's colour is its cluster, so the same colour in both views is the same cluster.
Each row is one head: view 1 and view 2 with their clusters, then the CLS-token attention of that head in both views.

    python -m eval.visualize_clusters --pretrained_weights croc_coco.pth --image photo.jpg --output clusters.png
    python -m eval.visualize_clusters --arch vit_tiny --output figures/clusters_synthetic.png   # synthetic sample
"""

import argparse
from dataclasses import fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from croc_utils.atomic_io import atomic_write
from croc_utils.checkpoint import load_checkpoint, saved_args
from croc_utils.cli import OneLineErrorParser, UsageError, bool_flag, bounded, output_file, positive_int, run_cli
from croc_utils.clustering import ClusteringConfig, cluster_views
from croc_utils.colour import IMAGENET_MEAN, IMAGENET_STD
from croc_utils.synthetic import SCENE_STYLES, SyntheticScenes
from croc_utils.transforms import CrOCAugmentation
from eval.features import add_backbone_args, check_input_size
from eval.seg_datasets import DataError, read_image
from models.pretrained import load_backbone

CLUSTER_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                            [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
                           dtype=np.float32)
# Anchor colours of a dark-to-bright map for the attention tiles (black, purple, orange, yellow).
HEAT_ANCHORS = np.array([[0, 0, 4], [120, 28, 109], [237, 105, 37], [252, 255, 164]], dtype=np.float32)


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser("visualize_clusters", description=__doc__.split("\n")[0])
    add_backbone_args(parser)
    data = parser.add_argument_group("image and views")
    data.add_argument("--image", default="", type=str, help="Image to draw; empty (default): a synthetic val scene.")
    data.add_argument("--synthetic_size", default=224, type=bounded(int, 16),
                      help="Side of the synthetic scene. Default: 224.")
    data.add_argument("--synthetic_style", default="default", choices=list(SCENE_STYLES),
                      help="Layout of the synthetic scene (croc_utils.synthetic.SCENE_STYLES). Default: default.")
    data.add_argument("--global_crops_size", default=224, type=positive_int,
                      help="Side of the two views. Default: 224.")
    data.add_argument("--global_crops_scale", default=(0.25, 1.0), type=float, nargs=2,
                      help="Area range of the view crops. Default: 0.25 1.0.")
    data.add_argument("--colour_aug", default=False, type=bool_flag,
                      help="Apply the training colour pipeline to the views (default false: clean crops).")
    clustering = parser.add_argument_group("clustering")
    clustering.add_argument("--head", default=-1, type=int,
                            help="Head to draw; -1 (default): every head, one row each.")
    for setting in fields(ClusteringConfig):  # the training flags of the same names
        clustering.add_argument(f"--{setting.name}", default=None,
                                type=bool_flag if setting.type is bool else setting.type,
                                help=f"Default: the checkpoint's own (its saved args), else {setting.default}.")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", default=0, type=int, help="Seed of the views and of the clustering seeds. Default: 0.")
    run.add_argument("--output", default="clusters.png", type=str,
                     help="Picture to write (.png, .jpg, ...; a folder: clusters.png in it; no extension: .png "
                          "added). Default: clusters.png.")
    return parser


def load_image(args) -> Image.Image:
    """The ``--image`` file as 8-bit RGB (16-bit greyscale scaled, not clipped), or the first synthetic val scene."""
    if args.image:
        try:
            return read_image(args.image)
        except DataError as err:
            raise UsageError(f"--image {err}") from None

    return SyntheticScenes("val", num_images=1, size=args.synthetic_size, seed=args.seed,
                           style=args.synthetic_style)[0][0]


def clustering_config(checkpoint: dict, args) -> ClusteringConfig:
    """The run's own clustering settings (the checkpoint's saved args; released defaults without them), with the
    flags given on this command line on top."""
    saved = saved_args(checkpoint)
    cfg = ClusteringConfig.from_args(saved) if saved is not None else ClusteringConfig()
    given = {f.name: getattr(args, f.name) for f in fields(ClusteringConfig) if getattr(args, f.name) is not None}
    return replace(cfg, **given)


def make_views(image: Image.Image, args, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two CrOC views (2, 3, S, S) and their patch positions (1, 2N, 2), view 1's N patches first."""
    aug = CrOCAugmentation(tuple(args.global_crops_scale), args.global_crops_size, args.patch_size,
                           colour=args.colour_aug)
    sample = aug(image, generator=generator)
    views = torch.stack(sample["crops"][:2])
    positions = torch.cat(sample["patch_positions"][:2])[None]
    return views, positions


@torch.no_grad()
def clusters_and_attention(model, views: torch.Tensor, positions: torch.Tensor, cfg: ClusteringConfig, *,
                           device, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joint clustering of the two views and the CLS attention of every head.

    Returns:
        clusters (2, H, h, w) long, the cluster of each token (same id across views = same cluster);
        attention (2, H, h, w), last-block CLS-to-patch attention; n_clusters (H,) chosen k per head.
    """
    views, positions = views.to(device), positions.to(device)
    out = model(views)
    n_heads = out.keys.shape[1]
    result = cluster_views(out.keys, out.tokens, positions, cfg, generator=generator)
    h = w = views.shape[-1] // model.patch_size
    clusters = result.assignments.argmax(-1).reshape(2, n_heads, h, w)  # (2, H, N, kmax) -> token's cluster
    attention = model.get_last_selfattention(views)[:, :, 0, 1:].reshape(2, n_heads, h, w)
    return clusters.cpu(), attention.cpu(), result.n_clusters.cpu()


def denormalize(view: torch.Tensor) -> np.ndarray:
    """(3, S, S) normalised view -> (S, S, 3) float RGB in [0, 255]."""
    rgb = view.permute(1, 2, 0) * torch.tensor(IMAGENET_STD) + torch.tensor(IMAGENET_MEAN)
    return (rgb.clamp(0, 1) * 255).numpy()


def cluster_tile(rgb: np.ndarray, clusters: torch.Tensor, alpha: float = 0.55) -> Image.Image:
    """View (S, S, 3) blended with its token clusters (h, w) upsampled (nearest) to the view size."""
    up = F.interpolate(clusters[None, None].float(), size=rgb.shape[:2], mode="nearest")[0, 0].long().numpy()
    colours = CLUSTER_COLOURS[up % len(CLUSTER_COLOURS)]
    return Image.fromarray(((1 - alpha) * rgb + alpha * colours).astype(np.uint8))


def heat_tile(attention: torch.Tensor, size: int) -> Image.Image:
    """Attention (h, w) min-max scaled, coloured with HEAT_ANCHORS and upsampled (nearest) to size x size."""
    a = attention - attention.min()
    a = (a / a.max().clamp_min(1e-12)).numpy() * (len(HEAT_ANCHORS) - 1)
    lo = np.floor(a).astype(int).clip(0, len(HEAT_ANCHORS) - 2)
    frac = (a - lo)[..., None]
    rgb = (1 - frac) * HEAT_ANCHORS[lo] + frac * HEAT_ANCHORS[lo + 1]
    return Image.fromarray(rgb.astype(np.uint8)).resize((size, size), Image.NEAREST)


def render(views: torch.Tensor, clusters: torch.Tensor, attention: torch.Tensor, n_clusters: torch.Tensor,
           heads: list[int]) -> Image.Image:
    """Grid: one row per head of [view 1 clusters, view 2 clusters, view 1 attention, view 2 attention]."""
    size, label_h, gap = views.shape[-1], 14, 4
    rgb = [denormalize(v) for v in views]
    canvas = Image.new("RGB", (4 * size + 5 * gap, len(heads) * (size + label_h + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for row, head in enumerate(heads):
        tiles = [cluster_tile(rgb[m], clusters[m, head]) for m in range(2)]
        tiles += [heat_tile(attention[m, head], size) for m in range(2)]
        top = gap + row * (size + label_h + gap)
        for col, (tile, name) in enumerate(zip(tiles, ("view 1", "view 2", "attn 1", "attn 2"))):
            left = gap + col * (size + gap)
            draw.text((left, top), f"head {head} {name}" + (f" k={int(n_clusters[head])}" if col < 2 else ""),
                      fill="black")
            canvas.paste(tile, (left, top + label_h))
    return canvas


def picture_formats() -> set[str]:
    """File extensions PIL can write."""
    Image.init()
    return {ext.lstrip(".").lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def checked_config(checkpoint: dict, args) -> ClusteringConfig:
    """``clustering_config`` with its settings checked against the views: a bad one is a one-line error."""
    try:  # ClusteringConfig's checks name the flag; nothing else runs here
        cfg = clustering_config(checkpoint, args)
        cfg.check_patches((args.global_crops_size // args.patch_size) ** 2)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return cfg


def main(args: argparse.Namespace) -> str:
    check_input_size(args.global_crops_size, args.patch_size, "--global_crops_size")
    low, high = args.global_crops_scale
    if not 0 < low <= high <= 1:
        raise UsageError(f"--global_crops_scale {low:g} {high:g} must be two numbers with 0 < min <= max <= 1")
    inputs = {"--image": args.image, "--pretrained_weights": args.pretrained_weights}
    output = output_file(args.output, default_name="clusters.png", formats=picture_formats(), inputs=inputs)
    torch.manual_seed(args.seed)  # a random-init backbone is then reproducible too
    generator = torch.Generator().manual_seed(args.seed)
    checkpoint = load_checkpoint(args.pretrained_weights) if args.pretrained_weights else {}
    cfg = checked_config(checkpoint, args)
    model = load_backbone(args.arch, args.patch_size, args.pretrained_weights, args.checkpoint_key, args.device,
                          checkpoint=checkpoint)
    if not -1 <= args.head < model.num_heads:
        raise UsageError(f"--head {args.head} out of range for {model.num_heads} heads (-1 = all)")
    views, positions = make_views(load_image(args), args, generator)
    device_gen = torch.Generator(device=args.device).manual_seed(args.seed)
    clusters, attention, n_clusters = clusters_and_attention(model, views, positions, cfg, device=args.device,
                                                             generator=device_gen)
    heads = list(range(model.num_heads)) if args.head < 0 else [args.head]
    picture = render(views, clusters, attention, n_clusters, heads)
    atomic_write(str(output), lambda f: picture.save(f, format=Image.registered_extensions()[output.suffix.lower()]),
                 size=3 * picture.width * picture.height)
    print(f"wrote {output} (chosen k per head: {n_clusters.tolist()}; {cfg})")
    return str(output)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
