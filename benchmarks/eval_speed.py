"""Eval generation speed: the generation engine (tunewise/generate/, what `tunewise eval` runs) at eval's default
rows vs `model.generate` in fixed batches of 16 (what eval ran before), on the test sets of structured, sql and
math, for the base and for a LoRA adapter trained on each task.

Per task: a task folder (train / test examples, the chat format for an instruct base), a LoRA run trained on it
(`--steps`), then for the base and the adapter the same prompts, stop strings and max_new_tokens as eval, through
both paths, timed on one warm model. Every answer is compared: "identical" counts answers that are the same
text on both paths. A task's ratio R is (examples / s of the engine) / (examples / s of model.generate) over the
base and the adapter together. The last line:

    engine / generate examples/s: structured R1, sql R2, math R3; identical N/N

  .venv/bin/python benchmarks/eval_speed.py --base smollm2            # >= 128 test examples per task
  .venv/bin/python benchmarks/eval_speed.py --base tiny --quick       # the machinery in about a minute on a CPU
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

TASKS = ("structured", "sql", "math")


@dataclass
class Timing:
    task: str
    model: str  # "base" | "lora"
    n: int
    generate_s: float
    engine_s: float
    identical: int
    engine: dict  # the engine's counters: prefill_s, decode_s, steps, row_steps, prefill_tokens, ...


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def generate_in_batches(model, tok, prompts: list, max_new_tokens: int, stop: list[str], batch_size: int) -> list[str]:
    """The old eval path: left-padded fixed batches through model.generate, each run until its longest answer
    ends (or max_new_tokens), then cut at the first stop string."""
    from tunewise.data.formats import prompt_ids
    from tunewise.evaluate.generation import cut_at_stop

    model.eval()
    device = next(model.parameters()).device
    old_side, tok.padding_side = tok.padding_side, "left"
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tok.pad({"input_ids": [prompt_ids(p, tok) for p in prompts[i: i + batch_size]]},
                          return_tensors="pt").to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [cut_at_stop(t, stop) for t in texts]
    finally:
        tok.padding_side = old_side
    return out


def timed(fn) -> tuple[list[str], float]:
    sync()
    t0 = time.perf_counter()
    res = fn()
    sync()
    return res, time.perf_counter() - t0


def prepare(task: str, base: str, root: Path, n_test: int, n_train: int, steps: int) -> tuple[Path, Path]:
    """A task folder and a LoRA run trained on it."""
    from tunewise.config import validate_config
    from tunewise.tasks import make_task, task_format_for
    from tunewise.train.run import train

    task_dir = root / task
    make_task(task, task_dir, {"train": n_train, "validation": 4, "test": n_test}, seed=0,
              fmt=task_format_for(base))
    cfg = validate_config({"base": base, "method": "lora", "data": {"train": str(task_dir / "train.jsonl"),
                                                                    "max_seq_len": 256},
                           "lora": {"r": 16}, "train": {"max_steps": steps, "batch_size": 8, "seed": 0}})
    run_dir = root / f"run-{task}"
    train(cfg, run_dir, quiet=True)
    return task_dir, run_dir


def measure(task: str, label: str, model, tok, spec, batch: int, engine_batch: int) -> Timing:
    from tunewise.evaluate.generation import greedy_generate

    prompts = [it.prompt for it in spec.items if it.error is None]
    args = (spec.max_new_tokens, list(spec.stop))
    generate_in_batches(model, tok, prompts[:2], *args, batch)  # warm-up: kernels, caches, allocator
    greedy_generate(model, tok, prompts[:2], *args, batch_size=engine_batch)
    ref, t_gen = timed(lambda: generate_in_batches(model, tok, prompts, *args, batch))
    stats: dict = {}
    got, t_eng = timed(lambda: greedy_generate(model, tok, prompts, *args, batch_size=engine_batch, stats=stats))
    same = sum(a == b for a, b in zip(ref, got, strict=True))
    differ = [i for i, (a, b) in enumerate(zip(ref, got, strict=True)) if a != b]
    for i in differ[:3]:  # the first few, so a tie can be looked at
        print(f"  differs: {task}/{label} example {i}: generate {ref[i]!r} vs engine {got[i]!r}")
    t = Timing(task, label, len(prompts), t_gen, t_eng, same, stats)
    print(f"{task:10s} {label:4s} n={t.n:4d}  generate {t.n / t_gen:7.2f} ex/s  engine {t.n / t_eng:7.2f} ex/s  "
          f"x{t_gen / t_eng:5.2f}  identical {same}/{t.n}", flush=True)
    print(f"{'':15s} engine: {where_time_goes(stats, t_eng)}", flush=True)
    return t


def where_time_goes(stats: dict, wall: float) -> str:
    """The engine's time split: prefill forwards, decode forwards, and the rest (choosing tokens, stop strings,
    cache bookkeeping, Python), with the decode batch's mean rows."""
    pre, dec = stats.get("prefill_s", 0.0), stats.get("decode_s", 0.0)
    steps = max(1, stats.get("steps", 0))
    return (f"prefill {pre / wall:4.0%} ({stats.get('prefill_tokens', 0)} tokens, {stats.get('shared_prefix_rows', 0)}"
            f" rows from a shared prefix), decode {dec / wall:4.0%} ({stats.get('steps', 0)} steps x "
            f"{stats.get('row_steps', 0) / steps:.1f} rows, {1e3 * dec / steps:.0f} ms/step), "
            f"other {max(0.0, wall - pre - dec) / wall:4.0%}")


