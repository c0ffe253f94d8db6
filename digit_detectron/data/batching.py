"""
Batches of images that share a resized height and a similar aspect ratio (training), and evaluation
batches of images in order of aspect ratio.

A train batch pads every image to the tallest and widest of the batch. With a random short side
per image (INPUT.MIN_SIZE_TRAIN 48..80) and house-number crops of every width, half of a
digits_cpu batch is padding (benchmarks/speed.md). ``SizeGroupedBatches`` keeps one bucket per
(resized height, aspect-ratio bin) and yields a bucket when it holds a batch: each image keeps its
own random scale and augmentations; only which images share a batch changes.

``AspectSortedInferenceSampler`` does the same for evaluation (``build_batched_test_loader``): every
image once, in order of aspect ratio, so that a batch of DIGITS.INFERENCE.EVAL_BATCH_SIZE images pads
little (as ``DigitPredictor.predict_files`` batches files).
"""

import math
import operator

import torch.utils.data as torchdata
from detectron2.data.build import _train_loader_from_config, trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import DatasetFromList, MapDataset, ToIterableDataset
from detectron2.utils.comm import get_rank, get_world_size

__all__ = [
    "AspectSortedInferenceSampler",
    "SizeGroupedBatches",
    "build_batched_test_loader",
    "build_size_grouped_train_loader",
    "size_group_key",
]


def size_group_key(height, width, aspect_step):
    """The bucket of a resized image: its height, and log2(width / height) in steps of ``aspect_step``."""
    return height, math.floor(math.log2(max(width, 1) / max(height, 1)) / aspect_step)


class SizeGroupedBatches(torchdata.IterableDataset):
    """
    Lists of ``batch_size`` mapped dicts from ``dataset`` (an iterable of dicts holding a CHW
    "image" tensor) whose images fall in the same ``size_group_key`` bucket.
    """

    def __init__(self, dataset, batch_size, aspect_step=0.25):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if aspect_step <= 0:
            raise ValueError(f"DIGITS.SIZE_GROUPING.ASPECT_STEP must be > 0, got {aspect_step}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.aspect_step = aspect_step

    def __iter__(self):
        buckets = {}
        for d in self.dataset:
            height, width = d["image"].shape[-2:]
            bucket = buckets.setdefault(size_group_key(height, width, self.aspect_step), [])
            bucket.append(d)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                yield batch


def build_size_grouped_train_loader(cfg, mapper, dataset=None, sampler=None, num_workers=None):
    """
    detectron2's train loader (same datasets, sampler and mapper as ``build_detection_train_loader``)
    with ``SizeGroupedBatches`` in place of its two-bucket aspect grouping.
    """
    config = _train_loader_from_config(cfg, mapper=mapper, dataset=dataset, sampler=sampler)
    dataset, sampler = config["dataset"], config["sampler"]
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    dataset = MapDataset(dataset, config["mapper"])
    batch_size = config["total_batch_size"] // get_world_size()  # per process, as detectron2 does
    dataset = ToIterableDataset(dataset, sampler, shard_chunk_size=batch_size)
    workers = config["num_workers"] if num_workers is None else num_workers
    loader = torchdata.DataLoader(
        dataset,
        num_workers=workers,
        collate_fn=operator.itemgetter(0),  # single dicts; the grouping makes the batches
        worker_init_fn=worker_init_reset_seed,
    )
    return SizeGroupedBatches(loader, batch_size, cfg.DIGITS.SIZE_GROUPING.ASPECT_STEP)


class AspectSortedInferenceSampler(torchdata.Sampler):
    """
    Every index of ``aspect_ratios`` (width / height per record) once over all processes, each
    process's share in order of aspect ratio. Process ``rank`` takes every ``world_size``-th index of
    the sorted order, so each holds images of every shape and the processes finish together.
    """

    def __init__(self, aspect_ratios, rank=None, world_size=None):
        rank = get_rank() if rank is None else rank
        world_size = get_world_size() if world_size is None else world_size
        order = sorted(range(len(aspect_ratios)), key=lambda i: aspect_ratios[i])
        self._local = order[rank::world_size]

    def __iter__(self):
        return iter(self._local)

    def __len__(self):
        return len(self._local)


def record_aspect_ratio(record):
    """width / height of a dataset dict (1.0 when it does not say)."""
    width, height = record.get("width"), record.get("height")
    return width / height if width and height else 1.0


def build_batched_test_loader(dataset_dicts, mapper, batch_size, num_workers=0):
    """
    A test loader (as ``build_detection_test_loader``: lists of mapped dicts) that gives the model
    ``batch_size`` images per forward pass, in order of aspect ratio (``AspectSortedInferenceSampler``).
    Evaluators see every image once, as with detectron2's one-image batches; only the order differs.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    sampler = AspectSortedInferenceSampler([record_aspect_ratio(r) for r in dataset_dicts])
    dataset = MapDataset(DatasetFromList(dataset_dicts, copy=False), mapper)
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
    )
