"""One owner for the defaults several commands share (issue 21): advise, compare and train pick the same lr."""

from __future__ import annotations

import json

import pytest

from tunewise.advise.engine import AdviseInput, advise
from tunewise.compare import CompareSpec, method_lr
from tunewise.config import validate_config
from tunewise.defaults import METHODS, lr_table
from tunewise.estimate import load_spec


def _train_lr(cfg: dict, n_params: int) -> float:
    """The lr `tunewise train` uses for this config with its lr left out."""
    cfg = json.loads(json.dumps(cfg))
    del cfg["train"]["lr"]
    return validate_config(cfg).with_size_defaults(n_params).lr


@pytest.mark.parametrize("method", METHODS)
def test_advise_compare_and_train_agree_on_the_tiny_base(method):
    from tunewise.advise import rules as R
    from tunewise.advise.engine import hyperparameters

    spec = load_spec("tiny")
    advised = hyperparameters(spec, method, "structured", R.Facts("structured"), None, None, False)["lr"]["value"]
    cfg = {"base": "tiny", "method": method, "data": {"train": "x.jsonl"}, "train": {"lr": advised}}
    n = spec.total_params
    assert advised == method_lr(CompareSpec(base="tiny"), method, n, encoder=False)[0] == _train_lr(cfg, n)


def test_advise_writes_the_measured_tiny_lora_lr():
    advice = advise(AdviseInput(task="structured", model="tiny", device="cpu", gpu_mem=1000))
    assert advice.method == "lora" and advice.config["train"]["lr"] == 5e-3  # what compare trains at, not 1e-3


def test_advise_writes_the_encoder_lr_train_and_compare_use_for_a_classifier(tmp_path):
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"text {i}", "completion": "yes" if i % 2 else "no"}) + "\n"
                            for i in range(40)))
    advice = advise(AdviseInput(task="classification", model="minilm", device="cpu", gpu_mem=1000,
                                dataset=str(data), accuracy_priority=True, continual=True))
    assert advice.config["task_type"] == "sequence-classification" and advice.method == "full"
    n = load_spec("minilm").total_params
    method = advice.method
    lr = advice.config["train"]["lr"]
    assert lr == method_lr(CompareSpec(base="minilm"), method, n, encoder=True)[0] == _train_lr(advice.config, n)
    assert lr == 5e-5 and advice.hyperparameters["lr"]["source"].startswith("usual BERT-style")  # not 1e-4


def test_compare_uses_a_given_lr_and_says_so():
    assert method_lr(CompareSpec(lr={"lora": 2e-4}), "lora", 5_000_000, False) == (2e-4, "given")


def test_train_lr_help_is_written_from_the_table():
    from tunewise.config import TrainConfig

    assert lr_table() == "LoRA 3e-5 / full 1e-5 from 1B parameters, 1e-3 / 1e-4 below, 5e-3 / 1e-3 under 20M"
    assert lr_table() in TrainConfig.model_fields["lr"].description


def test_config_error_given_one_string_lists_one_problem():
    from tunewise.errors import ConfigError

    e = ConfigError("lora.r: too wide", "run.yaml")
    assert e.problems == ["lora.r: too wide"]
    assert e.message == "run.yaml: 1 problem(s) in the config:\n  - lora.r: too wide"


def test_methods_and_base_aliases_have_one_owner():
    from tunewise import models
    from tunewise.advise import engine
    from tunewise.config import RunConfig
    from tunewise.defaults import ADAPTER_METHODS, BASE_ALIASES, BY_MEMORY, TINY_BASE
    from tunewise.estimate import memory
    from tunewise.train.methods import METHOD_IMPLS as STRATEGIES

    assert sorted(BY_MEMORY) == sorted(METHODS) == sorted(STRATEGIES) and set(ADAPTER_METHODS) < set(METHODS)
    assert engine.FALLBACK is BY_MEMORY and not hasattr(memory, "METHODS")  # one METHODS: defaults'
    assert models.ALIASES is BASE_ALIASES and TINY_BASE in BASE_ALIASES
    assert RunConfig.model_fields["base"].default == TINY_BASE
