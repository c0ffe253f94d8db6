"""
Image sizes and digit-box layouts for synthetic house numbers: drawn from a COCO file of real SVHN
box geometry (``datasets/prepare_synthetic.py`` passes ``../shared/svhn_geometry/train.json`` when it
is there), or from compact statistics of its framing that ship with the package (``ParametricSampler``).
"""

import json
import os
from collections import namedtuple
from statistics import NormalDist

import numpy as np

from ..datasets import DatasetError

PARAMETRIC = "parametric"
GEOMETRY_FILE = "geometry file"  # what a dataset json records of layouts copied from a geometry file
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
        return self.layout(int(rng.integers(len(self.sizes))))

    def layout(self, i):
        """The size and boxes of the file's ``i``-th kept image."""
        w, h = self.sizes[i]
        span = slice(self.starts[i], self.starts[i] + self.counts[i])
        labels = self.labels[span]
        digits = labels.copy() if ((labels >= 0) & (labels <= 9)).all() else None
        return Layout(int(w), int(h), self.boxes[span].copy(), digits)


# The shipped statistics of the real SVHN train framing (``fit_layout_stats`` of the geometry file; rebuilt
# with ``python datasets/fit_layout_stats.py GEOMETRY.json``): quantile tables and rank correlations, no boxes.
LAYOUT_STATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "svhn_layout_stats.json")
QUANTILES = np.linspace(0.0, 1.0, 41)  # the levels of every table (every 2.5%)
STATS_FORMAT = 2  # 1: independent tables (before 2026-12-07); 2: a Gaussian copula per digit count
_NORMAL = NormalDist()


