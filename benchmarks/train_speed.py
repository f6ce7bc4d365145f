"""Training speed on a base: tunewise LoRA / full / QLoRA and a plain PEFT + `Trainer` LoRA, with MFU, in one run.

Every trainer gets the same built-in task (`structured`, chat format on a base with a chat template), the same seed,
the same number of optimizer steps, batch size and sequence limit, each in its own subprocess so that peak RSS
(ru_maxrss) is per trainer. The machine's fp32 matmul peak (2048 x 2048, all threads) is measured in the same run,
before and after the trainers; the higher of the two is the peak.

Model FLOPs per token (the usual definition, independent of how a trainer implements them):
  N   = weights used in matmuls: every nn.Linear in the decoder layers plus the output projection (vocab x hidden;
        counted once when tied to the embedding); the embedding lookup is not a matmul.
  full fine-tuning: 6N (forward 2N, backward 2N for input gradients + 2N for weight gradients);
  LoRA / QLoRA:     4N + 6A, where A is the adapter's parameter count (the frozen base needs no weight gradients).
MFU = tokens/s x FLOPs per token / measured peak. Tokens are the non-padding tokens of the trained batches, so the
"logits only at target positions" saving shows up as a higher MFU, not as fewer counted FLOPs.

    python benchmarks/train_speed.py --base smollm2 [--steps 16] [--batch 8] [--seq-len 128] [--repeats 3 [--rotate]]

Before the timed trainers, an untimed 4-step LoRA run (--warmup-steps): on this box the first training process
after a pause read 10-40% low (its first step at ~140 tokens/s where the next process's ran at ~240), whichever
trainer it was. With --repeats N the trainers run in N rounds (every trainer once per round, in the same order, or with --rotate
starting one trainer later each round), and every figure
is the median over the rounds, with the rounds' range beside it: on this 2-core machine the same trainer moved by
10-30% between idle runs, more than the margins the ratios are judged by. The ratios are also given per round
(both sides measured minutes apart), whose spread says how far one run can be trusted.

The last line reads: lora/full tokens/s R1; lora/Trainer R2; lora MFU M1; full MFU M2; lora/full memory R3;
qlora/lora memory R4; fused/PEFT-forward lora tokens/s R5 (tunewise LoRA with and without lora.fused).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

HF_TRAINER = Path(__file__).resolve().with_name("hf_trainer_lora.py")  # the plain PEFT + Trainer baseline


def matmul_peak_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    """Best fp32 GFLOP/s of an n x n matmul over a few seconds (all threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = 0.0, time.time() + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_params(model_dir: str) -> tuple[int, int]:
    """(N of the docstring: decoder nn.Linear weights + the output projection counted once, all parameters)."""
    from transformers import AutoModelForCausalLM

    from tunewise.models import count_parameters

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and name != "lm_head")
    return linear + model.get_output_embeddings().weight.numel(), count_parameters(model)


def run_json(cmd: list[str], env: dict) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    marked = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]  # Trainer prints dicts too
    return json.loads(marked[-1][len("RESULT "):] if marked else r.stdout[r.stdout.index("{"):])


def tunewise_run(base: str, data: Path, out: Path, method: str, a, env: dict, fused: bool = True) -> dict:
    cfg = out.with_suffix(".yaml")
    cfg.write_text(f"base: {base}\nmethod: {method}\ndata: {{train: {data}, max_seq_len: {a.seq_len}}}\n"
                   f"lora: {{r: {a.rank}, alpha: {a.rank}, dropout: {a.dropout}, fused: {str(fused).lower()}}}\n"
                   f"train: {{max_steps: {a.steps}, batch_size: {a.batch}, lr: {a.lr[method]}}}\n")
    return run_json([sys.executable, "-m", "tunewise", "train", str(cfg), "--out", str(out), "-q", "--json"], env)


def one_round(a, base_dir: str, data: Path, tmp: Path, env: dict, skip: set[str], start: int = 0) -> dict[str, dict]:
    """Every trainer not skipped, once, in the fixed order rotated to begin at the `start`-th; their --json results
    by name (in the order they ran)."""
    tmp.mkdir()
    trainers = {
        "lora": lambda: tunewise_run(a.base, data, tmp / "lora", "lora", a, env),
        "full": lambda: tunewise_run(a.base, data, tmp / "full", "full", a, env),
        "qlora": lambda: tunewise_run(a.base, data, tmp / "qlora", "qlora", a, env),
        "lora-peft": lambda: tunewise_run(a.base, data, tmp / "lora-peft", "lora", a, env, fused=False),
        "trainer": lambda: run_json([sys.executable, str(HF_TRAINER), base_dir, str(data), str(tmp / "hf"),
                                     "--max-steps", str(a.steps), "--batch", str(a.batch), "--lr", str(a.lr["lora"]),
                                     "--seq-len", str(a.seq_len), "--rank", str(a.rank), "--dropout", str(a.dropout),
                                     "--targets", ",".join(TARGETS)], env),
    }
    order = [name for name in trainers if name not in skip]
    order = order[start % len(order):] + order[:start % len(order)]
    return {name: trainers[name]() for name in order}


