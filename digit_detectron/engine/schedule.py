"""Epoch-based schedules: derive iteration counts from the train set size; the epoch of an iteration."""

import logging
import math

from detectron2.data import DatasetCatalog

logger = logging.getLogger(__name__)


def count_train_images(cfg):
    """Images the train loader will see (those with annotations if FILTER_EMPTY_ANNOTATIONS)."""
    total = 0
    for name in cfg.DATASETS.TRAIN:
        dicts = DatasetCatalog.get(name)
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            dicts = [d for d in dicts if d.get("annotations")]
        total += len(dicts)
    return total


def resolve_schedule(cfg, num_train_images=None):
    """
    Fill the epoch-derived keys of an unfrozen cfg in place: DIGITS.ITERS_PER_EPOCH (if 0),
    SOLVER.MAX_ITER (if SOLVER.EPOCHS > 0), and TEST.EVAL_PERIOD / SOLVER.CHECKPOINT_PERIOD
    (if -1: once per epoch). Returns cfg.
    """
    if cfg.DIGITS.ITERS_PER_EPOCH <= 0:
        if num_train_images is None:
            num_train_images = count_train_images(cfg)
        if num_train_images == 0:
            raise ValueError(f"training datasets {cfg.DATASETS.TRAIN} hold no annotated image")
        cfg.DIGITS.ITERS_PER_EPOCH = math.ceil(num_train_images / cfg.SOLVER.IMS_PER_BATCH)
    ipe = cfg.DIGITS.ITERS_PER_EPOCH
    if cfg.SOLVER.EPOCHS > 0:
        cfg.SOLVER.MAX_ITER = cfg.SOLVER.EPOCHS * ipe
    if cfg.TEST.EVAL_PERIOD < 0:
        cfg.TEST.EVAL_PERIOD = ipe
    if cfg.SOLVER.CHECKPOINT_PERIOD < 0:
        cfg.SOLVER.CHECKPOINT_PERIOD = ipe
    logger.info(
        f"Schedule: {ipe} iterations/epoch, MAX_ITER {cfg.SOLVER.MAX_ITER}, "
        f"eval every {cfg.TEST.EVAL_PERIOD}, checkpoint every {cfg.SOLVER.CHECKPOINT_PERIOD}"
    )
    return cfg


def epoch_of_iteration(iteration, iters_per_epoch):
    """The 0-indexed epoch that 0-indexed ``iteration`` belongs to."""
    if iters_per_epoch <= 0:
        raise ValueError(f"iters_per_epoch must be positive, got {iters_per_epoch}")
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return int(iteration) // int(iters_per_epoch)
