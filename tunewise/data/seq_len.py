"""The sequence length a dataset needs: its longest tokenized example, by the trainer's own rule, up to the model's
context. compare, continual and the pilot take it from here unless told, so nothing is cut without a word.

The tokenizer and config (transformers, torch) are imported when a length is measured, not when the module is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewise.data.formats import load_examples
from tunewise.errors import TunewiseError
from tunewise.hf import context_length

ROUND_TO = 8  # lengths a multiple of 8 pad no worse and keep the run's config readable
TRUNCATION_SHARE = 0.05  # cutting more of the examples than this stops the command unless allowed


@dataclass(frozen=True)
class SeqLen:
    length: int  # what to train with
    longest: int  # the longest example, in tokens
    context: int | None  # the model's context, when its config says
    over: int  # examples longer than `length` (cut when trained at it)
    examples: int

    @property
    def fits(self) -> bool:
        return self.over == 0


def fitted_seq_len(files: list[Path], tokenizer, context: int | None, given: int | None = None) -> SeqLen:
    """The length that fits every example of `files` (rounded up to a multiple of 8, at most `context`), or
    `given` when the user chose one; with how many examples that length would cut."""
    lengths: list[int] = []
    for f in files:
        examples, _ = load_examples(f, tokenizer, max_seq_len=10**9, split=f.stem)
        lengths += [len(e.input_ids) for e in examples]
    longest = max(lengths)
    length = given or -(-longest // ROUND_TO) * ROUND_TO
    if context is not None and given is None:
        length = min(length, context)
    return SeqLen(length, longest, context, sum(n > length for n in lengths), len(lengths))


def choose_seq_len(files: list[Path], tokenizer, context: int | None, given: int | None = None,
                   allow_truncation: bool = False, log=print) -> int:
    """The length a command trains `files` with: `given`, else the data's longest example (up to `context`).
    A cut is said with its count; cutting more than TRUNCATION_SHARE of the examples stops unless allowed."""
    seq = fitted_seq_len(files, tokenizer, context, given)
    if seq.fits:
        log(f"sequence length {seq.length} tokens: every one of the {seq.examples} training and validation "
            f"examples fits (longest {seq.longest})")
        return seq.length
    message = (f"{seq.over} of {seq.examples} training and validation examples are longer than max_seq_len "
               f"{seq.length} tokens (the longest has {seq.longest}) and would be cut")
    if seq.over / seq.examples > TRUNCATION_SHARE and not allow_truncation:
        raise TunewiseError(message, "leave out the max_seq_len setting (the data's longest example is then used), "
                                     "raise it, shorten the examples, or allow truncation (--allow-truncation)")
    log(f"warning: {message}")
    return seq.length


def task_seq_len(base: str, data: Path, given: int | None = None, allow_truncation: bool = False, log=print) -> int:
    """choose_seq_len for a task folder's train and validation files, with the base's tokenizer and context."""
    from tunewise.models import load_config, load_tokenizer

    files = [f for f in (data / "train.jsonl", data / "validation.jsonl") if f.is_file()]
    return choose_seq_len(files, load_tokenizer(base), context_length(load_config(base)), given, allow_truncation,
                          log)
