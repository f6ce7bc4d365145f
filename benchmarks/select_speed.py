"""Benchmark: `tunewise data select` end to end on a noisy built-in task, with where the time goes.

Makes `structured` with --noise 0.3 at --records training records, selects half of them on each base with an
empty score cache (cold), then again with the scores cached (warm: another --k reruns no model), and prints per
base: wall time, the phases (screen = data check's findings, load, tokenise, the prompted pass, the answer-alone
pass, pick, write), the scoring rate in records/s, and the share of planted bad records left out.

    .venv/bin/python benchmarks/select_speed.py                          # 10,000 on tiny, 1,000 on smollm2
    .venv/bin/python benchmarks/select_speed.py --small                  # 300 on tiny only (a smoke run)
    .venv/bin/python benchmarks/select_speed.py --bases tiny,smollm2 --records 10000 --smollm2-records 2000

The issue's target: 10,000 records on the tiny base in under a minute on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_one(base: str, records: int, work: Path, noise: float) -> dict:
    from tunewise.evaluate.select_report import write_selection
    from tunewise.evaluate.select_run import SelectOptions, choose
    from tunewise.tasks import make_task

    task = work / f"task-{records}"
    if not (task / "meta.json").is_file():
        make_task("structured", task, {"train": records, "validation": 1, "test": 1}, seed=0, noise=noise)
    meta = json.loads((task / "meta.json").read_text())
    data, out = task / "train.jsonl", work / f"{base}-{records}.jsonl"
    opts = SelectOptions(k=records // 2, base=base, progress=False, force=True)
    rows = {}
    for phase in ("cold", "warm"):
        t0 = time.perf_counter()
        sel = choose(data, opts)
        t1 = time.perf_counter()
        report = write_selection(data, out, sel, opts)
        t2 = time.perf_counter()
        seconds = dict(report["scoring"]["seconds"], write=round(t2 - t1, 3))
        scored = len(sel.scored)
        forward = seconds.get("prompted_pass", 0) + seconds.get("answer_alone_pass", 0)
        left = {x["line"] for x in report["left_out_records"]}
        bad = [b["line"] for b in meta["noise"]["bad"]]
        rows[phase] = {"wall_s": round(t2 - t0, 2), "seconds": seconds, "scored": scored,
                       "records_per_s": round(scored / forward, 1) if forward else None,
                       "planted_left_out": round(sum(b in left for b in bad) / len(bad), 3)}
    return {"base": base, "records": records, **rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", default="tiny,smollm2")
    ap.add_argument("--records", type=int, default=10_000, help="records on the tiny base")
    ap.add_argument("--smollm2-records", type=int, default=1_000, help="records on smollm2 (slower per record)")
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--small", action="store_true", help="300 records on tiny only: checks the script runs")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    bases = ["tiny"] if args.small else args.bases.split(",")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TUNEWISE_CACHE"] = str(Path(tmp) / "cache")  # cold means cold
        for base in bases:
            n = 300 if args.small else (args.smollm2_records if base == "smollm2" else args.records)
            results.append(run_one(base, n, Path(tmp), args.noise))
            r = results[-1]
            for phase in ("cold", "warm"):
                p = r[phase]
                print(f"{base:8s} {n:6d} records {phase}: {p['wall_s']:7.2f} s, scoring {p['records_per_s']} "
                      f"records/s, planted bad left out {p['planted_left_out']:.1%}; {p['seconds']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
