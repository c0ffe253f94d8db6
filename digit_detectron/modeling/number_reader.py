"""
Read the whole house number from per-digit detections.

Detections are arrays (numpy or torch) of XYXY boxes, scores and classes 0..9 (= the digit):

1. class-agnostic NMS (``nms_thresh``): two classes fired on one digit give one character, the
   higher-scoring one;
2. threshold ladder: the thresholds of ``score_threshs`` are tried in order, and the first one that
   keeps at least one digit gives the answer; if none does, the number is -1;
3. more than ``max_digits`` digits is implausible: only the ``max_digits`` highest-scoring are kept;
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

# Column rule of `reading_order` (fractions of the narrower width / shorter height of two boxes).
COLUMN_MAX_CENTRE_SHIFT = 0.5
COLUMN_MAX_VERTICAL_OVERLAP = 0.3


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


def digits_to_number(digits):
    """Join digits into an int (leading zeros vanish: [0, 7] -> 7); no digits -> -1."""
    digits = [int(d) for d in digits]
    return int("".join(map(str, digits))) if digits else -1


def read_number(boxes, scores, classes, score_threshs, nms_thresh, max_digits):
    """The number shown by the detections (XYXY boxes, scores, classes 0..9), or -1; see the module docstring."""
    boxes, scores, classes = _as_tensors(boxes, scores, classes)
    keep = class_agnostic_nms(boxes, scores, nms_thresh, classes)
    return read_after_nms(boxes[keep], scores[keep], classes[keep], score_threshs, max_digits)


def select_digits(boxes, scores, classes, score_threshs, nms_thresh, max_digits):
    """
    Indices (into the inputs) of the detections the number is read from, in reading order; empty when
    no digit passes. ``read_number`` reads the same digits: ``classes[select_digits(...)]``.
    """
    boxes, scores, classes = _as_tensors(boxes, scores, classes)
    keep = class_agnostic_nms(boxes, scores, nms_thresh, classes)
    for thresh in score_threshs:
        n = min(int((scores[keep] >= thresh).sum()), max_digits)
        if n:
            return keep[:n][reading_order(boxes[keep[:n]])]
    return keep[:0]


def read_after_nms(boxes, scores, classes, score_threshs, max_digits):
    """
    Steps 2-4 of the module docstring on tensors that ``class_agnostic_nms`` kept, in its order
    (decreasing score). NMS never lets a lower-scoring box suppress a higher one, so NMS over all boxes
    then thresholding equals thresholding then NMS: one NMS serves every rung of the ladder.
    """
    for thresh in score_threshs:
        n = min(int((scores >= thresh).sum()), max_digits)
        if n:
            order = reading_order(boxes[:n])
            return digits_to_number(classes[:n][order].tolist())
    return -1


class NumberReader:
    """Reads a number from detections with fixed thresholds: ``reader(boxes, scores, classes) -> int``."""

    def __init__(self, score_threshs=(0.5,), nms_thresh=0.3, max_digits=6):
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
        return cls(r.SCORE_THRESHS, r.NMS_THRESH, r.MAX_DIGITS)

    def __call__(self, boxes, scores, classes):
        return read_number(boxes, scores, classes, self.score_threshs, self.nms_thresh, self.max_digits)

    def select(self, boxes, scores, classes):
        """Indices of the digits read, in reading order (``select_digits``)."""
        return select_digits(boxes, scores, classes, self.score_threshs, self.nms_thresh, self.max_digits)

    def read_instances(self, instances):
        """The number shown by a detectron2 ``Instances`` (pred_boxes, scores, pred_classes)."""
        return self(instances.pred_boxes.tensor, instances.scores, instances.pred_classes)

    def __repr__(self):
        return (
            f"NumberReader(score_threshs={self.score_threshs}, nms_thresh={self.nms_thresh}, "
            f"max_digits={self.max_digits})"
        )
