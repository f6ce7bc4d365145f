"""Settings tunewise applies to the Hugging Face libraries, and what it reads from their configs, below every module
that loads or plans for a model (models, zoo, estimate, advise, evaluate, serve).

transformers is imported inside the functions: estimate and advise import this module and load no torch.
"""

from __future__ import annotations

# The names transformers' config families give the number of positions a model was built for.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(config) -> int | None:
    """How many positions the model was built for, or None when its config does not say."""
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def quiet_transformers() -> None:
    """Our own progress bars say what matters; silence transformers' per-load and per-save bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
