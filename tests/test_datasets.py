"""Tests of croc_utils/datasets.py on tiny trees in a temp dir: every dataset type, archives, bad files, loader."""

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

import croc_utils.datasets as datasets
from croc_utils.datasets import (
    EpochSampler,
    ImageFilesDataset,
    UnreadableDataError,
    build_pretrain_dataset,
    build_pretrain_loader,
    mix_seed,
)
from croc_utils.parser import get_args_parser, parse_args
from croc_utils.transforms import CrOCAugmentation

TRANSFORM = CrOCAugmentation((0.25, 1.0), 32, 16)


def make_args(**overrides) -> argparse.Namespace:
    """The parser's defaults (one home for them) with ``overrides``."""
    args = get_args_parser().parse_args([])
    vars(args).update(dict(dataset_type="imagefolder", coco_path="", synthetic_num_images=6), **overrides)
    return args


def write_images(folder, names, size=(40, 30)):
    os.makedirs(folder, exist_ok=True)
    for k, name in enumerate(names):
        rgb = np.full((size[1], size[0], 3), 20 * k, dtype=np.uint8)
        Image.fromarray(rgb).save(os.path.join(folder, name))


def make_tar(archive, folder, arcname):
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=arcname)


def check_item(item):
    assert [tuple(c.shape) for c in item["crops"]] == [(3, 32, 32)] * 2
    assert [tuple(p.shape) for p in item["patch_positions"]] == [(4, 2)] * 2


def test_imagefolder_reads_nested_images_in_sorted_order(tmp_path):
    write_images(tmp_path / "b", ["2.png", "1.jpg"])
    write_images(tmp_path / "a", ["x.JPEG"])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), TRANSFORM)
    assert [os.path.relpath(f, tmp_path) for f in ds.files] == ["a/x.JPEG", "b/1.jpg", "b/2.png"]
    check_item(ds[1])


def test_imagenet1k_folder_and_archive(tmp_path, monkeypatch):
    root = tmp_path / "imagenet"
    write_images(root / "ILSVRC2012_img_train" / "n01", ["a.jpg", "b.jpg"])
    write_images(root / "ILSVRC2012_img_train" / "n02", ["c.jpg"])
    assert len(build_pretrain_dataset(make_args(dataset_type="imagenet1k", imagenet1k_path=str(root)), TRANSFORM)) == 3
    make_tar(tmp_path / "imagenet.tar", root, "imagenet")
    monkeypatch.setenv("CROC_TEST_SCRATCH", str(tmp_path / "scratch"))
    args = make_args(
        dataset_type="imagenet1k", imagenet1k_path=str(tmp_path / "imagenet.tar"), untar_path="$CROC_TEST_SCRATCH"
    )
    ds = build_pretrain_dataset(args, TRANSFORM)
    assert len(ds) == 3 and ds.files[0].startswith(str(tmp_path / "scratch" / "imagenet"))
    check_item(ds[2])
    assert len(build_pretrain_dataset(args, TRANSFORM)) == 3  # a second call finds the extraction marker


def test_coco_and_coco_plus(tmp_path):
    root = tmp_path / "coco"
    write_images(root / "images" / "train2017", ["000001.jpg", "000002.jpg"])
    write_images(root / "images" / "unlabeled2017", ["000003.jpg"])
    coco = build_pretrain_dataset(make_args(dataset_type="coco", coco_path=str(root)), TRANSFORM)
    coco_plus = build_pretrain_dataset(make_args(dataset_type="coco+", coco_path=str(root)), TRANSFORM)
    assert len(coco) == 2 and len(coco_plus) == 3
    check_item(coco_plus[2])


def test_coco_plus_from_the_released_archives(tmp_path):
    """The release's layout: coco.tar (images/train2017) and unlabeled2017.tar beside it."""
    write_images(tmp_path / "src" / "images" / "train2017", ["1.jpg", "2.jpg"])
    write_images(tmp_path / "unl", ["3.jpg", "4.jpg", "5.jpg"])
    make_tar(tmp_path / "coco.tar", tmp_path / "src", "coco")
    make_tar(tmp_path / "unlabeled2017.tar", tmp_path / "unl", "unlabeled2017")
    args = make_args(dataset_type="coco+", coco_path=str(tmp_path / "coco.tar"), untar_path=str(tmp_path / "x"))
    assert len(build_pretrain_dataset(args, TRANSFORM)) == 5


