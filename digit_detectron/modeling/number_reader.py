"""
Read the whole house number from per-digit detections.

Detections are arrays (numpy or torch) of XYXY boxes, scores and classes 0..9 (= the digit):

1. class-agnostic NMS (``nms_thresh``): two classes fired on one digit give one character, the
   higher-scoring one;
2. threshold ladder: the thresholds of ``score_threshs`` are tried in order, and the first one that
   keeps at least one digit gives the answer; if none does, the number is -1;
3. more than ``max_digits`` digits is implausible: only the ``max_digits`` highest-scoring are kept;
   with ``line_filter``, only the digits on the number's line are kept (``on_number_line``); with
   ``min_top_score``, nothing is read (-1) unless the most confident detection scores at least that
   (a wall without digits rarely holds one detection that sure);
4. the kept digits are put in reading order (``reading_order``) and joined into an int. Leading zeros
   vanish, as in the HW2 csv, which holds integers: digits 0, 7 read 7, and 0, 0 read 0.

Reading order: left to right by box centre, except for a vertical stack (a column of digits), read top
to bottom. The digits form a column when, taken top to bottom, every two consecutive boxes have
horizontal centres at most ``COLUMN_MAX_CENTRE_SHIFT`` of the narrower width apart and overlap
vertically by at most ``COLUMN_MAX_VERTICAL_OVERLAP`` of the shorter height. Diagonal numbers (boxes
shifted sideways by more than half a digit, or overlapping vertically) stay left to right. On the real
SVHN train geometry the rule finds a column in 39 of 33,402 images.
"""

import numpy as np
import torch
from torchvision.ops import nms

# The number's line (``on_number_line``), in heights of the most confident digit. On the real SVHN train
# geometry the digits of a number have one box height, their centres lie within 0.93 of it of each other
# in 99.5% of the images (diagonal numbers), and no two neighbours are more than 0.73 of the median
# height apart in 99.9% of them.
LINE_MAX_HEIGHT_RATIO = 1.6
LINE_MAX_CENTRE_OFFSET = 1.0
LINE_MAX_GAP = 1.0

# Column rule of `reading_order` (fractions of the narrower width / shorter height of two boxes).
COLUMN_MAX_CENTRE_SHIFT = 0.5
COLUMN_MAX_VERTICAL_OVERLAP = 0.3

# The region of a cropped second look (``second_look_crop``), in the median height of the digits read:
# beside the digits (room for a digit the first look missed) and above and below them.
CROP_MARGIN_X = 2.0
CROP_MARGIN_Y = 0.5


def needs_second_look(boxes, chosen, scale, max_height, empty=False):
    """
    Whether a reading deserves a second look at a larger size (``DIGITS.SECOND_LOOK``): nothing read
    (``chosen`` empty) and ``empty``, or the digits read (indices ``chosen`` of the XYXY ``boxes``, in the
    input image's pixels) under ``max_height`` px tall at the model's input scale (``scale`` = the
    resized image's height / the input's), by their median height. The exported runtime decides alike.
    """
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
    if not len(chosen):
        return bool(empty)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[chosen]
    return float(np.median(boxes[:, 3] - boxes[:, 1])) * float(scale) < float(max_height)


def second_look_crop(boxes, chosen, height, width, target_height, max_size):
    """
    The region of a cropped second look (``DIGITS.SECOND_LOOK.MODE`` "crop") and the size it is read at:
    ``((x1, y1, x2, y2), (new_height, new_width))`` in whole pixels of the ``height`` x ``width`` input, or
    None when ``chosen`` (indices of the XYXY ``boxes`` read) is empty. The region spans the digits read,
    CROP_MARGIN_X of their median height beside them and CROP_MARGIN_Y above and below, within the image;
    it is resized so that this median height becomes ``target_height`` px, the longer side at most
    ``max_size``. The exported runtime computes the same region.
    """
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


def _as_tensors(boxes, scores=None, classes=None):
    boxes = torch.as_tensor(boxes).float().reshape(-1, 4).cpu()
    out = [boxes]
    for name, values in (("scores", scores), ("classes", classes)):
        if values is None:
            continue
        values = torch.as_tensor(values).reshape(-1).cpu()
        if len(values) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(values)} {name}")
        out.append(values)
    if classes is not None and len(out[-1]) and not bool(((out[-1] >= 0) & (out[-1] <= 9)).all()):
        raise ValueError(f"digit classes must lie in 0..9, got {out[-1].tolist()}")
    return out


def score_order(boxes, scores, classes=None):
    """
    Indices by decreasing score; equal scores by class, then x1, y1, x2, y2: an order that depends only
    on the detections, not on the order a model lists them in (the exported runtime sorts alike).
    """
    boxes = boxes.numpy()
    keys = [boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0]]
    if classes is not None:
        keys.append(classes.numpy())
    keys.append(-scores.float().numpy())
    return torch.from_numpy(np.lexsort(keys).astype(np.int64))


