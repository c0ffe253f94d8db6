"""
DIGITS.SECOND_LOOK (inference/second_look.py, and the exported runtime from model.json): the rule on
constructed readings, the PyTorch wrapper and the ONNX runtime on the ready model and drawn images (a
second look gives exactly the reading at the second size; no second look, exactly the first), the
config's checks.
"""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from digit_detectron.checkpoint.bundle import READY_MODEL_ONNX
from digit_detectron.config import get_model_cfg
from digit_detectron.export import runtime
from digit_detectron.inference.predictor import DigitPredictor
from digit_detectron.modeling.number_reader import needs_second_look
from digit_detectron.utils.errors import ConfigError

from conftest import draw_digits

BOXES = np.array([[0, 0, 10, 20], [12, 0, 22, 22], [30, 0, 40, 40]], dtype=np.float32)  # heights 20, 22, 40


@pytest.mark.parametrize("rule", [needs_second_look, runtime.needs_second_look])
def test_the_rule_on_constructed_readings(rule):
    assert rule(BOXES, [0, 1], 1.0, 28) is True  # median 21 px < 28
    assert rule(BOXES, [0, 1], 2.0, 28) is False  # 42 px at a scale of 2
    assert rule(BOXES, [0, 1, 2], 1.0, 28) is True  # median of 20, 22, 40 is 22
    assert rule(BOXES, [2], 1.0, 28) is False
    assert rule(BOXES, [], 1.0, 28) is False  # nothing read: only with empty
    assert rule(BOXES, [], 1.0, 28, empty=True) is True
    assert rule(BOXES, np.array([1, 0]), 0.5, 11) is True  # 10.5 px < 11


def _images():
    """A wide wall with a small number, and a plain wall (BGR)."""
    rng = np.random.default_rng(3)
    number, _ = draw_digits(rng, [4, 7], height=30)
    wall = np.full((60, 200, 3), 90, np.uint8)
    wall[5 : 5 + number.shape[0], 60 : 60 + number.shape[1]] = number
    plain = np.full((60, 160, 3), 120, np.uint8)
    return [wall, plain]


def _detections(instances):
    return [(i.pred_boxes.tensor.numpy(), i.scores.numpy(), i.pred_classes.numpy()) for i in instances]


def _same(a, b):
    for (ba, sa, ca), (bb, sb, cb) in zip(a, b):
        assert ba.shape == bb.shape and (ca == cb).all()
        assert np.allclose(ba, bb, atol=1e-3) and np.allclose(sa, sb, atol=1e-5)


@pytest.mark.slow
def test_the_pytorch_wrapper_reads_again_at_the_second_size_or_not_at_all(tmp_path):
    images = _images()
    off = ["MODEL.DEVICE", "cpu", "DIGITS.SECOND_LOOK.ENABLED", "False"]  # the ready model has it on
    plain = DigitPredictor(get_model_cfg(None, off, weights="ready"))
    plain80 = DigitPredictor(get_model_cfg(None, off + ["INPUT.MIN_SIZE_TEST", "80"], weights="ready"))

    def looked(height, empty):
        opts = ["MODEL.DEVICE", "cpu", "DIGITS.SECOND_LOOK.ENABLED", "True"]
        opts += ["DIGITS.SECOND_LOOK.MAX_DIGIT_HEIGHT", str(height), "DIGITS.SECOND_LOOK.EMPTY", str(empty)]
        return DigitPredictor(get_model_cfg(None, opts, weights="ready"))

    always = looked(1000.0, True)  # every reading is "small", and an empty one is looked at again too
    _same(_detections(always(images)), _detections(plain80(images)))
    assert always.model.second_looks == 2
    never = looked(0.001, False)
    _same(_detections(never(images)), _detections(plain(images)))
    assert never.model.second_looks == 0
    # Evaluation passes dataset dicts: the second look reads the file itself.
    path = tmp_path / "wall.png"
    cv2.imwrite(str(path), images[0])
    x = {"image": plain.preprocess(images[0]), "height": 60, "width": 200, "file_name": str(path)}
    with torch.inference_mode():
        out = always.model([x])[0]["instances"]
    _same(_detections([out]), _detections(plain80(images[:1])))
    del x["file_name"]
    with pytest.raises(ValueError, match="own pixels"):
        with torch.inference_mode():
            always.model([x])


@pytest.mark.slow
def test_the_exported_runtime_reads_again_from_model_json(tmp_path):
    onnx = shutil.copy(READY_MODEL_ONNX, tmp_path / "model.onnx")
    meta = json.loads(open(READY_MODEL_ONNX[: -len(".onnx")] + ".json").read())
    assert meta["second_look"] == {"min_size": 80, "max_digit_height": 24.0, "empty": False}  # what ships
    (tmp_path / "model.json").write_text(json.dumps(meta))
    images = [cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in _images()]
    model = runtime.ExportedModel(str(onnx), threads=1)
    first = [model._detect_at(im, None)[:3] for im in images]
    second = [model._detect_at(im, 80)[:3] for im in images]
    assert any(len(f[0]) != len(s[0]) or not np.array_equal(f[0], s[0]) for f, s in zip(first, second))
    for height, empty, expected in ((1000, True, second), (0.001, False, first)):
        meta["second_look"] = {"min_size": 80, "max_digit_height": height, "empty": empty}
        (tmp_path / "model.json").write_text(json.dumps(meta))
        model = runtime.ExportedModel(str(onnx), threads=1)
        for image, want in zip(images, expected):
            got = model.detect(image)
            assert all(np.array_equal(g, w) for g, w in zip(got, want))
    meta["second_look"] = {"min_size": 0, "max_digit_height": 28}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(runtime.RuntimeModelError, match="second_look"):
        runtime.ExportedModel(str(onnx), threads=1)


def test_config_checks_name_the_key():
    base = ["MODEL.DEVICE", "cpu", "DIGITS.SECOND_LOOK.ENABLED", "True"]
    with pytest.raises(ConfigError, match="DIGITS.SECOND_LOOK.MIN_SIZE"):
        get_model_cfg(None, base + ["DIGITS.SECOND_LOOK.MIN_SIZE", "0"], weights="ready")
    with pytest.raises(ConfigError, match="DIGITS.SECOND_LOOK.MAX_DIGIT_HEIGHT"):
        get_model_cfg(None, base + ["DIGITS.SECOND_LOOK.MAX_DIGIT_HEIGHT", "0.0"], weights="ready")
    with pytest.raises(ConfigError, match="DIGITS.SECOND_LOOK.ENABLED"):
        get_model_cfg(None, base + ["DIGITS.TTA.ENABLED", "True"], weights="ready")
