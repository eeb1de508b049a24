"""Command-line helpers shared by the training script, the evaluators and the benchmarks."""

import argparse


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
