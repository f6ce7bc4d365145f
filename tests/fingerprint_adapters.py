"""Fingerprint adapters: LoRA adapters trained (plain PEFT, a few seconds) to answer one prompt with one word.

Used by the serving tests and benchmarks to tell which adapter produced an answer: adapter A continues
"ID:" with " Oslo", B with " Lima", and so on, so a wrong-adapter answer is visible in the text. A test helper,
not part of the package: tests import it from their own folder, benchmarks put tests/ on sys.path.
"""

from __future__ import annotations

from pathlib import Path

import torch

FINGERPRINT_PROMPT = "ID:"
# Single tokens of the tiny base's vocabulary (city names from its pre-training corpus; a space is its own token).
FINGERPRINT_WORDS = ["Oslo", "Lima", "Porto", "Kyoto", "Vienna", "Perth", "Dakar", "Quebec"]


def make_fingerprint_adapter(base_dir: str | Path, out_dir: str | Path, word: str, *, steps: int = 25,
                             lr: float = 1e-2, rank: int = 4, seed: int = 0,
                             prompt: str | tuple[str, ...] = FINGERPRINT_PROMPT) -> Path:
    """Train LoRA so that `prompt` (or each of several) continues with ' word word'; save a PEFT adapter folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=4 * rank, target_modules=["q_proj", "v_proj", "o_proj", "up_proj",
                                                                   "down_proj"])
    peft_model = get_peft_model(model, cfg)
    c = tok(f" {word} {word}", add_special_tokens=False)["input_ids"]
    examples = []
    for text in (prompt,) if isinstance(prompt, str) else prompt:
        p = tok(text, add_special_tokens=False)["input_ids"]
        # (1, T) ids and labels: loss on the answer only
        examples.append((torch.tensor([p + c]), torch.tensor([[-100] * len(p) + c])))
    opt = torch.optim.Adam([q for q in peft_model.parameters() if q.requires_grad], lr=lr)
    peft_model.train()
    for _ in range(steps):
        loss = sum(peft_model(input_ids=ids, labels=labels).loss for ids, labels in examples)
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def fingerprint_of(text: str) -> str | None:
    """The fingerprint word an answer starts with, if any."""
    words = text.split()
    return words[0] if words and words[0] in FINGERPRINT_WORDS else None


def learned(text: str, word: str) -> bool:
    """Did a greedy answer come out as trained: ' word word' (not 'wordword', not another word)?"""
    return text.split()[:2] == [word, word]
