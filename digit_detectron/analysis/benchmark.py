"""
Training / inference throughput of a config on this machine, and the timing helpers that
``benchmarks/torchvision_baseline.py`` shares so that both measure the same way on the same images.
"""

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from tabulate import tabulate
from tqdm import tqdm

from ..data import DigitDatasetMapper
from ..data.batching import SizeGroupedBatches
from ..data.image_io import open_image, oriented_size, read_image
from ..engine import DigitTrainer
from ..engine.trainer import apply_training_options
from ..export.runtime import ExportedModel
from ..inference.predictor import DigitPredictor
from ..inference.submission import write_predictions
from ..modeling.number_reader import NumberReader
from ..utils.io import atomic_open, atomic_write_json

TASKS = ("train", "inference", "predict")
ORDERS = ("dataset", "aspect")


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
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "thread_policy": os.environ.get("DIGITS_THREAD_POLICY", "") or "digit_detectron",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def peak_rss_mb():
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def format_result(result):
    """A benchmark result as a two-column (github markdown) table."""
    rows = [(k, round(v, 4) if isinstance(v, float) else v) for k, v in result.items()]
    return tabulate(rows, tablefmt="github")


def report(result, output=None):
    """
    The text a benchmark tool prints: ``result`` as a table, then where its JSON was written
    (``output``, atomically), or without ``output`` the JSON itself.
    """
    lines = [format_result(result)]
    if output:
        atomic_write_json(output, result, indent=2)
        lines.append(f"Wrote {output}")
    else:
        lines.append(json.dumps(result))
    return "\n".join(lines)


THREAD_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "DIGITS_THREAD_POLICY")


def child_env(torch_defaults=False, base=None):
    """
    The environment of a benchmark child process: no inherited thread settings (so that each child's
    thread policy is its own), and ``DIGITS_THREAD_POLICY=torch`` for torch's defaults.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in THREAD_ENV}
    if torch_defaults:
        env["DIGITS_THREAD_POLICY"] = "torch"
    return env


def write_table(folder, name, rows, markdown):
    """``folder/name.json`` (the rows) and ``folder/name.md`` (the markdown table), atomically."""
    atomic_write_json(os.path.join(folder, f"{name}.json"), rows, indent=2)
    with atomic_open(os.path.join(folder, f"{name}.md"), "w") as f:
        f.write(markdown + "\n")


def select_images(dataset_dicts, num_images, is_train, order="dataset", dataset_name="dataset"):
    """
    The ``num_images`` dataset dicts a benchmark runs on: in dataset order, cycling when the
    dataset is smaller, skipping images without boxes when training. ``order="aspect"`` then
    sorts them by width / height (what size-grouped batching would give).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if is_train:
        dataset_dicts = [d for d in dataset_dicts if d.get("annotations")]
    if not dataset_dicts:
        raise ValueError(f"{dataset_name} has no usable image" + (" with boxes" if is_train else ""))
    chosen = [dataset_dicts[i % len(dataset_dicts)] for i in range(num_images)]
    if order == "aspect":
        chosen = sorted(chosen, key=_aspect_ratio)
    return chosen


def _aspect_ratio(dataset_dict):
    if "width" in dataset_dict and "height" in dataset_dict:
        return dataset_dict["width"] / dataset_dict["height"]
    with open_image(dataset_dict["file_name"], decode=False) as img:  # reads the header only
        width, height = oriented_size(img)
    return width / height


def time_steps(step, batches, warmup, progress=True):
    """
    Run ``step(batch)`` on every batch, with a progress bar; (wall, CPU) seconds of each batch
    after the first ``warmup``.
    """
    if len(batches) <= warmup:
        raise ValueError(f"{len(batches)} batches leave none to time after {warmup} warm-up: raise the image count")
    wall, cpu = [], []
    for i, batch in enumerate(tqdm(batches, desc=f"{warmup} warm-up + timed", unit="batch", disable=not progress)):
        w, c = time.perf_counter(), time.process_time()
        step(batch)
        if i >= warmup:
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    return wall, cpu


def timing_summary(batch_size, wall, cpu, data_s_per_image=None):
    """
    Median seconds per iteration (wall and process CPU) and images/s. With the data loading time
    per image, also images/s when loading runs in the same process before each step (no overlap).
    """
    s_per_iter = statistics.median(wall)
    result = {
        "batch_size": batch_size,
        "iterations_timed": len(wall),
        "s_per_iter": s_per_iter,
        "cpu_s_per_iter": statistics.median(cpu),
        "images_per_s": batch_size / s_per_iter,
    }
    if data_s_per_image is not None:
        result["data_s_per_image"] = data_s_per_image
        result["images_per_s_with_data"] = batch_size / (s_per_iter + batch_size * data_s_per_image)
    return result


