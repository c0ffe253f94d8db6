"""Inference on image files: the batched predictor, the number reader and the HW2 submission files."""

from .number_reader import NumberReader
from .predictor import DigitPredictor

__all__ = ["DigitPredictor", "NumberReader"]
