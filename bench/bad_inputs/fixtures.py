"""The shared, read-only fixtures every case starts from, and the private copies a case edits."""

import argparse
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

VOC_NAMES = (("2007_000032", 1), ("2007_000039", 15), ("2007_000063", 7), ("2007_000068", 3))
VOC_VAL = ("2007_000039", "2007_000063")


def save_grey(path: Path, grey: np.ndarray, bits: int = 8) -> None:
    """Save an (H, W) uint8 array as a greyscale PNG, 8-bit or 16-bit (the same values x 257), whatever the name."""
    image = Image.fromarray(grey) if bits == 8 else Image.fromarray(grey.astype(np.uint16) * 257)
    image.save(path, format="PNG")


def noise_image(path: Path, h: int, w: int, seed: int, mode: str = "RGB") -> None:
    """A textured image (so that features and clusters differ between pixels); grey modes get one channel."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    if mode == "RGB":
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    elif mode in ("L", "I;16"):
        save_grey(path, grey, 8 if mode == "L" else 16)
    else:
        raise ValueError(mode)


def _grey_voc(fx_root: Path, bits: int) -> Path:
    """A VOC tree (4 trainaug, 2 val) whose images are greyscale noise, 8-bit or 16-bit (the same values x 257),
    saved as PNG files under the .jpg names the reader expects (PIL reads the content, not the name)."""
    from tests.trees import make_vocdevkit

    root = fx_root / f"voc_grey{bits}"
    base = make_vocdevkit(root, names=VOC_NAMES, val=VOC_VAL)
    for i, (name, _) in enumerate(VOC_NAMES):
        rng = np.random.default_rng(i)
        save_grey(base / "JPEGImages" / f"{name}.jpg", rng.integers(0, 256, (12, 16), dtype=np.uint8), bits)
    return root


def build_fixtures(root: Path) -> dict:
    """The shared, read-only inputs every case starts from; returns name -> path (str)."""
    return {**_checkpoints(root / "ckpt"), **_trees(root)}


def _checkpoints(ck: Path) -> dict:
    """vit_pico/8 checkpoints, usable and not, a 1-block vit_tiny/8 and a 2-block vit_small/16 (the hub's)."""
    import torch

    from models import build_backbone

    torch.manual_seed(0)
    pico = build_backbone("vit_pico", patch_size=8).state_dict()
    args = argparse.Namespace(arch="vit_pico", patch_size=8, out_dim=64, out_dim_c=32, n_tokens=5)

    def full(state, arch_args=args):
        teacher = {f"backbone.{k}": v for k, v in state.items()}
        return {"teacher": teacher, "student": {f"module.{k}": v + 0.01 for k, v in teacher.items()},
                "epoch": 3, "args": arch_args}

    keys = sorted(pico)
    extra = full(pico)  # every tensor plus a head and a stray entry
    extra["teacher"]["head.last_layer.weight"] = torch.zeros(4, 4)
    extra["teacher"]["backbone.unused_buffer"] = torch.zeros(3)
    saved = {  # built in this order: the random weights depend on it
        "ckpt": ("checkpoint.pth", full(pico)),
        "bare": ("bare_backbone.pth", pico),
        "noargs": ("no_args.pth", {k: v for k, v in full(pico).items() if k != "args"}),
        # trained at 64 px crops: an 8x8 position grid
        "grid64": ("grid64.pth", full(build_backbone("vit_pico", patch_size=8, img_size=64).state_dict())),
        "partial1": ("one_tensor.pth", {"teacher": {"backbone.cls_token": pico["cls_token"]}, "args": args}),
        "partial_half": ("half.pth", {"teacher": {f"backbone.{k}": pico[k] for k in keys[: len(keys) // 2]},
                                      "args": args}),
        "extra_keys": ("extra_keys.pth", extra),
        "tiny": ("vit_tiny8.pth", full(build_backbone("vit_tiny", patch_size=8, depth=1).state_dict(),
                                       argparse.Namespace(arch="vit_tiny", patch_size=8))),
        # a diverged run: NaN weights
        "nan": ("nan_weights.pth", full({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                         for k, v in pico.items()})),
        # the released layout's names, 2 blocks (the hub's vit_small)
        "vits": ("vits16_2blocks.pth", full(build_backbone("vit_small", patch_size=16, depth=2).state_dict(),
                                            argparse.Namespace(arch="vit_small", patch_size=16))),
    }
    ck.mkdir(parents=True)
    fx = {key: str(ck / name) for key, (name, _) in saved.items()}
    for key, (_, obj) in saved.items():
        torch.save(obj, fx[key])
    data = Path(fx["ckpt"]).read_bytes()
    for key, name, content in (("text", "notes.txt", b"a text file, not a checkpoint\n"), ("empty", "empty.pth", b""),
                               ("truncated", "truncated.pth", data[: len(data) // 2])):
        fx[key] = str(ck / name)
        Path(fx[key]).write_bytes(content)
    return fx


def _trees(root: Path) -> dict:
    """VOC (colour, 8-bit and 16-bit grey), COCO and DAVIS trees, three images and a training log."""
    from tests.trees import make_coco, make_davis, make_vocdevkit, save_png

    fx = {}
    fx["voc"] = str(root / "voc")
    make_vocdevkit(root / "voc", names=VOC_NAMES, val=VOC_VAL)
    for i, (name, _) in enumerate(VOC_NAMES):
        noise_image(root / "voc" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{name}.jpg", 12, 16, i)
    fx["voc_grey8"] = str(_grey_voc(root, 8))
    fx["voc_grey16"] = str(_grey_voc(root, 16))
    fx["coco"] = str(root / "coco")
    make_coco(root / "coco", n_images=3, layout="leopart")
    fx["davis"] = str(root / "davis")
    make_davis(root / "davis", seqs=("bike", "dog"), n_frames=4)
    for seq in ("bike", "dog"):
        for t in range(4):
            noise_image(root / "davis" / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", 8, 10, 10 * t + len(seq))
    # an 11-frame sequence: file-name order and numeric order differ once the names lose their zero padding
    fx["davis_long"] = str(root / "davis_long")
    make_davis(root / "davis_long", seqs=("walk",), n_frames=11)
    for t in range(11):
        noise_image(root / "davis_long" / "JPEGImages" / "480p" / "walk" / f"{t:05d}.jpg", 8, 10, t)
        mask = np.zeros((8, 10), np.uint8)
        mask[2:6, (t % 7):(t % 7) + 3] = 1
        save_png(root / "davis_long" / "Annotations" / "480p" / "walk" / f"{t:05d}.png", mask, palette=True)
    fx["image"] = str(root / "photo.jpg")
    noise_image(Path(fx["image"]), 40, 48, 7)
    fx["image_grey8"] = str(root / "grey8.png")
    noise_image(Path(fx["image_grey8"]), 40, 48, 8, "L")
    fx["image_grey16"] = str(root / "grey16.png")
    noise_image(Path(fx["image_grey16"]), 40, 48, 8, "I;16")
    fx["log"] = str(root / "run")
    _fabricate_log(Path(fx["log"]))
    return fx


def _fabricate_log(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"train_loss": 9.0 - e, "train_ent": 4.0, "train_ent_batch": 5.0, "train_kl": 0.5, "train_lr": 1e-3,
              "train_mean_k": 3.0, "epoch": e} for e in range(n)]
    (folder / "log.txt").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "args.json").write_text(json.dumps({"out_dim": 256, "out_dim_c": 64, "arch": "vit_pico"}))


def private(fx: dict, case_dir: Path, key: str) -> Path:
    """A copy of fixture ``key`` under the case's own input folder (hashed before and after the run)."""
    src = Path(fx[key])
    dst = case_dir / "in" / src.name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return dst


def voc_base(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


def with_copy(key: str, edit: Callable[[Path], None] | None = None, inside: Callable[[Path], Path] = lambda r: r,
              as_key: str = "") -> Callable:
    """Setup: a private copy of fixture ``key``, edited by ``edit`` (given ``inside(copy)``); the placeholder
    ``{as_key or key}`` then names the copy."""
    def setup(case_dir, fx):
        root = private(fx, case_dir, key)
        if edit is not None:
            edit(inside(root))
        return {as_key or key: str(root)}
    return setup


def with_voc(edit: Callable[[Path], None]) -> Callable:
    """Setup: a private VOC tree, ``edit`` given its VOCdevkit/VOC2012 folder."""
    return with_copy("voc", edit, voc_base)


def make_file(name: str, content: bytes | str = "x") -> Callable:
    """Setup: a file ``<case>/<name>`` (placeholder {file})."""
    def setup(case_dir, fx):
        path = case_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return {"file": str(path)}
    return setup


def make_dir(name: str) -> Callable:
    """Setup: a folder ``<case>/<name>`` (placeholder {folder})."""
    def setup(case_dir, fx):
        path = case_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return {"folder": str(path)}
    return setup
