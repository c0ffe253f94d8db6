"""NumberAccuracyEvaluator on a registered dataset and hand-made predictions with a known answer."""

import json

import pytest
import torch
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.structures import Boxes, Instances

from digit_detectron import get_digit_cfg
from digit_detectron.data import register_digits
from digit_detectron.evaluation import NumberAccuracyEvaluator, ground_truth_numbers
from digit_detectron.modeling.number_reader import NumberReader

# image id -> (width, height, [(digit, XYWH box)]), digits listed out of reading order on purpose.
GROUND_TRUTH = {
    1: (80, 40, [(4, [40, 5, 14, 28]), (2, [10, 5, 14, 28])]),  # 24
    2: (40, 100, [(7, [12, 55, 14, 28]), (1, [13, 10, 14, 28])]),  # 1 over 7: 17
    3: (40, 40, [(0, [10, 5, 14, 28])]),  # 0
    4: (80, 40, [(5, [10, 5, 14, 28]), (3, [30, 5, 14, 28])]),  # 53
}


@pytest.fixture
def dataset(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h, _) in GROUND_TRUTH.items()]
    annotations = [
        {
            "id": len(images) * i + k,
            "image_id": i,
            "bbox": box,
            "category_id": d + 1,
            "iscrowd": 0,
            "area": box[2] * box[3],
        }
        for i, (_, _, digits) in GROUND_TRUTH.items()
        for k, (d, box) in enumerate(digits)
    ]
    (tmp_path / "valid.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    register_digits(str(tmp_path), "t")
    return "t_valid"


def instances(size, detections):
    """Instances from [(digit, score, XYXY box)]."""
    return Instances(
        size,
        pred_boxes=Boxes(torch.tensor([b for _, _, b in detections], dtype=torch.float32).reshape(-1, 4)),
        scores=torch.tensor([s for _, s, _ in detections], dtype=torch.float32),
        pred_classes=torch.tensor([d for d, _, _ in detections], dtype=torch.long),
    )


PREDICTIONS = {
    # Right: 2, 4, plus a "9" on the "4" that the reader's class-agnostic NMS removes.
    1: [(2, 0.9, [10, 5, 24, 33]), (4, 0.85, [40, 5, 54, 33]), (9, 0.6, [41, 6, 55, 33])],
    2: [(1, 0.9, [13, 10, 27, 38]), (7, 0.8, [12, 55, 26, 83])],  # right: 17
    3: [(8, 0.9, [10, 5, 24, 33])],  # wrong: 8
    4: [],  # wrong: -1
}


def run(evaluator, predictions=PREDICTIONS):
    evaluator.reset()
    for image_id, detections in predictions.items():
        w, h, _ = GROUND_TRUTH[image_id]
        evaluator.process([{"image_id": image_id}], [{"instances": instances((h, w), detections)}])
    return evaluator.evaluate()


def test_ground_truth_numbers_follow_reading_order(dataset):
    assert ground_truth_numbers(dataset) == {1: 24, 2: 17, 3: 0, 4: 53}


def test_accuracy_on_known_predictions(dataset):
    cfg = get_digit_cfg()  # the trainer builds it from the config: threshold 0.5
    result = run(NumberAccuracyEvaluator(dataset, cfg))
    assert result == {"number": {"accuracy": 50.0, "num_images": 4}}
    assert flatten_results_dict(result) == {"number/accuracy": 50.0, "number/num_images": 4}


def test_stored_detections_are_re_read_with_other_thresholds(dataset):
    evaluator = NumberAccuracyEvaluator(dataset, NumberReader(), distributed=False)
    run(evaluator)
    assert sorted(d["image_id"] for d in evaluator.detections) == [1, 2, 3, 4]
    assert evaluator.readings(NumberReader()) == {1: 24, 2: 17, 3: 8, 4: -1}
    # At 0.5 the "9" (0.6) passes; the class-agnostic NMS removes it, without NMS it is a third character.
    assert evaluator.accuracy(NumberReader(score_threshs=(0.5,))) == 50.0
    assert evaluator.accuracy(NumberReader(score_threshs=(0.5,), nms_thresh=1.0)) == 25.0
    # Above every score nothing is read.
    assert evaluator.accuracy(NumberReader(score_threshs=(0.95,))) == 0.0


def test_reset_starts_a_new_round(dataset):
    evaluator = NumberAccuracyEvaluator(dataset, NumberReader())
    run(evaluator)
    assert run(evaluator, {2: PREDICTIONS[2]}) == {"number": {"accuracy": 100.0, "num_images": 1}}


def test_prediction_for_an_unknown_image_is_a_clear_error(dataset):
    evaluator = NumberAccuracyEvaluator(dataset, NumberReader())
    evaluator.reset()
    evaluator.process([{"image_id": 99}], [{"instances": instances((40, 40), [])}])
    with pytest.raises(KeyError, match=r"\[99\].*'t_valid'"):
        evaluator.evaluate()


def test_unlabelled_split_is_a_clear_error(dataset, tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "1.png").write_bytes(b"")  # listed only, never read
    with pytest.raises(ValueError, match="'t_test' has no annotations"):
        ground_truth_numbers("t_test")
