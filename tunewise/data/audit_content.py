"""Content checks of normalised records: class balance, structured-output validity, skill coverage.

Each check is a small accumulator: `add(record)` while streaming, `result()` at the end (bounded memory: label
counting stops past MAX_LABELS distinct answers; example line lists are capped).
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field

from tunewise.data.schema import Checked

MAX_LABELS = 200  # more distinct answers than this: not classification-like
MAX_EXAMPLES = 200  # line numbers kept per finding

# --- labels -------------------------------------------------------------------------------------------------


@dataclass
class LabelStats:
    counts: Counter = field(default_factory=Counter)
    n: int = 0
    overflow: bool = False
    long_answers: int = 0

    def add(self, rec: Checked) -> None:
        if rec.shape == "text":
            return
        self.n += 1
        answer = rec.answer.strip()
        if len(answer) > 40 or answer.count(" ") > 3:
            self.long_answers += 1
        if self.overflow:
            return
        self.counts[answer] += 1
        if len(self.counts) > MAX_LABELS:
            self.overflow, self.counts = True, Counter()

    def result(self) -> dict | None:
        """Class balance when the answers come from a small label set, else None."""
        k = len(self.counts)
        if self.overflow or self.n < 10 or k < 2 or k > 50 or k * 5 > self.n or self.long_answers > 0.05 * self.n:
            return None
        ranked = self.counts.most_common()
        largest, smallest = ranked[0][1], ranked[-1][1]
        return {"classes": k, "counts": dict(ranked), "share": {c: round(v / self.n, 4) for c, v in ranked},
                "imbalance_ratio": round(largest / smallest, 2), "smallest_class": ranked[-1][0]}


# --- structured outputs --------------------------------------------------------------------------------------

_MR = re.compile(r"^\s*\w+\(\s*(?:\w+\[[^\[\]]*\](?:\s*,\s*\w+\[[^\[\]]*\])*)?\s*\)\s*$")
_MR_LIKE = re.compile(r"^\s*\w+\(")
_SQL_LIKE = re.compile(r"^\s*(select|with|insert|update|delete)\b", re.IGNORECASE)


def _json_ok(s: str) -> tuple[bool, str]:
    try:
        v = json.loads(s)
    except (ValueError, RecursionError) as e:
        return False, f"not valid JSON ({getattr(e, 'msg', type(e).__name__)})"
    if not isinstance(v, (dict, list)):
        return False, f"JSON {type(v).__name__}, not an object or list"
    return True, ""


def _mr_ok(s: str) -> tuple[bool, str]:
    return (True, "") if _MR.match(s) else (False, "not in the meaning-representation shape act(slot[value], ...)")


_SQL_DB: sqlite3.Connection | None = None


@functools.lru_cache(maxsize=1 << 16)  # templated SQL repeats; parsing is the slow part
def _sql_ok(s: str) -> tuple[bool, str]:
    """SQL that SQLite can parse (unknown tables and columns are fine: this checks syntax, not the schema)."""
    global _SQL_DB
    if _SQL_DB is None:
        _SQL_DB = sqlite3.connect(":memory:")
    try:
        _SQL_DB.execute("EXPLAIN " + s)
    except sqlite3.OperationalError as e:
        msg = str(e)
        if msg.startswith(("no such table", "no such column", "no such function")):
            return True, ""
        return False, f"SQL does not parse ({msg[:60]})"
    except (sqlite3.Error, ValueError) as e:  # several statements, NUL, ...
        return False, f"SQL does not parse ({str(e)[:60]})"
    return True, ""


FORMATS = {
    "json": (lambda s: s.lstrip().startswith(("{", "[")), _json_ok),
    "mr": (lambda s: bool(_MR_LIKE.match(s)), _mr_ok),
    "sql": (lambda s: bool(_SQL_LIKE.match(s)), _sql_ok),
}


@dataclass
class FormatStats:
    """Validity of targets in a declared format, or in each format the targets look like ('auto')."""

    declared: str = "auto"
    n: int = 0
    like: Counter = field(default_factory=Counter)
    valid: Counter = field(default_factory=Counter)
    invalid: dict = field(default_factory=dict)  # format -> [(line, why)] (capped)

    def add(self, rec: Checked) -> None:
        if rec.shape == "text" or self.declared == "none":
            return
        self.n += 1
        s = rec.answer.strip()
        names = [self.declared] if self.declared != "auto" else list(FORMATS)
        for name in names:
            looks, check = FORMATS[name]
            if self.declared == "auto" and not looks(s):
                continue
            self.like[name] += 1
            ok, why = check(s)
            if ok:
                self.valid[name] += 1
            else:
                bad = self.invalid.setdefault(name, [])
                if len(bad) < MAX_EXAMPLES:
                    bad.append((rec.line, why))

    def result(self) -> dict | None:
        if self.n == 0:
            return None
        if self.declared == "auto":
            name, like = max(self.like.items(), key=lambda kv: kv[1], default=(None, 0))
            if name is None or like < 0.5 * self.n:
                return None  # targets are free text
        else:
            name = self.declared
        return {"format": name, "declared": self.declared != "auto", "targets": self.n,
                "valid": self.valid[name], "valid_share": round(self.valid[name] / self.n, 4),
                "invalid_examples": self.invalid.get(name, [])}


# --- skill coverage ------------------------------------------------------------------------------------------

SKILLS: dict[str, re.Pattern] = {
    # "23 + 45 = 68", "What is 7 * 8?" (the tiny base's arithmetic facts)
    "arithmetic": re.compile(r"\d\s*[-+*/×÷]\s*\d+\s*(=|\?)|\bwhat is \d+\s*(plus|minus|times|[-+*/×÷])",
                             re.IGNORECASE),
    # GSM8k-shaped word problems with a worked answer, or questions about quantities
    "math": re.compile(r"####\s*-?\d|\bhow (many|much)\b[^\n]*\?", re.IGNORECASE),
    "sql": re.compile(r"\bselect\b[\s\S]+?\bfrom\b", re.IGNORECASE),
    "json": re.compile(r"^\s*[\[{][\s\S]*[\]}]\s*$"),
    "code": re.compile(r"\bdef \w+\(|```|#include\b|\bfunction\s*\w*\s*\(|\bpublic static\b"),
    # prose: several sentences of ordinary text (the `lm` retention probe measures the base's prose)
    "lm": re.compile(r"(?:[A-Za-z][^.!?\n]{15,}[.!?]\s+){2,}"),
}
# cheap substring tests that every match of the skill's regex contains (a regex search costs ~10x more)
HINTS: dict[str, tuple[str, ...]] = {
    "arithmetic": ("=", "?", "hat is", "HAT IS"), "math": ("####", "?"), "sql": ("select", "SELECT", "Select"), "json": ("{", "["),
    "code": ("def ", "```", "#include", "function", "public static"), "lm": (".", "!", "?"),
}
ALIASES = {"word_problem": "math", "gsm8k": "math", "prose": "lm", "text": "lm", "mr": "json"}


@dataclass
class SkillStats:
    """How many records show each preserved skill; NAME=REGEX adds a custom detector."""

    requested: list[str]
    patterns: dict[str, re.Pattern] = field(default_factory=dict)
    hints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    n: int = 0

    def __post_init__(self) -> None:
        for item in self.requested:
            name, _, regex = item.partition("=")
            name = name.strip()
            if regex:
                try:
                    self.patterns[name] = re.compile(regex, re.IGNORECASE)
                except re.error:
                    self.unknown.append(item)
                continue
            key = ALIASES.get(name, name)
            if key in SKILLS:
                self.patterns[name] = SKILLS[key]
                self.hints[name] = HINTS[key]
            else:
                self.unknown.append(name)

    def add(self, rec: Checked) -> None:
        self.n += 1
        if not self.patterns:
            return
        text = rec.text
        for name, pat in self.patterns.items():
            hints = self.hints.get(name)
            if hints and not any(h in text for h in hints):
                continue
            if pat.search(text):
                self.counts[name] += 1
                if name not in self.examples:
                    self.examples[name] = rec.line

    def result(self) -> dict:
        return {"records": self.n, "unknown": self.unknown,
                "skills": {name: {"examples": self.counts[name],
                                  "share": round(self.counts[name] / self.n, 4) if self.n else 0.0,
                                  "first_line": self.examples.get(name)} for name in self.patterns}}
