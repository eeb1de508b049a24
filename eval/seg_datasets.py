"""Readers for the evaluation datasets: Pascal VOC 2012, COCO-Things / COCO-Stuff, ADE20K, DAVIS-2017, synthetic
scenes.

Spec: docs/evaluation.md sections 1 (class definitions), 3 (DAVIS layout) and "Data layouts users already have".
Segmentation readers return ``(PIL RGB image, uint8 mask (H, W))`` with labels in [0, C) and 255 = ignore, or
whatever the paired ``transform(image, mask)`` returns. A missing folder, list file or mask, an empty list and an
unreadable image or mask raise an error that names the path (``MissingDataError`` / ``DataError``, which the
command-line tools print as one line). An unreadable file stops the evaluation instead of being skipped: a score
over another set of images than the benchmark's is not comparable with published ones (training, which reads a
stream of unlabelled images, counts and skips them instead). Images are read with their values' meaning kept (16-bit
and float greyscale scaled to 8 bits, ``croc_utils.datasets.to_rgb``). Two mask defects are mended as the authors'
evaluation fork mends them, and counted (``mask_fixes``) so that the caller can print one warning line per run: a
mask of another size than its image is resized (nearest, floor-index rule) to the image, and a COCO category id
missing from the category file becomes 255.
"""

import json
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from croc_utils.cli import UsageError
from croc_utils.datasets import READ_ERRORS, read_rgb
from eval.metrics import IGNORE_INDEX
from eval.seg_transforms import resize_mask

INVALID = -1  # label-table entry for a mask value the dataset must not contain

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
COCO_THINGS_CLASSES = ("accessory", "animal", "appliance", "electronic", "food", "furniture", "indoor", "kitchen",
                       "outdoor", "person", "sports", "vehicle")
COCO_STUFF_CLASSES = ("building", "ceiling", "floor", "food-stuff", "furniture-stuff", "ground", "plant",
                      "raw-material", "sky", "solid", "structural", "textile", "wall", "water", "window")
ADE20K_CLASSES = ("other", "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
                  "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
                  "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
                  "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box",
                  "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
                  "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
                  "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
                  "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair",
                  "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
                  "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
                  "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
                  "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
                  "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
                  "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
                  "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
                  "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")
DATASETS = ("voc", "coco_things", "coco_stuff", "ade20k", "synthetic")


class MissingDataError(UsageError, FileNotFoundError):
    """A dataset folder, list or file that is not there; the message names it."""


class DataError(UsageError, ValueError):
    """A dataset file that is there but cannot be used (unreadable, empty, of another size or format)."""


