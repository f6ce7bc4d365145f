"""Base vs LoRA-tuned scores on each built-in task, with the retention change, for the shipped tiny base.

For every task: write the task (tunewise.tasks.make_task), score the base on the test split, fine-tune the base
with LoRA through the trainer (tunewise.train.train, probes arithmetic + lm preserved), score the tuned model on
the same test split, and print tuned / base. With --minilm, also LoRA on all-MiniLM-L6-v2 for `classify`
(sequence classification), against the same encoder with its untrained head.

    .venv/bin/python benchmarks/tasks_benchmark.py --out /tmp/tw-bench      # the four tasks (RESULTS.md's table)
    .venv/bin/python benchmarks/tasks_benchmark.py --minilm                 # and LoRA on MiniLM for classify
    .venv/bin/python benchmarks/tasks_benchmark.py --tasks sql --steps 100  # one task, quicker
    .venv/bin/python benchmarks/tasks_benchmark.py --tasks structured --trainable-tokens ''  # plain LoRA

Defaults: 2000 training examples, 60 test, 400 steps (x STEP_SCALE), lr 2e-3, r 16 alpha 32 on all linear
layers, and the embedding rows of the answers' tokens trained with the adapter (lora.trainable_tokens: targets).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tunewise.config import RunConfig  # noqa: E402
from tunewise.evaluate.runner import evaluate, load_target, resolve_data  # noqa: E402
from tunewise.tasks import TASKS, make_task  # noqa: E402
from tunewise.train import train  # noqa: E402

# Per-task learning budget: the math solutions are ~3x longer than a label, so they get more steps.
STEP_SCALE = {"structured": 1.0, "classify": 0.5, "sql": 1.0, "math": 1.5}


def run_task(name: str, args, root: Path) -> dict:
    data = root / name / "data"
    make_task(name, data, {"train": args.train, "validation": 50, "test": args.test}, seed=0)
    spec = resolve_data(str(data))
    t0 = time.time()
    base = evaluate(load_target(args.base), spec, batch_size=args.batch_size)
    steps = max(10, int(args.steps * STEP_SCALE[name]))
    cfg = RunConfig.model_validate({
        "base": args.base, "method": "lora",
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "validation.jsonl"), "max_seq_len": 256},
        "lora": {"r": args.r, "alpha": 2 * args.r, "dropout": 0.0, "trainable_tokens": args.trainable_tokens},
        "train": {"max_steps": steps, "lr": args.lr, "batch_size": args.train_batch, "warmup_ratio": 0.05, "seed": 0,
                  "device": "cpu"},
        "preserve": {"probes": ["arithmetic", "lm"], "limit": args.probe_limit, "max_drop": 0.1},
    })
    result = train(cfg, root / name / "run", quiet=True)
    tuned = evaluate(load_target(str(root / name / "run")), spec, batch_size=args.batch_size)
    s = result.summary.as_dict()
    return {"task": name, "scorer": spec.scorer_name, "metric": base.primary, "n_test": base.n,
            "base": base.metrics, "tuned": tuned.metrics, "steps": s["steps"], "epochs": s["epochs"],
            "train_time_s": s["train_time_s"], "trainable_params": s["trainable_params"],
            "final_train_loss": s["final_train_loss"], "final_eval_loss": s["final_eval_loss"],
            "retention": s.get("retention"), "wall_s": round(time.time() - t0, 1)}


def run_minilm(args, root: Path) -> dict:
    from tunewise.evaluate.runner import Loaded
    from tunewise.models import load_model, load_tokenizer
    from tunewise.tasks.classify import LABELS

    data = root / "minilm-classify" / "data"
    make_task("classify", data, {"train": args.train, "validation": 50, "test": args.test}, seed=0)
    spec = resolve_data(str(data))
    labels = sorted(LABELS)  # the trainer numbers classes in sorted order
    t0 = time.time()
    head = load_model("minilm", task="sequence-classification", num_labels=len(labels))
    base = evaluate(Loaded(head, load_tokenizer("minilm"), "classifier", "minilm (untrained head)", labels=labels),
                    spec, batch_size=32)
    cfg = RunConfig.model_validate({
        "base": "minilm", "method": "lora", "task_type": "sequence-classification", "num_labels": len(labels),
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "validation.jsonl"), "max_seq_len": 64},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": args.minilm_steps, "lr": args.minilm_lr, "batch_size": 16, "seed": 0, "device": "cpu"},
    })
    result = train(cfg, root / "minilm-classify" / "run", quiet=True)
    tuned = evaluate(load_target(str(root / "minilm-classify" / "run")), spec, batch_size=32)
    s = result.summary.as_dict()
    return {"task": "classify (MiniLM, sequence classification)", "scorer": "classify", "metric": "accuracy",
            "n_test": base.n, "base": base.metrics, "tuned": tuned.metrics, "steps": s["steps"],
            "epochs": s["epochs"], "train_time_s": s["train_time_s"], "trainable_params": s["trainable_params"],
            "final_train_loss": s["final_train_loss"], "final_eval_loss": s["final_eval_loss"],
            "retention": None, "wall_s": round(time.time() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="tiny")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=60)
    p.add_argument("--steps", type=int, default=400, help="LoRA steps (scaled per task by STEP_SCALE).")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--trainable-tokens", type=lambda v: v if v == "targets" else [t for t in v.split(",") if t],
                   default="targets", help="lora.trainable_tokens: 'targets', comma-separated strings, or '' (none).")
    p.add_argument("--probe-limit", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--minilm", action="store_true", help="Also LoRA on MiniLM for classify.")
    p.add_argument("--minilm-steps", type=int, default=120)
    p.add_argument("--minilm-lr", type=float, default=2e-3)
    p.add_argument("--out", type=Path, default=Path("runs/tasks-benchmark"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    jobs = [t.strip() for t in args.tasks.split(",") if t.strip()] + (["minilm"] if args.minilm else [])
    for job in jobs:  # results.json is rewritten after each task, so a long run can be read as it goes
        rows.append(run_minilm(args, args.out) if job == "minilm" else run_task(job, args, args.out))
        (args.out / "results.json").write_text(json.dumps(rows, indent=2))
        r = rows[-1]
        print(f"done {r['task']}: {r['metric']} base {r['base'][r['metric']]:.3f} -> tuned "
              f"{r['tuned'][r['metric']]:.3f} ({r['steps']} steps, {r['wall_s']}s)", flush=True)
    print(f"\n{'task':44s} {'metric':20s} {'base':>7s} {'tuned':>7s} {'tuned/base':>10s} {'steps':>6s} {'train s':>8s}")
    for r in rows:
        b, t = r["base"][r["metric"]], r["tuned"][r["metric"]]
        ratio = f"{t / b:.1f}x" if b > 0 else "inf (base 0)"
        print(f"{r['task']:44s} {r['metric']:20s} {b:7.3f} {t:7.3f} {ratio:>10s} {r['steps']:6d} "
              f"{r['train_time_s']:8.1f}")
    print("\nretention (probe: base -> tuned, relative change; positive worse_by = forgot)")
    for r in rows:
        for name, c in (r["retention"] or {}).items():
            rel = "n/a" if c["rel_change"] is None else f"{c['rel_change']:+.1%}"
            print(f"  {r['task']:12s} {name:10s} {c['metric']:8s} {c['before']:.4f} -> {c['after']:.4f} ({rel}) "
                  f"dropped={c['dropped']}")
    print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
