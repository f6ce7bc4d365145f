"""Per-example scorers for built-in tasks and for the user's own data.

Every scorer turns (prediction, reference) into a `Scored` -- right or wrong, and *why* it is wrong -- and never
raises on model output: text that is not JSON, not SQL or not a meaning representation is simply wrong, with a
reason. `aggregate` turns a list of them into the scorer's metrics; `primary` names the headline one.

    exact       stripped string equality                               accuracy
    normalized  case / whitespace / trailing punctuation folded          accuracy
    contains    the reference as whole words inside the prediction       accuracy
    json        JSON validity, field-level P/R/F1, optional JSON schema  exact, valid_json, field_f1 (+ schema_valid)
    classify    one of N labels                                          accuracy, macro_f1
    sql         execution match on a SQLite database                     execution_accuracy, exec_error_rate
    number      final number (after '####' when present)                 accuracy, format_rate
    mr          ViGGO-style meaning representation act(slot[value], ..)  slot F1 (headline), slot P/R, exact_match
    MODULE:FN   your own function fn(prediction, reference) -> a number, a bool or a dict of numbers
                (MODULE is an importable module or a path to a .py file)   the mean of each number
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.tasks.metrics import accuracy, macro_f1, prf, set_counts


@dataclass
class Scored:
    correct: bool
    reason: str | None = None  # why it is wrong (None when right)
    parsed: Any = None  # what the scorer read from the prediction (label, number, MR, rows ...)
    counts: dict[str, int] = field(default_factory=dict)  # tp / fp / fn for set-valued outputs
    values: dict[str, float] = field(default_factory=dict)  # per-example numbers averaged into metrics
    unscorable: bool = False  # the reference itself cannot be scored (not JSON, no number, a failing query)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"correct": self.correct, "reason": self.reason}
        if self.unscorable:
            out["unscorable"] = True
        if self.parsed is not None:
            out["parsed"] = self.parsed if isinstance(self.parsed, (str, int, float, dict, list)) else str(self.parsed)
        if self.counts:
            out["counts"] = self.counts
        if self.values:
            out["values"] = self.values
        return out


class Scorer:
    """Base: exact match after strip. Subclasses override `score` and, when they report more, `aggregate`."""

    name = "exact"
    primary = "accuracy"
    description = "stripped string equality"

    def score(self, prediction: str, reference: str) -> Scored:
        ok = prediction.strip() == reference.strip()
        return Scored(ok, None if ok else "differs from the reference", prediction.strip())

    def aggregate(self, scored: list[Scored]) -> dict[str, float]:
        return {"accuracy": accuracy([s.correct for s in scored])}


_TRAIL_PUNCT = re.compile(r"[\s.!?;:,]+$")


def normalize_text(s: str) -> str:
    s = " ".join(s.strip().lower().split())
    s = _TRAIL_PUNCT.sub("", s)
    return s.strip("\"'`")


class NormalizedScorer(Scorer):
    name = "normalized"
    description = "case, whitespace, quotes and trailing punctuation folded"

    def score(self, prediction: str, reference: str) -> Scored:
        p, r = normalize_text(prediction), normalize_text(reference)
        return Scored(p == r, None if p == r else "differs from the reference after normalisation", p)


class ContainsScorer(Scorer):
    """The reference, normalised, appears as whole words in the normalised prediction: a short factual answer
    inside a chatty reply ('The capital of France is Paris.') counts, 'Au' inside 'Australia' does not."""

    name = "contains"
    description = "the reference appears as whole words in the prediction (case and punctuation folded)"

    @staticmethod
    def _words(s: str) -> str:
        return " " + " ".join(re.findall(r"\w+", s.lower())) + " "

    def score(self, prediction: str, reference: str) -> Scored:
        ok = bool(reference.strip()) and self._words(reference) in self._words(prediction)
        return Scored(ok, None if ok else "the reference is not among the prediction's words", prediction.strip())


# --------------------------------------------------------------------------------------------- classification

class ClassifyScorer(Scorer):
    """The first line of the prediction, normalised, must be the reference label."""

    name = "classify"
    description = "one of N labels: accuracy, macro-F1"

    def __init__(self, labels: list[str] | None = None):
        self.labels = [normalize_text(x) for x in labels] if labels else None

    def score(self, prediction: str, reference: str) -> Scored:
        lines = prediction.strip().splitlines()
        label = normalize_text(lines[0]) if lines else ""
        ref = normalize_text(reference)
        if not label:
            return Scored(False, "empty prediction", None)
        if self.labels is not None and label not in self.labels:
            return Scored(False, f"'{label}' is not one of the labels", label)
        ok = label == ref
        return Scored(ok, None if ok else f"predicted '{label}', expected '{ref}'", label)

    def aggregate_with_refs(self, scored: list[Scored], references: list[str]) -> dict[str, float]:
        preds = [s.parsed if isinstance(s.parsed, str) else None for s in scored]
        refs = [normalize_text(r) for r in references]
        return {"accuracy": accuracy([s.correct for s in scored]), "macro_f1": macro_f1(preds, refs, self.labels)}


# --------------------------------------------------------------------------------------------- final number

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def parse_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def final_number(text: str) -> tuple[float | None, bool]:
    """(the answer, whether it was marked '#### N'): the marked number, else the last number in the text."""
    m = _FINAL.search(text)
    if m:
        return parse_number(m.group(1)), True
    nums = _NUMBER.findall(text)
    return (parse_number(nums[-1]), False) if nums else (None, False)


class NumberScorer(Scorer):
    name = "number"
    primary = "accuracy"
    description = "final number (after '####' if present, else the last number)"

    def score(self, prediction: str, reference: str) -> Scored:
        ref, _ = final_number(reference)
        if ref is None:
            return Scored(False, "the reference has no number", unscorable=True)
        got, marked = final_number(prediction)
        if got is None:
            return Scored(False, "no number in the prediction", None, {"marked": 0})
        ok = abs(got - ref) < 1e-6
        why = None if ok else f"final number {got:g}, expected {ref:g}"
        return Scored(ok, why, got, {"marked": int(marked)})

    def aggregate(self, scored: list[Scored]) -> dict[str, float]:
        marked = [s.counts.get("marked", 0) for s in scored]
        return {"accuracy": accuracy([s.correct for s in scored]),
                "format_rate": sum(marked) / len(marked) if marked else 0.0}


def _counted_prf(scored: list[Scored], tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """P / R / F1 over examples' field or slot counts. An example that was not scored (no prediction, a reference
    that cannot be read) has no counts; when none has any, that is 0, not prf's "nothing expected, all right"."""
    return prf(tp, fp, fn) if any(s.counts for s in scored) else (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------- meaning representation

_MR = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.DOTALL)
_SLOT = re.compile(r"\s*([a-z_]+)\s*\[([^\[\]]*)\]\s*(?:,|$)")


