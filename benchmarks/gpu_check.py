"""The GPU path in one run, for a lent H100 (under 8 minutes there): training, memory, generation and resume on CUDA.

On two bases -- the shipped `tiny` and a randomly initialised ~1.1B Llama built from a config (TinyLlama-1.1B's
shape: hidden 2048, 22 layers, 32 heads / 4 KV heads, MLP 5632, vocab 32,000; no weights to carry) -- it runs:

  1. bf16 LoRA, QLoRA (bitsandbytes NF4) and full fine-tuning through tunewise's own `train()` (steps at batch
     BATCH x SEQ tokens, every example exactly SEQ tokens): steady tokens/s (the steps after the first) and MFU
     against a bf16 matmul peak measured in the same run (8192^3, CUDA events). Model FLOPs per token are
     benchmarks/train_speed.py's: 6N for full, 4N + 6A for (Q)LoRA.
  2. `tunewise estimate` (EstimateRequest, same model / batch / seq / rank) vs torch.cuda.max_memory_allocated
     of that run (summary.peak_cuda_mb): the estimate's tensor terms (everything but the CUDA context and allocator
     slack, which the allocator's counter does not see) against it; target: within 10%.
  3. QLoRA vs LoRA: peak memory and step time against the seed's claim (memory -33%, time +39%).
  4. Generation: the continuous-batching engine's tokens/s with 4 adapters loaded (requests round-robin over
     them) vs the bare base (no PEFT wrapper), same prompts, greedy.
  5. Exact resume on CUDA (tiny base, LoRA): a run stopped at step k and resumed against an uninterrupted one;
     the per-step losses and the adapter tensors, with their largest difference (0 = bitwise).

Output: gpu_check.json and gpu_check.md (the table) under --out (default $OUT, else ./gpu_check_out).

  # on the device (see benchmarks/RESULTS.md, "gpu_check"):
  python3 benchmarks/gpu_check.py --out $OUT
  # here: the same code on CPU at toy sizes (fp32; a micro Llama stands in for the 1B); tests/test_gpu_check.py
  HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check
  # here, once, before a device run: what must travel with the tree (the device has no pydantic or
  # bitsandbytes): a folder that .git/info/exclude ignores, named in the device call's carry
  .venv/bin/python benchmarks/gpu_check.py --prepare-carry .carry
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks own the data and FLOPs rules

import torch  # noqa: E402

METHODS = ("lora", "qlora", "full")
SEED_QLORA = {"memory": -0.33, "time": +0.39}  # the seed's QLoRA trade against LoRA
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "vocab_size": 32_000}
LLAMA_TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 0}  # 0: the tokenizer's own size


@dataclass(frozen=True)
class Sizes:
    device: str
    dtype: str
    batch: int
    seq: int
    steps: int
    rank: int
    llama: dict
    gen_requests: int
    gen_tokens: int
    resume_steps: int
    matmul_n: int


GPU = Sizes("cuda", "bf16", batch=8, seq=512, steps=12, rank=16, llama=LLAMA_1B, gen_requests=32, gen_tokens=64,
            resume_steps=6, matmul_n=8192)
DRY = Sizes("cpu", "fp32", batch=2, seq=32, steps=3, rank=4, llama=LLAMA_TOY, gen_requests=4, gen_tokens=4,
            resume_steps=4, matmul_n=1024)


@dataclass
class TrainRow:
    model: str
    method: str
    status: str
    steps: int
    params: int
    trainable: int
    tokens_per_s: float  # steady: the steps after the first (which pays for kernels and allocator warm-up)
    step_s: float
    mfu: float | None
    peak_mb: float | None  # torch.cuda.max_memory_allocated (None on CPU)
    estimate_tensors_mb: float
    estimate_total_mb: float
    first_loss: float
    last_loss: float

    @property
    def ratio(self) -> float | None:
        return round(self.estimate_tensors_mb / self.peak_mb, 3) if self.peak_mb else None


@dataclass
class Report:
    device: str
    torch: str
    sizes: dict
    peak_tflops: float
    train: list[TrainRow] = field(default_factory=list)
    qlora_trade: dict = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    resume: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- measurements


def matmul_peak_tflops(s: Sizes) -> float:
    """Best of ten n^3 matmuls in the training dtype (bf16 on CUDA, timed with events; fp32 on CPU)."""
    dt = torch.bfloat16 if s.dtype == "bf16" else torch.float32
    a = torch.randn(s.matmul_n, s.matmul_n, device=s.device, dtype=dt)
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        if s.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return 2 * s.matmul_n**3 / best / 1e12


def build_llama(out: Path, tokenizer_dir: Path, shape: dict) -> Path:
    """A Llama of `shape` with random weights, saved in bf16 with the tiny base's tokenizer (initialised on the
    GPU when there is one: 1.1B parameters initialise in seconds there, a minute on the CPU)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = {**shape, "vocab_size": max(shape["vocab_size"], len(tok))}
    cfg = LlamaConfig(max_position_embeddings=2048, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out


def run_config(base: Path, method: str, data: Path, s: Sizes, steps: int, **train):
    from tunewise.config import validate_config

    return validate_config({
        "base": str(base), "method": method,
        "data": {"train": str(data), "max_seq_len": s.seq, "overlong": "truncate", "check": False},
        "lora": {"r": s.rank, "dropout": 0.0},
        "train": {"max_steps": steps, "batch_size": s.batch, "device": s.device, "dtype": s.dtype, "log_every": 1,
                  "seed": 0, **train}})


def fresh_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def steady_speed(run_dir: Path) -> tuple[float, float, list[float]]:
    """(tokens/s and seconds per step over the steps after the first, every step's loss) from metrics.jsonl,
    whose tokens_per_s is cumulative: elapsed at step k = cumulative tokens / tokens_per_s."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    rows = [r for r in rows if "loss" in r]
    cum, elapsed = 0, []
    for r in rows:
        cum += r["tokens"]
        elapsed.append((cum, cum / r["tokens_per_s"]))
    (t1, e1), (tn, en) = elapsed[0], elapsed[-1]
    if len(rows) < 2 or en <= e1:
        return tn / en, en / len(rows), [r["loss"] for r in rows]
    return (tn - t1) / (en - e1), (en - e1) / (len(rows) - 1), [r["loss"] for r in rows]


def estimate_mb(base: Path, method: str, s: Sizes) -> tuple[float, float]:
    """(the estimate's tensor terms, its total) in MiB for this run's setup."""
    from tunewise.estimate import EstimateRequest, run_estimate
    from tunewise.estimate.memory import MB

    req = EstimateRequest(model=str(base), methods=(method,), rank=s.rank, batch=s.batch, seq=s.seq,
                          device=s.device, dtype=s.dtype, lora_dropout=0.0)
    b = run_estimate(req).breakdowns[method]
    overhead = b.terms["framework overhead"] + b.terms.get("allocator slack", 0.0)
    return (b.total - overhead) / MB, b.total / MB


def train_row(name: str, base: Path, method: str, data: Path, work: Path, s: Sizes, peak: float,
              n_matmul: int) -> TrainRow:
    from tunewise.train.run import train

    fresh_cuda()
    res = train(run_config(base, method, data, s, s.steps), work / f"{name}-{method}", quiet=True)
    summ = res.summary
    tps, step_s, losses = steady_speed(res.run_dir)
    flops = 6 * n_matmul if method == "full" else 4 * n_matmul + 6 * summ.trainable_params
    tensors, total = estimate_mb(base, method, s)
    return TrainRow(name, method, summ.status, summ.steps, summ.total_params, summ.trainable_params, round(tps, 1),
                    round(step_s, 4), round(tps * flops / (peak * 1e12), 4) if peak else None, summ.peak_cuda_mb,
                    round(tensors, 1), round(total, 1), round(losses[0], 4), round(losses[-1], 4))


def qlora_trade(rows: list[TrainRow]) -> dict:
    """Per model: QLoRA's peak memory and step time relative to LoRA's, next to the seed's claim."""
    out = {}
    for model in dict.fromkeys(r.model for r in rows):
        by = {r.method: r for r in rows if r.model == model}
        if "lora" in by and "qlora" in by:
            lo, q = by["lora"], by["qlora"]
            mem = round(q.peak_mb / lo.peak_mb - 1, 3) if lo.peak_mb and q.peak_mb else None
            out[model] = {"memory": mem, "time": round(q.step_s / lo.step_s - 1, 3), "seed": SEED_QLORA}
    return out


# ---------------------------------------------------------------------------------------------- generation


def generation_api():
    """The generation engine's entry points: the one place to repoint when it moves (tunewise/generate/)."""
    from tunewise.adapters import BaseInfo
    from tunewise.serve.batching import Engine, GenJob, wrap_base
    from tunewise.serve.registry import Registry

    return BaseInfo, Engine, GenJob, Registry, wrap_base


def engine_tokens_per_s(engine, GenJob, prompts: list[list[int]], adapters: list[str | None], n: int) -> dict:
    jobs = [GenJob(adapter=adapters[i % len(adapters)], prompt_ids=prompts[i % len(prompts)], max_new_tokens=n)
            for i in range(len(prompts))]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    results = [f.result() for f in [engine.submit(j) for j in jobs]]  # all submitted first: they batch
    wall = time.perf_counter() - t0
    tokens = sum(r.completion_tokens for r in results)
    return {"tokens": tokens, "seconds": round(wall, 3), "tokens_per_s": round(tokens / wall, 1),
            "requests": len(jobs), "mean_completion": round(tokens / len(jobs), 1)}


def generation(name: str, base: Path, adapter: Path, work: Path, s: Sizes) -> dict:
    """Engine tokens/s with 4 adapters (copies of the LoRA run's adapter under 4 names: the cost of a row does
    not depend on the adapter's values) vs the bare base in an engine of its own."""
    from tunewise.models import load_base

    BaseInfo, Engine, GenJob, Registry, wrap_base = generation_api()
    root = work / f"{name}-adapters"
    names = [f"a{i}" for i in range(4)]
    for n in names:
        shutil.copytree(adapter, root / n)
    words = "the quick brown fox jumps over the lazy dog".split()
    out = {}
    for label, adapters in (("4 adapters", names), ("bare base", [None])):
        fresh_cuda()
        model, tok = load_base(str(base), dtype=s.dtype, device=s.device)
        model.eval()
        registry = Registry(BaseInfo.from_model(model, name, base), root if adapters != [None] else None)
        registry.scan()
        engine = Engine(wrap_base(model) if adapters != [None] else model, tok, registry, max_loaded=4,
                        max_batch=16, batch_wait_s=0.005).start()
        try:
            for n in names if adapters != [None] else []:
                engine.load(n).result()
            prompts = [tok(f"Example {i}: " + " ".join(words[i % 9:] + words[: i % 9]))["input_ids"]
                       for i in range(s.gen_requests)]
            engine_tokens_per_s(engine, GenJob, prompts[:2], adapters, 2)  # warm-up: kernels, allocator
            out[label] = engine_tokens_per_s(engine, GenJob, prompts, adapters, s.gen_tokens)
        finally:
            engine.stop()
        del engine, model
    out["ratio"] = round(out["4 adapters"]["tokens_per_s"] / out["bare base"]["tokens_per_s"], 3)
    return out


# ---------------------------------------------------------------------------------------------- resume


def exact_resume(base: Path, data: Path, work: Path, s: Sizes) -> dict:
    """LoRA on `base`: stopped at half the steps and resumed vs uninterrupted; the largest differences."""
    from safetensors.torch import load_file

    from tunewise.train.run import train

    steps, stop = s.resume_steps, s.resume_steps // 2
    cfg = run_config(base, "lora", data, s, steps, save_every=1)
    fresh_cuda()
    whole = train(cfg, work / "resume-whole", quiet=True)
    train(cfg, work / "resume-part", quiet=True, stop_at_step=stop)
    resumed = train(cfg, work / "resume-part", resume=True, quiet=True)
    a, b = steady_speed(whole.run_dir)[2], steady_speed(resumed.run_dir)[2]
    wa = load_file(whole.run_dir / "adapter" / "adapter_model.safetensors")
    wb = load_file(resumed.run_dir / "adapter" / "adapter_model.safetensors")
    loss_diff = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")
    weight_diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) if wa.keys() == wb.keys() \
        else float("inf")
    return {"steps": steps, "stopped_at": stop, "statuses": [whole.summary.status, resumed.summary.status],
            "losses_whole": a, "losses_resumed": b, "max_loss_diff": loss_diff, "max_weight_diff": weight_diff,
            "exact": loss_diff == 0.0 and weight_diff == 0.0}


# ---------------------------------------------------------------------------------------------- the run


def run(s: Sizes, work: Path) -> Report:
    from estimate_vs_measured import make_data
    from train_speed import matmul_params

    from tunewise.zoo import TINY_DIR

    clock = {"start": time.perf_counter()}
    name = torch.cuda.get_device_name() if s.device == "cuda" else "cpu"
    report = Report(name, torch.__version__, asdict(s), round(matmul_peak_tflops(s), 4))
    data = make_data(work / "train.jsonl", n=max(4 * s.batch, s.batch * s.steps))
    bases = {"tiny": Path(os.environ.get("TUNEWISE_TEST_TINY") or TINY_DIR),
             "llama-1b" if s is GPU else "llama-toy": build_llama(work / "llama", TINY_DIR, s.llama)}
    for model, base in bases.items():
        n_matmul = matmul_params(str(base))[0]
        for method in METHODS:
            report.train.append(train_row(model, base, method, data, work, s, report.peak_tflops, n_matmul))
            print(table_line(report.train[-1]), flush=True)
        report.seconds[f"train {model}"] = round(time.perf_counter() - clock["start"], 1)
        report.generation[model] = generation(model, base, work / f"{model}-lora" / "adapter", work, s)
        report.seconds[f"generation {model}"] = round(time.perf_counter() - clock["start"], 1)
    report.qlora_trade = qlora_trade(report.train)
    report.resume = exact_resume(bases["tiny"], data, work, s)
    report.seconds["total"] = round(time.perf_counter() - clock["start"], 1)
    return report


def table_line(r: TrainRow) -> str:
    mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else "   -  "
    peak = f"{r.peak_mb:9.1f}" if r.peak_mb is not None else "        -"
    ratio = f"{r.ratio:5.3f}" if r.ratio is not None else "   - "
    return (f"| {r.model:9s} | {r.method:5s} | {r.status:9s} | {r.params:>13,} | {r.tokens_per_s:>10.1f} | {mfu} "
            f"| {peak} | {r.estimate_tensors_mb:9.1f} | {ratio} | {r.first_loss:.3f} -> {r.last_loss:.3f} |")


def markdown(rep: Report) -> str:
    lines = [f"gpu_check on {rep.device} (torch {rep.torch}); matmul peak {rep.peak_tflops} TFLOP/s "
             f"({rep.sizes['dtype']}, {rep.sizes['matmul_n']}^3); batch {rep.sizes['batch']} x seq "
             f"{rep.sizes['seq']}, {rep.sizes['steps']} steps, rank {rep.sizes['rank']}", "",
             "| model | method | status | params | tokens/s | MFU | peak MiB | est. MiB | est/peak | loss |",
             "|---|---|---|---|---|---|---|---|---|---|", *(table_line(r) for r in rep.train), ""]
    for model, t in rep.qlora_trade.items():
        mem = f"{100 * t['memory']:+.0f}%" if t["memory"] is not None else "n/a on CPU"
        lines.append(f"QLoRA vs LoRA on {model}: memory {mem}, step time {100 * t['time']:+.0f}% "
                     f"(seed: memory -33%, time +39%)")
    for model, g in rep.generation.items():
        lines.append(f"generation on {model}: 4 adapters {g['4 adapters']['tokens_per_s']} tokens/s, bare base "
                     f"{g['bare base']['tokens_per_s']} tokens/s (ratio {g['ratio']})")
    r = rep.resume
    lines.append(f"resume (tiny, lora, {r['steps']} steps, stopped at {r['stopped_at']}): exact={r['exact']} "
                 f"(largest loss difference {r['max_loss_diff']:.3g}, weight difference {r['max_weight_diff']:.3g})")
    lines.append(f"seconds: {rep.seconds}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- carry


# what the training, estimate and generation imports need that the device image lacks (checked against KINDS.md's
# package list), and peft at this venv's version (the image's is not listed)
CARRY_WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "dill", "peft")


def prepare_carry(folder: Path) -> None:
    """Fill `folder` with what the device lacks: wheels for CPython 3.12 at this venv's versions, and
    bitsandbytes as a folder holding only its CUDA 13.0 library: the whole wheel (0.50.2) packs 17 CUDA / ROCm /
    XPU libraries, 125 MiB unpacked and ~41 MiB zipped, which with the 13 MiB tree leaves little of the 64 MiB
    carry limit; the one library the device's torch cu130 loads is 3.9 MiB (5.4 MiB for the folder)."""
    from importlib.metadata import distribution, version

    import bitsandbytes

    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{n}=={version(n)}" for n in CARRY_WHEELS]
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28)] + ["--platform=manylinux2014_x86_64"]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version=3.12", "--implementation=cp", *platforms, "-d", str(folder / "wheels"),
                    *pins], check=True)
    src = Path(bitsandbytes.__file__).parent
    site = folder / "site"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(src, site / "bitsandbytes", ignore=lambda d, names: [
        n for n in names if n == "__pycache__" or n.startswith("libbitsandbytes_") and n not in (
            "libbitsandbytes_cuda130.so", "libbitsandbytes_cpu.so")])
    dist = distribution("bitsandbytes")
    shutil.copytree(Path(dist._path), site / Path(dist._path).name)  # noqa: SLF001 -- its metadata, for version()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"{folder}: {size / 2**20:.1f} MiB to carry ({', '.join(pins)}; bitsandbytes {version('bitsandbytes')} "
          f"with libbitsandbytes_cuda130.so only)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the same code on CPU at toy sizes")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    ap.add_argument("--prepare-carry", metavar="DIR", help="only fill DIR with what the device needs, then exit")
    args = ap.parse_args()
    if args.prepare_carry:
        return prepare_carry(Path(args.prepare_carry))
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --dry-run for the CPU check at toy sizes")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(DRY if args.dry_run else GPU, Path(tmp))
    text = markdown(report)
    payload = {**asdict(report), "train": [{**asdict(r), "ratio": r.ratio} for r in report.train]}
    from tunewise.fileio import atomic_write_json, atomic_write_text

    atomic_write_json(out / "gpu_check.json", payload)
    atomic_write_text(out / "gpu_check.md", text)
    print(text, end="")


if __name__ == "__main__":
    main()
