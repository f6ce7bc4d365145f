"""The baseline the training benchmarks compare against: LoRA with plain PEFT + transformers' `Trainer`.

Run as its own process (so its peak RSS is its own) by benchmarks/train_speed.py and train_vs_hf_trainer.py. It
trains on the very examples tunewise trains on (tunewise's tokenisation and collation, so both see the same
tokens and labels), with PEFT's LoraConfig and the Trainer's own loop, cosine schedule and clipping. Prints one
line `RESULT {json}`: train_time_s, tokens (non-padding tokens of the trained batches), tokens_per_s,
peak_rss_mb, trainable_params.

    python benchmarks/hf_trainer_lora.py BASE_DIR TRAIN.jsonl OUT --batch 16 --lr 1e-3 (--epochs 1 | --max-steps 20)
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from tunewise.data.formats import Example, load_examples
from tunewise.train.batches import collate

ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class CountingTrainer(Trainer):
    """Counts the non-padding tokens it trains on (the same count tunewise reports)."""

    tokens = 0

    def training_step(self, model, inputs, *args, **kwargs):
        CountingTrainer.tokens += int(inputs["attention_mask"].sum())
        return super().training_step(model, inputs, *args, **kwargs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="steps instead of epochs (-1: use --epochs)")
    p.add_argument("--seq-len", type=int, default=160)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.0, help="tunewise's default (LoRA Without Regret, PEFT)")
    p.add_argument("--targets", default=ALL_LINEAR)
    a = p.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.base)
    model = AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.rank, lora_dropout=a.dropout,
                                             task_type="CAUSAL_LM", target_modules=a.targets.split(",")))
    examples, _ = load_examples(a.data, tok, max_seq_len=a.seq_len)
    rows = Rows([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])

    def collator(items):
        return collate([Example(it["input_ids"], it["labels"], 0) for it in items], tok.pad_token_id)

    args = TrainingArguments(output_dir=a.out, per_device_train_batch_size=a.batch, num_train_epochs=a.epochs,
                             max_steps=a.max_steps, learning_rate=a.lr, lr_scheduler_type="cosine",
                             warmup_steps=0.03, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                             seed=0, use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
                             disable_tqdm=True)
    trainer = CountingTrainer(model=model, args=args, train_dataset=rows, data_collator=collator)
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    tokens = CountingTrainer.tokens
    print("RESULT " + json.dumps({"train_time_s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                  "trainable_params": sum(q.numel() for q in model.parameters() if q.requires_grad)}))


if __name__ == "__main__":
    main()
