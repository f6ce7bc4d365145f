"""advise: facts -> method (rules table + memory fit) -> hyperparameters, data advice, plan and a RunConfig."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ConfigDict, Field

from tunewise.advise import rules as R
from tunewise.advise.evidence import cite
from tunewise.advise.scale import ScaleNote, measured_quality, scale_note
from tunewise.defaults import BY_MEMORY, LORA_DROPOUT, LORA_DROPOUT_WHY, default_lr, lr_evidence, lr_source
from tunewise.errors import ConfigError, TunewiseError
from tunewise.hf import context_length
from tunewise.inputs import Strict

FALLBACK = BY_MEMORY  # when the preferred method does not fit, move right along this chain


class AdviseInputError(ConfigError):
    """Every problem with advise's inputs, listed together."""

    def __init__(self, problems: list[str]):
        super().__init__(problems, hint="fix them and run again (tunewise advise --help lists every option)",
                         what="the input")


class AdviseInput(Strict):
    """advise's facts. Types are strict (YAML's `gpus: many` is a problem, not a crash); values are checked by
    `check`, which lists every problem together."""

    model_config = ConfigDict(strict=True)
    task: str | None = Field(None, description="classification, structured, style, domain, sql, code, math, logic "
                                               "or open-ended (aliases such as json accepted).")
    model: str | None = Field(None, description="Preset (llama-2-7b, ...), 'tiny', a folder, a config.json or a "
                                                "hub id.")
    gpu_mem: float | None = Field(None, description="GiB per GPU; none with device cpu = this machine's RAM.")
    gpus: int = Field(1, description="Number of GPUs (training processes).")
    device: str = Field("cuda", description="cuda (plan GPUs) or cpu (plan this machine).")
    dataset: str | None = Field(None, description="Training file (JSONL/JSON/CSV/Parquet): its size, format, "
                                                  "lengths and labels.")
    data_size: int | None = Field(None, description="Number of examples, if no file is given.")
    seq_len: int | None = Field(None, description="Sequence length; default from the dataset, else 512.")
    batch: int = Field(8, description="Micro-batch size to plan for.")
    rank: int | None = Field(None, description="Force a LoRA rank (default 16, 32 for reasoning and code).")
    continual: bool = Field(False, description="A continual / sequential adaptation pipeline.")
    multi_adapter: bool = Field(False, description="Several adapters swapped at runtime.")
    accuracy_priority: bool = Field(False, description="The last points of accuracy justify the compute.")
    time_bottleneck: bool = Field(False, description="Training time is the bottleneck.")
    long_term: bool = Field(False, description="Train once for long-term deployment.")
    quantized_inference: bool = Field(False, description="Quantised inference is planned anyway.")
    fast_iteration: bool = Field(False, description="Iterating quickly: faster experiment cycles matter.")


def canonical_task(task: str) -> str | None:
    t = task.strip().lower().replace(" ", "-")
    return t if t in R.TASKS else R.TASK_ALIASES.get(t)


def check(inp: AdviseInput) -> list[str]:
    """Every problem with the input that can be found without loading anything heavy."""
    p = []
    if not inp.task:
        p.append("task: missing; give --task (" + ", ".join(R.TASKS) + ")")
    elif canonical_task(inp.task) is None:
        close = difflib.get_close_matches(inp.task.lower(), list(R.TASKS) + list(R.TASK_ALIASES), n=1)
        p.append(f"task: unknown '{inp.task}'" + (f"; did you mean '{close[0]}'?" if close else "")
                 + f" (known: {', '.join(R.TASKS)})")
    if not inp.model:
        p.append("model: missing; give --model (a preset such as llama-2-7b, 'tiny', a folder or a hub id)")
    if inp.gpu_mem is not None and not math.isfinite(inp.gpu_mem):
        p.append(f"gpu_mem: must be a finite number of GiB per GPU (got {inp.gpu_mem})")
    elif inp.gpu_mem is not None and inp.gpu_mem <= 0:
        p.append(f"gpu_mem: must be > 0 GiB per GPU (got {inp.gpu_mem:g})")
    if inp.gpus < 1:
        p.append(f"gpus: must be >= 1 (got {inp.gpus})")
    if inp.device not in ("cuda", "cpu"):
        p.append(f"device: unknown '{inp.device}'; use cuda or cpu")
    if inp.rank is not None and inp.rank <= 0:
        p.append(f"rank: must be > 0 (got {inp.rank}); typical values are 16 or 32")
    if inp.batch <= 0:
        p.append(f"batch: must be > 0 (got {inp.batch})")
    if inp.seq_len is not None and inp.seq_len <= 0:
        p.append(f"seq_len: must be > 0 (got {inp.seq_len})")
    if inp.data_size is not None and inp.data_size <= 0:
        p.append(f"data_size: must be > 0 examples (got {inp.data_size})")
    if inp.dataset and not Path(inp.dataset).expanduser().is_file():
        p.append(f"dataset: '{inp.dataset}' does not exist (give a JSONL / JSON / CSV / Parquet file)")
    return p


