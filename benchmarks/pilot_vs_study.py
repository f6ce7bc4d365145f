"""Does `advise --pilot` predict the winner of the full-budget comparison? The pilot on each built-in task against
the study's `tunewise compare` result for the same task, data and base (benchmarks/study.py writes them).

    python benchmarks/study_tiny.py --out runs/study                 # the full-budget comparisons (once)
    python benchmarks/pilot_vs_study.py --base tiny --study runs/study --budget 4
    python benchmarks/study.py --base smollm2                        # the real base's study writes
    python benchmarks/pilot_vs_study.py --base smollm2 --study runs/study-smollm2/compare --tasks structured,classify,sql,math

    # at the study's own budget, the last point on all 240 examples: the gap measured pair by pair, not extrapolated
    python benchmarks/pilot_vs_study.py --base smollm2 --study runs/study-smollm2/compare --points 60,240 --epochs 1 --budget 40

Agreement: the pilot's recommendation (LoRA or full) equals the study's, where a study gap within the tie margin
(2 points) counts as LoRA (the cheaper method; the same margin the pilot uses). Prints a table and writes
OUT/pilot_vs_study.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunewise.decide.margins import MARGINS  # noqa: E402  (the decision module's margin)


def study_winner(compare: dict) -> tuple[str | None, float | None]:
    """(the call, full - LoRA gap in points) of a compare.json: tunewise.decide's call where compare made one."""
    rows = compare["rows"]
    lora, full = rows.get("lora"), rows.get("full")
    if not lora or not full or lora["score"] is None or full["score"] is None:
        return None, None
    gap = 100 * (full["score"] - lora["score"])
    return compare["verdict"].get("call") or f"undecided (no band; {MARGINS.tie:g}-point margin)", round(gap, 2)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny")
    p.add_argument("--tasks", default="structured,sql,math")
    p.add_argument("--study", default="runs/study", help="folder with <task>/compare.json (study_tiny.py, or study.py's OUT/compare)")
    p.add_argument("--budget", type=float, default=4.0, help="minutes per task")
    p.add_argument("--points", default=None, help="slice sizes, e.g. 60,240 (default: planned from the budget); a "
                   "last point at the study's full size measures the gap there, paired, with nothing extrapolated")
    p.add_argument("--epochs", type=float, default=2.0, help="epochs over each slice (the study's runs: 1)")
    p.add_argument("--out", default="runs/pilot-vs-study")
    args = p.parse_args(argv)
    from tunewise.advise.pilot import PilotSpec, run_pilot

    rows = []
    for task in args.tasks.split(","):
        cmp_path = Path(args.study) / task / "compare.json"
        if not cmp_path.is_file():
            print(f"{task}: no {cmp_path}; run benchmarks/study.py first", file=sys.stderr)
            continue
        compare = json.loads(cmp_path.read_text())
        data = Path(compare["data"])  # the very files the study trained and scored on
        t0 = time.time()
        result = run_pilot(PilotSpec(base=args.base, train=str(data / "train.jsonl"),
                                     eval=str(data / "validation.jsonl"), task_kind=compare.get("kind"),
                                     budget_min=args.budget, out=str(Path(args.out) / task), epochs=args.epochs,
                                     points=[int(x) for x in args.points.split(",")] if args.points else None),
                           log=lambda m: print(f"  {m}", flush=True))
        winner, gap = study_winner(compare)
        v = result["verdict"]
        rows.append({"task": task, "study_winner": winner, "study_gap_points": gap,
                     "pilot": v["recommendation"], "evidence": v["evidence"], "agree": v["recommendation"] == winner,
                     "predictions": result["predictions"], "paired": result["paired"],
                     "seconds": round(time.time() - t0)})
        print(f"{task}: study {winner} (gap {gap}), pilot {v['recommendation']} ({v['evidence']})", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "pilot_vs_study.json").write_text(json.dumps(rows, indent=2))
    print("\n| task | study winner (full - LoRA, points) | pilot | evidence | agree |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['study_winner']} ({r['study_gap_points']}) | {r['pilot']} | {r['evidence']} | "
              f"{'yes' if r['agree'] else 'no'} |")
    print(f"agreement: {sum(r['agree'] for r in rows)} of {len(rows)}")
    return rows


if __name__ == "__main__":
    main()
