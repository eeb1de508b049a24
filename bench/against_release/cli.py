"""The command line: ``python bench/against_release.py --release_dir PATH`` (or ``python -m bench.against_release``)."""

import argparse
import sys
import time
from pathlib import Path

import torch

import bench.against_release as package
from bench.against_release.clustering import clustering_summary, compare_clusterings
from bench.against_release.compare import verdict
from bench.against_release.release import BenchError, load_release, one_process_group
from bench.against_release.speed import speed_report
from bench.against_release.steps import whole_steps

ROOT = Path(__file__).resolve().parents[2]  # "ours": the checkout this package lies in


def get_args(argv=None):
    parser = argparse.ArgumentParser("against_release", description=package.__doc__.splitlines()[0])
    parser.add_argument("--release_dir", required=True, help="an unmodified clone of github.com/stegmuel/CrOC")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clustering_problems", type=int, default=24)
    parser.add_argument("--speed_repeats", type=int, default=3, help="timed steps per side (0: no speed test)")
    return parser.parse_args(argv)


def run(args) -> int:
    """The three comparisons; returns the exit status (0: every quantity within its tolerance)."""
    release = load_release(args.release_dir)
    print(f"released code: {release.root}\nours: {ROOT}\ntorch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, CPU float32")
    with one_process_group():
        table, failures = whole_steps(release, args.seed)
        print(table)
        if args.clustering_problems:
            t0 = time.perf_counter()
            results, clustering_failures = compare_clusterings(release, args.clustering_problems, args.seed)
            failures += clustering_failures
            print(f"\n## Clustering alone ({time.perf_counter() - t0:.0f} s)\n")
            print(clustering_summary(results))
        if args.speed_repeats:
            print(speed_report(release, args.speed_repeats, args.seed))
    return verdict(failures)


def main(argv=None) -> None:
    args = get_args(argv)
    try:
        sys.exit(run(args))
    except BenchError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