def op_profile(model, tok, spec, engine_batch: int, n: int = 32) -> str:
    """torch.profiler over the engine on `n` prompts: the operators' shares of the CPU time."""
    from torch.profiler import ProfilerActivity, profile

    from tunewise.evaluate.generation import greedy_generate

    prompts = [it.prompt for it in spec.items if it.error is None][:n]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        greedy_generate(model, tok, prompts, spec.max_new_tokens, list(spec.stop), batch_size=engine_batch)
        wall = time.perf_counter() - t0
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    top = ", ".join(f"{e.key} {e.self_cpu_time_total / 1e6 / wall:.0%}" for e in ops[:5])
    return f"{top}; all operators {total / wall:.0%} of {wall:.1f} s (the rest: Python and the profiler)"


def run_task(task: str, args, root: Path) -> list[Timing]:
    from tunewise.evaluate.generation import GENERATE_ROWS
    from tunewise.evaluate.runner import resolve_data
    from tunewise.models import load_base, load_tuned

    task_dir, run_dir = prepare(task, args.base, root, args.n, args.train, args.steps)
    spec = resolve_data(data=str(task_dir))
    model, tok = load_base(args.base)
    eb = args.engine_batch or GENERATE_ROWS
    out = [measure(task, "base", model, tok, spec, args.batch, eb)]
    del model
    tuned, tok = load_tuned(str(run_dir))
    out.append(measure(task, "lora", tuned, tok, spec, args.batch, eb))
    if args.profile:
        print(f"{'':15s} profile ({task}, lora, 32 examples): {op_profile(tuned, tok, spec, eb)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="smollm2", help="smollm2 (the measurement) or tiny")
    p.add_argument("--quick", action="store_true", help="8 test examples, 2 training steps: the machinery only")
    p.add_argument("--n", type=int, default=128, help="test examples per task (>= 128 for a measurement)")
    p.add_argument("--train", type=int, default=256, help="training examples per task")
    p.add_argument("--steps", type=int, default=60, help="LoRA training steps per task")
    p.add_argument("--batch", type=int, default=16, help="rows per batch of model.generate (eval's old batch)")
    p.add_argument("--engine-batch", type=int, default=0,
                   help="rows decoding together in the engine (default: eval's, GENERATE_ROWS)")
    p.add_argument("--profile", action="store_true", help="after each task, torch.profiler's operator shares")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, from " + ", ".join(TASKS))
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.train, args.steps = 8, 16, 2
    timings: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="eval_speed-") as tmp:
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            timings += run_task(task, args, Path(tmp))
    ratios = []
    for task in dict.fromkeys(t.task for t in timings):
        rows = [t for t in timings if t.task == task]
        ratios.append(f"{task} {sum(t.generate_s for t in rows) / sum(t.engine_s for t in rows):.2f}")
    same, total = sum(t.identical for t in timings), sum(t.n for t in timings)
    print(f"engine / generate examples/s: {', '.join(ratios)}; identical {same}/{total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
