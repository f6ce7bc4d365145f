"""Training data: read records from any source (sources.py), normalise them (records.py), tokenise with a loss mask.

Every format (alpaca, sharegpt, messages, prompt/completion, text) is normalised into one of three shapes:
- {"prompt", "completion"}: loss on the completion (+ EOS) only; the completion is appended to the prompt verbatim.
- {"messages": [{"role", "content"}, ...]}: loss on assistant turns only. The tokenizer's chat template is used when
  it has one; otherwise DEFAULT_ROLE_PREFIX below (documented in the README).
- {"text"}: loss on every token (+ EOS).
Each segment is tokenised on its own and concatenated, so the mask boundary is exact whatever the BPE merges.

This module owns the one rule for how a record becomes tokens, shared by train, eval, compare, serve and data
check: messages go through the model's chat template (which writes any BOS itself); plain text (a prompt, a
completion record, a text record) starts with the special tokens the tokenizer itself puts first (BOS on
Llama-style tokenizers, nothing on SmolLM2's). `prompt_ids` is the generation-time half of the same rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.data.records import RecordError, expected_message, normalise
from tunewise.data.schema import shape_of
from tunewise.data.sources import iter_source, label
from tunewise.data.sources import label as source_label
from tunewise.errors import TunewiseError

IGNORE = -100
FORMATS = ("prompt_completion", "chat", "text")

# Used when the tokenizer has no chat template: one role tag per turn, assistant turns end with EOS.
DEFAULT_ROLE_PREFIX = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"}


@dataclass
class Record:
    data: dict
    line: int  # 1-based line (JSONL), row (CSV, counting the header as line 1) or index (JSON / Parquet)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken
    line: int
    source: str | None = None  # the data source it came from, in a mix
    segments: list[int] | None = None  # a packed row: the lengths of the examples in it (train/packing.py)


@dataclass
class DataStats:
    records: int = 0
    used: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_labels: int = 0
    tokens: int = 0
    label_tokens: int = 0
    sources: dict[str, int] = field(default_factory=dict)  # examples used per source, for a mix
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "notes"}


def read_records(path: str | Path, split: str = "train", columns: dict[str, str] | None = None) -> Iterator[Record]:
    """Records of a data source (file, save_to_disk folder, hub dataset: see sources.py) with their line
    numbers; the first unreadable one raises TunewiseError naming source:line."""
    where = label(path, split)
    for row in iter_source(path, split, columns):
        if row.problem is not None:
            raise TunewiseError(f"{where}:{row.line}: {row.problem}",
                                f"or run `tunewise data check {path} --fix clean.jsonl`")
        yield Record(row.obj, row.line)


def normalise_record(record: Record, fmt: str, where: str | Path) -> tuple[str, Record]:
    """(shape, record in that shape) by the one rule of records.py; a record it cannot read raises
    `where:line: field: what`."""
    if not isinstance(record.data, dict):
        raise TunewiseError(f"{where}:{record.line}: expected a JSON object", f"run `tunewise data check {where}`")
    try:
        _, shape, data = normalise(record.data, fmt)
    except RecordError as e:
        raise TunewiseError(f"{where}:{record.line}: {e.field}: {e.message}" if e.field != "(record)"
                            else f"{where}:{record.line}: {e.message}",
                            f"run `tunewise data check {where}` to list every problem") from None
    return shape, Record(data, record.line)


def detect_format(record: dict) -> str:
    """The record's shape, decided exactly as the data audit decides it (one rule for both)."""
    shape = shape_of(record)
    if shape is not None:
        return shape
    raise TunewiseError(expected_message(record), "name the fields with data.columns, or set data.format")


def _field(record: Record, name: str, path: Path) -> str:
    value = record.data.get(name)
    if not isinstance(value, str):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise TunewiseError(f"{path}:{record.line}: {name}: expected a string, got {got}",
                            f"run `tunewise data check {path}` to list every problem")
    return value