def padding_fraction(image_batches, size_divisibility):
    """Share of the padded batch tensors' pixels that are padding (CHW images, padded as ImageList)."""
    div = max(size_divisibility, 1)
    padded = real = 0
    for images in image_batches:
        h = -(-max(im.shape[-2] for im in images) // div) * div
        w = -(-max(im.shape[-1] for im in images) // div) * div
        padded += len(images) * h * w
        real += sum(im.shape[-2] * im.shape[-1] for im in images)
    return 1.0 - real / padded


def _median_seconds(fn, items):
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _chunks(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


@contextlib.contextmanager
def competing_processes(count):
    """
    ``count`` CPU-bound processes (a Python busy loop each) running for the duration of the block:
    the "one other job on the machine" of the contended measurements. Always stopped, also when
    the block raises; yields their Popen objects.
    """
    if count < 0:
        raise ValueError(f"competitor count must be >= 0, got {count}")
    processes = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def benchmark(
    cfg,
    task="train",
    dataset_name=None,
    num_images=64,
    batch_size=None,
    warmup=2,
    order="dataset",
    seed=0,
    competitors=0,
    exported=None,
):
    """
    Time ``task`` on ``num_images`` images after ``warmup`` batches:

    * "train": forward + backward + AdamW step on batches the DigitDatasetMapper prepared beforehand;
    * "inference": eval forward (resize, model, postprocess) on such batches;
    * "predict": ``DigitPredictor.predict_files`` per batch of files, i.e. decode included. An empty
      MODEL.WEIGHTS times a randomly initialised model (saved to a temporary checkpoint).

    ``seed`` fixes the random augmentations (train scales decide the padding) and the model's init.
    ``competitors`` CPU-bound processes run beside the timed steps (``competing_processes``).
    ``exported`` (a .onnx / .ts written by tools/export_model.py) times that model on the "predict"
    files instead, one image per call (its graph reads one image), decode included.
    The data path is timed separately per image: ``decode_s_per_image`` (read_image) and
    ``data_s_per_image`` (the whole mapper: decode, augmentations, boxes). Returns a dict of medians,
    images/s, the padding share of the batches, peak RSS and the machine.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    is_train = task == "train"
    batch_size = batch_size or (cfg.SOLVER.IMS_PER_BATCH if is_train else 8)
    dataset_name = dataset_name or (cfg.DATASETS.TRAIN[0] if is_train else cfg.DATASETS.TEST[0])
    total = max(num_images, batch_size) + warmup * batch_size
    dicts = select_images(DatasetCatalog.get(dataset_name), total, is_train, order, dataset_name)

    seed_all_rng(seed)
    mapper = DigitDatasetMapper(cfg, is_train=is_train)
    decode_s = _median_seconds(lambda d: read_image(d["file_name"], cfg.INPUT.FORMAT), dicts)
    items = []
    data_s = _median_seconds(lambda d: items.append(mapper(d)), dicts)
    grouped = is_train and cfg.DIGITS.SIZE_GROUPING.ENABLED
    if grouped:  # the trainer's batches: same resized height and aspect bin (data/batching.py)
        needed = len(items) // batch_size
        more = select_images(DatasetCatalog.get(dataset_name), 8 * total, is_train, order, dataset_name)
        stream = items + [mapper(d) for d in more]
        item_batches = list(SizeGroupedBatches(stream, batch_size, cfg.DIGITS.SIZE_GROUPING.ASPECT_STEP))[:needed]
    else:
        item_batches = _chunks(items, batch_size)
    image_batches = [[x["image"] for x in b] for b in item_batches]

    if exported and task != "predict":
        raise ValueError("an exported model is timed with task 'predict'")
    if task == "predict" and exported:
        runtime = ExportedModel(exported, threads=torch.get_num_threads())
        model = build_model(cfg)  # for the padding figure only

        def step(files):
            for path in files:
                runtime.detect(read_image(path, "RGB"))

        batches = _chunks([d["file_name"] for d in dicts], batch_size)
    elif task == "predict":
        predictor = _build_predictor(cfg)
        model = predictor.model

        def step(files):
            predictor.predict_files(files, len(files), progress=False)

        batches = _chunks([d["file_name"] for d in dicts], batch_size)
    else:
        model = build_model(cfg)
        if is_train:
            apply_training_options(model, cfg)  # as the trainer does (DIGITS.TRAIN_BF16)
        step = _model_step(model, is_train, cfg)
        batches = item_batches
    with EventStorage(0), competing_processes(competitors):
        wall, cpu = time_steps(step, batches, warmup)
    post = _postprocess_times(predictor, dicts, cfg) if task == "predict" and not exported else {}
    return {
        **post,
        "task": task,
        "dataset": dataset_name,
        "order": order,
        "size_grouping": bool(grouped),
        "seed": seed,
        "competitors": competitors,
        "exported": exported or "",
        **timing_summary(batch_size, wall, cpu, None if task == "predict" else data_s),
        "decode_s_per_image": decode_s,
        "padding_fraction": padding_fraction(image_batches, model.backbone.size_divisibility),
        "peak_rss_mb": peak_rss_mb(),
        **machine_info(),
    }


def _postprocess_times(predictor, dicts, cfg):
    """
    Seconds per image of what follows the model in tools/predict.py, timed apart: the number reader
    and writing pred.json + pred.csv (with the manifest; the reader runs again in it) for the predicted images.
    """
    files = list(dict.fromkeys(d["file_name"] for d in dicts))
    run = predictor.predict_files(files, batch_size=16, progress=False)
    reader = NumberReader.from_config(cfg)
    start = time.perf_counter()
    for instances in run.instances.values():
        reader.read_instances(instances)
    reader_s = (time.perf_counter() - start) / max(len(run.instances), 1)
    ids = {path: i for i, path in enumerate(files)}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_predictions(tmp, run, ids, reader, cfg.DIGITS.PRED_JSON_SCORE_THRESH)
        files_s = (time.perf_counter() - start) / max(len(files), 1)
    return {"reader_s_per_image": reader_s, "submission_files_s_per_image": files_s}


def _model_step(model, is_train, cfg):
    model.train(is_train)
    if not is_train:

        def infer(batch):
            with torch.no_grad():
                model(batch)

        return infer
    optimizer = DigitTrainer.build_optimizer(cfg, model)  # the trainer's (SOLVER.OPTIMIZER, ADAMW_FUSED, clipping)

    def step(batch):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _build_predictor(cfg):
    if cfg.MODEL.WEIGHTS:
        return DigitPredictor(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        DetectionCheckpointer(build_model(cfg), tmp).save("random_init")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = os.path.join(tmp, "random_init.pth")
        return DigitPredictor(cfg)
