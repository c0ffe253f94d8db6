"""
Model parts of digit_detectron; importing registers ``DigitROIHeads`` (ROI_HEADS_REGISTRY) and the
torchvision backbones (BACKBONE_REGISTRY).
"""

from .iou_loss import IOU_LOSS_TYPES, box_iou_loss, iou_loss_lambda
from .roi_heads import DigitFastRCNNOutputLayers, DigitROIHeads, credit_foreground
from .torchvision_backbone import TorchvisionBackbone, build_torchvision_backbone, build_torchvision_fpn_backbone

__all__ = [
    "IOU_LOSS_TYPES",
    "box_iou_loss",
    "iou_loss_lambda",
    "DigitFastRCNNOutputLayers",
    "DigitROIHeads",
    "credit_foreground",
    "TorchvisionBackbone",
    "build_torchvision_backbone",
    "build_torchvision_fpn_backbone",
]
