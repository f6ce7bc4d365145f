"""A base's parameter count on the meta device is what loading it gives, for both heads compare trains."""

from __future__ import annotations

import pytest

from tunewise.model_size import parameter_count
from tunewise.models import count_parameters, load_model


@pytest.mark.parametrize("base, task, num_labels", [("tiny", "causal-lm", None),
                                                    ("minilm", "sequence-classification", 3)])
def test_meta_count_is_the_loaded_count(base, task, num_labels):
    loaded = count_parameters(load_model(base, task=task, num_labels=num_labels))
    assert parameter_count(base, task, num_labels) == loaded


def test_the_classifier_head_is_counted():
    assert parameter_count("minilm", "sequence-classification", 5) - parameter_count(
        "minilm", "sequence-classification", 2) == 3 * (384 + 1)  # 3 more classes: 3 rows of the head and biases
