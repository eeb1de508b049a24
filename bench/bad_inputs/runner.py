"""Running the cases: each in a child forked after the evaluators are imported, or (``--subprocess``) in a fresh
interpreter; ``jobs`` at a time, a hang killed after ``timeout`` seconds, the case's inputs hashed before and after."""

import copy
import hashlib
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

from bench.bad_inputs import ROOT
from bench.bad_inputs.case import TOOLS, Case, Run


def _format(value, mapping: dict):
    """Fill the placeholders ({ckpt}, {out}, ...) of a string or a list of strings."""
    if isinstance(value, str):
        return value.format(**mapping)
    return [_format(v, mapping) for v in value]


def tree_hashes(folder: Path) -> dict:
    """Relative path -> SHA-1 of every regular file under ``folder``."""
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
    """A script running ``body`` (statements separated by '; ') that reports an exception in one line."""
    return HUB_WRAPPER.format(root=str(ROOT), body="\n".join("    " + line for line in body.split("; ")))


def prepare(case: Case, fx: dict, workdir: Path) -> Run:
    """The case's folder, private inputs and command line, placeholders filled."""
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


def _start(run: Run, use_subprocess: bool):
    """Start ``run`` in its own process group; returns its Popen (``use_subprocess``) or the forked child's pid."""
    if use_subprocess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **run.case.env}
        with open(run.case_dir / "stdout.txt", "w") as so, open(run.case_dir / "stderr.txt", "w") as se:
            return subprocess.Popen(run.command, stdout=so, stderr=se, env=env, cwd=run.case_dir,
                                    start_new_session=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.chdir(run.case_dir)
        _child(run)
    return pid


def _poll(handle, start: float, timeout: float):
    """The exit status of a started case, None while it runs, "timeout" once killed for running too long."""
    if isinstance(handle, subprocess.Popen):
        rc = handle.poll()
    else:
        pid, status = os.waitpid(handle, os.WNOHANG)
        rc = None if pid == 0 else os.waitstatus_to_exitcode(status)
    if rc is None and time.time() - start > timeout:
        os.killpg(handle.pid if isinstance(handle, subprocess.Popen) else handle, signal.SIGKILL)
        if isinstance(handle, subprocess.Popen):
            handle.wait()
        else:
            os.waitpid(handle, 0)
        rc = "timeout"
    return rc


def _collect(run: Run, rc, start: float, before: dict) -> None:
    """Fill ``run`` from a finished case: exit status, seconds, output, the inputs it changed."""
    run.rc, run.seconds = rc, time.time() - start
    run.stdout = (run.case_dir / "stdout.txt").read_text(errors="replace")
    run.stderr = (run.case_dir / "stderr.txt").read_text(errors="replace")
    after = tree_hashes(run.case_dir / "in")
    run.changed_inputs = sorted(k for k in before if after.get(k) != before[k])


def execute(runs: list[Run], jobs: int, timeout: float, use_subprocess: bool) -> None:
    """Run every prepared case, ``jobs`` at a time; fills rc / stdout / stderr / seconds / changed_inputs."""
    pending = list(runs)
    active: dict = {}  # pid or Popen -> (run, start, input hashes)
    done = 0
    while pending or active:
        while pending and len(active) < jobs:
            run = pending.pop(0)
            before = tree_hashes(run.case_dir / "in")
            active[_start(run, use_subprocess)] = (run, time.time(), before)
        finished = []
        for handle, (run, start, before) in active.items():
            rc = _poll(handle, start, timeout)
            if rc is not None:
                _collect(run, rc, start, before)
                finished.append(handle)
        for handle in finished:
            run = active.pop(handle)[0]
            done += 1
            print(f"[{done}/{len(runs)}] {run.case.id}: rc {run.rc} ({run.seconds:.1f} s)", file=sys.stderr,
                  flush=True)
        if not finished:
            time.sleep(0.05)
