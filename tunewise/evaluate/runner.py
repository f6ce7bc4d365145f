"""`tunewise eval` as a library: what to evaluate on, how to score it, which model, and the results.

    spec = resolve_data(data="data/sql", task=None, run_dir=None)      # examples + scorer + generation settings
    loaded = load_target("runs/sql-lora")                              # causal LM or sequence classifier
    result = evaluate(loaded, spec)                                    # metrics + per-example predictions

Model output never raises: each example is right or wrong, with the reason. Input the user controls (a missing
file, a test record without the fields the scorer needs) is reported per example or, when nothing usable
remains, as one TunewiseError naming the file and what to do.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunewise.data.formats import prompt_ids
from tunewise.data.records import RecordError, normalise
from tunewise.data.sources import iter_source, kind_of, label
from tunewise.errors import TunewiseError
from tunewise.evaluate.generation import GENERATE_ROWS, greedy_generate
from tunewise.evaluate.loglik import choice_logprobs
from tunewise.evaluate.retention import retention_change, run_probes
from tunewise.hf import context_length
from tunewise.models import load_base, load_config, load_resolved, target_tokenizer
from tunewise.rundir import RunDir
from tunewise.targets import resolve_target
from tunewise.tasks import format_for_tokenizer, get_task, make_task
from tunewise.tasks.base import META_FILE, read_meta
from tunewise.tasks.scorers import Scored, Scorer, aggregate, is_custom, make_scorer

DEFAULT_STOP = ["\n"]
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class Item:
    """One test example; `error` is set when the record itself is unusable (it then counts as wrong)."""

    index: int
    prompt: str | list[dict]  # text, or chat messages up to the assistant turn to predict
    reference: str
    choices: list[str] | None = None
    error: str | None = None


@dataclass
class EvalSpec:
    source: str  # what was evaluated on, for the report
    items: list[Item]
    scorer_name: str
    scorer_options: dict[str, Any] = field(default_factory=dict)
    base_dir: Path | None = None  # where relative paths in scorer_options are read from
    stop: list[str] = field(default_factory=lambda: list(DEFAULT_STOP))
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    task: str | None = None
    labels: list[str] | None = None

    def scorer(self) -> Scorer:
        return make_scorer(self.scorer_name, self.scorer_options, self.base_dir)


# ---------------------------------------------------------------------------------------------- test data

_REF_KEYS = ("completion", "label", "answer", "output")  # a text record's reference, e.g. {"text", "label"}


def _chat_item(index: int, messages: Any, where: str) -> Item:
    """A chat record: the conversation up to its last assistant turn is the prompt, that turn the reference."""
    ok = isinstance(messages, list) and len(messages) >= 2 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages)
    if not ok or messages[-1]["role"] != "assistant":
        return Item(index, "", "", error=f"{where}: messages: expected a list of {{role, content}} ending with "
                                         "the assistant turn to predict")
    return Item(index, [dict(m) for m in messages[:-1]], messages[-1]["content"])


def _item_from_record(index: int, rec: Any, where: str) -> Item:
    """A test item from a record of any training format (records.py's one rule): chat formats (messages,
    sharegpt, alpaca) are asked as chat, prompt/completion as text; a text record needs a 'label' to score."""
    if not isinstance(rec, dict):
        return Item(index, "", "", error=f"{where}: expected a JSON object, got {type(rec).__name__}")
    try:
        _, shape, norm = normalise(rec)
    except RecordError as e:
        return Item(index, "", "", error=f"{where}: {e.message}" if e.field == "(record)" else
                    f"{where}: {e.field}: {e.message}")
    if shape == "chat":
        return _chat_item(index, norm["messages"], where)
    key = "prompt" if shape == "prompt_completion" else "text"
    prompt = norm.get(key)
    ref = next((norm[k] for k in _REF_KEYS if norm.get(k) is not None), None)
    if not isinstance(prompt, str):
        return Item(index, "", "" if ref is None else str(ref), error=f"{where}: {key}: expected a string")
    if ref is None:
        what = "completion" if shape == "prompt_completion" else "label"
        return Item(index, prompt, "", error=f"{where}: {what}: missing (the reference to score against)")
    if not isinstance(ref, str):
        ref = json.dumps(ref) if isinstance(ref, (dict, list)) else str(ref)
    choices = rec.get("choices")
    if choices is not None and not (isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)):
        return Item(index, prompt, ref, error=f"{where}: 'choices' must be a non-empty list of strings")
    return Item(index, prompt, ref, choices)


def read_items(path: Path, limit: int | None = None, split: str = "test") -> list[Item]:
    """Test records from any data source the trainer reads (sources.py: files, a save_to_disk folder, a hub
    dataset's `split`); bad records become Items with an error, not an exception."""
    try:
        kind_of(path)
    except TunewiseError as e:
        raise TunewiseError(f"test {e.message}", "pass --data with a data file, a dataset or a task directory") from None
    where = label(path, split)
    items: list[Item] = []
    for row in iter_source(path, split):
        if limit and len(items) >= limit:
            break
        at = f"{where}:{row.line}"
        if row.problem is not None:
            items.append(Item(len(items), "", "", error=f"{at}: {row.problem}"))
            continue
        items.append(_item_from_record(len(items), row.obj, at))
    if not items:
        raise TunewiseError(f"'{path}' has no test records", "add JSONL lines with 'prompt' and 'completion'")
    if all(it.error for it in items):
        raise TunewiseError(f"no usable record in '{path}': {items[0].error}",
                            "each record needs a format the trainer reads (e.g. 'prompt' and 'completion')")
    return items


def _spec_from_meta(meta: dict[str, Any], items: list[Item], source: str, base_dir: Path) -> EvalSpec:
    return EvalSpec(source, items, meta.get("scorer", "exact"), dict(meta.get("scorer_options", {})), base_dir,
                    list(meta.get("stop", DEFAULT_STOP)), int(meta.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                    meta.get("task"), meta.get("labels"))


def _from_path(path: Path, split: str, limit: int | None) -> EvalSpec:
    if path.is_dir() and not (path / META_FILE).is_file():
        try:
            kind_of(path)  # a save_to_disk folder is test data; any other folder is a mistake
        except TunewiseError:
            raise TunewiseError(f"'{path}' is a directory without {META_FILE}", "pass a task directory from "
                                "`tunewise tasks make`, a save_to_disk folder or a data file") from None
        return EvalSpec(f"{path}[{split}]", read_items(path, limit, split), "exact", base_dir=path)
    if path.is_dir():
        meta = read_meta(path)
        if meta is None:
            raise TunewiseError(f"'{path}' is a directory without {META_FILE}",
                                "pass a task directory from `tunewise tasks make`, or a JSONL file")
        file = path / meta.get("files", {}).get(split, f"{split}.jsonl")
        return _spec_from_meta(meta, read_items(file, limit), str(file), path)
    meta = read_meta(path) if path.exists() else None
    items = read_items(path, limit, split)
    if meta is not None:
        return _spec_from_meta(meta, items, str(path), path.parent)
    return EvalSpec(str(path), items, "exact", base_dir=path.parent)


def _task_dir_of_run(run_dir: Path) -> Path | None:
    """The task directory a run was trained on (its data.train sits next to a meta.json)."""
    train = RunDir(run_dir).config().data.train
    if isinstance(train, list):  # a mix: its first file source
        train = next((s.path for s in train if s.path), None)
    if not train:
        return None
    d = Path(train).parent
    return d if (d / META_FILE).is_file() else None


def resolve_data(data: str | None = None, task: str | None = None, run_dir: Path | None = None,
                 split: str = "test", limit: int | None = None, seed: int = 0,
                 workdir: Path | None = None, task_format: str = "prompt_completion") -> EvalSpec:
    """Find the test set and its scoring: --data (task dir or file), else --task (generated in `task_format`:
    see `task_format_of`), else the run's."""
    if data:
        spec = _from_path(Path(data).expanduser(), split, limit)
        if task and spec.task is None:  # a plain JSONL scored the way a built-in task is
            t = get_task(task)
            spec.scorer_name, spec.scorer_options = t.scorer, {**t.scorer_options, **spec.scorer_options}
            spec.stop, spec.max_new_tokens, spec.task = list(t.stop), t.max_new_tokens, t.name
        return spec
    if task:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"tunewise-{task}-"))
            atexit.register(shutil.rmtree, workdir, True)  # the sql scorer reads db.sqlite until the end
        out = Path(workdir)
        sizes = {"train": 0, "validation": 0, "test": 0, split: limit or 200}
        make_task(task, out, sizes, seed, task_format)
        spec = _from_path(out, split, limit)
        spec.source = f"built-in {task}, {split} split (seed {seed})"
        return spec
    if run_dir is not None:
        d = _task_dir_of_run(run_dir)
        if d is not None:
            return _from_path(d, split, limit)
    raise TunewiseError("nothing to evaluate on", "pass --data FILE_OR_TASK_DIR or --task NAME "
                        "(structured, classify, sql, math)")