# ---------------------------------------------------------------------------------------------- memory plan


@dataclass
class Plan:
    """How a method runs on the hardware: the first setting that fits, or the smallest one and why it fails."""

    method: str
    fits: bool
    batch: int
    grad_accum: int
    grad_ckpt: bool
    total_gb: float
    capacity_gb: float
    breakdown: dict = field(default_factory=dict)
    distributed: str = "ddp"  # train.distributed: fsdp only when replicating the model does not fit


def plan_method(spec, method: str, inp: AdviseInput, rank: int, seq: int, capacity_gb: float) -> Plan:
    """Try: as asked -> gradient checkpointing -> micro-batch 1 with accumulation, each first with every process
    holding the whole model (ddp) and then, on several GPUs, sharded (fsdp: full and lora). The first that fits
    wins."""
    from tunewise.estimate import EstimateRequest, breakdown_for
    from tunewise.estimate.memory import GB

    base = EstimateRequest(model=spec.name, methods=(method,), rank=rank, batch=inp.batch, seq=seq,
                           device=inp.device, gpus=inp.gpus)
    modes = ["ddp", "fsdp"] if inp.gpus > 1 and method != "qlora" else ["ddp"]
    tries = [replace(r, distributed=mode) for mode in modes for r in
             (base, replace(base, grad_ckpt=True), replace(base, grad_ckpt=True, batch=1, grad_accum=inp.batch))]
    b = None
    for req in tries:
        b = breakdown_for(spec, req, method, spec.adaptable)
        if b.total <= capacity_gb * GB * 0.95:
            return Plan(method, True, req.batch, req.grad_accum, req.grad_ckpt, b.total / GB, capacity_gb,
                        b.as_dict(), req.distributed)
    assert b is not None
    last = tries[-1]
    return Plan(method, False, last.batch, last.grad_accum, last.grad_ckpt, b.total / GB, capacity_gb, b.as_dict(),
                last.distributed)


def gpus_needed_for_full(spec, inp: AdviseInput, seq: int, capacity_gb: float) -> int | None:
    for n in (2, 4, 8, 16, 32, 64):
        p = plan_method(spec, "full", inp.model_copy(update={"gpus": n}), 16, seq, capacity_gb)
        if p.fits:
            return n
    return None


def capacity(inp: AdviseInput) -> tuple[float, str]:
    if inp.gpu_mem is not None:
        where = f"{inp.gpus} x {inp.gpu_mem:g} GiB GPU" if inp.device == "cuda" else f"{inp.gpu_mem:g} GiB RAM"
        return inp.gpu_mem, where
    import psutil

    ram = psutil.virtual_memory().total / 2**30
    return ram, f"this machine's {ram:.0f} GiB RAM (CPU, fp32)"


# ---------------------------------------------------------------------------------------------- hyperparameters


