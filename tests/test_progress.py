"""Progress bars of the long phases (eval's scoring, retention probes, analysis, GGUF conversion): each shows its
count, a rate and an ETA on a terminal, and nothing when stderr is not a terminal or inside progress.quiet()."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from tunewise import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def terminal(monkeypatch) -> Terminal:
    """stderr as a terminal, from here on (set in the test's body: pytest's capture resets it between phases)."""
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    return term


def shows(text: str, label: str, count: str, unit: str) -> bool:
    """tqdm's line: 'label:  0%| | 0/5 [00:00<?, ?answer/s]' (elapsed<ETA, rate)."""
    return label in text and count in text and f"{unit}/s" in text and "<" in text


@pytest.fixture(scope="module")
def tiny(tiny_base_dir):
    from tunewise.models import load_base

    return load_base(str(tiny_base_dir), dtype="fp32", device="cpu")


def test_scoring_and_probes_show_bars_on_a_terminal_only(tiny, monkeypatch):
    from tunewise.evaluate.generation import greedy_generate
    from tunewise.evaluate.retention import run_probes

    stderr = terminal(monkeypatch)
    model, tok = tiny
    prompts = ["ID:", "Hello.", "Question: 2 + 2?", "SELECT", "Name:"]
    plain = greedy_generate(model, tok, prompts, max_new_tokens=6)
    assert stderr.getvalue() == ""  # no label, no bar
    assert greedy_generate(model, tok, prompts, max_new_tokens=6, progress="scoring") == plain
    assert shows(stderr.getvalue(), "scoring", "/5", "answer")
    run_probes(model, tok, "lm", limit=4)
    assert shows(stderr.getvalue(), "retention probes", "/1", "probe")

    stderr.seek(0)
    stderr.truncate(0)
    with progress.quiet():
        greedy_generate(model, tok, prompts, max_new_tokens=6, progress="scoring")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, a pipe
    greedy_generate(model, tok, prompts, max_new_tokens=6, progress="scoring")
    assert stderr.getvalue() == "" and sys.stderr.getvalue() == ""


def test_analysis_and_gguf_conversion_show_bars(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.analysis.pipeline import analyze
    from tunewise.export.run import export_gguf

    stderr = terminal(monkeypatch)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "base")
    tuned = LlamaForCausalLM(cfg)
    tuned.save_pretrained(tmp_path / "tuned")
    analyze(str(tmp_path / "base"), str(tmp_path / "tuned"))
    assert shows(stderr.getvalue(), "analysis", "/14", "matrix")  # 7 linear layers x 2 blocks
    export_gguf("tiny", tmp_path / "tiny.gguf", quant="f32", verify=False)
    assert shows(stderr.getvalue(), "GGUF f32: converting", "tensor", "tensor")
