"""tunewise train vs a plain PEFT + transformers `Trainer` script: tokens/s and peak-memory ratios, one run.

Both train the same LoRA config (r 16, all linear layers, lr 1e-3, batch 16, same tokenised examples, same seed) on
the built-in `structured` task with the shipped tiny base, each in its own subprocess so that peak RSS
(ru_maxrss) is measured per trainer. Tokens/s counts the same non-padding tokens for both, so the ratio is a ratio
of training time. Then LoRA / QLoRA / full on a ~50M Llama built from a config: peak-memory and time ratios.

    python benchmarks/train_vs_hf_trainer.py [--examples 400] [--epochs 1] [--skip-50m]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HF_TRAINER = Path(__file__).resolve().with_name("hf_trainer_lora.py")  # the plain PEFT + Trainer baseline


def run(cmd: list[str], env: dict) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout


def tunewise_run(base: str, data: Path, out: Path, method: str, epochs: float, batch: int, lr: float, env: dict,
                 max_steps: int | None = None) -> dict:
    budget = f"max_steps: {max_steps}" if max_steps else f"epochs: {epochs}"
    cfg = out.with_suffix(".yaml")
    cfg.write_text(f"base: {base}\nmethod: {method}\ndata: {{train: {data}, max_seq_len: 160}}\n"
                   f"lora: {{r: 16}}\ntrain: {{{budget}, batch_size: {batch}, lr: {lr}}}\n")
    out_json = run([sys.executable, "-m", "tunewise", "train", str(cfg), "--out", str(out), "-q", "--json"], env)
    return json.loads(out_json[out_json.index("{"):])


def make_50m(path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.models import load_tokenizer

    tok = load_tokenizer("tiny")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=640, intermediate_size=1728, num_hidden_layers=10,
                      num_attention_heads=10, num_key_value_heads=10, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=400)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--steps-50m", type=int, default=8)
    p.add_argument("--skip-50m", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    from tunewise.tasks import make_task
    from tunewise.zoo import TINY_DIR

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_task("structured", tmp / "data", {"train": a.examples, "validation": 0, "test": 0}, seed=0)
        data = tmp / "data" / "train.jsonl"
        # Alternate the two trainers and keep each one's best run: other load on the machine then hits both.
        ours_runs, hf_runs = [], []
        for i in range(a.repeats):
            ours_runs.append(tunewise_run(str(TINY_DIR), data, tmp / f"tw{i}", "lora", a.epochs, 16, 1e-3, env))
            out = run([sys.executable, str(HF_TRAINER), str(TINY_DIR), str(data), str(tmp / f"hf{i}"),
                       "--epochs", str(a.epochs), "--batch", "16", "--lr", "1e-3"], env)
            hf_runs.append(json.loads(next(x for x in reversed(out.splitlines()) if x.startswith("RESULT "))[7:]))
        ours = max(ours_runs, key=lambda r: r["tokens_per_s"])
        hf = max(hf_runs, key=lambda r: r["tokens_per_s"])
        print(f"LoRA on the tiny base, {a.examples} examples x {a.epochs:g} epoch(s), best of {a.repeats}:")
        print(f"  tunewise train : {ours['tokens_per_s']:8.0f} tokens/s, peak RSS {ours['peak_rss_mb']:7.0f} MB")
        print(f"  HF Trainer     : {hf['tokens_per_s']:8.0f} tokens/s, peak RSS {hf['peak_rss_mb']:7.0f} MB")
        print(f"  ratio tunewise/Trainer: tokens/s {ours['tokens_per_s'] / hf['tokens_per_s']:.2f}x, "
              f"peak memory {ours['peak_rss_mb'] / hf['peak_rss_mb']:.2f}x")
        if a.skip_50m:
            return
        base = make_50m(tmp / "llama50m")
        runs = {m: tunewise_run(str(base), data, tmp / f"m50-{m}", m, 1, 8, 1e-3, env, a.steps_50m)
                for m in ("lora", "qlora", "full")}
        print(f"~50M Llama ({runs['full']['total_params']:,} params), {a.steps_50m} steps, batch 8:")
        for m, s in runs.items():
            print(f"  {m:5s}: peak RSS {s['peak_rss_mb']:7.0f} MB, {s['train_time_s']:6.1f} s, "
                  f"{s['tokens_per_s']:6.0f} tokens/s")
        lo, q, f = runs["lora"], runs["qlora"], runs["full"]
        print(f"  LoRA/full : memory {lo['peak_rss_mb'] / f['peak_rss_mb']:.2f}x, time "
              f"{lo['train_time_s'] / f['train_time_s']:.2f}x")
        print(f"  QLoRA/LoRA: memory {q['peak_rss_mb'] / lo['peak_rss_mb']:.2f}x, time "
              f"{q['train_time_s'] / lo['train_time_s']:.2f}x (the seed: ~0.67x memory, ~1.39x time on GPU)")


if __name__ == "__main__":
    main()