def hyperparameters(spec, method: str, task: str, facts: R.Facts, rank: int | None, data_size: int | None,
                    rank_given: bool, encoder: bool = False) -> dict[str, dict]:
    """Each value with the reason for it; `encoder`: the config trains a classifier head (its own lr band)."""
    hp: dict[str, dict] = {}
    if method != "full":
        r = rank if rank_given and rank else (32 if task in R.REASONING | {"code"} else 16)
        hp["r"] = {"value": r, "reason": "16 or 32 for most applications; higher ranks add capacity but risk "
                   "overfitting" + ("; 32 because reasoning/code needs more capacity" if r == 32 and not rank_given
                                    else "") + (" (rank given)" if rank_given else ""), "evidence": ["seed"]}
        two_r = facts.continual or task in R.REASONING
        hp["alpha"] = {"value": 2 * r if two_r else r,
                       "reason": ("alpha = 2r: fewer intruder dimensions (and Biderman's setting), which matters "
                                  "for continual or reasoning work" if two_r else
                                  "alpha = r (the seed's starting point); try 2r if training is slow to move"),
                       "evidence": ["intruders-2024", "biderman-2024"] if two_r else ["seed"]}
        hp["target_modules"] = {"value": spec.adaptable,
                                "reason": f"all linear layers of {spec.architecture} (attention and MLP), not just "
                                "attention: the original attention-only advice is outdated (~5x the adapter "
                                "parameters, still tiny)", "evidence": ["raschka-2023", "seed"]}
        hp["dropout"] = {"value": LORA_DROPOUT, "reason": LORA_DROPOUT_WHY, "evidence": ["qlora-2023", "seed"]}
    lr, why = default_lr(method, spec.total_params, encoder)
    hp["lr"] = {"value": lr, "reason": why, "evidence": lr_evidence(spec.total_params, encoder),
                "source": lr_source(spec.total_params, encoder)}
    large = data_size is not None and data_size > 50_000
    hp["epochs"] = {"value": 1 if large else 3,
                    "reason": "beyond 3 epochs returns diminish and multi-epoch training on a static set can "
                    "degrade performance" + ("; one pass over a set this large" if large else ""),
                    "evidence": ["raschka-2023", "seed"]}
    hp["watch"] = {"value": "train loss < 0.2",
                   "reason": "the seed reads a training loss below 0.2 as overfitting; tunewise's study found it "
                   "loose (the eval loss kept falling after it; a copy-heavy task reaches it within a few "
                   "steps): the overfit guard (0.2) warns, and the eval loss decides",
                   "evidence": ["raschka-2023", "seed"]}
    return hp


# ---------------------------------------------------------------------------------------------- the advice


@dataclass
class Advice:
    inputs: dict
    method: str | None
    preferred: str
    scores: dict[str, float]
    reasons: list[dict]
    counter_reasons: list[dict]
    warnings: list[str]
    plans: dict[str, Plan]
    decision: str
    hyperparameters: dict
    data: dict | None
    graduation: list[str]
    config: dict | None
    automatic: list[str]
    scale_notes: list[ScaleNote] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"method": self.method, "preferred": self.preferred, "decision": self.decision,
                "scores": self.scores, "reasons": self.reasons, "counter_reasons": self.counter_reasons,
                "warnings": self.warnings, "hyperparameters": self.hyperparameters,
                "estimates": {m: {"fits": p.fits, "total_gib": round(p.total_gb, 2), "capacity_gib": p.capacity_gb,
                                  "batch": p.batch, "grad_accum": p.grad_accum, "gradient_checkpointing": p.grad_ckpt,
                                  "distributed": p.distributed if self.inputs.get("gpus", 1) > 1 else None,
                                  "breakdown_mib": p.breakdown.get("terms_mb", {})}
                              for m, p in self.plans.items()},
                "data": self.data, "graduation": self.graduation, "config": self.config,
                "scale_notes": [n.as_dict() for n in self.scale_notes],
                "automatic_decisions": self.automatic, "inputs": self.inputs}


def _rule_entry(rule: R.Rule, method: str) -> dict:
    return {"rule": rule.id, "condition": rule.condition, "weight": rule.votes.get(method, 0.0),
            "reason": rule.reason, "evidence": cite(rule.evidence)}


def choose(preferred: str, plans: dict[str, Plan]) -> str | None:
    for m in FALLBACK[FALLBACK.index(preferred):]:
        if plans[m].fits:
            return m
    return None


