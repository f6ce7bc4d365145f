"""`tunewise export`: a model or adapter as GGUF for llama.cpp / Ollama.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from tunewise.commands.eval import STEP_HELP
from tunewise.errors import TunewiseError
from tunewise.userfiles import check_output


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        target: str = typer.Argument(..., help="Run directory, PEFT adapter folder, model folder, or a base alias "
                                     "(tiny, smollm2)."),
        step: int | None = typer.Option(None, "--step", min=0, help=STEP_HELP),
        fmt: str = typer.Option("gguf", "--format", help="gguf: the whole model (an adapter is merged into its "
                                "base first); gguf-lora: the adapter alone, for llama.cpp --lora / Ollama ADAPTER."),
        out: Path = typer.Option(..., "--out", help="File to write (.gguf)."),
        quant: str | None = typer.Option(None, "--quant", help="Tensor type: f16 (default for gguf), q8_0, bf16, "
                                         "f32; gguf-lora: f32 (default) or f16. Norms stay f32."),
        base: str | None = typer.Option(None, "--base", help="Base of an adapter (default: the one it names)."),
        tolerance: float | None = typer.Option(None, "--tolerance", help="Max abs logit difference allowed between "
                                               "the GGUF (read back by transformers) and the model with its weights "
                                               "rounded as the file stores them (default 1e-4); what the rounding "
                                               "costs against the model itself is reported."),
        verify: bool = typer.Option(True, "--verify/--no-verify", help="Read the GGUF back with transformers and "
                                    "compare logits, tokenizer and chat template (gguf)."),
        force: bool = typer.Option(False, "--force", help="Overwrite --out; keep a file that fails the check."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Export a model (or an adapter merged into its base) as one GGUF file in llama.cpp's layout, or an
        adapter alone as a GGUF LoRA. Llama-architecture models with byte-level BPE tokenizers."""
        from tunewise.export.run import DEFAULT_QUANT, FORMATS, export_gguf, export_gguf_lora
        from tunewise.targets import at_step

        if fmt not in FORMATS:
            raise TunewiseError(f"--format {fmt} is not one of {', '.join(FORMATS)}", "pick one of those")
        check_output(out, "--out", "file")
        quant, target = quant or DEFAULT_QUANT[fmt], at_step(target, step)
        if fmt == "gguf":
            r = export_gguf(target, out, quant=quant, base=base, tolerance=tolerance, verify=verify, force=force)
        else:
            r = export_gguf_lora(target, out, quant=quant, base=base, force=force)
        if as_json:
            typer.echo(json.dumps(asdict(r), indent=2))
            return
        size = f"{r.bytes / 2**20:.1f} MiB"
        typer.echo(f"wrote {r.out} ({r.format}, {r.quant}, {r.tensors} tensors, {size}) from {r.source} {r.target}")
        if r.format == "gguf":
            typer.echo(f"tokenizer: byte-level BPE, llama.cpp pre-tokenizer '{r.pre_tokenizer}'; chat template: "
                       f"{'yes' if r.chat_template else 'none'}")
            if r.verified is not None:
                typer.echo(f"read back by transformers: max |logit diff| {r.file_diff:.3g} vs the weights rounded "
                           f"to {r.quant} (tolerance {r.tolerance:g}); tokenizer "
                           f"{'equal' if r.tokenizer_equal else 'DIFFERENT'}, chat template "
                           f"{'equal' if r.chat_template_equal else 'DIFFERENT'}")
                typer.echo(f"cost of {r.quant} against the model: max |logit diff| {r.max_abs_diff:.3g}, same top "
                           f"token at {r.top1_agreement:.1%} of probe positions")
        else:
            typer.echo(f"adapter.lora.alpha = {r.lora_alpha:g}; load it on the base's GGUF: "
                       f"tunewise export {r.base} --out base.gguf, then llama-cli -m base.gguf --lora {r.out}")
        for line in r.problems + r.notes:
            typer.echo(f"  {line}")
