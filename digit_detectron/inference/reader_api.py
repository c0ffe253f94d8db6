"""
The Python API: read house numbers with a trained model in two lines::

    from digit_detectron import DigitReader
    reader = DigitReader("output/demo/train/model_best.pth")   # a bundle: no config file needed
    result = reader("photo.png")
    result.number          # 1234, or -1 when no digit is read
    result.digits          # [Digit(digit=1, score=0.98, box=(x1, y1, x2, y2)), ...] in reading order
    result.save("photo_read.png")

Inputs: a path (str or os.PathLike), a numpy array (H x W x 3 uint8, **BGR** as OpenCV gives it;
pass ``channels="RGB"`` for RGB arrays; H x W grayscale is accepted), a PIL image, or a list of these
(read in batches). ``reader.read_folder(folder)`` reads every image of a folder.

The engine: ``DigitReader()`` runs the ready model's ONNX export on ONNX Runtime when onnxruntime is
installed (``pip install "digit-detectron[export]"``; several images at once, one core each: the
fastest on a CPU) and its PyTorch bundle otherwise, or on a GPU; both read the same numbers
(tests/test_ready_model.py). ``engine="torch"`` keeps PyTorch, the reference path.
"""

import importlib.util
import numbers
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checkpoint.bundle import READY_MODEL, READY_MODEL_ONNX, BundleError, ready_model  # noqa: F401 (re-exported)
from ..config import get_model_cfg
from ..data.image_io import ImageReadError, read_image
from ..evaluation.drawing import draw_panel, save_png
from ..export.runtime import ExportedModel, RuntimeModelError
from ..modeling.number_reader import NumberReader, digits_to_number
from ..utils.device import resolve_device
from ..utils.pixels import pil_to_rgb
from .predictor import DigitPredictor, list_input_images

__all__ = ["Digit", "DigitReader", "ReadResult"]

CHANNELS = ("BGR", "RGB")
ENGINES = ("auto", "onnx", "torch")


