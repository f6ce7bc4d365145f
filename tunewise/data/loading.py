"""data.train and data.eval of a run config -> tokenised examples: one source, or a weighted mix (mix.py)."""

from __future__ import annotations

from tunewise.config import DataConfig, DataSource
from tunewise.data.formats import DataStats, Example, load_examples, read_records
from tunewise.data.mix import Part, mix
from tunewise.data.sources import label
from tunewise.errors import TunewiseError

EVAL_SPLIT = "validation"  # what data.eval reads from a dataset unless it names a split


def eval_source(d: DataConfig) -> DataSource | None:
    """data.eval with its defaults filled in (split 'validation' for a dataset, data.columns)."""
    if d.eval is None:
        return None
    src = DataSource(path=d.eval) if isinstance(d.eval, str) else d.eval
    if src.path is None:
        raise TunewiseError("data.eval takes a path (a file, a save_to_disk folder or a dataset id), not a probe",
                            "measure probes with preserve.probes")
    return src.model_copy(update={"split": src.split or EVAL_SPLIT, "columns": src.columns or d.columns})


def load_train(d: DataConfig, tokenizer, seed: int) -> tuple[list[Example], DataStats]:
    """The training examples: a single path is read whole; several sources are mixed by weight first."""
    sources = d.sources()
    if len(sources) == 1 and sources[0].path is not None:
        s = sources[0]
        return load_examples(s.path, tokenizer, d.format, d.max_seq_len, d.overlong, s.split or d.split,
                             s.columns or d.columns)
    parts = []
    for s in sources:
        if s.probe is not None:
            parts.append(Part(f"probe:{s.probe}", s.weight, [], s.probe))
        else:
            split = s.split or d.split
            parts.append(Part(label(s.path, split), s.weight,
                              list(read_records(s.path, split, s.columns or d.columns))))
    examples: list[Example] = []
    stats = DataStats()
    for (name, records), part in zip(mix(parts, seed), parts, strict=True):
        # a probe's records are in a known format; the user's follow data.format
        fmt = "auto" if part.probe else d.format
        got, st = load_examples(name, tokenizer, fmt, d.max_seq_len, d.overlong, records=records)
        for e in got:
            e.source = name
        examples += got
        for k in ("records", "used", "truncated", "dropped_overlong", "dropped_no_labels", "tokens", "label_tokens"):
            setattr(stats, k, getattr(stats, k) + getattr(st, k))
        stats.sources[name] = st.used
    return examples, stats


def load_eval(d: DataConfig, tokenizer) -> list[Example] | None:
    src = eval_source(d)
    if src is None:
        return None
    return load_examples(src.path, tokenizer, d.format, d.max_seq_len, "truncate", src.split, src.columns)[0]
