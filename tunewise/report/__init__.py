"""`tunewise report`: one self-contained HTML file (plots embedded) for a run or a comparison."""

from tunewise.report.html import write_report

__all__ = ["write_report"]
