"""Bad inputs to the evaluators and the hub entries, tried as a user would, with each outcome classified.

Every case runs a real command (``python -m eval.<tool> ...``, or a call of a hub entry) on tiny fixtures built
here (vit_pico/8 checkpoints; Pascal VOC, COCO and DAVIS trees of a few images; a training log) and is classified:

* ``correct``: exit 0 and the result checks out (files written where announced, scores finite and in range, a
  warning with a count where inputs were mended, the same numbers as an equivalent well-formed input);
* ``error``: a clear one-line error: exit != 0, one ``error:`` line on stderr naming the file or flag at fault
  (flags it names exist in that tool), no traceback, no internal wording (hub entries: an exception of a user-facing
  type whose one-line message names the argument or file);
* ``defective``: anything else: a traceback, a misleading or path-less message, a silent wrong number, an
  announced file that is not there, a write over the inputs, a hang.

    python -m bench.bad_inputs                  # whole table, 2 cases at a time: clean / defective counts
    python -m bench.bad_inputs --only video --jobs 1 --json out/bad_inputs.json
    python -m bench.bad_inputs --subprocess     # one fresh interpreter per case (slower; same classification)

By default a case runs in a child forked from this process after the evaluators are imported (the same code path
as ``python -m``, without paying the import time 250 times); ``--subprocess`` starts a real interpreter per case.
"""

import argparse
import copy
import hashlib
import json
import math
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CAUSES = {
    "device": "--device naming an unavailable or unknown device",
    "unreadable_image": "an unreadable image or mask in a dataset",
    "output_path": "an unusable --output_dir / --output",
    "davis_sizes": "DAVIS annotations or frames of mismatched sizes",
    "mended_masks": "masks mended (resized, transposed, unknown ids): warned and counted",
    "output_name": "figure --output without / with an unknown extension, or a directory",
    "hub_offline": "hub download without network, unknown names, damaged cache",
    "image_modes": "16-bit and other image modes read with their meaning",
    "hub_kwargs": "hub entries with conflicting kwargs or another grid",
    "davis_content": "DAVIS lists and masks with nothing to score (empty list, 0/255 masks)",
    "partial_checkpoint": "checkpoints that fill only part of the backbone",
    "messages": "messages naming flags the tool lacks or internals",
    "numeric_flags": "numeric flags out of range",
    "overwrite_inputs": "outputs aimed at the inputs",
    "minor": "COCO category files, args.json, DAVIS frame names, logs",
    "flag_parsing": "unknown flags, malformed values, bad choices",
    "checkpoint": "unusable checkpoint files and mismatched --arch / --patch_size / --checkpoint_key",
    "data_tree": "missing or misplaced dataset folders and files",
    "valid": "valid inputs (controls: must give a correct result)",
}

TOOLS = {"linear": "eval.linear_segmentation", "kmeans": "eval.kmeans_segmentation",
         "video": "eval.video_segmentation", "probe": "eval.dense_probe", "clusters": "eval.visualize_clusters",
         "plot": "eval.plot_log", "hub": "hub"}
INTERNAL_WORDS = ("torch.", "Tensor", "tensor a", "non-empty list", "cv2", "index out of range", "KeyError",
                  "NoneType", "object has no attribute", "unsupported operand", "got multiple values",
                  "input arrays must have the same shape")
HUB_ERRORS = ("CheckpointError", "ValueError", "FileNotFoundError", "ConnectionError", "TypeError")
ERROR_LINE = re.compile(r"^\S+: error: ")


# ===== fixtures =====

def _save_jpg(path: Path, h: int, w: int, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path)


