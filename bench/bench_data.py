"""Data-worker throughput and memory: CrOC view pair at 224 px with positions from the crop box (ours) vs. the
released way (a 10000 x 10000 x 2 float coordinate grid pushed through every crop, resize and flip).

Each method runs in its own fresh process, like one DataLoader worker (1 torch thread): it reads ~500x375 JPEGs,
decodes them and makes the view pair with positions. Reported: images/s for that worker, its peak resident memory
(ru_maxrss), its resident memory once warm and, for reference, after the imports alone, plus the positions step
alone in microseconds per view.

    python bench/bench_data.py                    # ~1 min on 2 cores
    python bench/bench_data.py --images 400 --rounds 3 --json bench_data.json
    python bench/bench_data.py --probe           # is the synthetic data hard for a random-init ViT? (~1-2 min)
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from croc_utils.synthetic import render_scene
from croc_utils.transforms import CrOCAugmentation, CropBox, sample_crop_box, view_positions


class ReleasedGridAugmentation(CrOCAugmentation):
    """The same views, with positions obtained as the release does: resampling a full-image coordinate grid."""

    def __init__(self, grid_size: int = 10000, **kwargs):
        super().__init__(**kwargs)
        x = torch.arange(grid_size).repeat(grid_size, 1)[None]  # built as in the release: int64, then float
        self.grid = torch.cat((x, x.permute(0, 2, 1)), dim=0).float()  # (2, grid, grid): (x, y) of every pixel
        self._image_size = (0, 0)

    def __call__(self, img, generator=None, return_params=False):
        self._image_size = img.size
        return super().__call__(img, generator, return_params)

    def view_positions(self, box: CropBox, flip: bool, size: int):
        width, height = self._image_size
        grid = self.grid[:, :height, :width]
        pixel_map = TF.resized_crop(
            grid, box.top, box.left, box.height, box.width, [size, size], TF.InterpolationMode.BICUBIC
        )
        if flip:
            pixel_map = TF.hflip(pixel_map)
        patch_pos = F.avg_pool2d(pixel_map[None], self.patch_size)[0].flatten(1).T  # (N, 2)
        return pixel_map, patch_pos


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def make_jpegs(folder: str, count: int) -> list[str]:
    """`count` 500x375 JPEGs (quality 90) of synthetic scenes."""
    paths = []
    for k in range(count):
        image, _ = render_scene(np.random.default_rng(k), 500)
        path = os.path.join(folder, f"{k:03d}.jpg")
        Image.fromarray(image[:375]).save(path, quality=90)
        paths.append(path)
    return paths


def worker(method: str, files: list[str], images: int, grid_size: int) -> dict:
    """One worker's run: build the transform, warm up, then time `images` load + view-pair calls."""
    torch.set_num_threads(1)  # DataLoader workers run with one thread
    rss_before = rss_mib()  # the interpreter with torch imported
    t0 = time.perf_counter()
    aug = ReleasedGridAugmentation(grid_size) if method == "grid" else CrOCAugmentation()
    build_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)

    def item(k):
        with Image.open(files[k % len(files)]) as img:
            return aug(img.convert("RGB"), generator=gen)

    for k in range(10):
        item(k)
    t0 = time.perf_counter()
    for k in range(images):
        item(k)
    seconds = time.perf_counter() - t0
    return {
        "method": method,
        "images_per_s": images / seconds,
        "ms_per_image": 1000 * seconds / images,
        "build_s": build_s,
        "base_rss_mib": rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "warm_rss_mib": rss_mib(),
        "positions_us_per_view": positions_cost(aug, files[0]),
    }


def positions_cost(aug: CrOCAugmentation, path: str, repeats: int = 200) -> float:
    """Microseconds of the positions step alone (pixel map + patch means) for one 224 px view."""
    with Image.open(path) as img:
        aug._image_size = img.size  # only read by the grid method
        height, width = img.height, img.width
    gen = torch.Generator().manual_seed(1)
    boxes = [sample_crop_box(height, width, (0.25, 1.0), generator=gen) for _ in range(repeats)]
    t0 = time.perf_counter()
    for k, box in enumerate(boxes):
        aug.view_positions(box, k % 2 == 0, 224)
    return 1e6 * (time.perf_counter() - t0) / repeats