def test_synthetic_dataset_is_deterministic():
    args = make_args(dataset_type="synthetic", synthetic_num_images=4, seed=2)
    a, b = build_pretrain_dataset(args, TRANSFORM), build_pretrain_dataset(args, TRANSFORM)
    assert len(a) == 4
    x, y = a[(1, 123)], b[(1, 123)]  # (index, augmentation seed), as EpochSampler yields
    check_item(x)
    assert all(torch.equal(p, q) for p, q in zip(x["crops"], y["crops"]))


def test_corrupt_images_are_skipped_counted_and_warned_once(tmp_path, caplog):
    write_images(tmp_path, ["0.jpg", "3.jpg"])
    (tmp_path / "1.jpg").write_bytes(b"definitely not a jpeg")
    good = (tmp_path / "0.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(good[: len(good) // 2])  # truncated
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), None)
    with caplog.at_level(logging.WARNING, logger="croc_utils.datasets"):
        img = ds[1]  # 1.jpg and 2.jpg are unreadable: the next readable image, 3.jpg, comes back
        ds[1]
    assert np.array(img)[0, 0].tolist() == [20, 20, 20]
    assert ds.num_skipped == 2  # 4 failed reads, 2 files
    warned = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert len(warned) == 2 and any("1.jpg" in w for w in warned) and any("2.jpg" in w for w in warned)
    bad = [str(tmp_path / "1.jpg"), str(tmp_path / "2.jpg")]
    assert ds.skipped_this_epoch(epoch=0) == {"skipped_images": 2, "skipped_files": bad}
    assert ds.skipped_this_epoch(epoch=1) == {"skipped_images": 0}


def test_skips_in_workers_reach_the_main_process(tmp_path):
    write_images(tmp_path, [f"{k}.png" for k in range(7)])
    (tmp_path / "bad.png").write_bytes(b"broken")
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), TRANSFORM)
    loader, sampler = build_pretrain_loader(ds, batch_size=4, num_workers=2, seed=0, distributed=False)
    sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 2 and ds.num_skipped == 1


def three_unreadable_files(folder):
    """5 readable images and 3 unreadable ones in a row: reading item 5 tries 5, 6, 7; item 6 tries 6, 7; ...
    so a count of failed reads gives 6, a count of files 3."""
    write_images(folder, [f"{k}.png" for k in range(5)])
    for k in range(5, 8):
        (folder / f"{k}.png").write_bytes(b"not a png")
    return [str(folder / f"{k}.png") for k in range(5, 8)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_files_count_once_per_epoch_across_workers(tmp_path, num_workers):
    bad = three_unreadable_files(tmp_path)
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), TRANSFORM)
    loader, sampler = build_pretrain_loader(ds, batch_size=4, num_workers=num_workers, seed=0, distributed=False)
    for epoch in range(2):  # persistent workers: the flags are cleared between epochs in the shared memory
        sampler.set_epoch(epoch)
        assert sum(len(b["crops"][0]) for b in loader) == 8  # every index read once
        assert ds.skipped_this_epoch(epoch) == {"skipped_images": 3, "skipped_files": bad}
    assert ds._ever_unreadable == {5, 6, 7}


def test_unreadable_files_are_counted_once_over_processes(tmp_path):
    bad = three_unreadable_files(tmp_path / "data")
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path / "data")), None)
    ds.MAX_LOGGED_PATHS = 2
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        for i in range(8):
            ds[i]
        assert ds.skipped_this_epoch(0) == {"skipped_images": 3, "skipped_files": bad[:2]}
    finally:
        dist.destroy_process_group()


