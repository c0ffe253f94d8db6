"""Hard negatives and the real test framing: digit-free walls kept by the loader, test-framed layouts,
the new splits registered and evaluated, and the reader's number line on constructed cases."""

import json
import os

import numpy as np
import pytest
from detectron2.data.build import get_detection_dataset_dicts
from PIL import Image

from digit_detectron import get_digit_cfg
from digit_detectron.data.datasets import register_digits
from digit_detectron.data.synthetic.generate import DIGIT_FREE_SHARE, SampleRenderer, generate_dataset
from digit_detectron.data.synthetic.layout import (
    PARAMETRIC,
    TEST_ASPECT_RATIO,
    TEST_SHARE_W_RATIO,
    ReframedSampler,
    build_layout_sampler,
    framing_table,
)
from digit_detectron.engine.trainer import DigitTrainer
from digit_detectron.evaluation import NumberAccuracyEvaluator
from digit_detectron.evaluation.coco_recall import COCOEvaluatorWithRecall
from digit_detectron.export import runtime
from digit_detectron.modeling import number_reader
from digit_detectron.modeling.number_reader import NumberReader, on_number_line, read_number


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("negatives") / "digits")
    generate_dataset(root, 60, 4, 2, seed=5, geometry=PARAMETRIC, num_test_wide=6, num_free=5)
    return root


def _json(root, split):
    with open(os.path.join(root, split + ".json")) as f:
        return json.load(f)


def test_a_share_of_train_and_all_of_free_are_walls_without_digits(data):
    train = _json(data, "train")
    boxed = {a["image_id"] for a in train["annotations"]}
    empty = [img for img in train["images"] if img["id"] not in boxed]
    # 60 images at a tenth each: seeded, so the count is fixed; at least one and far from all.
    assert 1 <= len(empty) <= 15
    assert train["info"]["digit_free_share"] == DIGIT_FREE_SHARE["train"]
    free = _json(data, "free")
    assert len(free["images"]) == 5 and free["annotations"] == []
    for img in free["images"]:  # a real picture, not an empty canvas
        pixels = np.asarray(Image.open(os.path.join(data, "free", img["file_name"])))
        assert pixels.shape[:2] == (img["height"], img["width"]) and pixels.std() > 1.0


