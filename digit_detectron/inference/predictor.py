"""
Batched inference over image files, and the HW2 submission files:

* ``pred.json``: COCO results, ``{"image_id", "bbox": [x, y, w, h], "score", "category_id": 1..10}``
  per digit box with score >= DIGITS.PRED_JSON_SCORE_THRESH (original pixels, 2 decimals);
* ``pred.csv``: ``image_id,pred_label`` per image, sorted by id: the number the reader reads, or -1.
"""
import csv
import glob
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..checkpoint import DigitCheckpointer
from ..data.datasets import (
    DATASET_ID_TO_CONTIGUOUS,
    IMAGE_EXTENSIONS,
    DatasetError,
    image_id_from_filename,
    read_json,
)
from ..data.image_io import ImageReadError, read_image
from ..data.transforms import build_digit_augmentation
from ..utils.io import atomic_open, atomic_write_json

CONTIGUOUS_TO_DATASET_ID = {v: k for k, v in DATASET_ID_TO_CONTIGUOUS.items()}


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
            raise ValueError("MODEL.WEIGHTS is empty: pass the trained checkpoint, e.g. opts MODEL.WEIGHTS model_final.pth")
        if "://" not in weights and not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: checkpoint (MODEL.WEIGHTS) not found")
        self.cfg = cfg.clone()
        self.cfg.defrost()
        self.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = inference_score_thresh(cfg)
        self.model = build_model(self.cfg)
        self.model.eval()
        DigitCheckpointer(self.model).load(weights)
        self.augmentations = T.AugmentationList(build_digit_augmentation(self.cfg, is_train=False))
        self.input_format = self.cfg.INPUT.FORMAT

    def __call__(self, images):
        """Instances (on CPU, original pixels) of a batch of HxWx3 uint8 images in cfg.INPUT.FORMAT."""
        inputs = []
        for image in images:
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": image.shape[0], "width": image.shape[1]})
        with torch.no_grad():
            outputs = self.model(inputs)
        return [output["instances"].to("cpu") for output in outputs]

    def predict_files(self, files, batch_size=8, progress=True):
        """
        Run on every file, ``batch_size`` images per forward pass, with a progress bar. Unreadable
        files (corrupt, empty, not images) are skipped and listed in the result's ``failures``.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
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


def list_input_images(input):
    """Sorted image files of a folder (by extension, not recursive) or of a glob pattern."""
    if os.path.isdir(input):
        files = [os.path.join(input, f) for f in os.listdir(input) if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        files = [f for f in glob.glob(input) if os.path.isfile(f)]
    if not files:
        raise FileNotFoundError(f"{input}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return sorted(files)


def load_id_map(path):
    """
    ``{file name: image id}`` from a json that is either such a dict or a COCO json whose
    ``images`` entries give ``file_name`` and ``id``.
    """
    data = read_json(path, "id map")
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        try:
            data = {os.path.basename(img["file_name"]): img["id"] for img in data["images"]}
        except (KeyError, TypeError):
            raise DatasetError(f"{path}: every 'images' entry needs 'file_name' and 'id'") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a json object {{file name: image id}} or a COCO json with 'images'")
    bad = {k: v for k, v in data.items() if not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise DatasetError(f"{path}: image ids must be integers, got {dict(list(bad.items())[:5])}")
    return data


def resolve_image_ids(files, id_map=None):
    """
    ``{file: image id}``: the id map's entry for the file name if ``id_map`` is given, else the integer
    file stem. A file without an id, or two files with one id, is an error naming the files.
    """
    ids = {}
    for path in files:
        if id_map is None:
            ids[path] = image_id_from_filename(path)
        elif os.path.basename(path) in id_map:
            ids[path] = id_map[os.path.basename(path)]
        else:
            raise DatasetError(f"{path}: file name '{os.path.basename(path)}' is not in the id map")
    seen = {}
    for path, image_id in ids.items():
        if image_id in seen:
            raise DatasetError(f"{seen[image_id]} and {path} both have image id {image_id}")
        seen[image_id] = path
    return ids


def instances_to_pred_json(instances, image_id, score_thresh):
    """pred.json entries (XYWH, 2 decimals, category ids 1..10) of the instances scoring >= score_thresh."""
    keep = instances.scores >= score_thresh
    boxes = instances.pred_boxes.tensor[keep].tolist()
    scores = instances.scores[keep].tolist()
    classes = instances.pred_classes[keep].tolist()
    results = []
    for (x0, y0, x1, y1), score, cls in zip(boxes, scores, classes):
        x0, y0, x1, y1 = (round(v, 2) for v in (x0, y0, x1, y1))
        results.append(
            {
                "image_id": image_id,
                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(score, 5),
                "category_id": CONTIGUOUS_TO_DATASET_ID[cls],
            }
        )
    return results


def write_predictions(output_dir, run, image_ids, reader, pred_json_score_thresh):
    """
    Write ``output_dir/pred.json`` and ``output_dir/pred.csv`` (atomically) for every file of
    ``image_ids`` (``{file: id}``); files missing from ``run.instances`` get no boxes and -1.
    Returns the two paths.
    """
    by_id = sorted((image_id, path) for path, image_id in image_ids.items())
    boxes, rows = [], []
    for image_id, path in by_id:
        instances = run.instances.get(path)
        if instances is None:
            rows.append((image_id, -1))
            continue
        boxes.extend(instances_to_pred_json(instances, image_id, pred_json_score_thresh))
        rows.append((image_id, reader.read_instances(instances)))
    json_path = os.path.join(output_dir, "pred.json")
    csv_path = os.path.join(output_dir, "pred.csv")
    atomic_write_json(json_path, boxes)
    with atomic_open(csv_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image_id", "pred_label"])
        writer.writerows(rows)
    return json_path, csv_path
