"""tunewise: the LoRA decision framework as a tool."""

__version__ = "0.1.0"
