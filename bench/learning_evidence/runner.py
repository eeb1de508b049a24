"""Training processes: start them (all at once or one by one), wait, and stop every run still going when one fails.

Each process writes ``train.log`` in its run folder; the thread count of a preset goes to the children's
environment (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``), never to this process's torch.
"""

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from croc_utils.logging import read_log

ROOT = Path(__file__).resolve().parents[2]  # the training runs use this checkout: cwd and PYTHONPATH
POLL_S = 0.2  # seconds between two looks at the running processes
STOP_GRACE_S = 10  # seconds a stopped run gets to exit after SIGTERM before SIGKILL


class RunFailed(RuntimeError):
    """A training run exited with an error (its siblings were stopped)."""


@dataclass
class Job:
    """One training process: its command and its run folder (``train.log`` goes there)."""

    command: list[str]
    run_dir: Path
    info: dict = field(default_factory=dict)  # command, seconds, returncode once finished
    proc: subprocess.Popen | None = None
    log: object = None


def child_env(threads: int | None) -> dict:
    """This environment with the checkout first on PYTHONPATH and, when given, the children's thread count."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _start(name: str, job: Job, env: dict, cwd: Path) -> None:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    job.info = {"command": " ".join(job.command[1:]), "t0": time.time()}
    job.log = open(job.run_dir / "train.log", "a")
    job.proc = subprocess.Popen(job.command, cwd=cwd, env=env, stdout=job.log, stderr=subprocess.STDOUT)
    print(f"[{name}] started: python {job.info['command']}", flush=True)


def _finish(name: str, job: Job) -> None:
    code = job.proc.wait()
    job.log.close()
    job.info["seconds"] = time.time() - job.info.pop("t0")
    job.info["returncode"] = code
    if code != 0:
        tail = (job.run_dir / "train.log").read_text().splitlines()[-5:]
        raise RunFailed(f"training run {name} failed (exit {code}); last lines of its train.log:\n" + "\n".join(tail))
    print(f"[{name}] finished in {job.info['seconds']:.0f} s", flush=True)


def stop(jobs: dict[str, Job]) -> list[str]:
    """Terminate (then kill, after ``STOP_GRACE_S``) every started process still running; returns their names."""
    running = {name: job for name, job in jobs.items() if job.proc is not None and job.proc.poll() is None}
    for job in running.values():
        job.proc.terminate()
    deadline = time.time() + STOP_GRACE_S
    for job in running.values():
        try:
            job.proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.wait()
    for job in jobs.values():
        if job.log is not None and not job.log.closed:
            job.log.close()
    return list(running)


def train_runs(jobs: dict[str, tuple[list[str], Path]], *, parallel: bool, threads: int | None,
               cwd: Path = ROOT) -> dict:
    """Run the processes ``{name: (command, run folder)}``, all at once when ``parallel``; returns name -> {command,
    seconds, returncode}. When one fails (or on Ctrl-C), every other run started here is stopped, then RunFailed
    (with the tail of the failed run's train.log) or the interrupt is raised."""
    env = child_env(threads)
    todo = {name: Job(list(cmd), Path(run_dir)) for name, (cmd, run_dir) in jobs.items()}
    try:
        for name, job in todo.items():
            _start(name, job, env, cwd)
            if not parallel:
                _finish(name, job)
        while pending := [name for name, job in todo.items() if "returncode" not in job.info]:
            for name in pending:  # the first run to fail stops the others, whichever it is
                if todo[name].proc.poll() is not None:
                    _finish(name, todo[name])
            time.sleep(POLL_S)
    except BaseException:
        stopped = stop(todo)
        if stopped:
            print(f"stopped the other run(s): {', '.join(stopped)}", flush=True)
        raise
    return {name: job.info for name, job in todo.items()}


def training_log(run_dir: Path) -> list[dict]:
    """Per-epoch statistics of a run (its log.txt: teacher entropy, KL, mean k, losses; torn lines skipped)."""
    path = Path(run_dir) / "log.txt"
    return read_log(str(path)) if path.exists() else []


def checkpoints(run_dir: Path) -> list[Path]:
    """The periodic checkpoints ``checkpoint{epoch:04}.pth`` of a run, in training order."""
    return sorted(Path(run_dir).glob("checkpoint[0-9]*.pth"))


def epochs_done(checkpoint: Path) -> int:
    """Epochs finished when ``checkpoint{epoch:04}.pth`` was written (its epoch is 0-based)."""
    return int(checkpoint.stem.removeprefix("checkpoint")) + 1


def machine() -> dict:
    """Where the bench ran (written into its JSON)."""
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
