"""
Error-analysis drawings of predictions on dataset records: ``visualize`` draws one PNG per image
(``drawing.draw_sample``) and a grid, from a model (``ModelPredictions``) or from the files of a
predict run (``FilePredictions``).
"""

import logging
import os

import numpy as np

from ..data.datasets import DatasetError
from ..data.image_io import ImageReadError, read_image
from ..evaluation.drawing import draw_sample, make_grid, save_png
from ..evaluation.number_accuracy import record_ground_truth
from ..inference.predictor import DigitPredictor
from ..inference.submission import check_pair, load_pred_csv, load_pred_json

logger = logging.getLogger(__name__)


class FilePredictions:
    """
    Predictions of a predict run read back from pred.json and, if given, pred.csv (whose numbers
    win); without pred.csv the numbers are read from the boxes with ``read_number``
    (e.g. ``NumberReader.from_config(cfg)``).
    """

    def __init__(self, pred_json, pred_csv=None, read_number=None):
        if pred_csv is None and read_number is None:
            raise ValueError("FilePredictions needs pred_csv or read_number")
        self.pred_json, self.pred_csv = pred_json, pred_csv
        check_pair(pred_json, pred_csv)  # one run wrote both (when its manifest is there)
        self.detections = load_pred_json(pred_json)
        self.numbers = load_pred_csv(pred_csv) if pred_csv else None
        self.read_number = read_number

    def check_covers(self, records):
        """A clear error when the prediction files hold none of the records' image ids (another split?)."""
        ids = [r["image_id"] for r in records]
        missing = [r["file_name"] for r in records if r["image_id"] is None]
        if missing:
            raise DatasetError(f"{missing[0]}: file stem is not an integer image id, cannot match {self.pred_json}")
        known = self.numbers if self.numbers is not None else self.detections
        if not any(i in known for i in ids):
            source = self.pred_csv if self.numbers is not None else self.pred_json
            raise DatasetError(
                f"{source} holds none of the {len(ids)} image ids to draw (e.g. {ids[:3]}): "
                "predictions of another split?"
            )

    def __call__(self, record, image_rgb):
        image_id = record["image_id"]
        det = self.detections.get(
            image_id, {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, dtype=int)}
        )
        if self.numbers is not None:
            if image_id not in self.numbers:
                raise DatasetError(f"{self.pred_csv}: no row for image_id {image_id} ({record['file_name']})")
            number = self.numbers[image_id]
        else:
            number = self.read_number(det["boxes"], det["scores"], det["classes"])
        return dict(det, number=number)


class ModelPredictions:
    """Predictions of ``DigitPredictor(cfg)`` (cfg.MODEL.WEIGHTS) on each image; numbers from ``read_number``."""

    def __init__(self, cfg, read_number):
        self.predictor = DigitPredictor(cfg)
        self.read_number = read_number

    def __call__(self, record, image_rgb):
        image = image_rgb[:, :, ::-1] if self.predictor.input_format == "BGR" else image_rgb
        instances = self.predictor([np.ascontiguousarray(image)])[0]
        boxes = instances.pred_boxes.tensor.numpy().astype(float)
        scores = instances.scores.numpy().astype(float)
        classes = instances.pred_classes.numpy().astype(int)
        return {
            "boxes": boxes,
            "scores": scores,
            "classes": classes,
            "number": self.read_number(boxes, scores, classes),
        }


def _above(prediction, score_thresh):
    keep = prediction["scores"] >= score_thresh
    return dict(
        prediction,
        boxes=prediction["boxes"][keep],
        scores=prediction["scores"][keep],
        classes=prediction["classes"][keep],
    )


def visualize(records, predict, out_dir, num=None, grid_size=16, score_thresh=0.0, wrong_only=False, progress=None):
    """
    Draw ``draw_sample`` PNGs of the first ``num`` records (with ``wrong_only``, of the first
    ``num`` whose number is wrong) into ``out_dir`` as ``<file stem>.png`` and the first
    ``grid_size`` of them into ``out_dir/grid.png``. ``predict(record, image_rgb)`` returns a
    prediction dict; boxes under ``score_thresh`` are not drawn. ``progress`` wraps the record
    iterator (e.g. tqdm). Returns ``(sample paths, grid path or None, counts)``.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths, grid_images = [], []
    counts = {"drawn": 0, "wrong": 0, "unreadable": 0}
    if num is not None and not wrong_only:
        records = records[:num]
    for record in progress(records) if progress else records:
        if num is not None and len(paths) >= num:
            break
        try:
            image = read_image(record["file_name"], format="RGB")
        except ImageReadError as e:
            counts["unreadable"] += 1
            logger.warning(f"skipped: {e}")
            continue
        prediction = predict(record, image)
        truth = record_ground_truth(record)
        wrong = truth is not None and prediction["number"] != truth["number"]
        if wrong_only and not wrong:
            continue
        sample = draw_sample(image, _above(prediction, score_thresh), truth)
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        paths.append(save_png(sample, os.path.join(out_dir, stem + ".png")))
        counts["drawn"] += 1
        counts["wrong"] += int(wrong)
        if len(grid_images) < grid_size:
            grid_images.append(sample)
    grid = save_png(make_grid(grid_images), os.path.join(out_dir, "grid.png")) if grid_images else None
    return paths, grid, counts
