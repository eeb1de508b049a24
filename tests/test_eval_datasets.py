"""Dataset readers on miniature trees with the real layouts and label conventions, and the mask defects they mend
as the authors' evaluation fork does. The paired transforms are tested in test_seg_transforms.py."""

import json

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from eval.seg_datasets import (
    ADE20K_CLASSES,
    COCO_STUFF_CLASSES,
    COCO_THINGS_CLASSES,
    DAVIS2017,
    VOC_CLASSES,
    ADE20KSegmentation,
    COCOSegmentation,
    DataError,
    VOCSegmentation,
    build_segmentation_dataset,
    coco_label_table,
    mask_fix_warning,
)
from tests.trees import (
    COCO_LAYOUTS,
    COCO_STUFF_MASK,
    COCO_THINGS_MASK,
    PANOPTIC_CATEGORIES,
    STUFF_CATEGORIES,
    ade_mask,
    make_ade20k,
    make_coco,
    make_davis,
    make_vocdevkit,
    save_jpg,
    save_png,
    voc_mask,
)

# ===== VOC =====


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
    save_png(base / "SegmentationClass" / "2007_000039.png", np.full((12, 16), 40, np.uint8))
    with pytest.raises(ValueError, match=r"unexpected mask values \[40\]"):
        VOCSegmentation(tmp_path, "val")[0]
    Image.new("RGB", (16, 12), (128, 0, 0)).save(base / "SegmentationClass" / "2007_000039.png")
    with pytest.raises(ValueError, match="RGB"):
        VOCSegmentation(tmp_path, "val")[0]


def test_voc_mask_of_another_size_is_resized_to_the_image(tmp_path):
    base = make_vocdevkit(tmp_path, val=("2007_000032", "2007_000039"))
    small = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8) % 21  # 8x6 for a 16x12 image: every label doubles
    save_png(base / "SegmentationClass" / "2007_000039.png", small, palette=True)
    val = VOCSegmentation(tmp_path, "val")
    assert val.mask_fixes == {"resized": 0, "unknown_ids": 0}
    _, mask = val[1]
    # the fork's cv2.INTER_NEAREST: source index floor(dst * 6 / 12) = dst // 2, i.e. each pixel doubled
    assert mask.shape == (12, 16) and np.array_equal(mask, small.repeat(2, 0).repeat(2, 1))
    val[1], val[1], val[0]
    assert val.mask_fixes == {"resized": 1, "unknown_ids": 0}  # distinct images, however often read
    # DataLoader workers are other processes: their count must reach this one
    fresh = VOCSegmentation(tmp_path, "val", transform=lambda image, mask: mask.shape)
    shapes = list(DataLoader(fresh, batch_size=None, num_workers=1))
    assert len(shapes) == 2 and fresh.mask_fixes["resized"] == 1
    line = mask_fix_warning({"train": VOCSegmentation(tmp_path, "trainaug"), "val": fresh})
    assert line.count("\n") == 0 and "val: 1 mask(s) of another size" in line and "train" not in line
    assert mask_fix_warning({"val": VOCSegmentation(tmp_path, "trainaug")}) is None


# ===== COCO =====


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


THINGS_LABELS = [[255, 9, 11, 1], [7, 5, 6, 255], [255, 9, 9, 255]]  # worked out from the miniature lists
STUFF_LABELS = [[255, 0, 1, 3], [8, 13, 14, 255], [255, 255, 0, 0]]


@pytest.mark.parametrize("layout", sorted(COCO_LAYOUTS))
def test_coco_layouts_found_automatically(tmp_path, layout):
    paths = make_coco(tmp_path, layout=layout)
    things = COCOSegmentation(tmp_path, "things", "val")
    assert len(things) == 3 and things.num_classes == 12
    assert str(things.masks[0].parent).endswith(paths["things"].format(split="val"))
    assert str(things.images[0].parent).endswith(paths["images"].format(split="val"))
    assert things[0][1].tolist() == THINGS_LABELS
    stuff = build_segmentation_dataset("coco_stuff", str(tmp_path), "train")
    assert stuff.num_classes == 15 and len(stuff) == 3
    assert str(stuff.masks[0].parent).endswith(paths["stuff"].format(split="train"))
    assert stuff[0][1].tolist() == STUFF_LABELS


