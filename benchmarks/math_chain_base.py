"""Where a base starts on `math-chain` at several lengths (issue 40, claim 3): the untuned base's accuracy on a few
test examples per setting, to pick a length where it is neither at 0 (a floor no training moves) nor near 1.

    python benchmarks/math_chain_base.py --base smollm2 --steps 3,4,5 --n 40     # ~1 min per setting on 2 cores
    python benchmarks/math_chain_base.py --base tiny --steps 2 --n 4 --high 9,20

Each setting is written as a task folder (`math_chain.chain_spec`) under --out and scored with `tunewise eval`,
the command the study runs; the table gives accuracy with the widest band n examples allow (a share's spread at 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(base: str, steps: int, low: int, high: int, n: int, out: Path) -> dict:
    from tunewise.tasks import make_task, task_format_for
    from tunewise.tasks.math_chain import chain_spec

    spec = chain_spec(steps, low, high)
    folder = out / spec.name
    make_task(spec.name, folder, {"train": 0, "validation": 0, "test": n}, fmt=task_format_for(base), spec=spec)
    cmd = [sys.executable, "-m", "tunewise", "eval", base, "--data", str(folder), "--limit", str(n), "--json",
           "--out", str(folder / "eval")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    ev = json.loads(proc.stdout)
    return {"task": spec.name, "steps": steps, "numbers": f"{low}-{high}", "n": ev["n"], "score": ev["score"]}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2")
    p.add_argument("--steps", default="3,4,5", help="chain lengths, comma-separated")
    p.add_argument("--low", type=int, default=2)
    p.add_argument("--high", default="9", help="largest number of a step, comma-separated")
    p.add_argument("--n", type=int, default=40, help="test examples per setting")
    p.add_argument("--out", type=Path, default=None, help="default: a temporary folder")
    a = p.parse_args()
    from tunewise.decide.band import planned_half_width

    out = a.out or Path(tempfile.mkdtemp(prefix="math-chain-"))
    print(f"| task | steps | numbers | untuned {a.base} accuracy (n) |\n|---|---|---|---|")
    for steps in ints(a.steps):
        for high in ints(a.high):
            r = measure(a.base, steps, a.low, high, a.n, out)
            print(f"| {r['task']} | {steps} | {r['numbers']} | {r['score']:.3f} ({r['n']}, about "
                  f"+-{planned_half_width(r['n'], 0.5):.0f} points) |", flush=True)


if __name__ == "__main__":
    main()
