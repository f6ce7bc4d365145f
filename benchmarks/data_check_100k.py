"""Benchmark: `tunewise data check` on 100k generated prompt/completion pairs, against exact pairwise Jaccard.

The data: the tiny base's corpus generators (SQL over three schemas, arithmetic, GSM8k-shaped word problems,
restaurant meaning representations -> descriptions), plus planted noise: exact copies, near copies (one word
added), conflicting answers and broken lines, so every check has something to find. An eval file of 2,000
records, a tenth of them copied from training, exercises the leakage check.

Baseline: the exact near-duplicate search (Jaccard of the same word 3-gram shingle sets for every pair), timed
on a sample of unique texts and extrapolated by the number of pairs; its answers on the sample also measure the
recall of MinHash + LSH.

    .venv/bin/python benchmarks/data_check_100k.py [--n 100000] [--model tiny] [--sample 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from tunewise.data import dedup  # noqa: E402
from tunewise.data.audit import AuditOptions, audit  # noqa: E402
from tunewise.zoo import corpus  # noqa: E402


def pair(rng: random.Random) -> dict:
    kind = rng.random()
    if kind < 0.3:
        table, question, query = corpus.sql_example(rng)
        return {"prompt": f"Schema: {corpus.SCHEMAS[table]}\nQuestion: {question}\nSQL:", "completion": f" {query}"}
    if kind < 0.5:
        q, a = corpus.arithmetic_fact(rng)
        return {"prompt": q, "completion": a}
    if kind < 0.75:
        q, sol, _ = corpus.word_problem(rng)
        return {"prompt": f"Question: {q}\nAnswer:", "completion": f" {sol}"}
    r = corpus.restaurant(rng)
    mr = f"inform(name[{r.name}], food[{r.food}], rating[{r.rating}], price[{r.price}], area[{r.area}])"
    return {"prompt": f"{mr}\nDescription:", "completion": " " + corpus.restaurant_text(rng, r)}


def make_data(n: int, seed: int = 0) -> tuple[list[str], dict]:
    rng = random.Random(seed)
    lines: list[str] = []
    good: list[str] = []  # lines the noise is copied from
    planted = {"exact": 0, "near": 0, "conflict": 0, "broken": 0}
    while len(lines) < n:
        u = rng.random()
        if u < 0.01 and good:
            lines.append(rng.choice(good))
            planted["exact"] += 1
        elif u < 0.02 and good:
            rec = json.loads(rng.choice(good))
            rec["completion"] += " indeed"
            lines.append(json.dumps(rec))
            planted["near"] += 1
        elif u < 0.025 and good:
            rec = json.loads(rng.choice(good))
            rec["completion"] = " I do not know."
            lines.append(json.dumps(rec))
            planted["conflict"] += 1
        elif u < 0.027:
            lines.append(rng.choice(['{"prompt": "cut', '{"prompt": 3, "completion": " x"}', '{"text": ""}']))
            planted["broken"] += 1
        else:
            good.append(json.dumps(pair(rng)))
            lines.append(good[-1])
    return lines, planted


def baseline_pairwise(texts: list[str], threshold: float) -> tuple[float, set[tuple[int, int]]]:
    """Exact Jaccard of every pair of shingle sets: (seconds, pairs at or above threshold)."""
    sets = dedup.shingle_sets(texts)
    t0 = time.perf_counter()
    found = set()
    for i in range(len(sets)):
        si = sets[i]
        for j in range(i + 1, len(sets)):
            sj = sets[j]
            inter = len(si & sj)
            if inter and inter / (len(si) + len(sj) - inter) >= threshold:
                found.add((i, j))
    return time.perf_counter() - t0, found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--threshold", type=float, default=0.8)
    args = ap.parse_args()

    lines, planted = make_data(args.n)
    eval_lines = [json.dumps(pair(random.Random(10_000 + i))) for i in range(1800)] + random.Random(1).sample(lines, 200)
    with tempfile.TemporaryDirectory() as tmp:
        train, ev = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        train.write_text("\n".join(lines) + "\n")
        ev.write_text("\n".join(eval_lines) + "\n")
        size_mb = train.stat().st_size / 2**20
        t0, c0 = time.perf_counter(), time.process_time()
        report = audit(train, AuditOptions(eval_path=str(ev), model=args.model, preserve=["arithmetic", "sql"]))
        total, cpu = time.perf_counter() - t0, time.process_time() - c0

    # the near-duplicate stage alone, on the unique texts, for the like-for-like ratio
    seen, texts = set(), []
    for line in lines:
        try:
            rec = json.loads(line)
            text = f"{rec['prompt']}\n{rec['completion']}"
        except (ValueError, KeyError, TypeError):
            continue
        if text not in seen:
            seen.add(text)
            texts.append(text)
    t0 = time.perf_counter()
    sig = dedup.signatures(texts)
    a, b, _ = dedup.near_duplicates(sig, args.threshold)
    ours = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    sample_idx = np.sort(rng.choice(len(texts), size=min(args.sample, len(texts)), replace=False))
    sample = [texts[i] for i in sample_idx]
    base_s, exact_pairs = baseline_pairwise(sample, args.threshold)
    sets = dedup.shingle_sets(sample)
    clear_pairs = [(i, j) for i, j in exact_pairs if dedup.jaccard(sets[i], sets[j]) >= args.threshold + 0.05]
    n_pairs_full = len(texts) * (len(texts) - 1) / 2
    n_pairs_sample = len(sample) * (len(sample) - 1) / 2
    base_full = base_s * n_pairs_full / n_pairs_sample
    sa, sb, _ = dedup.near_duplicates(dedup.signatures(sample), args.threshold)
    labels = dedup.cluster_labels(len(sample), sa, sb)
    recall = np.mean([labels[i] == labels[j] for i, j in exact_pairs]) if exact_pairs else float("nan")
    recall_clear = np.mean([labels[i] == labels[j] for i, j in clear_pairs]) if clear_pairs else float("nan")
    precision = (np.mean([dedup.jaccard(sets[i], sets[j]) >= args.threshold - 0.1 for i, j in zip(sa, sb, strict=True)])
                 if sa.size else float("nan"))

    d = report["duplicates"]
    print(f"data: {args.n} records ({size_mb:.1f} MB), planted {planted}; eval 2000 records (200 copied)")
    print(f"tunewise data check (all checks, tokenizer '{args.model}', --eval): {total:.2f} s wall, {cpu:.2f} s CPU "
          f"({args.n / total:,.0f} records/s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  found: {report['records']['invalid']} invalid, {d['exact']} exact dups, "
          f"{d['near']['near_duplicates']} near dups in {d['near']['clusters']} clusters, "
          f"{d['conflicts']['prompts']} conflicting prompts, leakage exact {report['leakage']['exact']} / "
          f"near {report['leakage']['near']}, tokens p50 {report['length'].get('p50')} "
          f"max {report['length'].get('max')}; verdict {report['verdict']['code']}")
    print(f"near-duplicate stage alone (MinHash {dedup.NUM_PERM} perms + LSH {dedup.BANDS}x"
          f"{dedup.NUM_PERM // dedup.BANDS} + verify) on {len(texts)} unique texts: "
          f"{ours:.2f} s, {a.size} pairs")
    print(f"baseline: exact pairwise Jaccard on {len(sample)} texts: {base_s:.2f} s -> extrapolated to "
          f"{len(texts)} texts ({n_pairs_full:.3g} pairs): {base_full:,.0f} s")
    print(f"ratio baseline / ours: {base_full / ours:,.0f}x (near-dup stage), {base_full / total:,.0f}x (whole check)")
    print(f"on the sample: {len(exact_pairs)} pairs with exact J >= {args.threshold}: MinHash+LSH recall {recall:.3f} "
          f"({len(clear_pairs)} with J >= {args.threshold + 0.05:.2f}: recall {recall_clear:.3f}); precision "
          f"(reported pairs with exact J >= {args.threshold - 0.1:.1f}) {precision:.3f}")


if __name__ == "__main__":
    main()
