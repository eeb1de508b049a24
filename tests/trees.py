"""Miniature dataset trees for the evaluation tests (not a test module)."""

import numpy as np
from PIL import Image

from eval.video_segmentation import davis_palette


def save_jpg(path, h=12, w=16, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path)


def save_png(path, mask, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(mask.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        img.putpalette(davis_palette().ravel().tolist())
    img.save(path)


def make_davis(root, seqs=("bike", "dog"), n_frames=3):
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(seqs) + "\n")
    for seq in seqs:
        for t in range(n_frames):
            save_jpg(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", h=8, w=10)
            mask = np.zeros((8, 10), np.uint8)
            mask[1:4, t:t + 3] = 1
            mask[5:7, 5:9] = 2
            save_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", mask, palette=True)
