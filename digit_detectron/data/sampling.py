"""Training on several datasets at chosen ratios (DIGITS.TRAIN_MIX), e.g. a few real photos with much synthetic data."""

import itertools
import logging

import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.samplers import RepeatFactorTrainingSampler

from ..utils.errors import ConfigError

logger = logging.getLogger(__name__)


def mix_repeat_factors(sizes, ratios):
    """
    Per-image repeat factors that give dataset ``i`` (``sizes[i]`` images) the expected share
    ``ratios[i] / sum(ratios)`` of the images drawn, whatever the sizes.
    """
    if len(sizes) != len(ratios):
        raise ConfigError(f"DIGITS.TRAIN_MIX has {len(ratios)} ratios for {len(sizes)} DATASETS.TRAIN entries")
    if any(not r > 0 for r in ratios):
        raise ConfigError(f"DIGITS.TRAIN_MIX ratios must be positive, got {list(ratios)}")
    if any(n == 0 for n in sizes):
        raise ConfigError(f"DIGITS.TRAIN_MIX: a DATASETS.TRAIN entry has no images (sizes {list(sizes)})")
    total, norm = sum(sizes), sum(ratios)
    return list(itertools.chain.from_iterable([r / norm * total / n] * n for n, r in zip(sizes, ratios)))


def mixed_train_data(cfg):
    """The dataset dicts of DATASETS.TRAIN and a sampler that draws them at the DIGITS.TRAIN_MIX ratios."""
    per_dataset = [
        get_detection_dataset_dicts([name], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        for name in cfg.DATASETS.TRAIN
    ]
    sizes = [len(d) for d in per_dataset]
    factors = mix_repeat_factors(sizes, list(cfg.DIGITS.TRAIN_MIX))
    logger.info(
        "Training mix: "
        + ", ".join(f"{n} ({k} images) {r:g}" for n, k, r in zip(cfg.DATASETS.TRAIN, sizes, cfg.DIGITS.TRAIN_MIX))
    )
    dicts = list(itertools.chain.from_iterable(per_dataset))
    return dicts, RepeatFactorTrainingSampler(torch.tensor(factors, dtype=torch.float32), seed=cfg.SEED)