def test_coco_fraction_is_a_fixed_subset(tmp_path):
    make_coco(tmp_path, n_images=10)
    a = COCOSegmentation(tmp_path, "things", "train", fraction=0.3)
    b = COCOSegmentation(tmp_path, "things", "train", fraction=0.3)
    assert len(a) == 3 and a.images == b.images
    assert len(COCOSegmentation(tmp_path, "things", "val", fraction=1.0)) == 10


def test_coco_id_outside_the_category_list_becomes_ignore(tmp_path):
    paths = make_coco(tmp_path, layout="fork")
    for kind, mask, expect in (("things", COCO_THINGS_MASK, THINGS_LABELS), ("stuff", COCO_STUFF_MASK, STUFF_LABELS)):
        mask = mask.copy()
        mask[0, 0] = 140  # in neither miniature category list
        save_png(tmp_path / paths[kind].format(split="val") / "000000000002.png", mask)
        data = COCOSegmentation(tmp_path, kind, "val")
        labels = data[2][1].tolist()
        assert labels[0][0] == 255 and labels[0][1:] == expect[0][1:] and labels[1:] == expect[1:]
        data[0], data[2]
        assert data.mask_fixes == {"resized": 0, "unknown_ids": 1}


def test_coco_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        COCOSegmentation(tmp_path, "things", "val")
    make_coco(tmp_path)
    missing = tmp_path / "annotations" / "annotations" / "stuff_annotations" / "stuff_val2017_pixelmaps"
    (missing / "000000000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="000000000001.png"):
        COCOSegmentation(tmp_path, "stuff", "val")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_segmentation_dataset("coco_things", str(tmp_path / "nope"), "val")


# ===== ADE20K =====


@pytest.mark.parametrize("given", ["ADEChallengeData2016", "."])
def test_ade20k_layout_and_labels(tmp_path, given):
    make_ade20k(tmp_path)
    train = ADE20KSegmentation(tmp_path / given, "train")
    val = build_segmentation_dataset("ade20k", str(tmp_path / given), "val")
    assert len(train) == 3 and len(val) == 2 and train.num_classes == 151 and len(set(ADE20K_CLASSES)) == 151
    assert ADE20K_CLASSES[0] == "other" and ADE20K_CLASSES[1] == "wall" and ADE20K_CLASSES[150] == "flag"
    assert "annotations/training" in str(train.masks[0]) and "images/validation" in str(val.images[0])
    image, mask = train[1]
    assert image.size == (16, 12) and mask.dtype == np.uint8
    raw = ade_mask(13)
    assert (mask[raw == 0] == 255).all() and (mask[raw == 13] == 13).all()  # 0 ignored, 1..150 keep their ids
    assert set(np.unique(val[1][1]).tolist()) == {150, 255}


def test_ade20k_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="ADE20K train images not found.*images/training"):
        ADE20KSegmentation(tmp_path, "train")
    base = make_ade20k(tmp_path)
    missing = base / "annotations" / "validation" / "ADE_val_00000002.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ADE20KSegmentation(tmp_path, "val")
    save_png(base / "annotations" / "training" / "ADE_train_00000001.png", np.full((12, 16), 151, np.uint8))
    with pytest.raises(DataError, match="ADE_train_00000001.png: unexpected mask values \\[151\\]"):
        ADE20KSegmentation(tmp_path, "train")[0]
    with pytest.raises(ValueError, match="'train' or 'val'"):
        ADE20KSegmentation(tmp_path, "test")


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


# ===== bad input: each error names the file =====


def test_an_unreadable_image_or_mask_is_named_in_one_line(tmp_path):
    base = make_vocdevkit(tmp_path)
    image = base / "JPEGImages" / "2007_000039.jpg"
    image.write_bytes(image.read_bytes()[:200])  # an interrupted download
    with pytest.raises(DataError, match="2007_000039.jpg: unreadable image"):
        VOCSegmentation(tmp_path, "val")[0]
    loader = DataLoader(VOCSegmentation(tmp_path, "val"), num_workers=1)
    with pytest.raises(DataError) as err:  # through a worker process: still the message alone
        next(iter(loader))
    assert "\n" not in str(err.value) and "2007_000039.jpg: unreadable image" in str(err.value)
    image.write_text("<html>404</html>")
    (base / "SegmentationClass" / "2007_000039.png").write_bytes(b"")
    with pytest.raises(DataError, match="2007_000039"):
        VOCSegmentation(tmp_path, "val")[0]


