"""
DIGITS.SECOND_LOOK (inference/second_look.py, and the exported runtime from model.json): the rule and
the crop's region on constructed readings, the PyTorch wrapper and the ONNX runtime on the ready model
and drawn images (a second look gives exactly the reading at the second size, or of the crop; no second
look, exactly the first), the config's and model.json's checks.
"""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from digit_detectron.checkpoint.bundle import READY_MODEL_ONNX
from digit_detectron.config import get_model_cfg
from digit_detectron.export import runtime
from digit_detectron.inference.predictor import DigitPredictor
from digit_detectron.modeling import number_reader
from digit_detectron.modeling.number_reader import needs_second_look, second_look_crop
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
        opts = ["MODEL.DEVICE", "cpu", "DIGITS.SECOND_LOOK.ENABLED", "True", "DIGITS.SECOND_LOOK.MODE", "resize"]
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
    shipped = {"min_size": 80, "max_digit_height": 24.0, "empty": True, "mode": "crop", "target_height": 32.0}
    assert meta["second_look"] == shipped
    (tmp_path / "model.json").write_text(json.dumps(meta))
    images = [cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in _images()]
    model = runtime.ExportedModel(str(onnx), threads=1)
    first = [model._detect_at(im, None)[:3] for im in images]
    second = [model._detect_at(im, 80)[:3] for im in images]
    assert any(len(f[0]) != len(s[0]) or not np.array_equal(f[0], s[0]) for f, s in zip(first, second))
    for height, empty, expected in ((1000, True, second), (0.001, False, first)):
        meta["second_look"] = {"min_size": 80, "max_digit_height": height, "empty": empty}  # mode "resize"
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
    with pytest.raises(ConfigError, match="DIGITS.SECOND_LOOK.MODE"):
        get_model_cfg(None, base + ["DIGITS.SECOND_LOOK.MODE", "zoom"], weights="ready")
    with pytest.raises(ConfigError, match="DIGITS.SECOND_LOOK.TARGET_HEIGHT"):
        get_model_cfg(None, base + ["DIGITS.SECOND_LOOK.TARGET_HEIGHT", "0.0"], weights="ready")


@pytest.mark.parametrize("crop", [second_look_crop, runtime.second_look_crop])
def test_the_crop_region_on_constructed_readings(crop):
    # digits 20 and 22 px tall (median 21) at x 100..122, y 50..72 of a 200 x 400 image
    boxes = np.array([[100, 50, 110, 70], [112, 50, 122, 72], [0, 0, 5, 5]], np.float32)
    (x1, y1, x2, y2), (h, w) = crop(boxes, [0, 1], 200, 400, 32.0, 512)
    assert (x1, y1, x2, y2) == (58, 39, 164, 83)  # 2 x 21 px beside, 0.5 x 21 above and below
    assert (h, w) == (int(44 * 32 / 21 + 0.5), int(106 * 32 / 21 + 0.5))  # the digits become 32 px tall
    assert crop(boxes, [], 200, 400, 32.0, 512) is None  # nothing read: no crop
    (x1, y1, x2, y2), _ = crop(boxes, [2], 200, 400, 32.0, 512)  # within the image
    assert (x1, y1, x2, y2) == (0, 0, 15, 8)
    _, (h, w) = crop(boxes, [0, 1], 200, 400, 32.0, 100)  # the longer side at most max_size
    assert w == 100 and h == int(44 * 100 / 106 + 0.5)
    for name in ("CROP_MARGIN_X", "CROP_MARGIN_Y"):  # the runtime decides alike
        assert getattr(runtime, name) == getattr(number_reader, name)


def _crop_reading(network, image, boxes, chosen):
    """Independently of the wrapper: the detector on the region of ``second_look_crop`` (resized with
    Pillow), its boxes shifted back into the image's pixels."""
    (x1, y1, x2, y2), (h, w) = second_look_crop(boxes, chosen, image.shape[0], image.shape[1], 32.0, 512)
    resized = np.asarray(Image.fromarray(image[y1:y2, x1:x2]).resize((w, h), Image.BILINEAR))
    x = {
        "image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
        "height": y2 - y1,
        "width": x2 - x1,
    }
    with torch.inference_mode():
        out = network([x])[0]["instances"]
    b = out.pred_boxes.tensor.numpy().copy()
    b[:, 0::2] += x1
    b[:, 1::2] += y1
    return b, out.scores.numpy(), out.pred_classes.numpy()


