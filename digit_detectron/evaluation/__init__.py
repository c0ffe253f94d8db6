"""Evaluators (COCO + recall, number accuracy, images/s, the report) and the drawings they make."""

from .number_accuracy import NumberAccuracyEvaluator, ground_truth_numbers, record_ground_truth

__all__ = ["NumberAccuracyEvaluator", "ground_truth_numbers", "record_ground_truth"]
