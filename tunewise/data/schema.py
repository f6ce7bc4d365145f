"""Schema check of a data source: every problem as `file:line: field: what is wrong`, not just the first.

`check_schema(path)` is what the trainer calls before training: it streams the file once, imports nothing heavy,
and returns the problems (errors and warnings). `iter_checked` is the same pass for the audit: it also yields
each valid record normalised to (shape, prompt, answer).

Severity: an *error* is a record the trainer would reject or that teaches nothing (unparseable, wrong types,
unknown roles, empty targets); a *warning* is a record that trains but probably not as meant.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunewise.data.audit_readers import MAX_LINE_BYTES
from tunewise.data.records import SHAPE, RecordError, detect, normalise, source_field
from tunewise.data.sources import iter_source
from tunewise.data.sources import label as source_label

Severity = Literal["error", "warning"]
ROLES = ("system", "user", "assistant")  # the roles tunewise.data.formats renders
SHAPES = ("prompt_completion", "chat", "text")
_SURROGATE = re.compile("[\ud800-\udfff]")
DEFAULT_CAP = 1000


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 0 = the file as a whole
    field: str
    message: str
    severity: Severity = "error"
    code: str = ""  # short kind, for counting (e.g. "invalid-json", "empty-target")

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Checked:
    """A valid record, normalised for the audit: `prompt` is what conditions, `answer` what is learned."""

    line: int
    shape: str
    prompt: str
    answer: str
    obj: dict  # in its shape (alpaca and sharegpt records as messages)
    raw: dict | None = None  # as the file holds it

    @property
    def original(self) -> dict:
        return self.raw if self.raw is not None else self.obj

    @property
    def text(self) -> str:
        return f"{self.prompt}\n{self.answer}" if self.prompt else self.answer


@dataclass
class ProblemLog:
    """Keeps the first `cap` problems and counts all of them (a file of a million bad lines stays small)."""

    cap: int = DEFAULT_CAP
    problems: list[Problem] = field(default_factory=list)
    by_severity: Counter = field(default_factory=Counter)
    by_code: Counter = field(default_factory=Counter)
    bad_lines: set[int] = field(default_factory=set)  # lines with an error (what --fix drops)

    def add(self, p: Problem) -> None:
        self.by_severity[p.severity] += 1
        self.by_code[p.code] += 1
        if p.severity == "error" and p.line:
            self.bad_lines.add(p.line)
        if len(self.problems) < self.cap:
            self.problems.append(p)

    @property
    def errors(self) -> int:
        return self.by_severity["error"]

    @property
    def warnings(self) -> int:
        return self.by_severity["warning"]

    @property
    def omitted(self) -> int:
        return self.errors + self.warnings - len(self.problems)


def _bad_string(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character (\\u0000); remove it"
    if not value.isascii() and _SURROGATE.search(value):  # isascii is O(1)-cheap; surrogates are non-ASCII
        return "contains an unpaired surrogate escape (e.g. \\ud800), which is not valid text; remove it"
    return None


class _Checker:
    """Validation of one record; collects problems for it (file and line are fixed per call)."""

    def __init__(self, file: str, line: int):
        self.file, self.line = file, line
        self.problems: list[Problem] = []

    def err(self, fld: str, msg: str, code: str) -> None:
        self.problems.append(Problem(self.file, self.line, fld, msg, "error", code))

    def warn(self, fld: str, msg: str, code: str) -> None:
        self.problems.append(Problem(self.file, self.line, fld, msg, "warning", code))

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def string(self, obj: dict, key: str, fld: str, role_hint: str) -> str | None:
        """obj[key] as a string, or None with an error recorded."""
        if key not in obj or obj[key] is None:
            self.err(fld, f"missing; {role_hint}", "missing-field")
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.err(fld, f"expected a string, got {type(value).__name__}; {role_hint}", "wrong-type")
            return None
        bad = _bad_string(value)
        if bad:
            self.err(fld, bad, "bad-text")
            return None
        return value

    def prompt_completion(self, obj: dict) -> tuple[str, str] | None:
        prompt = self.string(obj, "prompt", "prompt", "the prompt is a string (it may be empty)")
        completion = self.string(obj, "completion", "completion", "the completion is the string the model learns")
        if prompt is None or completion is None:
            return None
        if not completion.strip():
            self.err("completion", "empty or whitespace-only: nothing to learn; drop the record", "empty-target")
            return None
        if not prompt.strip():
            self.warn("prompt", "empty or whitespace-only: the completion is learned without context", "empty-prompt")
        elif prompt[-1].isalnum() and completion[0].isalnum():
            self.warn("completion", f"appended verbatim, so '...{prompt[-12:]}' + '{completion[:12]}...' run "
                                    "together; end the prompt with a cue (e.g. '\\nAnswer:') and start the "
                                    "completion with a space", "joined-text")
        return prompt, completion

    def text(self, obj: dict) -> str | None:
        text = self.string(obj, "text", "text", "a text record is one string learned whole")
        if text is not None and not text.strip():
            self.err("text", "empty or whitespace-only: nothing to learn; drop the record", "empty-target")
            return None
        return text

    def chat(self, obj: dict) -> tuple[str, str] | None:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            got = "an empty list" if isinstance(messages, list) else f"a {type(messages).__name__}"
            self.err("messages", f"expected a non-empty list of {{role, content}} turns, got {got}", "wrong-type")
            return None
        turns: list[tuple[str, str]] = []
        for i, m in enumerate(messages):
            turn = self._turn(m, i)
            if turn is None:
                continue
            if turns and turns[-1][0] == turn[0]:
                self.warn(f"messages[{i}].role", f"two '{turn[0]}' turns in a row; merge them or add the missing "
                                                 "turn between them", "same-role")
            if turn[0] == "system" and i > 0:
                self.warn(f"messages[{i}].role", "a system turn after the first turn; move it to the start",
                          "late-system")
            turns.append(turn)
        if self.failed:
            return None
        last_assistant = max((i for i, t in enumerate(turns) if t[0] == "assistant"), default=-1)
        if last_assistant < 0:
            self.err("messages", "no assistant turn: nothing to learn; add the answer as an assistant turn",
                     "no-assistant")
            return None
        if last_assistant < len(turns) - 1:
            self.warn(f"messages[{len(turns) - 1}]", "the conversation ends after the last assistant turn; "
                                                     "trailing turns are not learned", "trailing-turn")
        prompt = "\x1e".join(f"{r}\x1f{c}" for r, c in turns[:last_assistant])
        return prompt, turns[last_assistant][1]

    def _turn(self, m: Any, i: int) -> tuple[str, str] | None:
        fld = f"messages[{i}]"
        if not isinstance(m, dict):
            self.err(fld, f"expected an object {{role, content}}, got {type(m).__name__}", "wrong-type")
            return None
        role = self.string(m, "role", f"{fld}.role", f"one of {', '.join(ROLES)}")
        content = self.string(m, "content", f"{fld}.content", "the turn's text")
        if role is not None and role not in ROLES:
            self.err(f"{fld}.role", f"unknown role '{role[:40]}'; use one of {', '.join(ROLES)}", "unknown-role")
            return None
        if role is None or content is None:
            return None
        if not content.strip():
            if role == "assistant":
                self.err(f"{fld}.content", "empty assistant turn: nothing to learn; drop the record or fill it in",
                         "empty-target")
                return None
            self.warn(f"{fld}.content", f"empty {role} turn; remove it", "empty-turn")
        return role, content


# Names other datasets give our fields (difflib finds typos such as 'ouptut', not these).
FIELD_SYNONYMS = {
    "output": ("answer", "response", "target", "reply", "label", "completion"),
    "completion": ("answer", "response", "target", "reply", "label", "output"),
    "instruction": ("question", "query", "prompt", "task"),
    "prompt": ("question", "query", "instruction", "input", "source"),
    "text": ("content", "body", "document", "sentence"),
    "messages": ("conversation", "chat", "dialog", "dialogue", "turns"),
    "conversations": ("conversation", "dialog", "dialogue", "turns"),
}
# The fields each format needs, to guess a format for a record that matches none.
REQUIRED = {"prompt_completion": ("prompt", "completion"), "alpaca": ("instruction", "output"),
            "messages": ("messages",), "sharegpt": ("conversations",), "text": ("text",)}
_KNOWN = {"instruction", "input", "output", "system", "conversations", "messages", "prompt", "completion", "text"}


def suggest_field(missing: str, obj: dict, taken: tuple[str, ...] = ()) -> str | None:
    """The record's field that is probably `missing` under another name: a typo (difflib), else a name other
    datasets use for it; only fields the record's format does not read are candidates."""
    spare = [k for k in obj if isinstance(k, str) and k not in _KNOWN and k not in taken]
    close = difflib.get_close_matches(missing, spare, n=1, cutoff=0.6)
    if close:
        return close[0]
    for syn in FIELD_SYNONYMS.get(missing, ()):  # 'answr' is a typo of a synonym of 'completion'
        close = difflib.get_close_matches(syn, [k.lower() for k in spare], n=1, cutoff=0.8)
        if close:
            return next(k for k in spare if k.lower() == close[0])
    return None


