"""Pretraining datasets (docs/algorithm.md section 6) and their loader.

`build_pretrain_dataset(args, transform)` reads `args.dataset_type` and one of `--data_path` (imagefolder),
`--imagenet1k_path` (its ILSVRC2012_img_train), `--coco_path` (images/train2017; coco+ adds unlabeled2017) or
`--synthetic_num_images` (the embedded scenes, train split, seeded by `--seed`). A data path ending in .tar is first
extracted to `--untar_path` (once per node) as the release does. Labels are never read: items are the transform's
output for one image.

Reproducibility: `build_pretrain_loader` wraps its sampler in `EpochSampler`, which hands the dataset
(index, augmentation seed) pairs; the seed is a hash of (seed, epoch, index) and drives every random choice of the
transform (through a per-sample `torch.Generator`). So the order AND the views of epoch e depend only on (seed, e),
whatever `num_workers` or the number of processes, and a resumed run sees the same data as an uninterrupted one.
"""

import inspect
import logging
import os
import tarfile
import time
from itertools import islice

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from croc_utils.atomic_io import atomic_write
from croc_utils.distributed import is_dist, local_rank
from croc_utils.synthetic import DataConfigError, DataPathError, SyntheticScenes

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
DATASET_TYPES = ("imagefolder", "imagenet1k", "coco", "coco+", "synthetic")
MAX_CONSECUTIVE_SKIPS = 100
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)  # what a bad file raises
_MASK64 = (1 << 64) - 1


class UnreadableDataError(RuntimeError):
    """No readable image within MAX_CONSECUTIVE_SKIPS files: the message is one line naming the flag and folder.

    A DataLoader worker's exception comes back to the main process re-raised with the worker's traceback around its
    message; ``str()`` keeps only the message, so the caller can print one line whatever ``--num_workers`` is.
    """

    def __str__(self) -> str:
        text = super().__str__()
        return text.rsplit(f"{type(self).__name__}: ", 1)[-1].strip()


# ===== reading one image as 8-bit RGB =====
# Modes "I" (32-bit int) and "F" (32-bit float): the value of full white. Where the file states its bit depth (a TIFF
# of up to 16 bits per sample; PPM/PGM, which PIL reads onto 0..65535) that depth sets it. Elsewhere (floats, 32-bit
# int containers) it is the first of these ranges that holds at least IN_RANGE_SHARE of the values, so that a few
# stray values (a float image in [0, 1] with one value at 1.0001) do not change the scale of the whole image. Values
# outside [0, full white] are clipped and counted in one warning per file; when no range holds that share (negative
# data, values above 65535, NaN or inf) the file has no known meaning and is counted as unreadable.
FLOAT_RANGES = (1.0, 255.0, 65535.0)
INT_RANGES = (255.0, 65535.0)
IN_RANGE_SHARE = 0.99
_warned_clipped: set[str] = set()


