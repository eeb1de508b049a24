"""The command line: ``python -m bench.bad_inputs [--only REGEX] [--jobs N] [--subprocess] [--json FILE] ...``."""

import argparse
import importlib
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import bench.bad_inputs as package
from bench.bad_inputs.case import TOOLS, Case
from bench.bad_inputs.cases import cases
from bench.bad_inputs.classify import classify
from bench.bad_inputs.fixtures import build_fixtures
from bench.bad_inputs.report import report, write_json
from bench.bad_inputs.runner import execute, prepare, tree_hashes


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("bad_inputs", description=package.__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="Regular expression: run the cases whose id or cause matches.")
    parser.add_argument("--jobs", default=2, type=int, help="Cases run at once. Default: 2.")
    parser.add_argument("--timeout", default=180.0, type=float, help="Seconds before a case counts as a hang.")
    parser.add_argument("--subprocess", action="store_true", help="A fresh interpreter per case (slower).")
    parser.add_argument("--json", default="", help="Also write the table (one entry per case) to this file.")
    parser.add_argument("--keep", default="", help="Folder for the fixtures and case outputs (kept).")
    parser.add_argument("--list", action="store_true", help="List the case ids and exit.")
    return parser


def select(table: list[Case], only: str) -> list[Case]:
    """The cases whose id or cause matches ``only`` (all when empty), with the references their checks need."""
    duplicates = [i for i, n in Counter(c.id for c in table).items() if n > 1]
    if duplicates:
        raise SystemExit(f"duplicate case ids: {duplicates}")
    if not only:
        return table
    wanted = {c.id for c in table if re.search(only, c.id) or re.search(only, c.cause)}
    wanted |= {c.ref for c in table if c.id in wanted and c.ref}
    return [c for c in table if c.id in wanted]


def preload(use_subprocess: bool) -> None:
    """One thread per case; without --subprocess, import once what every forked child needs."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONWARNINGS"] = "ignore::RuntimeWarning:runpy"
    if use_subprocess:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure  # noqa: F401

    import hubconf  # noqa: F401
    for module in TOOLS.values():
        if module != "hub":
            importlib.import_module(module)


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    table = select(cases(), args.only)
    if args.list:
        print("\n".join(f"{c.id}  [{c.cause}]" for c in table))
        return 0
    preload(args.subprocess)
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="bad_inputs_"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    fx = build_fixtures(workdir / "fixtures")
    shared = tree_hashes(workdir / "fixtures")
    runs = [prepare(c, fx, workdir / "cases") for c in table]
    execute(runs, args.jobs, args.timeout, args.subprocess)
    by_id = {r.case.id: r for r in runs}
    for run in runs:
        run.runs = by_id
        classify(run)
    changed = sorted(k for k, v in tree_hashes(workdir / "fixtures").items() if shared.get(k) != v)
    summary = report(runs)
    if changed:
        print(f"WARNING: shared fixtures changed during the run: {changed[:5]}")
    how = f"{time.time() - t0:.0f} s, {'subprocesses' if args.subprocess else 'forked children'}, {args.jobs} at a time"
    print(f"{how}; cases and outputs in {workdir}" if args.keep else how)
    if args.json:
        write_json(args.json, summary, runs)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if summary["counts"].get("defective") else 0
