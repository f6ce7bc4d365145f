"""Every example config shipped in the repo is valid (train configs and the continual config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunewise.config import validate_config
from tunewise.continual import ContinualConfig

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    data = yaml.safe_load(path.read_text())
    if "tasks" in data:
        ContinualConfig.model_validate(data)
    elif "task" in data and "method" not in data:
        pytest.skip("an advise input file, validated by the advise tests")
    else:
        validate_config(data, str(path))
