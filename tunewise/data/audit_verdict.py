"""Dataset-level findings and the overall verdict, in the seed's terms.

The seed: "Dataset quality matters more than size here. 1,000 curated examples (the LIMA approach) can outperform
50,000 noisier examples. LoRA's limited capacity means garbage in, garbage out hits faster than full fine-tuning.
[...] models can 'unlearn' capabilities not represented in fine-tuning data [...] Include representative examples
of skills you want to preserve."
"""

from __future__ import annotations

from typing import Any

from tunewise.data.mix import MIXABLE_PROBES, mix_config_line

MIN_EXAMPLES = 300
CURATED_SIZE = 1000
JUNK_LIMIT = 0.10
NEAR_WARN = 0.01
IMBALANCE_WARN = 10.0
FEW_SKILL = 0.01


def _f(severity: str, check: str, message: str) -> dict:
    return {"severity": severity, "check": check, "message": message}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _eg(pairs: list, pattern: str) -> str:
    """' (e.g. line 12 = line 3)' from the first [a, b, ...] example, or '' when there is none."""
    return f" (e.g. {pattern.format(*pairs[0][:2])})" if pairs else ""


def findings(r: dict, opts: Any) -> list[dict]:
    out: list[dict] = []
    n = r["records"]["valid"]
    total = max(n + r["records"]["invalid"], 1)
    if r["schema"]["errors"]:
        out.append(_f("error", "schema", f"{r['schema']['errors']} schema error(s) in {r['records']['invalid']} "
                                         "record(s); the trainer refuses them (fix them, or --fix OUT.jsonl drops "
                                         "them)"))
    if len(r["records"]["shapes"]) > 1:
        out.append(_f("warning", "schema", f"mixed record shapes {r['records']['shapes']}; use one shape per file"))
    d = r["duplicates"]
    if d["exact"]:
        out.append(_f("warning", "duplicates", f"{d['exact']} exact duplicate(s) ({_pct(d['exact'] / total)})"
                                               f"{_eg(d['exact_examples'], 'line {} = line {}')}; they weight "
                                               "some examples several times (--fix drops them)"))
    near = d["near"]["near_duplicates"]
    if near and near / total >= NEAR_WARN:
        out.append(_f("warning", "duplicates",
                      f"{near} near duplicate(s) ({_pct(near / total)}, Jaccard >= {d['near']['threshold']}) in "
                      f"{d['near']['clusters']} cluster(s), the largest of {d['near']['largest_cluster']}"
                      f"{_eg(d['near']['examples'], 'line {} ~ line {}')}; "
                      "keep one of each (--fix --drop-near) or vary them"))
    c = d["conflicts"]
    if c["prompts"]:
        what = "a classification label set" if r.get("labels") else "one prompt"
        out.append(_f("warning", "conflicts", f"{c['prompts']} prompt(s) appear with different answers "
                                              f"({c['records']} records)"
                                              f"{_eg(c['examples'], 'line {} vs line {}')}; for "
                                              f"{what} that teaches noise: keep "
                                              "the right answer (fine only for open-ended text with "
                                              "several good answers)"))
    _length_findings(r.get("length"), out)
    _label_findings(r.get("labels"), out)
    s = r.get("structured")
    if s and s["valid"] < s["targets"]:
        bad = s["targets"] - s["valid"]
        lines = ", ".join(str(line) for line, _ in s["invalid_examples"][:5])
        out.append(_f("warning", "structured", f"{bad} of {s['targets']} targets are not valid {s['format']} "
                                               f"({_pct(s['valid_share'])} valid), e.g. lines {lines}; the "
                                               "model learns broken outputs from them"))
    _leak_findings(r.get("leakage"), out)
    _skill_findings(r.get("skills"), out, r.get("file", "train.jsonl"))
    if 0 < n < MIN_EXAMPLES:
        out.append(_f("warning", "size", f"only {n} valid examples; a few hundred curated ones is the floor "
                                         f"for a LoRA task, {CURATED_SIZE} is the LIMA figure"))
    if n == 0:
        out.append(_f("error", "size", "no valid examples at all"))
    return out


def _length_findings(length: dict | None, out: list[dict]) -> None:
    if length and length.get("skipped"):
        out.append(_f("warning", "length", f"token lengths not checked: {length['skipped']}; pass --model"))
    if not length or not length.get("examples"):
        return
    m, ctx = length["max_seq_len"], length.get("context")
    model = length.get("model", "the model")
    if ctx and m > ctx:
        out.append(_f("warning", "length", f"max_seq_len {m} is longer than {model}'s context of {ctx} tokens: "
                                           f"positions past {ctx} were never trained; use at most {ctx}"))
    if ctx and length.get("over_context"):
        out.append(_f("warning", "length", f"{length['over_context']} example(s) are longer than {model}'s "
                                           f"context of {ctx} tokens (e.g. line {length['over_context_lines'][0]}): "
                                           "no max_seq_len trains them whole; shorten or split them"))
    if length["truncated"]:
        fits = min(length["max"], ctx) if ctx else length["max"]
        raise_to = (f"data.max_seq_len: {fits} (the longest{'' if fits == length['max'] else ' the context allows'})"
                    if fits > m else "a shorter example")
        out.append(_f("warning", "length", f"{length['truncated']} example(s) exceed max_seq_len {m} (longest "
                                           f"{length['max']} tokens, p99 {length['p99']}, e.g. line "
                                           f"{length['truncated_lines'][0]}) and will be truncated; set "
                                           f"{raise_to} (--max-seq-len here) or shorten them"))
    if length["no_labels_left"]:
        out.append(_f("warning", "length", f"{length['no_labels_left']} example(s) keep no target token within "
                                           f"{m} tokens and will be dropped (e.g. line "
                                           f"{length['no_labels_lines'][0]})"))