def _noise_image(path: Path, h: int, w: int, seed: int, mode: str = "RGB") -> None:
    """A textured image (so that features and clusters differ between pixels); grey modes get one channel."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    if mode == "RGB":
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    elif mode == "L":
        Image.fromarray(grey).save(path)
    elif mode == "I;16":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path, format="PNG")
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
        grey = rng.integers(0, 256, (12, 16), dtype=np.uint8)
        path = base / "JPEGImages" / f"{name}.jpg"
        if bits == 8:
            Image.fromarray(grey).save(path, format="PNG")
        else:
            Image.fromarray(grey.astype(np.uint16) * 257).save(path, format="PNG")
    return root


VOC_NAMES = (("2007_000032", 1), ("2007_000039", 15), ("2007_000063", 7), ("2007_000068", 3))
VOC_VAL = ("2007_000039", "2007_000063")


def build_fixtures(root: Path) -> dict:
    """The shared, read-only inputs every case starts from; returns name -> path (str)."""
    import torch

    from models import build_backbone
    from tests.trees import make_coco, make_davis, make_vocdevkit, save_png

    fx = {}
    torch.manual_seed(0)
    pico = build_backbone("vit_pico", patch_size=8).state_dict()
    args = argparse.Namespace(arch="vit_pico", patch_size=8, out_dim=64, out_dim_c=32, n_tokens=5)

    def full(state, arch_args=args):
        teacher = {f"backbone.{k}": v for k, v in state.items()}
        return {"teacher": teacher, "student": {f"module.{k}": v + 0.01 for k, v in teacher.items()},
                "epoch": 3, "args": arch_args}

    ck = root / "ckpt"
    ck.mkdir(parents=True)
    fx["ckpt"] = str(ck / "checkpoint.pth")
    torch.save(full(pico), fx["ckpt"])
    fx["bare"] = str(ck / "bare_backbone.pth")
    torch.save(pico, fx["bare"])
    fx["noargs"] = str(ck / "no_args.pth")
    torch.save({k: v for k, v in full(pico).items() if k != "args"}, fx["noargs"])
    fx["grid64"] = str(ck / "grid64.pth")  # trained at 64 px crops: an 8x8 position grid
    torch.save(full(build_backbone("vit_pico", patch_size=8, img_size=64).state_dict()), fx["grid64"])
    fx["partial1"] = str(ck / "one_tensor.pth")  # 1 of the backbone's tensors
    torch.save({"teacher": {"backbone.cls_token": pico["cls_token"]}, "args": args}, fx["partial1"])
    fx["partial_half"] = str(ck / "half.pth")
    keys = sorted(pico)
    torch.save({"teacher": {f"backbone.{k}": pico[k] for k in keys[: len(keys) // 2]}, "args": args},
               fx["partial_half"])
    fx["extra_keys"] = str(ck / "extra_keys.pth")  # every tensor plus a head and a stray entry
    extra = full(pico)
    extra["teacher"]["head.last_layer.weight"] = torch.zeros(4, 4)
    extra["teacher"]["backbone.unused_buffer"] = torch.zeros(3)
    torch.save(extra, fx["extra_keys"])
    fx["tiny"] = str(ck / "vit_tiny8.pth")
    tiny_args = argparse.Namespace(arch="vit_tiny", patch_size=8)
    torch.save(full(build_backbone("vit_tiny", patch_size=8, depth=1).state_dict(), tiny_args), fx["tiny"])
    fx["text"] = str(ck / "notes.txt")
    Path(fx["text"]).write_text("a text file, not a checkpoint\n")
    fx["empty"] = str(ck / "empty.pth")
    Path(fx["empty"]).write_bytes(b"")
    fx["truncated"] = str(ck / "truncated.pth")
    data = Path(fx["ckpt"]).read_bytes()
    Path(fx["truncated"]).write_bytes(data[: len(data) // 2])
    fx["nan"] = str(ck / "nan_weights.pth")  # a diverged run: NaN weights
    torch.save(full({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in pico.items()}),
               fx["nan"])
    fx["vits"] = str(ck / "vits16_2blocks.pth")  # the released layout's names, 2 blocks (the hub's vit_small)
    vits = build_backbone("vit_small", patch_size=16, depth=2).state_dict()
    torch.save(full(vits, argparse.Namespace(arch="vit_small", patch_size=16)), fx["vits"])

    fx["voc"] = str(root / "voc")
    make_vocdevkit(root / "voc", names=VOC_NAMES, val=VOC_VAL)
    for i, (name, _) in enumerate(VOC_NAMES):
        _noise_image(root / "voc" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{name}.jpg", 12, 16, i)
    fx["voc_grey8"] = str(_grey_voc(root, 8))
    fx["voc_grey16"] = str(_grey_voc(root, 16))
    fx["coco"] = str(root / "coco")
    make_coco(root / "coco", n_images=3, layout="leopart")
    fx["davis"] = str(root / "davis")
    make_davis(root / "davis", seqs=("bike", "dog"), n_frames=4)
    for seq in ("bike", "dog"):
        for t in range(4):
            _noise_image(root / "davis" / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", 8, 10, 10 * t + len(seq))
    # an 11-frame sequence: file-name order and numeric order differ once the names lose their zero padding
    fx["davis_long"] = str(root / "davis_long")
    make_davis(root / "davis_long", seqs=("walk",), n_frames=11)
    for t in range(11):
        _noise_image(root / "davis_long" / "JPEGImages" / "480p" / "walk" / f"{t:05d}.jpg", 8, 10, t)
        mask = np.zeros((8, 10), np.uint8)
        mask[2:6, (t % 7):(t % 7) + 3] = 1
        save_png(root / "davis_long" / "Annotations" / "480p" / "walk" / f"{t:05d}.png", mask, palette=True)
    fx["image"] = str(root / "photo.jpg")
    _noise_image(Path(fx["image"]), 40, 48, 7)
    fx["image_grey8"] = str(root / "grey8.png")
    _noise_image(Path(fx["image_grey8"]), 40, 48, 8, "L")
    fx["image_grey16"] = str(root / "grey16.png")
    _noise_image(Path(fx["image_grey16"]), 40, 48, 8, "I;16")
    fx["log"] = str(root / "run")
    _fabricate_log(Path(fx["log"]))
    return fx


def _fabricate_log(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"train_loss": 9.0 - e, "train_ent": 4.0, "train_ent_batch": 5.0, "train_kl": 0.5, "train_lr": 1e-3,
              "train_mean_k": 3.0, "epoch": e} for e in range(n)]
    (folder / "log.txt").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "args.json").write_text(json.dumps({"out_dim": 256, "out_dim_c": 64, "arch": "vit_pico"}))


# ===== fixture edits (a case gets private copies under <case>/in) =====

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


def with_voc(edit: Callable[[Path], None]) -> Callable:
    def setup(case_dir, fx):
        root = private(fx, case_dir, "voc")
        edit(voc_base(root))
        return {"voc": str(root)}
    return setup


def with_coco(edit: Callable[[Path], None]) -> Callable:
    def setup(case_dir, fx):
        root = private(fx, case_dir, "coco")
        edit(root)
        return {"coco": str(root)}
    return setup


def with_davis(edit: Callable[[Path], None], key: str = "davis") -> Callable:
    def setup(case_dir, fx):
        root = private(fx, case_dir, key)
        edit(root)
        return {key: str(root)}
    return setup


def with_log(edit: Callable[[Path], None]) -> Callable:
    def setup(case_dir, fx):
        root = private(fx, case_dir, "log")
        edit(root)
        return {"log": str(root)}
    return setup


def make_file(name: str, content: bytes | str = "x") -> Callable:
    """Setup: a file ``<case>/<name>`` (placeholder {file})."""
    def setup(case_dir, fx):
        path = case_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return {"file": str(path)}
    return setup


def make_dir(name: str) -> Callable:
    def setup(case_dir, fx):
        path = case_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return {"folder": str(path)}
    return setup


def chain(*setups: Callable) -> Callable:
    def setup(case_dir, fx):
        extra = {}
        for s in setups:
            extra.update(s(case_dir, {**fx, **extra}))
        return extra
    return setup


# ===== cases =====

@dataclass
class Case:
    id: str
    cause: str
    tool: str  # key of TOOLS
    argv: list | str  # CLI arguments (placeholders: fixture names, {out}, {case}), or hub code
    expect: tuple = ("error",)  # acceptable outcomes: "ok" and / or "error"
    names: tuple = ()  # an error must name one of these (formatted like argv)
    setup: Callable | None = None
    check: Callable | None = None  # (Run) -> None when a successful result is right, else the reason
    ref: str | None = None  # id of a case whose run the check compares with
    env: dict = field(default_factory=dict)
    out: str = ""  # where the results go when not {out} (formatted like argv)


@dataclass
class Run:
    case: Case
    command: list
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    case_dir: Path | None = None
    changed_inputs: list = field(default_factory=list)
    outcome: str = ""
    detail: str = ""
    runs: dict | None = None  # id -> Run, for checks that compare with a reference case

    @property
    def out(self) -> Path:
        return Path(self.case.out) if self.case.out else self.case_dir / "out"

    def ref(self) -> "Run":
        return self.runs[self.case.ref]


# Base command lines (vit_pico/8, tiny sizes). {ckpt} etc. are fixture placeholders; {out} the case's output dir.
A = ["--arch", "vit_pico", "--patch_size", "8", "--pretrained_weights", "{ckpt}"]
LIN = [*A, "--input_size", "32", "--epochs", "1", "--batch_size", "2", "--num_workers", "0", "--output_dir", "{out}"]
LIN_VOC = [*LIN, "--dataset", "voc", "--data_path", "{voc}"]
LIN_COCO = [*LIN, "--dataset", "coco_things", "--data_path", "{coco}"]
LIN_SYN = [*LIN, "--dataset", "synthetic", "--synthetic_train_images", "4", "--synthetic_val_images", "2"]
KM = [*A, "--input_size", "32", "--n_last_blocks", "1", "--pca_dim", "4", "--n_clusters", "0", "--n_seeds", "1",
      "--n_restarts", "1", "--n_iter", "5", "--mask_size", "16", "--batch_size", "2", "--num_workers", "0",
      "--output_dir", "{out}"]
KM_VOC = [*KM, "--dataset", "voc", "--data_path", "{voc}"]
KM_COCO = [*KM, "--dataset", "coco_stuff", "--data_path", "{coco}"]
KM_SYN = [*KM, "--dataset", "synthetic", "--synthetic_val_images", "3"]
VID = [*A, "--data_path", "{davis}", "--short_side", "64", "--output_dir", "{out}"]
PRB = [*A, "--input_size", "32", "--n_seeds", "1", "--max_iter", "5", "--n_clusters", "0", "--pca_dim", "4",
       "--weight_decays", "0.1", "0.01", "--output_dir", "{out}"]
PRB_SYN = [*PRB, "--dataset", "synthetic", "--pool_images", "8", "--train_images", "4", "--val_images", "4"]
PRB_VOC = [*PRB, "--dataset", "voc", "--data_path", "{voc}", "--pool_images", "0", "--train_images", "3",
           "--val_images", "0"]
CLU = [*A, "--global_crops_size", "32", "--synthetic_size", "48", "--output", "{out}/clusters.png"]
PLOT = ["{log}", "--output", "{out}/curves.png"]
BASE = {"linear": LIN_VOC, "kmeans": KM_VOC, "video": VID, "probe": PRB_SYN, "clusters": CLU}


def replace_flag(argv: list, flag: str, *values: str) -> list:
    """``argv`` with ``flag``'s value(s) replaced (appended when absent)."""
    argv = list(argv)
    if flag in argv:
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        return argv[:i] + [flag, *values] + argv[j:]
    return argv + [flag, *values]


def with_flags(argv: list, **flags) -> list:
    for name, value in flags.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        argv = replace_flag(argv, f"--{name}", *[str(v) for v in values])
    return argv


# ----- checks of a successful run -----

def _finite01(value, scale: float = 1.0) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= scale


def _json(run: Run, name: str) -> dict:
    path = run.out / name
    if not path.is_file():
        raise AssertionError(f"{name} not written")
    return json.loads(path.read_text())


def check_linear(run: Run):
    res = _json(run, "results.json")
    return None if _finite01(res["best"]["miou"]) else f"mIoU {res['best']['miou']}"


def check_kmeans(run: Run):
    res = _json(run, "kmeans_results.json")["results"]
    bad = [v["miou_mean"] for v in res.values() if not _finite01(v["miou_mean"])]
    return f"mIoU {bad}" if bad or not res else None


def check_probe(run: Run):
    res = _json(run, "dense_probe.json")
    values = [res["linear"]["miou_mean"]] + [r["miou_mean"] for r in res["kmeans"].values()]
    bad = [v for v in values if not _finite01(v, 100.0)]
    return f"mIoU {bad}" if bad else None


def check_video(run: Run):
    res = _json(run, "davis_results.json")
    jf = res.get("J&F-Mean")
    return None if _finite01(jf) else f"J&F-Mean {jf}"


def check_announced_file(run: Run):
    """The file a figure tool says it wrote is there and is an image."""
    match = re.search(r"wrote (\S+)", run.stdout)
    if not match:
        return "no 'wrote' line"
    path = Path(match.group(1))
    if not path.is_absolute():
        path = run.case_dir / path
    if not path.is_file():
        return f"announced {match.group(1)} but no such file"
    if path.name.startswith("."):
        return f"wrote a hidden file {path.name}"
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception:
        if path.suffix not in (".pdf", ".svg", ".eps", ".ps"):
            return f"{path.name} is not an image"
    return None


CHECKS = {"linear": check_linear, "kmeans": check_kmeans, "video": check_video, "probe": check_probe,
          "clusters": check_announced_file, "plot": check_announced_file}


def warns(pattern: str, base: Callable | None = None) -> Callable:
    """Check: the base check, plus a warning line matching ``pattern`` holding a count."""
    def check(run: Run):
        text = run.stdout + run.stderr
        lines = [ln for ln in text.splitlines() if re.search(pattern, ln, re.I)]
        if not any(re.search(r"\d", ln) and re.search("warn", ln, re.I) for ln in lines):
            return f"no warning with a count matching {pattern!r}"
        return base(run) if base else None
    return check


def json_has(name: str, key: str, base: Callable) -> Callable:
    def check(run: Run):
        res = _json(run, name)
        fixes = res.get(key)
        if not fixes or not any(v for part in fixes.values() for v in (part.values() if isinstance(part, dict)
                                                                        else [part])):
            return f"{name} has no {key} count"
        return base(run)
    return check


