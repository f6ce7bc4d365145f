"""Moved to tunewise.generate.kv (the one generation engine); kept so serve's imports stay stable."""

from tunewise.generate.kv import check_cache, merge, select_rows, trim

__all__ = ["check_cache", "merge", "select_rows", "trim"]