def parse_mr(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    """'inform(name[Aurora Bistro], food[thai])' -> ('inform', [('name', 'Aurora Bistro'), ('food', 'thai')])."""
    m = _MR.match(text.strip().splitlines()[0] if text.strip() else "")
    if not m:
        return None
    act, body = m.group(1), m.group(2).strip()
    slots, pos = [], 0
    while pos < len(body):
        sm = _SLOT.match(body, pos)
        if not sm or sm.end() == pos:
            return None
        slots.append((sm.group(1), sm.group(2).strip().lower()))
        pos = sm.end()
    return act, slots


class MRScorer(Scorer):
    name = "mr"
    primary = "slot_f1"  # graded: a small model that gets most slots right is not scored like one that gets none
    description = "meaning representation: exact match (act + slots, any order), slot P/R/F1"

    def score(self, prediction: str, reference: str) -> Scored:
        ref = parse_mr(reference)
        if ref is None:
            return Scored(False, "the reference is not a meaning representation", unscorable=True)
        got = parse_mr(prediction)
        if got is None:
            return Scored(False, "not a meaning representation act(slot[value], ...)", None,
                          {"tp": 0, "fp": 0, "fn": len(ref[1]), "act": 0, "parsed": 0})
        tp, fp, fn = set_counts(got[1], ref[1])
        ok = got[0] == ref[0] and fp == fn == 0
        why = None
        if not ok:
            why = f"act '{got[0]}' != '{ref[0]}'" if got[0] != ref[0] else f"slots differ ({fp} extra, {fn} missing)"
        return Scored(ok, why, prediction.strip(),
                      {"tp": tp, "fp": fp, "fn": fn, "act": int(got[0] == ref[0]), "parsed": 1})

    def aggregate(self, scored: list[Scored]) -> dict[str, float]:
        tp = sum(s.counts.get("tp", 0) for s in scored)
        fp = sum(s.counts.get("fp", 0) for s in scored)
        fn = sum(s.counts.get("fn", 0) for s in scored)
        p, r, f = _counted_prf(scored, tp, fp, fn)
        n = len(scored) or 1
        return {"exact_match": accuracy([s.correct for s in scored]), "slot_precision": p, "slot_recall": r,
                "slot_f1": f, "act_accuracy": sum(s.counts.get("act", 0) for s in scored) / n,
                "parse_rate": sum(s.counts.get("parsed", 0) for s in scored) / n}


# --------------------------------------------------------------------------------------------- JSON

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json(text: str) -> tuple[Any, str | None]:
    """(value, error); tolerates a ``` fence around the JSON, nothing else."""
    t = text.strip()
    m = _FENCE.match(t)
    if m:
        t = m.group(1)
    try:
        return json.loads(t), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at char {e.pos})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Leaf (path, value) pairs: {'a': {'b': 1}, 'c': [2]} -> [('a.b', '1'), ('c[0]', '2')]."""
    if isinstance(value, dict):
        if not value:
            return [(prefix, "{}")]
        return [kv for k, v in value.items() for kv in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        if not value:
            return [(prefix, "[]")]
        return [kv for i, v in enumerate(value) for kv in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, json.dumps(value, sort_keys=True))]


_JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def schema_errors(value: Any, schema: dict, path: str = "$") -> list[str]:
    """Validate against a JSON schema: the `jsonschema` package when installed, else the common subset
    (type, enum, const, required, properties, additionalProperties, items, minimum, maximum)."""
    try:
        import jsonschema
    except ImportError:
        return _subset_errors(value, schema, path)
    v = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '$'}: {e.message}" for e in v.iter_errors(value)]


def _type_ok(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES.get(t, object))


def _subset_errors(value: Any, schema: dict, path: str) -> list[str]:
    errs: list[str] = []
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in types):
            return [f"{path}: expected {'/'.join(types)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: expected {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errs += [f"{path}: missing required field '{k}'" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if k in props:
                errs += _subset_errors(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected field '{k}'")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errs += _subset_errors(v, schema["items"], f"{path}[{i}]")
    return errs


class JsonScorer(Scorer):
    name = "json"
    primary = "field_f1"
    description = "JSON validity, field-level P/R/F1, exact; optionally a JSON schema"

    def __init__(self, schema: dict | None = None):
        self.schema = schema

    def score(self, prediction: str, reference: str) -> Scored:
        ref, err = parse_json(reference)
        if err:
            return Scored(False, f"the reference is {err}", unscorable=True)
        ref_fields = flatten(ref)
        got, err = parse_json(prediction)
        if err:
            return Scored(False, err, None, {"tp": 0, "fp": 0, "fn": len(ref_fields), "valid": 0, "schema_ok": 0},
                          field_hits(ref_fields, []))
        got_fields = flatten(got)
        tp, fp, fn = set_counts(got_fields, ref_fields)
        counts = {"tp": tp, "fp": fp, "fn": fn, "valid": 1, "schema_ok": 1}
        why = None if got == ref else f"fields differ: {field_diff(got_fields, ref_fields)}"
        if self.schema is not None:
            errs = schema_errors(got, self.schema)
            if errs:
                counts["schema_ok"] = 0
                why = f"schema: {errs[0]}" + (f" (+{len(errs) - 1} more)" if len(errs) > 1 else "")
        ok = got == ref and counts["schema_ok"] == 1
        return Scored(ok, None if ok else why, got, counts, field_hits(ref_fields, got_fields))

    def aggregate(self, scored: list[Scored]) -> dict[str, float]:
        tp, fp, fn = (sum(s.counts.get(k, 0) for s in scored) for k in ("tp", "fp", "fn"))
        p, r, f = _counted_prf(scored, tp, fp, fn)
        n = len(scored) or 1
        out = {"exact": accuracy([s.correct for s in scored]),
               "valid_json": sum(s.counts.get("valid", 0) for s in scored) / n,
               "field_precision": p, "field_recall": r, "field_f1": f}
        if self.schema is not None:
            out["schema_valid"] = sum(s.counts.get("schema_ok", 0) for s in scored) / n
        fields: dict[str, list[float]] = {}
        for s in scored:  # per field: over the examples whose reference has it
            for k, v in s.values.items():
                fields.setdefault(k, []).append(v)
        return out | {k: sum(v) / len(v) for k, v in sorted(fields.items())}


_INDEX = re.compile(r"\[\d+\]")


def field_hits(ref_fields: list[tuple[str, str]], got_fields: list[tuple[str, str]]) -> dict[str, float]:
    """{'field:items[].qty': share of the reference's leaves at that path the prediction has right}: list
    positions fold into one field, so an invoice with 3 items reports one accuracy for items[].qty."""
    got = set(got_fields)
    hits: dict[str, list[int]] = {}
    for path, value in ref_fields:
        hits.setdefault("field:" + _INDEX.sub("[]", path), []).append(int((path, value) in got))
    return {k: sum(v) / len(v) for k, v in hits.items()}


def _short_value(v: str, n: int = 24) -> str:
    return v if len(v) <= n else v[: n - 3] + "..."


def field_diff(got_fields: list[tuple[str, str]], ref_fields: list[tuple[str, str]], k: int = 3) -> str:
    """Which fields differ, by name: 'total (got 12.5, expected 12.50); missing currency; extra notes'."""
    got, ref = dict(got_fields), dict(ref_fields)
    wrong = [f"{p} (got {_short_value(got[p])}, expected {_short_value(ref[p])})" for p in ref
             if p in got and got[p] != ref[p]]
    parts = [("", wrong), ("missing ", [p for p in ref if p not in got]), ("extra ", [p for p in got if p not in ref])]
    return "; ".join(label + ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")
                     for label, names in parts if names) or "same fields, in another order or type"


# --------------------------------------------------------------------------------------------- SQL

_SQL_FENCE = re.compile(r"^```(?:sql)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)


class SqlScorer(Scorer):
    """Execution accuracy: both queries run on the database; equal result sets are right."""

    name = "sql"
    primary = "execution_accuracy"
    description = "execution match on a SQLite database (--db); share failing to execute"

    def __init__(self, db: str | Path):
        from tunewise.tasks.sqlexec import open_readonly

        self.db = Path(db)
        self.conn = open_readonly(self.db)
        self._ref_cache: dict[str, Any] = {}

    def _reference(self, sql: str):
        from tunewise.tasks.sqlexec import run_query

        if sql not in self._ref_cache:
            self._ref_cache[sql] = run_query(self.conn, sql)
        return self._ref_cache[sql]

    def score(self, prediction: str, reference: str) -> Scored:
        from tunewise.tasks.sqlexec import has_order_by, run_query, same_result

        ref = self._reference(reference.strip())
        if not ref.ok:
            return Scored(False, f"the reference query failed: {ref.error}", None, {"exec_error": 0}, unscorable=True)
        text = prediction.strip()
        m = _SQL_FENCE.match(text)
        query = m.group(1) if m else text
        got = run_query(self.conn, query)
        if not got.ok:
            return Scored(False, f"does not execute: {got.error}", None, {"exec_error": 1})
        ok = same_result(got.rows, ref.rows, has_order_by(reference))
        exact = int(" ".join(query.rstrip("; ").split()).lower() == " ".join(reference.strip().rstrip("; ").split()).lower())
        why = None if ok else f"different result ({len(got.rows)} rows, expected {len(ref.rows)})"
        return Scored(ok, why, got.rows[:5], {"exec_error": 0, "exact": exact})

    def aggregate(self, scored: list[Scored]) -> dict[str, float]:
        n = len(scored) or 1
        return {"execution_accuracy": accuracy([s.correct for s in scored]),
                "exec_error_rate": sum(s.counts.get("exec_error", 0) for s in scored) / n,
                "exact_match": sum(s.counts.get("exact", 0) for s in scored) / n}


# --------------------------------------------------------------------------------------------- your own

class CallableScorer(Scorer):
    """`fn(prediction, reference)` from the user's code, returning a number, a bool or a dict of numbers.

    Each number is averaged over the examples into a metric of the same name ('score' for a bare number); an
    example without one (its record was unusable, or the function raised) counts 0. The headline is 'score' when
    there is one, else the dict's first key. An example is right when the dict says so ('correct'), else when its
    headline is 1 (a bool is 1 or 0); a string under 'reason' is kept as the why.
    """

    description = "your own function: fn(prediction, reference) -> number | bool | dict of numbers"

    def __init__(self, name: str, fn):
        self.name, self.fn, self.primary = name, fn, "score"

    def score(self, prediction: str, reference: str) -> Scored:
        out = self.fn(prediction, reference)
        values, correct, reason = self._read(out)
        if not values:
            return Scored(False, f"{self.name} returned {type(out).__name__} {str(out)[:40]!r}; return a number, "
                                 "a bool or a dict of numbers")
        if self.primary not in values and self.primary == "score":
            self.primary = next(iter(values))
        if correct is None:
            correct = values.get(self.primary, 0.0) >= 1.0
        why = None if correct else reason or f"{self.primary} {values.get(self.primary, 0.0):g}"
        return Scored(correct, why, None, {}, values)

    @staticmethod
    def _read(out: Any) -> tuple[dict[str, float], bool | None, str | None]:
        if isinstance(out, bool):
            return {"score": float(out)}, out, None
        if isinstance(out, (int, float)):
            return {"score": float(out)}, None, None
        if not isinstance(out, dict):
            return {}, None, None
        values = {str(k): float(v) for k, v in out.items()
                  if isinstance(v, (int, float)) and k not in ("correct", "reason")}
        correct = bool(out["correct"]) if "correct" in out else None
        reason = out.get("reason") if isinstance(out.get("reason"), str) else None
        return values, correct, reason

    def aggregate(self, scored: list[Scored]) -> dict[str, float]:
        keys = list(dict.fromkeys(k for s in scored for k in s.values))
        n = len(scored) or 1
        metrics = {k: sum(s.values.get(k, 0.0) for s in scored) / n for k in keys}
        return metrics or {self.primary: 0.0}


_FILE_MODULES: dict[tuple[str, int], Any] = {}


def load_callable(spec: str):
    """'package.module:function' (imported; the working directory is searched first, as `python -m` does) or
    'path/to/file.py:function'; any failure is one TunewiseError saying what to fix."""
    import importlib
    import importlib.util
    import sys

    module_name, _, fn_name = spec.rpartition(":")
    if not module_name or not fn_name.isidentifier():
        raise TunewiseError(f"--scorer '{spec}' is not MODULE:FUNCTION", "e.g. --scorer my_metrics:f1 or "
                            "--scorer metrics.py:f1 (a function taking prediction and reference)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            key = (str(path), path.stat().st_mtime_ns)  # compare and the pilot score many times: run the file once
            if key not in _FILE_MODULES:
                loader_spec = importlib.util.spec_from_file_location(f"tunewise_user_scorer_{path.stem}", path)
                module = importlib.util.module_from_spec(loader_spec)
                loader_spec.loader.exec_module(module)
                _FILE_MODULES[key] = module
            module = _FILE_MODULES[key]
        else:
            sys.path.insert(0, str(Path.cwd()))  # the console script does not put the cwd on the path
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(str(Path.cwd()))
    except Exception as e:  # the user's module: any import error is theirs to fix, and is said in one line
        raise TunewiseError(f"--scorer '{spec}': cannot import {module_name} ({type(e).__name__}: {e})",
                            "give an importable module or a .py file, e.g. --scorer metrics.py:f1") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise TunewiseError(f"--scorer '{spec}': {module_name} has no function '{fn_name}'",
                            f"define def {fn_name}(prediction, reference) in {module_name}")
    return fn


def is_custom(name: str) -> bool:
    """A scorer named MODULE:FUNCTION (the user's own), not a built-in."""
    return ":" in name


def check_scorer(name: str) -> None:
    """Refuse an unknown built-in or a function that cannot be imported, before any model is loaded (for the
    flags of eval, compare, the pilot and the study)."""
    if is_custom(name):
        load_callable(name)
    elif name not in SCORERS:
        raise TunewiseError(f"unknown scorer '{name}'", f"choose one of: {', '.join(SCORERS)}, or your own "
                            "MODULE:FUNCTION")


def primary_of(name: str) -> str | None:
    """The headline metric of a built-in scorer; None for your own (it is known once it has scored)."""
    return None if is_custom(name) or name not in SCORERS else SCORERS[name].primary


# --------------------------------------------------------------------------------------------- registry

SCORERS: dict[str, type[Scorer]] = {c.name: c for c in (Scorer, NormalizedScorer, ContainsScorer, ClassifyScorer,
                                                         NumberScorer, MRScorer, JsonScorer, SqlScorer)}


def make_scorer(name: str, options: dict[str, Any] | None = None, base_dir: Path | None = None) -> Scorer:
    """The one way to get a scorer: a built-in name, or MODULE:FUNCTION (your own; see CallableScorer).
    `options` come from meta.json or flags (db, schema, labels).

    Relative paths in options are read against `base_dir` (the task directory), so a task directory can move.
    """
    opts = dict(options or {})
    if is_custom(name):
        return CallableScorer(name, load_callable(name))
    check_scorer(name)

    def _path(v: str) -> Path:
        p = Path(v).expanduser()
        return p if p.is_absolute() or base_dir is None else base_dir / p

    if name == "sql":
        if not opts.get("db"):
            raise TunewiseError("the sql scorer needs a SQLite database", "pass --db FILE (the task's db.sqlite)")
        return SqlScorer(_path(opts["db"]))
    if name == "json":
        schema = opts.get("schema")
        if isinstance(schema, str):
            sp = _path(schema)
            try:
                schema = json.loads(sp.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise TunewiseError(f"cannot read JSON schema '{sp}': {e}", "pass a JSON schema file") from e
        return JsonScorer(schema)
    if name == "classify":
        return ClassifyScorer(opts.get("labels"))
    return SCORERS[name]()


def aggregate(scorer: Scorer, scored: list[Scored], references: list[str]) -> dict[str, float]:
    """Metrics of a scorer over a test set (classification also needs the references for macro-F1).

    A reference the scorer cannot read adds nothing to the field / slot counts (an empty count would read as a
    perfect F1); when no reference can be read there is nothing to score, and that is an error, never 1.0. When
    some cannot, `unscorable_references` says how many."""
    bad = [s for s in scored if s.unscorable]
    if bad and len(bad) == len(scored):
        raise TunewiseError(f"the {scorer.name} scorer cannot score these references: all {len(bad)} are "
                            f"unreadable (first: {bad[0].reason})",
                            f"check the references' format, or choose a scorer that fits them "
                            f"({', '.join(SCORERS)})")
    if isinstance(scorer, ClassifyScorer):
        metrics = scorer.aggregate_with_refs(scored, references)
    else:
        metrics = scorer.aggregate(scored)
    return {**metrics, "unscorable_references": float(len(bad))} if bad else metrics