def test_the_loader_keeps_the_digit_free_images(data):
    register_digits(data, prefix="negatives")
    cfg = get_digit_cfg("digits_cpu.yaml")
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is False
    dicts = get_detection_dataset_dicts(["negatives_train"], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    assert len(dicts) == 60
    assert sum(not d["annotations"] for d in dicts) >= 1
    filtered = get_detection_dataset_dicts(["negatives_train"], filter_empty=True)
    assert len(filtered) < 60  # what the old setting would have dropped


def test_new_splits_are_registered_and_the_digit_free_one_is_scored_by_numbers_only(data):
    register_digits(data, prefix="negatives")
    cfg = get_digit_cfg("digits_cpu.yaml", ["OUTPUT_DIR", os.path.join(data, "out")])
    wide = DigitTrainer.build_evaluator(cfg, "negatives_test_wide")._evaluators
    free = DigitTrainer.build_evaluator(cfg, "negatives_free")._evaluators
    assert any(isinstance(e, COCOEvaluatorWithRecall) for e in wide)
    assert not any(isinstance(e, COCOEvaluatorWithRecall) for e in free)
    numbers = next(e for e in free if isinstance(e, NumberAccuracyEvaluator))
    numbers.reset()
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    one = {"boxes": np.array([[5.0, 5, 15, 25]]), "scores": np.array([0.9]), "classes": np.array([4])}
    ids = [img["id"] for img in _json(data, "free")["images"]]
    numbers._detections = [{"image_id": i, **(one if i == ids[0] else empty)} for i in ids]
    numbers._distributed = False
    # Reading nothing is right on a wall without digits; one image read "4" is one wrong of five.
    assert numbers.evaluate()["number"]["accuracy"] == pytest.approx(80.0)


def test_test_framing_widens_the_image_and_shrinks_the_number_share():
    base = build_layout_sampler(PARAMETRIC)
    wide = ReframedSampler(base)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    train = framing_table([base(rng_a) for _ in range(1500)])
    test = framing_table([wide(rng_b) for _ in range(1500)])
    aspect = np.median(test["aspect"]) / np.median(train["aspect"])
    share = np.median(test["share_w"]) / np.median(train["share_w"])
    assert aspect == pytest.approx(TEST_ASPECT_RATIO, rel=0.1)
    assert share == pytest.approx(TEST_SHARE_W_RATIO, rel=0.1)
    for lay in (wide(np.random.default_rng(s)) for s in range(300)):  # every box inside its image
        b = np.asarray(lay.boxes)
        assert (b[:, :2] >= -1e-6).all() and (b[:, 0] + b[:, 2] <= lay.width + 1e-6).all()
        assert (b[:, 1] + b[:, 3] <= lay.height + 1e-6).all()


def test_a_split_without_framing_or_negatives_renders_as_before():
    """The framing and digit-free draws use their own seed stream: valid's images are unchanged by them."""
    renderer = SampleRenderer(build_layout_sampler(PARAMETRIC), seed=1)
    sample = renderer("valid", 3)
    again = SampleRenderer(build_layout_sampler(PARAMETRIC), seed=1)("valid", 3)
    assert np.array_equal(sample.image, again.image) and len(sample.boxes) >= 1


def box(x, y=10, w=10, h=20):
    return [x, y, x + w, y + h]


LINE_CASES = [
    # (boxes in decreasing score order, which the number line keeps)
    ([box(10), box(22), box(34)], [True, True, True]),  # a plain number
    ([box(10), box(22), box(100)], [True, True, False]),  # a box far along the wall
    ([box(22), box(10), box(34, y=5, h=45)], [True, True, False]),  # a box of another size
    ([box(10), box(22), box(34, y=45)], [True, True, False]),  # a box below the line
    ([box(10), box(22), box(34, y=22)], [True, True, True]),  # a diagonal number: a real digit kept
    ([box(10), box(12, y=40)], [True, True]),  # a column (top to bottom) is kept whole
    ([box(100), box(10), box(22)], [True, False, False]),  # the most confident digit chooses the line
    ([box(10), box(22), box(54)], [True, True, False]),  # a gap of 22 px > one 20-px height
    ([box(10), box(22), box(50)], [True, True, True]),  # a gap of 18 px: still the number
]


@pytest.mark.parametrize("boxes, expected", LINE_CASES)
def test_number_line_drops_outlying_boxes_and_keeps_the_digits_of_the_number(boxes, expected):
    boxes = np.array(boxes, np.float32)
    assert on_number_line(boxes).tolist() == expected
    assert runtime.on_number_line(boxes).tolist() == expected  # the exported runtime's copy


def test_number_line_in_both_readers_on_random_detections():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 7))
        xy = rng.uniform(0, 120, size=(n, 2))
        wh = rng.uniform(5, 30, size=(n, 2)) * [1, 2]
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        assert on_number_line(boxes).tolist() == runtime.on_number_line(boxes).tolist()


def test_the_reader_reads_the_number_without_the_outlier_when_the_line_filter_is_on():
    boxes = np.array([box(10), box(22), box(100)], np.float32)
    scores, classes = np.array([0.9, 0.8, 0.7], np.float32), np.array([2, 4, 4])
    assert read_number(boxes, scores, classes, (0.5,), 0.3, 6) == 244
    assert read_number(boxes, scores, classes, (0.5,), 0.3, 6, line_filter=True) == 24
    number, chosen = runtime.read_number(boxes, scores, classes, (0.5,), 0.3, 6, line_filter=True)
    assert number == 24 and chosen.tolist() == [0, 1]
    cfg = get_digit_cfg("digits_cpu.yaml", ["DIGITS.READER.LINE_FILTER", "True"])
    assert NumberReader.from_config(cfg)(boxes, scores, classes) == 24


def test_runtime_copies_the_number_line_constants():
    for name in ("LINE_MAX_HEIGHT_RATIO", "LINE_MAX_CENTRE_OFFSET", "LINE_MAX_GAP"):
        assert getattr(runtime, name) == getattr(number_reader, name)


def test_the_gate_reads_nothing_unless_the_most_confident_digit_is_sure():
    boxes = np.array([box(10), box(22)], np.float32)
    classes = np.array([2, 4])
    sure, unsure = np.array([0.97, 0.7], np.float32), np.array([0.9, 0.7], np.float32)
    assert read_number(boxes, sure, classes, (0.6,), 0.3, 6, min_top_score=0.95) == 24
    assert read_number(boxes, unsure, classes, (0.6,), 0.3, 6, min_top_score=0.95) == -1
    assert runtime.read_number(boxes, sure, classes, (0.6,), 0.3, 6, False, 0.95)[0] == 24
    assert runtime.read_number(boxes, unsure, classes, (0.6,), 0.3, 6, False, 0.95)[0] == -1
    assert NumberReader((0.6,), min_top_score=0.95).select(boxes, unsure, classes).numel() == 0
    with pytest.raises(ValueError, match="MIN_TOP_SCORE"):
        NumberReader((0.6,), min_top_score=1.5)
