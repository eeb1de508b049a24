"""Command-line helpers shared by the training script, the evaluators and the benchmarks."""

import argparse
import sys
from collections.abc import Callable

import torch

__all__ = ["OneLineErrorParser", "bool_flag", "default_device", "run_cli"]


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
    """Parse ``argv`` and run ``main``; bad input (missing file, bad checkpoint, bad value) ends in one line.

    A checkpoint that cannot be used raises ``croc_utils.checkpoint.CheckpointError``, a ValueError.
    """
    args = parser.parse_args(argv)
    try:
        return main(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
