"""Batched photometric augmentation (croc_utils.photometric) against the per-image PIL path (transforms.apply_colour).

Two reports:
1. Agreement, per op: mean and max |difference| in grey levels (0..255) between the PIL path's uint8 output and the
   batched path's float output x 255, for the same parameters, on 96 px crops of one image (`--image`, default a
   synthetic scene). The batched path does not round to uint8 between ops and blurs with a true Gaussian.
2. Speed: ms per batch of `apply_photometric` (uint8 batch in, normalised float out) against the PIL path summed over
   the batch's images (apply_colour + to_tensor + normalize), with the same drawn parameters.

    PYTHONPATH=$PWD python bench/bench_photometric.py                       # CPU, 1 torch thread
    PYTHONPATH=$PWD python bench/bench_photometric.py --image photo.jpg --threads 2
    PYTHONPATH=$PWD python bench/bench_photometric.py --device cuda --cases 256x224 1280x96 --repeats 20
"""

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from croc_utils.colour import BLUR_KERNEL_SIZE, ColourParams, pack_colour_params
from croc_utils.photometric import apply_photometric
from croc_utils.synthetic import render_scene
from croc_utils.transforms import (
    LOCAL_COLOUR,
    VIEW1_COLOUR,
    VIEW2_COLOUR,
    apply_colour,
    normalize,
    sample_colour_params,
)

ORDER = (0, 1, 2, 3)


def get_args():
    parser = argparse.ArgumentParser("bench_photometric", description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=None, help="RGB image file (default: a synthetic 500 px scene)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    parser.add_argument("--cases", nargs="+", default=["32x96", "8x224"], help="BxS: B views of S px per batch")
    parser.add_argument("--skip_agreement", action="store_true")
    return parser.parse_args()


def load_image(path: str | None) -> Image.Image:
    if path is None:
        return Image.fromarray(render_scene(np.random.default_rng(0), 500)[0])
    with Image.open(path) as img:
        return img.convert("RGB")


def crops(image: Image.Image, count: int, size: int, seed: int = 0) -> list[Image.Image]:
    """`count` random square crops of the image resized to `size` (bicubic)."""
    rng = np.random.default_rng(seed)
    side = min(image.size) // 2
    out = []
    for _ in range(count):
        left, top = rng.integers(0, image.width - side + 1), rng.integers(0, image.height - side + 1)
        out.append(image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side)))
    return out


def to_uint8_batch(views: list[Image.Image]) -> torch.Tensor:
    return torch.stack([TF.pil_to_tensor(v) for v in views])  # (B, 3, S, S) uint8


PIL_JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
MARGIN = BLUR_KERNEL_SIZE // 2  # pixels from the border where the blurs' border modes differ


def single_jitter(k: int, factor: float) -> ColourParams:
    factors = tuple(factor if i == k else (1.0, 1.0, 1.0, 0.0)[i] for i in range(4))
    return ColourParams(factors, ORDER, False, None, False)


def op_cases() -> dict[str, list[ColourParams]]:
    """One-op parameter sets across each op's released range, plus full draws of the three pipelines."""
    steps = np.linspace(0, 1, 8)  # 8 factors per op, none the identity
    gen = torch.Generator().manual_seed(0)
    return {
        "brightness .6-1.4": [single_jitter(0, 0.6 + 0.8 * f) for f in steps],
        "contrast .6-1.4": [single_jitter(1, 0.6 + 0.8 * f) for f in steps],
        "saturation .8-1.2": [single_jitter(2, 0.8 + 0.4 * f) for f in steps],
        "hue -.1-.1": [single_jitter(3, -0.1 + 0.2 * f) for f in steps],
        "grayscale": [ColourParams(None, ORDER, True, None, False)],
        "blur sigma .1": [ColourParams(None, ORDER, False, 0.1, False)],
        "blur sigma .5": [ColourParams(None, ORDER, False, 0.5, False)],
        "blur sigma 1.0": [ColourParams(None, ORDER, False, 1.0, False)],
        "blur sigma 2.0": [ColourParams(None, ORDER, False, 2.0, False)],
        "solarize": [ColourParams(None, ORDER, False, None, True)],
        "view 1 draws": [sample_colour_params(VIEW1_COLOUR, gen) for _ in range(16)],
        "view 2 draws": [sample_colour_params(VIEW2_COLOUR, gen) for _ in range(16)],
        "local draws": [sample_colour_params(LOCAL_COLOUR, gen) for _ in range(16)],
    }


