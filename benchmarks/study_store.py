"""The study's finished steps, kept where a new session finds them (issue 40).

A run folder (OUT/runs/<id>/: the checkpoint, predictions, data) is large and not committed, and earlier sessions
lost theirs with the machine. Each finished step's small result -- settings, scores, each test example's
(numerator, denominator) in `items`, retention, intruders, losses, wall seconds, commands -- is written, atomically,
to a committed folder as STORE/<run id>.json. `--report` renders STUDY.md from these files alone, and a later
session resumes from them: a step whose stored settings match is never run again.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from study_plan import Step, run_id

from tunewise.fileio import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent


def default_store(base: str, scorer_slug: str | None = None) -> Path:
    """benchmarks/study-results/<base>[-<scorer>]: one folder per base (and per scorer: a folder holds one
    scorer's results)."""
    return ROOT / "benchmarks" / "study-results" / (base + (f"-{scorer_slug}" if scorer_slug else ""))


def load_results(out: Path, store: Path) -> dict[str, dict]:
    """Every finished step: the stored results, and any run folder's result.json not stored yet (a run finished
    before the store existed, or on this machine only); the stored copy wins."""
    results = {}
    for path in sorted((out / "runs").glob("*/result.json")) + sorted(store.glob("*.json")):
        res = json.loads(path.read_text())
        results[res["id"]] = res
    return results


def save_result(res: dict, out: Path, store: Path) -> None:
    """Beside the run (for tunewise's own tools) and in the store (for the next session)."""
    atomic_write_json(out / "runs" / res["id"] / "result.json", res)
    atomic_write_json(store / f"{res['id']}.json", res)


def as_stored(value):
    """The value as result.json stores it: a tuple field (the continual's tasks) comes back from JSON as a list."""
    return json.loads(json.dumps(value))


def finished(step: Step, results: dict[str, dict]) -> dict | None:
    res = results.get(run_id(step))
    # both sides as stored: a result read back has lists, one just finished in this process still has tuples
    return res if res is not None and as_stored(res["step"]) == as_stored(asdict(step)) else None
