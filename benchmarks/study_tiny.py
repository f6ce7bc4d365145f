"""A small study that mirrors the seed's task table: `tunewise compare` on structured, sql and math (tiny base)
and classify on MiniLM, written to benchmarks/STUDY.md with the command, seeds and machine.

    python benchmarks/study.py [--train-size 600] [--epochs 2] [--out runs/study]

Report what comes out, whatever it is: the question is whether the representation-vs-reasoning pattern of the
seed shows up at this scale, and how LoRA's intruder counts compare with full fine-tuning's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compare(task: str, base: str, out: Path, a, methods: str) -> dict:
    cmd = [sys.executable, "-m", "tunewise", "compare", "--base", base, "--task", task, "--methods", methods,
           "--out", str(out / task), "--train-size", str(a.train_size), "--eval-size", str(a.eval_size),
           "--epochs", str(a.epochs), "--seed", str(a.seed), "-q", "--json"]
    if base == "minilm":
        cmd += ["--probes", "", "--no-analyze"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}",
                "command": " ".join(cmd)}
    shown = ["tunewise"] + cmd[3:]  # as a user types it, with the output folder relative to the repo
    shown = [str(Path(x).relative_to(ROOT)) if x.startswith(str(ROOT)) else x for x in shown]
    return json.loads(r.stdout[r.stdout.index("{"):]) | {"command": " ".join(shown)}


def table(results: dict) -> str:
    lines = ["| task (kind) | method | metric | score | trainable | peak RSS MB | train s | eval loss | intruders | retention |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    from tunewise.report.text import retention_words

    for task, res in results.items():
        if "error" in res:
            lines.append(f"| {task} | failed: {res['error']} | | | | | | | | |")
            continue
        base = res.get("base")
        if base:
            lines.append(f"| {task} ({res['kind']}) | untuned base | {base['metric']} | {base['score']:.3f} | 0 | | | | | |")
        for m, r in res["rows"].items():
            ret = ", ".join(f"{p} {w}" for p, w in retention_words(r.get("retention")).items()) or "-"
            score = f"{r['score']:.3f}" if r["score"] is not None else "-"
            lines.append(f"| {task} ({res['kind']}) | {m} | {r['metric']} | {score} | {r['trainable_params']:,} | "
                         f"{r['peak_rss_mb']:.0f} | {r['train_time_s']:.0f} | {r['final_eval_loss'] or float('nan'):.3f} | "
                         f"{r['intruders'] if r['intruders'] is not None else '-'} | {ret} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-size", type=int, default=600)
    p.add_argument("--eval-size", type=int, default=60)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "study")
    p.add_argument("--tasks", default="structured,sql,math,classify")
    a = p.parse_args()
    t0 = time.time()
    results = {}
    for task in a.tasks.split(","):
        base = "minilm" if task == "classify" else "tiny"
        methods = "lora,full" if base == "minilm" else "lora,qlora,full"
        print(f"{task} on {base} ...", flush=True)
        results[task] = compare(task, base, a.out, a, methods)
    verdicts = "\n".join(f"- **{t}**: {r['verdict']['text']}" if "verdict" in r else f"- **{t}**: {r['error']}"
                         for t, r in results.items())
    commands = "\n".join(f"    {r['command']}" for r in results.values())
    runs = [r for res in results.values() for r in res.get("rows", {}).values()]
    reused = sum(r["reused"] for r in runs)
    timing = (f"{time.time() - t0:.0f} s in all" + (f" ({reused} of {len(runs)} runs reused from an earlier "
              f"invocation; their training took {sum(r['train_time_s'] for r in runs):.0f} s)" if reused else ""))
    text = f"""# A small study mirroring the seed's task table

Produced by `python benchmarks/study.py --train-size {a.train_size} --eval-size {a.eval_size} --epochs {a.epochs:g}
--seed {a.seed}` on {platform.machine()} ({os.cpu_count()} cores, torch CPU, fp32), {time.strftime('%Y-%m-%d')};
{timing}. Each row is one `tunewise compare` method run with the same data, budget and
evaluation; learning rates by model size (`tunewise.compare.default_lr`). Intruders: top-10 singular vectors
of each tuned matrix whose max |cos| to the base's singular vectors is below 0.5, summed over the model.

{table(results)}

Verdicts (tunewise's own words):

{verdicts}

Commands:

{commands}
"""
    (ROOT / "benchmarks" / "study_tiny.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