def advise(inp: AdviseInput) -> Advice:
    """The whole recommendation; raises AdviseInputError listing every input problem together."""
    spec, data = _read_model_and_data(inp)
    task = canonical_task(inp.task) or inp.task
    automatic: list[str] = []
    facts = R.Facts(task, inp.continual, inp.multi_adapter, inp.accuracy_priority, inp.time_bottleneck,
                    inp.long_term, inp.quantized_inference, inp.fast_iteration)
    fired = R.fired(facts)
    notes = [n for r in fired if (n := scale_note(r.id, r.evidence, spec.total_params)) is not None]
    set_aside = frozenset(n.rule for n in notes if n.sets_aside)
    scores = R.scores(facts, set_aside)
    pref = R.preferred(facts, set_aside)

    n_data = data.records if data else inp.data_size
    seq = inp.seq_len or _seq_from_data(spec, data, automatic)
    cap, where = capacity(inp)
    if inp.gpu_mem is None:
        automatic.append(f"no --gpu-mem: planning for {where}")
    rank_for_plan = inp.rank or (32 if task in R.REASONING | {"code"} else 16)
    plans = {m: plan_method(spec, m, inp, rank_for_plan, seq, cap) for m in FALLBACK}
    method = choose(pref, plans)

    chosen = method or pref
    reasons, counter = _reasons([r for r in fired if r.id not in set_aside], chosen, pref, where)
    reasons += [dict(_rule_entry(r, chosen), weight=0.0, reason=f"(set aside at your model's scale) {r.reason}")
                for r in fired if r.id in set_aside]  # shown beside the measurement that contradicts it
    warnings: list[str] = []
    max_pos = context_length(spec.config)
    if inp.seq_len and max_pos is not None and inp.seq_len > max_pos:
        warnings.append(f"WARNING: --seq-len {inp.seq_len} is beyond the model's context of {max_pos} tokens; "
                        "the plan is for sequences it cannot take (training truncates to data.max_seq_len)")
    decision = _decision_text(pref, method, plans, where, spec, inp, seq, cap, warnings)
    warnings += _method_warnings(method, inp, task, notes)
    hp = hyperparameters(spec, method or pref, task, facts, inp.rank, n_data, inp.rank is not None,
                         _classifier(spec, task, data))
    chosen_plan = plans[method] if method else None
    data_out = _data_advice(data, inp.data_size)
    config = _config(spec, inp, method, hp, chosen_plan, seq, data, task) if method else None
    if config is not None and data is None:
        automatic.append("data.train in the written config is a placeholder (train.jsonl): point it at your data")
    return Advice(inputs=_inputs_dict(inp, task), method=method, preferred=pref, scores=scores, reasons=reasons,
                  counter_reasons=counter, warnings=warnings, plans=plans, decision=decision, hyperparameters=hp,
                  data=data_out, graduation=_graduation(chosen), config=config, automatic=automatic,
                  scale_notes=notes)


def _read_model_and_data(inp: AdviseInput):
    """The model's spec and the dataset's facts; every problem with the inputs raised together."""
    from tunewise.estimate import load_spec

    problems = check(inp)
    spec = None
    if inp.model:
        try:
            spec = load_spec(inp.model)
        except TunewiseError as e:
            problems.append(f"model: {e.message}" + (f" ({e.hint})" if e.hint else ""))
    data = None
    if inp.dataset and not any(x.startswith("dataset:") for x in problems):
        from tunewise.advise.data import read

        try:
            data = read(inp.dataset, tokenizer=(spec.hub_id or inp.model) if spec is not None else None)
        except (TunewiseError, ValueError, OSError) as e:
            problems.append(f"dataset: {getattr(e, 'message', e)}")
    if problems:
        raise AdviseInputError(problems)
    assert spec is not None and inp.task
    return spec, data


