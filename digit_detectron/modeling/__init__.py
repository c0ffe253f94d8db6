"""Model parts of digit_detectron; importing registers ``DigitROIHeads`` in ROI_HEADS_REGISTRY."""
from .iou_loss import IOU_LOSS_TYPES, box_iou_loss, epoch_of_iteration, iou_loss_lambda
from .roi_heads import DigitFastRCNNOutputLayers, DigitROIHeads