def pil_op_alone(view: Image.Image, params: ColourParams) -> Image.Image:
    """A single jitter op through its PIL function alone; apply_colour also runs the other three, and its
    identity hue shift is PIL's 8-bit HSV round trip, which moves values by itself."""
    if params.jitter is not None:
        changed = [k for k in range(4) if params.jitter[k] != (1.0, 1.0, 1.0, 0.0)[k]]
        if len(changed) == 1:
            return PIL_JITTER[changed[0]](view, params.jitter[changed[0]])
    return apply_colour(view, params)


def agreement(image: Image.Image, device: torch.device) -> None:
    views = crops(image, 16, 96)
    batch = to_uint8_batch(views).to(device)
    print("\n=== |PIL path - batched path| in grey levels (0..255), 16 crops of 96 px; batched output not rounded ===")
    header = ("apply_colour mean", "max", "PIL op alone mean", "max", f"interior max (>= {MARGIN} px in)")
    print(f"{'op':20s} " + " ".join(f"{h:>{len(h) + 1}s}" for h in header))
    for name, param_list in op_cases().items():
        full, alone = [], []
        for params in param_list:
            ours = apply_photometric(batch, pack_colour_params([params] * len(views)), (0, 0, 0), (1, 1, 1))
            ours = ours.cpu() * 255
            full.append((ours - to_uint8_batch([apply_colour(v, params) for v in views]).float()).abs())
            alone.append((ours - to_uint8_batch([pil_op_alone(v, params) for v in views]).float()).abs())
        full, alone = torch.stack(full), torch.stack(alone)
        interior = alone[..., MARGIN:-MARGIN, MARGIN:-MARGIN].max()
        values = (full.mean(), full.max(), alone.mean(), alone.max(), interior)
        print(f"{name:20s} " + " ".join(f"{v:>{len(h) + 1}.2f}" for v, h in zip(values, header)))


def timed(fn, repeats: int, sync) -> float:
    """Median milliseconds of `repeats` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def pil_path(views: list[Image.Image], params: list[ColourParams]) -> list[torch.Tensor]:
    return [normalize(apply_colour(view, p)) for view, p in zip(views, params)]


def speed(image: Image.Image, device: torch.device, cases: list[str], repeats: int) -> None:
    """Each case 'BxS': B views of S px, LOCAL_COLOUR draws when S < 224, else alternating view 1 / view 2 draws."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(1)
    print(f"\n=== ms per batch, {device}, {torch.get_num_threads()} torch thread(s), median of {repeats} ===")
    for case in cases:
        batch_size, size = (int(v) for v in case.split("x"))
        pipelines = [LOCAL_COLOUR] if size < 224 else [VIEW1_COLOUR, VIEW2_COLOUR]
        views = crops(image, batch_size, size, seed=batch_size)
        params = [sample_colour_params(pipelines[k % len(pipelines)], gen) for k in range(batch_size)]
        batch, packed = to_uint8_batch(views).to(device), pack_colour_params(params).to(device)
        if device.type == "cuda":
            check_on_cuda(batch, packed)
        pil_ms = timed(partial(pil_path, views, params), repeats, sync)
        ours_ms = timed(partial(apply_photometric, batch, packed), repeats, sync)
        label = "local" if size < 224 else "view 1 + view 2"
        print(f"{batch_size} x 3 x {size} x {size} ({label}): PIL, image by image {pil_ms:9.1f} ms   batched "
              f"{ours_ms:8.2f} ms")  # fmt: skip


def check_on_cuda(batch: torch.Tensor, packed: torch.Tensor) -> None:
    """No host sync (CUDA's sync debug mode raises on one), and the same numbers as on the CPU."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = apply_photometric(batch, packed)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    diff = (out.cpu() - apply_photometric(batch.cpu(), packed.cpu())).abs().max()
    print(f"  cuda: no host sync; max |cuda - cpu| = {diff:.2e} (normalised units)")


def main():
    args = get_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    image = load_image(args.image)
    if not args.skip_agreement:
        agreement(image, device)
    speed(image, device, args.cases, args.repeats)
    print("(timings on a shared CPU are noisy; the PIL path runs one image at a time in one thread)")


if __name__ == "__main__":
    main()