def apply_overrides(spec: EvalSpec, scorer: str | None = None, db: str | None = None, schema: str | None = None,
                    stop: list[str] | None = None, max_new_tokens: int | None = None,
                    labels: list[str] | None = None) -> EvalSpec:
    """Flags win over the task's metadata; paths given on the command line are read from the cwd."""
    if scorer:
        spec.scorer_name = scorer
    if db:
        spec.scorer_options["db"] = str(Path(db).expanduser().resolve())
    if schema:
        spec.scorer_options["schema"] = str(Path(schema).expanduser().resolve())
    if labels:
        spec.labels = labels
        spec.scorer_options["labels"] = labels
    if stop is not None:
        spec.stop = stop
    if max_new_tokens:
        spec.max_new_tokens = max_new_tokens
    return spec


# ---------------------------------------------------------------------------------------------- models

@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    kind: str  # "causal" | "classifier"
    name: str
    base: str | None = None  # the base the target was tuned from (None when the target is a base)
    tuned_kind: str | None = None  # "adapter" | "full" | None
    labels: list[str] | None = None  # a classifier's class names, by id


def _saved_labels(path: Path) -> list[str] | None:
    f = path / "labels.json"
    if f.is_file():
        labels = json.loads(f.read_text())
        return [str(x) for x in labels] if isinstance(labels, list) else None
    return None