def test_missing_or_empty_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"--data_path: {tmp_path / 'nope'} does not exist"):
        build_pretrain_dataset(make_args(data_path=str(tmp_path / "nope")), TRANSFORM)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"--data_path: no images .* under {tmp_path / 'empty'}"):
        build_pretrain_dataset(make_args(data_path=str(tmp_path / "empty")), TRANSFORM)
    with pytest.raises(FileNotFoundError, match="--coco_path: .*images/train2017 does not exist"):
        build_pretrain_dataset(make_args(dataset_type="coco", coco_path=str(tmp_path)), TRANSFORM)
    write_images(tmp_path / "images" / "train2017", ["1.jpg"])
    with pytest.raises(FileNotFoundError, match="--coco_path \\(coco\\+ needs unlabeled2017\\)"):
        build_pretrain_dataset(make_args(dataset_type="coco+", coco_path=str(tmp_path)), TRANSFORM)
    with pytest.raises(ValueError, match="--imagenet1k_path is not set"):
        build_pretrain_dataset(make_args(dataset_type="imagenet1k"), TRANSFORM)
    with pytest.raises(ValueError, match="--untar_path"):
        build_pretrain_dataset(make_args(data_path=str(tmp_path / "data.tar")), TRANSFORM)
    with pytest.raises(ValueError, match="--dataset_type: unknown 'voc'"):
        build_pretrain_dataset(make_args(dataset_type="voc"), TRANSFORM)


def epoch_batches(loader, sampler, epochs):
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out.append([torch.cat([c.flatten(1) for c in batch["crops"] + batch["patch_positions"]], 1)
                    for batch in loader])
    return out


def synthetic_loader(num_workers, batch_size=3):
    ds = build_pretrain_dataset(make_args(dataset_type="synthetic", synthetic_num_images=7, seed=4), TRANSFORM)
    return build_pretrain_loader(ds, batch_size=batch_size, num_workers=num_workers, seed=4, distributed=False)


def test_loader_epochs_depend_only_on_seed_and_epoch():
    """A 2+2-epoch run (fresh loader after 2 epochs) sees exactly the batches of a 4-epoch run, views included."""
    full = epoch_batches(*synthetic_loader(0), range(4))
    resumed = epoch_batches(*synthetic_loader(0), range(2)) + epoch_batches(*synthetic_loader(0), range(2, 4))
    assert [len(e) for e in full] == [2] * 4  # 7 images, batches of 3, drop_last
    assert all(torch.equal(a, b) for ea, eb in zip(full, resumed) for a, b in zip(ea, eb))
    assert not torch.equal(full[0][0], full[1][0])  # epochs differ
    workers = epoch_batches(*synthetic_loader(2), [3])  # worker processes draw the same views
    assert all(torch.equal(a, b) for a, b in zip(full[3], workers[0]))


def test_forgotten_set_epoch_still_moves_on():
    loader, sampler = synthetic_loader(0)
    first, second = [torch.cat(b["crops"], 1) for b in loader], [torch.cat(b["crops"], 1) for b in loader]
    assert sampler.epoch == 1 and not torch.equal(first[0], second[0])


def test_epoch_sampler_order_and_seeds():
    base = torch.utils.data.RandomSampler(range(10), generator=torch.Generator())
    sampler = EpochSampler(base, seed=1)
    sampler.set_epoch(5)
    items = list(sampler)
    assert sorted(i for i, _ in items) == list(range(10))
    assert all(s == mix_seed(1, 5, i) for i, s in items)
    assert len({s for _, s in items}) == 10 and mix_seed(1, 5, 0) != mix_seed(1, 6, 0)


def test_loader_settings_and_errors(tmp_path):
    loader, sampler = synthetic_loader(0, batch_size=2)
    assert loader.drop_last and loader.sampler is sampler and len(loader) == 3
    assert loader.pin_memory == torch.cuda.is_available()
    with pytest.raises(ValueError, match="--batch_size_per_gpu 8 is larger"):
        synthetic_loader(0, batch_size=8)
    with pytest.raises(ValueError, match="not initialised"):
        build_pretrain_loader(loader.dataset, 2, 0, 0, distributed=True)


