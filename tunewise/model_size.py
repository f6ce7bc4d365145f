"""A base's parameter count from its config alone: the model is built on PyTorch's meta device (shapes, no
storage), so nothing is loaded and the count is exactly what loading it would give (tied weights once).

The size defaults (the lr by size band, tunewise/defaults.py) are chosen from this count by compare, continual
and the pilot before anything trains; `tunewise estimate` counts its modules on the same meta model.
"""

from __future__ import annotations

import copy
import os

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from tunewise.models import count_parameters, load_config


def meta_model(config, task: str = "causal-lm", num_labels: int | None = None):
    """The model a config describes, on the meta device: a causal LM (an encoder's bare model when its type has
    no causal-LM head), or a sequence classifier over `num_labels` classes."""
    with torch.device("meta"):
        if task == "sequence-classification":
            if num_labels:
                config = copy.deepcopy(config)  # the caller's config keeps its own labels
                config.num_labels = num_labels
            return AutoModelForSequenceClassification.from_config(config)
        try:
            return AutoModelForCausalLM.from_config(config)
        except ValueError:  # encoders (BERT-like) have no causal-LM head class for every type
            return AutoModel.from_config(config)


def parameter_count(base: str | os.PathLike, task: str = "causal-lm", num_labels: int | None = None) -> int:
    """Parameters of `base` as `load_model(base, task=task, num_labels=num_labels)` would build it, without
    loading its weights."""
    return count_parameters(meta_model(load_config(base), task, num_labels))