def field_hint(field_name: str, obj: dict) -> str:
    """'; did you mean ...' for a missing field (or, for a record of no format, the mapping that would make it
    one), else ''."""
    if field_name == "(record)":
        for fmt, needs in REQUIRED.items():
            found: list[str] = []
            for need in needs:
                cand = suggest_field(need, obj, tuple(found))
                if cand is None:
                    break
                found.append(cand)
            else:
                pairs = ", ".join(f"{n}: {c}" for n, c in zip(needs, found, strict=True))
                return (f"; did you mean {fmt} with {' and '.join(map(repr, found))} renamed "
                        f"(data.columns: {{{pairs}}})?")
        return ""
    if field_name not in FIELD_SYNONYMS and field_name not in _KNOWN:
        return ""
    cand = suggest_field(field_name, obj)
    return f"; did you mean '{cand}'? (rename it, or data.columns: {{{field_name}: {cand}}})" if cand else ""


def shape_of(obj: dict) -> str | None:
    """The record's shape ('chat' | 'prompt_completion' | 'text') by the one rule in records.py, or None."""
    fmt = detect(obj)
    return SHAPE[fmt] if fmt else None


def validate(obj: Any, file: str, line: int, fmt: str = "auto") -> tuple[Checked | None, list[Problem]]:
    """One parsed record -> (normalised record or None, its problems), fields named in the record's format."""
    c = _Checker(file, line)
    if not isinstance(obj, dict):
        c.err("(record)", f"expected a JSON object, got {type(obj).__name__}", "not-an-object")
        return None, c.problems
    try:
        source_fmt, shape, norm = normalise(obj, fmt)
    except RecordError as e:
        hint = field_hint(e.field, obj) if e.code in ("missing-field", "unknown-shape") else ""
        c.err(e.field, e.message + hint, e.code)
        return None, c.problems
    if shape == "chat":
        pa = c.chat(norm)
    elif shape == "prompt_completion":
        pa = c.prompt_completion(norm)
    else:
        t = c.text(norm)
        pa = None if t is None else ("", t)
    problems = [Problem(p.file, p.line, source_field(source_fmt, p.field, obj),
                        p.message + (field_hint(p.field, obj) if p.code == "missing-field" else ""),
                        p.severity, p.code) for p in c.problems]
    if pa is None or c.failed:
        return None, problems
    return Checked(line, shape, pa[0], pa[1], norm, obj), problems


