"""Every example config shipped in the repo validates and names a built-in base (train configs and the continual
config), the examples cover what the README sends users to, and each one's usage line runs that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tunewise.config import validate_config
from tunewise.continual import ContinualConfig
from tunewise.defaults import BASE_ALIASES, METHODS

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


def _validated(path: Path):
    """(kind, validated config) of an example file; advise input files are validated by the advise tests."""
    data = yaml.safe_load(path.read_text())
    if "tasks" in data:
        return "continual", ContinualConfig.model_validate(data)
    if "task" in data and "method" not in data:
        return "advise", None
    return "train", validate_config(data, str(path))


def test_the_examples_cover_every_method_and_the_continual_pipeline():
    kinds = [_validated(p) for p in EXAMPLES]
    # the README's quick start trains with each method and runs the continual pipeline from these files
    assert sorted(cfg.method for kind, cfg in kinds if kind == "train" and cfg.task_type == "causal-lm") \
        == sorted(METHODS)
    assert [kind for kind, _ in kinds].count("continual") == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid_and_names_a_built_in_base(path):
    kind, cfg = _validated(path)
    if kind == "advise":
        pytest.skip("an advise input file, validated by the advise tests")
    assert cfg.base in BASE_ALIASES, f"{path.name}: base {cfg.base!r} is not built in ({', '.join(BASE_ALIASES)})"
    # its header's usage line (`tunewise train examples/x.yaml`) runs this very file
    usage = re.findall(r"^#\s+tunewise (?:train|continual) (\S+)", path.read_text(), flags=re.M)
    assert usage == [f"examples/{path.name}"], f"{path.name}: the usage line names {usage}"