def load_target(target: str, base: str | None = None, labels: list[str] | None = None,
                device: str | None = None) -> Loaded:
    """A base ('tiny', a folder, a hub id), a run directory, a PEFT adapter folder or a full model folder."""
    t = resolve_target(target, base)
    if t.classifier:
        return _load_classifier(t, labels, device)
    if not t.is_tuned:  # an alias, a hub id or a model folder: scored as a base
        _refuse_bare_encoder(target)
        model, tok = load_resolved(t, device=device)
        return Loaded(model, tok, "causal", target)
    model, tok = load_resolved(t, device=device)
    return Loaded(model, tok, "causal", target, t.base, t.weights)


def _refuse_bare_encoder(target: str) -> None:
    """A bare encoder (e.g. MiniLM's BertModel) has no LM head and no trained classifier: nothing to score."""
    cfg = load_config(target)
    archs = getattr(cfg, "architectures", None) or []
    if getattr(cfg, "is_encoder_decoder", False) or not archs:
        return
    if not getattr(cfg, "is_decoder", False) and all(a.endswith("Model") and "LMHead" not in a for a in archs):
        raise TunewiseError(f"'{target}' is a bare encoder ({archs[0]}): it neither generates text nor has a "
                            "trained classification head", "fine-tune it for sequence classification "
                            "(task_type: sequence-classification) and evaluate the run directory")


def task_format_of(target: str, base: str | None = None) -> str:
    """How a built-in task is asked of this target: chat when its tokenizer has a chat template (as `compare`
    writes the task for training), prompt/completion otherwise."""
    return format_for_tokenizer(target_tokenizer(resolve_target(target, base)))


def _load_classifier(ref, labels: list[str] | None, device: str | None) -> Loaded:
    """A sequence classifier (a tunewise.targets.Target): a full model folder, or an adapter on its base."""
    names = _saved_labels(ref.path) or labels
    if ref.is_adapter and not names:
        raise TunewiseError(f"cannot tell how many classes the adapter in '{ref.path}' has",
                            "pass --labels a,b,c (in the order the training used)")
    model, tok = load_resolved(ref, num_labels=len(names) if names else None, device=device)
    if names is None:
        id2label = getattr(model.config, "id2label", None) or {}
        names = [str(id2label[i]) for i in sorted(id2label)]
    return Loaded(model, tok, "classifier", str(ref.path), ref.base, ref.weights, names)


# ---------------------------------------------------------------------------------------------- evaluation