def median_runs(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Per trainer: the median of each figure over the rounds, and its (min, max) under "<key>_range"."""
    out: dict[str, dict] = {}
    for name in rounds[0]:
        row = {"trainable_params": rounds[0][name]["trainable_params"]}
        for key in ("tokens_per_s", "peak_rss_mb", "train_time_s"):
            values = [r[name][key] for r in rounds]
            row[key], row[f"{key}_range"] = statistics.median(values), (min(values), max(values))
        out[name] = row
    return out


def spread(row: dict, key: str, fmt: str, repeats: int) -> str:
    """" [min-max]" of a median figure over the rounds; nothing for a single round."""
    low, high = row[f"{key}_range"]
    return f" [{low:{fmt}}-{high:{fmt}}]" if repeats > 1 else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="tiny", help="tiny, smollm2 or a model folder")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--examples", type=int, default=400)
    p.add_argument("--warmup-steps", type=int, default=4, help="an untimed LoRA run of this many steps first (0: none)")
    p.add_argument("--repeats", type=int, default=1, help="rounds of every trainer; figures are medians over them")
    p.add_argument("--rotate", action="store_true", help="start each round one trainer later in the order, so that "
                                                          "no trainer always runs first")
    p.add_argument("--skip", default="", help="comma list of trainers to leave out: lora,lora-peft,full,qlora,trainer "
                                              "(lora-peft = tunewise LoRA with lora.fused false: PEFT's own forward)")
    a = p.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    from tunewise.defaults import default_lr
    from tunewise.models import resolve_base
    from tunewise.tasks import make_task, task_format_for

    base_dir = resolve_base(a.base).source
    n_mm, n_params = matmul_params(base_dir)
    skip = set(filter(None, a.skip.split(",")))
    peak_before = matmul_peak_gflops()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_task("structured", tmp / "data", {"train": a.examples, "validation": 0, "test": 0}, seed=0,
                  fmt=task_format_for(a.base))
        data = tmp / "data" / "train.jsonl"
        a.lr = {m: default_lr(m, n_params)[0] for m in ("lora", "qlora", "full")}
        if a.warmup_steps:  # untimed: the first trainer process after a pause read 10-40% low on this box
            tunewise_run(a.base, data, tmp / "warmup", "lora", argparse.Namespace(**{**vars(a), "steps": a.warmup_steps}),
                         env)
        rounds = [one_round(a, base_dir, data, tmp / f"round{i}", env, skip, start=i if a.rotate else 0)
                  for i in range(a.repeats)]
    peak = max(peak_before, matmul_peak_gflops())
    runs = median_runs(rounds)
    print(f"{a.base}: {n_params:,} parameters, N (matmul weights) {n_mm:,}; {a.steps} steps, batch {a.batch}, "
          f"seq <= {a.seq_len}, LoRA r {a.rank} on all linear layers, dropout {a.dropout:g}; "
          f"{a.repeats} round(s), medians" + (" [min-max]" if a.repeats > 1 else ""))
    print(f"fp32 matmul peak (2048^3, all threads): {peak:.0f} GFLOP/s; load average at start "
          f"{load[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    mfu = {}
    for name, r in runs.items():
        adapter = r["trainable_params"] if name != "full" else 0
        flops_per_token = 6 * n_mm if name == "full" else 4 * n_mm + 6 * adapter
        mfu[name] = r["tokens_per_s"] * flops_per_token / (peak * 1e9)
        print(f"  {name:9s}: {r['tokens_per_s']:8.1f}{spread(r, 'tokens_per_s', '.1f', a.repeats)} tokens/s, "
              f"MFU {100 * mfu[name]:5.1f}%, peak RSS {r['peak_rss_mb']:7.0f}{spread(r, 'peak_rss_mb', '.0f', a.repeats)}"
              f" MB, {r['train_time_s']:6.1f} s")
    if a.repeats > 1:
        for i, r in enumerate(rounds):
            print(f"  round {i + 1}: " + ", ".join(f"{name} {run['tokens_per_s']:.0f}" for name, run in r.items())
                  + " tokens/s")
        for x, y, key in (("lora", "full", "tokens_per_s"), ("lora", "trainer", "tokens_per_s"),
                          ("lora", "full", "peak_rss_mb")):
            if x in runs and y in runs:
                per = ", ".join(f"{r[x][key] / r[y][key]:.2f}" for r in rounds)
                print(f"  {x}/{y} {key} per round: {per}")

    def ratio(x: str, y: str, key: str) -> str:
        return f"{runs[x][key] / runs[y][key]:.2f}" if x in runs and y in runs else "n/a"

    def pct(x: str) -> str:
        return f"{100 * mfu[x]:.1f}%" if x in mfu else "n/a"

    print(f"lora/full tokens/s {ratio('lora', 'full', 'tokens_per_s')}; "
          f"lora/Trainer {ratio('lora', 'trainer', 'tokens_per_s')}; lora MFU {pct('lora')}; "
          f"full MFU {pct('full')}; lora/full memory {ratio('lora', 'full', 'peak_rss_mb')}; "
          f"qlora/lora memory {ratio('qlora', 'lora', 'peak_rss_mb')}; "
          f"fused/PEFT-forward lora tokens/s {ratio('lora', 'lora-peft', 'tokens_per_s')}")


if __name__ == "__main__":
    main()
