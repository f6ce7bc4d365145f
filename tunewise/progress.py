"""Progress bars for the long phases (eval's scoring, retention probes, analysis, GGUF conversion): tqdm, the bars
training shows, on stderr with a count, a rate and an ETA. None when stderr is not a terminal (logs and pipes stay
clean), nor inside `quiet()` (a command's --quiet).

tqdm is imported when a bar is drawn: the CLI imports this module at start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

_silenced = 0  # nesting depth of quiet()


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No bars inside this block (when `on`)."""
    global _silenced
    _silenced += bool(on)
    try:
        yield
    finally:
        _silenced -= bool(on)


def shown() -> bool:
    """Are bars on (for a library's own bar switch, e.g. gguf's writer)?"""
    return not _silenced and sys.stderr.isatty()


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    """A tqdm bar (`update(n)`, `close()`); a disabled one, which does nothing, when bars are off. It disappears
    when closed: the phase's result is what stays on the screen."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=True if _silenced else None, leave=False,
                dynamic_ncols=True, mininterval=1.0)
