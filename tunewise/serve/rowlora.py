"""Moved to tunewise.generate.rowlora (the one generation engine); kept so serve's imports stay stable."""

from tunewise.generate.rowlora import RowLoRA, covers

__all__ = ["RowLoRA", "covers"]