def test_distributed_loader_uses_a_distributed_sampler(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader, sampler = synthetic_loader(0, batch_size=2)  # distributed=False still works inside a group
        ds = loader.dataset
        loader, sampler = build_pretrain_loader(ds, 2, 0, seed=4, distributed=True)
        assert isinstance(sampler.sampler, torch.utils.data.DistributedSampler) and len(loader) == 3
        sampler.set_epoch(1)
        assert sampler.sampler.epoch == 1 and len([b for b in loader]) == 3
    finally:
        dist.destroy_process_group()


def test_training_log_records_each_unreadable_file_once(tmp_path):
    from main_croc import train_croc  # the epoch's log.txt line, end to end
    from tests.test_train import SMALL

    bad = three_unreadable_files(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    train_croc(parse_args(SMALL + ["--dataset_type", "imagefolder", "--data_path", str(tmp_path / "data"),
                                   "--output_dir", str(out), "--epochs", "1", "--global_crops_size", "32",
                                   "--saveckp_freq", "0"]))
    line = json.loads((out / "log.txt").read_text())
    assert line["train_skipped_images"] == 3 and line["train_skipped_files"] == bad


# ===== folders of unreadable images (a one-line error naming the flag, the folder and the count) =====
def test_a_folder_of_only_unreadable_images_is_refused_in_one_line_before_training(tmp_path):
    """main_croc: one line on stderr naming --data_path, the folder and the true count; no traceback."""
    from tests.test_train import ROOT, SMALL, subprocess_env

    for k in range(6):
        (tmp_path / f"{k}.jpg").write_text("not an image")
    proc = subprocess.run([sys.executable, "main_croc.py", *SMALL, "--dataset_type", "imagefolder", "--data_path",
                           str(tmp_path), "--output_dir", str(tmp_path / "out"), "--epochs", "1"],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert "Traceback" not in err and "\n" not in err, err
    assert err.startswith(f"error: --data_path {tmp_path}: none of the 6 images could be read (first: 0.jpg: "), err
    assert "Starting CrOC training" not in proc.stdout


@pytest.mark.parametrize("num_workers", [0, 2])
def test_images_that_become_unreadable_mid_run_give_the_true_count_and_the_folder(tmp_path, num_workers):
    write_images(tmp_path, [f"{k}.png" for k in range(6)])
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), TRANSFORM)
    for k in range(6):  # e.g. a network file system that went away after the start
        (tmp_path / f"{k}.png").write_bytes(b"gone")
    loader, sampler = build_pretrain_loader(ds, batch_size=2, num_workers=num_workers, seed=0, distributed=False)
    with pytest.raises(UnreadableDataError) as err:
        next(iter(loader))
    message = str(err.value)  # a worker's error comes back with its traceback around the message: str() is one line
    assert "\n" not in message and message.startswith(f"--data_path {tmp_path}: none of the 6 images could be read")


def test_a_long_run_of_unreadable_files_in_a_large_folder_names_the_flag_and_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_CONSECUTIVE_SKIPS", 3)  # a folder "larger" than the run limit
    write_images(tmp_path, [f"{k}.png" for k in range(8)])
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), None)
    for k in (2, 3, 4):
        (tmp_path / f"{k}.png").write_bytes(b"gone")
    with pytest.raises(UnreadableDataError, match=rf"^--data_path {tmp_path}: 3 images in a row could not be read, "
                                                  r"from 2.png on \(first: 2.png: UnidentifiedImageError"):
        ds[2]
    for k in (0, 1):
        (tmp_path / f"{k}.png").write_bytes(b"gone")
    with pytest.raises(UnreadableDataError, match="3 images in a row could not be read, from 0.png on"):
        build_pretrain_dataset(make_args(data_path=str(tmp_path)), None)


def test_the_start_up_check_reads_only_up_to_the_first_readable_image(tmp_path, monkeypatch):
    """A cheap start on a large folder: one image read when the first is fine, k + 1 after k unreadable ones."""
    write_images(tmp_path, [f"{k}.png" for k in range(2, 9)])
    reads = []
    real = datasets.read_rgb
    monkeypatch.setattr(datasets, "read_rgb", lambda path: reads.append(os.path.basename(path)) or real(path))
    build_pretrain_dataset(make_args(data_path=str(tmp_path)), None)
    assert reads == ["2.png"]
    (tmp_path / "0.png").write_bytes(b"broken")
    (tmp_path / "1.png").write_bytes(b"broken")
    reads.clear()
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), None)
    assert reads == ["0.png", "1.png", "2.png"] and ds.num_skipped == 0  # the epoch counts them, not the check


# ===== high bit depth and other modes: converted to the values they mean, or counted as unreadable =====
def grey(array, mode=None):
    return Image.fromarray(array, mode) if mode else Image.fromarray(array)


