"""Inference on image files: the batched predictor, the Python API, reader tuning and the HW2 submission files."""

from ..modeling.number_reader import NumberReader
from .predictor import DigitPredictor

__all__ = ["DigitPredictor", "NumberReader"]
