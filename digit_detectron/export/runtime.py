#!/usr/bin/env python
"""
Run an exported digit model without detectron2 (nor digit_detectron): this one file, numpy, Pillow,
and onnxruntime (``model.onnx``) or torch + torchvision (``model.ts``, TorchScript).

``digit-detectron export`` writes it beside the model as ``digit_runtime.py``, with ``model.json``
(the resize, the input channel order and the reader's thresholds)::

    python digit_runtime.py model.onnx photo.png [more.png ...]      # prints the number of each
    python digit_runtime.py --threads 4 model.onnx folder/*.png      # 4 images at once (default: the cores)

An image that cannot be read prints ``IMAGE: -1 (unreadable: why)`` and the others are read; the exit
code is then 1. A missing or unreadable model or model.json ends in one ``error:`` line, exit code 2.
    from digit_runtime import ExportedModel
    model = ExportedModel("model.onnx"); boxes, scores, classes = model.detect(image_rgb)
    number, digits = model.read(image_rgb)
    results = model.read_many(images_rgb)          # several images at once, in order
    results = model.read_files(paths)              # decoded in the workers too; an OSError for a bad file

How the cores are used (ONNX): ``threads`` images run at once, one thread each, on one session (its
``run`` is thread-safe and releases the GIL). On the small images of this task that is faster than
one image on all the cores: 1.4x on 2 cores, since a 64-px image's convolutions are too small to split
well (benchmarks/speed.md). The results do not depend on ``threads``.

What the exported graph holds is the whole detectron2 model of one image: normalisation, backbone,
RPN (anchors, top-k, NMS), ROIAlign, box head, per-class NMS, on the image already resized; this
file does the rest exactly as ``DigitPredictor`` does: the resize (Pillow bilinear, short side
``min_size`` capped at ``max_size``), scaling the boxes back to the input's pixels (clipped, empty
ones dropped), and the number reader (class-agnostic NMS, score ladder, reading order).
"""

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils.pixels import pil_to_rgb  # export writes utils/pixels.py here

__all__ = ["ExportedModel", "RuntimeModelError", "load_image", "load_metadata", "read_number"]


class RuntimeModelError(ValueError):
    """The exported model or its model.json is missing or unreadable; the message names the file."""


COLUMN_MAX_CENTRE_SHIFT = 0.5  # the reader's column rule (modeling/number_reader.py)
COLUMN_MAX_VERTICAL_OVERLAP = 0.3
LINE_MAX_HEIGHT_RATIO = 1.6  # the reader's number line (modeling/number_reader.py)
LINE_MAX_CENTRE_OFFSET = 1.0
LINE_MAX_GAP = 1.0
CROP_MARGIN_X = 2.0  # a cropped second look's region (modeling/number_reader.py)
CROP_MARGIN_Y = 0.5
# model.json's ``second_look`` keys that may be absent (a model exported before they existed)
SECOND_LOOK_DEFAULTS = {"empty": False, "mode": "resize", "target_height": 32.0}


