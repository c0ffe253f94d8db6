from .hooks import EpochHook, PlotMetricsHook
from .schedule import count_train_images, epoch_of_iteration, resolve_schedule
from .trainer import DigitTrainer
