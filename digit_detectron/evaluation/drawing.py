"""
Drawings of digit detections for error analysis.

Each sample becomes one RGB array: the image upscaled to PANEL_HEIGHT px with the predicted boxes
("digit score%"), beside it the ground truth when the split is labelled, and below each panel a
caption with the number read / the true number. The border and captions are green for a right
number, red for a wrong one, grey when there is no ground truth. ``make_grid`` tiles samples into
one image; ``save_png`` writes one atomically.
"""

import math

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from ..data.datasets import DIGIT_CLASSES
from ..utils.io import atomic_open

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


def draw_sample(image_rgb, prediction, truth=None):
    """
    One sample as an RGB array: the prediction panel (and the ground-truth panel), each above a
    caption with its number, framed by BORDER px in ``status_color``.

    ``prediction``: ``{"boxes" (xyxy), "scores", "classes" (digits), "number"}``; ``truth``: the
    same without scores, or None for an unlabelled image.
    """
    color = status_color(prediction, truth)
    panels = [
        (
            draw_panel(image_rgb, prediction["boxes"], prediction["classes"], prediction["scores"]),
            f"pred {prediction['number']}",
        )
    ]
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