def _reasons(fired: list[R.Rule], chosen: str, pref: str, where: str) -> tuple[list[dict], list[dict]]:
    """The fired rules for the chosen method (and, when memory moved the choice, for the preferred one), and
    those against it or for another method."""
    reasons = [_rule_entry(r, chosen) for r in fired if r.votes.get(chosen, 0) > 0]
    if chosen != pref:
        # the rules' verdict still stands (an adapter method for this job); memory moved it along the chain
        reasons += [dict(_rule_entry(r, pref), reason=f"(for {pref}) {r.reason}") for r in fired
                    if r.votes.get(pref, 0) > 0 and r.votes.get(chosen, 0) >= 0]
        reasons.append({"rule": "memory-fit", "condition": "the preferred method does not fit the memory",
                        "weight": 0.0, "reason": f"{pref} does not fit on {where}; {chosen} is next in the "
                        "full -> LoRA -> QLoRA chain and fits" + (" (QLoRA: ~33% less memory for ~39% longer "
                        "training)" if chosen == "qlora" else ""),
                        "evidence": cite(("qlora-2023", "raschka-2023") if chosen == "qlora" else ("seed",))})
    counter = [_rule_entry(r, chosen) for r in fired if r.votes.get(chosen, 0) < 0]
    counter += [{"rule": r.id, "condition": r.condition, "weight": w, "for": m, "reason": r.reason,
                 "evidence": cite(r.evidence)}
                for r in fired for m, w in r.votes.items()
                if m not in (chosen, pref) and w > 0 and r.id != "start-with-lora"]
    return reasons, counter


def _continual_warning(notes: list[ScaleNote]) -> str:
    """Why LoRA is a risk in a continual pipeline, from the evidence nearest the user's model: the published
    mechanism (intruder dimensions piling up) at 7B, our measurement where it is nearer (at 135M LoRA forgot
    structured faster with no intruders at any stage: an intruder count would not have warned)."""
    note = next((n for n in notes if n.rule == "continual-pipeline"), None)
    if note is not None and note.ours_nearest:
        why = (f"the measurement nearest your model's scale is ours ({note.measured}; {note.measured_call}): "
               "watch each earlier task's forgetting, and do not take a low intruder count as safe.")
    else:
        why = "intruder dimensions accumulate with every sequential fine-tune and degrade earlier tasks faster " \
              "than full fine-tuning."
    return (f"WARNING: a continual pipeline with LoRA: {why} Measure forgetting after each stage "
            "(tunewise continual / tunewise analyze) and move to full fine-tuning when the hardware allows.")


def _method_warnings(method: str | None, inp: AdviseInput, task: str, notes: list[ScaleNote]) -> list[str]:
    warnings = []
    if method is not None and method != "full" and inp.continual:
        warnings.append(_continual_warning(notes))
    if method is not None and method != "full" and task in R.REASONING:
        warnings.append(f"{R.TASKS[task]} with {method}: expect a gap to full fine-tuning (GSM8k at 7B/13B); "
                        "follow the graduation plan below.")
    if method == "qlora" and inp.time_bottleneck:
        warnings.append("QLoRA is the only method that fits, but training time is your bottleneck: it trains "
                        "~39% longer than LoRA. A larger card or a smaller model would avoid it.")
    return warnings


def _graduation(chosen: str) -> list[str]:
    return [
        f"Start with {dict(lora='LoRA', qlora='QLoRA', full='full fine-tuning')[chosen]} using the settings above"
        + (" (the seed: start with LoRA; here the rules point to full fine-tuning)." if chosen == "full" else "."),
        "Run `tunewise compare` (LoRA vs full, or several ranks) on a held-out set, with retention probes for the "
        "skills you must keep.",
        "Tune lr and rank first; if LoRA still trails full fine-tuning on a reasoning-heavy task, graduate to full "
        "fine-tuning for that task only.",
        "Keep LoRA wherever it matched: you save the compute and know which capabilities needed the full "
        "treatment.",
    ]


def _inputs_dict(inp: AdviseInput, task: str) -> dict:
    d = inp.model_dump()
    d["task"] = task
    return d


