"""The package's import layers: a module never imports from a layer above its own, nor from a neighbour in its
layer, so no two parts of tunewise depend on each other. Imports inside functions count: a lazy import is
still a dependency, only a later one.

A part is a top-level module (tunewise/merge.py) or a subpackage (tunewise/serve/); imports inside a part are
its own business. A new part must be placed in LAYERS before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tunewise"

# Bottom first. A part may import any part of a lower layer, none of its own layer or above.
LAYERS: list[list[str]] = [
    ["errors"],
    ["defaults", "fileio", "userfiles", "device", "hf", "progress"],  # leaf helpers
    ["inputs", "results", "decide"],  # the one config loader and its errors; typed results; the call (pure)
    ["config", "yaml_edit", "zoo"],  # typed run config; the shipped bases and their corpus
    ["rundir"],  # a run directory's layout, its config read typed
    ["targets", "ownership"],  # what a model argument names; which folders tunewise wrote
    ["models"],  # what a base name means, loading it
    ["model_size"],  # a base's parameter count on the meta device (the size defaults' input)
    ["adapters"],  # PEFT's adapter format: files, keys, scaling, the delta, the LoRA forward; checked against a base
    ["data", "analysis", "estimate", "stage"],  # records; pure maths; train-evaluate-reuse for compare and continual
    ["tasks", "report", "generate"],  # task generators, scorers, metrics, probes; rendering results as text and
    # HTML; the one generation engine (continuous batching, per-row LoRA)
    ["evaluate", "merge", "serve"],  # running a model on tasks and probes; using an adapter
    ["train", "export"],
    ["advise"],  # the rule table and the pilot, which trains
    ["compare", "continual"],
    ["commands"],
    ["cli"],
    ["__main__"],
]
LAYER_OF = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def part_of(module: str) -> str | None:
    """'tunewise.serve.app' -> 'serve'; None for the package root and for anything outside tunewise."""
    bits = module.split(".")
    if bits[0] != "tunewise" or len(bits) == 1:
        return None
    return bits[1]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = ["tunewise", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in the source, top-level or inside a function; for
    `from a import b` both a and a.b (b may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    me = part_of(module)
    found, seen = [], set()
    for line, target in imported_modules(source, module, is_package):
        other = part_of(target)
        if other is None or other == me or (line, other) in seen:
            continue
        seen.add((line, other))  # `from tunewise.x import a, b` is one dependency
        if me is None:
            found.append(f"{module}:{line} imports {target}: the package root must import nothing of its own")
        elif other not in LAYER_OF:
            found.append(f"{module}:{line} imports {target}, whose part '{other}' has no layer in LAYERS")
        elif LAYER_OF[other] >= LAYER_OF[me]:
            where = "the same layer as" if LAYER_OF[other] == LAYER_OF[me] else "a layer above"
            found.append(f"{module}:{line} imports {target}: '{other}' is in {where} '{me}'")
    return found


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "tiny" not in p.relative_to(PACKAGE).parts)


def test_every_part_has_a_layer():
    parts = {part_of(module_name(p)) for p in package_modules()} - {None}
    assert sorted(parts - set(LAYER_OF)) == [], "add these to LAYERS in tests/test_layers.py"
    assert sorted(set(LAYER_OF) - parts) == [], "LAYERS names parts that no longer exist"


def test_no_module_imports_a_layer_above_its_own():
    found = []
    for path in package_modules():
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from tunewise.compare import verdict\n", ["tunewise.report.html:2 imports tunewise.compare: "
                                                              "'compare' is in a layer above 'report'"]),
    ("import tunewise.serve.registry\n", ["tunewise.report.html:1 imports tunewise.serve.registry: 'serve' is in "
                                         "a layer above 'report'"]),
    ("from tunewise import tasks\n", ["tunewise.report.html:1 imports tunewise.tasks: 'tasks' is in the same "
                                      "layer as 'report'"]),
    ("from ..evaluate import runner\n", ["tunewise.report.html:1 imports tunewise.evaluate: 'evaluate' is in a "
                                         "layer above 'report'"]),
    ("from tunewise.fileio import atomic_write_text\nfrom tunewise.report import plots\nimport json\n", []),
])
def test_the_checker_sees_every_kind_of_import(source, expected):
    assert violations(source, "tunewise.report.html") == expected
