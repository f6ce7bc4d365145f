"""Rewrite the README's demo block from a fresh `tunewise demo`, so the table and verdict it shows cannot go stale.

    make readme                 # runs the demo (reusing finished runs under runs/demo) and rewrites the block

The block sits between the markers `<!-- demo:begin -->` and `<!-- demo:end -->`; everything the demo prints goes
in, verbatim (progress bars aside), with `$ make demo` as its first line. The write is atomic.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"


def demo_output() -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="150", TERM="dumb")
    proc = subprocess.run([sys.executable, "-m", "tunewise", "demo"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)
    lines = [ln for ln in proc.stdout.splitlines() if "\r" not in ln and "it/s]" not in ln and "step/s]" not in ln]
    return "\n".join(lines).rstrip() + "\n"


def rewrite(readme: Path, output: str) -> None:
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} block to rewrite")
    block = f"{BEGIN}\n```\n$ make demo\n{output}```\n{END}"
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(pattern.sub(lambda _: block, text))
    tmp.replace(readme)


if __name__ == "__main__":
    rewrite(ROOT / "README.md", demo_output())
    print("README.md: demo block rewritten from a fresh run")