def _decision_text(pref: str, method: str | None, plans: dict[str, Plan], where: str, spec, inp: AdviseInput,
                   seq: int, cap: float, warnings: list[str]) -> str:
    p = plans[pref]
    if method == pref:
        how = "as set up" if not p.grad_ckpt else (
            "with gradient checkpointing" + (f", micro-batch 1 x {p.grad_accum} accumulation" if p.batch == 1 and
                                             inp.batch > 1 else ""))
        if p.distributed == "fsdp":
            how += f"; sharded over the {inp.gpus} GPUs with train.distributed: fsdp"
        return f"{pref} is preferred and fits on {where} ({p.total_gb:.1f} of {cap:g} GiB, {how})."
    skipped = [m for m in FALLBACK[FALLBACK.index(pref):] if m != method and not plans[m].fits]
    why = "; ".join(f"{m} needs {plans[m].total_gb:.1f} GiB even at micro-batch 1 with checkpointing" for m in skipped)
    if method is not None:
        return f"{pref} is preferred but does not fit on {where} ({why}); falling back to {method} " \
               f"({plans[method].total_gb:.1f} GiB)."
    n = gpus_needed_for_full(spec, inp.model_copy(update={"device": "cuda"}), seq, cap) if inp.device == "cuda" else None
    fsdp = f"train.distributed: fsdp over {n} GPUs of {cap:g} GiB" if n else "FSDP over many more GPUs"
    return (f"does not fit: {why} on {where}. Options: a smaller model, gradient checkpointing with shorter "
            f"sequences (now {seq}), or {fsdp} for full fine-tuning.")


def _seq_from_data(spec, data, automatic: list[str]) -> int:
    max_pos = context_length(spec.config) or 4096
    if not data or not data.lengths_chars:
        seq = min(512, max_pos)
        automatic.append(f"sequence length {seq} (no dataset to measure; give --seq-len)")
        return seq
    from tunewise.advise.data import sequence_length

    seq, why = sequence_length(data, max_pos)  # in tokens with the model's tokenizer when it loads
    automatic.append(why)
    return seq


def _data_advice(data, size: int | None) -> dict | None:
    from tunewise.advise.data import size_advice

    n = data.records if data else size
    if n is None:
        return None
    out = {"records": n, "size": size_advice(n),
           "preserve": "Include representative examples of skills you want to keep (e.g. arithmetic, general "
                       "text): models unlearn capabilities the fine-tuning data does not exercise."}
    quality = measured_quality()
    if quality is not None:
        out["quality"] = quality
    if data:
        out.update({"path": data.path, "format": data.format, "duplicates": data.duplicates})
        if data.duplicates:
            out["duplicates_advice"] = f"{data.duplicates} exact duplicate(s): remove them (tunewise data check)."
        if data.format == "unknown":
            out["format_advice"] = "records need prompt/completion, messages or text keys"
    return out


def _classifier(spec, task: str, data) -> bool:
    """The written config trains a sequence classifier: an encoder base, a classification task, labelled data."""
    return not spec.architecture.endswith("ForCausalLM") and task == "classification" and bool(data and data.labels)


def _config(spec, inp: AdviseInput, method: str, hp: dict, plan: Plan, seq: int, data, task: str) -> dict:
    """A RunConfig dict for `tunewise train` with the choices above (validated by the caller's test)."""
    from tunewise.models import ALIASES

    base = spec.hub_id or inp.model
    if inp.model in ALIASES:
        base = inp.model
    cfg: dict = {"base": base, "method": method,
                 "data": {"train": data.path if data else "train.jsonl", "max_seq_len": seq},
                 "train": {"epochs": hp["epochs"]["value"], "lr": hp["lr"]["value"], "batch_size": plan.batch,
                           "grad_accum": plan.grad_accum, "gradient_checkpointing": plan.grad_ckpt,
                           **({"distributed": "fsdp"} if plan.distributed == "fsdp" else {})},
                 "guards": {"overfit_loss": 0.2, "max_epochs": 3}}
    if _classifier(spec, task, data):
        cfg["task_type"] = "sequence-classification"
        cfg["num_labels"] = data.labels
    if method != "full":
        cfg["lora"] = {"r": hp["r"]["value"], "alpha": hp["alpha"]["value"], "dropout": hp["dropout"]["value"],
                       "target_modules": list(hp["target_modules"]["value"])}
    return cfg
