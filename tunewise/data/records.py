"""The one record-shape rule: which format a record is in, and the shape the token rule renders it as.

Five formats are read; each is normalised into one of the three shapes `formats.segments` renders, so that a
record trains, checks, evaluates and probes the same way whatever format it came in:

    alpaca             {"instruction", "input"?, "output", "system"?}  -> chat: [system?] user, assistant
    sharegpt           {"conversations": [{"from", "value"}], "system"?} -> chat (human/gpt/system -> user/...)
    messages           {"messages": [{"role", "content"}]}              -> chat (as is)
    prompt_completion  {"prompt", "completion"}                         -> prompt_completion (as is)
    text               {"text"}                                         -> text (as is)

Alpaca and ShareGPT become chat messages, so the model's chat template renders them (the default role tags
without one) and the loss is on the assistant turns only, as for `messages`. A column mapping
(`data.columns: {instruction: question, output: answer}`) renames a dataset's own fields before detection.
"""

from __future__ import annotations

import re
from typing import Any

from tunewise.errors import TunewiseError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "text")
SHAPE = {"alpaca": "chat", "sharegpt": "chat", "messages": "chat", "prompt_completion": "prompt_completion",
         "text": "text"}
ALIASES = {"chat": "messages"}  # the name older configs use for `messages`
FIELDS = {"alpaca": "instruction, output (input optional)", "sharegpt": "conversations",
          "messages": "messages", "prompt_completion": "prompt, completion", "text": "text"}
# ShareGPT speakers as the datasets write them -> the chat template's roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}


class RecordError(ValueError):
    """A record that cannot be normalised: `field` (in the record's own format) and what is wrong."""

    def __init__(self, field: str, message: str, code: str = "wrong-type"):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.code = field, message, code


def canonical_format(name: str) -> str:
    """The format's name ('chat' -> 'messages'); an unknown name is a user error."""
    name = ALIASES.get(name, name)
    if name != "auto" and name not in FORMATS:
        raise TunewiseError(f"unknown data format '{name}'", f"use auto, {', '.join(FORMATS)}")
    return name


def detect(obj: dict) -> str | None:
    """The record's format from its fields (most specific first), or None."""
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj:
        return "alpaca"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    if "text" in obj:
        return "text"
    return None


def expected_message(obj: dict) -> str:
    """What an unmatched record is told: the formats and their fields, and the fields it has."""
    found = ", ".join(str(k)[:30] for k in list(obj)[:8]) or "none"
    options = "; ".join(f"{name} ({fields})" for name, fields in FIELDS.items())
    return f"expected one of {options} (fields found: {found})"


def rename_columns(obj: Any, columns: dict[str, str] | None) -> Any:
    """The record with the dataset's columns renamed to ours ({ours: theirs})."""
    if not columns or not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for ours, theirs in columns.items():
        if theirs in out and ours != theirs:
            out[ours] = out.pop(theirs)
    return out


def normalise(obj: dict, fmt: str = "auto") -> tuple[str, str, dict]:
    """(format, shape, record in that shape). Raises RecordError when the record matches no format or its
    format's fields cannot be converted; content problems (empty turns, unknown message roles) are left to the
    shape's own checks, which name the field."""
    fmt = canonical_format(fmt)
    if fmt == "auto":
        found = detect(obj)
        if found is None:
            raise RecordError("(record)", expected_message(obj), "unknown-shape")
        fmt = found
    if fmt == "alpaca":
        return fmt, "chat", _alpaca(obj)
    if fmt == "sharegpt":
        return fmt, "chat", _sharegpt(obj)
    needs = {"messages": ("messages",), "prompt_completion": ("prompt", "completion"), "text": ("text",)}[fmt]
    if not any(k in obj for k in needs):  # a forced format on a record of another one
        raise RecordError("(record)", f"data.format is {fmt}, but the record has no {FIELDS[fmt]} field "
                                      f"(fields found: {', '.join(map(str, list(obj)[:8])) or 'none'})",
                          "unknown-shape")
    return fmt, SHAPE[fmt], obj


def _text_field(obj: dict, name: str, optional: bool = False) -> str:
    value = obj.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise RecordError(name, f"expected a string, got {got}", "missing-field" if value is None else "wrong-type")
    return value


def _alpaca(obj: dict) -> dict:
    instruction = _text_field(obj, "instruction")
    extra = _text_field(obj, "input", optional=True)
    output = _text_field(obj, "output")
    system = _text_field(obj, "system", optional=True)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    turns = [{"role": "system", "content": system}] if system.strip() else []
    return {"messages": turns + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}


def _sharegpt(obj: dict) -> dict:
    conv = obj.get("conversations")
    if not isinstance(conv, list) or not conv:
        got = "an empty list" if isinstance(conv, list) else f"a {type(conv).__name__}"
        raise RecordError("conversations", f"expected a non-empty list of {{from, value}} turns, got {got}")
    system = _text_field(obj, "system", optional=True)
    turns = [{"role": "system", "content": system}] if system.strip() else []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise RecordError(f"conversations[{i}]", f"expected an object {{from, value}}, got {type(turn).__name__}")
        speaker = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        role = SHAREGPT_ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise RecordError(f"conversations[{i}].from", f"unknown speaker {str(speaker)[:40]!r}; use "
                                                          "human, gpt or system", "unknown-role")
        if not isinstance(value, str):
            got = "missing" if value is None else f"a {type(value).__name__}"
            raise RecordError(f"conversations[{i}].value", f"expected a string, got {got}")
        turns.append({"role": role, "content": value})
    return {"messages": turns}


def source_field(fmt: str, field: str, record: dict | None = None) -> str:
    """A normalised record's field name (e.g. messages[1].content) as the user's format names it."""
    m = _MSG_FIELD.fullmatch(field)
    if m is None or fmt not in ("sharegpt", "alpaca"):
        return field
    idx, attr = int(m.group(1)), m.group(2) or ""
    has_system = bool(record) and isinstance(record.get("system"), str) and bool(record["system"].strip())
    if has_system and idx == 0:
        return "system"
    idx -= has_system
    if fmt == "sharegpt":
        return f"conversations[{idx}]" + {".content": ".value", ".role": ".from"}.get(attr, attr)
    return "instruction" if idx == 0 else "output"


_MSG_FIELD = re.compile(r"messages\[(\d+)\](\.content|\.role)?")
