"""JSON mode: a row's answer held to a JSON schema by a token mask, through llguidance.

llguidance (Rust, runs on the CPU, no dependencies, reads a transformers 5 tokenizer) compiles a JSON schema into
a grammar and, at every step, says which tokens keep the answer a prefix of a document the schema accepts; EOS is
among them only once the document is complete. `sampling.choose` masks the logits with `JsonConstraint.allowed`
before a row's choice and feeds the chosen token back with `advance`.

A compiled grammar is cached per (tokenizer, schema): a request that repeats a schema pays for a copy of the
matcher, not a compilation.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import llguidance
import llguidance.hf
import torch

# No free whitespace between tokens: with it, a small model can fill its whole budget with spaces and newlines
# inside a document that is still valid (the tiny base did), and never close it.
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT = {"type": "object"}  # OpenAI's json_object: any JSON object
CACHED_GRAMMARS = 64  # per tokenizer


class SchemaRefused(ValueError):
    """A schema llguidance cannot compile (an unsupported keyword, a malformed schema); the message says why."""


class JsonConstraint:
    """One row's position in its grammar: which tokens may come next, and the row's tokens fed back."""

    def __init__(self, matcher: llguidance.LLMatcher):
        self.matcher = matcher

    def allowed(self, width: int) -> torch.Tensor:
        """(width,) bool: the tokens that keep the answer valid; logits wider than the tokenizer's vocabulary
        (padding rows of the embedding) are never allowed."""
        ok = torch.frombuffer(bytearray(self.matcher.compute_logit_bias()), dtype=torch.uint8) > 0  # 200 / 0
        out = torch.zeros(width, dtype=torch.bool)
        n = min(width, ok.numel())
        out[:n] = ok[:n]
        if self.matcher.is_error() or not out.any():
            raise RuntimeError(f"JSON mode: no token can continue the answer ({self.matcher.get_error()})")
        return out

    def advance(self, token: int) -> None:
        if self.matcher.is_stopped():  # the document is complete: the row ends on this step (EOS)
            return
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"JSON mode: token {token} was chosen outside the mask ({self.matcher.get_error()})")


@dataclass(frozen=True)
class JsonGrammar:
    """A compiled schema; `start()` gives each row its own matcher."""

    template: llguidance.LLMatcher  # never advanced: rows get deep copies

    def start(self) -> JsonConstraint:
        return JsonConstraint(self.template.deep_copy())


_lock = threading.Lock()
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # HF tokenizer -> (LLTokenizer, grammars)


def _cache_for(tokenizer) -> tuple[llguidance.LLTokenizer, OrderedDict]:
    entry = _compiled.get(tokenizer)
    if entry is None:
        entry = _compiled[tokenizer] = (llguidance.hf.from_tokenizer(tokenizer), OrderedDict())
    return entry


def json_grammar(tokenizer, schema: dict) -> JsonGrammar:
    """`schema` compiled for `tokenizer` (cached); SchemaRefused naming the problem if llguidance refuses it."""
    key = json.dumps(schema, sort_keys=True)
    with _lock:
        lltok, grammars = _cache_for(tokenizer)
        if key in grammars:
            grammars.move_to_end(key)
            return grammars[key]
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=COMPACT)
    except ValueError as e:
        raise SchemaRefused(str(e)) from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
    if is_error:
        raise SchemaRefused(messages[0] if messages else "the schema does not compile")
    matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
    if matcher.is_error():
        raise SchemaRefused(matcher.get_error())
    with _lock:
        grammars[key] = compiled = JsonGrammar(matcher)
        while len(grammars) > CACHED_GRAMMARS:
            grammars.popitem(last=False)
    return compiled
