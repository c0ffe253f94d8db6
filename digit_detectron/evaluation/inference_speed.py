"""Inference throughput of an evaluation run, reported next to its accuracy."""

import time

import detectron2.utils.comm as comm
from detectron2.evaluation import DatasetEvaluator


class InferenceSpeedEvaluator(DatasetEvaluator):
    """
    Images per second of the evaluation loop (data loading, model and the other evaluators'
    ``process`` included), from ``reset`` to ``evaluate``: ``{"speed": {"images_per_s": x}}``.
    """

    def reset(self):
        self._start = time.perf_counter()
        self._count = 0

    def process(self, inputs, outputs):
        self._count += len(inputs)

    def evaluate(self):
        elapsed = time.perf_counter() - self._start
        counts = comm.gather((self._count, elapsed), dst=0)
        if not comm.is_main_process():
            return {}
        images = sum(c for c, _ in counts)
        seconds = max(s for _, s in counts)
        return {"speed": {"images_per_s": images / seconds if seconds > 0 else float("nan")}}
