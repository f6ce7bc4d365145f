"""Batched greedy generation with stop strings (left padding; one forward per new token with a KV cache)."""

from __future__ import annotations

import torch

from tunewise.data.formats import prompt_ids


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str] | list[list[dict]], max_new_tokens: int = 64,
                    stop: list[str] | None = None, batch_size: int = 16) -> list[str]:
    """Greedy completions of `prompts` (text after the prompt, cut at the first stop string or EOS).

    A prompt is plain text or a list of chat messages; both become tokens by the trainer's rule
    (`formats.prompt_ids`), so a model is asked exactly as it was trained.
    """
    model.eval()
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i: i + batch_size]
            enc = tokenizer.pad({"input_ids": [prompt_ids(p, tokenizer) for p in chunk]}, return_tensors="pt").to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            outputs.extend(cut_at_stop(t, stop) for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    if stop:
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
    return text
