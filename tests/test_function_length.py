"""No function in the package is longer than MAX_LINES (decorators excluded, docstring included): a longer one
does several jobs, which get names of their own. Nested functions count on their own and inside their parent."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tunewise"
MAX_LINES = 60


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function or method over `limit` lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                out.append((node.name, node.lineno, length))
    return out


def test_no_function_in_the_package_is_over_the_limit():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} {name}: {length} lines"
             for path in sorted(PACKAGE.rglob("*.py"))
             for name, line, length in long_functions(path.read_text())]
    assert found == [], f"over {MAX_LINES} lines; split into named steps:\n" + "\n".join(found)


def test_the_count_sees_methods_and_nested_functions():
    source = ("class A:\n"
              "    @property\n"
              "    def m(self):\n"
              "        a = 1\n"
              "        def inner():\n"
              "            b = 2\n"
              "            c = 3\n"
              "            return b + c\n"
              "        return a + inner()\n")
    assert long_functions(source, limit=6) == [("m", 3, 7)]
    assert long_functions(source, limit=3) == [("m", 3, 7), ("inner", 5, 4)]
