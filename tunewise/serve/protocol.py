"""The OpenAI request shapes this server takes, which fields it refuses, and how answers are written back.

The rule for fields: one this server implements is honoured; an OpenAI field that it does not implement is
accepted only at its neutral value (`presence_penalty: 0`, `logit_bias: {}`, `user`, ...: clients such as
LangChain send those by default), and anything else, including a field no OpenAI API has, is refused with a
400 that names it. Nothing that would change an answer is silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunewise.fileio import json_safe
from tunewise.generate.constrain import ANY_OBJECT
from tunewise.generate.sampling import Constraint
from tunewise.inputs import Numbers
from tunewise.serve.batching import Delta, GenResult
from tunewise.serve.sampling import SamplingParams, TokenChoice


class Refused(Exception):
    """A request field this server will not honour: (param, message)."""

    def __init__(self, param: str, message: str):
        self.param, self.message = param, message
        super().__init__(message)


def _none(v: Any) -> bool:
    return v is None


def _zero(v: Any) -> bool:
    return v is None or v == 0


def _empty(v: Any) -> bool:
    return v is None or v == {} or v == [] or v == ""


def _anything(_: Any) -> bool:
    return True


# OpenAI fields that are not implemented, with the test for their neutral value. Fields that only label or
# route a request (user, metadata, store, ...) never change an answer, so any value is neutral.
NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "frequency_penalty": _zero, "presence_penalty": _zero, "suffix": _empty,
    "user": _anything, "metadata": _anything, "store": _anything, "service_tier": _anything,
    "prompt_cache_key": _anything, "safety_identifier": _anything, "parallel_tool_calls": _anything,
    "tools": _empty, "functions": _empty, "tool_choice": lambda v: v in (None, "none", "auto"),
    "function_call": lambda v: v in (None, "none", "auto"),
    "modalities": lambda v: v is None or v == ["text"], "audio": _none, "prediction": _none,
    "web_search_options": _none, "reasoning_effort": _none, "verbosity": _none,
}
COMPLETION_ONLY = {"suffix"}  # OpenAI's /v1/completions has these, chat does not
CHAT_ONLY = set(NEUTRAL) - COMPLETION_ONLY - {"frequency_penalty", "presence_penalty", "user"}


def check_extra(extra: dict[str, Any], endpoint: Literal["completions", "chat"]) -> None:
    """Refuse every field outside the implemented ones that is unknown or not at its neutral value."""
    other = CHAT_ONLY if endpoint == "completions" else COMPLETION_ONLY
    for name, value in extra.items():
        test = NEUTRAL.get(name)
        if test is None or name in other:
            raise Refused(name, f"unsupported field '{name}': the OpenAI {endpoint} API has no such field, or "
                          "this server does not implement it; remove it")
        if not test(value):
            raise Refused(name, f"'{name}'={value!r} is not supported by this server (it would change the "
                          "answer); send it at its neutral value or leave it out")


class _Req(Numbers):
    """A request body: numbers follow the configs' rule (finite; `n: true` is not 1), other fields are checked by
    `check_extra`."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's padding of chunks against side channels: nothing to pad


class _Sampled(_Req):
    """Fields both endpoints share. None means "the base's default" (its generation_config)."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # vLLM's extension; 0 or -1 = off
    seed: int | None = None
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias in [-100, 100]
    # JSON mode: {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": ...}}; on
    # /v1/completions too, as vLLM takes it
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Sampled):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: int | None = Field(default=None, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = None


class ChatRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


def extra_fields(req: _Sampled) -> dict[str, Any]:
    return dict(req.model_extra or {})


def logit_bias(bias: dict[str, float] | None, vocab_size: int) -> tuple[tuple[int, float], ...]:
    """OpenAI's {"token id": bias} as (id, bias) pairs, each id in the vocabulary and each bias in [-100, 100]."""
    out = []
    for key, b in (bias or {}).items():
        if not key.strip().isdigit() or int(key) >= vocab_size:
            raise Refused("logit_bias", f"logit_bias key {key!r} is not a token id of this model (0-{vocab_size - 1})")
        if not -100 <= b <= 100:
            raise Refused("logit_bias", f"logit_bias value {b} for token {key} is outside [-100, 100]")
        out.append((int(key), float(b)))
    return tuple(out)


