"""The task vocabulary: built-in tasks, advise's task names, and the kind of work each is (the seed's three
families: representation/formatting, SQL, reasoning). One map each; compare, the pilot, advise and the study read
them from here."""

from __future__ import annotations

KINDS = ("representation", "sql", "reasoning", "other")

# advise's task names (the rule table's vocabulary) and the kind of each
ADVISE_TASK_KIND = {
    "classification": "representation", "structured": "representation", "style": "representation",
    "domain": "representation", "sql": "sql", "code": "other", "math": "reasoning", "logic": "reasoning",
    "open-ended": "other",
}

# built-in tasks (tunewise tasks make) -> advise's task name
BUILTIN_ADVISE_TASK = {"structured": "structured", "classify": "classification", "sql": "sql", "math": "math",
                       "math-hard": "math", "math-chain": "math"}

# each kind's representative advise task, for user data described only by its kind
KIND_ADVISE_TASK = {"representation": "structured", "sql": "sql", "reasoning": "math", "other": "open-ended"}


def kind_of(task: str | None) -> str:
    """The kind of a built-in task or an advise task name; 'other' for anything else (user data)."""
    advise_task = BUILTIN_ADVISE_TASK.get(task or "", task or "")
    return ADVISE_TASK_KIND.get(advise_task, "other")


def advise_task_of(task: str | None, kind: str | None = None) -> str:
    """advise's task name for a built-in task, else for the kind given, else open-ended."""
    if task in BUILTIN_ADVISE_TASK:
        return BUILTIN_ADVISE_TASK[task]
    return KIND_ADVISE_TASK.get(kind or "", "open-ended")


def tasks_of_kind(kind: str) -> frozenset[str]:
    """advise's task names of one kind (e.g. the representation tasks)."""
    return frozenset(t for t, k in ADVISE_TASK_KIND.items() if k == kind)