def segments(record: Record, fmt: str, tokenizer, path: Path) -> list[tuple[str, bool]]:
    """[(text, takes_loss)] for one record; EOS closes every trained span."""
    eos = tokenizer.eos_token or ""
    if fmt == "prompt_completion":
        return [(_field(record, "prompt", path), False), (_field(record, "completion", path) + eos, True)]
    if fmt == "text":
        return [(_field(record, "text", path) + eos, True)]
    messages = record.data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TunewiseError(f"{path}:{record.line}: messages: expected a non-empty list of {{role, content}}",
                            f"run `tunewise data check {path}`")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in DEFAULT_ROLE_PREFIX:
            raise TunewiseError(f"{path}:{record.line}: messages[{i}]: expected role system/user/assistant and "
                                "string content", f"run `tunewise data check {path}`")
    if getattr(tokenizer, "chat_template", None):
        return _templated_chat(messages, tokenizer)
    out = []
    for m in messages:
        prefix = DEFAULT_ROLE_PREFIX[m["role"]]
        if m["role"] == "assistant":
            out += [(prefix, False), (m["content"] + eos, True), ("\n", False)]
        else:
            out.append((prefix + m["content"] + "\n", False))
    return out


def chat_generation_prompt(messages: list[dict], tokenizer) -> str:
    """The prompt that asks for the next assistant turn, rendered exactly as training rendered chat records."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = "".join(DEFAULT_ROLE_PREFIX.get(m["role"], f"<|{m['role']}|>\n") + m["content"] + "\n" for m in messages)
    return turns + DEFAULT_ROLE_PREFIX["assistant"]


def _templated_chat(messages: list[dict], tokenizer) -> list[tuple[str, bool]]:
    """Split the template's rendering into spans: an assistant turn is what its message adds to the text."""
    out, done = [], ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        after = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (before.startswith(done) and after.startswith(before)):
            raise TunewiseError("the tokenizer's chat template does not render turns as prefixes of each other",
                                "use prompt/completion records for this model")
        out += [(before[len(done):], False), (after[len(before):], True)]
        done = after
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if len(full) > len(done):
        out.append((full[len(done):], False))
    return out


def leading_special_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before plain text (e.g. [BOS]); [] for tokenizers that add none."""
    cached = getattr(tokenizer, "_tunewise_leading_ids", None)
    if cached is None:
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a", add_special_tokens=True)["input_ids"]
        cut = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
        cached = list(full[:cut])
        try:
            tokenizer._tunewise_leading_ids = cached
        except AttributeError:  # a tokenizer that refuses new attributes is simply asked again
            pass
    return cached


def prompt_ids(prompt: str | list[dict], tokenizer) -> list[int]:
    """Token ids of a generation prompt by the training rule: messages through the chat template with the
    assistant's generation prompt, plain text after the tokenizer's own leading special tokens."""
    templated = not isinstance(prompt, str) and bool(getattr(tokenizer, "chat_template", None))
    text = prompt if isinstance(prompt, str) else chat_generation_prompt(prompt, tokenizer)
    lead = [] if templated else leading_special_ids(tokenizer)  # a chat template writes its own BOS
    return lead + tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_segments(segs: list[tuple[str, bool]], tokenizer, templated: bool = False) -> tuple[list[int], list[int]]:
    """(ids, labels) of segments; plain text (not `templated` by a chat template) starts with the tokenizer's
    leading special tokens, unlabelled."""
    ids: list[int] = [] if templated else list(leading_special_ids(tokenizer))
    labels: list[int] = [IGNORE] * len(ids)
    for text, trained in segs:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def encode_record(record: Record, fmt: str, tokenizer, path: Path) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one training record, by the module's one rule."""
    templated = fmt == "chat" and bool(getattr(tokenizer, "chat_template", None))
    return tokenize_segments(segments(record, fmt, tokenizer, path), tokenizer, templated)


