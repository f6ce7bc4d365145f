"""The sequence length a dataset needs: its longest tokenized example, by the trainer's own rule, up to the model's
context. compare, continual and the pilot take it from here unless told, so nothing is cut without a word."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewise.data.formats import load_examples

ROUND_TO = 8  # lengths a multiple of 8 pad no worse and keep the run's config readable


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
