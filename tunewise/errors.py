"""User-facing errors: one clear line that says what was wrong, where, and what to do."""

from __future__ import annotations


class TunewiseError(Exception):
    """An error caused by the user's input; the CLI prints it as one line (no traceback) and exits 2."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class ConfigError(TunewiseError):
    """Config validation failed; carries every problem found, not just the first."""

    def __init__(self, problems: list[str] | str, source: str | None = None, hint: str | None = None,
                 what: str = "the config"):
        # one problem given as a string is one problem (iterating it would list one character per line)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"{source}: " if source else ""
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s) in {what}:\n{body}", hint)
