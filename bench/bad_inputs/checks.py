"""What makes a successful run correct: result files present, scores finite and in range, a warning with a count,
the same numbers as an equivalent well-formed input."""

import json
import math
import re
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from bench.bad_inputs.case import Run


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