def agreement(files: list[str], grid_size: int) -> float:
    """Max |ours - grid| over pixels >= 4 px from a view's border, on 50 boxes (bicubic: equal up to ~0.05 px)."""
    grid_aug = ReleasedGridAugmentation(min(grid_size, 600))
    with Image.open(files[0]) as img:
        grid_aug._image_size = img.size
        height, width = img.height, img.width
    gen, worst = torch.Generator().manual_seed(2), 0.0
    for k in range(50):
        box = sample_crop_box(height, width, (0.25, 1.0), generator=gen)
        ours, _ = view_positions(box, k % 2 == 0, 224, 16)
        grid, _ = grid_aug.view_positions(box, k % 2 == 0, 224)
        worst = max(worst, float((ours - grid)[:, 4:-4, 4:-4].abs().max()))
    return worst


def synthetic_probe(num_train: int = 200, num_val: int = 80) -> dict:
    """Linear-probe mIoU on the synthetic scenes (``eval.probe``'s probe, one seed): random-init ViT-S/16 patch
    tokens vs raw patch pixels, beside an all-background prediction."""
    from croc_utils.synthetic import SYNTHETIC_CLASSES, SyntheticScenes
    from croc_utils.transforms import normalize
    from eval.metrics import confusion_matrix, segmentation_scores
    from eval.probe import ProbeConfig, cache_features, run_linear_probe
    from models import vit_small

    torch.manual_seed(0)
    names, patch = list(SYNTHETIC_CLASSES), 16

    def load(split, count):
        scenes = SyntheticScenes(split, count, 224, seed=0)
        items = [scenes[i] for i in range(count)]
        images = torch.stack([normalize(img) for img, _ in items])  # (n, 3, 224, 224)
        return images, torch.stack([torch.as_tensor(mask, dtype=torch.uint8) for _, mask in items])  # (n, 224, 224)

    (x_train, y_train), (x_val, y_val) = load("train", num_train), load("val", num_val)
    model = vit_small(patch_size=patch).eval()
    cfg = ProbeConfig(n_train=num_train, seeds=(0,))

    def tokens(x):  # (n, 384, 14, 14)
        return cache_features(model, x, batch_size=50)

    def pixels(x):  # (n, 3 * 16 * 16, 14, 14)
        return F.pixel_unshuffle(x, patch)

    def probe(features):
        return run_linear_probe(features(x_train), y_train, features(x_val), y_val, names, seed=0, cfg=cfg)["miou"]

    baseline = segmentation_scores(confusion_matrix(torch.zeros_like(y_val), y_val, len(names)), names)["miou"]
    return {"all_background": baseline, "raw_patch_pixels": probe(pixels), "random_vit_small": probe(tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="Timed images per run.")
    parser.add_argument("--rounds", type=int, default=2, help="Runs per method (best kept; the machine is shared).")
    parser.add_argument("--grid_size", type=int, default=10000, help="Side of the released coordinate grid.")
    parser.add_argument("--json", default="", help="Also write the results to this JSON file.")
    parser.add_argument("--probe", action="store_true", help="Instead: linear-probe mIoU on the synthetic scenes.")
    parser.add_argument("--child", choices=["ours", "grid"], help=argparse.SUPPRESS)
    parser.add_argument("--files_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        for name, value in synthetic_probe().items():
            print(f"synthetic val pixel mIoU, linear probe on {name}: {100 * value:.1f}%")
        return
    if args.child:
        files = sorted(os.path.join(args.files_dir, f) for f in os.listdir(args.files_dir))
        print(json.dumps(worker(args.child, files, args.images, args.grid_size)))
        return
    with tempfile.TemporaryDirectory() as folder:
        files = make_jpegs(folder, 16)
        results = {}
        for _ in range(args.rounds):
            for method in ("ours", "grid"):  # interleaved, so both see the same machine load
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    method,
                    "--files_dir",
                    folder,
                    "--images",
                    str(args.images),
                    "--grid_size",
                    str(args.grid_size),
                ]
                run = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                best = results.get(method)
                if best is None or run["images_per_s"] > best["images_per_s"]:
                    results[method] = run
        diff = agreement(files, args.grid_size)
    print(f"view pair at 224 px, 500x375 JPEGs, one worker (1 thread), best of {args.rounds} x {args.images} images")
    print("| method | images/s | ms/image | positions us/view | RSS MiB: imports / peak / warm | build s |")
    print("|---|---|---|---|---|---|")
    for r in results.values():
        print(
            f"| {r['method']} | {r['images_per_s']:.1f} | {r['ms_per_image']:.2f} | {r['positions_us_per_view']:.0f} "
            f"| {r['base_rss_mib']:.0f} / {r['peak_rss_mib']:.0f} / {r['warm_rss_mib']:.0f} | {r['build_s']:.2f} |"
        )
    print(f"max |ours - grid| at >= 4 px from the border: {diff:.3f} px")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "max_abs_diff_px": diff, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
