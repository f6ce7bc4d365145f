"""Set one value in a user's YAML file in place: comments, order, quoting and every other line stay as written.

PyYAML's node marks locate the value (or the section to add it to) in the text; only that span changes. The
result is parsed again and must equal the original with the one value changed, else nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_text
from tunewise.userfiles import parse_yaml


def _child(node: yaml.MappingNode, key: str):
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None, None


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def set_in_text(text: str, section: str, key: str, value: Any) -> str:
    """`text` with section.key set to value (added to the section, or the section added at the end)."""
    root = yaml.compose(text) if text.strip() else None
    if root is None:
        return f"{section}:\n  {key}: {_scalar(value)}\n"
    if not isinstance(root, yaml.MappingNode):
        raise ValueError("the file is not a mapping of keys to values")
    _, sec = _child(root, section)
    if sec is None or (isinstance(sec, yaml.ScalarNode) and sec.value in ("", "~", "null")):
        if sec is not None:  # `train:` with nothing under it: replace the empty value
            start, end = sec.start_mark.index, sec.end_mark.index
            return text[:start] + f"\n  {key}: {_scalar(value)}" + text[end:]
        sep = "" if text.endswith("\n") else "\n"
        return f"{text}{sep}{section}:\n  {key}: {_scalar(value)}\n"
    if not isinstance(sec, yaml.MappingNode):
        raise ValueError(f"'{section}' is not a section")
    _, val = _child(sec, key)
    if val is not None:
        if not isinstance(val, yaml.ScalarNode):
            raise ValueError(f"{section}.{key} is not a single value")
        return text[: val.start_mark.index] + _scalar(value) + text[val.end_mark.index:]
    if sec.flow_style:  # train: {epochs: 1}: add inside the braces
        end = sec.end_mark.index - 1  # the closing brace
        sep = ", " if sec.value else ""
        return text[:end].rstrip() + f"{sep}{key}: {_scalar(value)}" + text[end:]
    first_key = sec.value[0][0]
    col = first_key.start_mark.column
    line_start = text.rfind("\n", 0, first_key.start_mark.index) + 1
    return text[:line_start] + " " * col + f"{key}: {_scalar(value)}\n" + text[line_start:]


def set_yaml_value(path: str | Path, section: str, key: str, value: Any) -> None:
    """Write section.key = value into the YAML file at `path` atomically, keeping the rest of the text."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        new = set_in_text(text, section, key, value)
        before, after = parse_yaml(text, str(path)) or {}, parse_yaml(new, str(path))
    except (ValueError, yaml.YAMLError) as e:
        raise TunewiseError(f"{path}: cannot set {section}.{key} in place ({e})",
                            f"set {section}.{key}: {value} by hand") from None
    expected = dict(before)
    expected[section] = {**(before.get(section) or {}), key: value}
    if after != expected:
        raise TunewiseError(f"{path}: setting {section}.{key} in place would change other values; nothing written",
                            f"set {section}.{key}: {value} by hand")
    atomic_write_text(path, new)
