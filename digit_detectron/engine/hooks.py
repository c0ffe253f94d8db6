"""Training hooks of DigitTrainer."""

import logging
import os
import time

from detectron2.engine import HookBase
from detectron2.utils import comm

from .plots import MetricsError, plot_metrics
from .schedule import epoch_of_iteration

logger = logging.getLogger(__name__)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class EpochHook(HookBase):
    """
    Log the epoch and the wall time every iteration, and tell modules with ``set_epoch`` (the ROI
    heads) which epoch it is.
    """

    def __init__(self, iters_per_epoch):
        self.iters_per_epoch = iters_per_epoch
        self._start = None

    def before_train(self):
        self._start = time.perf_counter()

    def before_step(self):
        epoch = epoch_of_iteration(self.trainer.iter, self.iters_per_epoch)
        model = _unwrap(self.trainer.model)
        told = []  # modules told; their submodules (e.g. the ROI heads' box predictor) hear it from them
        for name, module in model.named_modules():
            if module is model or not hasattr(module, "set_epoch") or any(name.startswith(t + ".") for t in told):
                continue
            module.set_epoch(epoch)
            told.append(name)
        storage = self.trainer.storage
        storage.put_scalar("epoch", self.trainer.iter / self.iters_per_epoch, smoothing_hint=False)
        # Minutes since this process started training (evaluation included), for learning curves.
        storage.put_scalar("wall_minutes", (time.perf_counter() - self._start) / 60, smoothing_hint=False)


class PlotMetricsHook(HookBase):
    """Draw the PNGs of tools/plot_metrics.py from OUTPUT_DIR/metrics.json when training ends."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def after_train(self):
        metrics = os.path.join(self.output_dir, "metrics.json")
        if not comm.is_main_process() or not os.path.isfile(metrics):
            return
        try:
            pngs = plot_metrics(metrics, os.path.join(self.output_dir, "plots"))
        except MetricsError as e:  # the model is saved already: a plot is not worth failing for
            logger.warning(f"No training plots: {e}")
            return
        logger.info("Training plots: " + ", ".join(pngs))