def _label_findings(labels: dict | None, out: list[dict]) -> None:
    if not labels:
        return
    if labels["imbalance_ratio"] >= IMBALANCE_WARN:
        out.append(_f("warning", "labels", f"class imbalance {labels['imbalance_ratio']}:1 (smallest class "
                                           f"'{labels['smallest_class']}'); the model may learn to predict the "
                                           "majority; add examples of the rare classes or rebalance"))
    small = [c for c, k in labels["counts"].items() if k < 5]
    if small:
        out.append(_f("warning", "labels", f"{len(small)} class(es) with fewer than 5 examples: {small[:5]}"))


def _leak_findings(leak: dict | None, out: list[dict]) -> None:
    if not leak:
        return
    if leak["exact"]:
        e, t = leak["exact_examples"][0]
        out.append(_f("error", "leakage", f"{leak['exact']} eval record(s) also in the training file (e.g. eval "
                                          f"line {e} = train line {t}); eval scores would be inflated: --fix "
                                          "OUT.jsonl writes the training file without them"))
    if leak["same_prompt"] > leak["exact"]:
        e, t = next(([e, t] for e, t in leak["same_prompt_examples"] if [e, t] not in leak["exact_examples"]),
                    leak["same_prompt_examples"][0])
        out.append(_f("warning", "leakage", f"{leak['same_prompt']} eval prompt(s) appear in training (with "
                                            f"any answer; e.g. eval line {e}, train line {t}); --fix drops those "
                                            "training records"))
    if leak["near"] > leak["exact"]:
        out.append(_f("warning", "leakage", f"{leak['near']} of {leak['eval_unique']} distinct eval records "
                                            f"({_pct(leak['near_share'])}) are near-identical to a training "
                                            f"record{_eg(leak['near_examples'], 'eval line {} ~ train line {}')}; "
                                            "the eval measures recall, not generalisation (--fix --drop-near "
                                            "drops those training records)"))
    if leak["eval_schema_errors"]:
        out.append(_f("error", "leakage", f"the eval file has {leak['eval_schema_errors']} schema error(s)"))


def _skill_findings(skills: dict | None, out: list[dict], file: str = "train.jsonl") -> None:
    if not skills:
        return
    for name in skills["unknown"]:
        out.append(_f("warning", "skills", f"no detector for skill '{name}'; known: arithmetic, math, sql, json, "
                                           "code, lm, or give NAME=REGEX"))
    for name, s in skills["skills"].items():
        if s["examples"] == 0:
            out.append(_f("warning", "skills", f"no {name} examples: models unlearn skills their fine-tuning data "
                                               f"does not show (the seed); mix in representative {name} examples "
                                               "(about 5-10% of the data)" + (
                                                   f": {mix_config_line(file, name)}" if name in MIXABLE_PROBES
                                                   else "")))
        elif s["share"] < FEW_SKILL:
            out.append(_f("warning", "skills", f"only {s['examples']} {name} example(s) ({_pct(s['share'])}); "
                                               "consider mixing in more to preserve it"))


def verdict(r: dict) -> dict:
    """{'code', 'message', 'reasons'}: fix-errors | curate-before-you-scale | small-but-clean | ready."""
    n = r["records"]["valid"]
    total = max(n + r["records"]["invalid"], 1)
    d = r["duplicates"]
    junk = (r["records"]["invalid"] + d["exact"] + d["near"]["near_duplicates"] + d["conflicts"]["records"]) / total
    reasons = []
    if r["records"]["invalid"]:
        reasons.append(f"{r['records']['invalid']} broken record(s)")
    if junk >= JUNK_LIMIT:
        reasons.append(f"{_pct(junk)} of records are broken, duplicated, near-duplicated or conflicting")
    if n < MIN_EXAMPLES:
        reasons.append(f"{n} valid examples (fewer than a few hundred)")
    error_checks = sorted({f["check"] for f in r["findings"] if f["severity"] == "error"})
    if r["schema"]["errors"] or error_checks:
        why = {"schema": "the trainer refuses records with schema errors",
               "leakage": "the eval set overlaps the training set", "size": "no valid examples"}
        code = "fix-errors"
        msg = "fix the errors first: " + "; ".join(why.get(c, c) for c in error_checks or ["schema"])
        if junk >= JUNK_LIMIT or n < MIN_EXAMPLES:
            msg += "; then curate before you scale"
    elif junk >= JUNK_LIMIT or n < MIN_EXAMPLES:
        code = "curate-before-you-scale"
        msg = ("curate before you scale: quality matters more than size (1,000 curated examples can beat 50,000 "
               "noisy ones), and LoRA's limited capacity makes garbage hit faster")
    elif n < CURATED_SIZE:
        code, msg = "small-but-clean", (f"clean but small ({n} examples): fine for a narrow task; grow it with "
                                        f"curated examples toward ~{CURATED_SIZE} rather than bulk data")
    else:
        code, msg = "ready", f"clean: {n} examples with few duplicates or conflicts; train"
    if any(f["check"] == "skills" and f["severity"] == "warning" for f in r["findings"]):
        msg += "; mix in the missing skills so the model does not unlearn them"
    return {"code": code, "message": msg, "reasons": reasons, "junk_share": round(junk, 4)}