def response_schema(fmt: dict[str, Any] | None) -> dict | None:
    """The JSON schema a response_format asks the answer to follow; None for plain text."""
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT
    if kind != "json_schema":
        raise Refused("response_format.type", f"response_format.type {kind!r} is not supported; send 'text', "
                      "'json_object' or 'json_schema'")
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise Refused("response_format.json_schema.schema", "response_format.json_schema.schema must be a JSON "
                      f"schema object (got {type(schema).__name__ if schema is not None else 'nothing'})")
    return schema


def sampling(req: _Sampled, defaults: SamplingParams, logprobs: int | None, choice: int,
             bias: tuple[tuple[int, float], ...] = (), constraint: Constraint | None = None) -> SamplingParams:
    """A choice's settings: the request's fields, else the base's defaults; choice k of n draws with seed + k.
    `constraint` is this choice's own (JSON mode: a matcher has state)."""
    top_k = defaults.top_k if req.top_k is None else max(req.top_k, 0)
    return SamplingParams(
        temperature=defaults.temperature if req.temperature is None else req.temperature,
        top_p=defaults.top_p if req.top_p is None else req.top_p, top_k=top_k,
        seed=None if req.seed is None else req.seed + choice, logprobs=logprobs, logit_bias=bias,
        constraint=constraint)


def completion_logprobs(req: CompletionRequest) -> int | None:
    if req.echo:
        raise Refused("echo", "echo=true is not supported by this server; leave it out")
    if req.best_of not in (None, req.n):
        raise Refused("best_of", "best_of other than n is not supported by this server; leave it out")
    return req.logprobs


def chat_logprobs(req: ChatRequest) -> int | None:
    if req.top_logprobs is not None and not req.logprobs:
        raise Refused("top_logprobs", "top_logprobs needs logprobs=true")
    return (req.top_logprobs or 0) if req.logprobs else None


# ------------------------------------------------------------------------------------------ answers


class TokenText:
    """Token id -> its text, cached (logprobs name tokens by their text, as OpenAI does)."""

    def __init__(self, tokenizer):
        self.tokenizer, self._cache = tokenizer, {}

    def __call__(self, token: int) -> str:
        if token not in self._cache:
            self._cache[token] = self.tokenizer.decode([token])
        return self._cache[token]


def completion_logprobs_body(tokens: list[TokenChoice] | tuple, offsets: list[int] | tuple, text_of: TokenText,
                             base_offset: int = 0) -> dict:
    # a token outside top_p / top_k has logprob -inf, which JSON cannot hold: it is sent as null
    return json_safe({"tokens": [text_of(c.token) for c in tokens], "token_logprobs": [c.logprob for c in tokens],
                      "top_logprobs": [{text_of(t): lp for t, lp in c.top} for c in tokens],
                      "text_offset": [base_offset + o for o in offsets]})


def chat_logprobs_body(tokens: list[TokenChoice] | tuple, text_of: TokenText) -> dict:
    def entry(token: int, logprob: float) -> dict:
        s = text_of(token)
        return {"token": s, "logprob": logprob, "bytes": list(s.encode("utf-8"))}

    return json_safe({"content": [{**entry(c.token, c.logprob), "top_logprobs": [entry(t, lp) for t, lp in c.top]}
                                  for c in tokens], "refusal": None})


def usage(results: list[GenResult]) -> dict:
    p = sum(r.prompt_tokens for r in results)
    c = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def completion_choice(index: int, r: GenResult | Delta, logprobs: int | None, text_of: TokenText) -> dict:
    lp = None
    if logprobs is not None:
        lp = completion_logprobs_body(r.tokens, r.offsets, text_of)
    reason = r.finish_reason
    return {"index": index, "text": r.text, "finish_reason": reason, "logprobs": lp}


def chat_choice(index: int, r: GenResult, logprobs: int | None, text_of: TokenText) -> dict:
    return {"index": index, "message": {"role": "assistant", "content": r.text, "refusal": None},
            "finish_reason": r.finish_reason,
            "logprobs": chat_logprobs_body(r.tokens, text_of) if logprobs is not None else None}


def chat_delta_choice(index: int, d: Delta, logprobs: int | None, text_of: TokenText, first: bool) -> dict:
    delta: dict = {"role": "assistant"} if first else {}
    if d.text or first:
        delta["content"] = d.text
    return {"index": index, "delta": delta, "finish_reason": d.finish_reason,
            "logprobs": chat_logprobs_body(d.tokens, text_of) if logprobs is not None else None}
