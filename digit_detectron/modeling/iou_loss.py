"""The ramped IoU loss term of :class:`DigitFastRCNNOutputLayers`: its weight schedule and value."""

from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

__all__ = ["IOU_LOSS_TYPES", "box_iou_loss", "iou_loss_lambda"]

_IOU_LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}
# Values of MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE.
IOU_LOSS_TYPES = ("none",) + tuple(_IOU_LOSSES)


def iou_loss_lambda(epoch, start_epoch, lambda_start, lambda_step, lambda_max):
    """
    Weight of the IoU term in (0-indexed) ``epoch``: 0 before ``start_epoch``, then
    ``min(lambda_start + lambda_step * (epoch - start_epoch), lambda_max)``.
    """
    if epoch < start_epoch:
        return 0.0
    return min(lambda_start + lambda_step * (epoch - start_epoch), lambda_max)


def box_iou_loss(pred_boxes, gt_boxes, loss_type):
    """
    Mean torchvision ``loss_type`` ("giou", "diou" or "ciou") IoU loss between paired XYXY boxes
    (R, 4); 0 for R == 0, still connected to ``pred_boxes``' graph.
    """
    if loss_type not in _IOU_LOSSES:
        raise ValueError(f"Unknown IoU loss type {loss_type!r}; expected one of {tuple(_IOU_LOSSES)}")
    if pred_boxes.shape != gt_boxes.shape:
        raise ValueError(f"pred_boxes {tuple(pred_boxes.shape)} and gt_boxes {tuple(gt_boxes.shape)} must pair up")
    return _IOU_LOSSES[loss_type](pred_boxes, gt_boxes.to(pred_boxes.dtype), reduction="mean")
