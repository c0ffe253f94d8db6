"""Training: DigitTrainer, its hooks, the epoch schedule and the backbone pre-training warm start."""

from .hooks import EpochHook, PlotMetricsHook
from .schedule import count_train_images, epoch_of_iteration, resolve_schedule
from .trainer import DigitTrainer

__all__ = [
    "EpochHook",
    "PlotMetricsHook",
    "count_train_images",
    "epoch_of_iteration",
    "resolve_schedule",
    "DigitTrainer",
]
