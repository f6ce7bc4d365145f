"""Shared fixtures: tiny models built from configs (seconds), the shipped base (integration tier)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # pytest -n N: the workers share the cores, so each (and the subprocesses it starts) takes its share of threads;
    # set before torch is imported, as OpenMP reads it once
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _share = max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("TUNEWISE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or TUNEWISE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_base_dir():
    """The shipped tiny base (tunewise/zoo/tiny)."""
    from pathlib import Path

    from tunewise.zoo import TINY_DIR

    if os.environ.get("TUNEWISE_TEST_TINY"):  # a stand-in while the shipped base is being rebuilt
        return Path(os.environ["TUNEWISE_TEST_TINY"])
    if not (TINY_DIR / "model.safetensors").exists():
        pytest.fail("the shipped tiny base is missing: run python -m tunewise.zoo.build")
    return TINY_DIR


@pytest.fixture(scope="session")
def micro_llama_dir(tmp_path_factory, tiny_base_dir):
    """A Llama with hidden 32, 2 layers, built from a config, saved with the tiny base's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("micro_llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
