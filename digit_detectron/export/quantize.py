"""
Static int8 quantization of an exported ONNX model (ONNX Runtime's ``quantize_static``, QDQ format,
int8 weights per output channel, uint8 activations calibrated by their min / max on images), and the
check that decides whether it is kept: COCO AP, AP50 and whole-number accuracy of the int8 and the
float32 model on the same labelled images, each within ``tolerance`` points.

Which layers: ``backbone`` (the default) quantizes the ResNet's convolutions and keeps the FPN, the
RPN and the box head in float32; ``all`` quantizes every convolution. On the ready model and 1,000 of
the out-of-style splits' images, ``backbone`` stayed within 0.5 point on every split and ``all``
lost up to 0.75 (benchmarks/speed.md).
"""

import contextlib
import io
import os

import numpy as np

from ..utils.errors import DigitError
from ..utils.io import atomic_write_json
from .runtime import ExportedModel

__all__ = ["INT8_LAYERS", "QuantizeError", "check_int8", "model_accuracy", "quantize_onnx"]

INT8_LAYERS = ("backbone", "all")


class QuantizeError(DigitError, RuntimeError):
    """The model could not be quantized, or the int8 model lost more than the tolerance."""


def _excluded(graph, layers):
    """Names of the Conv nodes left in float32 for ``layers``."""
    convs = [node.name for node in graph.node if node.op_type == "Conv"]
    if layers == "all":
        return []
    return [name for name in convs if "/bottom_up/" not in name]


def quantize_onnx(float_path, out_path, calibration_rgb, layers="backbone"):
    """
    Write the int8 model of the float32 ``float_path`` to ``out_path`` (and its model.json, with a
    "quantization" entry), calibrated on ``calibration_rgb`` (H x W x 3 uint8 RGB images, as the
    model reads them). Returns ``out_path``.
    """
    if layers not in INT8_LAYERS:
        raise QuantizeError(f"int8 layers must be one of {', '.join(INT8_LAYERS)}, got {layers!r}")
    if not calibration_rgb:
        raise QuantizeError("int8 quantization needs calibration images")
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise QuantizeError(
            'int8 quantization needs onnx and onnxruntime: pip install "digit-detectron[export]"'
        ) from None
    model = ExportedModel(float_path, threads=1)
    inputs = [model.preprocess(np.asarray(image)) for image in calibration_rgb]
    name = model.input_name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(inputs)

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {name: item}

    excluded = _excluded(onnx.load(float_path).graph, layers)
    tmp = out_path + ".partial"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints
            quantize_static(
                float_path,
                tmp,
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_exclude=excluded,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    meta = dict(
        model.meta, quantization={"type": "int8 static (QDQ)", "layers": layers, "calibration_images": len(inputs)}
    )
    atomic_write_json(os.path.splitext(out_path)[0] + ".json", meta, indent=2)
    return out_path


def model_accuracy(model, images_rgb, truths):
    """
    {"AP", "AP50", "accuracy"} (percent) of an ``ExportedModel`` on RGB images with their truths:
    ``(boxes XYWH in pixels, digits 0..9 in reading order)`` per image (no boxes: no number, -1).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    found = model.detect_many(images_rgb)
    gt = {"images": [], "annotations": [], "categories": [{"id": d + 1, "name": str(d)} for d in range(10)]}
    detections, right = [], 0
    for image_id, (image, (boxes, digits), (b, s, c)) in enumerate(zip(images_rgb, truths, found), start=1):
        gt["images"].append({"id": image_id, "height": int(image.shape[0]), "width": int(image.shape[1])})
        for box, digit in zip(np.asarray(boxes, float).reshape(-1, 4), digits):  # the generator's order
            x, y, w, h = (float(v) for v in box)
            ann = {"id": len(gt["annotations"]) + 1, "image_id": image_id, "bbox": [x, y, w, h], "area": w * h}
            gt["annotations"].append(dict(ann, category_id=int(digit) + 1, iscrowd=0))
        for box, score, cls in zip(b, s, c):
            x1, y1, x2, y2 = (float(v) for v in box)
            detections.append(
                {
                    "image_id": image_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                    "category_id": int(cls) + 1,
                }
            )
        number, _ = model.number_of(b, s, c)
        right += number == (int("".join(str(int(d)) for d in digits)) if len(digits) else -1)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if detections:
            evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            ap, ap50 = (max(float(v), 0.0) * 100 for v in evaluation.stats[:2])
        else:
            ap = ap50 = 0.0
    return {"AP": ap, "AP50": ap50, "accuracy": 100.0 * right / max(len(images_rgb), 1)}


def check_int8(float_model, int8_model, images_rgb, truths, tolerance=0.5):
    """Both models' ``model_accuracy`` and whether int8 is within ``tolerance`` points on each."""
    reference = model_accuracy(float_model, images_rgb, truths)
    quantized = model_accuracy(int8_model, images_rgb, truths)
    losses = {k: reference[k] - quantized[k] for k in reference}
    return {
        "images": len(images_rgb),
        "float32": reference,
        "int8": quantized,
        "loss_points": losses,
        "tolerance_points": tolerance,
        "ok": all(loss <= tolerance for loss in losses.values()),
    }
