"""The shipped tiny base model and the script that builds it (`python -m tunewise.zoo.build`)."""

from pathlib import Path

TINY_DIR = Path(__file__).parent / "tiny"
