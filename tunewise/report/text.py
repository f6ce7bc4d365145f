"""Figures and retention changes in words, as every table shows them (HTML report, compare and train output)."""

from __future__ import annotations

from tunewise.results import RetentionChange


def number_text(value) -> str:
    """How tables show a figure: 4 significant digits, thousands separators, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def retention_words(retention: dict | None) -> dict[str, str]:
    """{probe: '12% worse'}: the sign of a relative change depends on whether higher is better, words do not."""
    return {probe: RetentionChange.from_dict(c).words() for probe, c in (retention or {}).items()}
