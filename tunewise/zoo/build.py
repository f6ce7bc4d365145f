"""Build the shipped tiny base: corpus -> byte-level BPE tokenizer -> pre-trained LlamaForCausalLM -> safetensors.

    python -m tunewise.zoo.build                      # rebuild tunewise/zoo/tiny (about 15 minutes on 2 CPU cores)
    python -m tunewise.zoo.build --out /tmp/t --steps 5 --docs 2000   # a quick reproducibility check

Deterministic on CPU: the same seed, steps and thread count give the same weights, hence the same sha256.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tunewise.fileio import atomic_write_json, sha256_file
from tunewise.zoo import TINY_DIR
from tunewise.zoo.corpus import RECIPE, documents, heldout_documents

EOS, PAD = "<|endoftext|>", "<|pad|>"
MODEL_SHAPE = dict(vocab_size=2048, hidden_size=256, intermediate_size=640, num_hidden_layers=6,
                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)


def train_tokenizer(texts: list[str], vocab_size: int):
    tok = Tokenizer(models.BPE())
    # Digits are split one by one so that numbers share tokens (arithmetic is a base skill we measure), and a space
    # is a token of its own, so a word has one token wherever it stands: " lamp" in a question and "'lamp'" in a
    # query are the same "lamp". With the space-prefixed/bare pairs of a GPT-2-style vocabulary, the 5M base never
    # learned to carry a word from a question into a query, not even with full fine-tuning (benchmarks/RESULTS.md).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Split(" ", behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, padding_side="left",
                                   model_max_length=MODEL_SHAPE["max_position_embeddings"])


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def make_model(tokenizer, seed: int):
    torch.manual_seed(seed)
    config = LlamaConfig(**MODEL_SHAPE, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    return LlamaForCausalLM(config)


@torch.no_grad()
def mean_loss(model, stream: torch.Tensor, seq_len: int, max_windows: int = 64) -> float:
    model.eval()
    n = min(max_windows, (len(stream) - 1) // seq_len)
    windows = stream[: n * seq_len].view(n, seq_len)
    losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    model.train()
    return float(sum(losses) / len(losses))


def pretrain(model, stream: torch.Tensor, steps: int, batch: int, seq_len: int, lr: float, seed: int,
             log_every: int = 50) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    losses = []
    t0 = time.time()
    for step in range(steps):
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([stream[s: s + seq_len] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}/{steps}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {time.time() - t0:6.0f}s",
                  flush=True)
    return losses


@contextmanager
def deterministic_torch(threads: int):
    """The build's torch settings, put back afterwards, so an in-process caller (the tests) keeps its own: a left-on
    deterministic mode or thread count would change every later computation in that process."""
    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)


def build(out: Path, steps: int, docs: int, seed: int, batch: int, seq_len: int, lr: float, threads: int) -> dict:
    with deterministic_torch(threads):
        return _build(out, steps, docs, seed, batch, seq_len, lr, threads)


def _build(out: Path, steps: int, docs: int, seed: int, batch: int, seq_len: int, lr: float, threads: int) -> dict:
    t0 = time.time()
    texts = list(documents(docs, seed))
    tokenizer = train_tokenizer(texts, MODEL_SHAPE["vocab_size"])
    stream = token_stream(tokenizer, texts)
    heldout = token_stream(tokenizer, heldout_documents(400, seed))
    model = make_model(tokenizer, seed)
    n_params = sum(p.numel() for p in model.parameters())
    untrained_loss = mean_loss(model, heldout, seq_len)
    losses = pretrain(model, stream, steps, batch, seq_len, lr, seed)
    heldout_loss = mean_loss(model, heldout, seq_len)
    wall = time.time() - t0

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)  # bf16 storage; loads as fp32 on CPU
    tokenizer.save_pretrained(out)
    manifest = {
        "name": "tunewise-tiny",
        "architecture": "LlamaForCausalLM",
        "parameters": n_params,
        "shape": MODEL_SHAPE,
        "storage_dtype": "bf16",
        "sha256": {"model.safetensors": sha256_file(out / "model.safetensors"),
                   "tokenizer.json": sha256_file(out / "tokenizer.json")},
        "corpus": {"documents": docs, "seed": seed, "recipe": RECIPE, "tokens": int(len(stream)),
                   "generator": "tunewise.zoo.corpus.documents"},
        "training": {"steps": steps, "batch": batch, "seq_len": seq_len, "lr": lr, "optimizer": "AdamW(0.9,0.95) wd 0.1",
                     "schedule": "5% warm-up, cosine to 10%", "tokens_seen": steps * batch * seq_len,
                     "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4) if losses else None,
                     "heldout_loss": round(heldout_loss, 4), "untrained_heldout_loss": round(untrained_loss, 4),
                     "wall_time_s": round(wall, 1), "threads": threads},
        "built_with": {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()},
        "command": f"python -m tunewise.zoo.build --steps {steps} --docs {docs} --seed {seed} --batch {batch} "
                   f"--seq-len {seq_len} --lr {lr} --threads {threads}",
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=TINY_DIR)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--docs", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    m = build(a.out, a.steps, a.docs, a.seed, a.batch, a.seq_len, a.lr, a.threads)
    print(json.dumps({k: m[k] for k in ("parameters", "sha256", "training")}, indent=2))


if __name__ == "__main__":
    main()