def load_examples(path: str | Path, tokenizer, fmt: str = "auto", max_seq_len: int = 256,
                  overlong: str = "truncate", split: str = "train", columns: dict[str, str] | None = None,
                  records: list[Record] | None = None) -> tuple[list[Example], DataStats]:
    """Tokenised examples with loss masks, and what happened to the rest (counted, never silent). `records`
    (already read, e.g. by a mix) replaces reading `path`, which then only names them in errors."""
    where = str(path) if records is not None else label(path, split)
    stats = DataStats()
    examples: list[Example] = []
    for rec in records if records is not None else read_records(path, split, columns):
        stats.records += 1
        shape, rec = normalise_record(rec, fmt, where)
        ids, labels = encode_record(rec, shape, tokenizer, Path(where))
        if len(ids) > max_seq_len:
            if overlong == "error":
                raise TunewiseError(f"{where}:{rec.line}: {len(ids)} tokens > data.max_seq_len {max_seq_len}",
                                    "raise data.max_seq_len, or set data.overlong to truncate or drop")
            if overlong == "drop":
                stats.dropped_overlong += 1
                continue
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
            stats.truncated += 1
        if all(lab == IGNORE for lab in labels[1:]):  # nothing to predict (position 0 is never a target)
            stats.dropped_no_labels += 1
            continue
        examples.append(Example(ids, labels, rec.line))
        stats.used += 1
        stats.tokens += len(ids)
        stats.label_tokens += sum(lab != IGNORE for lab in labels[1:])
    if not examples:
        raise TunewiseError(f"{where}: no usable examples (of {stats.records} records: {stats.dropped_overlong} too long, "
                            f"{stats.dropped_no_labels} with nothing to learn)",
                            "check the file with `tunewise data check`, or raise data.max_seq_len")
    return examples, stats


def load_classification(path: str | Path, tokenizer, max_seq_len: int, labels: list[str] | None = None,
                        split: str = "train", columns: dict[str, str] | None = None):
    """Sequence-classification examples: prompt (or text) -> completion (or label) as a class index."""
    where = source_label(path, split)
    rows = []
    for rec in read_records(path, split, columns):
        shape, norm = normalise_record(rec, "auto", where)
        text, label = _text_and_label(shape, norm.data)
        if not isinstance(text, str) or label is None:
            raise TunewiseError(f"{where}:{rec.line}: expected prompt/text and completion/label fields",
                                "classification data is {'prompt': text, 'completion': label}, or a "
                                "conversation whose last assistant turn is the label")
        rows.append((text, str(label).strip(), rec.line))
    label_names = labels or sorted({r[1] for r in rows})
    index = {name: i for i, name in enumerate(label_names)}
    examples, stats = [], DataStats(records=len(rows))
    for text, label, line in rows:
        if label not in index:
            raise TunewiseError(f"{path}:{line}: completion: label '{label}' is not among the training labels "
                                f"{label_names}", "add examples of it to the training file")
        ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_seq_len)["input_ids"]
        examples.append(Example(ids, [index[label]], line))
        stats.used += 1
        stats.tokens += len(ids)
    return examples, stats, label_names


def _text_and_label(shape: str, data: dict):
    """What a classifier reads and predicts: prompt -> completion, text -> label, or a conversation's turns
    before the last assistant turn -> that turn (alpaca: instruction + input -> output)."""
    if shape == "chat":
        turns = data["messages"] if isinstance(data.get("messages"), list) else []
        last = max((i for i, m in enumerate(turns) if isinstance(m, dict) and m.get("role") == "assistant"),
                   default=None)
        if last is None:
            return None, None
        text = "\n".join(str(m.get("content", "")) for m in turns[:last] if m.get("role") != "system")
        return text, turns[last].get("content")
    return data.get("prompt", data.get("text")), data.get("completion", data.get("label"))
