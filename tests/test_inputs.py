"""One loader for every typed input (issue 21): the same ConfigError, the same "did you mean", a description on
every field, and `tunewise train --help-config`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel

from tunewise.config import RunConfig, load_run_config, validate_config
from tunewise.errors import ConfigError
from tunewise.inputs import field_rows, help_text


def _all_models() -> list[type[BaseModel]]:
    from tunewise.advise.engine import AdviseInput
    from tunewise.compare import CompareSpec
    from tunewise.continual import ContinualConfig

    return [RunConfig, ContinualConfig, CompareSpec, AdviseInput]


@pytest.mark.parametrize("model", _all_models(), ids=lambda m: m.__name__)
def test_every_field_of_every_input_has_a_description(model):
    missing = [name for name, _, _, text in field_rows(model) if not text.strip()]
    assert missing == []


@pytest.mark.parametrize("loader, text, problems", [
    ("run", "base: tiny\ndata: {train: x.jsonl}\ntrain: {batch_size: many, learning_rate: 0.1}\n",
     ["train.learning_rate: unknown key; did you mean 'train.lr'?",
      "train.batch_size: expected a whole number (got 'many')"]),
    ("continual", "tasks: [sql, math]\nmethods: [{method: lora, r: 0}]\nepochz: 3\n",
     ["epochz: unknown key; did you mean 'epochs'?", "methods.0.r: Input should be greater than 0 (got 0)"]),
    ("continual", "tasks: [sql, math]\nmethods: [{method: lora, rank: 8}]\n",
     ["methods[0].rank: unknown key; did you mean 'methods[0].r'?"]),
])
def test_config_files_report_problems_the_same_way(tmp_path, loader, text, problems):
    from tunewise.continual import load_continual_config

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        {"run": load_run_config, "continual": load_continual_config}[loader](path)
    assert e.value.message == f"{path}: {len(problems)} problem(s) in the config:" + "".join(
        f"\n  - {p}" for p in problems)


def test_a_config_that_is_not_a_mapping_is_one_problem():
    with pytest.raises(ConfigError) as e:
        validate_config(["base", "tiny"], "cfg")
    assert e.value.message == ("cfg: 1 problem(s) in the config:\n"
                               "  - the config must be a mapping of keys to values (got list)")


def test_help_config_lists_every_key_with_type_default_and_description():
    text = help_text(RunConfig)
    assert "train.lr: float | None = None\n    Learning rate; default by method and model size" in text
    assert "data.train: str | list[DataSource] (required)\n" in text
    assert "data.train[i].weight: float = 1.0\n    Share of the mix" in text
    assert "method: 'lora' | 'qlora' | 'full' = 'lora'\n" in text
    assert "lora.dropout: float = 0.0\n" in text and "preserve.max_drop: float = 0.1\n" in text
    names = [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert len(names) == len(field_rows(RunConfig)) and "train.keep_best" in names


def test_cli_help_config_prints_the_fields():
    out = subprocess.run([sys.executable, "-m", "tunewise", "train", "--help-config"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == help_text(RunConfig)


def test_compare_spec_problems_are_one_config_error():
    from tunewise.compare import CompareSpec, check_spec

    with pytest.raises(ConfigError) as e:
        check_spec(CompareSpec(methods=["lora", "adapterX"], rank=0, task_kind="poetry"))
    assert e.value.message == ("3 problem(s) in the options:\n"
                               "  - --methods: unknown ['adapterX']; choose from lora, qlora, full\n"
                               "  - --task-kind: 'poetry' is not one of representation, sql, reasoning, other\n"
                               "  - --rank must be > 0 (got 0); typical values are 16 or 32")
    assert e.value.problems == ["--methods: unknown ['adapterX']; choose from lora, qlora, full",
                                "--task-kind: 'poetry' is not one of representation, sql, reasoning, other",
                                "--rank must be > 0 (got 0); typical values are 16 or 32"]
    assert e.value.hint == "see tunewise compare --help"
    assert CompareSpec(base="tiny").probes == ["arithmetic", "lm"]  # filled from the base


def test_advise_yaml_speaks_the_same_way(tmp_path):
    from tunewise.commands.advise import read_yaml

    path = tmp_path / "a.yaml"
    path.write_text("task: sql\nmodle: tiny\ngpus: many\ngpu_mem: null\npriority: accuracy\n")
    values, problems = read_yaml(str(path))
    assert values == {"task": "sql", "priority": "accuracy"}
    assert problems == [f"{path}: modle: unknown key; did you mean 'model'?",
                        f"{path}: gpus: expected a whole number (got 'many')"]


def test_a_long_wrong_value_is_shown_shortened():
    with pytest.raises(ConfigError) as e:
        validate_config({"data": {"train": "x.jsonl"}, "train": {"batch_size": "x" * 500}})
    assert e.value.problems == [f"train.batch_size: expected a whole number (got '{'x' * 76}...)"]