def same_result(name: str, getter: Callable, base: Callable) -> Callable:
    """Check: the result equals the reference case's (an equivalent, well-formed input)."""
    def check(run: Run):
        reason = base(run)
        if reason:
            return reason
        ref = run.ref()
        if ref.rc != 0:
            return f"reference {ref.case.id} failed"
        mine, theirs = getter(_json(run, name)), getter(_json(ref, name))
        if not np.allclose(mine, theirs, atol=1e-6, equal_nan=True):
            return f"{mine} here, {theirs} for the equivalent input ({ref.case.id})"
        return None
    return check


def same_picture(run: Run):
    reason = check_announced_file(run)
    if reason:
        return reason
    ref = run.ref()
    a, b = run.out / "clusters.png", ref.out / "clusters.png"
    if not (a.is_file() and b.is_file()):
        return "picture missing"
    if not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))):
        diff = np.abs(np.asarray(Image.open(a), dtype=float) - np.asarray(Image.open(b), dtype=float)).mean()
        return f"picture differs from the 8-bit twin's (mean |diff| {diff:.1f})"
    return None


def no_false_absence(run: Run):
    """An args.json that is there must not be reported absent."""
    if "no args.json" in run.stdout + run.stderr:
        return "says 'no args.json' about a file that is there"
    return check_announced_file(run)


def kmeans_mious(res):
    return [r["miou"] for v in res["results"].values() for r in v["runs"]]


def davis_jf(res):
    return [res["J&F-Mean"], res["J-Mean"], res["F-Mean"]]


def video_not_all_nan(run: Run):
    res = _json(run, "davis_results.json")
    if res.get("J&F-Mean") is None:
        return "exit 0 with no score (J&F-Mean NaN / absent)"
    return check_video(run)


# ----- the table -----

