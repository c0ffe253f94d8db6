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


# What the phases after training will read, for the remaining-time estimate (``RemainingTimeHook``):
# "IMAGES,SECONDS" (images inferred after training, and seconds of fixed work such as tool start-up
# and the export), set by tools/demo.py.
LATER_WORK_ENV = "DIGITS_LATER_WORK"
# Until the first evaluation has been timed, inference is assumed this many times faster per image
# than a training step (forward only, no backward, fewer proposals).
INFERENCE_SPEEDUP_GUESS = 3.0


def parse_later_work(value):
    """(images, seconds) from LATER_WORK_ENV's "IMAGES,SECONDS"; (0, 0.0) when unset or malformed."""
    try:
        images, seconds = value.split(",")
        return max(int(images), 0), max(float(seconds), 0.0)
    except (AttributeError, ValueError):
        return 0, 0.0


def remaining_time(steps_left, s_per_step, evals_left, eval_images, later_images, later_s, s_per_image):
    """Seconds left: ``(total, training, evaluations, later phases)``."""
    training = steps_left * s_per_step
    evaluations = evals_left * eval_images * s_per_image
    later = later_images * s_per_image + later_s
    return training + evaluations + later, training, evaluations, later


class RemainingTimeHook(HookBase):
    """
    Print an estimate of the time left for the whole job (training, the evaluations during it, and the
    later phases of LATER_WORK_ENV) after ``first`` steps and after each evaluation: steps are timed as
    they run; the time per inferred image comes from the last evaluation's wall time once there was
    one (before that, a training step's time per image / INFERENCE_SPEEDUP_GUESS).
    """

    def __init__(self, max_iter, eval_period, eval_images, later_images, later_s, first=30, label="demo"):
        self.max_iter, self.eval_period, self.eval_images = max_iter, eval_period, eval_images
        self.later_images, self.later_s, self.first, self.label = later_images, later_s, first, label
        self._steps = []  # (iteration, seconds) of steps without an evaluation
        self._s_per_image = None
        self._last = None

    def before_step(self):
        self._last = time.perf_counter()

    def after_step(self):
        # Runs after EvalHook: a step with an evaluation includes its time.
        it = self.trainer.iter + 1
        seconds = time.perf_counter() - self._last
        evaluated = self.eval_period > 0 and it % self.eval_period == 0 and it != self.max_iter
        if evaluated:
            step = self._s_per_step() or 0.0
            if self.eval_images:
                self._s_per_image = max(seconds - step, 0.0) / self.eval_images
        elif it > 2:  # the first steps warm up
            self._steps.append(seconds)
        if it == self.first or evaluated:
            self.report(it)

    def _s_per_step(self):
        recent = self._steps[-50:]
        return sum(recent) / len(recent) if recent else None

    def report(self, it):
        s_per_step = self._s_per_step()
        if s_per_step is None:
            return
        batch = self.trainer.cfg.SOLVER.IMS_PER_BATCH if hasattr(self.trainer, "cfg") else 8
        s_per_image = self._s_per_image or s_per_step / max(batch, 1) / INFERENCE_SPEEDUP_GUESS
        measured = "measured" if self._s_per_image else "estimated"
        evals_left = sum(1 for i in range(it + 1, self.max_iter) if self.eval_period and i % self.eval_period == 0)
        total, training, evaluations, later = remaining_time(
            self.max_iter - it, s_per_step, evals_left, self.eval_images, self.later_images, self.later_s, s_per_image
        )
        logger.info(
            f"[{self.label}] about {total / 60:.0f} min left: training {training / 60:.1f} min "
            f"({self.max_iter - it} steps at {s_per_step:.2f} s), {evals_left} evaluation(s) "
            f"{evaluations / 60:.1f} min, then the later phases {later / 60:.1f} min "
            f"({self.later_images} images at {1 / s_per_image:.0f} images/s, {measured}, + {self.later_s:.0f} s)"
        )
