"""Control for a pilot's call: retrain the adapter method on the pilot's full-size slice at other learning rates,
score it on the same validation examples, and pair it with the pilot's own full run. Says whether a measured gap
was the method's or the lr's.

    python benchmarks/pilot_lr_control.py --pilot pilot-math --lr 3e-3

Reads PILOT/pilot.json (its spec, data and per-example scores); writes PILOT/lr-control.json and
PILOT/lr-control/runs/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pilot", required=True, help="a finished pilot's --out folder")
    p.add_argument("--lr", required=True, help="comma-separated learning rates for the adapter method")
    args = p.parse_args(argv)
    from tunewise.advise.pilot import PilotSpec, eval_spec, paired_runs, prepare_data, train_and_score
    from tunewise.fileio import atomic_write_json

    pilot = Path(args.pilot)
    result = json.loads((pilot / "pilot.json").read_text())
    spec = PilotSpec(**(result["spec"] | {"out": str(pilot / "lr-control")}))
    pool, valid = prepare_data(spec, Path(spec.out))  # the pilot's own shuffle, so the same slice
    es = eval_spec(spec, Path(result["validation"]))
    n = max(r["n"] for r in result["runs"])
    full = next(r for r in result["runs"] if r["method"] == "full" and r["n"] == n)
    adapter = next(m for m in spec.methods if m != "full")
    rows = {}
    for lr in (float(x) for x in args.lr.split(",")):
        run = train_and_score(spec, adapter, n, pool, lr, es, Path(spec.out))
        gap = paired_runs(full, run)
        rows[f"{lr:g}"] = {"score": run["score"], "final_train_loss": run["final_train_loss"],
                           "seconds": run["seconds"], "full_minus_adapter": gap.as_dict()}
        lo, hi = gap.interval()
        print(f"{adapter} lr {lr:g} at n={n}: {run['metric']} {run['score']:.3f} (train loss "
              f"{run['final_train_loss']:.3f}); full {full['score']:.3f}: full - {adapter} {100 * gap.gap:+.1f} "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}] points", flush=True)
    out = {"pilot": str(pilot), "n": n, "adapter": adapter, "pilot_lr": result["lr"], "runs": rows}
    atomic_write_json(pilot / "lr-control.json", out)
    return out


if __name__ == "__main__":
    main()