@dataclass
class EvalResult:
    target: str
    source: str
    task: str | None
    scorer: str
    mode: str
    n: int
    metrics: dict[str, float]
    primary: str
    invalid_records: int
    wall_time_s: float
    predictions: list[dict[str, Any]]
    retention: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)  # what makes the score mean less than it seems

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "predictions"}
        out["score"] = self.metrics.get(self.primary)
        return out


def _label_choices(spec: EvalSpec, item: Item) -> list[str] | None:
    if item.choices:
        return item.choices
    if spec.labels:
        # Completions start with a space (the trainer's convention), so the choices do too.
        return [x if x.startswith(" ") else f" {x}" for x in spec.labels]
    return None


def predict(loaded: Loaded, spec: EvalSpec, mode: str = "generate", batch_size: int = GENERATE_ROWS,
            progress: bool = False) -> list[str | None]:
    """One prediction per usable item (None for items with a record error)."""
    usable = [it for it in spec.items if it.error is None]
    if loaded.kind == "classifier":
        texts = classify_batch(loaded, [it.prompt for it in usable], batch_size)
    elif mode == "loglik":
        texts = []
        for it in usable:
            choices = _label_choices(spec, it)
            if not choices:
                raise TunewiseError("--mode loglik needs choices: a 'choices' list per record or --labels",
                                    "add choices, pass --labels a,b,c, or use --mode generate")
            lp = choice_logprobs(loaded.model, loaded.tokenizer, it.prompt, choices)
            texts.append(choices[max(range(len(lp)), key=lp.__getitem__)])
    else:
        texts = greedy_generate(loaded.model, loaded.tokenizer, [it.prompt for it in usable],
                                max_new_tokens=spec.max_new_tokens, stop=spec.stop, batch_size=batch_size,
                                progress="scoring" if progress else None)
    by_index = {it.index: t for it, t in zip(usable, texts, strict=True)}
    return [by_index.get(it.index) for it in spec.items]


def context_overflow(loaded: Loaded, spec: EvalSpec, mode: str = "generate") -> str | None:
    """A note when some prompts, with the generation budget, do not fit the model's context: positions past
    it are ones the model never saw (garbage or an error), so their scores say little."""
    max_pos = context_length(getattr(loaded.model, "config", None))
    if loaded.kind == "classifier" or mode != "generate" or max_pos is None:
        return None
    usable = [it for it in spec.items if it.error is None]
    over = [it.index for it in usable if len(prompt_ids(it.prompt, loaded.tokenizer)) + spec.max_new_tokens > max_pos]
    if not over:
        return None
    return (f"{len(over)} of {len(usable)} prompts plus --max-new-tokens {spec.max_new_tokens} exceed the model's "
            f"context of {max_pos} tokens (the first is record {over[0] + 1}); their predictions run past what the "
            "model was trained on: shorten them or lower --max-new-tokens")


def classify_batch(loaded: Loaded, texts: list[str], batch_size: int = 32) -> list[str]:
    """Argmax class names of a sequence classifier (config.id2label, or the run's labels.json)."""
    model, tok = loaded.model, loaded.tokenizer
    model.eval()
    device = next(model.parameters()).device
    names = loaded.labels or []
    out: list[str] = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i: i + batch_size], return_tensors="pt", padding=True, truncation=True).to(device)
            ids = model(**enc).logits.argmax(-1).tolist()
            out.extend(names[k] if k < len(names) else f"LABEL_{k}" for k in ids)
    return out


def score_items(spec: EvalSpec, predictions: list[str | None]) -> tuple[list[Scored], dict[str, float], str]:
    scorer = spec.scorer()
    scored = []
    for it, pred in zip(spec.items, predictions, strict=True):
        if it.error is not None or pred is None:
            scored.append(Scored(False, it.error or "no prediction"))
            continue
        try:
            scored.append(scorer.score(pred, it.reference))
        except Exception as e:  # a scorer bug on odd output must cost one example, not the run
            scored.append(Scored(False, f"scorer error: {type(e).__name__}: {e}"))
    metrics = aggregate(scorer, scored, [it.reference for it in spec.items])
    return scored, metrics, scorer.primary