def iter_checked(path: str | Path, log: ProblemLog, max_line_bytes: int = MAX_LINE_BYTES,
                 label: str | None = None, fmt: str = "auto", split: str = "train",
                 columns: dict[str, str] | None = None) -> Iterator[Checked]:
    """Stream a data source (see sources.py): valid records are yielded, every problem goes to `log`."""
    file = label or source_label(path, split)
    rows = 0
    for row in iter_source(path, split, columns, max_line_bytes):
        rows += 1
        if row.problem is not None:
            log.add(Problem(file, row.line, "(line)", row.problem, "error", row.code))
            continue
        rec, problems = validate(row.obj, file, row.line, fmt)
        for p in problems:
            log.add(p)
        if rec is not None:
            yield rec
    if rows == 0:
        log.add(Problem(file, 0, "", "no records (the file is empty or holds only blank lines)", "error", "empty-file"))


def check_schema(path: str | Path, max_problems: int = DEFAULT_CAP,
                 max_line_bytes: int = MAX_LINE_BYTES, fmt: str = "auto", split: str = "train",
                 columns: dict[str, str] | None = None) -> list[Problem]:
    """Every schema problem of a data file (errors and warnings), streamed; cheap enough to run before training.

    At most `max_problems` are returned; when more were found, the last entry (line 0, code "more") says how many
    were left out and their severity.
    """
    log = ProblemLog(cap=max_problems)
    for _ in iter_checked(path, log, max_line_bytes, fmt=fmt, split=split, columns=columns):
        pass
    out = list(log.problems)
    if log.omitted:
        worst: Severity = "error" if log.errors > sum(p.severity == "error" for p in out) else "warning"
        out.append(Problem(str(path), 0, "", f"... and {log.omitted} more problem(s) not listed "
                           f"({log.errors} errors, {log.warnings} warnings in all)", worst, "more"))
    return out
