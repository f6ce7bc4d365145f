"""One module per CLI command; each exposes `register(app)`.

`tunewise --help` imports every module here, so a command module imports at its top only what start-up loads anyway
(typer, rich, pydantic, and tunewise's errors, defaults, inputs, fileio, userfiles); the modules that do a command's
work, and torch with them, are imported inside the command's function. tests/test_imports.py checks that --help
loads no torch.
"""
