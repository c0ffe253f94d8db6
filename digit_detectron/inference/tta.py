"""
Test-time augmentation and checkpoint ensembles (``DIGITS.TTA``), off by default.

``MergedModel`` runs one or more models (the checkpoint, plus ``DIGITS.TTA.ENSEMBLE_WEIGHTS``) at
one or more test scales (``DIGITS.TTA.SCALES``: short sides; no flips, a mirrored digit is another
glyph) and merges every run's detections, in the input image's pixels, per class:

* ``"wbf"``: weighted box fusion (Solovyev et al., 2021): boxes of one class that overlap a cluster's
  fused box by IoU > ``IOU`` join it; the fused box is the score-weighted mean of its boxes, its score
  the mean score times min(cluster size, runs) / runs, so a box that only one run of several found
  loses confidence;
* ``"nms"``: all runs' boxes together through per-class NMS at ``IOU``.

It has GeneralizedRCNN's inference interface (``model(batched_inputs)``), so ``DigitPredictor`` and
``train_net.py --eval-only`` use it unchanged.
"""

import torch
from detectron2.layers import batched_nms
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import nn
from torch.nn import functional as F

from ..checkpoint import DigitCheckpointer
from .speed import apply_inference_options

__all__ = ["MERGE_METHODS", "MergedModel", "merge_detections", "weighted_box_fusion"]

MERGE_METHODS = ("wbf", "nms")


def weighted_box_fusion(boxes, scores, classes, iou_thresh, runs):
    """
    Weighted box fusion of the detections of ``runs`` runs (XYXY ``boxes``, ``scores``, ``classes``
    concatenated); returns fused (boxes, scores, classes) by decreasing score.
    """
    fused_boxes, fused_scores, fused_classes = [], [], []
    for cls in classes.unique().tolist():
        idx = (classes == cls).nonzero().squeeze(1)
        idx = idx[scores[idx].argsort(descending=True)]
        clusters = []  # [member indices]
        centres = []  # fused box of each cluster
        for i in idx.tolist():
            if centres:
                iou = pairwise_iou(Boxes(boxes[i : i + 1]), Boxes(torch.stack(centres)))[0]
                best = int(iou.argmax())
                if iou[best] > iou_thresh:
                    clusters[best].append(i)
                    members = torch.tensor(clusters[best])
                    w = scores[members]
                    centres[best] = (boxes[members] * w[:, None]).sum(0) / w.sum()
                    continue
            clusters.append([i])
            centres.append(boxes[i].clone())
        for members, centre in zip(clusters, centres):
            s = scores[torch.tensor(members)]
            fused_boxes.append(centre)
            fused_scores.append(s.mean() * min(len(members), runs) / runs)
            fused_classes.append(cls)
    if not fused_boxes:
        return boxes[:0], scores[:0], classes[:0]
    out_scores = torch.stack(fused_scores)
    order = out_scores.argsort(descending=True)
    return torch.stack(fused_boxes)[order], out_scores[order], torch.tensor(fused_classes, dtype=classes.dtype)[order]


def merge_detections(instances_list, method, iou_thresh, max_detections=100):
    """One Instances from several runs' Instances of one image (same image size), by ``method``."""
    if method not in MERGE_METHODS:
        raise ValueError(f"DIGITS.TTA.MERGE must be one of {MERGE_METHODS}, got {method!r}")
    size = instances_list[0].image_size
    boxes = torch.cat([i.pred_boxes.tensor for i in instances_list])
    scores = torch.cat([i.scores for i in instances_list])
    classes = torch.cat([i.pred_classes for i in instances_list])
    if method == "nms":
        keep = batched_nms(boxes, scores, classes, iou_thresh)[:max_detections]
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    else:
        boxes, scores, classes = weighted_box_fusion(boxes, scores, classes, iou_thresh, len(instances_list))
        boxes, scores, classes = boxes[:max_detections], scores[:max_detections], classes[:max_detections]
    result = Instances(size)
    result.pred_boxes = Boxes(boxes)
    result.pred_boxes.clip(size)  # a weighted mean of clipped boxes may round past the edge
    result.scores = scores
    result.pred_classes = classes
    return result


class MergedModel(nn.Module):
    """``models`` x ``scales`` runs per image, merged (module docstring). Inference only."""

    def __init__(self, models, scales, max_size, method="wbf", iou_thresh=0.55, max_detections=100):
        super().__init__()
        if method not in MERGE_METHODS:
            raise ValueError(f"DIGITS.TTA.MERGE must be one of {MERGE_METHODS}, got {method!r}")
        self.models = nn.ModuleList(models)
        self.scales, self.max_size = [int(s) for s in scales], int(max_size)
        self.method, self.iou_thresh, self.max_detections = method, float(iou_thresh), int(max_detections)

    @property
    def backbone(self):  # what inference options and the checkpointer look at
        return self.models[0].backbone

    @property
    def roi_heads(self):
        return self.models[0].roi_heads

    def _rescaled(self, inputs, short):
        out = []
        for x in inputs:
            image = x["image"]
            h, w = image.shape[-2:]
            scale = min(short / min(h, w), self.max_size / max(h, w))
            size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
            if size != (h, w):
                image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
                image = image.round().clamp(0, 255).to(x["image"].dtype)
            out.append({**x, "image": image, "height": x.get("height", h), "width": x.get("width", w)})
        return out

    def forward(self, batched_inputs):
        runs = []
        for model in self.models:
            for short in self.scales:
                runs.append([o["instances"] for o in model(self._rescaled(batched_inputs, short))])
        merged = []
        for per_image in zip(*runs):
            merged.append(
                {"instances": merge_detections(list(per_image), self.method, self.iou_thresh, self.max_detections)}
            )
        return merged


def wrap_for_tta(model, cfg):
    """``model`` itself, or with DIGITS.TTA.ENABLED a MergedModel of it (and the ensemble's checkpoints)."""
    tta = cfg.DIGITS.TTA
    if not tta.ENABLED:
        return model
    models = [model]
    for weights in tta.ENSEMBLE_WEIGHTS:
        other = build_model(cfg).eval()
        DigitCheckpointer(other, strict=True).load(weights)
        apply_inference_options(other, cfg)
        models.append(other)
    scales = list(tta.SCALES) or [cfg.INPUT.MIN_SIZE_TEST]
    return MergedModel(
        models, scales, cfg.INPUT.MAX_SIZE_TEST, tta.MERGE, tta.IOU, cfg.TEST.DETECTIONS_PER_IMAGE
    ).eval()
