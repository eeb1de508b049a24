"""Dataset readers on miniature trees with the real layouts and label conventions, and the paired transforms."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from eval.seg_datasets import (
    COCO_STUFF_CLASSES,
    COCO_THINGS_CLASSES,
    DAVIS2017,
    VOC_CLASSES,
    COCOSegmentation,
    VOCSegmentation,
    build_segmentation_dataset,
    coco_label_table,
)
from eval.seg_transforms import EvalTransform, LCTrainTransform, LeopartTrainTransform
from tests.trees import make_davis, save_jpg, save_png


def voc_mask(label):
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[2:8, 3:10] = label
    mask[2, 3:10] = 255  # object boundary, as VOC draws it
    return mask


# ===== VOC =====


def make_vocdevkit(root):
    base = root / "VOCdevkit" / "VOC2012"
    for name, label in (("2007_000032", 1), ("2007_000039", 15)):
        save_jpg(base / "JPEGImages" / f"{name}.jpg")
        save_png(base / "SegmentationClass" / f"{name}.png", voc_mask(label), palette=True)  # indexed, VOC colours
        save_png(base / "SegmentationClassAug" / f"{name}.png", voc_mask(label))  # grey ids, as SBD-aug ships
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "trainaug.txt").write_text("2007_000032\n2007_000039\n")
    (sets / "val.txt").write_text("2007_000039\n")
    return base


@pytest.mark.parametrize("given", ["VOCdevkit", "VOCdevkit/VOC2012", "."])
def test_voc_devkit_layout(tmp_path, given):
    make_vocdevkit(tmp_path)
    train = VOCSegmentation(tmp_path / given, "trainaug")
    val = VOCSegmentation(tmp_path / given, "val")
    assert len(train) == 2 and len(val) == 1 and train.num_classes == 21 and VOC_CLASSES[15] == "person"
    assert "SegmentationClassAug" in str(train.masks[0]) and "SegmentationClass/" in str(val.masks[0])
    image, mask = val[0]
    assert image.size == (16, 12) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 15, 255}  # palette indices are the labels; 255 kept (ignored)


def test_voc_leopart_layout(tmp_path):
    base = tmp_path / "VOCSegmentation"
    save_jpg(base / "images" / "a.jpg")
    save_png(base / "SegmentationClassAug" / "a.png", voc_mask(7))
    save_png(base / "SegmentationClass" / "a.png", voc_mask(7), palette=True)
    (base / "sets").mkdir()
    (base / "sets" / "trainaug.txt").write_text("a\n")
    (base / "sets" / "val.txt").write_text("a\n")
    for given in (tmp_path, base):
        _, mask = VOCSegmentation(given, "trainaug")[0]
        assert set(np.unique(mask).tolist()) == {0, 7, 255}
    assert len(build_segmentation_dataset("voc", str(tmp_path), "train")) == 1


def test_voc_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no VOC tree"):
        VOCSegmentation(tmp_path, "val")
    base = make_vocdevkit(tmp_path)
    (base / "SegmentationClassAug" / "2007_000039.png").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000039.png"):
        VOCSegmentation(tmp_path, "trainaug")
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCSegmentation(tmp_path, "test")
    save_png(base / "SegmentationClass" / "2007_000039.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="size mismatch.*2007_000039"):
        VOCSegmentation(tmp_path, "val")[0]
    save_png(base / "SegmentationClass" / "2007_000039.png", np.full((12, 16), 40, np.uint8))
    with pytest.raises(ValueError, match=r"unexpected mask values \[40\]"):
        VOCSegmentation(tmp_path, "val")[0]
    Image.new("RGB", (16, 12), (128, 0, 0)).save(base / "SegmentationClass" / "2007_000039.png")
    with pytest.raises(ValueError, match="RGB"):
        VOCSegmentation(tmp_path, "val")[0]


# ===== COCO =====

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


def test_coco_supercategory_tables():
    things = coco_label_table(PANOPTIC_CATEGORIES, "things")
    expect = {1: "person", 3: "vehicle", 18: "animal", 44: "kitchen", 62: "furniture", 90: "indoor"}
    for cat_id, supercat in expect.items():
        assert COCO_THINGS_CLASSES[things[cat_id]] == supercat
    assert things[1] == 9 and things[3] == 11 and things[18] == 1  # alphabetical positions
    assert things[92] == things[199] == things[0] == 255  # stuff and unlabelled ignored
    stuff = coco_label_table(STUFF_CATEGORIES, "stuff")
    assert [stuff[i] for i in (96, 102, 122, 157, 178, 181)] == [0, 1, 3, 8, 13, 14]
    assert COCO_STUFF_CLASSES[3] == "food-stuff" and stuff[183] == stuff[0] == 255
    with pytest.raises(ValueError, match="super-category"):
        coco_label_table([{"supercategory": "unknown", "id": 5, "isthing": 1}], "things")


def make_coco(root, n_images=3):
    ann = root / "annotations"
    (ann / "panoptic_annotations").mkdir(parents=True)
    (ann / "panoptic_annotations" / "panoptic_val2017.json").write_text(json.dumps(
        {"categories": PANOPTIC_CATEGORIES, "annotations": []}))
    (ann / "stuff_annotations").mkdir(parents=True)
    (ann / "stuff_annotations" / "stuff_val2017.json").write_text(json.dumps({"categories": STUFF_CATEGORIES}))
    things = np.array([[0, 1, 3, 18], [44, 62, 90, 92], [199, 1, 1, 0]], dtype=np.uint8)
    stuff = np.array([[0, 96, 102, 122], [157, 178, 181, 183], [0, 0, 96, 96]], dtype=np.uint8)
    for split in ("train", "val"):
        for i in range(n_images):
            name = f"{i:012d}"
            save_jpg(root / "images" / f"{split}2017" / f"{name}.jpg", h=3, w=4)
            save_png(ann / "panoptic_annotations" / f"semantic_segmentation_{split}2017" / f"{name}.png", things)
            save_png(ann / "stuff_annotations" / f"stuff_{split}2017_pixelmaps" / f"{name}.png", stuff)


def test_coco_things_and_stuff_masks(tmp_path):
    make_coco(tmp_path)
    things = COCOSegmentation(tmp_path, "things", "val")
    assert len(things) == 3 and things.num_classes == 12
    _, mask = things[0]
    assert mask.tolist() == [[255, 9, 11, 1], [7, 5, 6, 255], [255, 9, 9, 255]]
    stuff = build_segmentation_dataset("coco_stuff", str(tmp_path), "val")
    assert stuff.num_classes == 15
    _, mask = stuff[0]
    assert mask.tolist() == [[255, 0, 1, 3], [8, 13, 14, 255], [255, 255, 0, 0]]


def test_coco_fraction_is_a_fixed_subset(tmp_path):
    make_coco(tmp_path, n_images=10)
    a = COCOSegmentation(tmp_path, "things", "train", fraction=0.3)
    b = COCOSegmentation(tmp_path, "things", "train", fraction=0.3)
    assert len(a) == 3 and a.images == b.images
    assert len(COCOSegmentation(tmp_path, "things", "val", fraction=1.0)) == 10


def test_coco_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        COCOSegmentation(tmp_path, "things", "val")
    make_coco(tmp_path)
    missing = tmp_path / "annotations" / "stuff_annotations" / "stuff_val2017_pixelmaps" / "000000000001.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="000000000001.png"):
        COCOSegmentation(tmp_path, "stuff", "val")
    bad = tmp_path / "annotations" / "panoptic_annotations" / "semantic_segmentation_val2017" / "000000000002.png"
    save_png(bad, np.full((3, 4), 50, np.uint8))  # id 50 is not in the miniature category list
    with pytest.raises(ValueError, match="unexpected mask values"):
        COCOSegmentation(tmp_path, "things", "val")[2]
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_segmentation_dataset("coco_things", str(tmp_path / "nope"), "val")


# ===== DAVIS =====


def test_davis_reader(tmp_path):
    make_davis(tmp_path)
    davis = DAVIS2017(tmp_path)
    assert davis.sequences == ["bike", "dog"]
    frames = davis.frames("dog")
    assert [f.name for f in frames] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    mask = davis.read_mask("dog", frames[1])
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 1, 2} and mask[1, 1] == 1
    assert davis.has_all_masks("dog")


def test_davis_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="val.txt"):
        DAVIS2017(tmp_path)
    make_davis(tmp_path)
    (tmp_path / "Annotations" / "480p" / "bike" / "00000.png").unlink()
    with pytest.raises(FileNotFoundError, match="bike/00000.png"):
        DAVIS2017(tmp_path)


# ===== paired transforms =====


def two_halves(h=40, w=60):
    """Red left half labelled 1, blue right half labelled 2: colour tells which label a pixel must carry."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2:] = (0, 0, 255)
    mask = np.ones((h, w), np.uint8)
    mask[:, w // 2:] = 2
    return Image.fromarray(img), mask


@pytest.mark.parametrize("transform", [EvalTransform(32), LCTrainTransform(32), LeopartTrainTransform(32)])
def test_transforms_keep_image_and_mask_aligned(transform):
    torch.manual_seed(0)
    image, mask = two_halves()
    for _ in range(5):
        x, y = transform(image, mask)
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {1, 2, 255}
        redder = x[0] > x[2]  # normalised red channel above blue: a red pixel
        labelled = y != 255
        agree = ((redder & (y == 1)) | (~redder & (y == 2)))[labelled].float().mean()
        assert agree > 0.93  # only the resampled seam may disagree


def test_lc_transform_fills_outside_with_ignore():
    import random

    random.seed(3)
    image, mask = two_halves()
    t = LCTrainTransform(32, scales=(0.6, 0.6), degrees=(0.0, 0.0))  # zoom out: borders come from outside
    _, y = t(image, mask)
    assert (y == 255).any() and (y[16, 16] != 255)
