"""Whole-number assembly from digit detections."""

import collections
import json
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from digit_detectron import get_digit_cfg
from digit_detectron.modeling.number_reader import (
    NumberReader,
    digits_to_number,
    is_column,
    read_number,
    reading_order,
)

from conftest import SVHN_GEOMETRY


def digit_box(x, y=10, w=14, h=28):
    return [x, y, x + w, y + h]


def read(boxes, scores, classes, threshs=(0.7, 0.5, 0.3), nms=0.3, max_digits=6):
    return read_number(
        np.array(boxes, np.float32), np.array(scores, np.float32), np.array(classes), threshs, nms, max_digits
    )


def test_two_classes_on_one_digit_give_one_character():
    # A "3" and a weaker "8" on the same glyph, and a "1" to its left.
    boxes = [digit_box(30), [31, 11, 45, 38], digit_box(10)]
    assert read(boxes, [0.9, 0.8, 0.95], [3, 8, 1]) == 13
    # Without the class-agnostic NMS both would be read.
    assert read(boxes, [0.9, 0.8, 0.95], [3, 8, 1], nms=1.0) == 138


def test_digits_are_read_left_to_right_whatever_their_order():
    boxes = [digit_box(50), digit_box(10), digit_box(70), digit_box(30)]
    assert read(boxes, [0.99, 0.8, 0.9, 0.75], [4, 1, 5, 2]) == 1245
    assert reading_order(torch.tensor(boxes, dtype=torch.float32)).tolist() == [1, 3, 0, 2]


def test_no_digit_reads_minus_one():
    assert read(np.zeros((0, 4)), [], []) == -1
    assert read([digit_box(10)], [0.2], [5]) == -1  # below the last rung


def test_threshold_ladder_uses_the_first_rung_that_keeps_a_digit():
    # Only a weak digit: the ladder falls through 0.7 and 0.5 to 0.3.
    assert read([digit_box(10)], [0.4], [5]) == 5
    # A strong and a weak digit: 0.7 already keeps one, so the weak one is not read.
    assert read([digit_box(10), digit_box(30)], [0.8, 0.4], [2, 9]) == 2
    assert read([digit_box(10), digit_box(30)], [0.8, 0.4], [2, 9], threshs=(0.3,)) == 29


def test_vertical_stack_is_read_top_to_bottom():
    # "1" over "7" over "4", centres nearly aligned; given bottom first.
    boxes = [digit_box(20, y=70), digit_box(21, y=5), digit_box(19, y=37)]
    assert is_column(torch.tensor(boxes, dtype=torch.float32))
    assert read(boxes, [0.9, 0.9, 0.9], [4, 1, 7]) == 174
    # The same digits shifted sideways by a whole digit width form a diagonal: left to right.
    diagonal = [digit_box(10, y=70), digit_box(38, y=5), digit_box(24, y=37)]
    assert not is_column(torch.tensor(diagonal, dtype=torch.float32))
    assert read(diagonal, [0.9, 0.9, 0.9], [4, 1, 7]) == 471
    # A row with a small vertical jitter is a row.
    row = [digit_box(10, y=12), digit_box(26, y=8)]
    assert read(row, [0.9, 0.9], [3, 6]) == 36


def test_more_than_max_digits_keeps_the_highest_scoring_in_reading_order():
    boxes = [digit_box(10 + 16 * i) for i in range(8)]
    scores = [0.9, 0.35, 0.8, 0.95, 0.85, 0.4, 0.75, 0.7]
    classes = [1, 2, 3, 4, 5, 6, 7, 8]
    # Digits 2 (0.35) and 6 (0.40) are dropped; the rest stay left to right.
    assert read(boxes, scores, classes, threshs=(0.3,), max_digits=6) == 134578


def test_leading_zeros_vanish_as_in_the_integer_csv():
    assert digits_to_number([0, 7]) == 7
    assert digits_to_number([0, 0]) == 0
    assert digits_to_number([]) == -1
    assert read([digit_box(10), digit_box(30)], [0.9, 0.9], [0, 7]) == 7


def test_reader_from_config_numpy_torch_and_instances_agree():
    cfg = get_digit_cfg(opts=["DIGITS.READER.SCORE_THRESHS", "(0.6,)", "DIGITS.READER.MAX_DIGITS", "2"])
    reader = NumberReader.from_config(cfg)
    assert (reader.score_threshs, reader.nms_thresh, reader.max_digits) == ((0.6,), 0.3, 2)
    boxes = np.array([digit_box(40), digit_box(10), digit_box(25)], np.float32)
    scores, classes = np.array([0.9, 0.8, 0.65], np.float32), np.array([3, 2, 9])
    instances = Instances(
        (60, 80),
        pred_boxes=Boxes(torch.from_numpy(boxes)),
        scores=torch.from_numpy(scores),
        pred_classes=torch.from_numpy(classes),
    )
    assert reader(boxes, scores, classes) == reader(torch.from_numpy(boxes), torch.from_numpy(scores), classes) == 23
    assert reader.read_instances(instances) == 23


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        read([digit_box(0), digit_box(20)], [0.9], [1, 2])
    with pytest.raises(ValueError, match="0..9"):
        read([digit_box(0)], [0.9], [10])
    with pytest.raises(ValueError, match="score thresholds"):
        NumberReader(score_threshs=())
    with pytest.raises(ValueError, match="MAX_DIGITS"):
        NumberReader(max_digits=0)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(SVHN_GEOMETRY), reason="needs ../shared/svhn_geometry/train.json")
def test_reading_order_matches_svhn_digit_order():
    """SVHN stores a number's digits in reading order; the rule must agree on nearly every image."""
    with open(SVHN_GEOMETRY) as f:
        data = json.load(f)
    by_image = collections.defaultdict(list)
    for ann in data["annotations"]:
        if ann["image_id"] % 8 == 0:  # an eighth of the 33k images keeps the test quick
            by_image[ann["image_id"]].append(ann)
    multi = [sorted(anns, key=lambda a: a["id"]) for anns in by_image.values() if len(anns) > 1]
    agree = 0
    for anns in multi:
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32)
        agree += reading_order(boxes).tolist() == list(range(len(anns)))
    assert len(multi) > 3000
    assert agree / len(multi) > 0.995, f"{agree} of {len(multi)}"
