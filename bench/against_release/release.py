"""The released code, imported from its folder into a separate namespace and run on a CPU without editing it."""

import argparse
import contextlib
import importlib.util
import sys
import tempfile
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn

RELEASE_PACKAGES = ("croc_utils", "models", "utils", "datasets")  # top-level names of the released code
RELEASE_FILES = ("main_croc.py", "utils/utils.py", "models/vision_transformer.py", "croc_utils/data_transforms.py",
                 "croc_utils/parser.py")


class BenchError(RuntimeError):
    """A setup problem (missing release, missing package): one line, exit 2."""


def _pop_modules(names) -> dict:
    popped = {}
    for key in list(sys.modules):
        if key.split(".")[0] in names:
            popped[key] = sys.modules.pop(key)
    return popped


def load_release(release_dir: str) -> SimpleNamespace:
    """Import the released ``main_croc.py`` (and the packages it imports) from ``release_dir`` under a separate
    namespace: ours stay what ``croc_utils`` / ``models`` mean to everything else in this process."""
    root = Path(release_dir).resolve()
    missing = [f for f in RELEASE_FILES if not (root / f).is_file()]
    if missing:
        raise BenchError(f"--release_dir {release_dir}: not a clone of the released CrOC code (missing "
                         f"{', '.join(missing)})")
    if importlib.util.find_spec("einops") is None:
        raise BenchError("the released code needs einops, which this repository does not: pip install einops")
    ours = _pop_modules(RELEASE_PACKAGES)
    try:
        for name in RELEASE_PACKAGES:  # its packages, found by their folder whatever sys.path and installs say
            package = types.ModuleType(name)
            package.__path__ = [str(root / name)]
            sys.modules[name] = package
        spec = importlib.util.spec_from_file_location("released_main_croc", root / "main_croc.py")
        main = importlib.util.module_from_spec(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.loader.exec_module(main)
        theirs = _pop_modules(RELEASE_PACKAGES)
    finally:
        _pop_modules(RELEASE_PACKAGES)
        sys.modules.update(ours)
    return SimpleNamespace(root=root, main=main, utils=theirs["utils.utils"],
                           vits=theirs["models.vision_transformer"], transforms=theirs["croc_utils.data_transforms"],
                           parser=theirs["croc_utils.parser"], datasets=theirs["croc_utils.datasets"])


def _stay_on_cpu(fn):
    def wrapper(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def released_code_on_cpu():
    """While the released code runs: ``.cuda()`` is a no-op, tensors asked for on 'cuda' are made on the CPU,
    ``torch.cuda.synchronize`` does nothing, and its deprecated ``torch.cuda.amp.autocast(False)`` stays quiet."""
    saved = (torch.Tensor.cuda, nn.Module.cuda, torch.tensor, torch.cuda.synchronize)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.tensor = _stay_on_cpu(saved[2])
    torch.cuda.synchronize = lambda *args, **kwargs: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda, torch.tensor, torch.cuda.synchronize = saved


@contextlib.contextmanager
def one_process_group():
    """A gloo process group of one process (the released loss all-reduces its centres), removed afterwards."""
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


@contextlib.contextmanager
def small_coordinate_grid(release, size: int):
    """The released crop transform allocates a 10000 x 10000 grid of pixel coordinates (800 MB) when built; build it
    ``size`` x ``size`` instead (the same values for images up to that size)."""
    cls = release.transforms.RandomResizedCropWithPos
    original = cls.__init__

    def init(self, *args, **kwargs):
        release.transforms.RandomResizedCrop.__init__(self, *args, **kwargs)
        x = torch.arange(size).repeat(size, 1)[None, :]
        cls._pos = torch.cat((x, x.permute(0, 2, 1)), dim=0).float()

    cls.__init__ = init
    try:
        yield
    finally:
        cls.__init__ = original


def flag_list(flags: dict) -> list[str]:
    return [item for key, value in flags.items() for item in (f"--{key}", str(value))]


def release_args(release, flags: dict) -> argparse.Namespace:
    parser = argparse.ArgumentParser("released", parents=[release.parser.get_args_parser()])
    args = parser.parse_args(flag_list(flags))
    args.rank, args.world_size, args.gpu = 0, 1, 0
    return args
