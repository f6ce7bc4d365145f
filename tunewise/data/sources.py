"""The one reader of data sources: every row of a file, a `save_to_disk` folder or a hub dataset, with its line.

    local file     .jsonl / .json / .csv / .tsv / .parquet, read by audit_readers (bad rows come back as
                   problems with their line numbers, never as a crash)
    folder         written by `datasets.Dataset.save_to_disk` (or a DatasetDict's, then `split` picks one)
    dataset id     anything else that looks like `name` or `owner/name`: `datasets.load_dataset(id, split=...)`,
                   which honours HF_HUB_OFFLINE and reads the local cache; unreachable -> one line

Rows of a dataset are numbered from 1 like the records of a JSON file. A column mapping ({ours: theirs})
renames the dataset's fields to the names the formats use. Train, data check, eval and probe sets all read
through `iter_source`, so they accept the same sources.

The datasets library is imported only for a save_to_disk folder or a hub dataset: local files never pay for it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tunewise.data.audit_readers import KNOWN_SUFFIXES, MAX_LINE_BYTES, RawRow, iter_rows
from tunewise.data.records import rename_columns
from tunewise.errors import TunewiseError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def kind_of(source: str | Path) -> str:
    """'file' | 'saved' (a save_to_disk folder) | 'hub'; a path that cannot be any of them is an error."""
    p = Path(source).expanduser()
    if p.is_file():
        return "file"
    if p.is_dir():
        if any((p / m).is_file() for m in _SAVED_MARKERS):
            return "saved"
        raise TunewiseError(f"'{p}' is a folder, not a file, and not one written by datasets' save_to_disk (it "
                            f"has none of {', '.join(_SAVED_MARKERS)})",
                            "give a data file, or the folder save_to_disk wrote")
    text = str(source)
    if p.suffix.lower() in KNOWN_SUFFIXES or text.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(text):
        raise TunewiseError(f"data file '{source}' does not exist", "check data.train / data.eval (or the path given)")
    return "hub"


def label(source: str | Path, split: str = "train") -> str:
    """How problems name the source: the path, or `id[split]` for a hub dataset."""
    try:
        kind = kind_of(source)
    except TunewiseError:
        kind = "file"
    return f"{source}[{split}]" if kind == "hub" else str(source)


def iter_source(source: str | Path, split: str = "train", columns: dict[str, str] | None = None,
                max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[RawRow]:
    """Every row of a source, in order; unreadable rows (local files) come back with `problem` set."""
    kind = kind_of(source)
    if kind == "file":
        rows = iter_rows(Path(source).expanduser(), max_line_bytes)
    else:
        rows = (RawRow(i + 1, obj=obj) for i, obj in enumerate(_dataset(source, split, kind)))
    for row in rows:
        if row.problem is None and isinstance(row.obj, dict):
            row.obj = _decode_turns(rename_columns(row.obj, columns))
        yield row


def _decode_turns(obj: dict) -> dict:
    """Chat turns a table holds as JSON text (a CSV column, a string feature) become the list they encode."""
    for key in ("messages", "conversations"):
        value = obj.get(key)
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                obj = {**obj, key: json.loads(value)}
            except (ValueError, RecursionError):
                pass  # left as text; the schema check reports the wrong type
    return obj


def _dataset(source: str | Path, split: str, kind: str):
    """A `datasets.Dataset` for a save_to_disk folder or a hub id, with `split` chosen."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if kind == "saved":
        data = datasets.load_from_disk(str(Path(source).expanduser()))
    else:
        data = _load_hub(str(source), split)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise TunewiseError(f"'{source}' has no split '{split}' (it has {', '.join(data) or 'none'})",
                                f"set split to one of {', '.join(data)}")
        data = data[split]
    return data


def _load_hub(name: str, split: str):
    import datasets

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return datasets.load_dataset(name, split=split)
    except ValueError as e:  # e.g. an unknown split of a dataset that was found
        if "split" in str(e).lower() and "unknown" in str(e).lower():
            raise TunewiseError(f"dataset '{name}' has no split '{split}' ({str(e).splitlines()[0][:160]})",
                                "set split to one the dataset has") from None
        raise _unreachable(name, offline) from e
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetNotFoundError)
        raise _unreachable(name, offline) from e


def _unreachable(name: str, offline: bool) -> TunewiseError:
    how = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached or has no such dataset"
    return TunewiseError(f"'{name}' is not a local file or folder and is not in the local Hugging Face datasets "
                         f"cache ({how})", "download it where the hub is reachable (datasets.load_dataset, then "
                                           "save_to_disk) or give a local path")
