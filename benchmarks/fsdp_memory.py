"""Per-process peak memory of `tunewise train` under ddp vs fsdp (2 CPU processes, torchrun), estimate beside each.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fsdp_memory.py [--model llama-50m|tiny|micro] [--steps 4]
        [--seq 256] [--nproc 2] [--methods full,lora] [--modes ddp,fsdp] [--json OUT]

For each method (full, LoRA) and each `train.distributed` mode the same run (global batch 8, every example truncated
to exactly --seq tokens so the batch shape is the estimate's) is launched with `torchrun --standalone
--nproc-per-node N`; each rank's peak RSS (ru_maxrss) comes from summary.json's `peak_rss_mb_per_rank`. The
estimate is `tunewise estimate --device cpu --gpus N --distributed MODE` for the per-process micro-batch (8 / N).
Baseline: ddp, where every process holds the whole model and optimizer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from estimate_vs_measured import build_llama, make_data

ROOT = Path(__file__).resolve().parent.parent
BATCH, RANK, DROPOUT = 8, 16, 0.05
SHAPES = {
    "micro": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2),
    "llama-50m": dict(hidden_size=640, intermediate_size=1728, num_hidden_layers=10, num_attention_heads=10,
                      num_key_value_heads=10),
}


def run(model_dir: Path, method: str, mode: str, data: Path, work: Path, steps: int, seq: int, nproc: int) -> dict:
    cfg = {"base": str(model_dir), "method": method,
           "data": {"train": str(data), "max_seq_len": seq, "overlong": "truncate", "check": False},
           "lora": {"r": RANK, "dropout": DROPOUT},
           "train": {"max_steps": steps, "batch_size": BATCH, "device": "cpu", "dtype": "fp32", "log_every": 1,
                     "distributed": mode}}
    out = work / f"{method}-{mode}"
    path = work / f"{method}-{mode}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={nproc}", "-m", "tunewise", "train", str(path), "--out", str(out),
                           "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"train failed for {method}/{mode}:\n{proc.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def estimate_mb(model_dir: Path, method: str, mode: str, seq: int, nproc: int) -> float:
    from tunewise.estimate import EstimateRequest, run_estimate
    from tunewise.estimate.memory import MB

    req = EstimateRequest(model=str(model_dir), methods=(method,), rank=RANK, batch=BATCH // nproc, seq=seq,
                          device="cpu", dtype="fp32", lora_dropout=DROPOUT, gpus=nproc, distributed=mode)
    return run_estimate(req).breakdowns[method].total / MB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-50m", choices=["llama-50m", "tiny", "micro"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--modes", default="ddp,fsdp")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    from tunewise.zoo import TINY_DIR

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = TINY_DIR if args.model == "tiny" else build_llama(work / args.model, TINY_DIR, **SHAPES[args.model])
        data = make_data(work / "train.jsonl")
        for method in args.methods.split(","):
            for mode in args.modes.split(","):
                s = run(model, method, mode, data, work, args.steps, args.seq, args.nproc)
                est = estimate_mb(model, method, mode, args.seq, args.nproc)
                per_rank = s["peak_rss_mb_per_rank"]
                rows.append({"model": args.model, "method": method, "distributed": mode, "params": s["total_params"],
                             "steps": s["steps"], "measured_mb_per_rank": per_rank, "estimate_mb": round(est, 1),
                             "ratio": [round(est / m, 3) for m in per_rank],
                             "final_train_loss": s["final_train_loss"]})
                print(f"{args.model:9s} {method:5s} {mode:5s} {s['total_params']:>11,} params  per-rank peak RSS "
                      f"{', '.join(f'{m:.1f}' for m in per_rank)} MiB  estimate {est:.1f} MiB  "
                      f"ratio {', '.join(f'{est / m:.2f}' for m in per_rank)}", flush=True)
    print("\n| model | method | distributed | params | measured MiB per rank | estimate MiB | est/measured |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['method']} | {r['distributed']} | {r['params']:,} | "
              f"{' / '.join(f'{m:.1f}' for m in r['measured_mb_per_rank'])} | {r['estimate_mb']:.1f} | "
              f"{' / '.join(f'{x:.2f}' for x in r['ratio'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
