"""Command-line helpers shared by the training script, the evaluators and the benchmarks.

What the evaluators check about their input lives here, in one place: a flag's range is its argparse ``type``
(``bounded``, ``positive_int``, ..., ``device_flag``), checked before any work; output folders and files are made
(or refused) by ``output_dir`` / ``output_file`` before any work, never inside an input folder nor over an input
file; what depends on several flags or on the data raises ``UsageError``. ``run_cli`` prints a UsageError, a
CheckpointError or a full disk as one line (exit 1); any other exception is a bug and keeps its traceback. Images
are read by ``eval.seg_datasets.read_image`` (16-bit and float greyscale kept by ``croc_utils.datasets.to_rgb``,
an unreadable file named in one line).
"""

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from croc_utils.atomic_io import DiskFullError

__all__ = ["OneLineErrorParser", "UsageError", "bool_flag", "bounded", "default_device", "device_flag",
           "non_negative_float", "non_negative_int", "open_fraction", "fraction", "output_dir", "output_file",
           "positive_float", "positive_int", "run_cli"]


def bool_flag(s: str) -> bool:
    """Parse on/off, true/false, 1/0 (DINO's boolean flags)."""
    if s.lower() in {"on", "true", "1"}:
        return True
    if s.lower() in {"off", "false", "0"}:
        return False
    raise argparse.ArgumentTypeError(f"invalid value for a boolean flag: {s!r} (use true/false)")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of the full usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def default_device() -> str:
    """cuda when a GPU is visible, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_cli(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser, argv=None):
    """Parse ``argv`` and run ``main``. Bad input ends in one line on stderr and exit status 1: a UsageError (a flag,
    a dataset file, an output path), a CheckpointError (an unusable checkpoint) or a full disk. Any other exception
    is a bug and keeps its traceback (no broad ``except ValueError`` that would hide one)."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except (UsageError, DiskFullError) as err:  # a CheckpointError is a UsageError
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        sys.exit(1)


# ===== what the evaluators check about their input, in one place =====
# A flag's range is checked by its argparse ``type`` (one line naming the flag, before any work); what depends on
# several flags or on the data raises UsageError, which ``run_cli`` prints as one line (exit 1).

class UsageError(Exception):
    """Bad input from the user (a flag, a file, a folder); ``run_cli`` prints the message as one line, exit 1.

    A DataLoader worker's exception comes back to the main process re-raised with the worker's traceback in its
    message; ``str()`` keeps only the original message, so the line stays one line whatever ``--num_workers`` is.
    """

    def __str__(self) -> str:
        text = super().__str__()
        return text.rsplit(f"{type(self).__name__}: ", 1)[-1].strip()


def _describe(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def bounded(kind: type = int, low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite ``kind`` (int or float) within [low, high] (a bound left out where None, open
    where said). A value out of range stops the parser with ``argument --flag: must be ..., got ...``."""
    rule = _describe(low, high, low_open, high_open)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        inside = (math.isfinite(value) and (low is None or (value > low if low_open else value >= low))
                  and (high is None or (value < high if high_open else value <= high)))
        if not inside:
            raise argparse.ArgumentTypeError(f"must be a {'number' if kind is float else 'whole number'} {rule}, "
                                             f"got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {rule}"
    return parse


positive_int = bounded(int, 1)
non_negative_int = bounded(int, 0)
positive_float = bounded(float, 0, low_open=True)
non_negative_float = bounded(float, 0)
open_fraction = bounded(float, 0, 1, low_open=True, high_open=True)
fraction = bounded(float, 0, 1, low_open=True)


def device_problem(device: torch.device) -> str | None:
    """Why ``device`` cannot be used on this machine, or None when it can."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible on this machine (use --device cpu)"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "MPS is not available here (use --device cpu)"
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        return f"not usable here ({str(err).splitlines()[0][:120]})"
    return None


def device_flag(text: str) -> str:
    """argparse ``type`` of ``--device``: a torch device this machine has (checked before any work)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    problem = device_problem(device)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return text


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, links resolved (neither needs to exist)."""
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def output_dir(path: str | os.PathLike, flag: str = "--output_dir", *, protect: Iterable = ()) -> Path:
    """Create the results folder ``path`` now, before any work, or stop in one line naming ``flag``.

    ``protect``: input folders (e.g. the dataset's annotations) that the results must not go into, where they would
    be written over the inputs or mixed with them.
    """
    for folder in protect:
        if _inside(path, folder):
            raise UsageError(f"{flag} {path} is in the input folder {folder}: the results would be written over or "
                             "mixed with the inputs; choose another folder")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create the folder ({err.strerror or type(err).__name__})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: the folder is not writable")
    return folder


def output_file(path: str | os.PathLike, flag: str = "--output", *, default_name: str, formats: Iterable[str],
                inputs: dict | None = None) -> Path:
    """Where a figure goes, its folder created now, or one line naming ``flag``.

    ``path`` itself; ``path/default_name`` when ``path`` is a folder (an existing one, or written with a trailing
    separator); ``.png`` appended when it has no extension. Stops for an extension not in ``formats`` and for a path
    that is one of the ``inputs`` (flag -> file), which would be written over.
    """
    text = os.fspath(path)
    target = Path(text)
    if text.endswith(("/", os.sep)) or target.is_dir():
        target = target / default_name
    elif not target.suffix:
        target = target.with_name(target.name + ".png")
    extension = target.suffix.lower().lstrip(".")
    if extension not in formats:
        common = [f for f in ("png", "jpg", "pdf", "svg", "tif", "webp") if f in formats]
        raise UsageError(f"{flag} {text}: .{extension} is not an image format it can write (e.g. "
                         f"{', '.join(common or sorted(formats)[:6])})")
    for input_flag, input_path in (inputs or {}).items():
        if input_path and os.path.exists(input_path) and _inside(target, input_path):
            raise UsageError(f"{flag} {text} is the {input_flag} file: it would be written over; choose another name")
    output_dir(target.parent, flag)
    return target
