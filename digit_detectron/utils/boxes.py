"""Box geometry in numpy, the one IoU of the package (torch code uses detectron2's ``pairwise_iou``)."""

import numpy as np


def box_iou(a, b):
    """IoU matrix (N, M) of XYXY boxes ``a`` (N, 4) and ``b`` (M, 4); a single box may be given as (4,)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)
