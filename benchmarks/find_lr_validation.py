"""Does `tunewise train --find-lr` pick a good lr? The range test's suggestion against a 5-point grid sweep at the
same training budget, scored by validation loss.

    python benchmarks/find_lr_validation.py --base tiny --method lora --task structured
    python benchmarks/find_lr_validation.py --base smollm2 --method full --task structured --steps 60

The grid is the size default x 10^(-1, -0.5, 0, 0.5, 1) (tunewise/defaults.py); the suggestion is trained with the
same budget; it passes when its validation loss is within 10% of the grid's best. Prints a table and writes
OUT/validation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRID_EXPONENTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
TOLERANCE = 0.10


def config(args, data: Path, method: str, lr: float | None) -> dict:
    train = {"max_steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "log_every": 5}
    if lr is not None:
        train["lr"] = lr
    return {"base": args.base, "method": method, "lora": {"r": args.rank},
            "data": {"train": str(data / "train.jsonl"), "eval": str(data / "validation.jsonl"),
                     "max_seq_len": args.max_seq_len}, "train": train}


def val_loss(args, data: Path, lr: float, out: Path) -> dict:
    from tunewise.config import validate_config
    from tunewise.train import train

    run_dir = out / "runs" / f"{args.method}-lr{lr:.3g}"
    if (run_dir / "summary.json").is_file():  # a repeated benchmark reuses finished points
        s = json.loads((run_dir / "summary.json").read_text())
    else:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        s = train(validate_config(config(args, data, args.method, lr)), run_dir, quiet=True).summary.as_dict()
    return {"lr": lr, "val_loss": s["final_eval_loss"], "train_loss": s["final_train_loss"],
            "seconds": s["train_time_s"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny")
    p.add_argument("--method", default="lora", choices=["lora", "qlora", "full"])
    p.add_argument("--task", default="structured")
    p.add_argument("--train-size", type=int, default=300)
    p.add_argument("--val-size", type=int, default=60)
    p.add_argument("--steps", type=int, default=40, help="training budget of every grid point (optimizer steps)")
    p.add_argument("--find-lr-steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--divisor", type=float, default=None,
                   help="the range test's divisor (default: tunewise's rule for the method)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    out = Path(args.out or f"runs/find-lr-validation/{args.base}-{args.method}-{args.task}")
    from tunewise.config import validate_config
    from tunewise.tasks import ensure_task, task_format_for
    from tunewise.train.find_lr import range_test, write_result

    t0 = time.time()
    sizes = {"train": args.train_size, "validation": args.val_size, "test": 16}
    data = ensure_task(args.task, out / "data", sizes, args.seed, task_format_for(args.base))
    cfg = validate_config(config(args, data, args.method, None))
    test = range_test(cfg, args.find_lr_steps, divisor=args.divisor)  # None: tunewise's rule for the method
    write_result(test, out)
    if test.suggestion is None:
        raise SystemExit(f"no suggestion: {test.error}")
    suggested = float(f"{test.suggestion.lr:.3g}")
    grid = [float(f"{test.size_default_lr * 10 ** e:.3g}") for e in GRID_EXPONENTS]
    print(f"find-lr: suggested {suggested:g} (lowest loss at {test.suggestion.min_loss_lr:.3g}, "
          f"{test.seconds:.0f}s); grid {grid}", flush=True)
    points = []
    for lr in grid:
        points.append(val_loss(args, data, lr, out) | {"grid": True})
        print(f"  lr {lr:<8g} val loss {points[-1]['val_loss']:.4f}", flush=True)
    sugg = next((dict(pt, grid=True) for pt in points if pt["lr"] == suggested), None)
    if sugg is None:
        sugg = val_loss(args, data, suggested, out) | {"grid": False}
        points.append(sugg)
    best = min((pt for pt in points if pt["grid"]), key=lambda pt: pt["val_loss"])
    ratio = sugg["val_loss"] / best["val_loss"]
    result = {"base": args.base, "method": args.method, "task": args.task, "steps": args.steps,
              "train_size": args.train_size, "batch_size": args.batch_size, "suggested_lr": suggested,
              "size_default_lr": test.size_default_lr, "find_lr": test.suggestion.as_dict(),
              "points": points, "best_grid_lr": best["lr"], "best_grid_val_loss": best["val_loss"],
              "suggested_val_loss": sugg["val_loss"], "ratio": round(ratio, 4),
              "within_10_percent": ratio <= 1 + TOLERANCE, "seconds": round(time.time() - t0, 1)}
    (out / "validation.json").write_text(json.dumps(result, indent=2))
    print("\n| lr | val loss |\n|---|---|")
    for pt in sorted(points, key=lambda pt: pt["lr"]):
        mark = " (suggested)" if pt["lr"] == suggested else " (best of grid)" if pt is best else ""
        print(f"| {pt['lr']:g}{mark} | {pt['val_loss']:.4f} |")
    print(f"suggestion {suggested:g}: val loss {sugg['val_loss']:.4f} vs best of grid {best['val_loss']:.4f} at "
          f"{best['lr']:g} -> ratio {ratio:.3f}: {'within' if result['within_10_percent'] else 'NOT within'} 10%"
          f" ({result['seconds']:.0f}s)")
    return result


if __name__ == "__main__":
    main()
