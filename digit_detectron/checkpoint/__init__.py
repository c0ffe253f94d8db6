"""Loading and saving weights: the project's checkpointer and torchvision -> detectron2 conversion."""

from .digit_checkpointer import CheckpointError, DigitCheckpointer

__all__ = ["CheckpointError", "DigitCheckpointer"]