def usable_cores():
    """The cores this process may run on (its CPU affinity), at least 1: ``utils.threads.usable_cores``,
    repeated because this file runs alone as digit_runtime.py, where only utils/pixels.py is inlined."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_metadata(model_path):
    """model.json beside ``model_path`` (same stem)."""
    path = os.path.splitext(model_path)[0] + ".json"
    if not os.path.isfile(path):
        raise RuntimeModelError(f"{path}: the exported model's metadata is missing (export writes it beside the model)")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RuntimeModelError(f"{path}: not readable as json ({' '.join(str(e).split())})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != 1:
        raise RuntimeModelError(f"{path}: not digit-detectron export metadata of format 1")
    reader = meta.get("reader")
    keys = ("min_size_test", "max_size_test", "input_format")
    if not isinstance(reader, dict) or any(k not in meta for k in keys):
        raise RuntimeModelError(f"{path}: needs 'reader', {', '.join(map(repr, keys))}")
    look = meta.get("second_look")
    if isinstance(look, dict):
        look = meta["second_look"] = {**SECOND_LOOK_DEFAULTS, **look}
    if look is not None and not (
        isinstance(look, dict)
        and isinstance(look.get("min_size"), int)
        and not isinstance(look.get("min_size"), bool)
        and look["min_size"] >= 1
        and isinstance(look.get("max_digit_height"), (int, float))
        and look["max_digit_height"] > 0
        and look["mode"] in ("resize", "crop")
        and isinstance(look["target_height"], (int, float))
        and look["target_height"] > 0
    ):
        raise RuntimeModelError(
            f"{path}: 'second_look' needs 'min_size' (whole number >= 1) and 'max_digit_height' (> 0); "
            "'mode' is 'resize' or 'crop', 'target_height' > 0"
        )
    return meta


def load_image(path):
    """An image file as H x W x 3 uint8 RGB, the pixels the package reads; OSError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_rgb(image)
    except FileNotFoundError:
        raise OSError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise OSError(f"{path}: not an image file (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"{path}: corrupt or truncated image ({' '.join(str(e).split())})") from None


def resized_shape(height, width, short, max_size):
    """detectron2's ResizeShortestEdge output (h, w)."""
    scale = short / min(height, width)
    newh, neww = (short, scale * width) if height < width else (scale * height, short)
    if max(newh, neww) > max_size:
        factor = max_size / max(newh, neww)
        newh, neww = newh * factor, neww * factor
    return int(newh + 0.5), int(neww + 0.5)


def needs_second_look(boxes, chosen, scale, max_height, empty=False):
    """Whether a reading deserves a second look (number_reader.needs_second_look): nothing read and
    ``empty``, or the median height of the digits read, at the model's input scale, under ``max_height``."""
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
    if not len(chosen):
        return bool(empty)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[chosen]
    return float(np.median(boxes[:, 3] - boxes[:, 1])) * float(scale) < float(max_height)


def second_look_crop(boxes, chosen, height, width, target_height, max_size):
    """((x1, y1, x2, y2), (new_height, new_width)) of a cropped second look, or None when nothing is
    chosen (number_reader.second_look_crop)."""
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
    if not len(chosen):
        return None
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[chosen]
    digit = max(float(np.median(boxes[:, 3] - boxes[:, 1])), 1e-3)
    x1 = int(max(0, np.floor(boxes[:, 0].min() - CROP_MARGIN_X * digit)))
    y1 = int(max(0, np.floor(boxes[:, 1].min() - CROP_MARGIN_Y * digit)))
    x2 = int(min(width, np.ceil(boxes[:, 2].max() + CROP_MARGIN_X * digit)))
    y2 = int(min(height, np.ceil(boxes[:, 3].max() + CROP_MARGIN_Y * digit)))
    x2, y2 = max(x2, min(x1 + 1, width)), max(y2, min(y1 + 1, height))
    scale = float(target_height) / digit
    scale = min(scale, float(max_size) / max(x2 - x1, y2 - y1))
    new = (max(1, int((y2 - y1) * scale + 0.5)), max(1, int((x2 - x1) * scale + 0.5)))
    return (x1, y1, x2, y2), new


def score_order(boxes, scores, classes):
    """By decreasing score; ties by class, x1, y1, x2, y2 (number_reader.score_order)."""
    return np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], classes, -scores))


def reading_order(boxes):
    """Left to right (top to bottom for a column); centre ties by the other axis (number_reader.reading_order)."""
    axis = 1 if _is_column(boxes) else 0
    centres = ((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2)
    return np.lexsort((centres[1 - axis], centres[axis]))


def _nms(boxes, scores, classes, thresh):
    """Indices kept by NMS, in ``score_order`` (torchvision's rule: drop IoU > thresh)."""
    order = score_order(boxes, scores, classes)
    keep = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= thresh]
    return np.asarray(keep, dtype=np.int64)


def _is_column(boxes):
    if len(boxes) < 2:
        return False
    boxes = boxes[np.argsort((boxes[:, 1] + boxes[:, 3]) / 2, kind="stable")]
    upper, lower = boxes[:-1], boxes[1:]
    shift = np.abs((upper[:, 0] + upper[:, 2]) - (lower[:, 0] + lower[:, 2])) / 2
    narrower = np.minimum(upper[:, 2] - upper[:, 0], lower[:, 2] - lower[:, 0])
    overlap = np.minimum(upper[:, 3], lower[:, 3]) - np.maximum(upper[:, 1], lower[:, 1])
    shorter = np.minimum(upper[:, 3] - upper[:, 1], lower[:, 3] - lower[:, 1])
    return bool(
        np.all((shift <= COLUMN_MAX_CENTRE_SHIFT * narrower) & (overlap <= COLUMN_MAX_VERTICAL_OVERLAP * shorter))
    )


def on_number_line(boxes):
    """The digits on the first (most confident) digit's line (number_reader.on_number_line), a bool array."""
    keep = np.ones(len(boxes), bool)
    if len(boxes) < 2 or _is_column(boxes):
        return keep
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    ratio = np.maximum(heights / heights[0], heights[0] / heights)
    offset = np.abs((boxes[:, 1] + boxes[:, 3]) / 2 - (boxes[0, 1] + boxes[0, 3]) / 2)
    keep &= (ratio <= LINE_MAX_HEIGHT_RATIO) & (offset <= LINE_MAX_CENTRE_OFFSET * heights[0])
    candidates = np.nonzero(keep)[0]
    order = candidates[np.argsort((boxes[candidates, 0] + boxes[candidates, 2]) / 2, kind="stable")]
    apart = (boxes[order[1:], 0] - boxes[order[:-1], 2]) > LINE_MAX_GAP * heights[0]
    lo = hi = int(np.nonzero(order == 0)[0][0])
    while lo > 0 and not apart[lo - 1]:
        lo -= 1
    while hi < len(order) - 1 and not apart[hi]:
        hi += 1
    keep[:] = False
    keep[order[lo : hi + 1]] = True
    return keep