def to_rgb(img: Image.Image, path: str = "") -> Image.Image:
    """``img`` as 8-bit RGB, keeping what its values mean; ValueError when no sensible conversion exists.

    PIL's ``convert("RGB")`` clips 16-bit and float greyscale to 0..255: a 16-bit PNG comes out almost white, a float
    image in [0, 1] black. Here 16-bit greyscale (``I;16*``) is divided by 257 (65535 -> 255); ``I`` and ``F`` are
    scaled from their full-white value (see ``FLOAT_RANGES``: what the file says, else the range of most values);
    the grey levels become three equal channels. Every other mode (1, L, P, LA, PA, RGBA, RGBX, CMYK, YCbCr, HSV,
    LAB) is PIL's conversion, which is right for them (alpha is dropped, as the released pipeline does). 16-bit RGB
    has no PIL mode: PIL either reads its high bytes as RGB (PNG) or refuses the file (counted as unreadable).
    ``path`` names the file in the warning about clipped values.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        return _grey_to_rgb(np.asarray(img).astype(np.float64) / 257)
    if mode in ("I", "F"):
        return _grey_to_rgb(_scaled(np.asarray(img).astype(np.float64), mode, declared_white(img), path))
    return img.convert("RGB")


def declared_white(img: Image.Image) -> float | None:
    """The full-white value the file states for a mode I image (None when it states none, and for floats)."""
    if img.mode != "I":
        return None
    if img.format == "PPM":
        return 65535.0  # PIL scales PPM/PGM samples of any maxval above 255 onto 0..65535
    bits = getattr(img, "tag_v2", {}).get(258) if img.format == "TIFF" else None  # BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    return float(2**bits - 1) if isinstance(bits, int) and 0 < bits <= 16 else None


def _scaled(values: np.ndarray, mode: str, white: float | None = None, path: str = "") -> np.ndarray:
    """(H, W) values on the 0..255 scale, full white being ``white`` (chosen from the values when None)."""
    if white is None:
        white = _white_of_most_values(values, FLOAT_RANGES if mode == "F" else INT_RANGES, mode)
    outside = int(np.count_nonzero(~((values >= 0) & (values <= white))))  # NaN counts as outside
    if outside and path not in _warned_clipped:
        _warned_clipped.add(path)
        logger.warning("%s: %d of %d values of this mode %s image lie outside [0, %g]: clipped", path or "an image",
                       outside, values.size, mode, white)
    return np.nan_to_num(values, nan=0.0) * (255.0 / white)


def _white_of_most_values(values: np.ndarray, ranges: tuple, mode: str) -> float:
    for white in ranges:
        if not values.size or np.count_nonzero((values >= 0) & (values <= white)) >= IN_RANGE_SHARE * values.size:
            return white
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"),) * 2
    raise ValueError(f"mode {mode} with values in [{low:g}, {high:g}]: no known scale to 8 bits")


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    """(H, W) values on the 0..255 scale -> 8-bit RGB with three equal channels."""
    return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")


def read_rgb(path: str) -> Image.Image:
    """The image at ``path`` as 8-bit RGB (``to_rgb``); raises one of READ_ERRORS for a file that cannot be used."""
    with Image.open(path) as img:
        return to_rgb(img, path)


# ===== reproducible sampling =====
def mix_seed(*values: int) -> int:
    """Hash integers into a 63-bit seed (splitmix64 finaliser): nearby (seed, epoch, index) give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for value in values:
        h = (h ^ (value & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 29
    return h >> 1


class EpochSampler(Sampler):
    """Wraps a sampler of indices to yield (index, augmentation seed) pairs that depend only on (seed, epoch, index).

    `set_epoch(epoch)` seeds the wrapped sampler for that epoch (DistributedSampler's own `set_epoch`, or a reseed of a
    RandomSampler's generator). Iterating twice without `set_epoch` in between moves to the next epoch, so a training
    loop that forgets the call still gets fresh views each epoch (but then epochs are not reproducible on resume).

    `set_epoch(epoch, start=n)` resumes in the middle of an epoch: the first ``n`` indices of this process's order are
    skipped before the loader sees them, so nothing of them is read or decoded, and the remaining samples keep their
    order and their views. ``len()`` stays the whole epoch's (the iteration count of the schedules).
    """

    def __init__(self, sampler: DistributedSampler | RandomSampler, seed: int):
        self.sampler, self.seed, self.epoch, self.start = sampler, seed, 0, 0
        self._iterated = False
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Seed ``epoch``; its next iteration begins at position ``start`` (samples of this process, 0-based)."""
        if not 0 <= start <= len(self.sampler):
            raise ValueError(f"EpochSampler: start {start} is outside the epoch's {len(self.sampler)} samples")
        self.epoch, self.start, self._iterated = epoch, start, False
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)  # DistributedSampler shuffles with seed + epoch
        else:
            self.sampler.generator.manual_seed(mix_seed(self.seed, epoch))

    def __iter__(self):
        if self._iterated:
            self.set_epoch(self.epoch + 1)
        self._iterated = True
        epoch = self.epoch
        # the order is drawn whole (one permutation), then cut: the kept samples are where they would have been
        for index in islice(self.sampler, self.start, None):
            yield index, mix_seed(self.seed, epoch, index)

    def __len__(self) -> int:
        return len(self.sampler)


def build_pretrain_loader(
    dataset: Dataset, batch_size: int, num_workers: int, seed: int, *, distributed: bool, pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> tuple[DataLoader, EpochSampler]:
    """Shuffling loader with drop_last; returns (loader, sampler) and the training loop calls `sampler.set_epoch(e)`.

    With `distributed`, torch.distributed must be initialised and each process gets a DistributedSampler shard
    (shuffle, seed, drop_last); otherwise a RandomSampler with a generator seeded per epoch. Workers persist across
    epochs and keep `prefetch_factor` batches ready each; `pin_memory` (set it when training on CUDA) lets the
    copies to the device run asynchronously.
    """
    if distributed and not is_dist():
        raise ValueError("build_pretrain_loader: distributed=True but torch.distributed is not initialised")
    if distributed:
        base = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    else:
        base = RandomSampler(dataset, generator=torch.Generator())
    if len(base) < batch_size:
        raise DataConfigError(
            f"--batch_size_per_gpu {batch_size} is larger than the {len(base)} images each process gets "
            f"({len(dataset)} in the dataset): no full batch"
        )
    sampler = EpochSampler(base, seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


# ===== datasets =====
def _accepts_generator(transform) -> bool:
    try:
        return "generator" in inspect.signature(transform).parameters
    except (TypeError, ValueError):
        return False


class _PretrainDataset(Dataset):
    """Common item handling: an item is an index or an (index, augmentation seed) pair from EpochSampler.

    Unreadable files are recorded as one flag per file in shared memory (written by the DataLoader workers, read by
    the main process), so each file counts once per epoch however often it is tried: as its own item, or as the
    fallback of an unreadable neighbour, in any worker.
    """

    MAX_LOGGED_PATHS = 5

    def __init__(self, transform, num_files: int = 0):
        self.transform = transform
        self._seeded = transform is not None and _accepts_generator(transform)
        # (num_files,) 0/1, shared memory so that the flags set in loader workers reach the main process.
        self._unreadable = torch.zeros(num_files, dtype=torch.uint8).share_memory_()
        self._ever_unreadable: set[int] = set()

    @property
    def num_skipped(self) -> int:
        """Distinct unreadable files met since the last ``skipped_this_epoch`` (this process and its workers)."""
        return int(self._unreadable.sum())

    def _mark_unreadable(self, index: int) -> None:
        self._unreadable[index] = 1  # idempotent: no lost update when two workers meet the same file

    def _path(self, index: int) -> str:
        return str(index)

    def skipped_this_epoch(self, epoch: int) -> dict:
        """Count of distinct unreadable files met since the last call (over all processes), for the epoch's log.

        Returns {"skipped_images": n} plus, when n > 0, "skipped_files": the first few paths; logs one warning line
        and clears the flags. Under torch.distributed every process must call it (it gathers the flags).
        """
        if not len(self._unreadable):  # nothing is read from disk (the same on every process)
            return {"skipped_images": 0}
        indices = self._unreadable.nonzero().flatten().tolist()
        if is_dist():  # a file can fail in several processes (a neighbour's fallback): count it once
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, indices)
            indices = sorted(set().union(*gathered))
        self._unreadable.zero_()
        if not indices:
            return {"skipped_images": 0}
        self._ever_unreadable.update(indices)
        paths = [self._path(i) for i in indices[: self.MAX_LOGGED_PATHS]]
        logger.warning("epoch %d: skipped %d unreadable files (%d distinct so far), e.g. %s", epoch, len(indices),
                       len(self._ever_unreadable), ", ".join(paths))
        return {"skipped_images": len(indices), "skipped_files": paths}

    def _apply(self, img: Image.Image, seed: int | None):
        if self.transform is None:
            return img
        if seed is not None and self._seeded:
            return self.transform(img, generator=torch.Generator().manual_seed(seed))
        return self.transform(img)

    @staticmethod
    def _split(item) -> tuple[int, int | None]:
        return (int(item[0]), int(item[1])) if isinstance(item, tuple) else (int(item), None)


class ImageFilesDataset(_PretrainDataset):
    """Images from a list of files, read as RGB (``read_rgb``); an unreadable file is skipped (one warning) for the
    next one, up to MAX_CONSECUTIVE_SKIPS files in a row (then UnreadableDataError).

    Args:
        files: image paths (sorted, so that every process sees the same order).
        transform: callable on a PIL image (e.g. CrOCAugmentation), or None to return the image.
        source: the flag and folder the files come from (e.g. ``--data_path /data/x``), for the error messages.
    """

    def __init__(self, files: list[str], transform=None, source: str = "the image files"):
        super().__init__(transform, num_files=len(files))
        self.files = files
        self.source = source
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item):
        index, seed = self._split(item)
        first_error = None
        for offset in range(self._max_tries()):
            img, error = self._load((index + offset) % len(self.files))
            if img is not None:
                return self._apply(img, seed)
            first_error = first_error or error
        raise UnreadableDataError(self._unreadable_message(index, first_error))

    def check_readable(self) -> None:
        """UnreadableDataError (one line) before training when the first item could not be served: the files are
        read in order until one decodes, at most MAX_CONSECUTIVE_SKIPS of them, the rule of ``__getitem__``.

        Usually one image is read, whatever the size of the folder (a cheap start on 1.2M files); a folder whose
        images are all unreadable (up to MAX_CONSECUTIVE_SKIPS files) is refused before any model is built. Nothing
        is counted nor warned: the epoch's reads do that.
        """
        first_error = None
        for index in range(self._max_tries()):
            try:
                read_rgb(self.files[index])
                return
            except READ_ERRORS as err:
                first_error = first_error or self._describe(index, err)
        raise UnreadableDataError(self._unreadable_message(0, first_error))

    def _max_tries(self) -> int:
        return min(MAX_CONSECUTIVE_SKIPS, len(self.files))

    def _unreadable_message(self, index: int, first_error: str) -> str:
        tries = self._max_tries()
        if tries == len(self.files):
            return f"{self.source}: none of the {tries} images could be read (first: {first_error})"
        return (f"{self.source}: {tries} images in a row could not be read, from {self._short(index)} on "
                f"(first: {first_error})")

    def _short(self, index: int) -> str:
        return os.path.basename(self.files[index])

    def _describe(self, index: int, err: Exception) -> str:
        return f"{self._short(index)}: {type(err).__name__}: {err}"

    def _path(self, index: int) -> str:
        return self.files[index]

    def _load(self, index: int) -> tuple[Image.Image | None, str | None]:
        """(the image, None), or (None, why) for an unreadable file, which is counted and warned once."""
        path = self.files[index]
        try:
            return read_rgb(path), None
        except READ_ERRORS as err:
            self._mark_unreadable(index)
            if path not in self._warned:  # once per file and process
                self._warned.add(path)
                logger.warning("skipping unreadable image %s (%s: %s)", path, type(err).__name__, err)
            return None, self._describe(index, err)


class SyntheticPretrainDataset(_PretrainDataset):
    """The transform applied to the images of `SyntheticScenes` (masks unused)."""

    def __init__(self, scenes: SyntheticScenes, transform=None):
        super().__init__(transform)  # generated, never unreadable: no flags
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, item):
        index, seed = self._split(item)
        return self._apply(self.scenes[index][0], seed)


# ===== locating the data =====
def list_images(folder: str, flag: str) -> list[str]:
    """All image files under `folder` (recursively, symlinks followed), sorted; clear errors if none."""
    if not os.path.isdir(folder):
        raise DataPathError(f"{flag}: {folder} does not exist or is not a folder")
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        files += [os.path.join(root, name) for name in sorted(names) if name.lower().endswith(IMG_EXTENSIONS)]
    if not files:
        raise DataConfigError(f"{flag}: no images ({', '.join(IMG_EXTENSIONS)}) under {folder}")
    return files


def _archive_stem(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    return name[: -len(next(ext for ext in ARCHIVE_EXTENSIONS if name.endswith(ext)))]


def untar(archive: str, untar_path: str, flag: str) -> str:
    """Extract `archive` into `untar_path` once per node; return `untar_path`/<archive name without extension>.

    `untar_path` may be '$VAR' (an environment variable, e.g. a node-local scratch folder), as in the release.
    Local rank 0 extracts; the other processes of the node wait for its marker file (no collective, so an extraction
    longer than --dist_timeout is fine), then every process learns every node's outcome in one collective: a
    failure stops all of them with the same one-line error. The marker records the archive's size and modification
    time: a rerun skips the extraction, unless the archive has changed since.
    """
    if not untar_path:
        raise DataConfigError(f"{flag}: {archive} is an archive, so --untar_path must name where to extract it")
    if untar_path.startswith("$"):
        if untar_path[1:] not in os.environ:
            raise DataConfigError(f"--untar_path: environment variable {untar_path[1:]} is not set")
        untar_path = os.environ[untar_path[1:]]
    if not os.path.isfile(archive):
        raise DataPathError(f"{flag}: {archive} does not exist")
    marker = os.path.join(untar_path, f".{os.path.basename(archive)}.extracted")
    stat = os.stat(archive)
    fingerprint = f"{stat.st_size} {stat.st_mtime_ns}"
    if local_rank() == 0:
        error = _extract_once(archive, untar_path, flag, marker, fingerprint)
    else:
        error = _wait_for_extraction(marker, fingerprint, since=time.time())
    if is_dist():  # every process learns every node's outcome
        outcomes = [None] * dist.get_world_size()
        dist.all_gather_object(outcomes, error)
        error = next((outcome for outcome in outcomes if outcome), None)
    if error:
        raise DataConfigError(error)
    return os.path.join(untar_path, _archive_stem(archive))


def _failure_marker(marker: str) -> str:
    return marker[: -len(".extracted")] + ".failed"


def _read_marker(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_marker(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()), size=len(text))


def _extract_once(archive: str, untar_path: str, flag: str, marker: str, fingerprint: str) -> str | None:
    """Local rank 0: extract unless the marker names this very archive; None, or the one-line error (also written
    to the failure marker, for the waiting processes)."""
    recorded = _read_marker(marker)
    if recorded == fingerprint:
        return None
    if recorded == "":  # a marker of an older version, without the archive's fingerprint: trusted, as then
        _write_marker(marker, fingerprint)
        return None
    if recorded is not None:
        print(f"Notice: {archive} changed since it was extracted to {untar_path}: extracting it again.")
    for stale in (marker, _failure_marker(marker)):
        if os.path.exists(stale):
            os.remove(stale)
    os.makedirs(untar_path, exist_ok=True)
    print(f"extracting {archive} to {untar_path}")
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, links out of the folder and devices (Python >= 3.10.12).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(untar_path, **safe)
    except (tarfile.TarError, OSError) as err:
        message = f"{flag}: cannot extract {archive} ({err})"
        _write_marker(_failure_marker(marker), message)
        return message
    _write_marker(marker, fingerprint)
    return None


def _wait_for_extraction(marker: str, fingerprint: str, since: float, poll: float = 0.5) -> str | None:
    """Another local process: wait, without a timeout, until local rank 0's marker names this archive (None) or it
    reports a failure written after ``since`` (that failure's one-line error)."""
    failed = _failure_marker(marker)
    while True:
        if _read_marker(marker) == fingerprint:
            return None
        try:
            if os.stat(failed).st_mtime >= since - 2:  # an older failure marker is a previous run's
                return _read_marker(failed)
        except FileNotFoundError:
            pass
        time.sleep(poll)


def _root(path: str, flag: str, untar_path: str) -> str:
    if not path:
        raise DataConfigError(f"{flag} is not set")
    return untar(path, untar_path, flag) if path.endswith(ARCHIVE_EXTENSIONS) else path


def _coco_files(args, with_unlabeled: bool) -> list[str]:
    """COCO train2017 (and unlabeled2017 for coco+): from images/<split> under --coco_path or beside its archive."""
    root = _root(args.coco_path, "--coco_path", args.untar_path)
    files = list_images(os.path.join(root, "images", "train2017"), "--coco_path")
    if with_unlabeled:
        candidates = [os.path.join(root, "images", "unlabeled2017"), os.path.join(root, "unlabeled2017")]
        sibling = os.path.join(os.path.dirname(args.coco_path.rstrip("/")), "unlabeled2017.tar")
        if args.coco_path.endswith(ARCHIVE_EXTENSIONS) and os.path.isfile(sibling):
            candidates.append(untar(sibling, args.untar_path, "--coco_path"))  # the release's second archive
        folder = next((c for c in candidates if os.path.isdir(c)), candidates[0])
        files += list_images(folder, "--coco_path (coco+ needs unlabeled2017)")
    return files


def build_pretrain_dataset(args, transform) -> Dataset:
    """The `--dataset_type` training set, each item `transform(image)`; clear one-line errors for missing data and
    for a folder whose first item cannot be read (`ImageFilesDataset.check_readable`).

    Reads args.dataset_type, data_path, imagenet1k_path, coco_path, untar_path, synthetic_num_images,
    synthetic_size, synthetic_cache, synthetic_style and seed.
    """
    kind = args.dataset_type
    if kind == "synthetic":
        scenes = SyntheticScenes("train", args.synthetic_num_images, args.synthetic_size, args.seed,
                                 cache=args.synthetic_cache, style=args.synthetic_style)
        return SyntheticPretrainDataset(scenes, transform)
    if kind == "imagefolder":
        files = list_images(_root(args.data_path, "--data_path", args.untar_path), "--data_path")
        source = f"--data_path {args.data_path}"
    elif kind == "imagenet1k":
        root = _root(args.imagenet1k_path, "--imagenet1k_path", args.untar_path)
        files = list_images(os.path.join(root, "ILSVRC2012_img_train"), "--imagenet1k_path")
        source = f"--imagenet1k_path {args.imagenet1k_path}"
    elif kind in ("coco", "coco+"):
        files, source = _coco_files(args, with_unlabeled=kind == "coco+"), f"--coco_path {args.coco_path}"
    else:
        raise DataConfigError(f"--dataset_type: unknown {kind!r} (expected one of {', '.join(DATASET_TYPES)})")
    dataset = ImageFilesDataset(files, transform, source=source)
    dataset.check_readable()
    return dataset
