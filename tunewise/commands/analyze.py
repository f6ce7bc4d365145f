"""`tunewise analyze BASE TUNED...`: intruder dimensions and the spectrum of the update, optional mitigation.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunewise.errors import TunewiseError


def parse_eps(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise TunewiseError(f"--eps '{text}' is not a comma-separated list of numbers", "e.g. --eps 0.3,0.5,0.7") from e
    if not values or any(not 0 < v <= 1 for v in values):
        raise TunewiseError(f"--eps '{text}': every eps must be in (0, 1]", "e.g. --eps 0.5 (the paper's default)")
    return values


def _table(res: dict):
    eps = [str(e) for e in res["eps"]]
    summ = res["summary"]
    modules = sorted(summ["per_module"])
    e0 = eps[0]
    t = Table(title=f"intruder dimensions: {res['tuned']} ({res['kind']}) vs {res['base']} — top-{res['k']}, "
                    f"eps={e0}")
    t.add_column("layer", justify="right")
    for m in modules:
        t.add_column(m, justify="right")
    t.add_column("total", justify="right")
    by = {(str(r["layer"]), r["module"]): r["intruders"][e0] for r in res["matrices"]}
    for layer in sorted(summ["per_layer"], key=lambda x: (x == "none", int(x) if x.isdigit() else 0)):
        cells = [str(by[(layer, m)]) if (layer, m) in by else "-" for m in modules]
        t.add_row(layer, *cells, str(summ["per_layer"][layer][e0]))
    t.add_row("all", *[str(summ["per_module"][m][e0]) for m in modules], str(summ["total"][e0]), style="bold")
    s = Table(title="totals and dW spectrum", show_header=False)
    for e in eps:
        s.add_row(f"intruders (eps={e})",
                  f"{summ['total'][e]} in {summ['matrices_with_intruders'][e]} of {summ['matrices']} matrices")
    if "spectrum" in summ:
        sp = summ["spectrum"]
        s.add_row("effective rank of dW (90% energy)",
                  f"median {sp['effective_rank_90_median']}, max {sp['effective_rank_90_max']}")
        s.add_row("|dW|_F / |W0|_F (mean)", f"{sp['fro_rel_mean']:.4g}")
        s.add_row("|dW|_2 / |W0|_2 (mean)", f"{sp['spectral_rel_mean']:.4g}")
    c = res["cache"]
    s.add_row("base decompositions", f"{c['hits']} from cache, {c['misses']} computed ({res['seconds']} s)")
    return t, s


def analyze(
    base: str = typer.Argument(..., help="The base model: 'tiny', a model folder, or a cached hub id."),
    tuned: list[str] = typer.Argument(..., help="One or more run directories, PEFT adapter folders or full "
                                                "fine-tuned model folders, all tuned from BASE."),
    k: int = typer.Option(10, "--k", help="How many top singular vectors of each tuned matrix to examine."),
    eps: str = typer.Option("0.5", "--eps", help="Intruder threshold(s) on max |cos|, comma-separated."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    plots: Path | None = typer.Option(None, "--plots", help="Write PNG figures into this folder."),
    modules: str | None = typer.Option(None, "--modules", help="Only these module types, e.g. q_proj,v_proj."),
    mitigate: float | None = typer.Option(None, "--mitigate", help="Scale the top intruder of each matrix "
                                          "by LAMBDA (1 = unchanged, 0 = removed) and write a new adapter."),
    out: Path | None = typer.Option(None, "--out", help="Where --mitigate writes the new PEFT adapter."),
    mitigate_all: bool = typer.Option(False, "--mitigate-all", help="Scale every intruder in the top-k, "
                                      "not just the top one (PEFT's behaviour)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the base SVD cache."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for the linear algebra (0 = torch's default; "
                                "1 is much faster on a heavily shared machine)."),
    force: bool = typer.Option(False, "--force", help="--mitigate: write --out even if tunewise did not."),
) -> None:
    """Intruder dimensions and the spectrum of the weight update, per matrix / layer / module type.

    Base decompositions are cached in $TUNEWISE_CACHE/svd (default ~/.cache/tunewise/svd).
    """
    from tunewise.analysis.cache import SvdCache
    from tunewise.analysis.pipeline import analyze as run_analysis
    from tunewise.analysis.weights import open_tuned
    from tunewise.merge import refuse_other_base

    eps_list = parse_eps(eps)
    if threads > 0:
        _limit_threads(threads)
    _check_flags(k, mitigate, out, tuned, force)
    mods = [m.strip() for m in modules.split(",") if m.strip()] if modules else None
    cache = SvdCache(enabled=not no_cache)
    results = []
    for t in tuned:
        refuse_other_base(t, base, "BASE")  # as merge refuses the pair
        tw = open_tuned(base, t)
        results.append(run_analysis(base, t, k=k, eps=eps_list, cache=cache, modules=mods, weights=tw).as_dict())
    payload: dict = {"results": results}
    if plots is not None:
        from tunewise.analysis.plots import all_plots

        names = [Path(t).name or t for t in tuned]
        labels = names if len(set(names)) == len(names) else list(tuned)
        payload["plots"] = [str(p) for p in all_plots(list(zip(labels, results, strict=True)), plots)]
    if mitigate is not None:
        from tunewise.analysis.mitigate import mitigate_adapter

        payload["mitigation"] = mitigate_adapter(open_tuned(base, tuned[0]), out, mitigate, k=k, eps=eps_list[0],
                                                 which="all" if mitigate_all else "top", cache=cache,
                                                 modules=mods)
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    _print(payload)


def register(app: typer.Typer) -> None:
    app.command()(analyze)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except ImportError:
        pass


def _check_flags(k: int, mitigate: float | None, out: Path | None, tuned: list[str], force: bool = False) -> None:
    if k < 1:
        raise TunewiseError(f"--k {k}: must be at least 1", "the paper uses --k 10")
    if (mitigate is None) != (out is None):
        raise TunewiseError("--mitigate and --out go together", "e.g. --mitigate 0.5 --out adapters/mitigated")
    if mitigate is not None and len(tuned) != 1:
        raise TunewiseError("--mitigate takes exactly one TUNED adapter", "run it once per adapter")
    if out is not None:
        from tunewise.ownership import check_dir

        check_dir(out, "mitigated adapter", force=force)  # not another run's adapter: before the SVDs


def _print(payload: dict) -> None:
    console = Console()
    for res in payload["results"]:
        for table in _table(res):
            console.print(table)
        if res["skipped"]:
            console.print(f"skipped: {len(res['skipped'])} tensor(s), e.g. {res['skipped'][0]}")
    for p in payload.get("plots", []):
        console.print(f"plot: {p}")
    if "mitigation" in payload:
        m = payload["mitigation"]
        console.print(f"mitigated adapter written to {m['out']}: lambda={m['lambda']}, {m['intruders_scaled']} "
                      f"intruder(s) scaled in {m['matrices_changed']} matri(ces); re-factorisation to the "
                      f"original rank: max relative error {m['max_rel_error']:.3g}")
