"""Packing vs length-grouped batching: training tokens/s on a short-example task, and the ratio.

The `classify` task's examples are short (about 30 tokens), which is where padding and per-row overhead cost
the most. Both runs train LoRA on the same examples with the same seed and the same number of optimizer steps;
tokens/s counts real (non-padding) tokens, as `tunewise train`'s summary does. Two comparisons:

    same batch_size     what changes when a user only flips data.packing on (a packed row holds several
                        examples, so each step trains on more tokens)
    same tokens/step    the length-grouped batch is widened to carry as many examples per step as the packed
                        batch: what packing itself saves (padding), at equal work per step

    python benchmarks/packing_speed.py [--base tiny] [--examples 2000] [--steps 30] [--batch 8] [--seq 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(base: str, data: Path, out: Path, steps: int, batch: int, seq: int, packing: bool) -> dict:
    from tunewise.config import validate_config
    from tunewise.train import train

    cfg = validate_config({"base": base, "method": "lora", "data": {"train": str(data), "max_seq_len": seq,
                                                                    "packing": packing, "group_by_length": True},
                           "lora": {"r": 16}, "train": {"max_steps": steps, "batch_size": batch, "lr": 1e-3,
                                                        "seed": 0, "log_every": 1}})
    return train(cfg, out, quiet=True).summary.as_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="tiny")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    args = ap.parse_args()

    from tunewise.data.formats import load_examples
    from tunewise.models import load_tokenizer
    from tunewise.tasks import make_task
    from tunewise.train.packing import pack

    work = Path(tempfile.mkdtemp(prefix="tunewise-packing-"))
    make_task("classify", work / "task", {"train": args.examples, "validation": 0, "test": 0}, seed=0)
    data = work / "task" / "train.jsonl"
    examples, _ = load_examples(data, load_tokenizer(args.base), max_seq_len=args.seq)
    mean_len = sum(len(e.input_ids) for e in examples) / len(examples)
    per_row = len(examples) / len(pack(examples, args.seq))
    wide = max(args.batch, round(args.batch * per_row))
    results = {"examples": len(examples), "mean_tokens": round(mean_len, 1), "examples_per_packed_row":
               round(per_row, 2), "steps": args.steps}
    rows = [("packed", args.batch, True), ("grouped, same batch_size", args.batch, False),
            ("grouped, same examples/step", wide, False)]
    for name, batch, packing in rows:
        s = run(args.base, data, work / name.replace(" ", "_").replace(",", "").replace("/", "-"), args.steps,
                batch, args.seq, packing)
        results[name] = {"batch_size": batch, "tokens_per_s": s["tokens_per_s"], "train_time_s": s["train_time_s"],
                         "final_train_loss": s["final_train_loss"]}
        print(f"{name:30s} batch {batch:4d}: {s['tokens_per_s']:10.1f} tokens/s ({s['train_time_s']:.1f} s)",
              flush=True)
    packed = results["packed"]["tokens_per_s"]
    results["ratio_same_batch_size"] = round(packed / results["grouped, same batch_size"]["tokens_per_s"], 2)
    results["ratio_same_examples_per_step"] = round(packed / results["grouped, same examples/step"]["tokens_per_s"], 2)
    print(f"packed / grouped tokens/s: {results['ratio_same_batch_size']}x at the same batch_size, "
          f"{results['ratio_same_examples_per_step']}x at the same examples per step "
          f"({per_row:.1f} examples of {mean_len:.0f} tokens per packed row)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
