"""One loader for every typed input (run config, continual config, compare spec, advise input).

Each input is a pydantic model whose fields carry a description. Validation reports every problem at once in one
`ConfigError`; an unknown key names the closest valid one ("did you mean"), the same way everywhere.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from tunewise.errors import ConfigError
from tunewise.userfiles import load_yaml

M = TypeVar("M", bound=BaseModel)

# The largest whole number any field takes: beyond int64 torch, numpy and JSON readers overflow or lose digits.
INT_LIMIT = 2**63 - 1


def accepts(ann: Any, kinds: tuple[type, ...]) -> bool:
    """Whether an annotation (int, float | None, list[int], ...) takes a value of one of `kinds` directly."""
    if ann in kinds:
        return True
    if get_origin(ann) in (Union, UnionType):
        return any(accepts(a, kinds) for a in get_args(ann))
    return False


def _element(ann: Any) -> Any:
    """The element annotation of list[X] / dict[str, X] (also inside `| None`), else None."""
    for a in (ann, *get_args(ann)):
        if get_origin(a) in (list, tuple, set) and get_args(a):
            return get_args(a)[0]
        if get_origin(a) is dict and len(get_args(a)) == 2:
            return get_args(a)[1]
    return None


def check_number(ann: Any, value: Any) -> Any:
    """The one numeric-field rule, before pydantic converts: true/false is not a number (pydantic would read
    `r: true` as 1), and a whole number fits in int64. Non-finite floats are refused by `allow_inf_nan=False`."""
    if isinstance(value, (list, tuple, dict)) and (inner := _element(ann)) is not None:
        for item in (value.values() if isinstance(value, dict) else value):
            check_number(inner, item)
        return value
    numeric = accepts(ann, (int, float))
    if not numeric or accepts(ann, (bool,)):
        return value
    if isinstance(value, bool):
        raise PydanticCustomError("bool_number", "expected a number, not true or false")
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        raise PydanticCustomError("int_range", "the number is too large (limit {limit})", {"limit": INT_LIMIT})
    return value


class Numbers(BaseModel):
    """Every number finite, every whole number a whole number and not a boolean: the rule for every input that
    tunewise validates (the configs, and the server's request fields)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return value if field is None else check_number(field.annotation, value)


class Strict(Numbers):
    """An input section: unknown keys are errors, assignments are validated, numbers follow `Numbers`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Names people carry over from other tools, mapped to ours (difflib alone would not find them).
SYNONYMS = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "learning_rate": "lr",
            "num_epochs": "epochs", "num_train_epochs": "epochs", "batch": "batch_size", "max_length": "max_seq_len",
            "max_seq_length": "max_seq_len", "model": "base", "base_model": "base", "targets": "target_modules",
            "gradient_accumulation_steps": "grad_accum", "output": "output_dir", "tensorboard": "report_to",
            "wandb": "report_to", "mlflow": "report_to", "eval_steps": "eval_every",
            "load_best_model_at_end": "keep_best"}

# pydantic's words for a value of the wrong type, in ours (what to write instead).
TYPE_WORDS = {"int_type": "expected a whole number", "int_parsing": "expected a whole number",
              "int_from_float": "expected a whole number", "float_type": "expected a number",
              "float_parsing": "expected a number", "bool_type": "expected true or false",
              "bool_parsing": "expected true or false", "string_type": "expected text",
              "finite_number": "expected a finite number (not .inf or .nan)"}


def closest(key: str, valid: list[str]) -> str | None:
    if SYNONYMS.get(key) in valid:
        return SYNONYMS[key]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return close[0] if close else None


def _submodel(ann: Any) -> type[BaseModel] | None:
    """The section type inside an annotation (also `str | list[DataSource]`, `DataSource | None`)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return next((m for a in getattr(ann, "__args__", ()) if (m := _submodel(a)) is not None), None)


def unknown_keys(data: Any, model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every unknown key, with the closest valid one suggested."""
    if not isinstance(data, dict):
        return []
    problems = []
    fields = {name: _submodel(f.annotation) for name, f in model.model_fields.items()}
    for key, value in data.items():
        if key not in fields:
            close = closest(str(key), list(fields))
            hint = f"; did you mean '{prefix}{close}'?" if close else f"; valid keys: {', '.join(fields)}"
            problems.append(f"{prefix}{key}: unknown key{hint}")
        elif fields[key] is not None and isinstance(value, list):
            for i, item in enumerate(value):
                problems.extend(unknown_keys(item, fields[key], f"{prefix}{key}[{i}]."))
        elif fields[key] is not None:
            problems.extend(unknown_keys(value, fields[key], f"{prefix}{key}."))
    return problems


def format_error(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    if err.get("type") == "missing":
        return f"{loc}: required field is missing"
    shown = repr(err["input"])
    shown = shown if len(shown) <= 80 else shown[:77] + "..."  # one line, even for a whole section given wrongly
    return f"{loc}: {TYPE_WORDS.get(err.get('type'), err['msg'])} (got {shown})"


def problems_of(e: ValidationError) -> list[str]:
    """A ValidationError's problems in our words (unknown keys are reported by `unknown_keys`, with a hint)."""
    return [format_error(err) for err in e.errors() if err.get("type") != "extra_forbidden"]


def validate(model: type[M], data: Any, source: str | None = None) -> M:
    """`model` from a dict; raises ConfigError listing every problem (unknown keys and bad values)."""
    if not isinstance(data, dict):
        raise ConfigError([f"the config must be a mapping of keys to values (got {type(data).__name__})"], source)
    problems = unknown_keys(data, model)
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(problems + problems_of(e), source) from None
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_file(model: type[M], path: str | Path, prepare: Callable[[Any], Any] | None = None) -> M:
    """`model` from a YAML file (an empty file is an empty mapping); `prepare` may rewrite the raw data first."""
    data = load_yaml(Path(path), "config file") or {}
    if prepare is not None and isinstance(data, dict):
        data = prepare(data)
    return validate(model, data, str(path))


# ---------------------------------------------------------------------------------------------- --help-config


def _type_name(ann: Any) -> str:
    """int | None, 'cosine' | 'linear', list[str]: how a field's type reads in the help."""
    args = get_args(ann)
    if get_origin(ann) is Literal:
        return " | ".join(repr(a) for a in args)
    if get_origin(ann) in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if args:
        return f"{getattr(get_origin(ann), '__name__', get_origin(ann))}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if ann is type(None) else getattr(ann, "__name__", str(ann))


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str | None, str]]:
    """(dotted name, type, default or None when required, description) for every field, sections expanded."""
    rows = []
    for name, f in model.model_fields.items():
        sub = _submodel(f.annotation)
        if sub is not None and f.annotation is sub:  # a section: its own fields, dotted
            rows.extend(field_rows(sub, f"{prefix}{name}."))
            continue
        required = f.is_required()
        default = None if required else repr(f.get_default(call_default_factory=True))
        rows.append((f"{prefix}{name}", _type_name(f.annotation), default, f.description or ""))
        if sub is not None:  # e.g. data.train: a path or a list of sources; the source's own fields follow
            many = any(get_origin(a) is list for a in get_args(f.annotation))
            rows.extend(field_rows(sub, f"{prefix}{name}{'[i]' if many else ''}."))
    return rows


def help_text(model: type[BaseModel]) -> str:
    """Every field of `model`: `name: type = default` (or `(required)`), its description indented below."""
    out = []
    for name, kind, default, text in field_rows(model):
        out.append(f"{name}: {kind}" + (" (required)" if default is None else f" = {default}"))
        out.extend(textwrap.wrap(text, 100, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(out)
