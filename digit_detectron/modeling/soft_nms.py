"""
Gaussian soft-NMS (Bodla et al., 2017) for the ROI heads' per-class post-processing
(``MODEL.ROI_HEADS.SOFT_NMS``): instead of removing a box that overlaps a higher-scoring one of the
same class, its score is multiplied by ``exp(-IoU^2 / sigma)``; boxes whose decayed score falls below
the test score threshold go. Two touching digits of one class (e.g. "11") keep both boxes where hard
NMS at a low threshold could drop one.
"""

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou

__all__ = ["soft_nms", "soft_nms_inference_single_image"]


def soft_nms(boxes, scores, sigma, score_thresh):
    """(indices into ``boxes``, their decayed scores), by decreasing decayed score; boxes XYXY (N, 4)."""
    if sigma <= 0:
        raise ValueError(f"MODEL.ROI_HEADS.SOFT_NMS.SIGMA must be > 0, got {sigma}")
    scores = scores.clone()
    remaining = torch.arange(len(scores), device=scores.device)
    keep, kept = [], []
    while remaining.numel():
        best = int(torch.argmax(scores[remaining]))
        i = remaining[best]
        if scores[i] < score_thresh:
            break
        keep.append(i)
        kept.append(scores[i].clone())
        remaining = torch.cat([remaining[:best], remaining[best + 1 :]])
        if remaining.numel():
            iou = pairwise_iou(Boxes(boxes[i : i + 1]), Boxes(boxes[remaining]))[0]
            scores[remaining] = scores[remaining] * torch.exp(-(iou**2) / sigma)
            remaining = remaining[scores[remaining] >= score_thresh]
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=scores.device), scores.new_zeros(0)
    return torch.stack(keep), torch.stack(kept)


def soft_nms_inference_single_image(boxes, scores, image_shape, score_thresh, sigma, topk_per_image):
    """``fast_rcnn_inference_single_image`` with per-class Gaussian soft-NMS in place of hard NMS."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]
    num_reg = boxes.shape[1] // 4
    boxes = Boxes(boxes.reshape(-1, 4))
    boxes.clip(image_shape)
    boxes = boxes.tensor.view(-1, num_reg, 4)
    mask = scores > score_thresh
    inds = mask.nonzero()
    boxes = boxes[inds[:, 0], 0] if num_reg == 1 else boxes[mask]
    scores = scores[mask]
    classes = inds[:, 1]
    # one pass over every class: offset each class's boxes so that classes never overlap
    offset = classes.to(boxes) * (boxes.max() + 1 if boxes.numel() else 1)
    keep, decayed = soft_nms(boxes + offset[:, None], scores, sigma, score_thresh)
    if topk_per_image >= 0:
        keep, decayed = keep[:topk_per_image], decayed[:topk_per_image]
    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = decayed
    result.pred_classes = classes[keep]
    return result, inds[keep, 0]
