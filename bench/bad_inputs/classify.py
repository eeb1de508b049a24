"""The outcome rules: correct, a clear one-line error, or defective."""

import functools
import importlib
import re

from bench.bad_inputs.case import TOOLS, Run
from bench.bad_inputs.checks import CHECKS

INTERNAL_WORDS = ("torch.", "Tensor", "tensor a", "non-empty list", "cv2", "index out of range", "KeyError",
                  "NoneType", "object has no attribute", "unsupported operand", "got multiple values",
                  "input arrays must have the same shape")
HUB_ERRORS = ("CheckpointError", "ValueError", "FileNotFoundError", "ConnectionError", "TypeError")
ERROR_LINE = re.compile(r"^\S+: error: ")


@functools.cache
def tool_flags(tool: str) -> frozenset:
    """Every option string of ``tool``'s parser."""
    parser = importlib.import_module(TOOLS[tool]).get_args_parser()
    return frozenset(s for a in parser._actions for s in a.option_strings)


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
