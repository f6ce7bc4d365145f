"""Figures and retention changes in words, as every table shows them (HTML report, compare and train output)."""

from __future__ import annotations


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
    out = {}
    for probe, c in (retention or {}).items():
        rel = c.get("rel_change")
        if rel is None:  # measured from zero (kl): the absolute change is the reading
            if c.get("abs_change") is not None:
                out[probe] = f"{c['abs_change']:+.3g} from 0"
            continue
        better = rel if c.get("higher_is_better", True) else -rel
        out[probe] = "unchanged" if abs(better) < 0.005 else f"{abs(better):.0%} {'better' if better > 0 else 'worse'}"
    return out
