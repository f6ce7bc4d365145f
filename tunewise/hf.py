"""Settings tunewise applies to the Hugging Face libraries, below every module that loads a model (models, zoo)."""

from __future__ import annotations


def quiet_transformers() -> None:
    """Our own progress bars say what matters; silence transformers' per-load and per-save bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