def _number_extent(boxes):
    """(x0, y0, x1, y1) of the union of XYWH ``boxes``."""
    return boxes[:, 0].min(), boxes[:, 1].min(), (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()


def _geometry_layouts(g):
    return [g.layout(i) for i in range(len(g.sizes))]


def _row_order(boxes):
    return np.argsort(boxes[:, 0] + boxes[:, 2] / 2, kind="stable")


def framing_table(sampler_or_layouts):
    """
    Per image of a ``SVHNGeometrySampler`` (or a list of Layouts): a dict of arrays of the framing
    quantities: digit count ``k``, image ``height`` and ``aspect`` (w / h), the number's share of the
    image ``share_w`` / ``share_h``, its centre ``cx`` / ``cy`` (fractions of the image); per digit box
    ``box_aspect`` (h / w) and ``box_label`` (its digit, -1 when the layout has none); per pair of
    neighbours ``gap`` (the space between their boxes in mean digit heights, < 0: they overlap); per image
    of 2+ digits ``y_spread`` (the standard deviation of the digits' vertical centres) and ``h_spread``
    (of their heights), both in mean digit heights.
    """
    if isinstance(sampler_or_layouts, SVHNGeometrySampler):
        layouts = _geometry_layouts(sampler_or_layouts)
    else:
        layouts = sampler_or_layouts
    rows, box_aspect, box_label, gaps, y_spread, h_spread = [], [], [], [], [], []
    for lay in layouts:
        boxes = np.asarray(lay.boxes, float)
        x0, y0, x1, y1 = _number_extent(boxes)
        rows.append(
            (len(boxes), lay.height, lay.width / lay.height, (x1 - x0) / lay.width, (y1 - y0) / lay.height,
             (x0 + x1) / 2 / lay.width, (y0 + y1) / 2 / lay.height)
        )  # fmt: skip
        box_aspect.extend(boxes[:, 3] / boxes[:, 2])
        box_label.extend(lay.digits if lay.digits is not None else [-1] * len(boxes))
        if len(boxes) > 1:
            b = boxes[_row_order(boxes)]
            hm = b[:, 3].mean()
            gaps.extend((b[1:, 0] - (b[:-1, 0] + b[:-1, 2])) / hm)
            y_spread.append((b[:, 1] + b[:, 3] / 2).std() / hm)
            h_spread.append(b[:, 3].std() / hm)
    table = dict(zip(("k", "height", "aspect", "share_w", "share_h", "cx", "cy"), np.asarray(rows, float).T))
    table.update(
        box_aspect=np.asarray(box_aspect), box_label=np.asarray(box_label, int), gap=np.asarray(gaps),
        y_spread=np.asarray(y_spread), h_spread=np.asarray(h_spread),
    )  # fmt: skip
    return table


def _copula_variables(k):
    """The names of the per-image variables the copula of ``k``-digit numbers joins, in order."""
    names = ["log_height", "digit_h", "aspect", "cx", "cy"]
    names += [f"width_{i}" for i in range(k)]
    names += [f"gap_{i}" for i in range(k - 1)]
    names += [f"dy_{i}" for i in range(k)] if k > 1 else []
    return names


def _layout_variables(width, height, boxes, labels, digit_aspect):
    """The copula variables of one real layout (boxes in row order), as ``_copula_variables`` names them."""
    k = len(boxes)
    hm = boxes[:, 3].mean()
    x0, y0, x1, y1 = _number_extent(boxes)
    values = [np.log(height), hm / height, width / height, (x0 + x1) / 2 / width, (y0 + y1) / 2 / height]
    values += list(boxes[:, 2] / boxes[:, 3] / digit_aspect[labels])
    values += list((boxes[1:, 0] - (boxes[:-1, 0] + boxes[:-1, 2])) / hm)
    if k > 1:
        centres = boxes[:, 1] + boxes[:, 3] / 2
        values += list((centres - centres.mean()) / hm)
    return values


def _normal_scores(values):
    """Φ⁻¹ of the mid-ranks of ``values`` (ties share a score), as a Gaussian copula is fitted."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    mid = np.bincount(inverse, weights=ranks) / counts  # the mean rank of each distinct value
    return np.array([_NORMAL.inv_cdf(float(u)) for u in (mid[inverse] + 0.5) / len(values)])


def fit_layout_stats(geometry_file):
    """
    The compact statistics ``ParametricSampler`` draws from, fitted to a COCO geometry file of real SVHN
    boxes: digit-count frequencies; each digit's median box aspect (w / h); for each digit count 1..4 the
    digits' frequencies at each position, and a Gaussian copula of the per-image variables
    (``_copula_variables``: image height (log), mean digit height / image height, image aspect, the
    number's centre, each digit's width against its digit's median, the gaps between neighbours and the
    digits' vertical offsets, in mean digit heights): each variable's quantiles at QUANTILES and the
    correlation matrix of their normal scores. Heights within one real number are equal (their spread's
    95th percentile is 0), and so drawn. A dict of plain lists (the JSON that ships); 5-digit numbers
    (9 of 33,401) draw from the 4-digit fit.
    """
    g = SVHNGeometrySampler(geometry_file)
    layouts = _geometry_layouts(g)
    labels = g.labels[g.labels >= 0]
    aspects = (g.boxes[:, 2] / g.boxes[:, 3])[g.labels >= 0]
    digit_aspect = np.array([np.median(aspects[labels == d]) for d in range(10)])

    def q(values):
        return [round(float(v), 5) for v in np.quantile(values, QUANTILES)]

    by_count = []
    for k in range(1, 5):
        rows, digits = [], []
        for lay in layouts:
            if len(lay.boxes) != k or lay.digits is None:  # None: the file does not give all its digits
                continue
            order = _row_order(lay.boxes)
            boxes, lab = lay.boxes[order], lay.digits[order]
            rows.append(_layout_variables(lay.width, lay.height, boxes, lab, digit_aspect))
            digits.append(lab)
        values, digits = np.asarray(rows, float), np.asarray(digits, int)
        scores = np.stack([_normal_scores(v) for v in values.T], axis=1)
        by_count.append(
            {
                "images": int(len(values)),
                "digits_by_position": [np.bincount(digits[:, i], minlength=10).tolist() for i in range(k)],
                "variables": _copula_variables(k),
                "quantiles": [q(v) for v in values.T],
                "correlation": np.round(np.corrcoef(scores, rowvar=False), 4).tolist(),
            }
        )
    return {
        "format": STATS_FORMAT,
        "source": "SVHN format-1 train box geometry (sizes and boxes only)",
        "images": int(len(layouts)),
        "digit_count": [int((g.counts == n).sum()) for n in range(1, MAX_DIGITS + 1)],
        "quantile_levels": [round(float(v), 5) for v in QUANTILES],
        "digit_aspect": [round(float(v), 5) for v in digit_aspect],
        "by_count": by_count,
    }


class ParametricSampler:
    """
    SVHN-like layouts without the geometry file, drawn from the shipped statistics of the real train
    framing (``LAYOUT_STATS``, fitted by ``fit_layout_stats``): the digit count; the digits, by position
    (a house number seldom starts with 0); then, jointly (a Gaussian copula with the real rank
    correlations, each variable from its quantile table), the image height and aspect, the digit height,
    the number's centre, each digit's width (its own digit's typical aspect, a "1" narrow, times a drawn
    factor), the gaps between neighbours (real boxes touch and overlap) and small vertical offsets.
    The number's share of the width and height follow from these, as in the real images. The layout
    carries its digits, so the renderer draws each into a box of its own shape.
    """

    source = PARAMETRIC

    def __init__(self, stats_file=LAYOUT_STATS):
        with open(stats_file) as f:
            stats = json.load(f)
        if stats.get("format") != STATS_FORMAT:
            raise DatasetError(
                f"{stats_file}: layout statistics of format {stats.get('format', 1)}, this generator reads "
                f"format {STATS_FORMAT}: rebuild them with datasets/fit_layout_stats.py"
            )
        self.levels = np.asarray(stats["quantile_levels"], float)
        self.count_p = np.asarray(stats["digit_count"], float) / sum(stats["digit_count"])
        self.digit_aspect = np.asarray(stats["digit_aspect"], float)
        self.models = []
        for fit in stats["by_count"]:
            counts = np.asarray(fit["digits_by_position"], float)
            correlation = np.asarray(fit["correlation"], float) + 1e-9 * np.eye(len(fit["variables"]))
            self.models.append(
                {
                    "digit_p": counts / counts.sum(axis=1, keepdims=True),
                    "index": {name: i for i, name in enumerate(fit["variables"])},
                    "tables": np.asarray(fit["quantiles"], float),
                    "chol": np.linalg.cholesky(correlation),
                }
            )

    def _joint(self, rng, model):
        z = model["chol"] @ rng.standard_normal(len(model["tables"]))
        u = np.array([_NORMAL.cdf(float(v)) for v in z])
        values = np.array([np.interp(p, self.levels, table) for p, table in zip(u, model["tables"])])
        return lambda name: values[model["index"][name]]

    def __call__(self, rng):
        k = int(rng.choice(MAX_DIGITS, p=self.count_p)) + 1
        m = min(k, 4)  # a fifth digit (9 of 33,401 real numbers) draws like the fourth
        model = self.models[m - 1]
        digits = np.array([rng.choice(10, p=model["digit_p"][min(i, m - 1)]) for i in range(k)])
        v = self._joint(rng, model)
        img_h = float(np.exp(v("log_height")))
        box_h = img_h * min(float(v("digit_h")), 0.98)
        if box_h < 9:  # real boxes are >= 9 px tall
            img_h, box_h = img_h * 9 / box_h, 9.0
        widths = box_h * self.digit_aspect[digits] * np.array([v(f"width_{min(i, m - 1)}") for i in range(k)])
        widths = np.clip(widths, box_h / 4, box_h * 1.2)
        gaps = box_h * np.array([v(f"gap_{min(i, m - 2)}") for i in range(k - 1)]) if k > 1 else np.zeros(0)
        gaps = np.maximum(gaps, -0.5 * np.minimum(widths[:-1], widths[1:]))  # no box mostly inside another
        x0 = np.concatenate([[0.0], np.cumsum(widths[:-1] + gaps)])  # increasing: each gap > -width
        dy = box_h * np.array([v(f"dy_{min(i, m - 1)}") for i in range(k)]) if k > 1 else np.zeros(1)
        dy = np.clip(dy, -0.3 * box_h, 0.3 * box_h)
        group_w = float((x0 + widths).max())
        group_h = float(box_h + dy.max() - dy.min())
        img_h = max(img_h, group_h)
        img_w = max(img_h * float(v("aspect")), group_w + 2)
        left = float(np.clip(float(v("cx")) * img_w - group_w / 2, 0, img_w - group_w))
        top = float(np.clip(float(v("cy")) * img_h - group_h / 2, 0, img_h - group_h))
        y0 = top + dy - dy.min()
        boxes = np.stack([left + x0, y0, widths, np.full(k, box_h)], axis=1)
        width, height = int(np.ceil(img_w)), int(np.ceil(img_h))
        # Whole pixels, as annotators draw boxes (and the real statistics were measured on).
        boxes = np.round(boxes)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1)
        boxes[:, 0] = np.clip(boxes[:, 0], 0, width - boxes[:, 2])
        boxes[:, 1] = np.clip(boxes[:, 1], 0, height - boxes[:, 3])
        return Layout(width, height, boxes, digits)


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


def layout_info(sampler):
    """What the dataset json records of its layouts: the source, and the shipped statistics' format."""
    if isinstance(sampler, ParametricSampler):
        return {"source": PARAMETRIC, "stats_format": STATS_FORMAT}
    return {"source": GEOMETRY_FILE, "stats_format": None}


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
