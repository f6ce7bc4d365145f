"""`tunewise doctor`: what this machine has and which device/dtype policy applies.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
import os
import platform

import typer
from rich.console import Console
from rich.table import Table

from tunewise.zoo import TINY_DIR


def doctor_report() -> dict:
    import torch

    from tunewise.device import dtype_name, policy

    pol = policy()
    info: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "policy": {"device": str(pol.device), "dtype": dtype_name(pol.dtype), "reason": pol.reason},
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0"),
    }
    try:
        import psutil

        info["ram_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["ram_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    for pkg in ("transformers", "peft", "accelerate", "bitsandbytes", "datasets"):
        try:
            mod = __import__(pkg)
            info[pkg] = getattr(mod, "__version__", "?")
        except Exception as e:  # a broken optional install should be reported, not crash doctor
            info[pkg] = f"unavailable ({type(e).__name__})"
    info["bitsandbytes_backend"] = "cuda" if torch.cuda.is_available() else "cpu (NF4 with fp32 compute)"
    info["tiny_base"] = str(TINY_DIR) if (TINY_DIR / "model.safetensors").exists() else "missing"
    return info


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """Print torch / CUDA / bitsandbytes backend / RAM / cores and the device-dtype policy that applies."""
        info = doctor_report()
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        table = Table(title="tunewise doctor", show_header=False)
        for key, value in info.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            table.add_row(key, str(value))
        Console().print(table)
