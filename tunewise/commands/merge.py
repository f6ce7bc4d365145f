"""`tunewise merge`: fold an adapter into its base; write a verified safetensors model folder.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from tunewise.commands.eval import STEP_HELP
from tunewise.defaults import MERGE_TOLERANCE
from tunewise.userfiles import check_output


def register(app: typer.Typer) -> None:
    @app.command()
    def merge(
        tuned: Path = typer.Argument(..., help="Run directory (with adapter/) or PEFT adapter folder."),
        step: int | None = typer.Option(None, "--step", min=0, help=STEP_HELP),
        out: Path = typer.Option(..., "--out", help="Folder to write the merged model (+ tokenizer) to."),
        base: str | None = typer.Option(None, "--base", help="Base to merge into (default: the one the run or "
                                        "adapter names)."),
        tolerance: float = typer.Option(MERGE_TOLERANCE, "--tolerance", help="Max abs logit difference allowed between "
                                        "the merged model and the adapter model (LoRA); fp32 rounding alone is "
                                        "~1e-4 on a 30-layer model."),
        qlora: bool | None = typer.Option(None, "--qlora/--no-qlora", help="Treat the adapter as QLoRA (default: "
                                          "from the run's config.yaml)."),
        dtype: str | None = typer.Option(None, "--dtype", help="Precision to write: fp32, bf16 or fp16 (default: "
                                         "the base's own, from its config.json). The merge is done and checked "
                                         "in fp32 either way."),
        force: bool = typer.Option(False, "--force", help="Overwrite --out; keep a merge over the tolerance."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Merge a LoRA/QLoRA adapter into its base; reload the result and check it matches the adapter model.

        QLoRA adapters are merged into the de-quantised base (what they were trained against) and the
        difference to the 4-bit adapter model is reported.
        """
        from tunewise.merge import merge_adapter
        from tunewise.targets import at_step

        check_output(out, "--out", "dir")  # before loading two models, not after
        r = merge_adapter(at_step(tuned, step), out, base=base, tolerance=tolerance, qlora=qlora, force=force, dtype=dtype)
        if as_json:
            typer.echo(json.dumps(asdict(r), indent=2))
            return
        typer.echo(f"merged {r.method} adapter {r.adapter} into {r.base} -> {r.out} (safetensors, {r.dtype})")
        verdict = "within" if r.verified else "OVER"
        if r.merge_diff is None:
            typer.echo(f"max |logit diff| vs the adapter model on {r.probes} probes: {r.max_abs_diff:.3g} "
                       f"({verdict} tolerance {r.tolerance:g})")
        else:
            typer.echo(f"max |logit diff| vs the adapter model on {r.probes} probes: fp32 merge {r.merge_diff:.3g}, "
                       f"file vs the rounded merge {r.file_diff:.3g} ({verdict} tolerance {r.tolerance:g}); "
                       f"after rounding to {r.dtype}: {r.max_abs_diff:.3g} (reported)")
        if r.diff_if_merged_into_original_base is not None:
            typer.echo(f"merging into the original (not de-quantised) base would differ by "
                       f"{r.diff_if_merged_into_original_base:.3g}")
        typer.echo(f"load it with AutoModelForCausalLM.from_pretrained('{r.out}')")