def class_agnostic_nms(boxes, scores, nms_thresh, classes=None):
    """Indices of the boxes kept by NMS over all classes together, in ``score_order``."""
    tensors = _as_tensors(boxes, scores, classes)
    boxes, scores = tensors[0], tensors[1]
    order = score_order(boxes, scores, tensors[2] if classes is not None else None)
    # Strictly decreasing stand-in scores: torchvision's own sort then keeps ``order`` for ties too.
    ranks = torch.arange(len(order), 0, -1, dtype=torch.float32)
    return order[nms(boxes[order], ranks, float(nms_thresh))]


def is_column(boxes):
    """Whether the XYXY ``boxes`` (at least two) form a vertical stack; see the module docstring."""
    boxes = _as_tensors(boxes)[0]
    if len(boxes) < 2:
        return False
    boxes = boxes[torch.argsort((boxes[:, 1] + boxes[:, 3]) / 2, stable=True)]
    upper, lower = boxes[:-1], boxes[1:]
    centre_shift = ((upper[:, 0] + upper[:, 2]) - (lower[:, 0] + lower[:, 2])).abs() / 2
    narrower = torch.minimum(upper[:, 2] - upper[:, 0], lower[:, 2] - lower[:, 0])
    overlap = torch.minimum(upper[:, 3], lower[:, 3]) - torch.maximum(upper[:, 1], lower[:, 1])
    shorter = torch.minimum(upper[:, 3] - upper[:, 1], lower[:, 3] - lower[:, 1])
    return bool(
        (
            (centre_shift <= COLUMN_MAX_CENTRE_SHIFT * narrower) & (overlap <= COLUMN_MAX_VERTICAL_OVERLAP * shorter)
        ).all()
    )


def reading_order(boxes):
    """
    Indices of the XYXY ``boxes`` in reading order: top to bottom for a column, else left to right.
    Boxes whose centres tie on that axis go by their centre on the other axis, then in the given order.
    """
    boxes = _as_tensors(boxes)[0]
    axis = 1 if is_column(boxes) else 0
    centres = ((boxes[:, 0::2].sum(1) / 2).numpy(), (boxes[:, 1::2].sum(1) / 2).numpy())
    return torch.from_numpy(np.lexsort((centres[1 - axis], centres[axis])).astype(np.int64))


def on_number_line(boxes):
    """
    Which of the XYXY ``boxes`` (in decreasing score order, the first the most confident digit) belong
    to that digit's number: a box of another size (height ratio over LINE_MAX_HEIGHT_RATIO), off its
    line (centres more than LINE_MAX_CENTRE_OFFSET of its height apart vertically), or beyond a gap
    wider than LINE_MAX_GAP of its height from the chain of digits through it, is dropped. A column
    (``is_column``) is kept whole. Returns a bool tensor.
    """
    boxes = _as_tensors(boxes)[0]
    keep = torch.ones(len(boxes), dtype=torch.bool)
    if len(boxes) < 2 or is_column(boxes):
        return keep
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    ratio = torch.maximum(heights / heights[0], heights[0] / heights)
    offset = ((boxes[:, 1] + boxes[:, 3]) / 2 - (boxes[0, 1] + boxes[0, 3]) / 2).abs()
    keep &= (ratio <= LINE_MAX_HEIGHT_RATIO) & (offset <= LINE_MAX_CENTRE_OFFSET * heights[0])
    candidates = torch.nonzero(keep).flatten()
    order = candidates[torch.argsort((boxes[candidates, 0] + boxes[candidates, 2]) / 2, stable=True)]
    gaps = boxes[order[1:], 0] - boxes[order[:-1], 2]  # between neighbours, left to right
    apart = (gaps > LINE_MAX_GAP * heights[0]).tolist()
    at = int(torch.nonzero(order == 0)[0])
    lo, hi = at, at
    while lo > 0 and not apart[lo - 1]:
        lo -= 1
    while hi < len(order) - 1 and not apart[hi]:
        hi += 1
    keep[:] = False
    keep[order[lo : hi + 1]] = True
    return keep


def digits_to_number(digits):
    """Join digits into an int (leading zeros vanish: [0, 7] -> 7); no digits -> -1."""
    digits = [int(d) for d in digits]
    return int("".join(map(str, digits))) if digits else -1


def read_number(boxes, scores, classes, score_threshs, nms_thresh, max_digits, line_filter=False, min_top_score=0.0):
    """The number shown by the detections (XYXY boxes, scores, classes 0..9), or -1; see the module docstring."""
    boxes, scores, classes = _as_tensors(boxes, scores, classes)
    keep = class_agnostic_nms(boxes, scores, nms_thresh, classes)
    return read_after_nms(
        boxes[keep], scores[keep], classes[keep], score_threshs, max_digits, line_filter, min_top_score
    )