def cases() -> list[Case]:
    out: list[Case] = []

    def add(*args, **kwargs):
        out.append(Case(*args, **kwargs))

    cli = ("linear", "kmeans", "video", "probe", "clusters")

    # valid inputs: every tool must give a correct result
    add("valid-linear-voc", "valid", "linear", LIN_VOC, ("ok",), check=check_linear)
    add("valid-linear-coco", "valid", "linear", LIN_COCO, ("ok",), check=check_linear)
    add("valid-linear-synthetic", "valid", "linear", LIN_SYN, ("ok",), check=check_linear)
    add("valid-linear-leopart", "valid", "linear", [*LIN_VOC, "--protocol", "leopart"], ("ok",), check=check_linear)
    add("valid-kmeans-voc", "valid", "kmeans", KM_VOC, ("ok",), check=check_kmeans)
    add("valid-kmeans-coco", "valid", "kmeans", KM_COCO, ("ok",), check=check_kmeans)
    add("valid-kmeans-synthetic", "valid", "kmeans", KM_SYN, ("ok",), check=check_kmeans)
    add("valid-video", "valid", "video", VID, ("ok",), check=check_video)
    add("valid-probe-synthetic", "valid", "probe", PRB_SYN, ("ok",), check=check_probe)
    add("valid-probe-voc", "valid", "probe", PRB_VOC, ("ok",), check=check_probe)
    add("valid-clusters-synthetic", "valid", "clusters", CLU, ("ok",), check=check_announced_file)
    add("valid-clusters-image", "valid", "clusters", [*CLU, "--image", "{image}"], ("ok",), check=check_announced_file)
    add("valid-plot", "valid", "plot", PLOT, ("ok",), check=check_announced_file)
    add("valid-plot-default-output", "valid", "plot", ["{log}"], ("ok",), check=check_announced_file,
        setup=lambda d, fx: {"log": str(private(fx, d, "log"))})
    add("valid-hub-croc_vit", "valid", "hub", "m = hubconf.croc_vit(weights='{ckpt}'); assert m.patch_size == 8",
        ("ok",))
    add("valid-hub-bare-with-arch", "valid", "hub",
        "hubconf.croc_vit(weights='{bare}', arch='vit_pico', patch_size=8)", ("ok",))
    add("valid-hub-vits16-file", "valid", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2)", ("ok",))
    add("valid-hub-torch-hub-load", "valid", "hub",
        "torch.hub.load(ROOT, 'croc_vit', source='local', weights='{ckpt}')", ("ok",))
    add("valid-extra-keys-linear", "valid", "linear", replace_flag(LIN_VOC, "--pretrained_weights", "{extra_keys}"),
        ("ok",), check=check_linear)
    add("valid-video-student", "valid", "video", [*VID, "--checkpoint_key", "student"], ("ok",), check=check_video)

    # 1. --device
    for tool in cli:
        for dev in ("cuda", "cuda:7", "gpu", "mps"):
            add(f"device-{tool}-{dev}", "device", tool, with_flags(BASE[tool], device=dev), names=("--device",))

    # 2. unreadable images and masks
    jpeg = "JPEGImages"

    def bad_voc_image(name, how):
        def edit(base):
            path = base / jpeg / f"{name}.jpg"
            if how == "truncated":
                truncate(path, 0.3)
            elif how == "empty":
                path.write_bytes(b"")
            else:
                path.write_text("<html>404 Not Found</html>")
        return edit

    for tool, argv in (("linear", LIN_VOC), ("kmeans", KM_VOC), ("probe", PRB_VOC)):
        for name, how in (("2007_000039", "truncated"), ("2007_000063", "empty"), ("2007_000063", "html")):
            add(f"unreadable-{tool}-voc-{how}", "unreadable_image", tool, argv, names=(name,),
                setup=with_voc(bad_voc_image(name, how)))
        add(f"unreadable-{tool}-voc-mask", "unreadable_image", tool, argv, names=("2007_000039",),
            setup=with_voc(lambda b: truncate(b / "SegmentationClass" / "2007_000039.png", 0.4)))
    for tool, argv in (("linear", LIN_COCO), ("kmeans", KM_COCO)):
        add(f"unreadable-{tool}-coco-image", "unreadable_image", tool, argv, names=("000000000001",),
            setup=with_coco(lambda r: truncate(r / "coco/images/val2017/000000000001.jpg", 0.3)))
        add(f"unreadable-{tool}-coco-mask", "unreadable_image", tool, argv, names=("000000000001",),
            setup=with_coco(lambda r: (r / "annotations/annotations/stuff_annotations/stuff_val2017_pixelmaps/"
                                           "000000000001.png").write_bytes(b"")
                            or (r / "annotations/panoptic_annotations/semantic_segmentation_val2017/"
                                    "000000000001.png").write_bytes(b"")))
    frames = "JPEGImages/480p/bike"
    add("unreadable-video-frame", "unreadable_image", "video", VID, names=("00002",),
        setup=with_davis(lambda r: truncate(r / frames / "00002.jpg", 0.3)))
    add("unreadable-video-first-frame", "unreadable_image", "video", VID, names=("00000",),
        setup=with_davis(lambda r: (r / frames / "00000.jpg").write_bytes(b"")))
    add("unreadable-video-annotation", "unreadable_image", "video", VID, names=("00002",),
        setup=with_davis(lambda r: truncate(r / "Annotations/480p/bike/00002.png", 0.3)))
    add("unreadable-video-first-annotation", "unreadable_image", "video", VID, names=("00000",),
        setup=with_davis(lambda r: (r / "Annotations/480p/bike/00000.png").write_text("not a png")))
    for tool, argv in (("linear", LIN_VOC), ("kmeans", KM_VOC)):  # the error crosses a DataLoader worker
        add(f"unreadable-{tool}-voc-workers", "unreadable_image", tool, with_flags(argv, num_workers=2),
            names=("2007_000039",), setup=with_voc(bad_voc_image("2007_000039", "truncated")))
    add("unreadable-clusters-truncated", "unreadable_image", "clusters", [*CLU, "--image", "{file}"],
        names=("bad.jpg",), setup=lambda d, fx: make_file("bad.jpg", Path(fx["image"]).read_bytes()[:300])(d, fx))
    add("unreadable-clusters-text", "unreadable_image", "clusters", [*CLU, "--image", "{file}"],
        names=("notes.png",), setup=make_file("notes.png", "not an image"))
    add("unreadable-clusters-missing", "unreadable_image", "clusters", [*CLU, "--image", "{out}/none.jpg"],
        names=("none.jpg",))

    # 3. unusable output folders / files
    for tool in ("linear", "kmeans", "video", "probe"):
        add(f"output-{tool}-is-file", "output_path", tool, with_flags(BASE[tool], output_dir="{file}"),
            names=("--output_dir", "{file}"), setup=make_file("taken"))
        add(f"output-{tool}-under-file", "output_path", tool, with_flags(BASE[tool], output_dir="{file}/sub"),
            names=("--output_dir", "{file}"), setup=make_file("taken"))
        add(f"output-{tool}-not-writable", "output_path", tool, with_flags(BASE[tool], output_dir="/sys/croc_out"),
            names=("--output_dir", "/sys/croc_out"))
    add("output-clusters-under-file", "output_path", "clusters", with_flags(CLU, output="{file}/c.png"),
        names=("--output", "{file}"), setup=make_file("taken"))
    add("output-clusters-not-writable", "output_path", "clusters", with_flags(CLU, output="/sys/croc_out/c.png"),
        names=("--output", "/sys/croc_out"))
    add("output-plot-under-file", "output_path", "plot", ["{log}", "--output", "{file}/c.png"],
        names=("--output", "{file}"), setup=make_file("taken"))
    add("output-plot-not-writable", "output_path", "plot", ["{log}", "--output", "/sys/croc_out/c.png"],
        names=("--output", "/sys/croc_out"))

    # 4. DAVIS sizes
    def resize_annotations(seq, factor, which=None):
        def edit(root):
            for t, path in enumerate(sorted((root / "Annotations/480p" / seq).glob("*.png"))):
                if which is None or t in which:
                    img = Image.open(path)
                    img.resize((img.width * factor, img.height * factor), Image.NEAREST).save(path)
        return edit

    def resize_frame(seq, t, size):
        def edit(root):
            path = root / "JPEGImages/480p" / seq / f"{t:05d}.jpg"
            Image.open(path).resize(size).save(path)
        return edit

    add("davis-annotations-full-resolution", "davis_sizes", "video", VID, names=("Annotations",),
        setup=with_davis(resize_annotations("bike", 2)))
    add("davis-one-annotation-bigger", "davis_sizes", "video", VID, names=("00002.png",),
        setup=with_davis(resize_annotations("bike", 2, which={2})))
    add("davis-first-annotation-bigger", "davis_sizes", "video", VID, names=("00000.png",),
        setup=with_davis(resize_annotations("dog", 3, which={0})))
    add("davis-frame-size-varies", "davis_sizes", "video", VID, names=("00002.jpg",),
        setup=with_davis(resize_frame("bike", 2, (20, 16))))
    add("davis-first-frame-other-size", "davis_sizes", "video", VID, names=("00000",),
        setup=with_davis(resize_frame("dog", 0, (30, 24))))
    add("davis-annotation-rgb", "davis_sizes", "video", VID, names=("00001.png",),
        setup=with_davis(lambda r: Image.open(r / "Annotations/480p/bike/00001.png").convert("RGB").save(
            r / "Annotations/480p/bike/00001.png")))

    # 5. mended masks: a warning with a count (and the count in the result file), like linear_segmentation
    def transpose_mask(base):
        path = base / "SegmentationClass" / "2007_000039.png"
        img = Image.open(path)
        img.transpose(Image.TRANSPOSE).save(path)

    def halve_mask(base):
        path = base / "SegmentationClass" / "2007_000063.png"
        img = Image.open(path)
        img.resize((img.width // 2, img.height // 2), Image.NEAREST).save(path)

    def unknown_coco_id(root):
        path = root / "annotations/annotations/stuff_annotations/stuff_val2017_pixelmaps/000000000000.png"
        mask = np.asarray(Image.open(path)).copy()
        mask[0, 0] = 250
        Image.fromarray(mask).save(path)

    for tool, voc_argv, coco_argv, result in (("linear", LIN_VOC, replace_flag(LIN_COCO, "--dataset", "coco_stuff"),
                                               "results.json"),
                                              ("kmeans", KM_VOC, KM_COCO, "kmeans_results.json"),
                                              ("probe", PRB_VOC, with_flags(PRB_VOC, dataset="coco_stuff",
                                                                            data_path="{coco}"),
                                               "dense_probe.json")):
        base = CHECKS[tool]
        add(f"mended-{tool}-transposed", "mended_masks", tool, voc_argv, ("ok",), setup=with_voc(transpose_mask),
            check=warns("mended|resized", json_has(result, "mask_fixes", base)))
        add(f"mended-{tool}-half-size", "mended_masks", tool, voc_argv, ("ok",), setup=with_voc(halve_mask),
            check=warns("mended|resized", json_has(result, "mask_fixes", base)))
        add(f"mended-{tool}-unknown-coco-id", "mended_masks", tool, coco_argv, ("ok",),
            setup=with_coco(unknown_coco_id), check=warns("mended|category", json_has(result, "mask_fixes", base)))

    # 6. figure names
    for tool, argv in (("plot", PLOT), ("clusters", CLU)):
        add(f"name-{tool}-dir-slash", "output_name", tool, with_flags(argv, output="{folder}/"), ("ok", "error"),
            names=("--output",), setup=make_dir("figs"), check=check_announced_file)
        add(f"name-{tool}-existing-dir", "output_name", tool, with_flags(argv, output="{folder}"), ("ok", "error"),
            names=("--output",), setup=make_dir("figs"), check=check_announced_file)
        add(f"name-{tool}-no-extension", "output_name", tool, with_flags(argv, output="{out}/figure"),
            ("ok", "error"), names=("--output",), check=check_announced_file)
        add(f"name-{tool}-jpg", "output_name", tool, with_flags(argv, output="{out}/figure.jpg"), ("ok",),
            check=check_announced_file)
        add(f"name-{tool}-unknown-extension", "output_name", tool, with_flags(argv, output="{out}/figure.xyz"),
            names=("--output",))
        add(f"name-{tool}-upper-png", "output_name", tool, with_flags(argv, output="{out}/figure.PNG"), ("ok",),
            check=check_announced_file)

    # 7. hub names and downloads (offline: a proxy that refuses every connection; an empty hub cache)
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "TORCH_HOME": "{case}/torch_home"}
    for call in ("hubconf.croc_vits16()", "hubconf.croc_vits16(weights='in1k')",
                 "hubconf.croc_vits16_full(weights='coco+')", "hubconf.croc_vit(weights='coco')"):
        add(f"hub-offline-{call.split('(')[0].split('.')[1]}-{call.split('=')[-1].strip(')').strip(chr(39))}",
            "hub_offline", "hub", call, names=("kuleuven", "download", "network"), env=offline)

    def damaged_cache(case_dir, fx):
        folder = case_dir / "torch_home" / "hub" / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "croc_vits16_coco_full.pth").write_bytes(Path(fx["ckpt"]).read_bytes()[:1000])
        return {}

    add("hub-damaged-cache", "hub_offline", "hub", "hubconf.croc_vits16()", names=("croc_vits16_coco_full",),
        env=offline, setup=damaged_cache)
    add("hub-name-typo", "hub_offline", "hub", "hubconf.croc_vits16(weights='cocco')", names=("cocco",), env=offline)
    add("hub-missing-file", "hub_offline", "hub", "hubconf.croc_vit(weights='{case}/none.pth')", names=("none.pth",))

    # 8. image modes: 16-bit greyscale read as its 8-bit twin; other modes read
    add("modes-kmeans-grey8", "image_modes", "kmeans", with_flags(KM_VOC, data_path="{voc_grey8}"), ("ok",),
        check=check_kmeans)
    add("modes-kmeans-grey16", "image_modes", "kmeans", with_flags(KM_VOC, data_path="{voc_grey16}"), ("ok",),
        ref="modes-kmeans-grey8", check=same_result("kmeans_results.json", kmeans_mious, check_kmeans))
    add("modes-linear-grey8", "image_modes", "linear", with_flags(LIN_VOC, data_path="{voc_grey8}"), ("ok",),
        check=check_linear)
    add("modes-linear-grey16", "image_modes", "linear", with_flags(LIN_VOC, data_path="{voc_grey16}"), ("ok",),
        ref="modes-linear-grey8",
        check=same_result("results.json", lambda r: [h["train_loss"] for h in r["history"]], check_linear))
    add("modes-probe-grey8", "image_modes", "probe", with_flags(PRB_VOC, data_path="{voc_grey8}"), ("ok",),
        check=check_probe)
    add("modes-probe-grey16", "image_modes", "probe", with_flags(PRB_VOC, data_path="{voc_grey16}"), ("ok",),
        ref="modes-probe-grey8", check=same_result("dense_probe.json", lambda r: r["linear"]["mious"], check_probe))

    def davis_grey(bits):
        def edit(root):
            for path in (root / "JPEGImages/480p").glob("*/*.jpg"):
                grey = np.asarray(Image.open(path).convert("L"))
                img = Image.fromarray(grey) if bits == 8 else Image.fromarray(grey.astype(np.uint16) * 257)
                img.save(path, format="PNG")
        return edit

    add("modes-video-grey8", "image_modes", "video", VID, ("ok",), setup=with_davis(davis_grey(8)), check=check_video)
    add("modes-video-grey16", "image_modes", "video", VID, ("ok",), setup=with_davis(davis_grey(16)),
        ref="modes-video-grey8", check=same_result("davis_results.json", davis_jf, check_video))
    add("modes-clusters-grey8", "image_modes", "clusters", [*CLU, "--image", "{image_grey8}"], ("ok",),
        check=check_announced_file)
    add("modes-clusters-grey16", "image_modes", "clusters", [*CLU, "--image", "{image_grey16}"], ("ok",),
        ref="modes-clusters-grey8", check=same_picture)

    def coco_mode(mode):
        def edit(root):
            for path in (root / "coco/images/val2017").glob("*.jpg"):
                img = Image.open(path)
                if mode == "CMYK":
                    img.convert("CMYK").save(path, format="JPEG")
                else:
                    path.unlink()
                    img.convert(mode).save(path.with_suffix(".png"))
        return edit

    for mode in ("RGBA", "LA", "P", "CMYK", "1"):
        add(f"modes-kmeans-coco-{mode}", "image_modes", "kmeans", KM_COCO, ("ok",), setup=with_coco(coco_mode(mode)),
            check=check_kmeans)

    # 9. hub kwargs and grids
    add("hubkw-vits16-patch8", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2, patch_size=8)",
        names=("patch_size",))
    add("hubkw-vits16-embed-dim", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2, embed_dim=192)",
        names=("embed_dim", "another architecture", "{vits}"))
    add("hubkw-croc_vit-grid64", "hub_kwargs", "hub",
        "m = hubconf.croc_vit(weights='{grid64}'); m(torch.zeros(1, 3, 64, 64))", ("ok",))
    add("hubkw-croc_vit-grid64-infer-224", "hub_kwargs", "hub",
        "m = hubconf.croc_vit(weights='{grid64}'); m(torch.zeros(1, 3, 224, 224))", ("ok",))
    add("hubkw-croc_vit-wrong-arch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{ckpt}', arch='vit_tiny')",
        names=("{ckpt}", "arch"))
    add("hubkw-croc_vit-wrong-patch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{ckpt}', patch_size=16)",
        names=("{ckpt}", "patch_size"))
    add("hubkw-croc_vit-unknown-arch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{bare}', arch='vit_huge', "
        "patch_size=8)", names=("vit_huge",))
    add("hubkw-croc_vit-bare-no-arch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{bare}')", names=("arch",))
    add("hubkw-vits16-pico-file", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{ckpt}')", names=("{ckpt}",))
    add("hubkw-vits16-bad-key", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2, "
        "checkpoint_key='momentum')", names=("momentum",))
    add("hubkw-full-bare-file", "hub_kwargs", "hub", "hubconf.croc_vits16_full(weights='{bare}')", names=("{bare}",))
    add("hubkw-croc_vit-unknown-kwarg", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{ckpt}', colour='red')",
        names=("colour",))
    add("hubkw-croc_vit-text-file", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{text}')", names=("notes.txt",))

    # 10. DAVIS lists and masks with nothing to score
    def write_list(text):
        return with_davis(lambda r: (r / "ImageSets/2017/val.txt").write_text(text))

    add("davis-empty-list", "davis_content", "video", VID, names=("val.txt",), setup=write_list(""))
    add("davis-blank-list", "davis_content", "video", VID, names=("val.txt",), setup=write_list("\n  \n"))
    add("davis-listed-twice", "davis_content", "video", VID, ("ok", "error"), names=("bike",),
        setup=write_list("bike\nbike\n"), check=check_video)

    def binary_masks(root):
        for path in (root / "Annotations/480p").glob("*/*.png"):
            mask = np.asarray(Image.open(path))
            Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L").save(path)

    add("davis-masks-0-255", "davis_content", "video", VID, ("error",), names=("Annotations",),
        setup=with_davis(binary_masks), check=video_not_all_nan)
    add("davis-two-frames", "davis_content", "video", VID, ("ok", "error"), names=("dog",),
        setup=with_davis(lambda r: [p.unlink() for p in sorted((r / "JPEGImages/480p/dog").glob("*.jpg"))[2:]]),
        check=video_not_all_nan)
    add("davis-missing-split", "davis_content", "video", [*VID, "--split", "test-dev"], names=("test-dev",))
    add("davis-no-frames", "davis_content", "video", VID, names=("bike",),
        setup=with_davis(lambda r: [p.unlink() for p in (r / "JPEGImages/480p/bike").glob("*.jpg")]))
    add("davis-png-frames", "davis_content", "video", VID, ("ok", "error"), names=("bike", ".png"),
        setup=with_davis(lambda r: [Image.open(p).save(p.with_suffix(".png")) or p.unlink()
                                    for p in (r / "JPEGImages/480p/bike").glob("*.jpg")]), check=check_video)
    add("davis-only-void-everywhere", "davis_content", "video", VID, ("error",), names=("object",),
        setup=with_davis(lambda r: [Image.fromarray(np.zeros((8, 10), np.uint8), mode="L").save(p)
                                    for p in (r / "Annotations/480p").glob("*/*.png")]), check=video_not_all_nan)

    # 11. partial checkpoints
    for tool in cli:
        for key in ("partial1", "partial_half"):
            add(f"partial-{tool}-{key}", "partial_checkpoint", tool,
                replace_flag(BASE[tool], "--pretrained_weights", "{" + key + "}"), names=(Path(key).name, ".pth"))

    # 12. messages: flags the tool has, no internals
    add("msg-kmeans-synthetic-0-images", "messages", "kmeans", with_flags(KM_SYN, synthetic_val_images=0),
        names=("--synthetic_val_images",))
    add("msg-linear-synthetic-0-train", "messages", "linear", with_flags(LIN_SYN, synthetic_train_images=0),
        names=("--synthetic_train_images",))
    add("msg-linear-synthetic-0-val", "messages", "linear", with_flags(LIN_SYN, synthetic_val_images=0),
        names=("--synthetic_val_images",))
    add("msg-probe-synthetic-0-pool", "messages", "probe", with_flags(PRB_SYN, pool_images=0),
        names=("--pool_images",))
    add("msg-probe-synthetic-0-val", "messages", "probe", with_flags(PRB_SYN, val_images=0), names=("--val_images",))
    add("msg-kmeans-synthetic-tiny-size", "messages", "kmeans", with_flags(KM_SYN, input_size=8),
        ("ok", "error"), names=("--input_size",), check=check_kmeans)
    add("msg-probe-synthetic-size-8", "messages", "probe", with_flags(PRB_SYN, synthetic_size=8),
        names=("--synthetic_size",))
    add("msg-clusters-synthetic-size-8", "messages", "clusters", with_flags(CLU, synthetic_size=8),
        names=("--synthetic_size",))
    for tool, argv in (("kmeans", KM_VOC), ("linear", LIN_VOC), ("probe", PRB_VOC)):
        add(f"msg-{tool}-n-last-blocks-0", "messages", tool, with_flags(argv, n_last_blocks=0),
            names=("--n_last_blocks",))
        add(f"msg-{tool}-empty-val-list", "messages", tool, argv, names=("val.txt", "val"),
            setup=with_voc(lambda b: (b / "ImageSets/Segmentation/val.txt").write_text("")))
        add(f"msg-{tool}-empty-train-list", "messages", tool, argv, ("error", "ok"), names=("trainaug.txt", "train"),
            setup=with_voc(lambda b: (b / "ImageSets/Segmentation/trainaug.txt").write_text("")),
            check=CHECKS[tool])
    add("msg-kmeans-pca-above-features", "messages", "kmeans", with_flags(KM_VOC, pca_dim=1000), names=("--pca_dim",))
    add("msg-probe-pca-above-features", "messages", "probe", with_flags(PRB_SYN, pca_dim=1000), names=("--pca_dim",))
    add("msg-video-short-side-0", "messages", "video", with_flags(VID, short_side=0), names=("--short_side",))

    # 13. numeric flags
    num = [
        ("kmeans", KM_VOC, {"n_restarts": 0}), ("kmeans", KM_VOC, {"mask_size": 0}),
        ("kmeans", KM_VOC, {"n_last_blocks": 5}), ("kmeans", KM_VOC, {"input_size": 0}),
        ("kmeans", KM_VOC, {"input_size": -32}), ("kmeans", KM_VOC, {"n_iter": 0}),
        ("kmeans", KM_VOC, {"pca_dim": 0}), ("kmeans", KM_VOC, {"n_seeds": 0}),
        ("kmeans", KM_VOC, {"batch_size": 0}), ("kmeans", KM_VOC, {"n_clusters": -1}),
        ("kmeans", KM_VOC, {"n_clusters": 100000}), ("kmeans", KM_VOC, {"num_workers": -1}),
        ("linear", LIN_VOC, {"epochs": 0}), ("linear", LIN_VOC, {"lr": -1}), ("linear", LIN_VOC, {"lr": "nan"}),
        ("linear", LIN_VOC, {"lr": 0}), ("linear", LIN_VOC, {"batch_size": 0}),
        ("linear", LIN_VOC, {"n_last_blocks": 5}),
        ("linear", LIN_VOC, {"input_size": 0}), ("linear", LIN_VOC, {"border_label": 300}),
        ("linear", LIN_VOC, {"num_workers": -1}),
        ("linear", LIN_COCO, {"coco_train_fraction": 0}), ("linear", LIN_COCO, {"coco_train_fraction": 1.5}),
        ("linear", LIN_COCO, {"coco_train_fraction": -0.5}), ("linear", LIN_COCO, {"coco_train_fraction": 0.01}),
        ("video", VID, {"topk": 0}), ("video", VID, {"topk": -1}), ("video", VID, {"topk": 100000}),
        ("video", VID, {"temperature": 0}), ("video", VID, {"temperature": -0.1}),
        ("video", VID, {"temperature": "nan"}), ("video", VID, {"n_last_frames": -1}),
        ("video", VID, {"size_mask_neighborhood": -1}), ("video", VID, {"short_side": 10}),
        ("probe", PRB_SYN, {"pca_dim": 0}), ("probe", PRB_SYN, {"weight_decays": -0.1}),
        ("probe", PRB_SYN, {"weight_decays": "nan"}), ("probe", PRB_SYN, {"weight_decays": "inf"}),
        ("probe", PRB_SYN, {"holdout_fraction": 0.9}), ("probe", PRB_SYN, {"holdout_fraction": 0}),
        ("probe", PRB_SYN, {"train_images": 100}), ("probe", PRB_SYN, {"max_iter": 0}),
        ("probe", PRB_SYN, {"n_last_blocks": 5}), ("probe", PRB_SYN, {"kmeans_restarts": 0}),
        ("probe", PRB_SYN, {"n_clusters": -1}), ("probe", PRB_SYN, {"batch_size": 0}),
        ("probe", PRB_SYN, {"input_size": 0}), ("probe", PRB_SYN, {"n_seeds": 0}),
        ("clusters", CLU, {"global_crops_size": 0}), ("clusters", CLU, {"global_crops_scale": [0, 0]}),
        ("clusters", CLU, {"global_crops_scale": [0.9, 0.5]}), ("clusters", CLU, {"global_crops_scale": [1.5, 2]}),
        ("clusters", CLU, {"head": 7}), ("clusters", CLU, {"n_tokens": 1}), ("clusters", CLU, {"synthetic_size": 0}),
    ]
    add("num-kmeans-n_clusters-0-above-vectors", "numeric_flags", "kmeans", with_flags(KM_VOC, input_size=16),
        names=("--n_clusters",), setup=with_voc(lambda b: (b / "ImageSets/Segmentation/val.txt").write_text(
            "2007_000039\n")))  # 21 classes, 4 feature vectors
    add("num-linear-cache_max_gb--1", "numeric_flags", "linear", with_flags(LIN_VOC, cache_max_gb=-1), ("ok", "error"),
        names=("--cache_max_gb",), check=check_linear)
    for tool, argv, flags in num:
        (name, value), = flags.items()
        value_s = "_".join(map(str, value)) if isinstance(value, list) else str(value)
        add(f"num-{tool}-{name}-{value_s}", "numeric_flags", tool, with_flags(argv, **flags), names=(f"--{name}",))

    # 14. outputs aimed at the inputs
    add("overwrite-video-annotations", "overwrite_inputs", "video",
        [*replace_flag(VID, "--output_dir", "{davis}/Annotations/480p")], names=("--output_dir", "Annotations"),
        setup=lambda d, fx: {"davis": str(private(fx, d, "davis"))})
    add("overwrite-video-annotations-trailing-slash", "overwrite_inputs", "video",
        replace_flag(VID, "--output_dir", "{davis}/Annotations/480p/"), names=("--output_dir", "Annotations"),
        setup=lambda d, fx: {"davis": str(private(fx, d, "davis"))})
    add("overwrite-video-annotations-symlink", "overwrite_inputs", "video",
        replace_flag(VID, "--output_dir", "{case}/link"), names=("--output_dir", "Annotations", "link"),
        setup=lambda d, fx: (lambda r: (os.symlink(r / "Annotations/480p", d / "link"), {"davis": str(r)})[1])(
            private(fx, d, "davis")))
    add("overwrite-video-frames", "overwrite_inputs", "video",
        replace_flag(VID, "--output_dir", "{davis}/JPEGImages/480p"),
        ("ok", "error"), names=("--output_dir", "JPEGImages"), check=check_video, out="{davis}/JPEGImages/480p",
        setup=lambda d, fx: {"davis": str(private(fx, d, "davis"))})
    add("overwrite-video-root", "overwrite_inputs", "video", replace_flag(VID, "--output_dir", "{davis}"),
        ("ok", "error"), names=("--output_dir",), check=check_video, out="{davis}",
        setup=lambda d, fx: {"davis": str(private(fx, d, "davis"))})
    add("overwrite-plot-log", "overwrite_inputs", "plot", ["{log}", "--output", "{log}/log.txt"],
        names=("--output", "log.txt"), setup=lambda d, fx: {"log": str(private(fx, d, "log"))})
    add("overwrite-plot-args", "overwrite_inputs", "plot", ["{log}", "--output", "{log}/args.json"],
        names=("--output", "args.json"), setup=lambda d, fx: {"log": str(private(fx, d, "log"))})
    add("overwrite-clusters-image", "overwrite_inputs", "clusters", [*CLU, "--image", "{file}", "--output", "{file}"],
        names=("--output", "--image"), setup=lambda d, fx: {"file": str(private(fx, d, "image_grey8"))})
    add("overwrite-clusters-checkpoint", "overwrite_inputs", "clusters",
        replace_flag(with_flags(CLU, output="{ckpt}"), "--pretrained_weights", "{ckpt}"),
        names=("--output", "--pretrained_weights", "checkpoint.pth"),
        setup=lambda d, fx: {"ckpt": str(private(fx, d, "ckpt"))})
    add("overwrite-kmeans-into-data", "overwrite_inputs", "kmeans", with_flags(KM_VOC, output_dir="{voc}"),
        ("ok", "error"), names=("--output_dir",), check=check_kmeans, out="{voc}",
        setup=lambda d, fx: {"voc": str(private(fx, d, "voc"))})

    # 15. minor: category files, args.json, frame names, logs
    def coco_json(edit):
        def setup_edit(root):
            for path in root.glob("annotations/**/*.json"):
                data = json.loads(path.read_text())
                path.write_text(json.dumps(edit(data)))
        return with_coco(setup_edit)

    def drop_supercategory(data):
        for c in data["categories"]:
            c.pop("supercategory", None)
        return data

    def big_id(data):
        data["categories"].append({"supercategory": "sky", "id": 300, "name": "sky-far", "isthing": 0})
        return data

    def neg_id(data):
        data["categories"].append({"supercategory": "sky", "id": -3, "name": "sky-neg", "isthing": 0})
        return data

    def str_id(data):
        data["categories"][0]["id"] = str(data["categories"][0]["id"])
        return data

    for tool, argv in (("kmeans", KM_COCO), ("linear", replace_flag(LIN_COCO, "--dataset", "coco_stuff"))):
        add(f"minor-{tool}-coco-no-supercategory", "minor", tool, argv, names=(".json",),
            setup=coco_json(drop_supercategory))
        add(f"minor-{tool}-coco-id-above-255", "minor", tool, argv, names=(".json", "300"), setup=coco_json(big_id))
        add(f"minor-{tool}-coco-negative-id", "minor", tool, argv, names=(".json", "-3"), setup=coco_json(neg_id))
        add(f"minor-{tool}-coco-string-id", "minor", tool, argv, names=(".json",), setup=coco_json(str_id))
        add(f"minor-{tool}-coco-json-list", "minor", tool, argv, names=(".json",),
            setup=coco_json(lambda d: [1, 2, 3]))
        add(f"minor-{tool}-coco-json-broken", "minor", tool, argv, names=(".json",),
            setup=with_coco(lambda r: [p.write_text("{") for p in r.glob("annotations/**/*.json")]))
    add("minor-plot-args-list", "minor", "plot", PLOT, ("ok", "error"), names=("args.json",),
        setup=with_log(lambda r: (r / "args.json").write_text("[1, 2]")), check=check_announced_file)
    add("minor-plot-args-string-dim", "minor", "plot", PLOT, ("ok", "error"), names=("args.json",),
        setup=with_log(lambda r: (r / "args.json").write_text('{"out_dim": "65536"}')), check=no_false_absence)
    add("minor-plot-args-broken", "minor", "plot", PLOT, names=("args.json",),
        setup=with_log(lambda r: (r / "args.json").write_text("{")))
    add("minor-plot-log-nan", "minor", "plot", PLOT, ("ok",), check=check_announced_file,
        setup=with_log(lambda r: (r / "log.txt").write_text('{"epoch": 0, "train_loss": NaN}\n'
                                                            '{"epoch": 1, "train_loss": 1.0}\n')))
    add("minor-plot-log-list-lines", "minor", "plot", PLOT, names=("log.txt",),
        setup=with_log(lambda r: (r / "log.txt").write_text("[1, 2]\n[3]\n")))
    add("minor-plot-log-empty", "minor", "plot", PLOT, names=("log.txt",),
        setup=with_log(lambda r: (r / "log.txt").write_text("")))
    add("minor-plot-log-missing", "minor", "plot", PLOT, names=("log.txt",),
        setup=with_log(lambda r: (r / "log.txt").unlink()))
    add("minor-plot-not-a-dir", "minor", "plot", ["{ckpt}"], names=("checkpoint.pth",))
    add("minor-plot-log-epoch-string", "minor", "plot", PLOT, ("ok", "error"), names=("log.txt",),
        setup=with_log(lambda r: (r / "log.txt").write_text('{"epoch": "0", "train_loss": 1.0}\n')),
        check=check_announced_file)

    def unpad(root):
        for folder in (root / "JPEGImages/480p/walk", root / "Annotations/480p/walk"):
            for path in folder.iterdir():
                path.rename(path.with_name(f"{int(path.stem)}{path.suffix}"))

    add("minor-davis-padded-names", "minor", "video", replace_flag(VID, "--data_path", "{davis_long}"), ("ok",),
        check=check_video)
    add("minor-davis-unpadded-names", "minor", "video", replace_flag(VID, "--data_path", "{davis_long}"), ("ok",),
        setup=with_davis(unpad, "davis_long"), ref="minor-davis-padded-names",
        check=same_result("davis_results.json", davis_jf, check_video))

    # checkpoints (each tool): unusable files, mismatched flags
    for tool in cli:
        base = BASE[tool]
        for key, names in (("text", ("notes.txt",)), ("empty", ("empty.pth",)), ("truncated", ("truncated.pth",)),
                           ("tiny", ("vit_tiny8.pth",))):
            add(f"ckpt-{tool}-{key}", "checkpoint", tool, replace_flag(base, "--pretrained_weights", "{" + key + "}"),
                names=names)
        add(f"ckpt-{tool}-missing", "checkpoint", tool, replace_flag(base, "--pretrained_weights", "{out}/none.pth"),
            names=("none.pth",))
        add(f"ckpt-{tool}-directory", "checkpoint", tool, replace_flag(base, "--pretrained_weights", "{case}"),
            names=("{case}",))
        add(f"ckpt-{tool}-bad-key", "checkpoint", tool, [*base, "--checkpoint_key", "momentum"],
            names=("momentum", "--checkpoint_key"))
        add(f"ckpt-{tool}-patch16", "checkpoint", tool, replace_flag(base, "--patch_size", "16"),
            names=("checkpoint.pth",))
        add(f"ckpt-{tool}-arch-tiny", "checkpoint", tool, replace_flag(base, "--arch", "vit_tiny"),
            names=("checkpoint.pth",))
    for tool in cli:
        add(f"ckpt-{tool}-nan-weights", "checkpoint", tool, replace_flag(BASE[tool], "--pretrained_weights", "{nan}"),
            names=("nan_weights.pth",))
    add("ckpt-video-grid64", "checkpoint", "video", replace_flag(VID, "--pretrained_weights", "{grid64}"), ("ok",),
        check=check_video)
    add("ckpt-kmeans-bare", "checkpoint", "kmeans", replace_flag(KM_VOC, "--pretrained_weights", "{bare}"), ("ok",),
        check=check_kmeans)

    # flag parsing: one line, the flag named
    for tool in ("linear", "kmeans", "video", "probe", "clusters", "plot"):
        argv = BASE.get(tool, PLOT)
        add(f"parse-{tool}-unknown-flag", "flag_parsing", tool, [*argv, "--n_epochs", "3"], names=("--n_epochs",))
        flag = {"plot": "--output", "video": "--topk"}.get(tool, "--seed")
        add(f"parse-{tool}-missing-value", "flag_parsing", tool, [*argv, flag], names=(flag,))
        if tool != "plot":
            add(f"parse-{tool}-bad-int", "flag_parsing", tool, replace_flag(argv, "--patch_size", "eight"),
                names=("--patch_size",))
            add(f"parse-{tool}-bad-arch", "flag_parsing", tool, replace_flag(argv, "--arch", "vit_large"),
                names=("--arch",))
    add("parse-plot-no-folder", "flag_parsing", "plot", [], names=("output_dir", "OUTPUT_DIR"))
    add("parse-video-no-data-path", "flag_parsing", "video", [*A, "--output_dir", "{out}"], names=("--data_path",))
    add("parse-linear-bad-dataset", "flag_parsing", "linear", with_flags(LIN_VOC, dataset="ade20k"),
        names=("--dataset",))
    add("parse-kmeans-bad-float", "flag_parsing", "kmeans", [*KM_VOC, "--n_clusters", "ten"], names=("--n_clusters",))

    # data trees
    for tool, argv in (("linear", LIN_VOC), ("kmeans", KM_VOC), ("probe", PRB_VOC)):
        add(f"tree-{tool}-missing-root", "data_tree", tool, with_flags(argv, data_path="{case}/nowhere"),
            names=("nowhere",))
        add(f"tree-{tool}-root-is-file", "data_tree", tool, with_flags(argv, data_path="{ckpt}"),
            names=("checkpoint.pth",))
        add(f"tree-{tool}-no-data-path", "data_tree", tool, with_flags(argv, data_path=""), names=("--data_path",))
        add(f"tree-{tool}-missing-mask", "data_tree", tool, argv, names=("2007_000039",),
            setup=with_voc(lambda b: (b / "SegmentationClass/2007_000039.png").unlink()))
        add(f"tree-{tool}-wrong-dataset", "data_tree", tool, with_flags(argv, dataset="coco_things"),
            names=("COCO", "coco"))
        add(f"tree-{tool}-rgb-masks", "data_tree", tool, argv, names=("2007_000039",),
            setup=with_voc(lambda b: Image.open(b / "SegmentationClass/2007_000039.png").convert("RGB").save(
                b / "SegmentationClass/2007_000039.png")))
    add("tree-video-missing-root", "data_tree", "video", with_flags(VID, data_path="{case}/nowhere"),
        names=("nowhere",))
    add("tree-video-voc-root", "data_tree", "video", with_flags(VID, data_path="{voc}"), names=("ImageSets",))
    add("tree-video-missing-first-annotation", "data_tree", "video", VID, names=("00000.png",),
        setup=with_davis(lambda r: (r / "Annotations/480p/bike/00000.png").unlink()))
    add("tree-video-missing-later-annotation", "data_tree", "video", VID, ("ok",), check=check_video,
        setup=with_davis(lambda r: (r / "Annotations/480p/bike/00002.png").unlink()))
    add("tree-coco-missing-json", "data_tree", "kmeans", KM_COCO, names=("category file", ".json"),
        setup=with_coco(lambda r: [p.unlink() for p in r.glob("annotations/**/stuff_val2017.json")]))
    add("tree-coco-image-without-mask", "data_tree", "kmeans", KM_COCO, names=("000000000002",),
        setup=with_coco(lambda r: (r / "annotations/annotations/stuff_annotations/stuff_val2017_pixelmaps/"
                                       "000000000002.png").unlink()))
    return out


# ===== running =====

def _format(value, mapping: dict):
    if isinstance(value, str):
        return value.format(**mapping)
    return [_format(v, mapping) for v in value]


def _tree_hashes(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


HUB_WRAPPER = """
import sys, torch
sys.path.insert(0, {root!r})
import hubconf
ROOT = {root!r}
try:
{body}
except Exception as err:
    print(f"{{type(err).__name__}}: {{err}}", file=sys.stderr)
    sys.exit(1)
print("ok")
"""


def hub_code(body: str) -> str:
    return HUB_WRAPPER.format(root=str(ROOT), body="\n".join("    " + line for line in body.split("; ")))


def prepare(case: Case, fx: dict, workdir: Path) -> Run:
    case_dir = workdir / case.id
    case_dir.mkdir(parents=True)
    (case_dir / "out").mkdir()
    mapping = {**fx, "out": str(case_dir / "out"), "case": str(case_dir)}
    if case.setup is not None:
        mapping.update(case.setup(case_dir, mapping))
    run_case = copy.copy(case)
    run_case.names = tuple(_format(list(case.names), mapping))
    run_case.env = {k: _format(v, mapping) for k, v in case.env.items()}
    run_case.out = _format(case.out, mapping)
    if case.tool == "hub":
        command = [sys.executable, "-c", hub_code(_format(case.argv, mapping))]
    else:
        command = [sys.executable, "-m", TOOLS[case.tool], *_format(case.argv, mapping)]
    return Run(run_case, command, case_dir=case_dir)


def _child(run: Run) -> None:
    """In a forked child: run the command's module as __main__ (or the hub code), then exit with its status."""
    out = os.open(run.case_dir / "stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(run.case_dir / "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = open(1, "w", closefd=False)  # the parent's sys.stdout may not write to fd 1 (e.g. under pytest)
    sys.stderr = open(2, "w", closefd=False)
    code = 1
    try:
        os.environ.update(run.case.env)
        warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
        if run.command[1] == "-c":
            sys.argv = ["-c"]
            exec(compile(run.command[2], "<hub>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = [run.command[2], *run.command[3:]]
            runpy.run_module(run.command[2], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - report exactly as the interpreter would
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def execute(runs: list[Run], jobs: int, timeout: float, use_subprocess: bool) -> None:
    """Run every prepared case, ``jobs`` at a time; fills rc / stdout / stderr / seconds / changed_inputs."""
    pending = list(runs)
    active: dict = {}  # pid or Popen -> (run, start, input hashes)
    done = 0
    while pending or active:
        while pending and len(active) < jobs:
            run = pending.pop(0)
            before = _tree_hashes(run.case_dir / "in")
            if use_subprocess:
                env = {**os.environ, "PYTHONPATH": str(ROOT), **run.case.env}
                with open(run.case_dir / "stdout.txt", "w") as so, open(run.case_dir / "stderr.txt", "w") as se:
                    handle = subprocess.Popen(run.command, stdout=so, stderr=se, env=env, cwd=run.case_dir,
                                              start_new_session=True)
            else:
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    os.setsid()
                    os.chdir(run.case_dir)
                    _child(run)
                handle = pid
            active[handle] = (run, time.time(), before)
        finished = []
        for handle, (run, start, before) in active.items():
            if use_subprocess:
                rc = handle.poll()
            else:
                pid, status = os.waitpid(handle, os.WNOHANG)
                rc = None if pid == 0 else os.waitstatus_to_exitcode(status)
            if rc is None and time.time() - start > timeout:
                pgid = handle.pid if use_subprocess else handle
                os.killpg(pgid, signal.SIGKILL)
                rc = "timeout"
                if use_subprocess:
                    handle.wait()
                else:
                    os.waitpid(handle, 0)
            if rc is not None:
                run.rc, run.seconds = rc, time.time() - start
                run.stdout = (run.case_dir / "stdout.txt").read_text(errors="replace")
                run.stderr = (run.case_dir / "stderr.txt").read_text(errors="replace")
                after = _tree_hashes(run.case_dir / "in")
                run.changed_inputs = sorted(k for k in before if after.get(k) != before[k])
                finished.append(handle)
        for handle in finished:
            run = active.pop(handle)[0]
            done += 1
            print(f"[{done}/{len(runs)}] {run.case.id}: rc {run.rc} ({run.seconds:.1f} s)", file=sys.stderr,
                  flush=True)
        if not finished:
            time.sleep(0.05)


_FLAG_CACHE: dict = {}


def tool_flags(tool: str) -> set:
    if tool not in _FLAG_CACHE:
        import importlib

        parser = importlib.import_module(TOOLS[tool]).get_args_parser()
        _FLAG_CACHE[tool] = {s for a in parser._actions for s in a.option_strings}
    return _FLAG_CACHE[tool]


def classify(run: Run) -> None:
    """Set ``run.outcome`` (correct / error / defective) and ``run.detail``."""
    case = run.case
    stderr_lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    last = stderr_lines[-1] if stderr_lines else ""

    def verdict(outcome, detail):
        run.outcome, run.detail = outcome, detail[:300]

    if run.changed_inputs:
        return verdict("defective", f"wrote over its inputs: {', '.join(run.changed_inputs[:3])}")
    if run.rc == "timeout":
        return verdict("defective", "hang (timeout)")
    if "Traceback (most recent call last)" in run.stderr:
        return verdict("defective", f"traceback: {last}")
    if run.rc == 0:
        if "ok" not in case.expect:
            tail = (run.stdout.strip().splitlines() or [""])[-1]
            return verdict("defective", f"exit 0 where an error was due; stdout ends: {tail}")
        check = case.check or (CHECKS.get(case.tool) if case.tool != "hub" else None)
        try:
            reason = check(run) if check else None
        except Exception as err:  # noqa: BLE001 - a missing or malformed result is the finding
            reason = f"result unreadable ({type(err).__name__}: {err})"
        if reason:
            return verdict("defective", reason)
        return verdict("correct", (run.stdout.strip().splitlines() or ["ok"])[-1])
    if isinstance(run.rc, int) and run.rc < 0:
        return verdict("defective", f"killed by signal {-run.rc}")
    if case.tool == "hub":
        kind = last.split(":", 1)[0]
        if kind not in HUB_ERRORS:
            return verdict("defective", f"exception type {kind}: {last}")
        error_lines = [last]
    else:
        error_lines = [ln for ln in stderr_lines if ERROR_LINE.match(ln)]
        others = [ln for ln in stderr_lines if not ERROR_LINE.match(ln) and not ln.lower().startswith("warning")]
        if len(error_lines) != 1 or others:
            return verdict("defective", f"{len(error_lines)} error line(s), {len(others)} other stderr line(s): "
                                        f"{last}")
    line = error_lines[0]
    if "error" not in case.expect:
        return verdict("defective", f"refused a valid input: {line}")
    internal = [w for w in INTERNAL_WORDS if w in line]
    if internal:
        return verdict("defective", f"internal wording ({internal[0]!r}): {line}")
    if case.tool != "hub" and "unrecognized arguments" not in line:
        unknown = sorted(set(re.findall(r"(--[a-z][a-z0-9_]*)", line)) - tool_flags(case.tool))
        if unknown:
            return verdict("defective", f"names flags the tool lacks ({', '.join(unknown)}): {line}")
    if case.names and not any(name in line for name in case.names):
        return verdict("defective", f"names none of {list(case.names)}: {line}")
    return verdict("error", line)


# ===== report =====

def report(runs: list[Run]) -> dict:
    by_cause: dict = {}
    for run in runs:
        by_cause.setdefault(run.case.cause, Counter())[run.outcome] += 1
    width = max(len(r.case.id) for r in runs)
    print()
    for run in runs:
        print(f"{run.case.id:<{width}}  {run.outcome:<9}  {run.detail}")
    print()
    print(f"{'cause':<20} {'cases':>5} {'correct':>7} {'error':>6} {'defect':>6}  what")
    for cause, text in CAUSES.items():
        c = by_cause.get(cause, Counter())
        if sum(c.values()):
            print(f"{cause:<20} {sum(c.values()):>5} {c['correct']:>7} {c['error']:>6} {c['defective']:>6}  {text}")
    total = Counter(r.outcome for r in runs)
    print(f"{'total':<20} {len(runs):>5} {total['correct']:>7} {total['error']:>6} {total['defective']:>6}")
    print(f"\n{len(runs)} cases: {total['correct']} correct results, {total['error']} clear one-line errors "
          f"({total['correct'] + total['error']} clean), {total['defective']} defective")
    return {"counts": dict(total), "by_cause": {k: dict(v) for k, v in by_cause.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser("bad_inputs", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="Regular expression: run the cases whose id or cause matches.")
    parser.add_argument("--jobs", default=2, type=int, help="Cases run at once. Default: 2.")
    parser.add_argument("--timeout", default=180.0, type=float, help="Seconds before a case counts as a hang.")
    parser.add_argument("--subprocess", action="store_true", help="A fresh interpreter per case (slower).")
    parser.add_argument("--json", default="", help="Also write the table (one entry per case) to this file.")
    parser.add_argument("--keep", default="", help="Folder for the fixtures and case outputs (kept).")
    parser.add_argument("--list", action="store_true", help="List the case ids and exit.")
    args = parser.parse_args(argv)

    table = cases()
    ids = [c.id for c in table]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise SystemExit(f"duplicate case ids: {duplicates}")
    if args.only:
        wanted = {c.id for c in table if re.search(args.only, c.id) or re.search(args.only, c.cause)}
        wanted |= {c.ref for c in table if c.id in wanted and c.ref}  # the references the checks need
        table = [c for c in table if c.id in wanted]
    if args.list:
        print("\n".join(f"{c.id}  [{c.cause}]" for c in table))
        return 0

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONWARNINGS"] = "ignore::RuntimeWarning:runpy"
    if not args.subprocess:  # import once what every child needs
        import importlib

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.figure  # noqa: F401

        import hubconf  # noqa: F401
        for module in TOOLS.values():
            if module != "hub":
                importlib.import_module(module)
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="bad_inputs_"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    fx = build_fixtures(workdir / "fixtures")
    shared = _tree_hashes(workdir / "fixtures")
    runs = [prepare(c, fx, workdir / "cases") for c in table]
    execute(runs, args.jobs, args.timeout, args.subprocess)
    by_id = {r.case.id: r for r in runs}
    for run in runs:
        run.runs = by_id
        classify(run)
    changed = sorted(k for k, v in _tree_hashes(workdir / "fixtures").items() if shared.get(k) != v)
    summary = report(runs)
    if changed:
        print(f"WARNING: shared fixtures changed during the run: {changed[:5]}")
    print(f"{time.time() - t0:.0f} s, {'subprocesses' if args.subprocess else 'forked children'}, "
          f"{args.jobs} at a time; cases and outputs in {workdir}" if args.keep else
          f"{time.time() - t0:.0f} s, {'subprocesses' if args.subprocess else 'forked children'}, "
          f"{args.jobs} at a time")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        rows = [{"id": r.case.id, "cause": r.case.cause, "tool": r.case.tool, "outcome": r.outcome,
                 "detail": r.detail, "rc": r.rc, "seconds": round(r.seconds, 2),
                 "command": " ".join(r.command[1:]) if r.case.tool != "hub" else r.command[2]} for r in runs]
        Path(args.json).write_text(json.dumps({**summary, "cases": rows}, indent=1))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if summary["counts"].get("defective") else 0


if __name__ == "__main__":
    sys.exit(main())