RNG = np.random.default_rng(0)
NOISE16 = RNG.integers(0, 65536, (16, 16), dtype=np.uint16)
FLOAT01 = RNG.random((16, 16)).astype(np.float32)
RGB8 = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
# (file name, image to save, expected mean of each RGB channel, worked out from the source values)
HIGH_BIT_DEPTH = [
    ("noise16.png", lambda: grey(NOISE16), [NOISE16.mean() / 257] * 3),  # PIL: mode I;16
    ("ramp16.tif", lambda: grey(np.arange(256, dtype=np.uint16).reshape(16, 16) * 257), [127.5] * 3),
    ("noise16_big_endian.tif", lambda: grey(NOISE16.astype(">u2")), [NOISE16.mean() / 257] * 3),  # I;16B
    ("noise16.pgm", lambda: grey(NOISE16), [NOISE16.mean() / 257] * 3),  # PIL reads a 16-bit PGM as mode I
    ("float01.tif", lambda: grey(FLOAT01, "F"), [FLOAT01.mean() * 255] * 3),
    ("float255.tif", lambda: grey(FLOAT01 * 200 + 10, "F"), [FLOAT01.mean() * 200 + 10] * 3),
    ("float65535.tif", lambda: grey(FLOAT01 * 60000, "F"), [FLOAT01.mean() * 60000 / 257] * 3),
    ("int32.tif", lambda: grey(NOISE16.astype(np.int32)), [NOISE16.mean() / 257] * 3),  # PIL: mode I
    ("one_bit.png", lambda: grey(RGB8[..., 0] > 127).convert("1"), [(RGB8[..., 0] > 127).mean() * 255] * 3),
    ("palette.png", lambda: grey(RGB8).quantize(16), None),  # the palette's own colours, see below
    ("grey_alpha.png", lambda: grey(np.dstack([RGB8[..., 0], RGB8[..., 1]]), "LA"), [RGB8[..., 0].mean()] * 3),
    ("rgba.png", lambda: grey(np.dstack([RGB8, RGB8[..., :1]]), "RGBA"), RGB8.mean((0, 1)).tolist()),
    ("cmyk.tif", lambda: grey(np.dstack([255 - RGB8, np.zeros((16, 16), np.uint8)]), "CMYK"),
     RGB8.mean((0, 1)).tolist()),  # no black ink: R = 255 - C, ...
    # L* = 50, a* = b* = 0 (PIL stores a* and b* as signed bytes): the CIE grey 119, not a copy of the channels
    ("lab.tif", lambda: grey(np.dstack([np.full((4, 4), 128, np.uint8)] + [np.zeros((4, 4), np.uint8)] * 2), "LAB"),
     [119] * 3),
]


@pytest.mark.parametrize("name, make, expected", HIGH_BIT_DEPTH, ids=[case[0] for case in HIGH_BIT_DEPTH])
def test_high_bit_depth_and_other_modes_convert_to_the_values_they_mean(tmp_path, name, make, expected):
    source = make()
    source.save(tmp_path / name)
    if expected is None:  # a palette image: each pixel's palette colour
        expected = np.asarray(source.convert("RGB")).reshape(-1, 3).mean(0).tolist()
    ds = ImageFilesDataset([str(tmp_path / name)])
    img = ds[0]
    assert img.mode == "RGB" and ds.num_skipped == 0
    means = np.asarray(img).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(means, expected, atol=1.0)  # within one grey level


def test_values_with_no_known_scale_are_counted_as_unreadable(tmp_path, caplog):
    signed = FLOAT01 * 10 - 5
    signed[0, 0] = -5
    grey(signed, "F").save(tmp_path / "0_signed.tif")  # negative values: no meaning as grey levels
    grey(np.full((8, 8), 1e6, np.float32), "F").save(tmp_path / "1_huge.tif")
    write_images(tmp_path, ["2.png"])
    ds = build_pretrain_dataset(make_args(data_path=str(tmp_path)), None)
    with caplog.at_level(logging.WARNING, logger="croc_utils.datasets"):
        img = ds[0]
    assert np.asarray(img).max() == 0  # 2.png (all 0), the next readable image
    assert ds.num_skipped == 2
    warned = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert len(warned) == 2 and "no known scale" in warned[0] and "[-5," in warned[0]


