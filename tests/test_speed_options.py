"""
The speed options of issue 19 leave the model's outputs equal or within a stated tolerance, and the
benchmark's competitors are always stopped:

* size-grouped train batches: every batch shares one resized height and aspect bin;
* predict_files' aspect order: each file keeps its own instances (equal-size images: identical in any
  order and batch, boxes within 1e-3 px);
* bf16 backbone: features within 3% (relative L2) of float32's, weights untouched;
* bf16 training (DIGITS.TRAIN_BF16): the trainer's backbone runs bf16 and its weights still learn,
  "off" leaves float32, and a model built for evaluation is not touched;
* fused AdamW (SOLVER.ADAMW_FUSED, the default) takes the per-tensor loop's steps to float rounding;
* ROIAlign sampling ratio 1 at test time: pooled features within 10% (relative L2) of ratio 2 on
  smooth feature maps.
"""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from digit_detectron import get_digit_cfg, register_digits
from digit_detectron.analysis.benchmark import child_env, competing_processes, write_table
from digit_detectron.data.batching import (
    AspectSortedInferenceSampler,
    SizeGroupedBatches,
    build_size_grouped_train_loader,
    size_group_key,
)
from digit_detectron.data.mapper import DigitDatasetMapper
from digit_detectron.engine import DigitTrainer, resolve_schedule
from digit_detectron.inference.predictor import DigitPredictor
from digit_detectron.inference.speed import apply_inference_options
from digit_detectron.modeling.speed import bf16_backbone, cpu_has_native_bf16, use_backbone_bf16
from digit_detectron.utils.errors import ConfigError

from conftest import REPO_ROOT, draw_digits, save_random_checkpoint, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


def test_competitors_run_during_the_block_and_are_stopped_also_on_failure():
    with competing_processes(2) as processes:
        assert len(processes) == 2 and all(p.poll() is None for p in processes)
    assert all(p.poll() is not None for p in processes)
    with pytest.raises(RuntimeError, match="timed step failed"):
        with competing_processes(1) as processes:
            raise RuntimeError("timed step failed")
    assert processes[0].poll() is not None
    with pytest.raises(ValueError, match=">= 0"):
        with competing_processes(-1):
            pass


def test_benchmark_children_start_without_inherited_thread_settings(tmp_path):
    base = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "3", "GOMP_SPINCOUNT": "1", "PATH": "/bin"}
    assert child_env(torch_defaults=True, base=base) == {"PATH": "/bin", "DIGITS_THREAD_POLICY": "torch"}
    assert child_env(base={**base, "DIGITS_THREAD_POLICY": "torch"}) == {"PATH": "/bin"}
    write_table(str(tmp_path), "t", [{"a": 1}], "| a |")
    assert (tmp_path / "t.md").read_text() == "| a |\n" and json.loads((tmp_path / "t.json").read_text()) == [{"a": 1}]


def test_size_grouped_batches_share_height_and_aspect_bin():
    rng = np.random.default_rng(0)
    stream = [
        {"image": torch.zeros(3, int(h), int(h * a)), "id": i}
        for i, (h, a) in enumerate(zip(rng.choice([48, 64, 80], 200), rng.uniform(1.0, 4.0, 200)))
    ]
    batches = list(SizeGroupedBatches(stream, 4, aspect_step=0.25))
    assert len(batches) >= 30 and all(len(b) == 4 for b in batches)
    for batch in batches:
        keys = {size_group_key(*d["image"].shape[-2:], 0.25) for d in batch}
        assert len(keys) == 1
    ids = [d["id"] for b in batches for d in b]
    assert len(ids) == len(set(ids))  # every image at most once
    with pytest.raises(ValueError, match="ASPECT_STEP"):
        SizeGroupedBatches(stream, 4, aspect_step=0)


def test_trainer_loader_groups_real_images(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(24, 2, 1))
    register_digits(str(root), "grouped")
    opts = tiny_model_opts(tmp_path) + ["DATASETS.TRAIN", '("grouped_train",)', "DIGITS.SIZE_GROUPING.ENABLED", "True"]
    cfg = get_digit_cfg(CONFIG, opts + ["SOLVER.IMS_PER_BATCH", "3"])
    loader = build_size_grouped_train_loader(cfg, DigitDatasetMapper(cfg, is_train=True), num_workers=0)
    batches = [b for b, _ in zip(loader, range(6))]
    assert all(len(b) == 3 for b in batches)
    for batch in batches:
        assert len({size_group_key(*d["image"].shape[-2:], 0.25) for d in batch}) == 1
        assert all(len(d["instances"]) > 0 for d in batch)


