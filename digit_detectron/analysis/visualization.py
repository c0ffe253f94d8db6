"""
Drawings of digit detections for error analysis.

Each sample becomes one PNG: the image upscaled to PANEL_HEIGHT px with the predicted boxes ("digit
score%"), beside it the ground truth when the split is labelled, and below each panel a caption with
the number read / the true number. The border and captions are green for a right number, red for a
wrong one, grey when there is no ground truth. ``make_grid`` tiles samples into one image.
"""
import csv
import logging
import math
import os

import cv2
import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.data.catalog import Metadata
from detectron2.structures import BoxMode
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

from ..data.datasets import DIGIT_CLASSES, DatasetError, read_json
from ..data.image_io import ImageReadError, read_image
from ..inference.number_reader import digits_to_number, reading_order
from ..inference.predictor import DigitPredictor, list_input_images
from ..utils.io import atomic_open

logger = logging.getLogger(__name__)

# Images are scaled to PANEL_HEIGHT px, unless that makes them wider than MAX_PANEL_WIDTH px;
# panels narrower than MIN_PANEL_WIDTH px are padded so that the caption fits.
PANEL_HEIGHT = 256
MAX_PANEL_WIDTH = 1024
MIN_PANEL_WIDTH = 160
CAPTION_HEIGHT = 32
BORDER = 6
GAP = 6
RIGHT_COLOR = (34, 139, 34)
WRONG_COLOR = (220, 20, 60)
UNKNOWN_COLOR = (128, 128, 128)
PAD_COLOR = (255, 255, 255)
# Labels and box lines of detectron2's Visualizer, relative to its default for the panel size.
FONT_SCALE = 1.8
METADATA = Metadata(name="digits_visualization", thing_classes=DIGIT_CLASSES)
DIGIT_COLORS = [tuple(c) for c in colormap(rgb=True, maximum=1)[:10]]


def ground_truth(record):
    """``{"boxes", "classes", "number"}`` of a labelled dataset dict, else None."""
    if "annotations" not in record:
        return None
    annos = record["annotations"]
    boxes = np.asarray(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos], dtype=float
    ).reshape(-1, 4)
    classes = np.asarray([a["category_id"] for a in annos], dtype=int)
    number = digits_to_number(classes[reading_order(boxes).numpy()])
    return {"boxes": boxes, "classes": classes, "number": number}


def draw_panel(image_rgb, boxes_xyxy, classes, scores=None):
    """
    The image scaled to PANEL_HEIGHT px (to MAX_PANEL_WIDTH px if that is smaller, then padded to
    PANEL_HEIGHT) with its digit boxes drawn by detectron2's Visualizer.
    """
    h, w = image_rgb.shape[:2]
    scale = min(PANEL_HEIGHT / h, MAX_PANEL_WIDTH / w)
    width, height = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    image = cv2.resize(image_rgb, (width, height), interpolation=interpolation)
    boxes = np.asarray(boxes_xyxy, dtype=float).reshape(-1, 4) * scale
    classes = [int(c) for c in classes]
    if scores is None:
        labels = [DIGIT_CLASSES[c] for c in classes]
    else:
        labels = [f"{DIGIT_CLASSES[c]} {s:.0%}" for c, s in zip(classes, scores)]
    vis = Visualizer(image, METADATA, font_size_scale=FONT_SCALE)
    vis.overlay_instances(boxes=boxes, labels=labels, assigned_colors=[DIGIT_COLORS[c] for c in classes])
    return _pad(vis.output.get_image()[:height, :width], PANEL_HEIGHT, width)