def evaluate(loaded: Loaded, spec: EvalSpec, mode: str = "generate", batch_size: int = GENERATE_ROWS) -> EvalResult:
    t0 = time.time()
    if loaded.kind == "classifier" and spec.scorer_name not in ("classify", "exact", "normalized") \
            and not is_custom(spec.scorer_name):
        raise TunewiseError(f"a sequence classifier predicts labels; the '{spec.scorer_name}' scorer does not fit",
                            "evaluate it on classification data (--scorer classify)")
    if loaded.kind == "classifier":
        mode = "classifier"
    preds = predict(loaded, spec, mode, batch_size, progress=True)
    scored, metrics, primary = score_items(spec, preds)
    rows = []
    for it, pred, s in zip(spec.items, preds, scored, strict=True):
        rows.append({"index": it.index, "prompt": it.prompt, "reference": it.reference, "prediction": pred,
                     **s.record()})
    note = stop_cut_note(loaded, spec, preds, batch_size) if mode == "generate" else None
    return EvalResult(loaded.name, spec.source, spec.task, spec.scorer_name, mode, len(spec.items), metrics,
                      primary, sum(1 for it in spec.items if it.error), round(time.time() - t0, 2), rows,
                      warnings=[note] if note else [])


def stop_cut_note(loaded: Loaded, spec: EvalSpec, preds: list[str | None], batch_size: int = GENERATE_ROWS,
                  sample: int = 4) -> str | None:
    """A warning when the stop strings cut most answers to (nearly) nothing -- e.g. a newline stop leaving an
    untuned model's 'JSON:' of 'JSON:\\n{...}' -- so the score measures where the model puts its first stop
    string, not the task. Confirmed by generating a few of those prompts again without stop strings."""
    pairs = [(it, p) for it, p in zip(spec.items, preds, strict=True) if it.error is None and p is not None]
    short = [(it, p) for it, p in pairs if len(p.strip()) < 0.5 * len(it.reference.strip())]
    if not spec.stop or loaded.kind != "causal" or len(short) * 2 <= len(pairs):
        return None
    picked = short[:sample]
    full = greedy_generate(loaded.model, loaded.tokenizer, [it.prompt for it, _ in picked],
                           max_new_tokens=spec.max_new_tokens, stop=None, batch_size=batch_size)
    cut = [(p, f) for (_, p), f in zip(picked, full, strict=True)
           if len(f.strip()) > len(p.strip()) and any(s and s in f for s in spec.stop)]
    if not cut:
        return None
    p, f = cut[0]
    return (f"{len(short)} of {len(pairs)} answers are (nearly) empty because generation stops at "
            f"{', '.join(map(repr, spec.stop))}: e.g. {p.strip()[:30]!r} where the model went on {f.strip()[:60]!r}; "
            "the score measures where the model puts that string, not the task: pass --stop with what your "
            "answers end with (a blank line, in bash: --stop $'\\n\\n'), or prompt so that the answer comes first")


def preserve(loaded: Loaded, probes: list[str], limit: int, base: str | None = None,
             batch_size: int = GENERATE_ROWS) -> dict[str, Any]:
    """Probes on the base and on the tuned model; {"base", "tuned", "change"}.

    An adapter's base is the same model with the adapter switched off (no second load); a full fine-tune's
    base is loaded from the run's config (or --base).
    """
    if loaded.kind != "causal":
        raise TunewiseError("retention probes need a causal language model", "drop --preserve for classifiers")
    base_name = base or loaded.base
    if loaded.tuned_kind is None:
        raise TunewiseError(f"'{loaded.name}' is a base model, so there is nothing to compare it with",
                            "give a run directory, an adapter or a fine-tuned model folder")
    # The base first: probes built for a base (knowledge, kl) are built from it.
    if loaded.tuned_kind == "adapter" and base is None:
        with loaded.model.disable_adapter():
            before = run_probes(loaded.model, loaded.tokenizer, probes, limit, batch_size, base_name, is_base=True)
    else:
        if not base_name or Path(str(base_name)).resolve() == Path(loaded.name).resolve():
            raise TunewiseError(f"the base of '{loaded.name}' is not known", "pass --base NAME_OR_FOLDER")
        bmodel, btok = load_base(base_name)
        before = run_probes(bmodel, btok, probes, limit, batch_size, base_name, is_base=True)
        del bmodel
    tuned = run_probes(loaded.model, loaded.tokenizer, probes, limit, batch_size, base_name)
    change = {name: c.as_dict() for name, c in retention_change(before, tuned).items()}  # JSON: eval writes it
    return {"base": before, "tuned": tuned, "change": change, "base_name": base_name}
