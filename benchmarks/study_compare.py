"""Each headline task of the study as a `tunewise compare` directory: compare.json from the seed-0 LoRA and full
runs, and the HTML report `tunewise report` draws from it (loss curves, cost, intruders per layer, retention).

The runs themselves are the study's; this only arranges them the way compare does, so the report is the same
one a user gets from `tunewise compare`.
"""

from __future__ import annotations

import json
from pathlib import Path

from study_advice import ADVISE_TASK
from study_claims import Reader
from study_exec import data_folder
from study_plan import EVAL_SIZE, HEADLINE_TASKS, Run

from tunewise.compare import row_for, verdict
from tunewise.decide.vocabulary import kind_of
from tunewise.fileio import atomic_write_json


def compare_dict(r: Reader, base: str, task: str, out: Path) -> dict | None:
    results = {m: r.result_of(Run(task, m)) for m in ("lora", "full")}
    if None in results.values() or not all((out / "runs" / res["id"] / "run" / "summary.json").is_file()
                                           for res in results.values()):
        return None  # not run yet, or its run folder was removed: the tables still stand on result.json
    rows = {}
    for method, res in results.items():
        run_dir = out / "runs" / res["id"] / "run"
        summary = json.loads((run_dir / "summary.json").read_text())
        intr = json.loads((run_dir / "analysis.json").read_text()) if (run_dir / "analysis.json").is_file() else \
            {"total": r.intruders(res)}
        rows[method] = row_for(method, summary, res["eval"], intr, run_dir)
    base_score = r.base_score(task)
    from tunewise.advise.engine import AdviseInput, advise

    return {"spec": {"base": base, "task": task, "methods": ["lora", "full"]}, "kind": kind_of(task),
            "data": str(data_folder(out, task, 0, 240, EVAL_SIZE)), "base_params": rows["full"].total_params,
            "base": {"score": base_score, "metric": rows["lora"].metric},
            "lr_notes": {m: f"{row.lr:g} (the study's sweep)" for m, row in rows.items()},
            "rows": {m: row.as_dict() for m, row in rows.items()}, "verdict": verdict(rows, kind_of(task), base_score),
            "advice": advise(AdviseInput(task=ADVISE_TASK[task], model=base, device="cpu")).as_dict(),
            "created": f"benchmarks/study.py, seed 0 runs {', '.join(res['id'] for res in results.values())}"}


def write_compare_reports(r: Reader, base: str, out: Path) -> list[Path]:
    """OUT/compare/<task>/report.html for every headline task whose seed-0 runs finished."""
    from tunewise.report import write_report

    written = []
    for task in HEADLINE_TASKS:
        cmp = compare_dict(r, base, task, out)
        if cmp is None:
            continue
        folder = out / "compare" / task
        atomic_write_json(folder / "compare.json", cmp)
        written.append(write_report(folder))
    return written