def _reason(err: BaseException) -> str:
    text = str(err).split("\n")[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_image(path: str | os.PathLike) -> Image.Image:
    """An image file as 8-bit RGB (``croc_utils.datasets.to_rgb``: 16-bit greyscale divided by 257, not clipped);
    DataError naming the file when it cannot be read (a truncated download, a file that is not an image)."""
    try:
        return read_rgb(path)
    except READ_ERRORS as err:
        raise DataError(f"{path}: unreadable image ({_reason(err)}); download it again or take it out of the "
                        "list") from None


def read_label_png(path: str | os.PathLike, modes: tuple[str, ...], what: str) -> np.ndarray:
    """The values (H, W) of a label PNG in one of ``modes``; DataError naming the file when it is unreadable or of
    another mode."""
    try:
        with Image.open(path) as mask:
            if mask.mode not in modes:
                raise DataError(f"{path}: {what} must be an indexed or grey PNG, got mode {mask.mode} (RGB colour "
                                "masks are not supported)")
            return np.asarray(mask)
    except READ_ERRORS as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: unreadable {what} ({_reason(err)}); download it again") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except READ_ERRORS as err:
        raise DataError(f"{path}: unreadable image ({_reason(err)}); download it again") from None


def _first_dir(root: Path, candidates: Sequence[str], what: str) -> Path:
    """First existing directory among ``root / candidate``; FileNotFoundError listing all tried paths."""
    for cand in candidates:
        if (root / cand).is_dir():
            return root / cand
    tried = ", ".join(str(root / c) for c in candidates)
    raise MissingDataError(f"{what} not found; looked for: {tried}")


def _first_file(root: Path, candidates: Sequence[str], what: str) -> Path:
    for cand in candidates:
        if (root / cand).is_file():
            return root / cand
    tried = ", ".join(str(root / c) for c in candidates)
    raise MissingDataError(f"{what} not found; looked for: {tried}")


MASK_FIXES = {"resized": "mask(s) of another size than the image resized (nearest) to it",
              "unknown_ids": "mask(s) with category ids missing from the category file (set to 255)"}


class SegmentationDataset(Dataset):
    """Image/mask pairs with a 256-entry label table mapping stored mask values to class indices (or 255).

    Subclasses fill ``images``, ``masks``, ``class_names`` and ``label_table`` (int16 (256,), INVALID for values
    that must not occur), set ``unknown_to_ignore`` when such values become 255 instead of an error (COCO), and call
    ``_track_fixes()`` once the file lists are final.
    """

    class_names: tuple[str, ...] = ()
    unknown_to_ignore = False

    def __init__(self, transform=None):
        self.transform = transform
        self.images: list[Path] = []
        self.masks: list[Path] = []
        self.label_table = np.full(256, INVALID, dtype=np.int16)
        self._fixed = torch.zeros(len(MASK_FIXES), 0, dtype=torch.uint8)

    def _track_fixes(self) -> None:
        """One flag per (kind of fix, image) in shared memory: DataLoader workers set them and the main process
        reads them (writes are idempotent, so neither a lock nor a per-epoch reset is needed)."""
        self._fixed = torch.zeros(len(MASK_FIXES), len(self.images), dtype=torch.uint8).share_memory_()

    def _flag(self, kind: str, index: int) -> None:
        self._fixed[list(MASK_FIXES).index(kind), index] = 1

    @property
    def mask_fixes(self) -> dict[str, int]:
        """Distinct images mended so far, per kind of fix (see MASK_FIXES)."""
        return {kind: int(row.sum()) for kind, row in zip(MASK_FIXES, self._fixed)}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def load_mask(self, path: Path, index: int | None = None) -> np.ndarray:
        """Mask file -> uint8 class map (H, W) through the label table."""
        raw = read_label_png(path, ("P", "L", "I", "I;16"), "mask").astype(np.int64)
        if raw.max(initial=0) > 255 or raw.min(initial=0) < 0:
            raise DataError(f"{path}: mask value {raw.max()} does not fit the 8-bit label convention")
        labels = self.label_table[raw]
        unknown = labels == INVALID
        if unknown.any():
            if not self.unknown_to_ignore:
                bad = np.unique(raw[unknown])[:10].tolist()
                raise DataError(f"{path}: unexpected mask values {bad} for {type(self).__name__}")
            labels[unknown] = IGNORE_INDEX
            if index is not None:
                self._flag("unknown_ids", index)
        return labels.astype(np.uint8)

    def __getitem__(self, index: int):
        image = read_image(self.images[index])
        mask = self.load_mask(self.masks[index], index)
        if mask.shape != (image.height, image.width):
            mask = resize_mask(mask, image.height, image.width)
            self._flag("resized", index)
        if self.transform is not None:
            return self.transform(image, mask)
        return image, mask


def mask_fixes(dataset) -> dict[str, int]:
    """The mended-mask counts of a reader, also through ``torch.utils.data.Subset`` ({} for readers that mend none;
    a dict of counts is returned as it is)."""
    if isinstance(dataset, dict):
        return dict(dataset)
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dict(getattr(dataset, "mask_fixes", {}))


def mask_fix_warning(datasets: dict) -> str | None:
    """One line summing up the masks the readers mended, e.g. for ``{"train": ..., "val": ...}``; None if none."""
    parts = [f"{name}: {count} {MASK_FIXES[kind]}" for name, ds in datasets.items()
             for kind, count in mask_fixes(ds).items() if count]
    if not parts:
        return None
    return "WARNING: mended as the authors' evaluation fork does: " + "; ".join(parts)


# ===== Pascal VOC 2012 =====

class VOCSegmentation(SegmentationDataset):
    """Pascal VOC 2012, 21 classes (background = 0), boundary 255 ignored.

    ``root`` may be a VOCdevkit tree (``VOCdevkit``, ``VOCdevkit/VOC2012`` or its parent) with ``JPEGImages/``,
    ``SegmentationClass[Aug]/`` and ``ImageSets/Segmentation/<split>.txt``, or Leopart's ``VOCSegmentation/`` with
    ``images/``, ``SegmentationClass[Aug]/`` and ``sets/<split>.txt``. ``trainaug`` reads SegmentationClassAug
    (SBD-augmented masks); other splits read SegmentationClass, or SegmentationClassAug when that is all there is.
    """

    class_names = VOC_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "trainaug", transform=None):
        super().__init__(transform)
        base, image_dir, sets_dir = self._layout(Path(root))
        list_file = sets_dir / f"{split}.txt"
        if not list_file.is_file():
            raise MissingDataError(f"VOC split list not found: {list_file}")
        mask_names = ["SegmentationClassAug"] if split == "trainaug" else ["SegmentationClass", "SegmentationClassAug"]
        mask_dir = _first_dir(base, mask_names, f"VOC masks for split {split!r}")
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        if not names:
            raise DataError(f"{list_file}: the split list names no image")
        self.images = [image_dir / f"{n}.jpg" for n in names]
        self.masks = [mask_dir / f"{n}.png" for n in names]
        _check_pairs(self.images, self.masks)
        self.label_table[: len(VOC_CLASSES)] = np.arange(len(VOC_CLASSES))
        self.label_table[IGNORE_INDEX] = IGNORE_INDEX
        self._track_fixes()

    @staticmethod
    def _layout(root: Path) -> tuple[Path, Path, Path]:
        """(base, image dir, split-list dir) for either accepted layout."""
        for base in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
            if (base / "JPEGImages").is_dir():
                return base, base / "JPEGImages", base / "ImageSets" / "Segmentation"
        for base in (root, root / "VOCSegmentation"):
            if (base / "images").is_dir():
                return base, base / "images", base / "sets"
        raise MissingDataError(f"no VOC tree under {root}: expected VOC2012/JPEGImages (VOCdevkit) or "
                                "VOCSegmentation/images (Leopart layout)")