def test_a_few_stray_values_do_not_change_the_scale_and_are_counted(tmp_path, caplog):
    """A float image in [0, 1] with one value at 1.0001 keeps the [0, 1] scale (the value is clipped, one warning
    counts it); 8-bit data in a 32-bit integer TIFF keeps its grey levels."""
    stray = FLOAT01.copy()
    stray[3, 3] = 1.0001
    grey(stray, "F").save(tmp_path / "stray.tif")
    grey(RGB8[..., 0].astype(np.int32)).save(tmp_path / "eight_in_int32.tif")
    with caplog.at_level(logging.WARNING, logger="croc_utils.datasets"):
        ds = ImageFilesDataset([str(tmp_path / "stray.tif"), str(tmp_path / "eight_in_int32.tif")])
        stray_rgb, eight_rgb = np.asarray(ds[0]).astype(float), np.asarray(ds[1]).astype(float)
    expected = np.clip(stray, 0, 1) * 255
    assert np.abs(stray_rgb[..., 0] - expected).max() <= 0.5 and ds.num_skipped == 0
    assert np.array_equal(eight_rgb[..., 0], RGB8[..., 0])  # not divided by 257
    warned = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert warned == [f"{tmp_path / 'stray.tif'}: 1 of 256 values of this mode F image lie outside [0, 1]: clipped"]
    ds[0]
    assert len([r for r in caplog.records if "clipped" in r.getMessage()]) == 1  # once per file

# ===== archive extraction: changed archives, failures and slow extractions under torch.distributed =====

def test_a_changed_archive_is_extracted_again(tmp_path, capsys):
    write_images(tmp_path / "v1" / "data", ["a.png"])
    make_tar(tmp_path / "data.tar", tmp_path / "v1" / "data", "data")
    root = datasets.untar(str(tmp_path / "data.tar"), str(tmp_path / "x"), "--data_path")
    assert os.listdir(root) == ["a.png"]
    write_images(tmp_path / "v2" / "data", ["a.png", "b.png"])
    make_tar(tmp_path / "data.tar", tmp_path / "v2" / "data", "data")  # replaced by a new version
    os.utime(tmp_path / "data.tar", ns=(1, 2 * 10**18))
    capsys.readouterr()
    root = datasets.untar(str(tmp_path / "data.tar"), str(tmp_path / "x"), "--data_path")
    assert sorted(os.listdir(root)) == ["a.png", "b.png"]
    assert "changed since it was extracted" in capsys.readouterr().out
    datasets.untar(str(tmp_path / "data.tar"), str(tmp_path / "x"), "--data_path")  # unchanged: nothing to do
    assert "extracting" not in capsys.readouterr().out


def _untar_worker(rank, port, results, archive, untar_path, slow):
    import time

    from tests.test_distributed import _join_group

    _join_group(rank, port, dist_timeout=0.05)  # 3 s: shorter than the extraction when slow
    if rank == 0 and slow:
        extractall = tarfile.TarFile.extractall

        def slow_extractall(self, *args, **kwargs):
            time.sleep(6)
            return extractall(self, *args, **kwargs)

        tarfile.TarFile.extractall = slow_extractall
    try:
        root = datasets.untar(archive, untar_path, "--data_path")
        results.put((rank, f"ok {sorted(os.listdir(root))}"))
    except Exception as err:
        results.put((rank, f"{type(err).__name__}: {str(err).splitlines()[0]}"))
    finally:
        dist.destroy_process_group()


def test_every_local_process_learns_that_the_extraction_failed(tmp_path):
    """Local rank 0 fails to extract: the other processes get the same one-line error at once, not a timeout."""
    from tests.test_distributed import _run_two

    (tmp_path / "data.tar").write_bytes(b"not a tar archive" * 100)
    outcomes = sorted(_run_two(_untar_worker, str(tmp_path / "data.tar"), str(tmp_path / "x"), False))
    assert [rank for rank, _ in outcomes] == [0, 1]
    assert all(text.startswith("DataConfigError: --data_path: cannot extract") for _, text in outcomes), outcomes


def test_an_extraction_longer_than_dist_timeout_does_not_end_the_job(tmp_path):
    from tests.test_distributed import _run_two

    write_images(tmp_path / "src" / "data", ["a.png"])
    make_tar(tmp_path / "data.tar", tmp_path / "src" / "data", "data")
    outcomes = sorted(_run_two(_untar_worker, str(tmp_path / "data.tar"), str(tmp_path / "x"), True))
    assert outcomes == [(0, "ok ['a.png']"), (1, "ok ['a.png']")], outcomes
