"""Cross-check: tunewise's GGUF files run in llama.cpp itself (llama-cpp-python) against transformers.

llama-cpp-python has no wheel for this machine and builds llama.cpp from C++ source (minutes to tens of minutes):

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF" pip install llama-cpp-python

For each base (--bases tiny,smollm2) it exports the base, a random LoRA adapter on it merged into one file, and the
adapter alone as a GGUF LoRA, then loads them in llama.cpp (the LoRA on the base's file, as `--lora` does) and
compares with transformers on the probe prompts:
  - token ids: llama.cpp's own tokenizer (with the pre-tokenizer tunewise named) vs the Hugging Face tokenizer;
  - logits over every position: max |diff|;
  - greedy continuations (--new-tokens): equal or not.

    .venv/bin/python benchmarks/gguf_llama_cpp.py [--bases tiny] [--quant f32] [--new-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "The Golden Bistro is a thai restaurant in the riverside area.",
    "Q: What is 17 + 25? A:",
    "SELECT name FROM restaurants WHERE price < 30 AND  area = 'riverside'",
    "Café déjà vu: 3.14159 and 2e10\n\n  indented",
]


def _random_adapter(base_dir: Path, out: Path, scale: float) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.mul_(scale)  # visible on the tiny base; on smollm2 small enough that the fp32 merge stays within merge's 1e-4
    pm.save_pretrained(out)
    return out


def _hf_run(model, tokenizer, prompt: str, new_tokens: int):
    """(ids, logits of every position, greedy continuation ids) from transformers."""
    import torch

    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
        seq = list(ids)
        for _ in range(new_tokens):
            nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
    return ids, logits, seq[len(ids):]


def _llama_run(llm, prompt: str, new_tokens: int):
    """The same from llama.cpp: its tokenizer, its logits, its greedy decoding."""
    import numpy as np

    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: llm.n_tokens], dtype=np.float32)
    out = []
    for _ in range(new_tokens):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return ids, logits, out


def compare(base: str, quant: str, new_tokens: int, work: Path) -> list[dict]:
    import torch
    from llama_cpp import Llama
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.export.run import export_gguf, export_gguf_lora
    from tunewise.models import resolve_base

    base_dir = resolve_base(base).path
    adapter = _random_adapter(base_dir, work / f"{base}-adapter", 4.0 if base == "tiny" else 0.25)
    files = {"base": work / f"{base}.gguf", "merged": work / f"{base}-merged.gguf",
             "lora": work / f"{base}-lora.gguf"}
    export_gguf(base, files["base"], quant=quant)
    export_gguf(adapter, files["merged"], quant=quant)
    export_gguf_lora(adapter, files["lora"])
    tok = AutoTokenizer.from_pretrained(base_dir)
    hf_base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    hf_adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                           str(adapter)).eval()
    runs = {"base": (hf_base, dict(model_path=str(files["base"]))),
            "merged": (hf_adapted, dict(model_path=str(files["merged"]))),
            "base+lora": (hf_adapted, dict(model_path=str(files["base"]), lora_path=str(files["lora"])))}
    rows = []
    for name, (hf, kwargs) in runs.items():
        llm = Llama(n_ctx=256, logits_all=True, n_threads=1, verbose=False, seed=0, **kwargs)
        for prompt in PROMPTS:
            hid, hlog, hgen = _hf_run(hf, tok, prompt, new_tokens)
            lid, llog, lgen = _llama_run(llm, prompt, new_tokens)
            same_ids = hid == lid
            diff = float(abs(hlog - llog).max()) if same_ids else None
            rows.append({"base": base, "quant": quant, "file": name, "prompt": prompt[:24], "same_tokens": same_ids,
                         "max_abs_logit_diff": diff, "same_greedy": hgen == lgen,
                         "greedy_hf": tok.decode(hgen), "greedy_llama_cpp": tok.decode(lgen)})
        del llm
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", default="tiny")
    ap.add_argument("--quant", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed (see this script's docstring for the build command)")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for base in args.bases.split(","):
            rows += compare(base, args.quant, args.new_tokens, Path(work))
    print(f"{'base':8} {'quant':5} {'file':10} {'prompt':26} tokens  max|dlogit|  greedy")
    for r in rows:
        d = "-" if r["max_abs_logit_diff"] is None else f"{r['max_abs_logit_diff']:.2e}"
        print(f"{r['base']:8} {r['quant']:5} {r['file']:10} {r['prompt']!r:26} {'same' if r['same_tokens'] else 'DIFF':6}"
              f"  {d:>10}  {'same' if r['same_greedy'] else 'DIFF: ' + repr(r['greedy_llama_cpp'])}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
