"""
Image sizes and digit-box layouts for synthetic house numbers: drawn from a COCO file of real SVHN
box geometry (``datasets/prepare_synthetic.py`` passes ``../shared/svhn_geometry/train.json`` when it
is there), or from a parametric model of its statistics.
"""

import json
import os
from collections import namedtuple

import numpy as np

from ..datasets import DatasetError

PARAMETRIC = "parametric"
MAX_DIGITS = 5

# An image size and its digit boxes: ``boxes`` is a (k, 4) float array of XYWH pixel boxes; ``digits``
# the (k,) labels the geometry file gives them (0..9), or None to draw random digits.
Layout = namedtuple("Layout", ["width", "height", "boxes", "digits"], defaults=(None,))


class SVHNGeometrySampler:
    """Draws the size and box layout of a random image of a COCO geometry file (1..5 boxes)."""

    def __init__(self, json_file):
        self.source = os.path.abspath(json_file)
        try:
            with open(json_file) as f:
                data = json.load(f)
            ids = np.array([img["id"] for img in data["images"]], dtype=np.int64)
            sizes = np.array([(img["width"], img["height"]) for img in data["images"]], dtype=np.int64)
            owner = np.array([ann["image_id"] for ann in data["annotations"]], dtype=np.int64)
            boxes = np.array([ann["bbox"] for ann in data["annotations"]], dtype=np.float64).reshape(-1, 4)
            labels = np.array([ann.get("category_id", 0) for ann in data["annotations"]], dtype=np.int64) - 1
        except FileNotFoundError:
            raise DatasetError(f"{json_file}: geometry file not found") from None
        except json.JSONDecodeError as e:
            raise DatasetError(f"{json_file}: malformed json ({e})") from None
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{json_file}: not a COCO box file ({type(e).__name__}: {e})") from None
        if not np.isfinite(boxes).all() or (boxes[:, 2:] <= 0).any():
            raise DatasetError(f"{json_file}: every bbox must be 4 finite numbers with positive size")
        # Boxes grouped by image (sorted by image id, then left to right); keep images with 1..5 boxes.
        order = np.argsort(ids)
        ids, sizes = ids[order], sizes[order]
        slot = np.searchsorted(ids, owner)
        if (slot >= len(ids)).any() or (ids[np.minimum(slot, len(ids) - 1)] != owner).any():
            raise DatasetError(f"{json_file}: an annotation points at a missing image id")
        order = np.lexsort((boxes[:, 1], boxes[:, 0], slot))
        slot, boxes, labels = slot[order], boxes[order], labels[order]
        counts = np.bincount(slot, minlength=len(ids))
        starts = np.concatenate([[0], np.cumsum(counts)])
        keep = np.nonzero((counts >= 1) & (counts <= MAX_DIGITS) & (sizes.min(1) > 0))[0]
        if not len(keep):
            raise DatasetError(f"{json_file}: no image with 1..{MAX_DIGITS} boxes")
        self.sizes = sizes[keep]
        self.counts = counts[keep]
        self.starts = starts[keep]
        self.boxes = boxes
        # Real labels (category_id - 1) where the file gives all of an image's digits, else -1.
        self.labels = labels

    def __call__(self, rng):
        i = int(rng.integers(len(self.sizes)))
        w, h = self.sizes[i]
        span = slice(self.starts[i], self.starts[i] + self.counts[i])
        labels = self.labels[span]
        digits = labels.copy() if ((labels >= 0) & (labels <= 9)).all() else None
        return Layout(int(w), int(h), self.boxes[span].copy(), digits)


class ParametricSampler:
    """
    SVHN-like layouts without the geometry file, from the train split's statistics
    (``svhn_geometry/STATS.md``): digit counts, image height, box height / image height, box
    aspect h/w, spacing.
    """

    source = PARAMETRIC
    DIGIT_COUNT_P = np.array([5137, 18130, 8691, 1434, 9], dtype=np.float64)

    def __call__(self, rng):
        k = int(rng.choice(MAX_DIGITS, p=self.DIGIT_COUNT_P / self.DIGIT_COUNT_P.sum())) + 1
        # Log-normal fits of the percentiles: image height p5/p50/p95 = 20/47/130 px,
        # box aspect h/w 1.40/2.07/3.56, box h / image h 0.33/0.66/0.86.
        img_h = float(np.clip(47 * np.exp(0.57 * rng.standard_normal()), 12, 500))
        box_h = img_h * float(np.clip(rng.normal(0.63, 0.16), 0.25, 0.95))
        if box_h < 10:  # real boxes are >= 9 px tall (p1 12 px)
            img_h, box_h = img_h * 10 / box_h, 10.0
        heights = box_h * rng.uniform(0.95, 1.05, size=k)
        widths = heights / np.clip(2.07 * np.exp(0.28 * rng.standard_normal(k)), 1.1, 5.0)
        gaps = box_h * rng.uniform(0.0, 0.15, size=k)
        gaps[0] = 0
        x0 = np.cumsum(gaps + np.concatenate([[0], widths[:-1]]))
        group_w = x0[-1] + widths[-1]
        img_w = max(group_w * rng.uniform(1.15, 2.6), 0.8 * img_h)
        left = rng.uniform(0.1, 0.9) * (img_w - group_w)
        top = rng.uniform(0.15, 0.85) * (img_h - box_h)
        y0 = np.clip(top + (box_h - heights) / 2 + rng.normal(0, 0.02 * box_h, size=k), 0, img_h - heights)
        boxes = np.stack([left + x0, y0, widths, heights], axis=1)
        return Layout(int(np.ceil(img_w)), int(np.ceil(img_h)), boxes)


def build_layout_sampler(geometry=None):
    """
    ``geometry``: a COCO box json; ``None`` or ``PARAMETRIC``: the parametric model.
    """
    if geometry is None or geometry == PARAMETRIC:
        return ParametricSampler()
    return SVHNGeometrySampler(geometry)