def select_digits(boxes, scores, classes, score_threshs, nms_thresh, max_digits, line_filter=False, min_top_score=0.0):
    """
    Indices (into the inputs) of the detections the number is read from, in reading order; empty when
    no digit passes. ``read_number`` reads the same digits: ``classes[select_digits(...)]``.
    """
    boxes, scores, classes = _as_tensors(boxes, scores, classes)
    keep = class_agnostic_nms(boxes, scores, nms_thresh, classes)
    chosen = _chosen(boxes[keep], scores[keep], score_threshs, max_digits, line_filter, min_top_score)
    return keep[chosen]


def _chosen(boxes, scores, score_threshs, max_digits, line_filter, min_top_score=0.0):
    """Steps 2-4 on detections in decreasing score order: indices of the digits read, in reading order."""
    if not len(scores) or float(scores[0]) < min_top_score:
        return torch.zeros(0, dtype=torch.int64)
    for thresh in score_threshs:
        n = min(int((scores >= thresh).sum()), max_digits)
        if n:
            chosen = torch.arange(n)
            if line_filter:
                chosen = chosen[on_number_line(boxes[:n])]
            return chosen[reading_order(boxes[chosen])]
    return torch.zeros(0, dtype=torch.int64)


def read_after_nms(boxes, scores, classes, score_threshs, max_digits, line_filter=False, min_top_score=0.0):
    """
    Steps 2-4 of the module docstring on tensors that ``class_agnostic_nms`` kept, in its order
    (decreasing score). NMS never lets a lower-scoring box suppress a higher one, so NMS over all boxes
    then thresholding equals thresholding then NMS: one NMS serves every rung of the ladder.
    """
    chosen = _chosen(boxes, scores, score_threshs, max_digits, line_filter, min_top_score)
    return digits_to_number(classes[chosen].tolist())


class NumberReader:
    """Reads a number from detections with fixed thresholds: ``reader(boxes, scores, classes) -> int``."""

    def __init__(self, score_threshs=(0.5,), nms_thresh=0.3, max_digits=6, line_filter=False, min_top_score=0.0):
        self.line_filter = bool(line_filter)
        self.min_top_score = float(min_top_score)
        if not 0.0 <= self.min_top_score <= 1.0:
            raise ValueError(f"reader MIN_TOP_SCORE must lie in [0, 1], got {min_top_score}")
        self.score_threshs = tuple(float(t) for t in score_threshs)
        self.nms_thresh = float(nms_thresh)
        self.max_digits = int(max_digits)
        if not self.score_threshs or not all(0.0 <= t <= 1.0 for t in self.score_threshs):
            raise ValueError(f"reader score thresholds must be a non-empty list in [0, 1], got {score_threshs}")
        if not 0.0 <= self.nms_thresh <= 1.0:
            raise ValueError(f"reader NMS threshold must lie in [0, 1], got {nms_thresh}")
        if self.max_digits < 1:
            raise ValueError(f"reader MAX_DIGITS must be at least 1, got {max_digits}")

    @classmethod
    def from_config(cls, cfg):
        """A reader with the cfg.DIGITS.READER thresholds."""
        r = cfg.DIGITS.READER
        return cls(r.SCORE_THRESHS, r.NMS_THRESH, r.MAX_DIGITS, r.LINE_FILTER, r.MIN_TOP_SCORE)

    @classmethod
    def from_export(cls, r):
        """A reader with an exported model's thresholds ``r`` (model.json's "reader" entry)."""
        return cls(
            r["score_threshs"],
            r["nms_thresh"],
            r["max_digits"],
            r.get("line_filter", False),
            r.get("min_top_score", 0.0),
        )

    def __call__(self, boxes, scores, classes):
        return read_number(*self._args(boxes, scores, classes))

    def _args(self, boxes, scores, classes):
        return (boxes, scores, classes, self.score_threshs, self.nms_thresh, self.max_digits, self.line_filter,
                self.min_top_score)  # fmt: skip

    def select(self, boxes, scores, classes):
        """Indices of the digits read, in reading order (``select_digits``)."""
        return select_digits(*self._args(boxes, scores, classes))

    def read_instances(self, instances):
        """The number shown by a detectron2 ``Instances`` (pred_boxes, scores, pred_classes)."""
        return self(instances.pred_boxes.tensor, instances.scores, instances.pred_classes)

    def __repr__(self):
        return (
            f"NumberReader(score_threshs={self.score_threshs}, nms_thresh={self.nms_thresh}, "
            f"max_digits={self.max_digits}, line_filter={self.line_filter}, min_top_score={self.min_top_score})"
        )
