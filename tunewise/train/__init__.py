"""`tunewise train`: LoRA, QLoRA and full fine-tuning in one loop (see loop.py), with guardrails and exact resume."""

from tunewise.train.run import TrainResult, train

__all__ = ["TrainResult", "train"]