def _check_pairs(images: list[Path], masks: list[Path]) -> None:
    """Every listed image and mask must exist; the error names the first missing file and the count."""
    for kind, paths in (("image", images), ("mask", masks)):
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingDataError(f"{len(missing)} listed {kind} file(s) missing, first: {missing[0]}")


# ===== COCO-Things / COCO-Stuff =====

def coco_label_table(categories: list[dict], kind: str, path: str | os.PathLike = "") -> np.ndarray:
    """Category id -> super-category class index (int16 (256,)), from a COCO ``categories`` list.

    things: panoptic categories with ``isthing`` 1 -> index in COCO_THINGS_CLASSES; stuff categories and 0
    (unlabelled) -> 255. stuff: COCO-Stuff categories -> index in COCO_STUFF_CLASSES; "other" (183, the merged
    things) and 0 (unlabelled) -> 255. Ids not in ``categories`` stay INVALID. A category without an integer id in
    1..254 (the values a label PNG can hold besides 0 and 255) or without a super-category is a DataError naming
    ``path``, the category file.
    """
    table = np.full(256, INVALID, dtype=np.int16)
    table[0] = table[IGNORE_INDEX] = IGNORE_INDEX
    classes = COCO_THINGS_CLASSES if kind == "things" else COCO_STUFF_CLASSES
    for cat in categories:
        cat_id, supercat = cat.get("id"), cat.get("supercategory")
        if isinstance(cat_id, bool) or not isinstance(cat_id, int) or not 0 < cat_id < IGNORE_INDEX:
            raise DataError(f"{path}: category {cat.get('name')!r} has id {cat_id!r}; COCO ids are whole numbers in "
                            f"1..{IGNORE_INDEX - 1}, the values a label PNG can hold besides 0 and {IGNORE_INDEX}")
        if not isinstance(supercat, str):
            raise DataError(f"{path}: category {cat_id} ({cat.get('name')}) has no 'supercategory'")
        if kind == "things" and not cat.get("isthing", 1) or kind == "stuff" and supercat == "other":
            table[cat["id"]] = IGNORE_INDEX
        elif supercat in classes:
            table[cat["id"]] = classes.index(supercat)
        else:
            raise DataError(f"{path}: COCO category {cat_id} ({cat.get('name')}) has super-category {supercat!r}, "
                            f"not one of the {len(classes)} {kind} classes")
    return table


