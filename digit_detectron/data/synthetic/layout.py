"""
Image sizes and digit-box layouts for synthetic house numbers: drawn from a COCO file of real SVHN
box geometry (``datasets/prepare_synthetic.py`` passes ``../shared/svhn_geometry/train.json`` when it
is there), or from compact statistics of its framing that ship with the package (``ParametricSampler``).
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


# The shipped statistics of the real SVHN train framing (``fit_layout_stats`` of the geometry file; rebuilt
# with ``python datasets/fit_layout_stats.py GEOMETRY.json``): quantile tables, no boxes.
LAYOUT_STATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "svhn_layout_stats.json")
QUANTILES = np.linspace(0.0, 1.0, 41)  # the levels of every table (every 2.5%)


def _number_extent(boxes):
    """(x0, y0, x1, y1) of the union of XYWH ``boxes``."""
    return boxes[:, 0].min(), boxes[:, 1].min(), (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()


def framing_table(sampler_or_layouts):
    """
    Per image of a ``SVHNGeometrySampler`` (or a list of Layouts): a dict of arrays of the framing
    quantities: digit count ``k``, image ``height`` and ``aspect`` (w / h), the number's share of the
    image ``share_w`` / ``share_h``, its centre ``cx`` / ``cy`` (fractions of the image), and ``box_aspect``
    (h / w of each digit box, all boxes).
    """
    if isinstance(sampler_or_layouts, SVHNGeometrySampler):
        g = sampler_or_layouts
        layouts = [Layout(int(w), int(h), g.boxes[st : st + k]) for (w, h), st, k in zip(g.sizes, g.starts, g.counts)]
    else:
        layouts = sampler_or_layouts
    rows, box_aspect = [], []
    for lay in layouts:
        x0, y0, x1, y1 = _number_extent(np.asarray(lay.boxes, float))
        rows.append(
            (len(lay.boxes), lay.height, lay.width / lay.height, (x1 - x0) / lay.width, (y1 - y0) / lay.height,
             (x0 + x1) / 2 / lay.width, (y0 + y1) / 2 / lay.height)
        )  # fmt: skip
        box_aspect.extend(np.asarray(lay.boxes, float)[:, 3] / np.asarray(lay.boxes, float)[:, 2])
    table = dict(zip(("k", "height", "aspect", "share_w", "share_h", "cx", "cy"), np.asarray(rows, float).T))
    table["box_aspect"] = np.asarray(box_aspect)
    return table


def fit_layout_stats(geometry_file):
    """
    The compact statistics ``ParametricSampler`` draws from, fitted to a COCO geometry file: digit-count
    frequencies and, at the levels QUANTILES, the quantiles of the image height, the number's height share,
    the number's width share and the image aspect for each digit count (1..4; 5 draws from 4's), the
    number's centre and the digit boxes' aspect h / w. A dict of plain lists (the JSON that ships).
    """
    t = framing_table(SVHNGeometrySampler(geometry_file))

    def q(values):
        return [round(float(v), 5) for v in np.quantile(values, QUANTILES)]

    k = t["k"].astype(int)
    return {
        "source": "SVHN format-1 train box geometry (sizes and boxes only)",
        "images": int(len(k)),
        "digit_count": [int((k == n).sum()) for n in range(1, MAX_DIGITS + 1)],
        "quantile_levels": [round(float(v), 5) for v in QUANTILES],
        "height": q(t["height"]),
        "share_h": q(t["share_h"]),
        "share_w_by_count": [q(t["share_w"][k == n]) for n in range(1, 5)],
        "aspect_by_count": [q(t["aspect"][k == n]) for n in range(1, 5)],
        "cx": q(t["cx"]),
        "cy": q(t["cy"]),
        "box_aspect": q(t["box_aspect"]),
    }


class ParametricSampler:
    """
    SVHN-like layouts without the geometry file, drawn from the shipped statistics of the real train
    framing (``LAYOUT_STATS``, fitted by ``fit_layout_stats``): digit count; image height; the number's
    height share; the image's aspect and the number's width share (both by digit count); the number's
    centre; each digit box's aspect. Each quantity is drawn from its quantile table (linear between
    levels). Digits of one number share a height and stand on one line; the gaps between them make the
    number span its share of the width, with neighbours overlapping by at most a fifth of the narrower
    box (real boxes overlap more), so the digits are narrowed where needed (to h / w 3.2 at most).
    """

    source = PARAMETRIC

    def __init__(self, stats_file=LAYOUT_STATS):
        with open(stats_file) as f:
            stats = json.load(f)
        self.levels = np.asarray(stats["quantile_levels"], float)
        self.count_p = np.asarray(stats["digit_count"], float) / sum(stats["digit_count"])
        self.tables = {key: np.asarray(stats[key], float) for key in ("height", "share_h", "cx", "cy", "box_aspect")}
        self.share_w = [np.asarray(t, float) for t in stats["share_w_by_count"]]
        self.aspect = [np.asarray(t, float) for t in stats["aspect_by_count"]]

    def _draw(self, rng, table, size=None):
        return np.interp(rng.uniform(size=size), self.levels, table)

    def __call__(self, rng):
        k = int(rng.choice(MAX_DIGITS, p=self.count_p)) + 1
        img_h = float(self._draw(rng, self.tables["height"]))
        number_h = img_h * min(float(self._draw(rng, self.tables["share_h"])), 0.98)  # real boxes may overshoot
        if number_h < 10:  # real boxes are >= 9 px tall
            img_h, number_h = img_h * 10 / number_h, 10.0
        box_h = number_h / 1.04
        heights = box_h * rng.uniform(0.96, 1.04, size=k)
        # Digits are drawn at random into these boxes: no box narrower than most non-"1" digits (h / w <= 3).
        widths = heights / np.minimum(self._draw(rng, self.tables["box_aspect"], size=k), 3.0)
        # The image's aspect and the number's width share as the real ones for this digit count: the space
        # between the digits makes up the difference (real neighbours' boxes overlap often; here by at most
        # a fifth of the narrower box, so that no digit hides another).
        share = float(self._draw(rng, self.share_w[min(k, 4) - 1]))
        if k == 1:
            img_w = widths[0] / share
            x0 = np.zeros(1)
        else:
            img_w = img_h * float(self._draw(rng, self.aspect[min(k, 4) - 1]))
            target = share * img_w
            floor = -0.2 * widths.min()  # each gap: neighbours overlap by at most a fifth of the narrower
            room = target - floor * (k - 1)
            if widths.sum() > room:  # narrower digits, down to h / w = 3.2; past that the number spans more
                widths = np.maximum(widths * room / widths.sum(), heights / 3.2)
            spare = max(room - widths.sum(), 0.0)
            gaps = floor + spare * rng.dirichlet(np.ones(k - 1))
            x0 = np.concatenate([[0.0], np.cumsum(widths[:-1] + gaps)])
        group_w = float(max(x0 + widths) - min(x0.min(), 0))
        img_w = max(img_w, group_w + 2)
        cx, cy = (float(self._draw(rng, self.tables[key])) for key in ("cx", "cy"))
        left = float(np.clip(cx * img_w - group_w / 2, 0, img_w - group_w))
        top = float(np.clip(cy * img_h - box_h / 2, 0, img_h - box_h))
        y0 = np.clip(top + (box_h - heights) / 2 + rng.normal(0, 0.02 * box_h, size=k), 0, img_h - heights)
        boxes = np.stack([left + x0, y0, widths, heights], axis=1)
        return Layout(int(np.ceil(img_w)), int(np.ceil(img_h)), boxes)


# The real SVHN test images (the HW2 test split) against the train images: median image aspect 2.38
# against 2.23, the number's median share of the width 20% against 29% (measured on the real test
# geometry, which does not ship: only these two ratios do).
TEST_ASPECT_RATIO = 2.38 / 2.23
TEST_SHARE_W_RATIO = 0.20 / 0.29


class ReframedSampler:
    """
    Layouts of ``base`` (a train-framed sampler) reframed as the real SVHN test images are: the image
    widened by TEST_ASPECT_RATIO and the number shrunk about its centre so that its share of the width
    falls by TEST_SHARE_W_RATIO (both ratios jittered by up to 10% either way), the number's relative
    centre kept. More wall around a smaller number: what the HW2 test images look like.
    """

    def __init__(self, base):
        self.base = base
        self.source = f"{base.source} (reframed as the real test images)"

    def __call__(self, rng):
        lay = self.base(rng)
        widen = TEST_ASPECT_RATIO * rng.uniform(0.9, 1.1)
        shrink = TEST_SHARE_W_RATIO * widen * rng.uniform(0.9, 1.1)  # share_w scales by shrink / widen
        boxes = np.asarray(lay.boxes, float).copy()
        x0, y0, x1, y1 = _number_extent(boxes)
        cx, cy = (x0 + x1) / 2 / lay.width, (y0 + y1) / 2 / lay.height
        width, height = int(np.ceil(lay.width * widen)), lay.height
        boxes[:, :2] = (boxes[:, :2] - [(x0 + x1) / 2, (y0 + y1) / 2]) * shrink
        boxes[:, 2:] *= shrink
        nx0, ny0, nx1, ny1 = _number_extent(boxes)
        dx = np.clip(cx * width, -nx0, width - nx1)  # the number's centre where it was, inside the image
        dy = np.clip(cy * height, -ny0, height - ny1)
        boxes[:, :2] += [dx, dy]
        return Layout(width, height, boxes, lay.digits)


FRAMINGS = ("train", "test")


def build_layout_sampler(geometry=None, framing="train"):
    """
    ``geometry``: a COCO box json; ``None`` or ``PARAMETRIC``: the parametric model. ``framing``: "train"
    (as the source gives them) or "test" (``ReframedSampler``: reframed as the real test images).
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    base = ParametricSampler() if geometry is None or geometry == PARAMETRIC else SVHNGeometrySampler(geometry)
    return ReframedSampler(base) if framing == "test" else base
