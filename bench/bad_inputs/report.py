"""The report: one line per case, counts per cause, and the JSON file."""

import json
from collections import Counter
from pathlib import Path

from bench.bad_inputs.case import CAUSES, Run


def report(runs: list[Run]) -> dict:
    by_cause: dict = {}
    for run in runs:
        by_cause.setdefault(run.case.cause, Counter())[run.outcome] += 1
    width = max(len(r.case.id) for r in runs)
    print()
    for run in runs:
        print(f"{run.case.id:<{width}}  {run.outcome:<9}  {run.detail}")
    print()
    print(f"{'cause':<20} {'cases':>5} {'correct':>7} {'error':>6} {'defect':>6}  what")
    for cause, text in CAUSES.items():
        c = by_cause.get(cause, Counter())
        if sum(c.values()):
            print(f"{cause:<20} {sum(c.values()):>5} {c['correct']:>7} {c['error']:>6} {c['defective']:>6}  {text}")
    total = Counter(r.outcome for r in runs)
    print(f"{'total':<20} {len(runs):>5} {total['correct']:>7} {total['error']:>6} {total['defective']:>6}")
    print(f"\n{len(runs)} cases: {total['correct']} correct results, {total['error']} clear one-line errors "
          f"({total['correct'] + total['error']} clean), {total['defective']} defective")
    return {"counts": dict(total), "by_cause": {k: dict(v) for k, v in by_cause.items()}}


def write_json(path: str, summary: dict, runs: list[Run]) -> None:
    """The counts and one entry per case (id, cause, tool, outcome, detail, exit status, seconds, command)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": r.case.id, "cause": r.case.cause, "tool": r.case.tool, "outcome": r.outcome,
             "detail": r.detail, "rc": r.rc, "seconds": round(r.seconds, 2),
             "command": " ".join(r.command[1:]) if r.case.tool != "hub" else r.command[2]} for r in runs]
    Path(path).write_text(json.dumps({**summary, "cases": rows}, indent=1))