def read_number(boxes, scores, classes, score_threshs, nms_thresh, max_digits, line_filter=False, min_top_score=0.0):
    """(number or -1, indices of the digits read in reading order): NumberReader's rule in numpy."""
    boxes, scores, classes = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores), np.asarray(classes)
    keep = _nms(boxes, scores.astype(np.float32), classes, nms_thresh)
    if not keep.size or scores[keep[0]] < min_top_score:
        return -1, keep[:0]
    for thresh in score_threshs:
        n = min(int((scores[keep] >= thresh).sum()), max_digits)
        if n:
            chosen = keep[:n]
            if line_filter:
                chosen = chosen[on_number_line(boxes[chosen])]
            chosen = chosen[reading_order(boxes[chosen])]
            return int("".join(str(int(c)) for c in classes[chosen])), chosen
    return -1, keep[:0]


class ExportedModel:
    """An exported model (``.onnx`` with onnxruntime, ``.ts`` with torch) and its metadata."""

    def __init__(self, path, threads=None, device="cpu"):
        """
        ``threads``: CPU threads in all (default: the usable cores). An ONNX model runs that many
        images at once, one thread each; a TorchScript model runs one image at a time on them.
        ``device``: "cpu", or "cuda" to run an ONNX model on onnxruntime's CUDA provider where it is installed.
        """
        self.path = path
        self.meta = load_metadata(path)
        if not os.path.isfile(path):
            raise RuntimeModelError(f"{path}: model file not found")
        if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
            raise RuntimeModelError(f"threads must be a whole number >= 1, got {threads!r}")
        threads = int(threads) if threads else usable_cores()
        self.workers = threads
        self._pool, self._pool_lock = None, threading.Lock()
        if path.endswith(".onnx"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # one thread an image; ``workers`` images at once
            options.inter_op_num_threads = 1
            try:
                providers = ["CPUExecutionProvider"]
                if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
                    providers.insert(0, "CUDAExecutionProvider")
                self._session = ort.InferenceSession(path, options, providers=providers)
            except Exception as e:  # onnxruntime's own types (InvalidProtobuf, Fail, ...)
                raise RuntimeModelError(f"{path}: not a loadable ONNX model ({_one_line(e)})") from None
            self.input_name = self._session.get_inputs()[0].name  # what the graph calls its image
            self._run = lambda image: self._session.run(None, {self.input_name: image})
        elif path.endswith(".ts"):
            import torch
            import torchvision  # noqa: F401  (registers the nms / roi_align ops the graph calls)

            torch.set_num_threads(threads)
            self.workers = 1  # the threads work inside each image
            try:
                module = torch.jit.load(path, map_location="cpu")
            except Exception as e:  # torch.jit's RuntimeError / ValueError of a damaged archive
                raise RuntimeModelError(f"{path}: not a loadable TorchScript model ({_one_line(e)})") from None

            def run(image):
                with torch.inference_mode():
                    return [t.numpy() for t in module(torch.from_numpy(image))]

            self._run = run
        else:
            raise RuntimeModelError(f"{path}: an exported model is a .onnx or .ts file")

    def map(self, function, items):
        """``[function(item) for item in items]``, ``workers`` items at once, in order."""
        items = list(items)
        if self.workers <= 1 or len(items) <= 1:
            return [function(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="digit-runtime")
        return list(self._pool.map(function, items))

    def close(self):
        """Stop the worker threads (they also stop when the process ends)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def preprocess(self, image_rgb, short=None, shape=None):
        """The CHW uint8 array the graph takes: resized (short side ``short``, default model.json's, or to
        ``shape`` (height, width) exactly), in the model's channel order."""
        h, w = image_rgb.shape[:2]
        newh, neww = shape or resized_shape(h, w, short or self.meta["min_size_test"], self.meta["max_size_test"])
        resized = np.asarray(Image.fromarray(image_rgb).resize((neww, newh), Image.BILINEAR))
        if self.meta["input_format"] == "BGR":
            resized = resized[:, :, ::-1]
        return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.uint8)

    def detect(self, image_rgb):
        """
        (boxes XYXY in the input's pixels, scores, classes 0..9) of an H x W x 3 uint8 RGB image. With
        model.json's ``second_look`` (DIGITS.SECOND_LOOK), an image whose number reads small (or, with
        ``empty``, reads nothing) is detected again, and those detections count: at a short side of its
        ``min_size`` (mode "resize"), or only the region around the digits, resized so that they are
        ``target_height`` px tall (mode "crop", ``second_look_crop``).
        """
        image_rgb = np.asarray(image_rgb)
        boxes, scores, classes, size = self._detect_at(image_rgb, None)
        look = self.meta.get("second_look")
        if not look:
            return boxes, scores, classes
        _, chosen = self.number_of(boxes, scores, classes)
        crop = look["mode"] == "crop"
        empty = bool(look["empty"])
        if crop and not len(chosen) and empty:
            _, chosen = self.number_of(boxes, scores, classes, gate=False)
            if not len(chosen):
                return boxes, scores, classes
        scale = float(size[0]) / image_rgb.shape[0]
        if not needs_second_look(boxes, chosen, scale, look["max_digit_height"], empty and not crop):
            return boxes, scores, classes
        if not crop:
            boxes, scores, classes, _ = self._detect_at(image_rgb, look["min_size"])
            return boxes, scores, classes
        h, w = image_rgb.shape[:2]
        (x1, y1, x2, y2), shape = second_look_crop(
            boxes, chosen, h, w, look["target_height"], self.meta["max_size_test"]
        )
        boxes, scores, classes, _ = self._detect_at(np.ascontiguousarray(image_rgb[y1:y2, x1:x2]), None, shape)
        boxes[:, 0::2] += x1
        boxes[:, 1::2] += y1
        return boxes, scores, classes

    def _detect_at(self, image_rgb, short, shape=None):
        tensor = self.preprocess(image_rgb, short, shape)
        boxes, classes, scores, size = self._run(tensor)
        h, w = image_rgb.shape[:2]
        boxes = boxes.astype(np.float32).copy()
        boxes[:, 0::2] *= w / float(size[1])
        boxes[:, 1::2] *= h / float(size[0])
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        return boxes[keep], scores[keep].astype(np.float32), classes[keep].astype(np.int64), size

    def number_of(self, boxes, scores, classes, gate=True):
        """(number or -1, indices of the digits read in reading order) of detections, with model.json's reader
        (without its MIN_TOP_SCORE gate when ``gate`` is False)."""
        r = self.meta["reader"]
        return read_number(
            boxes,
            scores,
            classes,
            r["score_threshs"],
            r["nms_thresh"],
            r["max_digits"],
            r.get("line_filter", False),
            r.get("min_top_score", 0.0) if gate else 0.0,
        )

    def read(self, image_rgb):
        """(number or -1, [(digit, score, (x1, y1, x2, y2)), ...] in reading order)."""
        boxes, scores, classes = self.detect(image_rgb)
        number, chosen = self.number_of(boxes, scores, classes)
        return number, [(int(classes[i]), float(scores[i]), tuple(float(v) for v in boxes[i])) for i in chosen]

    def detect_many(self, images_rgb):
        """``detect`` of each image, ``workers`` at once; a list in the images' order."""
        return self.map(self.detect, images_rgb)

    def read_many(self, images_rgb):
        """``read`` of each image, ``workers`` at once; a list in the images' order."""
        return self.map(self.read, images_rgb)

    def detect_files(self, paths):
        """``detect`` of each image file (decoded in the workers too): a list in order, with the
        OSError naming the file in place of the result of a file that cannot be read."""
        return self.map(lambda path: _or_error(lambda: self.detect(load_image(path))), paths)

    def read_files(self, paths):
        """``read`` of each image file, as ``detect_files``."""
        return self.map(lambda path: _or_error(lambda: self.read(load_image(path))), paths)


def _or_error(function):
    try:
        return function()
    except OSError as e:
        return e


def _one_line(error):
    return " ".join(str(error).split())[:300] or type(error).__name__


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    threads = None
    if argv[:1] == ["--threads"] and len(argv) > 1:
        threads, argv = argv[1], argv[2:]
    if len(argv) < 2:
        print("usage: digit_runtime.py [--threads N] MODEL.onnx|MODEL.ts IMAGE [IMAGE ...]", file=sys.stderr)
        return 2
    try:
        model = ExportedModel(argv[0], threads=int(threads) if threads and threads.isdigit() else threads)
    except (RuntimeModelError, ImportError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (TypeError, ValueError):
        print(f"error: --threads: expected a whole number >= 1, got {threads!r}", file=sys.stderr)
        return 2
    unreadable = 0
    paths = argv[1:]
    for begin in range(0, len(paths), 256):  # results printed as they come, a block at a time
        block = paths[begin : begin + 256]
        for path, result in zip(block, model.read_files(block)):
            if isinstance(result, OSError):
                unreadable += 1
                print(f"{path}: -1 (unreadable: {_one_line(result)})", flush=True)
                continue
            print(f"{path}: {result[0]}", flush=True)
    if unreadable:
        print(f"{unreadable} of {len(paths)} image(s) unreadable", file=sys.stderr)
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
