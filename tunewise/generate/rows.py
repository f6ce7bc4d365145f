"""One request of the engine (`GenJob`), its row while it decodes (`Row`), what it streams (`Delta`) and returns
(`GenResult`); the pure text helpers the rows stop and stream by."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from tunewise.generate.sampling import SamplingParams, TokenChoice, make_generator

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class Delta:
    """New text of one streamed row (never taken back), its tokens, and the finish reason on the last one."""

    text: str
    tokens: list[TokenChoice]
    offsets: list[int]  # each token's start in the completion text
    finish_reason: str | None = None


@dataclass
class GenJob:
    adapter: str | None  # None = the base (or, when no row of the batch names an adapter, the model as it is)
    prompt_ids: list[int]
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    on_delta: Callable[[Delta], None] | None = None  # streaming: called at each step (serve: on the worker thread)
    cancelled: threading.Event = field(default_factory=threading.Event)  # the client went away
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class GenResult:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None
    tokens: tuple[TokenChoice, ...] = ()  # the tokens of `text` (with logprobs when asked)
    offsets: tuple[int, ...] = ()  # each token's start in `text`

    @property
    def token_ids(self) -> list[int]:
        return [c.token for c in self.tokens]


# ------------------------------------------------------------------------------------------ pure helpers


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, longest), padded on the left for generation."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def common_prefix(seqs: list[list[int]]) -> int:
    """How many leading tokens every sequence shares (each keeps at least its last token to itself)."""
    if not seqs:
        return 0
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


def stop_cut(text: str, stops: list[str] | None) -> int | None:
    """Where the first stop string starts in `text`, or None."""
    cut = min((text.find(s) for s in stops or () if s and s in text), default=-1)
    return cut if cut >= 0 else None


def safe_length(text: str, stops: list[str]) -> int:
    """How much of a growing text can be streamed now: not a trailing partial character (U+FFFD from a
    half-decoded byte sequence) and not a tail that could still become a stop string."""
    n = len(text.rstrip("\ufffd"))
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, n), 0, -1):
            if text[:n].endswith(s[:k]):
                hold = max(hold, k)
                break
    return n - hold


# ------------------------------------------------------------------------------------------ a running row


class Row:
    """One request in the running batch: its tokens so far, and what of its text has been streamed."""

    def __init__(self, job: GenJob):
        self.job = job
        self.gen = make_generator(job.sampling, "cpu")
        self.name = job.adapter if job.adapter is not None else BASE_ROW
        self.ids: list[int] = []
        self.choices: list[TokenChoice] = []
        self.offsets: list[int] = []
        self.text = ""
        self.sent_chars = 0
        self.sent_tokens = 0
        self.finish: str | None = None
        self.cut = False  # a stop string cut the text
        self.resolved = False  # its future has its result or error (a fixed batch keeps it until all are)

    @property
    def last(self) -> int:
        return self.ids[-1]

    def add(self, c: TokenChoice, eos_ids: set[int], decode: Callable[[list[int]], str]) -> None:
        """Take the step's token; set `finish` on EOS, a stop string or max_new_tokens."""
        if c.token in eos_ids:
            self.finish = "stop"
            return
        self.ids.append(c.token)
        self.choices.append(c)
        self.offsets.append(len(self.text))
        self.text = decode(self.ids)
        cut = stop_cut(self.text, self.job.stop)
        if cut is not None:
            self.text, self.finish, self.cut = self.text[:cut], "stop", True
        elif len(self.ids) >= self.job.max_new_tokens:
            self.finish = "length"

    def kept_tokens(self, upto: int) -> int:
        """Tokens of the answer up to character `upto`: all of them once finished without a stop cut, else
        those that start before `upto` (a token past a stop string is not part of the answer)."""
        if self.finish and not self.cut:
            return len(self.ids)
        return sum(1 for o in self.offsets if o < upto)

    def delta(self) -> Delta | None:
        """What is new to stream since the last delta (None if nothing)."""
        upto = len(self.text) if self.finish else safe_length(self.text, self.job.stop)
        n_tok = self.kept_tokens(upto)
        if upto <= self.sent_chars and n_tok <= self.sent_tokens and not self.finish:
            return None
        d = Delta(self.text[self.sent_chars:upto], self.choices[self.sent_tokens:n_tok],
                  self.offsets[self.sent_tokens:n_tok], self.finish)
        self.sent_chars, self.sent_tokens = max(upto, self.sent_chars), max(n_tok, self.sent_tokens)
        return d

    def result(self) -> GenResult:
        n_tok = self.kept_tokens(len(self.text))
        return GenResult(self.text, self.finish or "length", len(self.job.prompt_ids), len(self.ids),
                         self.job.adapter, tuple(self.choices[:n_tok]), tuple(self.offsets[:n_tok]))