def onnxruntime_installed():
    """Whether onnxruntime can be imported here (without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


@dataclass(frozen=True)
class Digit:
    digit: int  # 0..9
    score: float
    box: tuple  # (x1, y1, x2, y2) in the input image's pixels


@dataclass
class ReadResult:
    """One image read: the number (-1 when none), its digits in reading order, and every detection."""

    number: int
    digits: list
    source: str = None  # the file, or None for an array / PIL input
    image_rgb: np.ndarray = field(default=None, repr=False)
    detections: list = field(default_factory=list, repr=False)  # every box above the model's threshold
    error: str = None  # why the file could not be read (then number is -1)

    @property
    def text(self):
        """The digits as a string, leading zeros kept ("" when none)."""
        return "".join(str(d.digit) for d in self.digits)

    def plot(self):
        """The image (RGB uint8) with the digits read boxed and the number as its caption."""
        if self.image_rgb is None and self.source is not None and self.error is None:
            self.image_rgb = read_image(self.source, "RGB")  # read_folder keeps no pixels: decoded on demand
        if self.image_rgb is None:
            raise ValueError(f"{self.source}: no image to draw ({self.error})")
        boxes = [d.box for d in self.digits]
        panel = draw_panel(self.image_rgb, boxes, [d.digit for d in self.digits], [d.score for d in self.digits])
        return _with_caption(panel, f"read: {self.number}")

    def save(self, path):
        """Write ``plot()`` as a PNG (atomically); returns the path."""
        save_png(self.plot(), path)
        return path


def _with_caption(image_rgb, text):
    import cv2

    bar = np.full((18, image_rgb.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image_rgb], axis=0)


EXPORTED_SUFFIXES = (".onnx", ".ts")


class DigitReader:
    """
    A trained digit model and the number reader. ``model``: a bundle ``.pth`` written by training
    (config and tuned reader thresholds inside), any checkpoint with ``config_file``, or a model
    exported by tools/export_model.py (``model.onnx`` / ``model.ts`` with its model.json); None (the
    default): the ready model shipped in the package (``READY_MODEL``, docs/model_card.md); ``opts``:
    config KEY VALUE overrides; ``device``: "auto" (default: cuda when torch sees a GPU, else cpu),
    "cpu" or "cuda"; ``batch_size``: images per forward pass (at least 1); ``engine``: "auto" (the ready
    model on ONNX Runtime when it is installed and the device is the CPU, else PyTorch; a named model
    on what its file is), "onnx" (the ready model's ONNX export, or an exported model) or "torch".
    """

    def __init__(self, model=None, config_file=None, opts=(), device="auto", batch_size=16, engine="auto"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        device = resolve_device(device)
        if model is None:
            exported = engine == "onnx" or (
                engine == "auto" and device == "cpu" and not config_file and not opts and onnxruntime_installed()
            )
            model = ready_model(exported=exported)
        model = os.fspath(model)
        if engine == "onnx" and not model.endswith(".onnx"):
            raise BundleError(
                f"{model}: engine 'onnx' runs an exported model.onnx; export this one first "
                f"(digit-detectron export --format onnx --weights {model} --output DIR)"
            )
        if engine == "torch" and model.endswith(EXPORTED_SUFFIXES):
            raise BundleError(f"{model}: engine 'torch' runs a bundle (.pth); an exported model runs on its own engine")
        if engine == "onnx" and not onnxruntime_installed():
            raise BundleError('engine "onnx" needs onnxruntime: pip install "digit-detectron[export]"')
        self.batch_size = int(batch_size)
        self.exported = None
        self.engine = "onnx" if model.endswith(".onnx") else "torchscript" if model.endswith(".ts") else "torch"
        if model.endswith(EXPORTED_SUFFIXES):
            try:
                self.exported = ExportedModel(model, threads=torch.get_num_threads(), device=device)
            except RuntimeModelError as e:
                raise BundleError(str(e)) from None
            self.cfg, self.predictor = None, None
            self.number_reader = NumberReader.from_export(self.exported.meta["reader"])
            self.input_format = "RGB"
            return
        cfg = get_model_cfg(config_file, list(opts) + ["MODEL.DEVICE", device], weights=model)
        cfg.freeze()
        self.cfg = cfg
        self.predictor = DigitPredictor(cfg)
        self.number_reader = NumberReader.from_config(cfg)
        self.input_format = cfg.INPUT.FORMAT

    def __call__(self, source, channels="BGR"):
        """Read one input (a ReadResult) or a list of inputs (a list of ReadResults, in order)."""
        if isinstance(source, (list, tuple)):
            results = []
            for begin in range(0, len(source), self.batch_size):
                results += self._read_batch(source[begin : begin + self.batch_size], channels)
            return results
        return self._read_batch([source], channels)[0]

    def read_folder(self, folder, progress=True):
        """Every image of a folder (or glob), batched by aspect ratio: {path: ReadResult}, in file order."""
        files = list_input_images(os.fspath(folder))
        if self.exported is not None:
            return dict(zip(files, self.exported.map(self._read_file_exported, files)))
        run = self.predictor.predict_files(files, batch_size=self.batch_size, progress=progress)
        results = {}
        for path in files:
            if path in run.failures:
                results[path] = ReadResult(-1, [], source=path, error=run.failures[path])
            else:
                inst = run.instances[path]
                results[path] = self._result(inst.pred_boxes.tensor, inst.scores, inst.pred_classes, None, path)
        return results

    def _read_file_exported(self, path):
        try:
            image = read_image(path, "RGB")
        except ImageReadError as e:
            return ReadResult(-1, [], source=path, error=str(e))
        return self._result(*self.exported.detect(image), image, path)

    def _read_batch(self, sources, channels):
        images, names = [], []
        for source in sources:
            image, name = self._to_model_format(source, channels)
            images.append(image)
            names.append(name)
        if self.exported is not None:
            found = self.exported.detect_many(images)
            return [self._result(*f, im, name) for f, im, name in zip(found, images, names)]
        results = []
        for inst, image, name in zip(self.predictor(images), images, names):
            results.append(self._result(inst.pred_boxes.tensor, inst.scores, inst.pred_classes, image, name))
        return results

    def _to_model_format(self, source, channels):
        """(H x W x 3 uint8 in cfg.INPUT.FORMAT, file name or None)."""
        if channels not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
        if isinstance(source, (str, os.PathLike)):
            return read_image(os.fspath(source), self.input_format), os.fspath(source)
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - PIL is a detectron2 dependency
            Image = None
        if Image is not None and isinstance(source, Image.Image):
            array, channels = pil_to_rgb(source), "RGB"  # the pixels read_image gives for the same file
        elif isinstance(source, np.ndarray):
            array = source
        else:
            raise TypeError(f"cannot read a {type(source).__name__}: pass a path, a numpy array or a PIL image")
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
            raise ValueError(
                f"expected an H x W x 3 uint8 image array, got shape {array.shape} and dtype {array.dtype}"
            )
        array = array[:, :, :3]
        if channels != self.input_format:
            array = array[:, :, ::-1]
        return np.ascontiguousarray(array), None

    def _result(self, boxes, scores, classes, image, source):
        boxes, scores, classes = torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(classes)
        order = self.number_reader.select(boxes, scores, classes)
        digits = [_digit(boxes[i], scores[i], classes[i]) for i in order.tolist()]
        detections = [_digit(b, s, c) for b, s, c in zip(boxes, scores, classes)]
        rgb = None  # read_folder's results: plot() decodes the file when asked
        if image is not None:
            rgb = np.ascontiguousarray(image if self.input_format == "RGB" else image[:, :, ::-1])
        number = digits_to_number([d.digit for d in digits])
        return ReadResult(number, digits, source, rgb, detections)


def _digit(box, score, cls):
    with torch.no_grad():
        return Digit(int(cls), round(float(score), 4), tuple(round(float(v), 2) for v in box))
