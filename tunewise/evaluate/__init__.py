"""Generation, scoring and retention for any base, adapter or run directory."""
