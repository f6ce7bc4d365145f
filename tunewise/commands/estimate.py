"""`tunewise estimate`: exact parameter counts and the peak-memory breakdown for full / LoRA / QLoRA.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from tunewise.defaults import BY_MEMORY, LORA_DROPOUT


def parse_methods(text: str) -> tuple[str, ...]:
    if text.strip() in ("all", ""):
        return BY_MEMORY
    return tuple(m.strip().lower() for m in text.split(",") if m.strip())


def render(result) -> None:
    """Human tables: parameters per module type, trainable per method, memory breakdown, fits, anchors."""
    from tunewise.estimate.memory import MB

    d = result.as_dict()
    con = Console()
    m = d["model"]
    s = d["setup"]
    con.print(f"[bold]{m['name']}[/bold] ({m['architecture']}, {m['source']}): {m['total_params']:,} parameters"
              f"{' (head tied to embeddings)' if m['tied_output'] else ''}")
    gpus_txt = f" x{s['gpus']} ({s['distributed']}, per process)" if s["gpus"] > 1 else ""
    con.print(f"setup: r={s['rank']}, targets={','.join(s['targets'])}, batch {s['batch']} x seq {s['seq']}, "
              f"{s['dtype']}, {s['optimizer']}, checkpointing {'on' if s['grad_ckpt'] else 'off'}, "
              f"{s['device']}{gpus_txt}")
    t = Table(title="linear layers (exact, from the config on the meta device)")
    for col in ("module", "count", "shape (out x in)", "params", f"LoRA r={s['rank']}"):
        t.add_column(col, justify="right" if col != "module" else "left")
    for name, g in d["modules"].items():
        t.add_row(name, str(g["count"]), f"{g['shape'][0]} x {g['shape'][1]}", f"{g['params']:,}",
                  f"{g['lora_params']:,}" if g["targeted"] else "-")
    con.print(t)
    pct = d["trainable_pct"]
    con.print("trainable: " + ", ".join(f"{k} {v:,} ({pct[k]:.3f}%)" for k, v in d["trainable"].items()
                                        if k in result.breakdowns or k == "full"))
    con.print(f"adapter file (adapter_model.safetensors, fp32): {d['adapter_file_bytes'] / MB:,.1f} MiB")
    con.print(_memory_table(result, s["device"]))
    notes = sorted({n for b in result.breakdowns.values() for n in b.notes})
    for n in notes:
        con.print(f"  note: {n}")
    for w in d["warnings"]:
        con.print(f"[yellow]WARNING: {w}[/yellow]")
    if s["device"] == "cuda":
        con.print(_fits_table(d["fits"], next(iter(result.breakdowns))))
    if d["anchors"]:
        con.print(_anchors_table(d["anchors"]))


def _memory_table(result, device: str):
    from tunewise.estimate.memory import GB, MB

    unit = "GiB" if device == "cuda" else "MiB"
    scale = GB if unit == "GiB" else MB
    mt = Table(title=f"peak memory ({'per GPU' if device == 'cuda' else 'process peak RSS'}, {unit})")
    mt.add_column("term")
    methods = list(result.breakdowns)
    for meth in methods:
        mt.add_column(meth, justify="right")
    terms: list[str] = []
    for b in result.breakdowns.values():
        terms += [k for k in b.terms if k not in terms]
    for term in terms:
        mt.add_row(term, *[f"{b.terms[term] / scale:,.2f}" if term in b.terms else "-"
                           for b in result.breakdowns.values()])
    mt.add_row("[bold]total[/bold]", *[f"[bold]{b.total / scale:,.2f}[/bold]" for b in result.breakdowns.values()])
    return mt


def _fits_table(fits: dict, first_method: str):
    ft = Table(title="fits on one card (yes / tight = last 5% / no)")
    ft.add_column("method")
    for size in fits[first_method]:
        ft.add_column(size, justify="center")
    for meth, row in fits.items():
        ft.add_row(meth, *row.values())
    return ft


def _anchors_table(anchors: list[dict]):
    at = Table(title="published anchors for this model (our estimate for the same setup)")
    for col in ("setup", "published", "estimate", "ratio", "source"):
        at.add_column(col)
    for a in anchors:
        if a["ratio"] is None:
            at.add_row(a["label"], a["published"], a["estimate"], "-", a["source"])
        else:
            at.add_row(a["label"], f"{a['published_gb']:.2f} GB", f"{a['estimate_gb']:.2f} GiB",
                       f"{a['ratio']:.2f}", a["source"])
    return at


def register(app: typer.Typer) -> None:
    @app.command()
    def estimate(
        model: str = typer.Option(..., "--model", "-m", help="Preset (e.g. llama-2-7b), 'tiny', a folder, a "
                                  "config.json or a hub id."),
        method: str = typer.Option("all", "--method", help="lora, qlora, full, a comma list, or all."),
        rank: int = typer.Option(16, "--rank", "-r", help="LoRA rank."),
        targets: str = typer.Option("all-linear", "--targets", help="Comma list of module names, or all-linear."),
        batch: int = typer.Option(8, "--batch", help="Micro-batch size."),
        seq_len: int = typer.Option(512, "--seq-len", help="Sequence length in tokens."),
        grad_ckpt: bool = typer.Option(False, "--grad-ckpt/--no-grad-ckpt", help="Gradient checkpointing."),
        dtype: str = typer.Option(None, "--dtype", help="fp32, bf16 or fp16; default bf16 on cuda, fp32 on cpu."),
        optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or adamw8bit."),
        device: str = typer.Option("cuda", "--device", help="cuda (plan a GPU) or cpu (predict peak RSS here)."),
        gpus: int = typer.Option(1, "--gpus", help="Training processes (GPUs); figures are per process."),
        distributed: str = typer.Option("ddp", "--distributed", help="With --gpus > 1, as train.distributed: ddp "
                                        "(every process holds everything) or fsdp (full and lora shard weights, "
                                        "gradients and optimizer states over the processes)."),
        lora_dropout: float = typer.Option(LORA_DROPOUT, "--lora-dropout",
                                           help="LoRA dropout (p > 0 keeps extra activations)."),
        grad_accum: int = typer.Option(1, "--grad-accum"),
        target_share: float = typer.Option(1.0, "--target-share", help="Share of tokens that are loss targets "
                                           "(completion tokens); logits are computed only there. 1 = every "
                                           "token, the upper bound."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """Exact parameter counts (no weights loaded) and peak memory for full / LoRA / QLoRA, with the fits table."""
        from tunewise.estimate import EstimateRequest, run_estimate

        req = EstimateRequest(model=model, methods=parse_methods(method), rank=rank, targets=targets, batch=batch,
                              seq=seq_len, grad_ckpt=grad_ckpt, dtype=dtype, optimizer=optimizer,
                              device=device.lower(), gpus=gpus, distributed=distributed.lower(), lora_dropout=lora_dropout, grad_accum=grad_accum,
                              target_share=target_share)
        result = run_estimate(req)
        if as_json:
            typer.echo(json.dumps(result.as_dict(), indent=2))
        else:
            render(result)
