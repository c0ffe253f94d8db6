from .hooks import EpochHook, PlotMetricsHook
from .schedule import count_train_images, resolve_schedule
from .trainer import DigitTrainer
