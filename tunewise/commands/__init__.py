"""One module per CLI command; each exposes `register(app)` and keeps its imports inside the command."""