def _caption(text, width, color):
    """A CAPTION_HEIGHT bar of ``color`` with ``text`` in white, shrunk to fit ``width``."""
    bar = np.empty((CAPTION_HEIGHT, width, 3), np.uint8)
    bar[:] = color
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 2
    scale = 0.8
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    if tw > width - 8:
        scale *= (width - 8) / tw
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    org = ((width - tw) // 2, (CAPTION_HEIGHT + th) // 2)
    cv2.putText(bar, text, org, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return bar


def _pad(image, height, width):
    """``image`` centred on a PAD_COLOR canvas of at least ``height`` x ``width``."""
    h, w = image.shape[:2]
    if h >= height and w >= width:
        return image
    out = np.empty((max(h, height), max(w, width), 3), np.uint8)
    out[:] = PAD_COLOR
    top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def status_color(prediction, truth):
    """RIGHT_COLOR / WRONG_COLOR for the predicted number against the truth; UNKNOWN_COLOR without one."""
    if truth is None:
        return UNKNOWN_COLOR
    return RIGHT_COLOR if prediction["number"] == truth["number"] else WRONG_COLOR


def render_sample(image_rgb, prediction, truth=None):
    """
    One sample as an RGB array: the prediction panel (and the ground-truth panel), each above a
    caption with its number, framed by BORDER px in ``status_color``.

    ``prediction``: ``{"boxes" (xyxy), "scores", "classes" (digits), "number"}``; ``truth``: the
    same without scores, or None for an unlabelled image.
    """
    color = status_color(prediction, truth)
    panels = [(draw_panel(image_rgb, prediction["boxes"], prediction["classes"], prediction["scores"]),
               f"pred {prediction['number']}")]
    if truth is not None:
        panels.append((draw_panel(image_rgb, truth["boxes"], truth["classes"]), f"gt {truth['number']}"))
    columns = []
    for panel, text in panels:
        panel = _pad(panel, PANEL_HEIGHT, MIN_PANEL_WIDTH)
        columns.append(np.concatenate([panel, _caption(text, panel.shape[1], color)], axis=0))
    height = PANEL_HEIGHT + CAPTION_HEIGHT + 2 * BORDER
    width = sum(c.shape[1] for c in columns) + GAP * (len(columns) - 1) + 2 * BORDER
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = color
    x = BORDER
    for column in columns:
        canvas[BORDER : BORDER + column.shape[0], x : x + column.shape[1]] = column
        x += column.shape[1] + GAP
    return canvas


def make_grid(images, columns=None):
    """Tile RGB arrays row by row into cells of the largest size, each centred on white."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    grid = np.empty((rows * cell_h + (rows - 1) * GAP, columns * cell_w + (columns - 1) * GAP, 3), np.uint8)
    grid[:] = PAD_COLOR
    for i, im in enumerate(images):
        y = (i // columns) * (cell_h + GAP) + (cell_h - im.shape[0]) // 2
        x = (i % columns) * (cell_w + GAP) + (cell_w - im.shape[1]) // 2
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid


def save_png(image_rgb, path):
    """Write an RGB array as a PNG atomically."""
    with atomic_open(path, "wb") as f:
        Image.fromarray(image_rgb).save(f, format="PNG")
    return path


def list_records(input):
    """Dataset dicts of the images in a folder or matching a glob; image_id = integer file stem or None."""
    records = []
    for path in list_input_images(input):
        stem = os.path.splitext(os.path.basename(path))[0]
        records.append({"file_name": path, "image_id": int(stem) if stem.isdigit() else None})
    return records


def dataset_records(name):
    """Dataset dicts of a registered dataset, with a clear error for an unknown name."""
    if name not in DatasetCatalog.list():
        digit_names = ", ".join(n for n in DatasetCatalog.list() if n.startswith("digits"))
        raise DatasetError(f"dataset '{name}' is not registered (digit datasets: {digit_names})")
    return DatasetCatalog.get(name)


def load_pred_json(path):
    """pred.json (COCO results, category_id 1..10) as ``{image_id: {"boxes", "scores", "classes"}}``."""
    results = read_json(path)
    if not isinstance(results, list):
        raise DatasetError(f"{path}: expected a json list of detections, got {type(results).__name__}")
    per_image = {}
    for i, det in enumerate(results):
        try:
            image_id, category_id = int(det["image_id"]), int(det["category_id"])
            x, y, w, h = (float(v) for v in det["bbox"])
            score = float(det["score"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{path}: detection {i} ({det!r}) needs image_id, category_id, bbox [x, y, w, h] and score"
            ) from None
        if not 1 <= category_id <= 10:
            raise DatasetError(f"{path}: detection {i} has category_id {category_id}, not in 1..10")
        if not all(math.isfinite(v) for v in (x, y, w, h, score)):
            raise DatasetError(f"{path}: detection {i} has a non-finite bbox or score")
        entry = per_image.setdefault(image_id, {"boxes": [], "scores": [], "classes": []})
        entry["boxes"].append([x, y, x + w, y + h])
        entry["scores"].append(score)
        entry["classes"].append(category_id - 1)
    return {
        k: {"boxes": np.asarray(v["boxes"]).reshape(-1, 4), "scores": np.asarray(v["scores"]),
            "classes": np.asarray(v["classes"], dtype=int)}
        for k, v in per_image.items()
    }


def load_pred_csv(path):
    """pred.csv (``image_id,pred_label``) as ``{image_id: number}``."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    if not rows or [c.strip() for c in rows[0]] != ["image_id", "pred_label"]:
        raise DatasetError(f"{path}: the first line must be the header 'image_id,pred_label'")
    numbers = {}
    for lineno, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            image_id, label = (int(c) for c in row)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected two integers 'image_id,pred_label', got {row}") from None
        numbers[image_id] = label
    return numbers


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
        return {"boxes": boxes, "scores": scores, "classes": classes,
                "number": self.read_number(boxes, scores, classes)}


def _above(prediction, score_thresh):
    keep = prediction["scores"] >= score_thresh
    return dict(prediction, boxes=prediction["boxes"][keep], scores=prediction["scores"][keep],
                classes=prediction["classes"][keep])


def visualize(records, predict, out_dir, num=None, grid_size=16, score_thresh=0.0, wrong_only=False,
              progress=None):
    """
    Draw ``render_sample`` PNGs of the first ``num`` records (with ``wrong_only``, of the first
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
        truth = ground_truth(record)
        wrong = truth is not None and prediction["number"] != truth["number"]
        if wrong_only and not wrong:
            continue
        sample = render_sample(image, _above(prediction, score_thresh), truth)
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        paths.append(save_png(sample, os.path.join(out_dir, stem + ".png")))
        counts["drawn"] += 1
        counts["wrong"] += int(wrong)
        if len(grid_images) < grid_size:
            grid_images.append(sample)
    grid = save_png(make_grid(grid_images), os.path.join(out_dir, "grid.png")) if grid_images else None
    return paths, grid, counts
