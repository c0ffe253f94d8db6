"""Batched inference over image files (the HW2 submission files are written by ``submission``)."""

import glob
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from tqdm import tqdm

from ..checkpoint import DigitCheckpointer
from ..data.datasets import IMAGE_EXTENSIONS
from ..data.image_io import ImageReadError, open_image, oriented_size, read_image
from ..data.transforms import build_digit_augmentation
from .second_look import wrap_for_second_look
from .speed import apply_inference_options
from .tta import wrap_for_tta


def inference_score_thresh(cfg):
    """The ROI score threshold the model needs: the lower of pred.json's and the reader's lowest."""
    return min(cfg.DIGITS.PRED_JSON_SCORE_THRESH, min(cfg.DIGITS.READER.SCORE_THRESHS))


@dataclass
class PredictionRun:
    """What ``DigitPredictor.predict_files`` returns."""

    # file -> Instances (pred_boxes XYXY in original pixels, scores, pred_classes 0..9)
    instances: dict = field(default_factory=dict)
    # file -> why it could not be read (these files have no instances)
    failures: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self):
        n = len(self.instances)
        line = f"Predicted {n} images in {self.seconds:.1f} s ({n / max(self.seconds, 1e-9):.1f} images/s)"
        if self.failures:
            line += f"; skipped {len(self.failures)} unreadable image(s):\n  " + "\n  ".join(self.failures.values())
        return line


class DigitPredictor:
    """
    The digit model (``build_model(cfg)`` with cfg.MODEL.WEIGHTS) in eval mode, with the test-time
    resize of ``build_digit_augmentation``. Its ROI score threshold is ``inference_score_thresh(cfg)``.
    """

    def __init__(self, cfg):
        weights = cfg.MODEL.WEIGHTS
        if not weights:
            raise ValueError(
                "MODEL.WEIGHTS is empty: pass the trained checkpoint, e.g. opts MODEL.WEIGHTS model_final.pth"
            )
        self.cfg = cfg.clone()
        self.cfg.defrost()
        self.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = inference_score_thresh(cfg)
        self.model = build_model(self.cfg)
        self.model.eval()
        DigitCheckpointer(self.model, strict=True).load(weights)  # never predict with re-initialised heads
        self.options = apply_inference_options(self.model, self.cfg)
        self.network = self.model  # the detector itself (what export traces), before the wrappers below
        self.model = wrap_for_tta(self.model, self.cfg)  # DIGITS.TTA (off by default)
        self.model = wrap_for_second_look(self.model, self.cfg)  # DIGITS.SECOND_LOOK
        self.augmentations = T.AugmentationList(build_digit_augmentation(self.cfg, is_train=False))
        self.input_format = self.cfg.INPUT.FORMAT

    def __call__(self, images):
        """Instances (on CPU, original pixels) of a batch of HxWx3 uint8 images in cfg.INPUT.FORMAT."""
        inputs = [
            {"image": self.preprocess(im), "height": im.shape[0], "width": im.shape[1], "original": im} for im in images
        ]
        with torch.inference_mode():
            outputs = self.model(inputs)
        return [output["instances"].to("cpu") for output in outputs]

    def preprocess(self, image):
        """The CHW uint8 tensor the model takes for an HxWx3 image in cfg.INPUT.FORMAT (the test-time resize)."""
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        return torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))

    def predict_files(self, files, batch_size=8, progress=True):
        """
        Run on every file, ``batch_size`` images per forward pass, with a progress bar. Files are
        batched in order of aspect ratio (less padding; results are keyed by file, so the order does
        not show). Unreadable files (corrupt, empty, not images) are skipped and listed in the
        result's ``failures``.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        files = sorted(files, key=_aspect_ratio)
        run = PredictionRun()
        start = time.perf_counter()
        with tqdm(total=len(files), unit="img", desc="predict", disable=not progress) as bar:
            for begin in range(0, len(files), batch_size):
                batch_files, images = [], []
                for path in files[begin : begin + batch_size]:
                    try:
                        images.append(read_image(path, self.input_format))
                        batch_files.append(path)
                    except ImageReadError as e:
                        run.failures[path] = str(e)
                if images:
                    run.instances.update(zip(batch_files, self(images)))
                bar.update(len(files[begin : begin + batch_size]))
        run.seconds = time.perf_counter() - start
        return run


def predict_files_exported(exported, files, progress=True):
    """
    ``DigitPredictor.predict_files`` with an exported model (an ``ExportedModel``: ONNX Runtime runs
    ``exported.workers`` images at once, one thread each): the same PredictionRun, Instances on the CPU
    in the input's pixels; unreadable files are skipped and listed in ``failures``.
    """
    from detectron2.structures import Boxes, Instances

    run = PredictionRun()
    start = time.perf_counter()

    def one(path):
        try:
            image = read_image(path, "RGB")
        except ImageReadError as e:
            return str(e)
        boxes, scores, classes = exported.detect(image)
        instances = Instances(image.shape[:2])
        instances.pred_boxes = Boxes(torch.from_numpy(np.ascontiguousarray(boxes, np.float32)))
        instances.scores = torch.from_numpy(np.ascontiguousarray(scores, np.float32))
        instances.pred_classes = torch.from_numpy(np.ascontiguousarray(classes, np.int64))
        return instances

    block = max(64, 16 * exported.workers)  # results a block at a time: the bar moves
    with tqdm(total=len(files), unit="img", desc="predict", disable=not progress) as bar:
        for begin in range(0, len(files), block):
            chunk = files[begin : begin + block]
            for path, result in zip(chunk, exported.map(one, chunk)):
                if isinstance(result, str):
                    run.failures[path] = result
                else:
                    run.instances[path] = result
            bar.update(len(chunk))
    run.seconds = time.perf_counter() - start
    return run


def _aspect_ratio(path):
    """width / height from the image header (0 when unreadable: read_image reports it later)."""
    try:
        with open_image(path, decode=False) as image:
            width, height = oriented_size(image)
    except ImageReadError:
        return 0.0
    return width / max(height, 1)


def list_input_images(input):
    """Sorted image files of a folder (by extension, not recursive) or of a glob pattern."""
    if os.path.isdir(input):
        files = [os.path.join(input, f) for f in os.listdir(input) if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        files = [f for f in glob.glob(input) if os.path.isfile(f)]
    if not files:
        raise FileNotFoundError(f"{input}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return sorted(files)


def list_records(input):
    """Dataset dicts of the images in a folder or matching a glob; image_id = integer file stem or None."""
    records = []
    for path in list_input_images(input):
        stem = os.path.splitext(os.path.basename(path))[0]
        records.append({"file_name": path, "image_id": int(stem) if stem.isdigit() else None})
    return records
