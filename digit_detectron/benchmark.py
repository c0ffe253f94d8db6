"""Training / inference throughput of a config on this machine."""
import os
import platform
import resource
import statistics
import time

import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from .data import DigitDatasetMapper


def machine_info():
    """CPU model, threads and versions, for the tables the benchmarks print."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def peak_rss_mb():
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _batches(cfg, dataset_name, is_train, batch_size, num_images):
    mapper = DigitDatasetMapper(cfg, is_train=is_train)
    dicts = DatasetCatalog.get(dataset_name)
    if is_train:
        dicts = [d for d in dicts if d.get("annotations")]
    if not dicts:
        raise ValueError(f"dataset {dataset_name} has no usable image")
    items = [mapper(dicts[i % len(dicts)]) for i in range(num_images)]
    return [items[i : i + batch_size] for i in range(0, num_images, batch_size)]


def benchmark(cfg, task="train", dataset_name=None, num_images=64, batch_size=None, warmup=2):
    """
    Time ``task`` ("train": forward + backward + AdamW step; "inference": eval forward) on
    pre-decoded batches, so the numbers are the model's. Returns a dict of seconds per iteration
    (median), images/s, peak RSS and the machine.
    """
    is_train = task == "train"
    batch_size = batch_size or (cfg.SOLVER.IMS_PER_BATCH if is_train else 8)
    dataset_name = dataset_name or (cfg.DATASETS.TRAIN[0] if is_train else cfg.DATASETS.TEST[0])
    batches = _batches(cfg, dataset_name, is_train, batch_size, max(num_images, batch_size) + warmup * batch_size)
    model = build_model(cfg)
    model.train(is_train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if is_train else None
    times = []
    with EventStorage(0):
        for i, batch in enumerate(batches):
            start = time.perf_counter()
            if is_train:
                loss = sum(model(batch).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            else:
                with torch.no_grad():
                    model(batch)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    if not times:
        raise ValueError("too few images for the warm-up: raise num_images")
    s_per_iter = statistics.median(times)
    return {
        "task": task,
        "dataset": dataset_name,
        "batch_size": batch_size,
        "iterations_timed": len(times),
        "s_per_iter": s_per_iter,
        "images_per_s": batch_size / s_per_iter,
        "peak_rss_mb": peak_rss_mb(),
        **machine_info(),
    }
