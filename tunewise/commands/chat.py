"""`tunewise chat`: talk to a base, a run or an adapter from the terminal, one-shot or interactive.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def chat(
        target: str = typer.Argument(..., help="A base ('tiny', 'smollm2', a folder), a run directory or an "
                                               "adapter folder."),
        prompt: str = typer.Option(None, "--prompt", "-p", help="Ask this once, print the answer and exit."),
        system: str = typer.Option(None, help="A system message first (models with a chat template)."),
        base: str = typer.Option(None, help="The base an adapter or a run is applied to (default: the one it "
                                            "names)."),
        step: int = typer.Option(None, help="A run's checkpoint N instead of its final adapter.", min=1),
        max_new_tokens: int = typer.Option(256, help="Longest answer in tokens.", min=1, max=8192),
    ) -> None:
        """Stream a model's answers (greedy, through the generation engine). Without --prompt, an interactive
        conversation: each answer sees the conversation so far (on a model with a chat template); an empty
        line or Ctrl-D ends it."""
        from tunewise.evaluate.chat import reply, templated
        from tunewise.evaluate.runner import load_target
        from tunewise.targets import at_step

        loaded = load_target(at_step(target, step), base)
        messages = [{"role": "system", "content": system}] if system and templated(loaded.tokenizer) else []
        if prompt is not None:
            _answer(loaded, messages + [{"role": "user", "content": prompt}], max_new_tokens, reply)
            return
        typer.echo(f"chatting with {loaded.name} (an empty line or Ctrl-D ends)", err=True)
        while (line := _read()) is not None:
            messages.append({"role": "user", "content": line})
            answer = _answer(loaded, messages, max_new_tokens, reply)
            messages.append({"role": "assistant", "content": answer})


def _read() -> str | None:
    try:
        line = input("you> ").strip()
    except EOFError:
        return None
    return line or None


def _answer(loaded, messages: list[dict], max_new_tokens: int, reply) -> str:
    parts = []
    for piece in reply(loaded, messages, max_new_tokens):
        parts.append(piece)
        typer.echo(piece, nl=False)
    typer.echo()
    return "".join(parts)