class COCOSegmentation(SegmentationDataset):
    """COCO-Things (12 thing super-categories) or COCO-Stuff (15 stuff super-categories).

    Found under ``root`` in either layout (each path is looked up on its own, first match wins):

    - the authors' evaluation fork: ``images/<split>2017/``; things masks (panoptic-derived semantic PNGs holding
      category ids) in ``annotations/panoptic_annotations_trainval2017/semantic_segmentation_<split>2017/``,
      categories in ``annotations/panoptic_annotations_trainval2017/annotations/panoptic_<split>2017.json``; stuff
      pixel maps in ``annotations/stuff_annotations_trainval2017/annotations/stuff_<split>2017_pixelmaps/``,
      categories in ``.../annotations/stuff_<split>2017.json``;
    - Leopart's: ``coco/images/<split>2017/``; ``annotations/panoptic_annotations/semantic_segmentation_<split>2017/``
      with ``panoptic_val2017.json`` (or panopticapi's ``panoptic_coco_categories.json``);
      ``annotations/annotations/stuff_annotations/stuff_<split>2017_pixelmaps/`` with ``stuff_val2017.json``.

    The val json is read for both splits (train's holds the same category list and is far larger). A mask id
    missing from the category list becomes 255 and is counted (the fork does this for things; for stuff it would
    stop on an assertion). ``fraction`` < 1 keeps a fixed random subset (sorted names shuffled with ``seed``).
    """

    unknown_to_ignore = True
    FORK_PANOPTIC = "annotations/panoptic_annotations_trainval2017"
    FORK_STUFF = "annotations/stuff_annotations_trainval2017/annotations"
    THING_MASKS = (FORK_PANOPTIC + "/semantic_segmentation_{split}2017",
                   "annotations/panoptic_annotations/semantic_segmentation_{split}2017",
                   "annotations/semantic_segmentation_{split}2017")
    THING_JSONS = (FORK_PANOPTIC + "/annotations/panoptic_val2017.json",
                   FORK_PANOPTIC + "/annotations/panoptic_{split}2017.json",
                   "annotations/panoptic_annotations/panoptic_coco_categories.json",
                   "annotations/panoptic_coco_categories.json",
                   "annotations/panoptic_annotations/panoptic_val2017.json", "annotations/panoptic_val2017.json")
    STUFF_MASKS = (FORK_STUFF + "/stuff_{split}2017_pixelmaps",
                   "annotations/annotations/stuff_annotations/stuff_{split}2017_pixelmaps",
                   "annotations/stuff_annotations/stuff_{split}2017_pixelmaps",
                   "annotations/stuff_{split}2017_pixelmaps")
    STUFF_JSONS = (FORK_STUFF + "/stuff_val2017.json", FORK_STUFF + "/stuff_{split}2017.json",
                   "annotations/annotations/stuff_annotations/stuff_val2017.json",
                   "annotations/stuff_annotations/stuff_val2017.json", "annotations/stuff_val2017.json")
    IMAGES = ("images/{split}2017", "coco/images/{split}2017", "{split}2017")

    def __init__(self, root: str | os.PathLike, kind: str = "things", split: str = "train", transform=None,
                 fraction: float = 1.0, seed: int = 400):
        super().__init__(transform)
        if kind not in ("things", "stuff"):
            raise ValueError(f"COCO kind must be 'things' or 'stuff', got {kind!r}")
        if split not in ("train", "val"):
            raise ValueError(f"COCO split must be 'train' or 'val', got {split!r}")
        root = Path(root)
        self.class_names = COCO_THINGS_CLASSES if kind == "things" else COCO_STUFF_CLASSES
        masks, jsons = (self.THING_MASKS, self.THING_JSONS) if kind == "things" else (self.STUFF_MASKS,
                                                                                     self.STUFF_JSONS)
        image_dir = _first_dir(root, [c.format(split=split) for c in self.IMAGES], f"COCO {split} images")
        mask_dir = _first_dir(root, [c.format(split=split) for c in masks], f"COCO-{kind} {split} masks")
        json_file = _first_file(root, [c.format(split=split) for c in jsons], f"COCO {kind} category file")
        self.label_table = coco_label_table(_read_categories(json_file), kind, json_file)
        stems = sorted(p.stem for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not stems:
            raise DataError(f"{image_dir}: no .jpg or .png image")
        if fraction < 1.0:
            random.Random(seed).shuffle(stems)
            kept = int(len(stems) * fraction)
            if kept == 0:
                raise DataError(f"--coco_train_fraction {fraction} of the {len(stems)} images in {image_dir} keeps "
                                "none")
            stems = sorted(stems[:kept])
        mask_stems = {p.stem for p in mask_dir.iterdir() if p.suffix == ".png"}
        missing = [s for s in stems if s not in mask_stems]
        if missing:
            raise MissingDataError(f"{len(missing)} image(s) in {image_dir} have no mask, first: "
                                    f"{mask_dir / (missing[0] + '.png')}")
        suffix = {p.stem: p.name for p in image_dir.iterdir()}
        self.images = [image_dir / suffix[s] for s in stems]
        self.masks = [mask_dir / f"{s}.png" for s in stems]
        self._track_fixes()


def _read_categories(path: Path) -> list[dict]:
    """``categories`` of a COCO json (a dict with that key, or a bare list as panopticapi's categories file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable COCO json ({err})") from None
    categories = data["categories"] if isinstance(data, dict) and "categories" in data else data
    if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c for c in categories):
        raise DataError(f"{path}: no COCO 'categories' list found")
    return categories


# ===== ADE20K (SceneParse150) =====

class ADE20KSegmentation(SegmentationDataset):
    """ADE20K as the SceneParse150 benchmark: ``ADEChallengeData2016/images/{training,validation}/*.jpg`` with
    ``annotations/{training,validation}/*.png`` (grey PNGs: 0 = "other"/unlabelled, 1..150 the classes).

    151 classes as the public in-context retrieval reproduction counts them: index 0 is "other" and 1..150 keep
    their ids (ADE20K_CLASSES). Mask value 0 becomes 255 (ignored in every score); retrieval's memory reads ignore
    pixels as class 0, so "other" is a memory class that can be predicted, as there. ``root`` is the
    ``ADEChallengeData2016`` folder or its parent. Every image needs its annotation (same stem); an image folder
    without a .jpg, a missing folder or annotation raise an error naming the path.
    """

    class_names = ADE20K_CLASSES
    SPLIT_DIRS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}

    def __init__(self, root: str | os.PathLike, split: str = "train", transform=None):
        super().__init__(transform)
        if split not in self.SPLIT_DIRS:
            raise ValueError(f"ADE20K split must be 'train' or 'val', got {split!r}")
        folder = self.SPLIT_DIRS[split]
        root = Path(root)
        image_dir = _first_dir(root, [f"images/{folder}", f"ADEChallengeData2016/images/{folder}"],
                               f"ADE20K {split} images")
        mask_dir = image_dir.parent.parent / "annotations" / folder
        if not mask_dir.is_dir():
            raise MissingDataError(f"ADE20K {split} annotations not found: {mask_dir}")
        self.images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not self.images:
            raise DataError(f"{image_dir}: no .jpg image")
        self.masks = [mask_dir / f"{p.stem}.png" for p in self.images]
        _check_pairs(self.images, self.masks)
        self.label_table[: len(ADE20K_CLASSES)] = np.arange(len(ADE20K_CLASSES))
        self.label_table[0] = IGNORE_INDEX
        self._track_fixes()


# ===== synthetic scenes =====

class SyntheticSegmentation(Dataset):
    """The embedded synthetic scenes (``croc_utils.synthetic``) in the reader interface above."""

    def __init__(self, split: str = "train", num_images: int = 100, size: int = 224, seed: int = 0, transform=None,
                 first_index: int = 0, cache: bool = False, style: str = "default"):
        from croc_utils.synthetic import SyntheticScenes

        self.scenes = SyntheticScenes(split=split, num_images=num_images, size=size, seed=seed,
                                      first_index=first_index, cache=cache, style=style)
        self.class_names = tuple(self.scenes.classes)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int):
        image, mask = self.scenes[index]
        mask = np.asarray(mask, dtype=np.uint8)
        return self.transform(image, mask) if self.transform is not None else (image, mask)


def build_segmentation_dataset(name: str, data_path: str, split: str, transform=None, train_fraction: float = 1.0,
                               synthetic_images: int = 100, synthetic_size: int = 224, seed: int = 0):
    """Dataset by CLI name (``voc | coco_things | coco_stuff | ade20k | synthetic``) and split (``train | val``).

    VOC's train split is ``trainaug``; COCO's train is train2017 (``train_fraction`` of it, seed 400); ADE20K's
    are ``training`` and ``validation``.
    """
    if name != "synthetic" and not data_path:
        raise UsageError(f"--data_path is required for --dataset {name}")
    if name != "synthetic" and not Path(data_path).is_dir():
        raise MissingDataError(f"--data_path {data_path} is not a directory")
    if name == "voc":
        return VOCSegmentation(data_path, "trainaug" if split == "train" else split, transform)
    if name in ("coco_things", "coco_stuff"):
        fraction = train_fraction if split == "train" else 1.0
        return COCOSegmentation(data_path, name.split("_")[1], split, transform, fraction=fraction)
    if name == "ade20k":
        return ADE20KSegmentation(data_path, split, transform)
    if name == "synthetic":
        return SyntheticSegmentation(split, synthetic_images, synthetic_size, seed, transform)
    raise ValueError(f"--dataset must be one of {DATASETS}, got {name!r}")


# ===== DAVIS-2017 =====

def natural_key(path: Path) -> tuple:
    """Sort key reading the digit runs of a file name as numbers: 2.jpg before 10.jpg (and 00002 before 00010)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)), path.name


class DAVIS2017:
    """DAVIS-2017 sequences: ``ImageSets/2017/<split>.txt``, ``JPEGImages/480p/<seq>/*.jpg``,
    ``Annotations/480p/<seq>/*.png`` (indexed PNGs: 0 background, 1..n objects, 255 void).

    The tree is checked when the reader is made, before any work, each error naming the path: a list naming no
    sequence, missing folders or first annotations, frames or annotations that cannot be read, frames whose size
    varies within a sequence, annotations of another size than their frame (e.g. Full-Resolution annotations with
    480p frames), annotations holding only 0 and 255 (binary masks: DAVIS objects are ids 1, 2, ...) and a list whose
    first annotations hold no object at all (nothing to score).
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", resolution: str = "480p"):
        self.root = Path(root)
        self.list_file = self.root / "ImageSets" / "2017" / f"{split}.txt"
        if not self.list_file.is_file():
            raise MissingDataError(f"DAVIS sequence list not found: {self.list_file}")
        self.sequences = [s.strip() for s in self.list_file.read_text().splitlines() if s.strip()]
        if not self.sequences:
            raise DataError(f"{self.list_file}: the sequence list names no sequence")
        self.image_root = self.root / "JPEGImages" / resolution
        self.mask_root = self.root / "Annotations" / resolution
        with_objects = [self._check_sequence(seq) for seq in self.sequences]
        if not any(with_objects):
            raise DataError(f"{self.list_file}: no listed sequence has an object (id 1, 2, ...) in its first "
                            "annotation: nothing to score")

    def _check_sequence(self, seq: str) -> bool:
        """Check one sequence's files (see the class doc); whether its first annotation holds an object."""
        if not (self.image_root / seq).is_dir():
            raise MissingDataError(f"DAVIS frames folder missing: {self.image_root / seq}")
        frames = self.frames(seq)
        if not frames:
            raise MissingDataError(f"DAVIS frames folder has no .jpg: {self.image_root / seq}")
        first = self.mask_path(seq, frames[0])
        if not first.is_file():
            raise MissingDataError(f"DAVIS first-frame annotation missing: {first}")
        size = image_size(frames[0])
        for frame in frames:
            frame_size = image_size(frame)
            if frame_size != size:
                raise DataError(f"{frame}: {frame_size[1]}x{frame_size[0]} frame in a sequence of {size[1]}x{size[0]} "
                                f"frames ({frames[0].name}); the frames of a sequence must share one size")
            mask = self.mask_path(seq, frame)
            if mask.is_file() and image_size(mask) != size:
                h, w = image_size(mask)
                raise DataError(f"{mask}: {w}x{h} annotation for a {size[1]}x{size[0]} frame (annotations of another "
                                "resolution than the frames?)")
        first_ids = self.read_mask(seq, frames[0])
        if np.isin(first_ids, (0, IGNORE_INDEX)).all():
            if (first_ids == IGNORE_INDEX).any() and self._binary(seq, frames[1:]):
                raise DataError(f"{first}: the annotations of {seq} hold only 0 and {IGNORE_INDEX}; DAVIS objects are "
                                f"ids 1, 2, ... ({IGNORE_INDEX} = void): masks saved as black-and-white images?")
            return False
        return True

    def _binary(self, seq: str, frames: list[Path]) -> bool:
        """Whether every annotation of ``frames`` holds only 0 and 255."""
        paths = [self.mask_path(seq, f) for f in frames]
        return all(np.isin(self.read_mask(seq, f), (0, IGNORE_INDEX)).all()
                   for f, p in zip(frames, paths) if p.is_file())

    def frames(self, seq: str) -> list[Path]:
        """Frame paths of one sequence in temporal order: by file name, digit runs read as numbers (DAVIS names
        are zero-padded; unpadded names 1, 2, ..., 10 keep their order too)."""
        return sorted((self.image_root / seq).glob("*.jpg"), key=natural_key)

    def mask_path(self, seq: str, frame: Path) -> Path:
        return self.mask_root / seq / f"{frame.stem}.png"

    def read_mask(self, seq: str, frame: Path) -> np.ndarray:
        """Annotation of one frame as uint8 ids (H, W); the palette is ignored, indices are the object ids."""
        return read_label_png(self.mask_path(seq, frame), ("P", "L"), "DAVIS annotation").astype(np.uint8)

    def has_all_masks(self, seq: str) -> bool:
        return all(self.mask_path(seq, f).is_file() for f in self.frames(seq))