@pytest.mark.slow
def test_the_pytorch_wrapper_reads_the_crop_around_the_number():
    images = _images()
    off = ["MODEL.DEVICE", "cpu", "DIGITS.SECOND_LOOK.ENABLED", "False"]
    plain = DigitPredictor(get_model_cfg(None, off, weights="ready"))
    first = _detections(plain(images))

    def looked(height, empty, gate=None):
        opts = ["MODEL.DEVICE", "cpu", "DIGITS.SECOND_LOOK.MODE", "crop", "DIGITS.SECOND_LOOK.EMPTY", str(empty)]
        opts += ["DIGITS.SECOND_LOOK.MAX_DIGIT_HEIGHT", str(height)]
        opts += [] if gate is None else ["DIGITS.READER.MIN_TOP_SCORE", str(gate)]
        return DigitPredictor(get_model_cfg(None, opts, weights="ready"))

    always = looked(1000.0, False)
    chosen = always.model.reader.select(*[torch.as_tensor(v) for v in first[0]])
    assert len(chosen) == 2  # the drawn 47 is read at the first look
    got = _detections(always(images))
    _same(got[:1], [_crop_reading(plain.network, images[0], first[0][0], chosen.numpy())])
    _same(got[1:], first[1:])  # the plain wall reads nothing: no crop to look at
    assert always.model.second_looks == 1
    never = looked(0.001, True)
    _same(_detections(never(images)), first)
    assert never.model.second_looks == 0
    # A gate nothing passes: EMPTY crops around what the reader would read without it; else no look.
    gated = looked(1000.0, True, gate=1.0)
    _same(_detections(gated(images))[:1], [_crop_reading(plain.network, images[0], first[0][0], chosen.numpy())])
    assert gated.model.second_looks == 1
    shut = looked(1000.0, False, gate=1.0)
    _same(_detections(shut(images)), first)
    assert shut.model.second_looks == 0


@pytest.mark.slow
def test_the_exported_runtime_reads_the_crop_around_the_number(tmp_path):
    onnx = shutil.copy(READY_MODEL_ONNX, tmp_path / "model.onnx")
    meta = json.loads(open(READY_MODEL_ONNX[: -len(".onnx")] + ".json").read())
    images = [cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in _images()]

    def model(**look):
        meta["second_look"] = {"min_size": 80, "mode": "crop", "target_height": 32.0, **look}
        (tmp_path / "model.json").write_text(json.dumps(meta))
        return runtime.ExportedModel(str(onnx), threads=1)

    m = model(max_digit_height=1000.0, empty=False)
    boxes, scores, classes = m._detect_at(images[0], None)[:3]
    _, chosen = m.number_of(boxes, scores, classes)
    assert len(chosen) == 2
    (x1, y1, x2, y2), shape = runtime.second_look_crop(boxes, chosen, 60, 200, 32.0, meta["max_size_test"])
    want = m._detect_at(np.ascontiguousarray(images[0][y1:y2, x1:x2]), None, shape)[:3]
    want[0][:, 0::2] += x1
    want[0][:, 1::2] += y1
    got = m.detect(images[0])
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    first_plain = m._detect_at(images[1], None)[:3]
    assert all(np.array_equal(g, w) for g, w in zip(m.detect(images[1]), first_plain))  # nothing to crop
    m = model(max_digit_height=0.001, empty=True)
    assert all(np.array_equal(g, w) for g, w in zip(m.detect(images[0]), (boxes, scores, classes)))
    meta["reader"]["min_top_score"] = 1.0  # nothing passes the gate: EMPTY crops around the ungated reading
    assert all(np.array_equal(g, w) for g, w in zip(model(max_digit_height=1000.0, empty=True).detect(images[0]), want))
    assert all(
        np.array_equal(g, w)
        for g, w in zip(model(max_digit_height=1000.0, empty=False).detect(images[0]), (boxes, scores, classes))
    )
    meta["second_look"] = {"min_size": 80, "max_digit_height": 32.0, "mode": "zoom"}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(runtime.RuntimeModelError, match="'mode' is 'resize' or 'crop'"):
        runtime.ExportedModel(str(onnx), threads=1)
