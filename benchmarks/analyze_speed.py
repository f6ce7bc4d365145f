"""Benchmark: `tunewise analyze` vs the straightforward method, in one process, on the same matrices.

Baseline (what the paper's code and PEFT's reduce_intruder_dimension do): for every matrix a full float32
torch.linalg.svd of W0 and of W, then max |cos| and the count. tunewise: float64 Gram eigendecompositions, all
of U0 once per base (disk cache keyed by the weights' hash), only the top-k of W (plus the dW spectrum, which
the baseline does not even compute). Both read (W0, W) with the same reader, so file I/O is in both timings.

Cases: the shipped tiny base and a ~50M Llama built from a config (random init); N random LoRA adapters
(r=8, all linear, made with plain PEFT) of each base, plus one full (dense) perturbation.
Reports: 1 adapter with an empty cache (cold), 1 adapter with the base already cached (warm), N adapters from
an empty cache, the full perturbation, and whether every count matched the baseline.

    .venv/bin/python benchmarks/analyze_speed.py [--models tiny,llama50m] [--adapters 5] [--threads 1]

`--lora-vs-full` instead trains a LoRA adapter and a full fine-tune on the same built-in task data with
`tunewise.train` on the tiny base and prints both intruder counts (the paper expects more for LoRA).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _set_threads(n: int) -> None:
    # before numpy/scipy load, so OpenBLAS (scipy) and torch use the same number of threads as the baseline
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def build_llama50m(out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=16384, hidden_size=512, intermediate_size=1536, num_hidden_layers=10,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    print(f"llama50m: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    model.save_pretrained(out)
    return out


def make_adapters(base: Path, out: Path, n: int) -> list[Path]:
    """Random LoRA adapters with plain PEFT: A as PEFT initialises it, B small random (as after some training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(base)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        peft_model.save_pretrained(out / f"adapter{i}")
        paths.append(out / f"adapter{i}")
    return paths


def make_full(base: Path, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name and "lm_head" not in name:
                p.add_(0.002 * torch.randn_like(p))
    model.save_pretrained(out / "full")
    return out / "full"


SIMS: dict[str, dict[tuple[str, str], list[float]]] = {}  # for explaining any count that differs


def mismatches(tuned: Path, b: dict[str, int], o: dict[str, int], eps: float) -> list[str]:
    out = []
    for name in b:
        if b[name] != o.get(name):
            sb, so = SIMS[str(tuned)][("baseline", name)], SIMS[str(tuned)][("tunewise", name)]
            diff = max(abs(x - y) for x, y in zip(sb, so, strict=True))
            near = min(abs(x - eps) for x in sb + so)
            out.append(f"{tuned.name}/{name}: baseline {b[name]}, tunewise {o.get(name)}; "
                       f"max |sim difference| {diff:.2e}, closest sim to eps {near:.2e}")
    return out


def baseline(base: Path, tuned: Path, k: int, eps: float) -> tuple[float, dict[str, int]]:
    """Full float32 SVD of W0 and W for every matrix (the authors' / PEFT's method)."""
    import torch

    from tunewise.analysis.weights import open_tuned

    t0 = time.perf_counter()
    counts = {}
    for pair in open_tuned(str(base), str(tuned)).pairs():
        U0 = torch.linalg.svd(pair.W0, full_matrices=False).U
        Ut = torch.linalg.svd(pair.W, full_matrices=False).U
        sims = (Ut[:, :k].T @ U0).abs().max(dim=1).values
        counts[pair.name] = int((sims < eps).sum())
        SIMS.setdefault(str(tuned), {})[("baseline", pair.name)] = sims.tolist()
    return time.perf_counter() - t0, counts


def ours(base: Path, tuned: Path, k: int, eps: float, cache) -> tuple[float, dict[str, int]]:
    from tunewise.analysis.pipeline import analyze

    t0 = time.perf_counter()
    res = analyze(str(base), str(tuned), k=k, eps=[eps], cache=cache)
    for m in res.matrices:
        SIMS.setdefault(str(tuned), {})[("tunewise", m.name)] = m.similarities
    return time.perf_counter() - t0, {m.name: m.intruders[float(eps)] for m in res.matrices}


def run_case(label: str, base: Path, work: Path, n: int, k: int, eps: float, repeats: int = 2) -> list[str]:
    from tunewise.analysis.cache import SvdCache

    adapters = make_adapters(base, work, n)
    full = make_full(base, work)
    lines = [f"### {label} ({n} LoRA adapters r=8 all-linear, k={k}, eps={eps})", "",
             "| case | baseline s | tunewise s | ratio | counts identical |", "|---|---|---|---|---|"]
    # interleaved (baseline, tunewise) per adapter, so load from other processes hits both alike
    b_times, b_counts, o_times, o_counts = [], [], [], []
    cache = SvdCache(work / f"cache-{label}")
    for a in adapters:
        bt, bc = baseline(base, a, k, eps)
        ot, oc = ours(base, a, k, eps, cache)  # the first one starts from an empty cache
        b_times.append(bt), b_counts.append(bc), o_times.append(ot), o_counts.append(oc)
    same = all(b == o for b, o in zip(b_counts, o_counts, strict=True))
    # repeats of the first adapter (best of): baseline, tunewise from an empty cache, tunewise with the base cached
    b_best, cold_best, warm_best = b_times[0], o_times[0], float("inf")
    for r in range(repeats):
        b_best = min(b_best, baseline(base, adapters[0], k, eps)[0])
        cold_best = min(cold_best, ours(base, adapters[0], k, eps, SvdCache(work / f"cache-cold{r}"))[0])
        warm_best = min(warm_best, ours(base, adapters[0], k, eps, cache)[0])
    rows = [("1 adapter, empty cache (best of runs)", b_best, cold_best, b_counts[0] == o_counts[0]),
            ("1 adapter, base cached (best of runs)", b_best, warm_best, True),
            (f"{n} adapters, empty cache (one pass, interleaved)", sum(b_times), sum(o_times), same)]
    fb_t, fb_c = baseline(base, full, k, eps)
    fo_t, fo_c = ours(base, full, k, eps, cache)
    rows.append(("full perturbation, base cached", fb_t, fo_t, fb_c == fo_c))
    for name, b, o, ok in rows:
        lines.append(f"| {name} | {b:.2f} | {o:.2f} | {b / o:.1f}x | {'yes' if ok else 'NO'} |")
    for a, b, o in zip(adapters, b_counts, o_counts, strict=True):
        lines += [f"- count differs: {m}" for m in mismatches(a, b, o, eps)]
    total = sum(sum(c.values()) for c in o_counts)
    lines += ["", f"intruders (tunewise) per adapter: {[sum(c.values()) for c in o_counts]} "
                  f"(total {total}); full perturbation: {sum(fo_c.values())}"]
    for line in lines:
        print(line, flush=True)
    return lines


def lora_vs_full(base: str, task: str, steps: int, work: Path, eps: list[float]) -> None:
    """Train LoRA (r=8, alpha=16, all linear) and full fine-tuning on one task's data; analyse both."""
    from tunewise.analysis.cache import SvdCache
    from tunewise.analysis.pipeline import analyze
    from tunewise.config import RunConfig
    from tunewise.tasks import make_task
    from tunewise.train import train

    make_task(task, work / "data", sizes={"train": 800, "validation": 50, "test": 50})
    runs = {
        "lora r=8": {"method": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": "all-linear", "dropout": 0.0},
                     "train": {"lr": 1e-3}},
        "full": {"method": "full", "train": {"lr": 1e-4}},
    }
    print(f"| run ({task}, {steps} steps, tiny base) | final train loss | " +
          " | ".join(f"intruders eps={e}" for e in eps) + " | matrices with intruders (eps=0.5) | "
          "median eff. rank of dW | mean dW/W0 (Fro) |")
    print("|---|---|" + "---|" * len(eps) + "---|---|---|")
    for label, over in runs.items():
        cfg = RunConfig.model_validate({
            "base": base, "data": {"train": str(work / "data" / "train.jsonl"), "check": False},
            **{k: v for k, v in over.items() if k != "train"},
            "train": {"max_steps": steps, "batch_size": 16, "warmup_ratio": 0.05, "seed": 0, **over["train"]},
        })
        result = train(cfg, work / label.replace(" ", "_").replace("=", ""), quiet=True)
        summ = analyze(base, str(result.run_dir), eps=eps, cache=SvdCache(work / "cache")).summary_dict()
        print(f"| {label} | {result.summary.final_train_loss or float('nan'):.3f} | "
              + " | ".join(str(summ["total"][str(e)]) for e in eps)
              + f" | {summ['matrices_with_intruders'].get('0.5', '-')} of {summ['matrices']} | "
              f"{summ['spectrum']['effective_rank_90_median']} | {summ['spectrum']['fro_rel_mean']:.4f} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,llama50m")
    ap.add_argument("--adapters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads for both methods (the CPUs are shared)")
    ap.add_argument("--repeats", type=int, default=2, help="extra runs of the first adapter (best of)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.5)
    ap.add_argument("--lora-vs-full", action="store_true", help="train LoRA and full on one task and compare")
    ap.add_argument("--task", default="structured")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--base", default="tiny")
    args = ap.parse_args()
    _set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.lora_vs_full:
        with tempfile.TemporaryDirectory() as tmp:
            lora_vs_full(args.base, args.task, args.steps, Path(tmp), [0.3, 0.5, 0.7])
        return
    print(f"torch {torch.__version__}, threads {args.threads}, {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.models.split(","):
            if model == "tiny":
                from tunewise.zoo import TINY_DIR

                if not (TINY_DIR / "model.safetensors").exists():
                    sys.exit("the shipped tiny base is missing (python -m tunewise.zoo.build)")
                base = TINY_DIR
            elif model == "llama50m":
                base = build_llama50m(tmp / "llama50m")
            else:
                base = Path(model)
            (tmp / model.replace("/", "_")).mkdir(exist_ok=True)
            run_case(model, base, tmp / model.replace("/", "_"), args.adapters, args.k, args.eps, args.repeats)


if __name__ == "__main__":
    main()
