"""DIGITS.TRAIN_MIX (training on datasets at chosen ratios) and DIGITS.DATASET_ROOTS (more roots to register)."""

import itertools
import os

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.samplers import RepeatFactorTrainingSampler

from digit_detectron import get_digit_cfg
from digit_detectron.data.sampling import mix_repeat_factors
from digit_detectron.engine import DigitTrainer
from digit_detectron.utils.errors import ConfigError

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


def test_repeat_factors_give_each_dataset_its_share():
    factors = mix_repeat_factors([8, 2], [1, 1])
    assert factors == [0.625] * 8 + [2.5] * 2  # each dataset contributes 5 of 10 expected draws
    sampler = RepeatFactorTrainingSampler(torch.tensor(factors), seed=0)
    drawn = list(itertools.islice(iter(sampler), 4000))
    assert abs(sum(i >= 8 for i in drawn) / len(drawn) - 0.5) < 0.05  # without the mix: 0.2
    assert sum(mix_repeat_factors([30, 10], [3, 1])[:30]) == pytest.approx(0.75 * 40)


@pytest.mark.parametrize(
    "sizes, ratios, problem",
    [([8, 2], [1], "1 ratios for 2"), ([8, 2], [1, 0], "must be positive"), ([8, 0], [1, 1], "has no images")],
)
def test_bad_mixes_name_the_key(sizes, ratios, problem):
    with pytest.raises(ConfigError, match=f"DIGITS.TRAIN_MIX.*{problem}"):
        mix_repeat_factors(sizes, ratios)


def test_mixed_training_batches_hold_both_datasets_at_the_ratio(tmp_path):
    big = write_digit_dataset(tmp_path / "big", counts=(12, 1, 0), seed=1)
    small = write_digit_dataset(tmp_path / "small", counts=(3, 1, 0), seed=2)
    opts = tiny_model_opts(tmp_path / "out") + [
        "DIGITS.DATASET_ROOTS", f"['mixbig:{big}', 'mixsmall:{small}']",
        "DATASETS.TRAIN", "('mixbig_train', 'mixsmall_train')",
        "DIGITS.TRAIN_MIX", "[1.0, 1.0]",
        "SEED", "0",
    ]  # fmt: skip
    cfg = get_digit_cfg(CONFIG, opts)
    assert {"mixbig_train", "mixsmall_train", "mixsmall_valid"} <= set(DatasetCatalog.list())
    loader = iter(DigitTrainer.build_train_loader(cfg))
    roots = [
        os.path.dirname(os.path.dirname(d["file_name"])) for d in itertools.chain(*(next(loader) for _ in range(60)))
    ]
    share_small = roots.count(str(small)) / len(roots)
    assert set(roots) == {str(big), str(small)} and 0.35 < share_small < 0.65  # 3 of 15 images without the mix


def test_malformed_dataset_root_entry_is_a_config_error():
    with pytest.raises(ConfigError, match="DIGITS.DATASET_ROOTS: expected 'PREFIX:ROOT'"):
        get_digit_cfg(CONFIG, ["DIGITS.DATASET_ROOTS", "['no-colon']"])
