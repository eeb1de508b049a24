"""Miniature dataset trees for the evaluation tests (not a test module)."""

import json

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


def blank_first_annotation(root, seq):
    """Make the first annotation of a ``make_davis`` sequence hold only background and void (255); its objects
    stay in the later frames."""
    mask = np.zeros((8, 10), np.uint8)
    mask[0, :] = 255
    save_png(root / "Annotations" / "480p" / seq / "00000.png", mask, palette=True)


# ===== COCO-Things / COCO-Stuff =====

# Miniatures of the official category lists (ids and super-categories as in panoptic_val2017.json and
# stuff_val2017.json).
PANOPTIC_CATEGORIES = [
    {"supercategory": "person", "isthing": 1, "id": 1, "name": "person"},
    {"supercategory": "vehicle", "isthing": 1, "id": 3, "name": "car"},
    {"supercategory": "animal", "isthing": 1, "id": 18, "name": "dog"},
    {"supercategory": "kitchen", "isthing": 1, "id": 44, "name": "bottle"},
    {"supercategory": "furniture", "isthing": 1, "id": 62, "name": "chair"},
    {"supercategory": "indoor", "isthing": 1, "id": 90, "name": "toothbrush"},
    {"supercategory": "textile", "isthing": 0, "id": 92, "name": "banner"},
    {"supercategory": "wall", "isthing": 0, "id": 199, "name": "wall-other-merged"},
]
STUFF_CATEGORIES = [
    {"supercategory": "building", "id": 96, "name": "building-other"},
    {"supercategory": "ceiling", "id": 102, "name": "ceiling-other"},
    {"supercategory": "food-stuff", "id": 122, "name": "fruit"},
    {"supercategory": "sky", "id": 157, "name": "sky-other"},
    {"supercategory": "water", "id": 178, "name": "water-other"},
    {"supercategory": "window", "id": 181, "name": "window-other"},
    {"supercategory": "other", "id": 183, "name": "other"},
]
COCO_THINGS_MASK = np.array([[0, 1, 3, 18], [44, 62, 90, 92], [199, 1, 1, 0]], dtype=np.uint8)
COCO_STUFF_MASK = np.array([[0, 96, 102, 122], [157, 178, 181, 183], [0, 0, 96, 96]], dtype=np.uint8)

# Where each file goes, relative to the data root: the authors' evaluation fork (the official zips unzipped into
# folders named after them) and Leopart.
COCO_LAYOUTS = {
    "fork": {"images": "images/{split}2017",
             "things": "annotations/panoptic_annotations_trainval2017/semantic_segmentation_{split}2017",
             "things_json": "annotations/panoptic_annotations_trainval2017/annotations/panoptic_{split}2017.json",
             "stuff": "annotations/stuff_annotations_trainval2017/annotations/stuff_{split}2017_pixelmaps",
             "stuff_json": "annotations/stuff_annotations_trainval2017/annotations/stuff_{split}2017.json"},
    "leopart": {"images": "coco/images/{split}2017",
                "things": "annotations/panoptic_annotations/semantic_segmentation_{split}2017",
                "things_json": "annotations/panoptic_annotations/panoptic_val2017.json",
                "stuff": "annotations/annotations/stuff_annotations/stuff_{split}2017_pixelmaps",
                "stuff_json": "annotations/annotations/stuff_annotations/stuff_val2017.json"},
}


def make_coco(root, n_images=3, layout="leopart"):
    """A COCO tree with ``n_images`` 4x3 images per split, their things and stuff masks and category files."""
    paths = COCO_LAYOUTS[layout]
    for split in ("train", "val"):
        for key, categories in (("things_json", PANOPTIC_CATEGORIES), ("stuff_json", STUFF_CATEGORIES)):
            path = root / paths[key].format(split=split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"categories": categories, "annotations": []}))
        for i in range(n_images):
            name = f"{i:012d}"
            save_jpg(root / paths["images"].format(split=split) / f"{name}.jpg", h=3, w=4)
            save_png(root / paths["things"].format(split=split) / f"{name}.png", COCO_THINGS_MASK)
            save_png(root / paths["stuff"].format(split=split) / f"{name}.png", COCO_STUFF_MASK)
    return paths


# ===== Pascal VOC =====

def voc_mask(label, h=12, w=16):
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[2:8, 3:10] = label
    mask[2, 3:10] = 255  # object boundary, as VOC draws it
    return mask


def make_vocdevkit(root, names=(("2007_000032", 1), ("2007_000039", 15)), val=("2007_000039",)):
    """VOCdevkit/VOC2012 with 16x12 images, indexed SegmentationClass and grey SegmentationClassAug masks."""
    base = root / "VOCdevkit" / "VOC2012"
    for name, label in names:
        save_jpg(base / "JPEGImages" / f"{name}.jpg")
        save_png(base / "SegmentationClass" / f"{name}.png", voc_mask(label), palette=True)  # indexed, VOC colours
        save_png(base / "SegmentationClassAug" / f"{name}.png", voc_mask(label))  # grey ids, as SBD-aug ships
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "trainaug.txt").write_text("".join(f"{n}\n" for n, _ in names))
    (sets / "val.txt").write_text("".join(f"{n}\n" for n in val))
    return base


# ===== ADE20K =====

def ade_mask(label, h=12, w=16):
    """Left half 0 ("other", unlabelled), right half ``label``."""
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[:, w // 2:] = label
    return mask


def make_ade20k(root, train=(1, 13, 150), val=(13, 150), h=12, w=16):
    """ADEChallengeData2016 with one image per listed class: grey annotations, left half 0, right half the class."""
    base = root / "ADEChallengeData2016"
    for folder, prefix, labels in (("training", "ADE_train", train), ("validation", "ADE_val", val)):
        for i, label in enumerate(labels, 1):
            save_jpg(base / "images" / folder / f"{prefix}_{i:08d}.jpg", h, w, colour=(label, 255 - label, 90))
            save_png(base / "annotations" / folder / f"{prefix}_{i:08d}.png", ade_mask(label, h, w))
    return base