def test_aspect_sorted_inference_sampler_gives_every_index_once_over_processes():
    aspects = [2.0, 0.5, 3.0, 1.0, 1.5, 4.0, 0.8]
    shares = [list(AspectSortedInferenceSampler(aspects, rank, 2)) for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(len(aspects)))
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    for share in shares:
        assert [aspects[i] for i in share] == sorted(aspects[i] for i in share)
    # interleaved, not split in halves: each process holds narrow and wide images
    assert {aspects[i] for i in shares[1]} & {0.8, 1.0} and {aspects[i] for i in shares[1]} & {3.0, 4.0}
    assert len(AspectSortedInferenceSampler(aspects, 0, 1)) == len(aspects)


def test_trainer_test_loader_batches_real_images_in_aspect_order(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(1, 11, 1))
    register_digits(str(root), "evalbatch")
    for batch_size, sizes in ((4, [4, 4, 3]), (1, [1] * 11)):
        cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + ["DIGITS.INFERENCE.EVAL_BATCH_SIZE", str(batch_size)])
        batches = list(DigitTrainer.build_test_loader(cfg, "evalbatch_valid"))
        assert [len(b) for b in batches] == sizes
        ids = [d["image_id"] for b in batches for d in b]
        assert sorted(ids) == sorted(r["image_id"] for r in DatasetCatalog.get("evalbatch_valid"))
        if batch_size > 1:
            aspects = [d["width"] / d["height"] for b in batches for d in b]
            assert aspects == sorted(aspects)
    with pytest.raises(ConfigError, match="DIGITS.INFERENCE.EVAL_BATCH_SIZE"):
        get_digit_cfg(CONFIG, ["DIGITS.INFERENCE.EVAL_BATCH_SIZE", "0"])


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("speed_model"), CONFIG)


def _images(folder, count=10, same_size=False):
    rng = np.random.default_rng(3)
    files = []
    for i in range(count):
        digits = list(rng.integers(0, 10, size=int(rng.integers(1, 5))))
        image, _ = draw_digits(rng, digits, height=48 if same_size else int(30 + 6 * i))
        if same_size:
            image = cv2.resize(image, (160, 64))
        path = os.path.join(folder, f"{i}.png")
        cv2.imwrite(path, image)
        files.append(path)
    return files


def _predictor(checkpoint, out, *opts):
    cfg = get_digit_cfg(
        CONFIG,
        tiny_model_opts(out)
        + ["MODEL.WEIGHTS", checkpoint, "DIGITS.PRED_JSON_SCORE_THRESH", "0.0", "DIGITS.READER.SCORE_THRESHS", "(0.0,)"]
        + list(opts),
    )
    return DigitPredictor(cfg)


@pytest.mark.slow
def test_aspect_order_keeps_each_files_instances(random_checkpoint, tmp_path):
    """
    Equal-size images (the same padding in any batch): reordering and re-batching give each file the
    same instances. Mixed sizes: each file's boxes stay inside its own image. (How much the padding of
    a batch moves a trained model's boxes is measured, as AP, in benchmarks/speed.md.)
    """
    predictor = _predictor(random_checkpoint, tmp_path, "DIGITS.INFERENCE.BACKBONE_BF16", "off")
    (tmp_path / "same").mkdir()
    files = _images(str(tmp_path / "same"), count=8, same_size=True)
    forward = predictor.predict_files(files, batch_size=4, progress=False).instances
    backward = predictor.predict_files(list(reversed(files)), batch_size=4, progress=False).instances
    assert set(forward) == set(backward) == set(files)
    for path in files:
        a, b = forward[path], backward[path]
        assert len(a) == len(b) and len(a) > 0
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)
        assert torch.allclose(a.scores, b.scores, atol=1e-4) and torch.equal(a.pred_classes, b.pred_classes)
    (tmp_path / "mixed").mkdir()
    files = _images(str(tmp_path / "mixed"))
    mixed = predictor.predict_files(files, batch_size=16, progress=False).instances
    for path in files:
        height, width = cv2.imread(path).shape[:2]
        boxes = mixed[path].pred_boxes.tensor
        assert len(boxes) and float(boxes[:, 2].max()) <= width and float(boxes[:, 3].max()) <= height


def test_bf16_backbone_features_within_tolerance_and_weights_untouched(tmp_path):
    torch.manual_seed(0)
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path))
    model = build_model(cfg).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 160) * 50
    with torch.inference_mode():
        reference = model.backbone(x)
        bf16_backbone(model.backbone)
        fast = model.backbone(x)
    for name, feature in reference.items():
        assert fast[name].dtype == torch.float32
        error = (fast[name] - feature).norm() / feature.norm()
        assert error < 0.03, (name, float(error))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["on", "off"])
