"""`tunewise serve`: one base, many LoRA adapters chosen per request, behind an OpenAI-compatible API.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import typer

from tunewise.errors import TunewiseError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_adapter_specs(specs: list[str], step: int | None = None) -> dict[str, Path]:
    """'name=path' pairs from --adapter, with a clear error for a malformed one; with --step N, the one adapter
    (a run directory) is its checkpoint N."""
    from tunewise.targets import at_step

    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise TunewiseError(f"--adapter '{spec}' is not NAME=PATH", "e.g. --adapter sql=runs/sql-lora/adapter")
        if name in out:
            raise TunewiseError(f"--adapter names '{name}' twice", "give each adapter its own name")
        out[name] = Path(path)
    if step is not None:
        if len(out) != 1:
            raise TunewiseError(f"--step {step} needs exactly one --adapter NAME=RUN (got {len(out)})",
                                "for several checkpoints, give each --adapter NAME=RUN/checkpoints/step-N")
        return {name: Path(at_step(path, step)) for name, path in out.items()}
    return out


def bind(host: str, port: int):
    """The listening socket, bound now: 'listening on' is printed only once it is true."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise TunewiseError(f"--host '{host}' is not an address this machine can bind ({e})",
                            "use 127.0.0.1, 0.0.0.0 or this machine's address") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        taken = e.errno in (98, 48)  # EADDRINUSE on Linux / macOS
        raise TunewiseError(f"cannot listen on {host}:{port}: " + ("the port is taken by another program" if taken
                            else e.strerror or str(e)),
                            "choose another --port" if taken else "check --host and --port") from None
    return sock


def graceful_server(config):
    """A uvicorn server for which SIGTERM / SIGINT mean: stop accepting, let in-flight requests finish (up to
    config.timeout_graceful_shutdown), then return, so the command exits 0. uvicorn itself re-raises the
    signal after its shutdown, which would end the process with 143 and look like a crash to a supervisor."""
    import uvicorn

    class Graceful(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting
            else:
                self.should_exit = True

    return Graceful(config)


def serve(
    base: str = typer.Option("tiny", "--base", help="Base model: 'tiny', a model folder or a hub id."),
    adapters: Path | None = typer.Option(None, "--adapters", help="Registry folder: one sub-folder per "
                                         "adapter; the folder name is the model id clients ask for."),
    adapter: list[str] = typer.Option([], "--adapter", help="NAME=PATH of one more adapter (repeatable); "
                                      "PATH may be a run directory."),
    step: int | None = typer.Option(None, "--step", min=0, help="With one --adapter NAME=RUN: serve the adapter "
                                    "of the run's checkpoint N (RUN/checkpoints/step-N) instead of its final one."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; loopback only by default."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port (1-65535)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="TUNEWISE_API_KEY",
                                       help="Require 'Authorization: Bearer KEY' on every route but /health."),
    max_loaded: int = typer.Option(8, "--max-loaded", min=1, help="Adapters kept in memory (LRU)."),
    pin: list[str] = typer.Option([], "--pin", help="Adapter to keep loaded, never evicted (repeatable)."),
    allow_runtime_paths: bool = typer.Option(False, "--allow-runtime-paths",
                                             help="Let POST /admin/adapters/load take a filesystem path."),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1, help="Larger request bodies get 413."),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="Largest max_tokens a request may ask for."),
    max_context: int | None = typer.Option(None, "--max-context", min=1,
                                           help="Prompt + max_tokens limit (default: the base's)."),
    max_concurrent: int = typer.Option(64, "--max-concurrent", min=1, help="Requests in flight (body received) "
                                       "before 429."),
    body_timeout: float = typer.Option(10.0, "--body-timeout", min=0.1, max=3600, help="Seconds a request's body "
                                       "may take to arrive before 408 (slow clients hold no slot meanwhile)."),
    max_request_rows: int = typer.Option(256, "--max-request-rows", min=1, help="Rows (prompts x n) one request "
                                         "may ask for; more is a 400."),
    max_queued_rows: int = typer.Option(1024, "--max-queued-rows", min=1, help="Rows queued or generating for all "
                                        "requests together; past it, 429."),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Rows per forward pass."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0, max=60_000, help="How long a batch waits to fill."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N (default: the device policy)."),
    dtype: str | None = typer.Option(None, help="fp32, bf16, fp16 (default: the device policy)."),
    grace_period: int = typer.Option(30, "--grace-period", min=0,
                                     help="Seconds SIGTERM waits for in-flight requests before cancelling them."),
) -> None:
    """Serve BASE and its LoRA adapters with OpenAI-compatible /v1/completions and /v1/chat/completions.

    The request's `model` names an adapter or the base; requests for different adapters share one forward
    pass. Adapters are checked against the base before loading (base, modules, rank, dtype, safetensors).
    SIGTERM stops accepting connections, finishes in-flight requests (up to --grace-period) and exits 0.
    """
    from tunewise.serve.security import Limits

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    specs = parse_adapter_specs(adapter, step)
    _check_exposure(adapters, host, api_key)
    sock = bind(host, port)  # first: a taken port is said before minutes of model loading
    server = _load(sock, base, adapters, specs, max_loaded=max_loaded, pins=pin,
                   allow_runtime_paths=allow_runtime_paths, device=device, dtype=dtype, max_batch=max_batch,
                   batch_wait_ms=batch_wait_ms)
    limits = Limits(api_key=api_key or os.environ.get("TUNEWISE_API_KEY") or None,
                    max_body_bytes=max_body_bytes, body_timeout_s=body_timeout, max_concurrent=max_concurrent,
                    max_request_rows=max_request_rows, max_queued_rows=max_queued_rows, max_tokens=max_tokens,
                    max_context=max_context)
    _run(server, limits, sock, host, port, grace_period)


def register(app: typer.Typer) -> None:
    app.command()(serve)


def _check_exposure(adapters: Path | None, host: str, api_key: str | None) -> None:
    """--adapters is a folder; a non-loopback --host without --api-key is warned about."""
    if adapters is not None and not adapters.is_dir():
        raise TunewiseError(f"--adapters '{adapters}' is not a folder", "give the folder that holds one "
                            "sub-folder per adapter")
    if host not in LOOPBACK and not api_key:
        typer.secho(f"warning: binding {host} without --api-key: anyone who can reach this port can use it",
                    fg="yellow", err=True)


def _load(sock, base: str, adapters: Path | None, specs: dict[str, Path], **options):
    """The loaded server; an adapter refused at start closes the socket and ends the command."""
    from tunewise.adapters import AdapterRefused
    from tunewise.serve.app import build_server

    try:
        return build_server(base, adapters, specs, **options)
    except AdapterRefused as e:
        sock.close()
        raise TunewiseError(e.reason, "fix or remove that adapter") from e


def _run(server, limits, sock, host: str, port: int, grace_period: int) -> None:
    """Say what is served, then serve until SIGTERM / SIGINT."""
    import uvicorn

    from tunewise.serve.app import create_app

    names = sorted(server.registry.entries())
    typer.echo(f"serving base '{server.base_name}' with {len(names)} adapter(s): {', '.join(names) or '-'}")
    for name, reason in server.registry.refused.items():
        typer.secho(f"refused adapter '{name}': {reason}", fg="yellow", err=True)
    typer.echo(f"listening on http://{host}:{port}/v1 (api key {'required' if limits.api_key else 'off'})")
    try:
        config = uvicorn.Config(create_app(server, limits), log_level="warning",
                                timeout_graceful_shutdown=grace_period)
        graceful_server(config).run(sockets=[sock])
    finally:
        server.close()
        sock.close()
    typer.echo("stopped")