def test_16_bit_images_keep_their_values(tmp_path):
    base = make_vocdevkit(tmp_path)
    grey = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) % 256
    path = base / "JPEGImages" / "2007_000039.jpg"
    Image.fromarray(grey * 257).save(path, format="PNG")  # 16-bit greyscale (mode I;16), named as VOC names it
    image, _ = VOCSegmentation(tmp_path, "val")[0]
    assert image.mode == "RGB" and np.array_equal(np.asarray(image)[..., 0], grey)  # not clipped to 255


def test_empty_lists_and_fractions_that_keep_nothing(tmp_path):
    base = make_vocdevkit(tmp_path)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(DataError, match="val.txt: the split list names no image"):
        VOCSegmentation(tmp_path, "val")
    make_coco(tmp_path / "coco", n_images=3)
    with pytest.raises(DataError, match="--coco_train_fraction 0.1 of the 3 images"):
        COCOSegmentation(tmp_path / "coco", "things", "train", fraction=0.1)


@pytest.mark.parametrize("edit, message", [
    (lambda cats: [c.pop("supercategory") for c in cats], "has no 'supercategory'"),
    (lambda cats: cats.append({"supercategory": "sky", "id": 300, "name": "far"}), "has id 300"),
    (lambda cats: cats.append({"supercategory": "sky", "id": -3, "name": "neg"}), "has id -3"),
    (lambda cats: cats[0].update(id="96"), "has id '96'"),
])
def test_category_files_are_checked(tmp_path, edit, message):
    paths = make_coco(tmp_path, n_images=1)
    json_file = tmp_path / paths["stuff_json"].format(split="val")
    data = json.loads(json_file.read_text())
    edit(data["categories"])
    json_file.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as err:
        COCOSegmentation(tmp_path, "stuff", "val")
    assert str(json_file) in str(err.value)


def test_davis_tree_is_checked_before_any_work(tmp_path):
    make_davis(tmp_path, seqs=("bike", "dog"), n_frames=3)
    lists = tmp_path / "ImageSets" / "2017" / "val.txt"
    lists.write_text("\n \n")
    with pytest.raises(DataError, match="val.txt: the sequence list names no sequence"):
        DAVIS2017(tmp_path)
    lists.write_text("bike\ndog\n")
    annotation = tmp_path / "Annotations" / "480p" / "dog" / "00001.png"
    Image.open(annotation).resize((20, 16), Image.NEAREST).save(annotation)  # Full-Resolution beside 480p frames
    with pytest.raises(DataError, match=r"dog/00001.png: 20x16 annotation for a 10x8 frame"):
        DAVIS2017(tmp_path)
    Image.open(annotation).resize((10, 8), Image.NEAREST).save(annotation)
    frame = tmp_path / "JPEGImages" / "480p" / "bike" / "00002.jpg"
    save_jpg(frame, h=16, w=20)
    with pytest.raises(DataError, match=r"bike/00002.jpg: 20x16 frame in a sequence of 10x8 frames"):
        DAVIS2017(tmp_path)
    frame.write_bytes(b"")
    with pytest.raises(DataError, match=r"bike/00002.jpg: unreadable image"):
        DAVIS2017(tmp_path)


def test_davis_masks_without_objects(tmp_path):
    make_davis(tmp_path, seqs=("bike",), n_frames=3)
    for path in (tmp_path / "Annotations" / "480p" / "bike").glob("*.png"):  # saved as black-and-white masks
        save_png(path, np.where(np.asarray(Image.open(path)) > 0, 255, 0))
    with pytest.raises(DataError, match="00000.png: the annotations of bike hold only 0 and 255"):
        DAVIS2017(tmp_path)
    for path in (tmp_path / "Annotations" / "480p" / "bike").glob("*.png"):
        save_png(path, np.zeros((8, 10)))
    with pytest.raises(DataError, match="val.txt: no listed sequence has an object"):
        DAVIS2017(tmp_path)


def test_davis_frames_without_zero_padding_keep_their_order(tmp_path):
    make_davis(tmp_path, seqs=("walk",), n_frames=12)
    for kind in ("JPEGImages", "Annotations"):
        for path in (tmp_path / kind / "480p" / "walk").iterdir():
            path.rename(path.with_name(f"{int(path.stem)}{path.suffix}"))
    assert [f.stem for f in DAVIS2017(tmp_path).frames("walk")] == [str(t) for t in range(12)]