def test_bf16_training_runs_the_backbone_in_bf16_and_its_weights_learn(tmp_path, setting):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 1, 1))
    register_digits(root, prefix=f"bf16_train_{setting}")
    opts = tiny_model_opts(tmp_path / "out") + [
        "DATASETS.TRAIN", f"('bf16_train_{setting}_train',)", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
        "DIGITS.PLOT_AT_END", "False", "SOLVER.EPOCHS", "0", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "100", "DIGITS.TRAIN_BF16", setting,
    ]  # fmt: skip
    cfg = get_digit_cfg(CONFIG, opts)
    resolve_schedule(cfg, num_train_images=4)
    torch.manual_seed(0)
    trainer = DigitTrainer(cfg)
    backbone = trainer.model.backbone
    assert getattr(backbone, "runs_bf16", False) == (setting == "on")
    stem = {k: v.clone() for k, v in backbone.state_dict().items() if v.dtype == torch.float32}
    trainer.train()
    after = backbone.state_dict()
    assert all(after[k].dtype == torch.float32 for k in stem)  # the weights stay float32
    moved = [k for k in stem if not torch.equal(stem[k], after[k])]
    assert len(moved) > len(stem) // 2, moved  # gradients reached the backbone through autocast
    features = backbone(torch.randn(1, 3, 64, 160))
    assert all(f.dtype == torch.float32 for f in features.values())
    # --eval-only and the predictor build the model with build_model: no training option there.
    assert not getattr(DigitTrainer.build_model(cfg).backbone, "runs_bf16", False)


def test_bf16_setting_follows_the_cpu_flags(tmp_path):
    with_bf16 = tmp_path / "cpuinfo_bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    without = tmp_path / "cpuinfo"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_has_native_bf16(str(with_bf16)) and not cpu_has_native_bf16(str(without))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    assert use_backbone_bf16("auto", "cpu", str(with_bf16)) and not use_backbone_bf16("auto", "cpu", str(without))
    assert not use_backbone_bf16("auto", "cuda", str(with_bf16))
    assert use_backbone_bf16("on", "cpu", str(without)) and not use_backbone_bf16("off", "cpu", str(with_bf16))


def test_test_time_sampling_ratio_is_applied_and_close(tmp_path):
    torch.manual_seed(0)
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + ["DIGITS.INFERENCE.BACKBONE_BF16", "off"])
    cfg.defrost()
    cfg.DIGITS.INFERENCE.POOLER_SAMPLING_RATIO = 0
    model = build_model(cfg).eval()
    pooler = model.roi_heads.box_pooler
    assert {level.sampling_ratio for level in pooler.level_poolers} == {cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO}
    smooth = torch.nn.functional.interpolate(torch.randn(1, 8, 8, 20), scale_factor=4, mode="bilinear")
    features = [torch.nn.functional.interpolate(smooth, scale_factor=1 / 2**i, mode="bilinear") for i in range(4)]
    boxes = [Boxes(torch.tensor([[4.0, 4.0, 40.0, 60.0], [30.0, 10.0, 70.0, 90.0], [50.0, 2.0, 150.0, 120.0]]))]
    reference = pooler(features, boxes)
    cfg.DIGITS.INFERENCE.POOLER_SAMPLING_RATIO = 1
    options = apply_inference_options(model, cfg)
    assert options["pooler_sampling_ratio"] == 1
    assert {level.sampling_ratio for level in pooler.level_poolers} == {1}
    fast = pooler(features, boxes)
    assert not torch.equal(fast, reference)
    assert (fast - reference).norm() / reference.norm() < 0.10


@pytest.mark.slow
def test_fused_adamw_is_the_default_and_takes_the_loops_step(tmp_path):
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path))
    assert cfg.SOLVER.ADAMW_FUSED  # the default
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = {}
    for fused in (True, False):
        model.load_state_dict(state)
        cfg.defrost()
        cfg.SOLVER.ADAMW_FUSED = fused
        optimizer = DigitTrainer.build_optimizer(cfg, model)
        assert bool(optimizer.defaults.get("fused")) == fused
        for step in range(3):  # the same gradients each step: the updates must agree
            torch.manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn_like(p) if p.requires_grad else None
            optimizer.step()
        params[fused] = {k: p.detach().clone() for k, p in model.named_parameters()}
    moved = [k for k, v in params[True].items() if not torch.equal(v, state[k])]
    assert len(moved) > len(params[True]) // 2
    for k in params[True]:
        torch.testing.assert_close(params[True][k], params[False][k], rtol=1e-5, atol=1e-6, msg=k)


def test_digits_bf16_off_turns_bf16_off_whatever_the_config_says(monkeypatch):
    monkeypatch.setenv("DIGITS_BF16", "off")
    assert not use_backbone_bf16("on", "cpu") and not use_backbone_bf16("auto", "cpu")
    monkeypatch.setenv("DIGITS_BF16", "")
    assert use_backbone_bf16("on", "cpu")
