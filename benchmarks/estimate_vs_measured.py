"""Estimated vs measured peak RSS of `tunewise train` on this machine (CPU), for full / LoRA / QLoRA.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/estimate_vs_measured.py [--tiny DIR] [--steps 4] [--json OUT]

Three models: a micro Llama (hidden 32; its tensors are ~1 MiB, so its peak RSS is the process baseline: this
calibrates the CPU overhead term), the shipped tiny base (~5M) and a ~50M Llama built from a config and saved with
the tiny tokenizer. Each (model, method) trains in its own subprocess (`python -m tunewise train`, batch 8,
sequence 256, every example truncated to exactly 256 tokens so the batch shape is the estimate's). The ratio
estimate / measured is printed twice: with the overhead constants stored in tunewise/estimate/calibration.py,
and with the baseline measured in this run on the micro model. Target: every ratio within 0.85-1.15 for the
tiny base and the 50M model (the micro model is the calibration point, not a test of the model).
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

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("lora", "qlora", "full")
BATCH, SEQ, RANK = 8, 256, 16
DROPOUT = 0.0  # tunewise's default (LoRA then runs through the fused layers and MLP); --lora-dropout changes it


def build_llama(out: Path, tokenizer_dir: Path, **shape) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=max(len(tok), 2048), max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=True, **shape)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_data(path: Path, n: int = 64) -> Path:
    # a short prompt and a long completion: truncation to SEQ keeps labels, and every example is SEQ tokens
    words = "the quick brown fox jumps over the lazy dog while seven restaurants serve 12 pizzas".split()
    rows = []
    for i in range(n):
        body = " ".join(words[(i + j) % len(words)] for j in range(600))
        rows.append({"prompt": f"Example {i}:\n", "completion": " " + body})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run_train(model_dir: Path, method: str, data: Path, work: Path, steps: int) -> dict:
    cfg = {"base": str(model_dir), "method": method,
           "data": {"train": str(data), "max_seq_len": SEQ, "overlong": "truncate", "check": False},
           "lora": {"r": RANK, "dropout": DROPOUT},
           "train": {"max_steps": steps, "batch_size": BATCH, "device": "cpu", "dtype": "fp32", "log_every": 1}}
    run = work / f"{model_dir.name}-{method}"
    cfg_path = work / f"{model_dir.name}-{method}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "tunewise", "train", str(cfg_path), "--out", str(run), "--quiet"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"train failed for {model_dir.name}/{method}:\n{proc.stderr[-3000:]}")
    return json.loads((run / "summary.json").read_text())


def estimate_parts(model_dir: Path, method: str) -> dict[str, float]:
    """MiB: the estimate with the stored overhead, the tensors alone, and the activations (what slack scales)."""
    from tunewise.estimate import EstimateRequest, run_estimate
    from tunewise.estimate.memory import MB

    req = EstimateRequest(model=str(model_dir), methods=(method,), rank=RANK, batch=BATCH, seq=SEQ,
                          device="cpu", dtype="fp32", lora_dropout=DROPOUT)
    b = run_estimate(req).breakdowns[method]
    overhead = b.terms["framework overhead"] + b.terms.get("allocator slack", 0.0)
    return {"estimate": b.total / MB, "tensors": (b.total - overhead) / MB,
            "activations": (b.terms.get("activations", 0.0) + b.terms.get("logits", 0.0)) / MB}


def fit_and_validate(rows: list[dict]) -> dict:
    """Baseline per method from the micro model; slack fraction per method from the tiny base; test on 50M."""
    by = {(r["model"], r["method"]): r for r in rows}
    fit: dict = {"baseline_mb": {}, "activation_slack": {}}
    for m in METHODS:
        micro, tiny = by.get(("micro", m)), by.get(("tiny", m))
        if micro:
            fit["baseline_mb"][m] = round(micro["measured_mb"] - micro["tensors_mb"], 1)
        if micro and tiny:
            extra = tiny["measured_mb"] - fit["baseline_mb"][m] - tiny["tensors_mb"]
            fit["activation_slack"][m] = round(max(0.0, extra / tiny["activations_mb"]), 3)
    for r in rows:
        m = r["method"]
        if m in fit["activation_slack"]:
            live = fit["baseline_mb"][m] + r["tensors_mb"] + fit["activation_slack"][m] * r["activations_mb"]
            r["estimate_fit_this_run_mb"] = round(live, 1)
            r["ratio_fit_this_run"] = round(live / r["measured_mb"], 3)
        r["ratio_stored"] = round(r["estimate_mb"] / r["measured_mb"], 3)
    return fit


def main() -> None:
    global DROPOUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", default=None, help="the tiny base folder (default: the shipped one)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--models", default="micro,tiny,llama-50m")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lora-dropout", type=float, default=DROPOUT,
                    help="LoRA dropout (0 = the default: the fused LoRA layers and MLP; > 0 takes PEFT's forward)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    DROPOUT = args.lora_dropout
    from tunewise.zoo import TINY_DIR

    tiny = Path(args.tiny or TINY_DIR)
    wanted = args.models.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        builders = {
            "micro": lambda: build_llama(work / "micro", tiny, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
            "tiny": lambda: tiny,
            "llama-50m": lambda: build_llama(work / "llama-50m", tiny, hidden_size=640, intermediate_size=1728,
                                             num_hidden_layers=10, num_attention_heads=10, num_key_value_heads=10),
        }
        data = make_data(work / "train.jsonl")
        for name in wanted:
            path = builders[name]()
            for method in args.methods.split(","):
                s = run_train(path, method, data, work, args.steps)
                e = estimate_parts(path, method)
                rows.append({"model": name, "method": method, "params": s["total_params"], "steps": s["steps"],
                             "measured_mb": s["peak_rss_mb"], "estimate_mb": round(e["estimate"], 1),
                             "tensors_mb": round(e["tensors"], 1), "activations_mb": round(e["activations"], 1)})
                print(f"{name:10s} {method:6s} {s['total_params']:>11,} params  measured {s['peak_rss_mb']:8.1f} MiB"
                      f"  estimate {e['estimate']:8.1f} MiB  ratio {e['estimate'] / s['peak_rss_mb']:.3f}", flush=True)
    fit = fit_and_validate(rows)
    print("\nfitted in this run: baseline (micro) MiB", fit["baseline_mb"], " slack x activations (tiny)",
          fit["activation_slack"])
    print(f"\n{'model':10s} {'method':6s} {'measured':>9s} {'est stored':>10s} {'ratio':>6s} {'est fit here':>12s} "
          f"{'ratio':>6s}")
    for r in rows:
        print(f"{r['model']:10s} {r['method']:6s} {r['measured_mb']:9.1f} {r['estimate_mb']:10.1f} "
              f"{r['ratio_stored']:6.3f} {r.get('estimate_fit_this_run_mb', float('nan')):12.1f} "
              f"{r.get('ratio_fit_this_run', float('nan')):6.3f}")
    held_out = [r for r in rows if r["model"] == "llama-50m"]
    print("\nheld-out (50M) ratios within 15%, constants stored:",
          all(0.85 <= r["ratio_stored"] <= 1.15 for r in held_out),
          "| fitted in this run:", all(0.85 <= r.get("ratio_fit_this_run", 0) <= 1.15 for r in held_out))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "fit": fit}, indent=2))


if __name__ == "__main__":
    main()
